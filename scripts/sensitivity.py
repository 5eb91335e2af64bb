"""Sensitivity of the RNTK to each time step (the paper's Figure 3; spec section 4).

For random pairs of independent univariate N(0, 1) sequences x, x' of length T
(default 100, as in the paper), computes the exact sensitivity

    S_t(x, x') = || d Theta(x, x') / d x_t ||,   t = 1..T

(``rntk_numba.analysis.sensitivity``: forward-mode derivative of the recursion, no step
size), normalises every pair's curve by its maximum over t and averages over pairs.
One panel per activation (relu, erf) and per varied hyperparameter:

* sigma_w (sigma_b = sigma_h = 0);
* sigma_b and sigma_h, at the activation's flattest sigma_w of the first panel.

sigma_u = 1 throughout. Note (spec 3.2): sigma_h is the scale of the random initial
hidden state, which only a sequence and ITSELF share; for a pair of different samples it
enters only through the two self-kernels, so its effect on S_t is weak by construction.

Then the "a priori" recommendation (``rntk_numba.analysis.recommend_hyperparameters``):
for several data-length settings, the (sigma_w, sigma_b) whose mean normalised
sensitivity is flattest (lowest coefficient of variation over t).

Writes to ``--out`` (default ``results/sensitivity``): ``sensitivity.csv`` (one row per
activation, panel, curve and t: the mean and std over pairs of S_t / max S and the
curve's flatness), ``sensitivity.png``, ``recommendation.csv`` (lengths, activation,
chosen hyperparameters, score, runner-up) and prints the tables.

Examples::

    python scripts/sensitivity.py --out results/sensitivity
    python scripts/sensitivity.py --quick --out /tmp/sensitivity
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from rntk_numba import RNTK
from rntk_numba.analysis import flatness, recommend_hyperparameters, sensitivity

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import out_dir, pyplot, write_csv  # noqa: E402

SQRT2 = math.sqrt(2.0)
#: sigma_w values of the first panel, per activation
SIGMA_W = {"relu": [1.0, 1.2, SQRT2, 1.6, 1.8], "erf": [0.5, 1.0, 2.0, 3.0, 4.0]}
SIGMA_B = [0.0, 0.5, 1.0, 2.0]
SIGMA_H = [0.0, 1.0, 4.0, 8.0]
COLUMNS = ["activation", "panel", "sigma_w", "sigma_u", "sigma_b", "sigma_h", "T",
           "n_pairs", "t", "mean_norm_S", "std_norm_S", "flatness"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/sensitivity", help="output directory")
    p.add_argument("--quick", action="store_true", help="a fast smoke run")
    p.add_argument("--T", type=int, default=100, help="sequence length")
    p.add_argument("--n-pairs", type=int, default=200, help="random pairs per curve")
    p.add_argument("--activations", nargs="+", default=["relu", "erf"],
                   choices=["relu", "erf"])
    p.add_argument("--rec-lengths", nargs="+", default=["10", "30", "100", "300",
                                                        "50-150"],
                   help="length settings of the recommendation: an integer T, or "
                        "'a-b' for lengths uniform in [a, b]")
    p.add_argument("--rec-pairs", type=int, default=48,
                   help="random pairs per candidate of the recommendation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.T = min(args.T, 30)
        args.n_pairs = min(args.n_pairs, 24)
        args.rec_lengths = ["20", "10-30"]
        args.rec_pairs = min(args.rec_pairs, 12)
    if args.T < 2 or args.n_pairs < 1 or args.rec_pairs < 1:
        raise SystemExit("sensitivity.py: need --T >= 2, --n-pairs >= 1, --rec-pairs >= 1")
    return args


def parse_lengths(spec):
    if "-" in spec:
        a, b = (int(v) for v in spec.split("-", 1))
        if not 1 <= a <= b:
            raise SystemExit(f"sensitivity.py: bad length range {spec!r}")
        return np.arange(a, b + 1)
    T = int(spec)
    if T < 1:
        raise SystemExit(f"sensitivity.py: bad length {spec!r}")
    return np.array([T])


def curve(kernel, X, Y, n_jobs):
    """Mean and std over pairs of S_t / max_t S_t, and the mean curve's flatness."""
    with np.errstate(over="ignore", invalid="ignore"):
        S = sensitivity(X, Y, kernel=kernel, normalize=True, n_jobs=n_jobs)
    ok = np.isfinite(S).all(axis=1)
    if not ok.all():
        print(f"    note: {int((~ok).sum())} pairs overflow float64 for {kernel}")
    S = S[ok]
    if S.shape[0] == 0:
        nan = np.full(X.shape[1], np.nan)
        return nan, nan, math.inf
    mean = S.mean(axis=0)
    return mean, S.std(axis=0), flatness(mean)


