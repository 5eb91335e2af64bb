"""Finite-width RNNs converge to the RNTK (the paper's Figure 2; spec 3.3 item 3).

For each width n, draws ``--seeds`` random RNNs of spec section 1 (NTK
parameterisation), computes the empirical NTK ``<grad_theta f(x_i), grad_theta
f(x_j)>`` on a fixed set of sequences (``rntk_numba.finite.empirical_ntk``) and its
relative error against the exact kernel ``rntk_numba.gram``:

    rel_error = || Theta_emp - Theta ||_F / || Theta ||_F      (one value per seed)

for tied weights and for untied weights (a fresh W, U, b at every step; same limit when
all sequences have the same length, the paper's Theorem 3). The error should shrink like
1/sqrt(n).

Writes ``convergence.csv`` (weights,activation,n_layers,width,seed_count,
mean_rel_error,std_rel_error) and ``convergence.png`` (log-log, with a 1/sqrt(n) guide
line) to ``--out``, and prints the table.

Example::

    python scripts/convergence.py --out results/convergence
    python scripts/convergence.py --widths 64 256 1024 --seeds 20 --ragged
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from rntk_numba import RNTK, gram
from rntk_numba.finite import empirical_ntk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import out_dir, pyplot, write_csv  # noqa: E402

# default hyperparameters per activation (su = 1 as in the paper)
_SIGMA_W = {"relu": math.sqrt(2.0), "erf": 1.2}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/convergence", help="output directory")
    p.add_argument("--widths", type=int, nargs="+",
                   default=[32, 64, 128, 256, 512, 1024], help="hidden widths n")
    p.add_argument("--seeds", type=int, default=10, help="random networks per width")
    p.add_argument("--activations", nargs="+", default=["relu", "erf"],
                   choices=["relu", "erf"])
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2],
                   help="numbers of layers L")
    p.add_argument("--weights", nargs="+", default=["tied", "untied"],
                   choices=["tied", "untied"])
    p.add_argument("--n-sequences", type=int, default=6)
    p.add_argument("--length", type=int, default=5, help="sequence length T")
    p.add_argument("--channels", type=int, default=2, help="input channels m")
    p.add_argument("--ragged", action="store_true",
                   help="tied runs use lengths uniform in [2, T] instead of T")
    p.add_argument("--sigma-b", type=float, default=0.1)
    p.add_argument("--sigma-h", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0, help="base random seed")
    p.add_argument("--no-plot", action="store_true", help="skip convergence.png")
    return p.parse_args(argv)


def make_data(args, ragged, rng):
    if ragged:
        lengths = rng.integers(min(2, args.length), args.length + 1, size=args.n_sequences)
    else:
        lengths = np.full(args.n_sequences, args.length)
    return [rng.standard_normal((int(T), args.channels)) for T in lengths]


def run(args):
    rows = []
    data_rng = np.random.default_rng([args.seed, 1])
    data = {"equal": make_data(args, False, data_rng),
            "ragged": make_data(args, True, data_rng)}
    for weights in args.weights:
        X = data["ragged" if (args.ragged and weights == "tied") else "equal"]
        for activation in args.activations:
            for L in args.layers:
                kernel = RNTK(sigma_w=_SIGMA_W[activation], sigma_u=1.0,
                              sigma_b=args.sigma_b, sigma_h=args.sigma_h, n_layers=L,
                              activation=activation)
                exact = gram(X, kernel=kernel)
                norm = np.linalg.norm(exact)
                t0 = time.perf_counter()
                for n in args.widths:
                    errs = []
                    for s in range(args.seeds):
                        rng = np.random.default_rng([args.seed, 2, n, s])
                        K = empirical_ntk(X, kernel, n, rng, untied=(weights == "untied"))
                        errs.append(np.linalg.norm(K - exact) / norm)
                    rows.append({"weights": weights, "activation": activation,
                                 "n_layers": L, "width": n, "seed_count": args.seeds,
                                 "mean_rel_error": float(np.mean(errs)),
                                 "std_rel_error": float(np.std(errs, ddof=1))
                                 if len(errs) > 1 else 0.0})
                print(f"  {weights:6s} {activation:4s} L={L}: "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def print_table(rows, widths):
    configs = []
    for r in rows:
        key = (r["weights"], r["activation"], r["n_layers"])
        if key not in configs:
            configs.append(key)
    head = ["width"] + [f"{w}/{a}/L{L}" for w, a, L in configs]
    print(" ".join(f"{h:>16s}" for h in head))
    table = {(r["weights"], r["activation"], r["n_layers"], r["width"]): r for r in rows}
    for n in widths:
        cells = [f"{n:>16d}"]
        for key in configs:
            r = table[key + (n,)]
            cells.append(f"{r['mean_rel_error']:>8.4f}+-{r['std_rel_error']:<6.3f}")
        print(" ".join(cells))
    # fitted slope of log(error) vs log(width) (1/sqrt(n) is -0.5)
    print("log-log slope: " + ", ".join(
        f"{w}/{a}/L{L} {np.polyfit(np.log(widths), np.log([table[(w, a, L, n)]['mean_rel_error'] for n in widths]), 1)[0]:.2f}"
        for w, a, L in configs) if len(widths) > 1 else "")


def plot(rows, widths, path):
    plt = pyplot()

    weights = sorted({r["weights"] for r in rows}, key=["tied", "untied"].index)
    fig, axes = plt.subplots(1, len(weights), figsize=(5.2 * len(weights), 4.2),
                             sharey=True, squeeze=False)
    for ax, wt in zip(axes[0], weights):
        sub = [r for r in rows if r["weights"] == wt]
        configs = sorted({(r["activation"], r["n_layers"]) for r in sub})
        last = []
        for a, L in configs:
            rr = sorted((r for r in sub if (r["activation"], r["n_layers"]) == (a, L)),
                        key=lambda r: r["width"])
            n = np.array([r["width"] for r in rr])
            e = np.array([r["mean_rel_error"] for r in rr])
            se = np.array([r["std_rel_error"] / math.sqrt(r["seed_count"]) for r in rr])
            lower = np.minimum(se, 0.9 * e)       # keep the bars on the log axis
            ax.errorbar(n, e, yerr=[lower, se], marker="o", capsize=3,
                        label=f"{a}, L={L}")
            last.append(e[-1])
        # guide line through the median error at the largest width
        n = np.array(sorted(widths), dtype=float)
        ax.plot(n, np.median(last) * np.sqrt(n[-1] / n), "k--", lw=1,
                label=r"$\propto 1/\sqrt{n}$")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width n")
        ax.set_title(f"{wt} weights (mean over seeds, bars: standard error)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(r"$\|\hat\Theta - \Theta\|_F / \|\Theta\|_F$")
    fig.suptitle("Empirical NTK of a finite RNN vs the exact RNTK")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.seeds < 1 or min(args.widths) < 1 or args.length < 1:
        raise SystemExit("convergence.py: --seeds, --widths and --length must be >= 1")
    out_dir(args.out)
    t0 = time.perf_counter()
    rows = run(args)
    widths = sorted(set(args.widths))
    write_csv(rows, ["weights", "activation", "n_layers", "width", "seed_count",
                     "mean_rel_error", "std_rel_error"],
              os.path.join(args.out, "convergence.csv"))
    print_table(rows, widths)
    if not args.no_plot:
        plot(rows, widths, os.path.join(args.out, "convergence.png"))
    print(f"wrote {args.out}/convergence.csv"
          + ("" if args.no_plot else f" and {args.out}/convergence.png")
          + f" in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
