"""Benchmark of the HDF5 Gram store (issue 4); results go to BENCHMARKS.md.

Measures
  0. what the machine's page cache, fsync and zlib.crc32 do per MB (the store's floor);
  1. a cache hit against computing (N=5000 series of length T=100 by default; target:
     the hit at least 50x faster);
  2. the overhead of caching on a cold computation (target: under 5 %), as medians
     of rounds (each in a random order) of ``gram(X)``, ``gram(X, cache=GramStore(empty))`` and the
     same with ``GramStore(copy=True)``, ``GramStore(durable=True)`` and
     ``GramStore(durable=True, background=True)`` (CPU seconds of the process too);
  3. the crash test: SIGKILLs at random moments (kills tried, resumes that matched,
     corrupt reads served -- must be 0) and random byte damage / truncation of a stored
     entry (damage served -- must be 0), through tests/_store_worker.py, once with
     every result mapped from its entry's file and once with copies;
  4. with ``--oocore``: an out-of-core Gram (default N=40,000 series of length 10: two
     12.8 GB matrices on disk), its peak RSS (target: under 2 GB), and slicing it.

Usage::

    python scripts/bench_store.py --out results/store            # 1-3
    python scripts/bench_store.py --out results/store --oocore   # + 4 (needs ~26 GB disk)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rntk_numba import RNTK, GramStore, gram

HERE = Path(__file__).resolve().parent
WORKER = HERE.parent / "tests" / "_store_worker.py"
sys.path.insert(0, str(HERE))
from _common import command, machine, out_dir  # noqa: E402


def data(n, T, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((n, T)), axis=1) / np.sqrt(T)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def warm_memory(mb: int) -> None:
    """Touch ``mb`` MB of fresh memory and free it, so that the timed call that follows
    gets pages the hypervisor has already backed (on a VM that hands freed memory back
    to the host -- free page reporting -- a page touched for the first time costs
    several microseconds; see BENCHMARKS.md)."""
    if mb > 0:
        a = np.ones(mb << 17)
        del a


def hit_and_overhead(n, T, reps, n_jobs, root, warm_mb=0):
    """Rounds of five runs, in a random (seeded) order in each round: plain
    gram(X); gram(X, cache=GramStore(<empty>)) (the default, synchronous: the result
    mapped from the entry's file); with copy=True (results copied into fresh memory);
    with durable=True; with durable=True, background=True, timed to the return of the
    call and until the entry is on disk. Then repeated hits (default and copy=True)."""
    X = data(n, T)
    k = RNTK()
    gram(X[:50], kernel=k, n_jobs=n_jobs)                    # compile / load
    runs = {"plain": [], "cached": [], "cached_copy": [], "cached_durable": [],
            "cached_bg": [], "cached_bg_stored": []}
    cpu = {"plain": [], "cached": [], "cached_copy": [], "cached_durable": [],
           "cached_bg": []}
    ref = gram(X, kernel=k, n_jobs=n_jobs)
    modes = (("plain", None, None, False), ("cached", False, False, False),
             ("cached_copy", False, False, True), ("cached_durable", False, True, False),
             ("cached_bg", True, True, False))
    keep = None
    order_rng = np.random.default_rng(1234)
    for r in range(reps):
        # the runs of a round in a random (seeded) order: what the run before
        # leaves behind (memory just freed, page cache) must not favour any mode
        for i in order_rng.permutation(len(modes)):
            mode, background, durable, copy = modes[i]
            store = d = None
            if mode != "plain":
                d = Path(tempfile.mkdtemp(dir=root))
                store = GramStore(d, background=background, durable=durable, copy=copy)
            warm_memory(warm_mb)
            t0, c0 = time.perf_counter(), cpu_seconds()
            G = gram(X, kernel=k, n_jobs=n_jobs, cache=store)
            runs[mode].append(time.perf_counter() - t0)
            if store is not None:
                store.wait()
                if background:
                    runs["cached_bg_stored"].append(time.perf_counter() - t0)
            cpu[mode].append(cpu_seconds() - c0)
            assert np.array_equal(G, ref)
            del G
            if d is not None:
                if r == reps - 1 and mode == "cached":
                    keep = d
                else:
                    shutil.rmtree(d)
    d = keep
    hits, hits_copy = [], []
    stores = (GramStore(d), GramStore(d, copy=True))
    for _ in range(max(15, reps)):
        for store, into in zip(stores, (hits, hits_copy)):
            warm_memory(warm_mb)
            t0 = time.perf_counter()
            Gh = gram(X, kernel=k, n_jobs=n_jobs, cache=store)
            into.append(time.perf_counter() - t0)
            assert np.array_equal(ref, Gh)
            del Gh
    assert all(s.stats["hits"] == len(hits) for s in stores)
    size = sum(p.stat().st_size for p in d.iterdir())
    shutil.rmtree(d)
    med = {m: statistics.median(v) for m, v in runs.items()}
    best = {m: min(v) for m, v in runs.items()}
    cmed = {m: statistics.median(v) for m, v in cpu.items()}
    out = {"n": n, "T": T, "n_jobs": n_jobs, "reps": reps, "warm_memory_mb": warm_mb,
           "runs_s": runs,
           "cpu_s": cpu, "hit_s": hits, "hit_copy_s": hits_copy,
           "median_hit_copy_s": statistics.median(hits_copy),
           "median_s": med, "best_s": best,
           "median_cpu_s": cmed, "median_hit_s": statistics.median(hits),
           "best_hit_s": min(hits), "entry_bytes": size}
    out["hit_speedup"] = med["plain"] / out["median_hit_s"]
    out["hit_speedup_best"] = best["plain"] / out["best_hit_s"]
    for m in ("cached", "cached_copy", "cached_durable", "cached_bg", "cached_bg_stored"):
        out[f"overhead_pct_{m}"] = 100 * (med[m] / med["plain"] - 1)
        # each cached run against the plain run of the same round (less noise)
        out[f"overhead_paired_pct_{m}"] = 100 * statistics.median(
            c / p - 1 for c, p in zip(runs[m], runs["plain"]))
        out[f"overhead_best_pct_{m}"] = 100 * (best[m] / best["plain"] - 1)
    for m in ("cached", "cached_copy", "cached_durable", "cached_bg"):
        out[f"overhead_cpu_pct_{m}"] = 100 * (cmed[m] / cmed["plain"] - 1)
    return out


def page_cache_probe(root, mb=256):
    """MB/s of writing new file data (fresh page-cache pages) vs overwriting it."""
    buf = np.random.default_rng(0).bytes(mb << 20)
    path = Path(tempfile.mkdtemp(dir=root)) / "probe"
    out = {}
    with open(path, "wb", buffering=0) as fh:
        t0 = time.perf_counter()
        fh.write(buf)
        out["new_pages_MBps"] = mb / (time.perf_counter() - t0)
        fh.seek(0)
        t0 = time.perf_counter()
        fh.write(buf)
        out["overwrite_MBps"] = mb / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        os.fsync(fh.fileno())
        out["fsync_MBps"] = mb / (time.perf_counter() - t0)
    import zlib
    t0 = time.perf_counter()
    zlib.crc32(buf)
    out["crc32_MBps"] = mb / (time.perf_counter() - t0)
    a = np.frombuffer(buf, dtype=np.float64)
    t0 = time.perf_counter()
    b = a.copy()                                   # into memory never touched before
    out["copy_to_new_memory_MBps"] = mb / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    np.copyto(b, a)                                # into the same memory again
    out["copy_to_touched_memory_MBps"] = mb / (time.perf_counter() - t0)
    shutil.rmtree(path.parent)
    return out


#: The crash and damage tests run twice: every in-memory result mapped from its entry's
#: file (the default for >= 8 MiB; here for the tests' small Grams too), and copied.
RESULTS = {"mapped": 0, "copied": 1 << 62}


def worker(mode, root, *extra, results="mapped"):
    d = tempfile.mkdtemp(dir=root)
    env = dict(os.environ, PYTHONWARNINGS="ignore",
               RNTK_TEST_MAP_MIN_BYTES=str(RESULTS[results]))
    try:
        res = subprocess.run([sys.executable, str(WORKER), mode, d, *map(str, extra)],
                             capture_output=True, text=True, check=True, env=env)
        return json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def oocore_child(args):
    """Run in a fresh process so that ru_maxrss is this computation's peak."""
    X = data(args.oocore_n, args.oocore_T, seed=1)
    k = RNTK()
    store = GramStore(args.dir)
    gram(X[:50], kernel=k, n_jobs=args.n_jobs)
    t0 = time.perf_counter()
    G = store.gram(X, kernel=k, n_jobs=args.n_jobs, progress=args.progress,
                   out_of_core=True)
    t_cold = time.perf_counter() - t0
    stats = dict(store.stats)
    rss_cold = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rows = np.random.default_rng(0).choice(args.oocore_n, 500, replace=False)
    t0 = time.perf_counter()
    sub = G.take(rows, rows)
    t_take = time.perf_counter() - t0
    check = gram(X[rows], kernel=k, n_jobs=args.n_jobs)
    G.close()
    t0 = time.perf_counter()
    G = store.gram(X, kernel=k, n_jobs=args.n_jobs, out_of_core=True)   # a hit: a handle
    t_hit = time.perf_counter() - t0
    row = G[12345 % args.oocore_n]
    G.close()
    files = list(Path(args.dir).iterdir())
    out = {"n": args.oocore_n, "T": args.oocore_T, "n_jobs": args.n_jobs,
           "type": type(G).__name__, "cold_s": t_cold, "hit_open_s": t_hit,
           "take_500x500_s": t_take, "take_matches_direct": bool(np.array_equal(sub, check)),
           "row_len": int(row.size), "peak_rss_bytes": rss_cold,
           "peak_rss_after_reads_bytes":
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "entry_bytes": sum(p.stat().st_size for p in files),
           "entry_disk_bytes": sum(p.stat().st_blocks * 512 for p in files),
           "matrix_bytes_one_kernel": 8 * args.oocore_n ** 2, "stats": stats}
    print(json.dumps(out))


def oocore(args, root):
    d = tempfile.mkdtemp(dir=root)
    need = 16 * args.oocore_n ** 2 + (1 << 30)
    free = shutil.disk_usage(d).free
    if free < need:
        shutil.rmtree(d)
        return {"skipped": f"needs {need / 2**30:.1f} GiB free, {free / 2**30:.1f} GiB "
                           f"available in {root}"}
    try:
        cmd = [sys.executable, __file__, "--oocore-child", "--dir", d,
               "--oocore-n", str(args.oocore_n), "--oocore-T", str(args.oocore_T),
               "--n-jobs", str(args.n_jobs)] + (["--progress"] if args.progress else [])
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="results/store", help="output directory")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--fuzz-rounds", type=int, default=300)
    p.add_argument("--tmp", default=None, help="where stores are created (default: --out)")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--warm-memory", type=int, default=0, metavar="MB",
                   help="touch and free MB of memory before every timed call (isolates "
                        "the cost of memory the hypervisor has not backed yet)")
    p.add_argument("--oocore", action="store_true", help="also run the out-of-core case")
    p.add_argument("--oocore-n", type=int, default=40000)
    p.add_argument("--oocore-T", type=int, default=10)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--oocore-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.n_jobs is None:
        args.n_jobs = len(os.sched_getaffinity(0))
    if args.oocore_child:
        return oocore_child(args)
    out = out_dir(args.out)
    root = out_dir(args.tmp) if args.tmp else out
    res = {"machine": machine(), "command": command()}
    if not args.skip_timing:
        res["page_cache"] = page_cache_probe(root)
        print("page cache: " + ", ".join(f"{k} {v:.0f}" for k, v in res["page_cache"].items()),
              flush=True)
        res["timing"] = hit_and_overhead(args.n, args.T, args.reps, args.n_jobs, root,
                                         args.warm_memory)
        t = res["timing"]
        print(f"N={t['n']} T={t['T']} n_jobs={t['n_jobs']}, medians of {t['reps']} "
              f"(best in brackets): compute {t['median_s']['plain']:.3f} s "
              f"[{t['best_s']['plain']:.3f}]", flush=True)
        for m, label in (("cached", "cold, cached (default)"),
                         ("cached_copy", "cold, cached, copy=True"),
                         ("cached_durable", "cold, cached, durable=True (fsync)"),
                         ("cached_bg", "cold, cached, durable + background=True, call "
                                       "returns"),
                         ("cached_bg_stored", "cold, cached, durable + background=True, "
                                              "on disk")):
            cpu_note = (f", CPU {t[f'overhead_cpu_pct_{m}']:+.1f} %"
                        if f"overhead_cpu_pct_{m}" in t else "")
            print(f"  {label}: {t['median_s'][m]:.3f} s ({t[f'overhead_pct_{m}']:+.1f} %"
                  f"{cpu_note}; paired {t[f'overhead_paired_pct_{m}']:+.1f} %) "
                  f"[{t[f'overhead_best_pct_{m}']:+.1f} %]", flush=True)
        hs = sorted(1e3 * h for h in t["hit_s"])
        print(f"  hits ({len(hs)}), ms: " + " ".join(f"{h:.0f}" for h in hs), flush=True)
        print(f"  hit: {t['median_hit_s'] * 1e3:.1f} ms, {t['hit_speedup']:.0f}x faster "
              f"[{t['best_hit_s'] * 1e3:.1f} ms, {t['hit_speedup_best']:.0f}x]; copy=True: "
              f"{t['median_hit_copy_s'] * 1e3:.1f} ms, "
              f"{t['median_s']['plain'] / t['median_hit_copy_s']:.0f}x", flush=True)
    res["crash"], res["fuzz"] = {}, {}
    for results in RESULTS:
        c = res["crash"][results] = worker("crash", root, "--kills", args.kills,
                                           "--seed", 11, results=results)
        print(f"crash ({results} results): {c['kills']} kills ({c['killed_running']} "
              f"mid-run, {c['partial_left']} left a partial entry), "
              f"{c['resumes_matched']}/{c['resumed_runs']} resumed runs matched bit for "
              f"bit, corrupt reads served: {c['corrupt_served']}, complete entries "
              f"failing checks: {c['corrupt_detected']}", flush=True)
        f = res["fuzz"][results] = worker("fuzz", root, "--rounds", args.fuzz_rounds,
                                          "--seed", 12, results=results)
        print(f"damage ({results} results): {f['rounds']} rounds ({f['overwrites']} "
              f"overwrites, {f['truncations']} truncations): {f['detected']} detected "
              f"and recomputed, {f['served_wrong']} served wrong", flush=True)
    if args.oocore:
        res["oocore"] = oocore(args, root)
        o = res["oocore"]
        if "skipped" in o:
            print("out of core: skipped,", o["skipped"])
        else:
            print(f"out of core N={o['n']} T={o['T']}: {o['cold_s']:.0f} s, peak RSS "
                  f"{o['peak_rss_bytes'] / 2**30:.2f} GiB, entry "
                  f"{o['entry_bytes'] / 2**30:.1f} GiB, 500x500 take "
                  f"{o['take_500x500_s']:.2f} s (matches: {o['take_matches_direct']})")
    res["machine"]["load_average_end"] = os.getloadavg()
    path = out / "bench_store.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