def run_panels(args):
    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((args.n_pairs, args.T))
    Y = rng.standard_normal((args.n_pairs, args.T))
    rows, curves = [], {}
    for act in args.activations:
        t0 = time.perf_counter()
        # panel 1: sigma_w
        best_w, best_f = None, math.inf
        for w in SIGMA_W[act]:
            k = RNTK(sigma_w=w, activation=act)
            mean, std, fl = curve(k, X, Y, args.n_jobs)
            curves[(act, "sigma_w", w)] = (k, mean, std, fl)
            if fl < best_f:
                best_w, best_f = w, fl
        # panels 2 and 3 at the flattest sigma_w
        for name, values in (("sigma_b", SIGMA_B), ("sigma_h", SIGMA_H)):
            for v in values:
                k = RNTK(sigma_w=best_w, activation=act, **{name: v})
                curves[(act, name, v)] = (k,) + curve(k, X, Y, args.n_jobs)
        print(f"  {act}: flattest sigma_w of the panel {best_w:.4g} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    for (act, panel, _), (k, mean, std, fl) in curves.items():
        for t in range(args.T):
            rows.append({"activation": act, "panel": panel, "sigma_w": k.sigma_w,
                         "sigma_u": k.sigma_u, "sigma_b": k.sigma_b,
                         "sigma_h": k.sigma_h, "T": args.T, "n_pairs": args.n_pairs,
                         "t": t + 1, "mean_norm_S": mean[t], "std_norm_S": std[t],
                         "flatness": fl})
    return rows, curves


def run_recommendations(args):
    out = []
    for spec in args.rec_lengths:
        lengths = parse_lengths(spec)
        for act in args.activations:
            t0 = time.perf_counter()
            rec = recommend_hyperparameters(lengths, activation=act,
                                            sigma_w=_rec_grid(act),
                                            sigma_b=(0.0, 0.1, 0.5),
                                            n_pairs=args.rec_pairs, seed=args.seed,
                                            n_jobs=args.n_jobs)
            second = rec.table[1] if len(rec.table) > 1 else None
            out.append({"lengths": spec, "activation": act,
                        "sigma_w": rec.kernel.sigma_w, "sigma_b": rec.kernel.sigma_b,
                        "sigma_h": rec.kernel.sigma_h, "score": rec.score,
                        "runner_up": ("" if second is None else
                                      f"sw={second['sigma_w']:.4g} sb={second['sigma_b']:g}"
                                      f" ({second['score']:.3f})"),
                        "seconds": time.perf_counter() - t0})
    return out


def _rec_grid(act):
    if act == "relu":
        return np.unique(np.r_[np.round(np.arange(0.8, 2.0001, 0.1), 2), SQRT2])
    return np.round(np.arange(0.5, 6.0001, 0.25), 2)


def print_tables(curves, recs, T):
    ts = sorted({0, T // 4, T // 2, (3 * T) // 4, T - 5, T - 1} - {-1})
    print(f"\nmean S_t / max S over pairs at t = {[t + 1 for t in ts]}, and flatness "
          f"(std/mean of the mean curve)")
    for (act, panel, v), (k, mean, _, fl) in curves.items():
        cells = " ".join(f"{mean[t]:9.2e}" for t in ts)
        print(f"{act:4s} {panel:7s}={v:<7.4g} {cells}   flat {fl:7.3f}")
    print("\nrecommended (flattest) hyperparameters, sigma_u = 1:")
    print(f"{'lengths':>9s} {'act':>5s} {'sigma_w':>8s} {'sigma_b':>8s} {'score':>7s}  "
          f"runner-up")
    for r in recs:
        print(f"{r['lengths']:>9s} {r['activation']:>5s} {r['sigma_w']:8.4f} "
              f"{r['sigma_b']:8.3g} {r['score']:7.3f}  {r['runner_up']}")


def plot(curves, args, path):
    plt = pyplot()

    acts = args.activations
    panels = ["sigma_w", "sigma_b", "sigma_h"]
    sym = {"sigma_w": r"$\sigma_w$", "sigma_b": r"$\sigma_b$", "sigma_h": r"$\sigma_h$"}
    fig, axes = plt.subplots(len(acts), 3, figsize=(14, 3.6 * len(acts)), squeeze=False)
    t = np.arange(1, args.T + 1)
    for i, act in enumerate(acts):
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            items = [(v, c) for (a, p, v), c in curves.items() if a == act and p == panel]
            for v, (k, mean, _, fl) in items:
                ax.plot(t, np.maximum(mean, 1e-30), lw=1.4,
                        label=f"{sym[panel]}={v:.3g} (flat {fl:.2f})")
            ax.set_yscale("log")
            ax.set_ylim(1e-10, 2.0)
            k0 = items[0][1][0]
            fixed = (rf"$\sigma_w$={k0.sigma_w:.3g}, " if panel != "sigma_w" else "")
            ax.set_title(f"{act}: vary {sym[panel]} ({fixed}$\\sigma_u$=1)", fontsize=10)
            ax.set_xlabel("time step t")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
            if panel == "sigma_h":
                ax.text(0.02, 0.03, "sigma_h reaches a pair of different samples\n"
                        "only through the self-kernels (spec 3.2): weak effect",
                        transform=ax.transAxes, fontsize=7, va="bottom")
        axes[i][0].set_ylabel(r"mean $S_t / \max_t S_t$")
    fig.suptitle(f"Sensitivity of the RNTK to x_t: exact gradient, {args.n_pairs} random "
                 f"N(0,1) pairs of length T={args.T} (log scale)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    out_dir(args.out)
    t0 = time.perf_counter()
    rows, curves = run_panels(args)
    recs = run_recommendations(args)
    write_csv(rows, COLUMNS, os.path.join(args.out, "sensitivity.csv"))
    write_csv(recs, ["lengths", "activation", "sigma_w", "sigma_b", "sigma_h", "score",
                     "runner_up", "seconds"], os.path.join(args.out, "recommendation.csv"))
    print_tables(curves, recs, args.T)
    if not args.no_plot:
        plot(curves, args, os.path.join(args.out, "sensitivity.png"))
    print(f"\nwrote {args.out}/sensitivity.csv, recommendation.csv"
          + ("" if args.no_plot else ", sensitivity.png")
          + f" in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
