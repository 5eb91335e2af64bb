"""``rntk demo``: classify the bundled GunPoint set with an SVM on the RNTK, next to an
RBF baseline, following the paper's protocol (unit-L2 series, C chosen by 10-fold
cross-validation on the training set, then one refit and one test score)."""

from __future__ import annotations

import math
import sys
import time

__all__ = ["run_demo", "register"]

#: The paper's GunPoint accuracies (Table 2), shown for context.
PAPER_GUNPOINT = {"RNTK": 98.00, "NTK": 95.33, "RBF": 95.33, "POLY": 94.00}

_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
_GAMMA_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
_SEARCH_GRID = {"sigma_w": [1.34, math.sqrt(2.0), 1.47], "sigma_b": [0.0, 0.05, 0.2]}


def run_demo(*, sigma_w: float = math.sqrt(2.0), sigma_b: float = 0.0,
             sigma_h: float = 0.0, n_layers: int = 1, activation: str = "relu",
             search: bool = False, n_jobs=None, cache=None, cv: int = 10,
             out=None, readout: str = "last") -> dict:
    """Run the demo and print a small report.

    Parameters
    ----------
    sigma_w, sigma_b, sigma_h, n_layers, activation, readout
        The RNTK hyperparameters (``sigma_u = sigma_v = 1``). Ignored for sigma_w and
        sigma_b when ``search`` is true.
    search : bool
        Also choose sigma_w in {1.34, sqrt 2, 1.47} and sigma_b in {0, 0.05, 0.2} by
        cross-validation (9 training Grams instead of 1).
    n_jobs : int, optional
        Workers (default: all cores).
    cache : str or path, optional
        A Gram store directory (see ``rntk_numba.gram``); None computes in memory.
    cv : int
        Folds of the cross-validation on the training set.
    out : file, optional
        Where the report goes (default: stdout).

    Returns
    -------
    dict
        ``{"RNTK": {...}, "RBF": {...}}`` with ``test_accuracy``, ``cv_accuracy``,
        ``params`` and ``seconds`` for each method, and ``"data"``.
    """
    from .datasets import load_demo
    from .kernel_specs import grid
    from .search import RNTKSearchCV

    out = sys.stdout if out is None else out
    if cache is not None:
        import importlib.util
        if importlib.util.find_spec("rntk_numba.store") is None:
            raise ValueError("--cache needs the Gram store (rntk_numba.store), which "
                             "this installation lacks; run without --cache")
    Xtr, ytr, Xte, yte = load_demo(normalize="l2")
    classes = sorted(set(ytr.tolist()))
    print(f"GunPoint (bundled, UCR archive 2018): {len(Xtr)} training / {len(Xte)} test "
          f"series of length {len(Xtr[0])}, {len(classes)} classes; each series scaled "
          f"to unit L2 norm.", file=out)
    print(f"C-SVM on precomputed kernels; hyperparameters chosen by {cv}-fold "
          f"cross-validation on the training set only, then refit and scored on the "
          f"test set.", file=out)
    if search:
        grid_ = dict(_SEARCH_GRID, sigma_h=[sigma_h], n_layers=[n_layers],
                     activation=[activation], readout=[readout])
    else:
        grid_ = {"sigma_w": [sigma_w], "sigma_b": [sigma_b], "sigma_h": [sigma_h],
                 "n_layers": [n_layers], "activation": [activation],
                 "readout": [readout]}
    results = {"data": {"name": "GunPoint", "n_train": len(Xtr), "n_test": len(Xte)}}
    runs = [("RNTK", RNTKSearchCV(grid_, C=_C_GRID, cv=cv, n_jobs=n_jobs, cache=cache)),
            ("RBF", RNTKSearchCV(kernels=grid("RBF", gamma=list(_GAMMA_GRID)),
                                 C=_C_GRID, cv=cv, n_jobs=n_jobs))]
    for name, search_cv in runs:
        t0 = time.perf_counter()
        search_cv.fit(Xtr, ytr)
        acc = float(search_cv.score(Xte, yte))
        seconds = time.perf_counter() - t0
        results[name] = {"test_accuracy": acc, "cv_accuracy": float(search_cv.best_score_),
                         "params": dict(search_cv.best_params_),
                         "kernel": search_cv.best_kernel_.label(), "seconds": seconds,
                         "n_settings": len(search_cv.cv_results_["mean_test_score"])}
    print("", file=out)
    width = max(42, *(len(results[n]["kernel"]) for n in ("RNTK", "RBF")))
    print(f"{'method':<6} {'chosen kernel':<{width}} {'C':>7} {'CV acc':>7} "
          f"{'test acc':>9} {'paper':>7} {'time':>7}", file=out)
    for name in ("RNTK", "RBF"):
        r = results[name]
        print(f"{name:<6} {r['kernel']:<{width}} {r['params']['C']:>7g} "
              f"{100 * r['cv_accuracy']:>6.2f}% {100 * r['test_accuracy']:>8.2f}% "
              f"{PAPER_GUNPOINT[name]:>6.2f}% {r['seconds']:>6.2f}s", file=out)
    print("", file=out)
    print("('paper': Table 2 of Alemohammad et al., ICLR 2021, with the paper's much "
          "larger grids. Full benchmark: scripts/ucr_classification.py.)", file=out)
    return results


def _main(args) -> int:
    run_demo(sigma_w=args.sigma_w, sigma_b=args.sigma_b, sigma_h=args.sigma_h,
             n_layers=args.n_layers, activation=args.activation, search=args.search,
             n_jobs=args.n_jobs, cache=args.cache, cv=args.cv, readout=args.readout)
    return 0


def register(subparsers) -> None:
    """Add the ``demo`` subcommand to the ``rntk`` command."""
    p = subparsers.add_parser(
        "demo", help="classify the bundled GunPoint set: RNTK vs RBF (about 10 s)",
        description="Classify the bundled GunPoint data set with a C-SVM on the RNTK "
                    "and on an RBF kernel (C, and gamma for RBF, chosen by "
                    "cross-validation on the training set), and print test accuracies.")
    p.add_argument("--sigma-w", type=float, default=math.sqrt(2.0),
                   help="RNTK recurrent weight scale (default sqrt(2))")
    p.add_argument("--sigma-b", type=float, default=0.0, help="bias scale (default 0)")
    p.add_argument("--sigma-h", type=float, default=0.0,
                   help="initial hidden state scale (default 0)")
    p.add_argument("--n-layers", type=int, default=1, help="recurrent layers (default 1)")
    p.add_argument("--activation", choices=("relu", "erf"), default="relu")
    p.add_argument("--readout", choices=("last", "mean"), default="last",
                   help="last: the paper's read-out; mean: the mean read-out, an "
                        "extension (see rntk_numba.RNTK)")
    p.add_argument("--search", action="store_true",
                   help="also choose sigma_w and sigma_b by cross-validation")
    p.add_argument("--cv", type=int, default=10, help="cross-validation folds (10)")
    p.add_argument("--n-jobs", type=int, default=None,
                   help="parallel workers (default: all cores)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="Gram store directory (default: none, compute in memory)")
    p.set_defaults(func=_main)
