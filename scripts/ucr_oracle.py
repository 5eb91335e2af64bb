"""Diagnostic for the UCR benchmark: how high can each kernel's test accuracy go at all?

For every data set and every kernel family, the best TEST accuracy over the whole grid
(every kernel setting x every C) of ``scripts/ucr_classification.py``, next to the
accuracy that training-set CV actually selects. The "oracle" picks its setting ON THE
TEST SET: it is an upper bound that tells a kernel that cannot fit the task from one
whose cross-validated choice is unlucky -- never a result to report as accuracy.

Usage::

    python scripts/ucr_oracle.py --data-dir ../shared/ucr --out results/ucr_oracle \
        [--grid full] [--cache cache/ucr] [--n-jobs 2] [--datasets A,B]

Writes ``oracle.csv`` (dataset, method, oracle accuracy, its setting and C) and prints
the mean oracle accuracy per method over the equal-length sets.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ucr_classification as U  # noqa: E402  (the benchmark's grids and data handling)

from rntk_numba.datasets import list_ucr, load_ucr  # noqa: E402
from rntk_numba.estimators import SVM_MAX_ITER  # noqa: E402
from _common import out_dir, write_rows  # noqa: E402


def cosine(K, d_rows, d_cols):
    return K / np.sqrt(np.outer(d_rows, d_cols))


def oracle(name, args, grids):
    from sklearn.svm import SVC
    Xtr, ytr, Xte, yte = load_ucr(name, args.data_dir, normalize="l2")
    lengths = [len(x) for x in Xtr] + [len(x) for x in Xte]
    rows = []
    for method in U.KERNEL_METHODS:
        specs = U.kernel_specs(method, grids, max(lengths))
        best = (-1.0, None, None)
        for spec in specs:
            cache = args.cache if method in U.RNTK_METHODS else None
            Ktr = np.asarray(spec.gram(Xtr, n_jobs=args.n_jobs, cache=cache))
            Kte = np.asarray(spec.gram(Xte, Xtr, n_jobs=args.n_jobs))
            d_tr, d_te = np.diag(Ktr).copy(), spec.diag(Xte)
            A, B = cosine(Ktr, d_tr, d_tr), cosine(Kte, d_te, d_tr)
            for C in grids["C"]:
                svm = SVC(kernel="precomputed", C=C, max_iter=SVM_MAX_ITER).fit(A, ytr)
                acc = 100 * float(np.mean(svm.predict(B) == yte))
                if acc > best[0]:
                    best = (acc, spec.label(), C)
        rows.append({"dataset": name, "method": method, "oracle_accuracy": best[0],
                     "kernel": best[1], "C": best[2],
                     "equal_length": min(lengths) == max(lengths)})
        print(f"  {name:24s} {method:5s} oracle {best[0]:6.2f}%  {best[1]} C={best[2]}",
              file=sys.stderr, flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--datasets", default=None)
    p.add_argument("--out", default="results/ucr_oracle")
    p.add_argument("--grid", choices=sorted(U.GRIDS), default="full")
    p.add_argument("--cache", default="cache")
    p.add_argument("--n-jobs", type=int, default=None)
    args = p.parse_args(argv)
    if args.cache.lower() == "none":
        args.cache = None
    names = (args.datasets.split(",") if args.datasets else list_ucr(args.data_dir))
    grids = U.GRIDS[args.grid]
    t0 = time.perf_counter()
    rows = []
    for name in names:
        rows += oracle(name, args, grids)
    path = os.path.join(out_dir(args.out), "oracle.csv")
    write_rows(rows, path)
    for method in U.KERNEL_METHODS:
        acc = [r["oracle_accuracy"] for r in rows if r["method"] == method
               and r["equal_length"]]
        if acc:
            print(f"{method:5s} mean oracle accuracy over {len(acc)} equal-length sets: "
                  f"{np.mean(acc):.2f} %")
    print(f"wall time {time.perf_counter() - t0:.1f} s; wrote {path}")


if __name__ == "__main__":
    main()
