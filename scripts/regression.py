"""Regression on inputs of different lengths (the paper's Figure 4; spec section 6).

Task: predict the next value of a noisy series from a window of RANDOM length.

Synthetic data (default): one period of a sine sampled at 1000 points plus white
Gaussian noise of standard deviation ``--noise``. Each example is a window of length
T uniform in ``[T_fixed - T_var, T_fixed]`` ending at a random position, and its target
is the next (noisy) sample. Training and test windows are cut from two independent
noise realisations of the same sine (no test value is ever a training input).

Methods, each kernel ridge regression with the kernel's hyperparameters and the ridge
chosen together by 5-fold cross-validation on the training set (kernels scaled by the
mean of their training diagonal, so one ridge grid fits all), then refit on the whole
training set:

* ``rntk``: the RNTK on the RAW windows (no padding; one layer, su = 1; relu with
  sw in {1.2, sqrt 2, 1.6}, sb in {0, 0.1, 0.5}, sh in {0, 0.5}, and erf with sw in
  {1, 1.5, 2}, sb in {0, 0.1, 0.5});
* ``rbf_*``, ``poly_*``, ``mlp_ntk_*``: RBF, polynomial and MLP-NTK kernels on windows
  zero-padded to ``T_fixed``, at the END (``*_pad_end``: values first, then zeros) and
  at the START (``*_pad_start``: zeros first, which aligns the most recent values and
  is the stronger baseline);
* ``pts``: predict the previous time step (the window's last value).

Metric: ``SNR = 10 log10( sum y^2 / sum (y - y_hat)^2 )`` dB on the test windows, against
the observed (noisy) next value (``snr_db``) and against the noise-free one
(``snr_clean_db``, synthetic only).

Three sweeps (``--sweeps``): SNR against ``T_var`` (noise ``--noise``, ``--n-train``
windows), against the noise level (``T_var = --sweep-T-var``), and against the training
set size (same). ``--real`` runs instead the same comparison on a real series, the yearly
sunspot numbers 1700-2008 shipped with statsmodels (``pip install rntk-numba[bench]``):
standardised with the training part's mean and std, targets in the first 70 % of the
years for training, the rest for testing (windows may reach back into the training
years, as a forecaster's history would), SNR against ``T_var``.

Writes to ``--out`` (default ``results/regression``):
``regression.csv`` (long format: one row per sweep, method, T_var, noise, n_train and
repeat, with ``snr_db``, ``snr_clean_db`` and the chosen hyperparameters) and
``regression.png``; with ``--real``: ``regression_real.csv`` and ``regression_real.png``.
Prints mean +- std tables.

``--intervals`` runs instead the uncertainty experiment (issue 14) on BOTH data sets:
the sine (T_fixed 10, T_var 8, noise ``--noise``) and the sunspots (T_fixed 20, T_var
16), windows of random length in ``[T_fixed - T_var, T_fixed]``. Methods, all fitted on
the training windows and scored on the test windows:

* ``nngp_default`` / ``ntk_default``: ``RNTKGaussianProcessRegressor()`` with default
  arguments (relu, sw = sqrt 2, sb = sh = 0; output scale and noise by evidence), the
  exact NNGP posterior and the NTK ensemble trained to convergence (ridge = noise);
* ``nngp_evidence`` / ``ntk_evidence``: the RNTK hyperparameters chosen by
  ``evidence_search`` over the grid of the SNR experiment (27 settings, relu and erf);
* ``nngp_evidence_relu``: the same search over its 18 relu settings only;
* ``rbf_gp``: scikit-learn's ``GaussianProcessRegressor`` with
  ``ConstantKernel * RBF + WhiteKernel`` fitted by evidence (3 restarts) on windows
  zero-padded at the start.

Metrics: coverage of the central 90 % predictive interval (all test windows, and the
shorter / longer half of the window lengths), the mean negative log predictive density
(NLPD, nats, of the observed target), the mean interval width, and the SNR of the mean.
Timing (BLAS single-threaded): ``evidence_search`` against ``RNTKSearchCV`` (5-fold CV over the same 27
settings and the ridge grid), each computing its own Gram matrices; the selection part
alone (``fit_time_s`` summed against ``cv_time_``) too. Writes ``intervals.csv``,
``intervals_timing.csv``, ``intervals_forecast.npz`` and ``intervals.png`` (the
one-step forecast of repeat 0 with its 90 % band, NNGP and RBF GP).

Examples::

    python scripts/regression.py --out results/regression
    python scripts/regression.py --intervals --out results/regression
    python scripts/regression.py --real --out results/regression
    python scripts/regression.py --quick --out /tmp/regression
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np

from rntk_numba import RNTK, gram
from rntk_numba.baselines import mlp_ntk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import out_dir, pyplot, write_csv  # noqa: E402

#: Method order of the tables and plots.
KERNELS = ("rbf", "poly", "mlp_ntk")
SIDES = ("end", "start")
METHODS = ("rntk",) + tuple(f"{k}_pad_{s}" for s in SIDES for k in KERNELS) + ("pts",)
COLUMNS = ["sweep", "method", "T_var", "noise", "n_train", "repeat", "snr_db",
           "snr_clean_db", "params"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/regression", help="output directory")
    p.add_argument("--real", action="store_true",
                   help="run the sunspots experiment instead of the synthetic one")
    p.add_argument("--quick", action="store_true", help="a fast smoke run")
    p.add_argument("--intervals", action="store_true",
                   help="the predictive-interval experiment on the sine and the sunspots")
    p.add_argument("--datasets", nargs="+", default=["sine", "sunspots"],
                   choices=["sine", "sunspots"], help="data sets of --intervals")
    p.add_argument("--sweeps", nargs="+", default=["T_var", "noise", "n_train"],
                   choices=["T_var", "noise", "n_train"])
    p.add_argument("--T-fixed", type=int, default=None,
                   help="longest window (default 10 synthetic, 20 sunspots)")
    p.add_argument("--T-vars", type=int, nargs="+", default=None,
                   help="T_var values (default 0 2 4 6 8; sunspots 0 4 8 12 16)")
    p.add_argument("--noise", type=float, default=0.1, help="noise std (synthetic)")
    p.add_argument("--noises", type=float, nargs="+",
                   default=[0.02, 0.05, 0.1, 0.2, 0.4], help="noise sweep")
    p.add_argument("--n-train", type=int, default=200, help="training windows")
    p.add_argument("--n-trains", type=int, nargs="+", default=[50, 100, 200, 400],
                   help="training-set-size sweep")
    p.add_argument("--n-test", type=int, default=300, help="test windows")
    p.add_argument("--sweep-T-var", type=int, default=6,
                   help="T_var of the noise and training-size sweeps")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--replot", action="store_true",
                   help="only re-read the CSV in --out and redo the tables and PNGs")
    args = p.parse_args(argv)
    if args.intervals and args.quick:
        args.repeats = min(args.repeats, 1)
        args.n_train = min(args.n_train, 60)
        args.n_test = min(args.n_test, 40)
    if args.T_fixed is None:
        args.T_fixed = 20 if args.real else 10
    if args.T_vars is None:
        args.T_vars = [0, 4, 8, 12, 16] if args.real else [0, 2, 4, 6, 8]
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.T_vars = sorted({args.T_vars[0], args.T_vars[-1]})
        args.noises = [args.noise]
        args.n_trains = [min(args.n_trains)]
        args.n_train = min(args.n_train, 100)
        args.n_test = min(args.n_test, 100)
    if args.T_fixed < 2 or min(args.T_vars) < 0 or max(args.T_vars) >= args.T_fixed:
        raise SystemExit("regression.py: need T_fixed >= 2 and 0 <= T_var < T_fixed")
    if args.repeats < 1 or args.folds < 2:
        raise SystemExit("regression.py: need --repeats >= 1 and --folds >= 2")
    return args


# -- data ------------------------------------------------------------------------------
def sine(n=1000):
    return np.sin(2.0 * np.pi * np.arange(n) / n)


def cut_windows(series, clean, ends, lengths):
    """Windows ``series[e - T : e]`` and targets ``series[e]`` (and ``clean[e]``)."""
    X = [series[e - T:e].copy() for e, T in zip(ends, lengths)]
    return X, series[ends].copy(), clean[ends].copy()


def synthetic_split(T_fixed, T_var, noise, n_train, n_test, rng):
    clean = sine()
    out = []
    for n in (n_train, n_test):
        noisy = clean + noise * rng.standard_normal(clean.size)
        ends = rng.integers(T_fixed, clean.size, size=n)
        lengths = rng.integers(T_fixed - T_var, T_fixed + 1, size=n)
        out.append(cut_windows(noisy, clean, ends, lengths))
    return out


def load_sunspots():
    try:
        import statsmodels.api as sm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("regression.py --real needs statsmodels (the sunspots data "
                         "ship with it): pip install 'rntk-numba[bench]'") from exc
    df = sm.datasets.sunspots.load_pandas().data
    return df["YEAR"].to_numpy(), df["SUNACTIVITY"].to_numpy(dtype=np.float64)


def real_split(values, T_fixed, T_var, rng, train_fraction=0.7):
    n = values.size
    cut = int(round(train_fraction * n))
    mu, sd = values[:cut].mean(), values[:cut].std()
    z = (values - mu) / sd
    out = []
    for ends in (np.arange(T_fixed, cut), np.arange(cut, n)):
        lengths = rng.integers(T_fixed - T_var, T_fixed + 1, size=ends.size)
        out.append(cut_windows(z, z, ends, lengths))
    return out, cut


def padded(X, T_fixed, side):
    A = np.zeros((len(X), T_fixed))
    for i, x in enumerate(X):
        if side == "end":
            A[i, :x.size] = x
        else:
            A[i, T_fixed - x.size:] = x
    return A


# -- kernels ---------------------------------------------------------------------------
def rntk_grid():
    """One layer, su = 1: relu with sw near sqrt(2) (18 settings) and erf (9)."""
    relu = [RNTK(sigma_w=w, sigma_u=1.0, sigma_b=b, sigma_h=h)
            for w in (1.2, math.sqrt(2.0), 1.6) for b in (0.0, 0.1, 0.5)
            for h in (0.0, 0.5)]
    erf = [RNTK(sigma_w=w, sigma_u=1.0, sigma_b=b, activation="erf")
           for w in (1.0, 1.5, 2.0) for b in (0.0, 0.1, 0.5)]
    return relu + erf


def _rbf(A, B, gamma):
    d2 = (np.sum(A * A, 1)[:, None] + np.sum(B * B, 1)[None, :] - 2.0 * A @ B.T)
    return np.exp(-gamma * np.maximum(d2, 0.0))


def candidates(method, Xtr, Xte, T_fixed, n_jobs):
    """Yield (params, K_train, K_test_train) for every kernel setting of a method."""
    if method == "rntk":
        for k in rntk_grid():
            yield ({"activation": k.activation, "sigma_w": round(k.sigma_w, 4),
                    "sigma_b": k.sigma_b, "sigma_h": k.sigma_h},
                   gram(Xtr, kernel=k, n_jobs=n_jobs),
                   gram(Xte, Xtr, kernel=k, n_jobs=n_jobs))
        return
    name, side = method.rsplit("_pad_", 1)
    A, B = padded(Xtr, T_fixed, side), padded(Xte, T_fixed, side)
    d = A.shape[1]
    if name == "rbf":
        for g in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
            yield {"gamma_d": g}, _rbf(A, A, g / d), _rbf(B, A, g / d)
    elif name == "poly":
        for deg in (1, 2, 3, 4):
            yield ({"degree": deg}, (A @ A.T / d + 1.0) ** deg, (B @ A.T / d + 1.0) ** deg)
    elif name == "mlp_ntk":
        for L in (1, 2, 3):
            for sb in (0.0, 0.1, 0.5):
                kw = dict(n_layers=L, sigma_w=math.sqrt(2.0), sigma_b=sb)
                yield {"n_layers": L, "sigma_b": sb}, mlp_ntk(A, **kw), mlp_ntk(B, A, **kw)
    else:  # pragma: no cover
        raise ValueError(method)


ALPHAS = 10.0 ** np.arange(-6, 1.01, 1.0)


def _ridge_fits(K, Kc, y, alphas):
    """Predictions K_c (K + a I)^-1 y for every alpha, from one eigendecomposition."""
    mu, Q = np.linalg.eigh(K)
    mu = np.maximum(mu, 0.0)
    c = Q.T @ y
    KcQ = Kc @ Q
    return np.stack([KcQ @ (c / (mu + a)) for a in alphas])


def cv_fit_predict(cands, y, folds, alphas=ALPHAS):
    """Pick (kernel setting, ridge) by K-fold CV (mean squared error), refit on all the
    training windows, predict the test windows. Returns (prediction, params)."""
    best = (math.inf, None, None, None)
    ym = y.mean()
    yc = y - ym
    for params, K, Kt in cands:
        scale = float(np.mean(np.diag(K)))
        if not (np.isfinite(K).all() and np.isfinite(Kt).all() and scale > 0):
            continue
        K, Kt = K / scale, Kt / scale
        err = np.zeros(len(alphas))
        for tr, va in folds:
            pred = _ridge_fits(K[np.ix_(tr, tr)], K[np.ix_(va, tr)], yc[tr], alphas)
            err += ((pred - yc[va]) ** 2).sum(axis=1)
        j = int(np.argmin(err))
        if err[j] < best[0]:
            best = (err[j], params, alphas[j], (K, Kt))
    _, params, alpha, (K, Kt) = best
    pred = _ridge_fits(K, Kt, yc, [alpha])[0] + ym
    return pred, dict(params, alpha=float(alpha))


def snr_db(y, yhat):
    return float(10.0 * np.log10(np.sum(y ** 2) / np.sum((y - yhat) ** 2)))


def evaluate(train, test, T_fixed, folds, n_jobs):
    """SNRs of every method on one split. Returns {method: (snr, snr_clean, params)}."""
    Xtr, ytr, _ = train
    Xte, yte, cte = test
    out = {}
    for method in METHODS:
        if method == "pts":
            pred, params = np.array([x[-1] for x in Xte]), {}
        else:
            pred, params = cv_fit_predict(candidates(method, Xtr, Xte, T_fixed, n_jobs),
                                          ytr, folds)
        out[method] = (snr_db(yte, pred), snr_db(cte, pred), params)
    return out


def kfold(n, k, rng):
    perm = rng.permutation(n)
    parts = np.array_split(perm, k)
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1:])), np.sort(parts[i]))
            for i in range(k)]


# -- experiments -----------------------------------------------------------------------
def run_synthetic(args):
    settings = []
    if "T_var" in args.sweeps:
        settings += [("T_var", tv, args.noise, args.n_train) for tv in args.T_vars]
    if "noise" in args.sweeps:
        settings += [("noise", args.sweep_T_var, s, args.n_train) for s in args.noises]
    if "n_train" in args.sweeps:
        settings += [("n_train", args.sweep_T_var, args.noise, n) for n in args.n_trains]
    rows = []
    for sweep, tv, noise, n_train in settings:
        t0 = time.perf_counter()
        for rep in range(args.repeats):
            rng = np.random.default_rng([args.seed, rep, tv, int(noise * 1e6), n_train])
            train, test = synthetic_split(args.T_fixed, tv, noise, n_train, args.n_test,
                                          rng)
            folds = kfold(n_train, args.folds, rng)
            for method, (s, sc, params) in evaluate(train, test, args.T_fixed, folds,
                                                    args.n_jobs).items():
                rows.append({"sweep": sweep, "method": method, "T_var": tv,
                             "noise": noise, "n_train": n_train, "repeat": rep,
                             "snr_db": s, "snr_clean_db": sc,
                             "params": json.dumps(params, sort_keys=True)})
        print(f"  {sweep:8s} T_var={tv:<3d} noise={noise:<5g} n_train={n_train:<4d} "
              f"{time.perf_counter() - t0:6.1f} s", flush=True)
    return rows


def run_real(args):
    years, values = load_sunspots()
    rows = []
    for tv in args.T_vars:
        t0 = time.perf_counter()
        for rep in range(args.repeats):
            rng = np.random.default_rng([args.seed, rep, tv, 7])
            (train, test), cut = real_split(values, args.T_fixed, tv, rng)
            folds = kfold(len(train[0]), args.folds, rng)
            for method, (s, _, params) in evaluate(train, test, args.T_fixed, folds,
                                                   args.n_jobs).items():
                rows.append({"sweep": "sunspots", "method": method, "T_var": tv,
                             "noise": "", "n_train": len(train[0]), "repeat": rep,
                             "snr_db": s, "snr_clean_db": "",
                             "params": json.dumps(params, sort_keys=True)})
        print(f"  sunspots T_var={tv:<3d} train {int(years[0])}-{int(years[cut - 1])} "
              f"test {int(years[cut])}-{int(years[-1])} "
              f"{time.perf_counter() - t0:6.1f} s", flush=True)
    return rows


# -- output ----------------------------------------------------------------------------
def read_csv(path):
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            for c in ("T_var", "n_train", "repeat"):
                r[c] = int(r[c])
            for c in ("noise", "snr_db", "snr_clean_db"):
                r[c] = float(r[c]) if r[c] != "" else ""
            rows.append(r)
    return rows


def summarise(rows, sweep, x, metric="snr_db"):
    """{method: (xs, means, stds)} of one sweep."""
    sub = [r for r in rows if r["sweep"] == sweep]
    xs = sorted({r[x] for r in sub})
    out = {}
    for m in METHODS:
        vals = [[r[metric] for r in sub if r["method"] == m and r[x] == v] for v in xs]
        out[m] = (xs, [float(np.mean(v)) for v in vals],
                  [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals])
    return out


def print_tables(rows, sweeps, metrics):
    for sweep, x in sweeps:
        if not any(r["sweep"] == sweep for r in rows):
            continue
        for metric in metrics:
            s = summarise(rows, sweep, x, metric)
            xs = s[METHODS[0]][0]
            print(f"\n{metric} (mean +- std over repeats) against {x} [{sweep} sweep]")
            print(f"{'method':20s}" + "".join(f"{f'{x}={v:g}':>20s}" for v in xs))
            for m in METHODS:
                _, mu, sd = s[m]
                print(f"{m:20s}" + "".join(f"{f'{a:6.2f}+-{b:.2f}':>20s}"
                                           for a, b in zip(mu, sd)))
            # the target: RNTK above the padded kernels; paired over repeats
            for group in ("_pad_end", "_pad_start", "_pad_"):
                cells = []
                for v in xs:
                    by_rep = {}
                    for r in rows:
                        if r["sweep"] == sweep and r[x] == v:
                            by_rep.setdefault(r["repeat"], {})[r["method"]] = r[metric]
                    d = [e["rntk"] - max(e[m] for m in e if group in m)
                         for e in by_rep.values()]
                    sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
                    cells.append(f"{np.mean(d):+.2f}+-{sd:.2f} ({sum(a > 0 for a in d)}/"
                                 f"{len(d)})")
                label = {"_pad_end": "rntk-best pad_end",
                         "_pad_start": "rntk-best pad_start",
                         "_pad_": "rntk-best padded"}[group]
                print(f"{label:20s}" + "".join(f"{c:>20s}" for c in cells))
            print("  (paired differences over repeats: mean+-std (RNTK wins/repeats))")


def plot(rows, panels, path, title, metric="snr_db"):
    plt = pyplot()

    panels = [(s, x, lab) for s, x, lab in panels if any(r["sweep"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0 * len(panels), 7.0), 4.6),
                             squeeze=False)
    colours = {"rntk": "C3", "rbf": "C0", "poly": "C2", "mlp_ntk": "C1", "pts": "0.4"}
    for ax, (sweep, x, label) in zip(axes[0], panels):
        s = summarise(rows, sweep, x, metric)
        for m in METHODS:
            xs, mu, sd = s[m]
            base = m.split("_pad_")[0]
            style = "--" if m.endswith("_pad_start") else "-"
            ax.errorbar(xs, mu, yerr=sd, capsize=3, marker="o", ms=4, ls=style,
                        color=colours[base], lw=2.2 if m == "rntk" else 1.2,
                        label=m.replace("_", " "))
        if x in ("noise", "n_train"):
            xs = s[METHODS[0]][0]
            ax.set_xscale("log")
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{v:g}" for v in xs])
            ax.minorticks_off()
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {metric.replace('_db', '')} (dB)")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    import textwrap
    fig.suptitle("\n".join(textwrap.wrap(title, 110 if len(panels) > 1 else 80)),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# -- predictive intervals (issue 14) ---------------------------------------------------
INTERVAL_METHODS = ("nngp_default", "ntk_default", "nngp_evidence", "ntk_evidence",
                    "nngp_evidence_relu", "rbf_gp")
INTERVAL_COLUMNS = ["dataset", "method", "repeat", "n_train", "n_test", "coverage90",
                    "coverage90_short", "coverage90_long", "nlpd", "width90", "snr_db",
                    "params"]
TIMING_COLUMNS = ["dataset", "repeat", "n_train", "n_settings", "evidence_s",
                  "evidence_select_s", "cv_s", "cv_select_s"]
#: (T_fixed, T_var) of the interval experiment: windows of length in [4, 20] (sunspots)
#: and [2, 10] (sine).
INTERVAL_WINDOWS = {"sine": (10, 8), "sunspots": (20, 16)}
Z90 = 1.6448536269514722                      # the 95 % quantile of N(0, 1)
_GP_FIELDS = ("activation", "sigma_w", "sigma_b", "sigma_h")


def interval_scores(y, mean, std, lengths):
    """Coverage of the central 90 % interval (all, shorter / longer half of the window
    lengths), NLPD (nats), mean interval width, SNR of the mean."""
    z = (y - mean) / std
    inside = np.abs(z) <= Z90
    short = lengths <= np.median(lengths)
    return {"coverage90": float(inside.mean()),
            "coverage90_short": float(inside[short].mean()),
            "coverage90_long": float(inside[~short].mean()) if (~short).any() else "",
            "nlpd": float(np.mean(0.5 * np.log(2.0 * np.pi * std ** 2) + 0.5 * z ** 2)),
            "width90": float(np.mean(2.0 * Z90 * std)),
            "snr_db": snr_db(y, mean)}


def _gp_params(gp):
    out = {f: (round(getattr(gp, f), 4) if f != "activation" else getattr(gp, f))
           for f in _GP_FIELDS}
    out.update(noise=round(gp.noise_, 5), output_scale=round(gp.output_scale_, 4))
    return out


def rbf_gp(Xtr, ytr, T_fixed, seed):
    """scikit-learn's GP, C * RBF + White fitted by evidence, on start-padded windows."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    kern = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(math.sqrt(T_fixed), (1e-2, 1e3))
            + WhiteKernel(0.1, (1e-6, 1e1)))
    return GaussianProcessRegressor(kern, normalize_y=True, n_restarts_optimizer=3,
                                    random_state=seed).fit(padded(Xtr, T_fixed, "start"),
                                                           ytr)


