"""Subprocess helper for the GramStore tests and scripts/bench_store.py.

Modes (each prints one JSON line of results on stdout):

``crash DIR --kills K --seed S``
    Imports everything once, then K times forks a child that computes a small Gram
    through ``GramStore(DIR)`` (random ``n_jobs``, ``tile_size`` and mode: in memory,
    out of core within the memory budget -- both with tiles copied into the entry's
    file -- or out of core beyond a tiny budget -- tiles in the log; so both partial-
    entry layouts, and resumes across them) and SIGKILLs it at
    a uniformly random moment of its run. After every kill the store is inspected: a
    complete entry is read back and compared bit for bit with a reference computed
    without the store (a mismatch that is served counts as ``corrupt_served``; a
    complete entry that fails its checks counts as ``corrupt_detected``). A completed
    entry is removed again so that the following children resume partial entries. At
    the end one child runs to completion and its result is compared.
``race DIR OUT``
    Compute one Gram through the store (waiting for ``DIR/go`` to appear first, so that
    two processes start together); save it to OUT (.npy) and print the store's stats.
``fuzz DIR --rounds R --seed S``
    Store one entry, then R times overwrite random bytes of it (or truncate it) and ask
    for it again: the answer must equal the reference bit for bit (the damage is either
    detected and recomputed, or touched nothing that matters).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import warnings

import numpy as np

if "RNTK_TEST_MAP_MIN_BYTES" in os.environ:     # the test's choice: mapped or copied
    import rntk_numba.store as _S
    _S.MAP_MIN_BYTES = int(os.environ["RNTK_TEST_MAP_MIN_BYTES"])


def problem(seed=0, n=48):
    from rntk_numba import RNTK
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((int(rng.integers(4, 40)), 2)) for _ in range(n)]
    return X, RNTK(sigma_b=0.1, sigma_h=0.3, n_layers=2)


def reference(X, kernel):
    from rntk_numba.gram import compute_dense
    from rntk_numba.sequences import pack
    return compute_dense(pack(X), None, kernel, n_jobs=1)


def _same(res, ref) -> bool:
    return all(np.array_equal(np.asarray(a), b) for a, b in zip(res, ref))


def crash(args) -> dict:
    from rntk_numba.store import CorruptEntryError, GramStore
    warnings.simplefilter("ignore")
    X, kernel = problem(args.seed, args.n)
    ref = reference(X, kernel)
    rng = np.random.default_rng(args.seed)
    store = GramStore(args.dir)
    key = store.key(X, kernel=kernel)

    def child(tile_size, n_jobs, mode=0):
        """mode 0: in memory; 1: out_of_core=True; 2: memory_budget too small."""
        pid = os.fork()
        if pid == 0:  # child: compute, then leave without any cleanup
            code = 0
            try:
                st = GramStore(args.dir, memory_budget=100 if mode == 2 else None)
                st.gram(X, kernel=kernel, kind="both", n_jobs=n_jobs,
                        tile_size=tile_size, out_of_core=mode == 1 or None)
                st.wait()               # the entry is completed in the background
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 3
            os._exit(code)
        return pid

    # how long one uninterrupted run takes (from a fresh start, the slowest setting)
    durations = []
    for _ in range(2):
        store.clear()
        t0 = time.perf_counter()
        _, status = os.waitpid(child(3, 1), 0)
        durations.append(time.perf_counter() - t0)
        assert os.WEXITSTATUS(status) == 0
    store.clear()
    duration = min(durations)

    out = dict(kills=0, killed_running=0, partial_left=0, complete_after_kill=0,
               resumed_runs=0, resumes_matched=0, tiles_resumed=0, corrupt_served=0,
               corrupt_detected=0, run_seconds=round(duration, 3))

    def check(resume_run: bool):
        """Inspect the store; a complete entry must equal the reference."""
        if not os.path.exists(store._final(key)):
            return False
        try:
            with store.lookup(X, kernel=kernel) as entry:
                got = (entry.read("ntk"), entry.read("nngp"))
                resumed = int(entry.meta["tiles_resumed"])
        except (CorruptEntryError, AttributeError):
            out["corrupt_detected"] += 1
            return True
        if not _same(got, ref):
            out["corrupt_served"] += 1
        elif resume_run:
            out["resumes_matched"] += 1
            out["tiles_resumed"] += resumed
        store.remove(key)          # start over: exercise partial entries again
        return True

    while out["kills"] < args.kills:
        # a few kills at random moments, then one run that may finish (a resume)
        for _ in range(int(rng.integers(1, 5))):
            tile_size = [None, 3, 5, 8][int(rng.integers(4))]
            pid = child(tile_size, int(rng.integers(1, 3)), int(rng.integers(3)))
            time.sleep(float(rng.uniform(0, duration)))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - exited and reaped meanwhile
                pass
            _, status = os.waitpid(pid, 0)
            out["kills"] += 1
            out["killed_running"] += os.WIFSIGNALED(status)
            out["partial_left"] += os.path.exists(store._journal(key))
            out["complete_after_kill"] += check(False)
        resume = os.path.exists(store._journal(key))
        out["resumed_runs"] += resume
        _, status = os.waitpid(child(None, 2, int(rng.integers(3))), 0)
        assert os.WEXITSTATUS(status) == 0
        check(resume)
    return out


def race(args) -> dict:
    from rntk_numba.store import GramStore
    X, kernel = problem(args.seed, args.n)
    go = os.path.join(args.dir, "go")
    while not os.path.exists(go):
        time.sleep(0.002)
    store = GramStore(args.dir)
    ntk, nngp = store.gram(X, kernel=kernel, kind="both", n_jobs=1, tile_size=4)
    np.save(args.out, np.stack([ntk, nngp]))
    return dict(store.stats)


def fuzz(args) -> dict:
    from rntk_numba.store import GramStore
    warnings.simplefilter("ignore")
    X, kernel = problem(args.seed, args.n)
    ref = reference(X, kernel)
    rng = np.random.default_rng(args.seed)
    store = GramStore(args.dir)
    store.gram(X, kernel=kernel, kind="both")
    store.wait()
    path = store._final(store.key(X, kernel=kernel))
    pristine = path.with_suffix(".pristine")
    shutil.copyfile(path, pristine)
    size = os.path.getsize(pristine)
    out = dict(rounds=0, overwrites=0, truncations=0, detected=0, served_wrong=0,
               errors=0, file_bytes=size)
    for r in range(args.rounds):
        shutil.copyfile(pristine, path)
        before = store.stats["corrupt"]
        if r % 5 == 4:                                    # truncate
            with open(path, "r+b") as fh:
                fh.truncate(int(rng.integers(0, size)))
            out["truncations"] += 1
        else:
            region = r % 3                                # head, anywhere, tail
            n = int(rng.integers(1, 64))
            lo, hi = [(0, min(size, 8192)), (0, size), (max(0, size - 8192), size)][region]
            pos = int(rng.integers(lo, max(lo + 1, hi - n)))
            with open(path, "r+b") as fh:
                fh.seek(pos)
                old = fh.read(n)
                new = bytes(rng.integers(0, 256, len(old), dtype=np.uint8))
                while new == old:
                    new = bytes(rng.integers(0, 256, len(old), dtype=np.uint8))
                fh.seek(pos)
                fh.write(new)
            out["overwrites"] += 1
        try:
            res = store.gram(X, kernel=kernel, kind="both")
            store.wait()
        except Exception:       # an error is not a wrong answer, but count it
            out["errors"] += 1
            store.remove(store.key(X, kernel=kernel))
            continue
        out["rounds"] += 1
        out["detected"] += store.stats["corrupt"] > before
        out["served_wrong"] += not _same(res, ref)
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["crash", "race", "fuzz"])
    p.add_argument("dir")
    p.add_argument("out", nargs="?")
    p.add_argument("--kills", type=int, default=25)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=48)
    args = p.parse_args(argv)
    result = {"crash": crash, "race": race, "fuzz": fuzz}[args.mode](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
