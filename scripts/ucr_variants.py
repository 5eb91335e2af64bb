"""UCR: which RNTK variant closes the gap, chosen on training data only?

For every equal-length data set and every variant family below, the RNTK grid and C
are chosen by stratified 10-fold CV on the training set (``RNTKSearchCV``, ties to the
earlier setting), the choice is refit and scored ONCE on the test set, and a nested CV
(outer stratified folds of the training set, the whole search inside each) measures
the selection bias: mean inner best CV minus mean outer accuracy. Nothing is chosen
on test data.

Families (relu, one layer, sigma_u = 1, sigma_h = 0; sigma_w in {1.34, sqrt 2, 1.47}
x sigma_b in {0, 0.1, 0.5, 2}; C in {0.01 .. 1e4}):

* ``forward-cosine`` -- the benchmark's RNTK (cosine-normalised kernel);
* ``forward-trace`` -- the raw kernel (one constant per fold: the same as C);
* ``reversed-cosine`` -- the spec's kernel on time-reversed series;
* ``mean-cosine``, ``mean-trace`` -- ``RNTK(readout="mean")`` (outside the spec).

Usage::

    python scripts/ucr_variants.py --data-dir ../shared/ucr --out results/ucr_variants \
        [--cache cache] [--n-jobs 2] [--outer 5] [--datasets A,B]

Writes ``variants.csv`` (per data set and family: CV and test accuracy of the choice,
nested outer accuracy and inner CV) and prints the family means.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from rntk_numba.datasets import list_ucr, load_ucr
from rntk_numba.estimators import RNTKSearchCV
from rntk_numba.kernel_specs import grid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import out_dir, write_rows  # noqa: E402

SQRT2 = math.sqrt(2.0)
KERNEL_GRID = {"sigma_w": [1.34, SQRT2, 1.47], "sigma_b": [0.0, 0.1, 0.5, 2.0],
               "sigma_h": [0.0]}
C_GRID = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4]
#: family -> (read-out, kernel scaling, time-reversed input)
FAMILIES = {"forward-cosine": ("last", "cosine", False),
            "forward-trace": ("last", "trace", False),
            "reversed-cosine": ("last", "cosine", True),
            "mean-cosine": ("mean", "cosine", False),
            "mean-trace": ("mean", "trace", False)}


def search(family, args):
    readout, scaling, _ = FAMILIES[family]
    return RNTKSearchCV(kernels=grid("RNTK", readout=[readout], **KERNEL_GRID),
                        C=C_GRID, cv=10, random_state=0, kernel_scaling=scaling,
                        n_jobs=args.n_jobs, cache=args.cache)


def nested(family, X, y, args):
    """(mean inner best CV, mean outer accuracy) over ``args.outer`` outer folds."""
    from sklearn.model_selection import StratifiedKFold
    folds = min(args.outer, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
    if folds < 2:
        return float("nan"), float("nan")
    inner, outer = [], []
    for tr, va in StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y):
        s = search(family, args).fit([X[i] for i in tr], y[tr])
        inner.append(s.best_score_)
        outer.append(s.score([X[i] for i in va], y[va]))
    return float(np.mean(inner)), float(np.mean(outer))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--datasets", default=None)
    p.add_argument("--out", default="results/ucr_variants")
    p.add_argument("--cache", default="cache")
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--outer", type=int, default=5, help="outer folds (0: no nested CV)")
    args = p.parse_args(argv)
    if args.cache.lower() == "none":
        args.cache = None
    names = args.datasets.split(",") if args.datasets else list_ucr(args.data_dir)
    t0 = time.perf_counter()
    rows = []
    for name in names:
        Xtr, ytr, Xte, yte = load_ucr(name, args.data_dir, normalize="l2")
        if len({len(x) for x in list(Xtr) + list(Xte)}) != 1:
            continue                                    # equal-length sets only
        for family, (_, _, reverse) in FAMILIES.items():
            Xa = [x[::-1].copy() for x in Xtr] if reverse else list(Xtr)
            Xb = [x[::-1].copy() for x in Xte] if reverse else list(Xte)
            s = search(family, args).fit(Xa, ytr)
            row = {"dataset": name, "family": family, "cv": 100 * s.best_score_,
                   "test": 100 * s.score(Xb, yte), "kernel": s.best_kernel_.label(),
                   "C": s.best_params_["C"]}
            inner, outer = nested(family, Xa, np.asarray(ytr), args) if args.outer \
                else (float("nan"), float("nan"))
            row.update(inner_cv=100 * inner, outer=100 * outer)
            rows.append(row)
            print(f"  {name:16s} {family:16s} CV {row['cv']:6.2f}  test {row['test']:6.2f}"
                  f"  nested: inner {row['inner_cv']:6.2f} outer {row['outer']:6.2f}",
                  file=sys.stderr, flush=True)
    path = os.path.join(out_dir(args.out), "variants.csv")
    write_rows(rows, path)
    print(f"{'family':16s} {'sets':>4s} {'CV':>6s} {'test':>6s} {'outer':>6s} {'bias':>5s}")
    for family in FAMILIES:
        r = [x for x in rows if x["family"] == family]
        m = {k: np.mean([x[k] for x in r]) for k in ("cv", "test", "inner_cv", "outer")}
        print(f"{family:16s} {len(r):4d} {m['cv']:6.2f} {m['test']:6.2f} "
              f"{m['outer']:6.2f} {m['inner_cv'] - m['outer']:5.2f}")
    print(f"wall time {time.perf_counter() - t0:.1f} s; wrote {path}")


if __name__ == "__main__":
    main()