def interval_split(dataset, args, rep):
    """(train, test, extra) of one repeat; extra holds what the forecast plot needs."""
    T_fixed, T_var = INTERVAL_WINDOWS[dataset]
    if dataset == "sine":
        rng = np.random.default_rng([args.seed, rep, 14])
        train, test = synthetic_split(T_fixed, T_var, args.noise, args.n_train,
                                      args.n_test, rng)
        # a contiguous stretch of a fresh noisy period for the forecast figure
        clean = sine()
        noisy = clean + args.noise * rng.standard_normal(clean.size)
        ends = np.arange(T_fixed, clean.size, 4)
        lengths = rng.integers(T_fixed - T_var, T_fixed + 1, size=ends.size)
        return train, test, {"x": ends, "windows": cut_windows(noisy, clean, ends, lengths)}
    years, values = load_sunspots()
    rng = np.random.default_rng([args.seed, rep, T_var, 14])
    (train, test), cut = real_split(values, T_fixed, T_var, rng)
    mu, sd = values[:cut].mean(), values[:cut].std()
    return train, test, {"x": years[cut:], "windows": test, "mu": mu, "sd": sd}


def run_interval_split(train, test, T_fixed, n_jobs, seed, forecast=None):
    """Scores of every method on one split, the timing of both searches, and (with
    ``forecast``) the NNGP and RBF forecasts on its windows."""
    from rntk_numba import RNTKSearchCV
    from rntk_numba.gp import RNTKGaussianProcessRegressor, evidence_search
    from rntk_numba.search_kernels import RNTKSpec

    Xtr, ytr, _ = train
    Xte, yte, _ = test
    lengths = np.array([len(x) for x in Xte])
    grid = rntk_grid()
    fitted = {}
    for post in ("nngp", "ntk"):
        fitted[f"{post}_default"] = RNTKGaussianProcessRegressor(
            posterior=post, n_jobs=n_jobs).fit(Xtr, ytr)
    t0 = time.perf_counter()
    ev = evidence_search(Xtr, ytr, kernels=grid, n_jobs=n_jobs)
    t_ev = time.perf_counter() - t0
    fitted["nngp_evidence"] = ev
    fitted["ntk_evidence"] = RNTKGaussianProcessRegressor(
        posterior="ntk", n_jobs=n_jobs, **{f: getattr(ev, f) for f in _GP_FIELDS}).fit(
        Xtr, ytr)
    fitted["nngp_evidence_relu"] = evidence_search(
        Xtr, ytr, kernels=[k for k in grid if k.activation == "relu"], n_jobs=n_jobs)
    out = {}
    for name, gp in fitted.items():
        mean, std = gp.predict(Xte, return_std=True)
        out[name] = (interval_scores(yte, mean, std, lengths), _gp_params(gp))
    rbf = rbf_gp(Xtr, ytr, T_fixed, seed)
    mean, std = rbf.predict(padded(Xte, T_fixed, "start"), return_std=True)
    out["rbf_gp"] = (interval_scores(yte, mean, std, lengths), {"kernel": str(rbf.kernel_)})
    # the CV search over the same grid (kernel ridge, 5 folds, the ridge grid)
    cv = RNTKSearchCV(kernels=[RNTKSpec(k) for k in grid], task="regression",
                      alpha=list(ALPHAS), cv=5, random_state=seed, n_jobs=n_jobs,
                      scoring="neg_mean_squared_error")
    t0 = time.perf_counter()
    cv.fit(Xtr, ytr)
    t_cv = time.perf_counter() - t0
    timing = {"n_settings": len(grid), "evidence_s": t_ev,
              "evidence_select_s": float(sum(r["fit_time_s"]
                                             for r in ev.evidence_results_)),
              "cv_s": t_cv, "cv_select_s": float(cv.cv_time_)}
    fc = None
    if forecast is not None:
        Xf, yf, cf = forecast["windows"]
        m1, s1 = fitted["nngp_default"].predict(Xf, return_std=True)
        m2, s2 = rbf.predict(padded(Xf, T_fixed, "start"), return_std=True)
        fc = {"x": np.asarray(forecast["x"]), "y": yf, "clean": cf, "nngp_mean": m1,
              "nngp_std": s1, "rbf_mean": m2, "rbf_std": s2,
              "scale": np.array([forecast.get("mu", 0.0), forecast.get("sd", 1.0)])}
    return out, timing, fc


