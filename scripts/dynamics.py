"""Training dynamics: the infinitely wide RNN against finite RNNs trained by gradient
descent (spec section 5, the paper's section 3.2 / Theorem 2).

Data: the regression task of ``scripts/regression.py`` (windows of random length of a
noisy sine, predict the next value), small: ``--n-train`` training windows.

* Kernel predictor: ``rntk_numba.analysis.GradientFlow`` on the exact RNTK, the mean
  prediction (f0 = 0) of the infinitely wide RNN trained for time s with learning rate
  ``lr``, for every recorded step (s = step) and s = inf (kernel regression).
* Expected test error of the infinitely wide network over random initialisations:
  its outputs at initialisation are a centred Gaussian process with the NNGP kernel,
  so ``E mse_s = mse(mean_s) + mean_j Var_s[j]`` with
  ``f_s(X*) = mean_s + f0(X*) - A_s f0(X)``,
  ``A_s = Theta* Theta^-1 (I - exp(-lr Theta s))``
  (model ``kernel_expected``); this is what the finite networks' mean error approaches.
* Finite RNNs of increasing width (``rntk_numba.finite.train_gd``: full-batch gradient
  descent on ``1/2 sum (f - y)^2``, same ``lr``, NTK parameterisation and
  initialisation), several seeds each. For each network the kernel prediction WITH ITS
  OWN initial outputs f0 is also computed; the relative deviation

      dev(step) = || f_net(X*) - f_kernel,f0(X*) || / || f_kernel,f0(X*) - f0(X*) ||

  measures how closely the network follows the linearised infinite-width dynamics; it
  should shrink as the width grows (roughly like 1/sqrt(width)).

``lr`` is ``--lr-scale / lambda_max(K)``, so that gradient descent is stable for the
kernel model. Discrete steps versus continuous time differ by O(lr) per eigen-direction;
with ``--lr-scale 0.5`` this is visible only in the first few steps.

Writes to ``--out`` (default ``results/dynamics``): ``dynamics.csv`` (model, width, seed,
step, test_mse, train_mse, dev), ``dynamics.png`` (test error against training time and
the deviation against width) and prints a summary table.

Examples::

    python scripts/dynamics.py --out results/dynamics
    python scripts/dynamics.py --quick --out /tmp/dynamics
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import numpy as np

from rntk_numba import RNTK, gram
from rntk_numba.analysis import GradientFlow

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import out_dir, pyplot, write_csv  # noqa: E402

COLUMNS = ["model", "width", "seed", "step", "test_mse", "train_mse", "dev"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/dynamics", help="output directory")
    p.add_argument("--quick", action="store_true", help="a fast smoke run")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 1024])
    p.add_argument("--seeds", type=int, default=5, help="networks per width")
    p.add_argument("--steps", type=int, default=600, help="gradient steps")
    p.add_argument("--record-every", type=int, default=10)
    p.add_argument("--lr-scale", type=float, default=0.5,
                   help="learning rate = lr_scale / lambda_max(K_train)")
    p.add_argument("--n-train", type=int, default=24)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--T-fixed", type=int, default=8)
    p.add_argument("--T-var", type=int, default=4)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--sigma-w", type=float, default=math.sqrt(2.0))
    p.add_argument("--sigma-b", type=float, default=0.1)
    p.add_argument("--sigma-h", type=float, default=0.0)
    p.add_argument("--activation", default="relu", choices=["relu", "erf"])
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads for the finite networks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--replot", action="store_true",
                   help="only re-read dynamics.csv in --out and redo the table and PNG")
    args = p.parse_args(argv)
    if args.quick:
        args.widths = [16, 128]
        args.seeds = min(args.seeds, 2)
        args.steps = min(args.steps, 100)
        args.n_test = min(args.n_test, 50)
    if (min(args.widths) < 1 or args.seeds < 1 or args.steps < 1
            or args.record_every < 1 or not 0 < args.lr_scale < 2):
        raise SystemExit("dynamics.py: need widths, seeds, steps, record-every >= 1 "
                         "and 0 < lr-scale < 2")
    if not 0 <= args.T_var < args.T_fixed:
        raise SystemExit("dynamics.py: need 0 <= T_var < T_fixed")
    return args


def make_data(args, rng):
    """Windows of random length of a noisy sine and their next values."""
    clean = np.sin(2.0 * np.pi * np.arange(1000) / 1000)
    out = []
    for n in (args.n_train, args.n_test):
        noisy = clean + args.noise * rng.standard_normal(clean.size)
        ends = rng.integers(args.T_fixed, clean.size, size=n)
        lengths = rng.integers(args.T_fixed - args.T_var, args.T_fixed + 1, size=n)
        out.append(([noisy[e - T:e] for e, T in zip(ends, lengths)], noisy[ends]))
    return out


def mse(a, b):
    return np.mean((a - b) ** 2, axis=-1)


def run(args):
    from threadpoolctl import threadpool_limits

    try:
        from rntk_numba.finite import train_gd
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        raise SystemExit(f"dynamics.py needs rntk_numba.finite.train_gd: {exc}") from exc

    rng = np.random.default_rng([args.seed, 1])
    (X, y), (Xt, yt) = make_data(args, rng)
    k = RNTK(sigma_w=args.sigma_w, sigma_b=args.sigma_b, sigma_h=args.sigma_h,
             activation=args.activation)
    K, Ks = gram(X, kernel=k), gram(Xt, X, kernel=k)
    lam = np.linalg.eigvalsh(K)
    lr = args.lr_scale / lam[-1]
    steps = np.unique(np.r_[np.arange(0, args.steps + 1, args.record_every), args.steps])
    print(f"  K_train eigenvalues [{lam[0]:.3g}, {lam[-1]:.3g}], lr = {lr:.4g}, "
          f"lr*lambda_min*steps = {lr * lam[0] * args.steps:.3g}", flush=True)
    rows = []
    mean_flow = GradientFlow(K, y, lr=lr)
    times = np.r_[steps, np.inf]
    test = mean_flow.predict(Ks, times)
    train = mean_flow.train(times)
    for s, a, b in zip(times, mse(test, yt), mse(train, y)):
        rows.append({"model": "kernel", "width": "inf", "seed": "", "step": s,
                     "test_mse": a, "train_mse": b, "dev": ""})
    # expected error over random initialisations (NNGP covariance of f0)
    N, Ns = gram(X, kernel=k, kind="nngp"), gram(Xt, X, kernel=k, kind="nngp")
    Nss = np.array([gram([x], kernel=k, kind="nngp")[0, 0] for x in Xt])
    A = GradientFlow(K, np.eye(len(X)), lr=lr).predict(Ks, times)    # (S, n_test, n)
    Atr = GradientFlow(K, np.eye(len(X)), lr=lr).train(times)        # (S, n, n)
    for i, s in enumerate(times):
        a = A[i]
        var = (Nss - 2.0 * np.einsum("jn,jn->j", a, Ns)
               + np.einsum("jn,nm,jm->j", a, N, a))
        b = np.eye(len(X)) - Atr[i]                    # f_s(X) = mean + (I - A) f0
        var_tr = np.einsum("in,nm,im->i", b, N, b)
        rows.append({"model": "kernel_expected", "width": "inf", "seed": "", "step": s,
                     "test_mse": float(mse(test[i], yt) + var.mean()),
                     "train_mse": float(mse(train[i], y) + var_tr.mean()), "dev": ""})
    for width in args.widths:
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            with threadpool_limits(args.blas_threads):
                h = train_gd(X, y, k, width, lr, args.steps,
                             np.random.default_rng([args.seed, 2, width, seed]), Xt,
                             record_every=args.record_every)
            if not (np.isfinite(h.test).all() and np.isfinite(h.train).all()):
                print(f"    width {width} seed {seed}: diverged (lr too large for this "
                      f"network's empirical NTK)", flush=True)
            own = GradientFlow(K, y, lr=lr, f0_train=h.train[0])
            ref = own.predict(Ks, h.steps, f0_test=h.test[0])
            denom = np.linalg.norm(ref - h.test[0], axis=1)
            dev = np.linalg.norm(h.test - ref, axis=1) / np.where(denom > 0, denom, 1.0)
            for i, s in enumerate(h.steps):
                rows.append({"model": "rnn", "width": width, "seed": seed,
                             "step": float(s), "test_mse": float(mse(h.test[i], yt)),
                             "train_mse": float(mse(h.train[i], y)),
                             "dev": float(dev[i]) if s > 0 else ""})
        print(f"  width {width:5d}: {args.seeds} networks, {args.steps} steps, "
              f"{time.perf_counter() - t0:6.1f} s", flush=True)
    return rows, lr


def read_csv(path):
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            r["width"] = r["width"] if r["width"] == "inf" else int(r["width"])
            r["seed"] = int(r["seed"]) if r["seed"] != "" else ""
            for c in ("step", "test_mse", "train_mse", "dev"):
                r[c] = float(r[c]) if r[c] != "" else ""
            rows.append(r)
    return rows


def _rnn(rows, width):
    sub = [r for r in rows if r["model"] == "rnn" and r["width"] == width]
    steps = sorted({r["step"] for r in sub})
    get = {(r["seed"], r["step"]): r for r in sub}
    seeds = sorted({r["seed"] for r in sub})
    te = np.array([[get[(s, t)]["test_mse"] for t in steps] for s in seeds])
    dv = np.array([[get[(s, t)]["dev"] if t > 0 else np.nan for t in steps] for s in seeds],
                  dtype=float)
    return np.array(steps), te, dv


def print_table(rows, widths, n_steps):
    kern = {r["step"]: r for r in rows if r["model"] == "kernel"}
    marks = sorted({s for s in kern if math.isfinite(s)})
    picks = [marks[min(len(marks) - 1, int(round(q * (len(marks) - 1))))]
             for q in (0.0, 0.1, 0.25, 0.5, 1.0)]
    print("\ntest MSE (finite networks: mean over seeds) at steps",
          [int(p) for p in picks])
    print(f"{'model':>14s}" + "".join(f"{int(p):>10d}" for p in picks) + f"{'s=inf':>10s}")
    print(f"{'kernel (f0=0)':>14s}" + "".join(f"{kern[p]['test_mse']:10.4g}" for p in picks)
          + f"{kern[math.inf]['test_mse']:10.4g}")
    expd = {r["step"]: r for r in rows if r["model"] == "kernel_expected"}
    print(f"{'E[inf. width]':>14s}" + "".join(f"{expd[p]['test_mse']:10.4g}" for p in picks)
          + f"{expd[math.inf]['test_mse']:10.4g}")
    for w in widths:
        steps, te, dv = _rnn(rows, w)
        idx = [int(np.searchsorted(steps, p)) for p in picks]
        print(f"{'rnn n=' + str(w):>14s}"
              + "".join(f"{te[:, i].mean():10.4g}" for i in idx))
    print("\nrelative deviation from the kernel prediction with the network's own f0 "
          "(mean +- std over seeds)")
    print(f"{'width':>8s} {'at step ' + str(int(picks[2])):>18s} {'at the end':>18s}")
    for w in widths:
        steps, te, dv = _rnn(rows, w)
        i = int(np.searchsorted(steps, picks[2]))
        print(f"{w:8d} {dv[:, i].mean():10.4f}+-{dv[:, i].std():<7.4f}"
              f"{dv[:, -1].mean():10.4f}+-{dv[:, -1].std():<7.4f}")


def plot(rows, widths, path, lr):
    plt = pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11.5, 5.0))
    kern = sorted((r["step"], r["test_mse"]) for r in rows if r["model"] == "kernel")
    fin = [(s, v) for s, v in kern if math.isfinite(s) and s > 0]
    a1.plot(*zip(*fin), "k-", lw=2.4, label="infinite width (kernel, f0 = 0)")
    a1.axhline(dict(kern)[math.inf], color="k", ls=":", lw=1,
               label="kernel regression (s = inf)")
    expd = sorted((r["step"], r["test_mse"]) for r in rows
                  if r["model"] == "kernel_expected" and math.isfinite(r["step"])
                  and r["step"] > 0)
    a1.plot(*zip(*expd), "k--", lw=1.6,
            label="infinite width, expected over random init")
    finals = []
    for i, w in enumerate(widths):
        steps, te, dv = _rnn(rows, w)
        m = steps > 0
        a1.plot(steps[m], te.mean(axis=0)[m], color=f"C{i}", lw=1.3,
                label=f"RNN width {w} (mean of {te.shape[0]})")
        finals.append((w, dv[:, m].mean(axis=0), steps[m], dv[:, -1]))
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("gradient steps (kernel time s = steps"
                  + ("" if math.isnan(lr) else f", lr = {lr:.3g}") + ")")
    a1.set_ylabel("test MSE")
    a1.grid(True, which="both", alpha=0.3)
    for i, (w, d, s, last) in enumerate(finals):
        a2.plot(s, d, color=f"C{i}", label=f"width {w}")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("gradient steps")
    a2.set_ylabel(r"$\|f_{net} - f_{kernel,f_0}\| / \|f_{kernel,f_0} - f_0\|$ (test)")
    a2.grid(True, which="both", alpha=0.3)
    a2.legend(fontsize=7)
    handles, labels = a1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("Finite RNNs trained by gradient descent vs the RNTK gradient-flow "
                 "prediction", fontsize=11)
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    out_dir(args.out)
    t0 = time.perf_counter()
    path = os.path.join(args.out, "dynamics.csv")
    if args.replot:
        rows = read_csv(path)
        args.widths = sorted({r["width"] for r in rows if r["model"] == "rnn"})
        args.steps = int(max(r["step"] for r in rows if r["model"] == "rnn"))
        lr = float("nan")
    else:
        rows, lr = run(args)
        write_csv(rows, COLUMNS, path)
    print_table(rows, args.widths, args.steps)
    if not args.no_plot:
        plot(rows, args.widths, os.path.join(args.out, "dynamics.png"), lr)
    verb = "re-read" if args.replot else "wrote"
    print(f"\n{verb} {args.out}/dynamics.csv"
          + ("" if args.no_plot else ", wrote dynamics.png")
          + f" in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
