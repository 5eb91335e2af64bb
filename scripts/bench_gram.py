"""Gram-matrix throughput of rntk-numba against its baseline loop, the NumPy reference
and the sequence kernels a user would pick instead (issue 3).

    python scripts/bench_gram.py --out results/bench_gram          # full run
    python scripts/bench_gram.py --quick                           # smoke run

One run, same inputs for every method. A *pair-step* is one cell of the end-aligned
diagonal walk of one pair for one layer: a Gram of pairs (x, x') costs
n_layers * sum min(T, T') pair-steps. Peers that cannot finish the full workload in
reasonable time run on a random subset of the series and are extrapolated by their
own cost model (pairs, or pairs x T x T'); such rows say so.
Writes bench_gram.csv, bench_gram.md and bench_gram_scaling.png into --out.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from _common import out_dir, pyplot  # noqa: E402

from rntk_numba import RNTK, gram, pack, to_padded  # noqa: E402
from rntk_numba import _kernels  # noqa: E402
from rntk_numba.engine import default_n_jobs  # noqa: E402
from rntk_numba.tiles import pair_steps  # noqa: E402


# --------------------------------------------------------------------------------------
# The straightforward baseline: one pair at a time, scalar math.acos, parallel over rows.
@numba.njit(cache=True, nogil=True)
def _baseline_pair(values, offsets, lengths, sig, i, j, L, relu, sw2, su2, sb2, sv2):
    if lengths[i] < lengths[j]:
        i, j = j, i
    tau = lengths[i] - lengths[j]
    m = values.shape[1]
    v = np.zeros(L + 1)
    vp = np.zeros(L + 1)
    th = np.zeros(L + 1)
    for s in range(lengths[j]):
        pa = offsets[i] + s + tau
        pb = offsets[j] + s
        acc = 0.0
        for c in range(m):
            acc += values[pa, c] * values[pb, c]
        v[0] = acc / m
        for l in range(1, L + 1):
            a_term = v[l] if s > 0 else 0.0
            ath = vp[l] * th[l] if s > 0 else 0.0
            cc = sw2 * a_term + su2 * v[l - 1] + sb2
            theta = cc + sw2 * ath + su2 * vp[l - 1] * th[l - 1]
            a = sig[l - 1, pa]
            b = sig[l - 1, pb]
            if relu:
                if a * b == 0.0:
                    vv, vvp = 0.0, 0.25
                else:
                    rho = min(1.0, max(-1.0, cc / math.sqrt(a * b)))
                    t = math.acos(rho)
                    vv = math.sqrt(a * b) / (2 * math.pi) * (math.sin(t) + (math.pi - t) * rho)
                    vvp = (math.pi - t) / (2 * math.pi)
            else:
                q = (1 + 2 * a) * (1 + 2 * b)
                vv = 2 / math.pi * math.asin(2 * cc / math.sqrt(q))
                vvp = 4 / math.pi / math.sqrt(q - 4 * cc * cc)
            v[l] = vv
            vp[l] = vvp
            th[l] = theta
    return sv2 * v[L] + sv2 * vp[L] * th[L]


@numba.njit(cache=True, parallel=True)
def _baseline_gram(values, offsets, lengths, sig, diag, L, relu, sw2, su2, sb2, sv2):
    n = lengths.shape[0]
    out = np.empty((n, n))
    for i in numba.prange(n):
        out[i, i] = diag[i]
        for j in range(i + 1, n):
            out[i, j] = _baseline_pair(values, offsets, lengths, sig, np.int64(i),
                                       np.int64(j), L, relu,
                                       sw2, su2, sb2, sv2)
    for i in range(n):
        for j in range(i):
            out[i, j] = out[j, i]
    return out


def baseline_gram(X, k: RNTK):
    P = pack(X)
    sw2, su2, sb2, sh2, sv2 = (k.sigma_w ** 2, k.sigma_u ** 2, k.sigma_b ** 2,
                               k.sigma_h ** 2, k.sigma_v ** 2)
    sig, diag, _ = _kernels._self_walk(P.values, P.offsets, P.lengths, k.n_layers,
                                       k.activation_code, sw2, su2, sb2, sh2, sv2,
                                       _kernels.LAST)
    return _baseline_gram(P.values, P.offsets, P.lengths, sig, diag, k.n_layers,
                          k.activation == "relu", sw2, su2, sb2, sv2)


# --------------------------------------------------------------------------------------
def timed(fn, repeat=1):
    best = math.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def make_workload(name, quick, rng):
    scale = 0.25 if quick else 1.0
    k = RNTK()
    if name == "a":
        N, lens, m = 2000, None, 1
    elif name == "b":
        N, m = 1000, 1
        lens = rng.integers(50, 501, int(N * scale))
    elif name == "c":
        N, lens, m = 1000, None, 8
    elif name == "d":
        N, lens, m = 1000, None, 1
        k = RNTK(n_layers=3)
    elif name == "e":
        N, lens, m = 2000, None, 1
        k = RNTK(sigma_w=1.2, activation="erf")
    else:
        raise ValueError(name)
    N = int(N * scale)
    if lens is None:
        lens = np.full(N, 200)
    X = [rng.standard_normal((int(T), m)) for T in lens]
    X = [x / np.linalg.norm(x) for x in X]
    label = {"a": "N=%d, T=200, m=1, relu, L=1",
             "b": "N=%d, T~U[50,500], m=1, relu, L=1",
             "c": "N=%d, T=200, m=8, relu, L=1",
             "d": "N=%d, T=200, m=1, relu, L=3",
             "e": "N=%d, T=200, m=1, erf, L=1"}[name] % N
    return X, k, label


def subset(X, n, rng):
    idx = np.sort(rng.choice(len(X), size=min(n, len(X)), replace=False))
    return [X[i] for i in idx]


def peer_rows(X, label, n_subset, n_jobs, rng):
    """Peers on a random subset of n_subset[peer] series, extrapolated by their cost."""
    rows = []
    N = len(X)
    lengths = np.array([len(x) for x in X])
    equal = lengths.min() == lengths.max()

    def run(name, fn, n_sub, model="pairs"):
        try:
            Xs = subset(X, n_sub, rng)
            t, _ = timed(lambda: fn(Xs))
            ns = len(Xs)
            factor = (N * N) / (ns * ns)
            if model == "pairs x T^2":
                ls = np.array([len(x) for x in Xs], dtype=float)
                factor = (lengths.astype(float).sum() ** 2) / (ls.sum() ** 2)
            note = "" if ns == N else f"extrapolated from N={ns} ({model})"
            rows.append((label, name, N, t * factor, None, note))
        except Exception as exc:  # a peer failing must not stop the benchmark
            rows.append((label, name, N, float("nan"), None, f"failed: {exc!r}"[:120]))

    try:
        from tslearn.metrics import cdist_gak
        from tslearn.utils import to_time_series_dataset
        run("tslearn cdist_gak", lambda Xs: cdist_gak(to_time_series_dataset(Xs),
                                                      sigma=1.0, n_jobs=n_jobs),
            n_subset["gak"], "pairs x T^2")
    except ImportError:
        rows.append((label, "tslearn cdist_gak", N, float("nan"), None, "not installed"))
    try:
        import pysiglib

        def sig_gram(Xs):
            # ragged -> pad with the last value: signatures are invariant to it
            T = max(len(x) for x in Xs)
            arr = np.stack([np.concatenate([x, np.repeat(x[-1:], T - len(x), 0)])
                            for x in Xs])
            if arr.shape[2] == 1:     # a 1-D path has a trivial signature: add time
                return pysiglib.sig_kernel_gram(arr, arr, time_aug=True, dyadic_order=0,
                                                n_jobs=n_jobs)
            return pysiglib.sig_kernel_gram(arr, arr, dyadic_order=0, n_jobs=n_jobs)
        run("pysiglib sig_kernel_gram", sig_gram, n_subset["sig"], "pairs x T^2")
    except ImportError:
        rows.append((label, "pysiglib sig_kernel_gram", N, float("nan"), None,
                     "not installed"))
    try:
        from aeon.distances import dtw_pairwise_distance
        run("aeon DTW (full window)",
            lambda Xs: dtw_pairwise_distance([np.ascontiguousarray(x.T) for x in Xs],
                                             n_jobs=n_jobs),
            n_subset["dtw"], "pairs x T^2")
    except ImportError:
        rows.append((label, "aeon DTW", N, float("nan"), None, "not installed"))
    from sklearn.metrics.pairwise import rbf_kernel
    flat = to_padded(X, fill=0.0, side="start").reshape(N, -1)
    t, _ = timed(lambda: rbf_kernel(flat), repeat=2)
    rows.append((label, "sklearn RBF (raw vectors%s)" % ("" if equal else ", zero-padded"),
                 N, t, None, ""))
    return rows


def reference_row(X, k, label, n_sub, rng):
    try:
        sys.path.insert(0, str(ROOT / "tests"))
        from reference import reference_gram
    except ImportError as exc:
        return (label, "NumPy reference (tests/reference.py)", len(X), float("nan"), None,
                f"unavailable: {exc}")
    Xs = subset(X, n_sub, rng)
    t, _ = timed(lambda: reference_gram(Xs, kernel=k))
    lengths = np.array([len(x) for x in X], dtype=float)
    ls = np.array([len(x) for x in Xs], dtype=float)
    # the reference fills the full (T, T') grid: cost ~ sum_i sum_j T_i T_j
    factor = (lengths.sum() ** 2) / (ls.sum() ** 2)
    return (label, "NumPy reference (tests/reference.py)", len(X), t * factor, None,
            f"extrapolated from N={len(Xs)} (full T x T' grid)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/bench_gram")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--n-jobs", type=int, default=default_n_jobs())
    ap.add_argument("--workloads", default="a,b,c,d,e,f")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    rng = np.random.default_rng(args.seed)
    nj = args.n_jobs
    print(f"rntk-numba Gram benchmark: {nj} jobs, numba {numba.__version__}, "
          f"{os.cpu_count()} CPUs")
    # warm every compiled path once (numba cache) before timing
    for k in (RNTK(), RNTK(activation="erf")):
        tiny = [np.ones((3, 1)), np.ones((2, 1))]
        gram(tiny, kernel=k, n_jobs=1)
        baseline_gram(tiny, k)
    rows = []
    # subset sizes (series) for the peers that are too slow for the full workload
    n_subset = ({"gak": 60, "sig": 60, "dtw": 120} if args.quick else
                {"gak": 250, "sig": 250, "dtw": 500})
    for w in [w for w in args.workloads.split(",") if w != "f"]:
        X, k, label = make_workload(w, args.quick, rng)
        lengths = np.array([len(x) for x in X])
        steps = pair_steps(lengths, None, k.n_layers)
        t_eng, G = timed(lambda: gram(X, kernel=k, n_jobs=nj), repeat=3)
        rows.append((label, f"rntk-numba (n_jobs={nj})", len(X), t_eng, steps, ""))
        if w == "a" or args.quick:
            t1, G1 = timed(lambda: gram(X, kernel=k, n_jobs=1), repeat=2)
            assert np.array_equal(G, G1), "n_jobs changed the result"
            rows.append((label, "rntk-numba (n_jobs=1)", len(X), t1, steps, ""))
        t_b, Gb = timed(lambda: baseline_gram(X, k))
        err = np.abs(Gb - G).max() / np.abs(G).max()
        rows.append((label, f"one-pair-at-a-time numba loop ({numba.get_num_threads()} "
                     f"threads)", len(X), t_b, steps, f"max rel diff {err:.1e}"))
        rows.append(reference_row(X, k, label, 6 if args.quick else 12, rng))
        if not args.no_peers and w in ("a", "b", "c"):
            rows.extend(peer_rows(X, label, {kk: v // (4 if w != "a" else 2)
                                             for kk, v in n_subset.items()}, nj, rng))
        print_rows([r for r in rows if r[0] == label])
    scaling = []
    if "f" in args.workloads.split(","):
        k = RNTK()
        Ns = [125, 250, 500, 1000] if args.quick else [250, 500, 1000, 2000, 4000]
        Ts = [50, 100, 200] if args.quick else [50, 100, 200, 400, 800]
        for N in Ns:
            X = list(rng.standard_normal((N, 200, 1)))
            t, _ = timed(lambda: gram(X, kernel=k, n_jobs=nj), repeat=2)
            scaling.append(("N", N, 200, t, pair_steps(np.full(N, 200))))
        for T in Ts:
            X = list(rng.standard_normal((500, T, 1)))
            t, _ = timed(lambda: gram(X, kernel=k, n_jobs=nj), repeat=2)
            scaling.append(("T", 500, T, t, pair_steps(np.full(500, T))))
        for r in scaling:
            print(f"  scaling {r[0]}: N={r[1]:5d} T={r[2]:4d}  {r[3]:8.3f} s  "
                  f"{r[4] / r[3] / 1e6:7.0f} M pair-steps/s")
        plot_scaling(scaling, out / "bench_gram_scaling.png")
    write_results(rows, scaling, out, nj)


def fmt_rate(steps, t):
    return "" if steps is None or not np.isfinite(t) else f"{steps / t / 1e6:,.0f}"


def print_rows(rows):
    eng = {r[0]: r[3] for r in rows if r[1].startswith("rntk-numba (n_jobs=") and
           "n_jobs=1)" not in r[1]}
    for r in rows:
        ratio = r[3] / eng[r[0]] if r[0] in eng and np.isfinite(r[3]) else float("nan")
        print(f"  {r[0][:34]:34s} {r[1][:44]:44s} {r[3]:10.3f} s  "
              f"{fmt_rate(r[4], r[3]):>8s} M/s  x{ratio:8.1f}  {r[5]}")


def write_results(rows, scaling, out, nj):
    import csv
    eng = {r[0]: r[3] for r in rows if r[1] == f"rntk-numba (n_jobs={nj})"}
    with open(out / "bench_gram.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "method", "N", "seconds", "pair_steps",
                    "pair_steps_per_s", "time_vs_rntk_numba", "note"])
        for r in rows:
            rate = "" if r[4] is None else f"{r[4] / r[3]:.4g}"
            w.writerow([r[0], r[1], r[2], f"{r[3]:.4g}", r[4] or "", rate,
                        f"{r[3] / eng[r[0]]:.3g}" if r[0] in eng else "", r[5]])
        for r in scaling:
            w.writerow([f"scaling-{r[0]} N={r[1]} T={r[2]}", f"rntk-numba (n_jobs={nj})",
                        r[1], f"{r[3]:.4g}", r[4], f"{r[4] / r[3]:.4g}", "", ""])
    lines = ["| workload | method | wall time (s) | M pair-steps/s | time / rntk-numba "
             "| note |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        ratio = f"{r[3] / eng[r[0]]:,.1f}x" if r[0] in eng and np.isfinite(r[3]) else ""
        lines.append(f"| {r[0]} | {r[1]} | {r[3]:,.3f} | {fmt_rate(r[4], r[3])} | "
                     f"{ratio} | {r[5]} |")
    if scaling:
        lines += ["", "| scaling | N | T | wall time (s) | M pair-steps/s |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4] / r[3] / 1e6:,.0f} |"
                  for r in scaling]
    (out / "bench_gram.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'bench_gram.csv'} and {out / 'bench_gram.md'}")


def plot_scaling(scaling, path):
    plt = pyplot(missing="matplotlib missing: no scaling plot")
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, axis, col, fixed in ((axes[0], "N", 1, "T=200"), (axes[1], "T", 2, "N=500")):
        pts = [r for r in scaling if r[0] == axis]
        x = np.array([r[col] for r in pts], dtype=float)
        t = np.array([r[3] for r in pts])
        ax.loglog(x, t, "o-", label="rntk-numba")
        slope = 2 if axis == "N" else 1
        ax.loglog(x, t[-1] * (x / x[-1]) ** slope, "k--", lw=0.8,
                  label=f"~{axis}^{slope}")
        ax.set_xlabel(axis)
        ax.set_ylabel("wall time (s)")
        ax.set_title(f"Gram time vs {axis} ({fixed}, relu, L=1)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