def run_intervals(args):
    rows, timing, forecasts = [], [], {}
    for dataset in args.datasets:
        if dataset == "sunspots":
            try:
                import statsmodels.api  # noqa: F401
            except ImportError:
                print("  sunspots: statsmodels is not installed, skipped "
                      "(pip install 'rntk-numba[bench]')", flush=True)
                continue
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            train, test, extra = interval_split(dataset, args, rep)
            res, tim, fc = run_interval_split(train, test, INTERVAL_WINDOWS[dataset][0],
                                              args.n_jobs, args.seed + rep,
                                              forecast=extra if rep == 0 else None)
            base = {"dataset": dataset, "repeat": rep, "n_train": len(train[0])}
            for method, (scores, params) in res.items():
                rows.append(dict(base, method=method, n_test=len(test[0]),
                                 params=json.dumps(params, sort_keys=True), **scores))
            timing.append(dict(base, **tim))
            if fc is not None:
                forecasts[dataset] = fc
            print(f"  {dataset:8s} repeat {rep}: evidence search {tim['evidence_s']:.1f} s,"
                  f" CV search {tim['cv_s']:.1f} s, all {time.perf_counter() - t0:.1f} s",
                  flush=True)
    return rows, timing, forecasts


def _f(v):
    return float(v) if v != "" else float("nan")


