"""Summary metrics over many data sets (spec section 6, the paper's Table 1).

For classifier j on data set i with accuracy ``a[i, j]``:

* mean accuracy (and its standard deviation) over data sets;
* P90 / P95: the fraction of data sets on which ``a[i, j] >= 0.90 / 0.95 * max_j a[i, j]``;
* PMA (percentage of maximum accuracy): the mean over data sets of ``a[i, j] / max_j a[i, j]``;
* Friedman rank: the mean over data sets of the rank of ``a[i, j]`` among the
  classifiers (1 = best). Tied accuracies get the best of their ranks by default
  (``ties="min"``, "competition" ranking): that is the convention that reproduces the
  paper's Table 1 from its Table 2 (RNTK 2.38 over 56 data sets; the textbook
  Friedman convention, ``ties="average"``, gives 2.52 there).

P90, P95 and PMA are relative to the best classifier *of the compared set*, so they
change when a classifier is added or removed; the functions take the whole table.
"""

from __future__ import annotations

import numpy as np

__all__ = ["friedman_ranks", "summary_metrics", "METRICS"]

#: Keys of the per-method dictionaries returned by :func:`summary_metrics`.
METRICS = ("mean", "std", "P90", "P95", "PMA", "friedman_rank")


def _as_table(acc) -> np.ndarray:
    A = np.asarray(acc, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f"accuracy table must be 2-D (n_datasets, n_methods), "
                         f"got shape {A.shape}")
    if A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"accuracy table is empty (shape {A.shape})")
    bad = np.argwhere(~np.isfinite(A))
    if bad.size:
        i, j = bad[0]
        raise ValueError(f"accuracy table: entry (data set {i}, method {j}) is "
                         f"{A[i, j]}; every method needs a result on every data set")
    if (A < 0).any():
        i, j = np.argwhere(A < 0)[0]
        raise ValueError(f"accuracy table: entry (data set {i}, method {j}) is "
                         f"negative ({A[i, j]})")
    return A


def friedman_ranks(acc, ties: str = "min") -> np.ndarray:
    """Rank of every method on every data set (1 = highest accuracy).

    Parameters
    ----------
    acc : array (n_datasets, n_methods)
    ties : {"min", "average"}
        Tied accuracies share the best of their ranks ("min", the paper's convention)
        or their average ("average", the textbook Friedman test).

    Returns
    -------
    ndarray (n_datasets, n_methods) float64

    Examples
    --------
    >>> friedman_ranks([[0.9, 0.8, 0.9]]).tolist()
    [[1.0, 3.0, 1.0]]
    >>> friedman_ranks([[0.9, 0.8, 0.9]], ties="average").tolist()
    [[1.5, 3.0, 1.5]]
    """
    from scipy.stats import rankdata
    if ties not in ("min", "average"):
        raise ValueError(f"friedman_ranks: ties must be 'min' or 'average', got {ties!r}")
    A = _as_table(acc)
    return rankdata(-A, method=ties, axis=1).astype(np.float64)


def summary_metrics(acc, methods=None, *, ties: str = "min",
                    friedman_test: bool = False) -> dict:
    """The summary metrics of spec section 6 for every method.

    Parameters
    ----------
    acc : array (n_datasets, n_methods)
        Accuracies (fractions or percent; mean and std come back in the same unit,
        P90 / P95 / PMA are fractions in [0, 1]).
    methods : list of str, optional
        Column names (default ``"0", "1", ...``).
    ties : {"min", "average"}
        Tie convention of the Friedman rank (see :func:`friedman_ranks`).
    friedman_test : bool
        Also return the Friedman chi-square test over the methods (needs at least 3
        methods and 2 data sets) under the key ``"_friedman_test"``:
        ``{"statistic", "pvalue"}``.

    Returns
    -------
    dict
        ``{method: {"mean", "std", "P90", "P95", "PMA", "friedman_rank"}}``.

    Examples
    --------
    >>> m = summary_metrics([[90.0, 80.0], [60.0, 70.0]], ["A", "B"])
    >>> m["A"]["mean"], m["A"]["friedman_rank"], round(m["B"]["PMA"], 4)
    (75.0, 1.5, 0.9444)
    """
    A = _as_table(acc)
    n_sets, n_methods = A.shape
    if methods is None:
        methods = [str(j) for j in range(n_methods)]
    methods = list(methods)
    if len(methods) != n_methods:
        raise ValueError(f"summary_metrics: {len(methods)} method names for a table "
                         f"with {n_methods} columns")
    if len(set(methods)) != len(methods):
        raise ValueError(f"summary_metrics: method names must be distinct, "
                         f"got {methods}")
    best = A.max(axis=1, keepdims=True)
    safe = np.where(best > 0, best, 1.0)
    ratio = np.where(best > 0, A / safe, 1.0)      # every method is "best" at 0/0
    # a tiny tolerance so that a_ij == 0.9 * max, computed in floating point, counts
    tol = 1e-12
    ranks = friedman_ranks(A, ties=ties)
    out = {}
    for j, name in enumerate(methods):
        out[name] = {
            "mean": float(A[:, j].mean()),
            "std": float(A[:, j].std(ddof=1)) if n_sets > 1 else 0.0,
            "P90": float(np.mean(ratio[:, j] >= 0.90 - tol)),
            "P95": float(np.mean(ratio[:, j] >= 0.95 - tol)),
            "PMA": float(ratio[:, j].mean()),
            "friedman_rank": float(ranks[:, j].mean()),
        }
    if friedman_test:
        if n_methods < 3 or n_sets < 2:
            raise ValueError("summary_metrics: the Friedman test needs >= 3 methods "
                             "and >= 2 data sets")
        from scipy.stats import friedmanchisquare
        if np.all(A == A[:, :1]):
            stat, p = 0.0, 1.0
        else:
            stat, p = friedmanchisquare(*[A[:, j] for j in range(n_methods)])
        out["_friedman_test"] = {"statistic": float(stat), "pvalue": float(p)}
    return out