def print_interval_tables(rows, timing):
    for dataset in ("sine", "sunspots"):
        sub = [r for r in rows if r["dataset"] == dataset]
        if not sub:
            continue
        reps = len({r["repeat"] for r in sub})
        print(f"\n{dataset}: 90 % predictive intervals on the test windows (mean +- std "
              f"over {reps} repeats; n_train {sub[0]['n_train']}, n_test "
              f"{sub[0]['n_test']})")
        cols = ("coverage90", "coverage90_short", "coverage90_long", "nlpd", "width90",
                "snr_db")
        print(f"{'method':20s}" + "".join(f"{c:>18s}" for c in cols))
        for m in INTERVAL_METHODS:
            mr = [r for r in sub if r["method"] == m]
            if not mr:
                continue
            cells = []
            for c in cols:
                v = np.array([_f(r[c]) for r in mr])
                sd = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
                cells.append(f"{np.nanmean(v):8.3f}+-{sd:.3f}")
            print(f"{m:20s}" + "".join(f"{c:>18s}" for c in cells))
        tm = [t for t in timing if t["dataset"] == dataset]
        if tm:
            ev = np.array([_f(t["evidence_s"]) for t in tm])
            cv = np.array([_f(t["cv_s"]) for t in tm])
            evs = np.array([_f(t["evidence_select_s"]) for t in tm])
            cvs = np.array([_f(t["cv_select_s"]) for t in tm])
            print(f"search over {tm[0]['n_settings']} RNTK settings (median over repeats):"
                  f" evidence {np.median(ev):.2f} s, 5-fold CV {np.median(cv):.2f} s "
                  f"(paired ratio CV/evidence {np.median(cv / ev):.2f}); selection alone "
                  f"(Grams excluded): evidence {np.median(evs):.3f} s, CV "
                  f"{np.median(cvs):.3f} s (ratio {np.median(cvs / evs):.1f})")


def plot_forecasts(forecasts, rows, path):
    plt = pyplot()

    names = [d for d in ("sine", "sunspots") if d in forecasts]
    fig, axes = plt.subplots(len(names), 1, figsize=(8.0, 3.1 * len(names)),
                             squeeze=False)
    for ax, d in zip(axes[:, 0], names):
        fc = forecasts[d]
        mu, sd = fc["scale"]
        x = fc["x"]

        def tr(v):
            return mu + sd * v
        cov = {m: np.mean([_f(r["coverage90"]) for r in rows
                           if r["dataset"] == d and r["method"] == m])
               for m in ("nngp_default", "rbf_gp")}
        ax.fill_between(x, tr(fc["nngp_mean"] - Z90 * fc["nngp_std"]),
                        tr(fc["nngp_mean"] + Z90 * fc["nngp_std"]), color="C3",
                        alpha=0.25, lw=0,
                        label=f"RNTK NNGP 90 % band (test coverage {cov['nngp_default']:.0%})")
        ax.plot(x, tr(fc["nngp_mean"]), color="C3", lw=1.3, label="RNTK NNGP mean")
        for sgn in (-1.0, 1.0):
            ax.plot(x, tr(fc["rbf_mean"] + sgn * Z90 * fc["rbf_std"]), color="C0", lw=0.9,
                    ls="--", label=(f"RBF GP (padded) 90 % band (test coverage "
                                    f"{cov['rbf_gp']:.0%})") if sgn > 0 else None)
        ax.plot(x, tr(fc["y"]), "k.", ms=3, label="observed next value")
        if d == "sine":
            ax.plot(x, fc["clean"], color="0.5", lw=0.8, label="noise-free sine")
            ax.set_xlabel("position of the predicted sample (a fresh noisy period)")
            ax.set_ylim(-2.0, 1.5)                     # room for the legend below
            ax.set_title("sine + noise: one-step forecast from windows of 2-10 samples",
                         fontsize=9)
        else:
            ax.set_xlabel("year (test years; windows of 4-20 past years)")
            ax.set_ylabel("sunspot number")
            ax.set_title("yearly sunspots: one-step forecast of the test years (trained on "
                         "the years up to 1915)",
                         fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower left" if d == "sine" else "upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main_intervals(args):
    t0 = time.perf_counter()
    csv_path = os.path.join(args.out, "intervals.csv")
    tim_path = os.path.join(args.out, "intervals_timing.csv")
    npz_path = os.path.join(args.out, "intervals_forecast.npz")
    if args.replot:
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with open(tim_path, newline="") as fh:
            timing = list(csv.DictReader(fh))
        with np.load(npz_path) as z:
            forecasts = {}
            for key in z.files:
                d, field = key.split("/", 1)
                forecasts.setdefault(d, {})[field] = z[key]
    else:
        # BLAS single-threaded: the matrices are small (~200 x 200) and on a loaded
        # machine multi-threaded OpenBLAS made each eigh ~17x slower; the Gram matrices
        # and RNTKSearchCV's folds run in their own (joblib) threads anyway
        import scipy.linalg  # noqa: F401  (load scipy's own BLAS before limiting it)
        import sklearn.gaussian_process  # noqa: F401
        import sklearn.kernel_ridge  # noqa: F401
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1, user_api="blas"):
            rows, timing, forecasts = run_intervals(args)
        write_csv(rows, INTERVAL_COLUMNS, csv_path)
        write_csv(timing, TIMING_COLUMNS, tim_path)
        np.savez_compressed(npz_path, **{f"{d}/{k}": v for d, fc in forecasts.items()
                                         for k, v in fc.items()})
    print_interval_tables(rows, timing)
    if not args.no_plot and forecasts:
        plot_forecasts(forecasts, rows, os.path.join(args.out, "intervals.png"))
    print(f"\n{'re-read' if args.replot else 'wrote'} {csv_path}, {tim_path}"
          + ("" if args.no_plot else ", intervals.png")
          + f" in {time.perf_counter() - t0:.1f} s")


def main(argv=None):
    args = parse_args(argv)
    out_dir(args.out)
    if args.intervals:
        return main_intervals(args)
    t0 = time.perf_counter()
    name = "regression_real" if args.real else "regression"
    csv_path = os.path.join(args.out, f"{name}.csv")
    if args.replot:
        rows = read_csv(csv_path)
        args.repeats = len({r["repeat"] for r in rows})
        first = {r["sweep"]: r for r in reversed(rows)}        # settings for the labels
        if "T_var" in first:
            args.noise, args.n_train = first["T_var"]["noise"], first["T_var"]["n_train"]
        for sw in ("noise", "n_train"):
            if sw in first:
                args.sweep_T_var = first[sw]["T_var"]
    elif args.real:
        rows = run_real(args)
    else:
        rows = run_synthetic(args)
    if args.real:
        print_tables(rows, [("sunspots", "T_var")], ["snr_db"])
        panels = [("sunspots", "T_var", r"$T_{var}$ (window lengths in "
                   rf"$[{args.T_fixed} - T_{{var}}, {args.T_fixed}]$)")]
        title = ("Yearly sunspots (statsmodels), next-year prediction; train on "
                 f"the first 70 % of the years, test on the rest; {args.repeats} repeats")
    else:
        sweeps = [("T_var", "T_var"), ("noise", "noise"), ("n_train", "n_train")]
        print_tables(rows, sweeps, ["snr_db", "snr_clean_db"])
        panels = [("T_var", "T_var", r"$T_{var}$" + f" (noise {args.noise:g}, "
                   f"n_train {args.n_train})"),
                  ("noise", "noise", f"noise std (T_var {args.sweep_T_var})"),
                  ("n_train", "n_train", f"training windows (T_var {args.sweep_T_var})")]
        title = (f"Sine + noise, next-value prediction from windows of length in "
                 f"[{args.T_fixed} - T_var, {args.T_fixed}]; SNR vs the noisy target; "
                 f"mean +- std over {args.repeats} repeats")
    if not args.replot:
        write_csv(rows, COLUMNS, csv_path)
    if not args.no_plot:
        plot(rows, panels, os.path.join(args.out, f"{name}.png"), title)
        if not args.real:
            plot(rows, panels, os.path.join(args.out, f"{name}_clean.png"),
                 title.replace("vs the noisy target", "vs the noise-free target"),
                 metric="snr_clean_db")
    verb = "re-read" if args.replot else "wrote"
    print(f"\n{verb} {args.out}/{name}.csv" + ("" if args.no_plot else ", wrote the PNG")
          + f" in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
