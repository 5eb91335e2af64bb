"""The cross-validated kernel search (:class:`RNTKSearchCV`), the paper's protocol.

For every kernel setting of a grid the training Gram is computed ONCE (through the
on-disk store when ``cache`` is given) and every fold and every C is evaluated by
slicing it; the best setting is refit on the whole training set. Slicing the training
Gram for cross-validation, ``G[val, train]`` never contains a diagonal entry, so it is
exactly the cross kernel between the two folds (spec 3.2). May import: ``kernel_models``
(the estimators it refits), ``inputs``, ``kernel_specs``, ``engine`` and scikit-learn.
"""

from __future__ import annotations

import math
import numbers
import sys
import time

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .inputs import _check_y, _rntk_tags, _validate_X
from .kernel_models import (KernelClassifier, KernelRegressor, RNTKClassifier,
                            RNTKRegressor, _check_scaling, _cosine, _gram_scale,
                            _inner_for, _require_finite, _root_self)
from .kernel_specs import KernelSpec, RNTKSpec, grid

__all__ = ["RNTKSearchCV", "DEFAULT_RNTK_GRID", "DEFAULT_C", "DEFAULT_ALPHA"]

#: The RNTK grid of the UCR benchmark (relu, one layer, sigma_u = 1): sigma_w near
#: sqrt(2), as in the paper's appendix; sigma_b and sigma_h on the scale of the
#: per-step input of unit-norm series.
DEFAULT_RNTK_GRID = {"sigma_w": [1.34, math.sqrt(2.0), 1.47],
                     "sigma_b": [0.0, 0.01, 0.1],
                     "sigma_h": [0.0, 0.5]}
#: SVM costs of the paper's protocol.
DEFAULT_C = (0.01, 0.1, 1.0, 10.0, 100.0)
#: Ridge penalties for regression.
DEFAULT_ALPHA = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _as_grid_list(param_grid):
    if param_grid is None:
        return [DEFAULT_RNTK_GRID]
    if isinstance(param_grid, dict):
        return [param_grid]
    out = list(param_grid)
    if not out or not all(isinstance(g, dict) for g in out):
        raise TypeError("param_grid must be a dict of lists or a list of such dicts")
    return out


class RNTKSearchCV(BaseEstimator):
    """Cross-validated search over kernel settings and C (or alpha), the paper's way.

    For every kernel setting the full training Gram is computed ONCE (``gram(X_train,
    kernel=k, cache=cache)``: with a warm store it is only loaded); every fold and every
    C is then evaluated on slices of it (``G[train, train]`` to fit, ``G[val, train]``
    to score). The best (setting, C) by mean CV score is refit on the whole training set
    from the Gram already in memory. Ties are broken in favour of the earlier kernel
    setting, then the earlier C.

    Parameters
    ----------
    param_grid : dict of lists, or list of dicts, optional
        RNTK hyperparameters to search (keys: ``sigma_w``, ``sigma_u``, ``sigma_b``,
        ``sigma_h``, ``sigma_v``, ``n_layers``, ``activation``, ``readout``, ``kind``). Default:
        :data:`DEFAULT_RNTK_GRID`. Ignored when ``kernels`` is given.
    kernels : list of KernelSpec, optional
        Explicit kernel settings of any family (e.g. ``grid("RBF", gamma=[...])``):
        the baselines go through the same search.
    C : sequence of float, default (0.01, 0.1, 1, 10, 100)
        SVM costs (classification).
    alpha : sequence of float, optional
        Ridge penalties (regression; default :data:`DEFAULT_ALPHA`).
    task : {"classification", "regression"}
    cv : int or CV splitter, default 10
        An int k: ``StratifiedKFold(k, shuffle=True, random_state)`` for classification
        (k capped by the smallest class count), ``KFold`` for regression.
    random_state : int, default 0
        Seed of the fold split (the same folds for every kernel setting).
    scoring : str, optional
        A scikit-learn scorer name (default accuracy / r2).
    kernel_scaling : {"trace", "cosine", "none"}, default "trace"
        As in :class:`RNTKClassifier`; "trace" uses each fold's training part only
        ("cosine" is entrywise, so normalising the whole Gram once and slicing it is
        exactly the per-fold computation).
    n_jobs : int, optional
        Workers for the Gram computations and for the fold fits (threads).
    cache : str, path or GramStore, optional
        The Gram store (RNTK settings only; the baselines are cheap).
    verbose : int, default 0
        1: one line per kernel setting on stderr.

    Attributes
    ----------
    best_estimator_ : RNTKClassifier / RNTKRegressor / KernelClassifier / KernelRegressor
        Refit on the whole training set.
    best_kernel_ : KernelSpec
    best_params_ : dict
        The kernel's parameters and the chosen ``C`` (or ``alpha``).
    best_score_ : float
        Mean CV score of the best setting.
    cv_results_ : dict of arrays
        One entry per (kernel setting, C): ``family``, ``kernel`` (label), ``params``,
        ``C`` / ``alpha``, ``mean_test_score``, ``std_test_score``,
        ``split<k>_test_score``, ``rank_test_score``, ``gram_time`` (s, per setting),
        ``cv_time`` (s, per setting).
    n_splits_ : int
    gram_calls_ : int
        Number of training Gram computations (one per kernel setting).
    refit_time_ : float
    """

    def __init__(self, param_grid=None, *, kernels=None, C=DEFAULT_C, alpha=None,
                 task="classification", cv=10, random_state=0, scoring=None,
                 kernel_scaling="trace", n_jobs=None, cache=None, verbose=0):
        self.param_grid = param_grid
        self.kernels = kernels
        self.C = C
        self.alpha = alpha
        self.task = task
        self.cv = cv
        self.random_state = random_state
        self.scoring = scoring
        self.kernel_scaling = kernel_scaling
        self.n_jobs = n_jobs
        self.cache = cache
        self.verbose = verbose

    # -- configuration -------------------------------------------------------------
    @property
    def _classification(self):
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', "
                             f"got {self.task!r}")
        return self.task == "classification"

    def _specs(self):
        if self.kernels is not None:
            specs = list(self.kernels)
            if not specs:
                raise ValueError("kernels is an empty list")
            for s in specs:
                if not isinstance(s, KernelSpec):
                    raise TypeError(f"kernels must hold kernel specs, got "
                                    f"{type(s).__name__}")
            return specs
        specs = []
        for g in _as_grid_list(self.param_grid):
            specs.extend(grid("RNTK", **g))
        return specs

    def _penalties(self):
        name = "C" if self._classification else "alpha"
        vals = self.C if self._classification else \
            (DEFAULT_ALPHA if self.alpha is None else self.alpha)
        vals = [vals] if isinstance(vals, numbers.Real) else list(vals)
        if not vals:
            raise ValueError(f"the {name} grid is empty")
        for v in vals:
            ok = isinstance(v, numbers.Real) and math.isfinite(v) and \
                (v > 0 if name == "C" else v >= 0)
            if not ok:
                raise ValueError(f"{name} values must be finite and "
                                 f"{'> 0' if name == 'C' else '>= 0'}, got {v!r}")
        return name, [float(v) for v in vals]

    def _folds(self, y):
        from sklearn.model_selection import KFold, StratifiedKFold
        n = y.shape[0]
        if not isinstance(self.cv, numbers.Integral) or isinstance(self.cv, bool):
            if not hasattr(self.cv, "split"):
                raise TypeError(f"cv must be an int or a CV splitter, got {self.cv!r}")
            folds = list(self.cv.split(np.zeros((n, 1)), y))
        else:
            k = int(self.cv)
            if k < 2:
                raise ValueError(f"cv must be >= 2, got {k}")
            if self._classification:
                _, counts = np.unique(y, return_counts=True)
                if counts.min() < 2:
                    raise ValueError(f"the smallest class has {counts.min()} training "
                                     f"series; cross-validation needs at least 2")
                k = min(k, int(counts.min()))
                split = StratifiedKFold(k, shuffle=True, random_state=self.random_state)
            else:
                if n < 2:
                    raise ValueError("cross-validation needs at least 2 training series")
                k = min(k, n)
                split = KFold(k, shuffle=True, random_state=self.random_state)
            folds = list(split.split(np.zeros((n, 1)), y))
        return [(np.asarray(tr, dtype=np.int64), np.asarray(va, dtype=np.int64))
                for tr, va in folds]

    def _make_estimator(self, spec, penalty):
        common = dict(kernel_scaling=self.kernel_scaling, n_jobs=self.n_jobs,
                      cache=self.cache)
        if isinstance(spec, RNTKSpec):
            kw = dict(spec.kernel.to_dict(), kind=spec.kind, **common)
            return RNTKClassifier(C=penalty, **kw) if self._classification else \
                RNTKRegressor(alpha=penalty, **kw)
        return KernelClassifier(kernel=spec, C=penalty, **common) \
            if self._classification else \
            KernelRegressor(kernel=spec, alpha=penalty, **common)

    # -- the search ----------------------------------------------------------------
    def _fold_scores(self, G, y, tr, va, penalties, scorer):
        """Scores of every penalty on one fold, from slices of the training Gram."""
        Gtr = G[np.ix_(tr, tr)]
        Gva = G[np.ix_(va, tr)]
        if self.kernel_scaling == "trace":
            scale = _gram_scale(Gtr)
            Gtr /= scale
            Gva /= scale
        out = np.empty(len(penalties))
        from sklearn import config_context
        # the Gram was checked for finiteness once (fit); skip the per-fit re-checks,
        # which dominate the cost of small folds
        with config_context(assume_finite=True, skip_parameter_validation=True):
            for p, pen in enumerate(penalties):
                est = _inner_for(self._classification, pen)
                est.fit(Gtr, y[tr])
                out[p] = scorer(est, Gva, y[va])
        return out

    def fit(self, X, y):
        """Run the search on the training set and refit the best setting.

        Parameters
        ----------
        X : sequence set of N series
        y : array (N,)

        Returns
        -------
        self
        """
        from joblib import Parallel, delayed
        from sklearn.metrics import get_scorer
        PX = _validate_X(X)
        y = _check_y(y, PX.n, self._classification)
        _check_scaling(self.kernel_scaling)
        specs = [s.fixed_for(PX) for s in self._specs()]
        pen_name, penalties = self._penalties()
        folds = self._folds(y)
        scorer = get_scorer(self.scoring or
                            ("accuracy" if self._classification else "r2"))
        from .engine import default_n_jobs
        n_workers = default_n_jobs() if self.n_jobs is None else max(1, int(self.n_jobs))
        parallel = Parallel(n_jobs=min(n_workers, len(folds)), prefer="threads")
        n_specs, n_pen, n_folds = len(specs), len(penalties), len(folds)
        scores = np.empty((n_specs, n_pen, n_folds))
        gram_time = np.empty(n_specs)
        cv_time = np.empty(n_specs)
        best = (-np.inf, -1, -1)
        G_best = None
        self.gram_calls_ = 0
        for si, spec in enumerate(specs):
            t0 = time.perf_counter()
            cache = self.cache if isinstance(spec, RNTKSpec) else None
            G = np.asarray(spec.gram(PX, n_jobs=self.n_jobs, cache=cache),
                           dtype=np.float64)
            self.gram_calls_ += 1
            _require_finite(G, f"the training Gram of {spec.label()}")
            t1 = time.perf_counter()
            Gcv = G
            if self.kernel_scaling == "cosine":
                root = _root_self(np.diag(G))
                Gcv = _cosine(G, root, root)
            per_fold = parallel(delayed(self._fold_scores)(Gcv, y, tr, va, penalties,
                                                           scorer)
                                for tr, va in folds)
            scores[si] = np.stack(per_fold, axis=1)
            t2 = time.perf_counter()
            gram_time[si], cv_time[si] = t1 - t0, t2 - t1
            mean = scores[si].mean(axis=1)
            p = int(np.argmax(mean))             # first of the ties
            if mean[p] > best[0]:
                best = (float(mean[p]), si, p)
                G_best = G
            if self.verbose:
                print(f"[RNTKSearchCV] {si + 1}/{n_specs} {spec.label()}: gram "
                      f"{t1 - t0:.2f} s, CV {t2 - t1:.2f} s, best {mean[p]:.4f} "
                      f"({pen_name}={penalties[p]:g})", file=sys.stderr, flush=True)
        if best[1] < 0:
            raise ValueError("no kernel setting produced a finite CV score")
        self._record(specs, pen_name, penalties, scores, gram_time, cv_time, best)
        self.n_splits_ = n_folds
        t0 = time.perf_counter()
        spec = specs[best[1]]
        est = self._make_estimator(spec, penalties[best[2]])
        est._fit_gram(G_best, PX, y, spec)
        self.refit_time_ = time.perf_counter() - t0
        self.best_estimator_ = est
        if self._classification:
            self.classes_ = est.classes_
        return self

    def _record(self, specs, pen_name, penalties, scores, gram_time, cv_time, best):
        n_specs, n_pen, n_folds = scores.shape
        rows = [(si, p) for si in range(n_specs) for p in range(n_pen)]
        mean = np.array([scores[si, p].mean() for si, p in rows])
        res = {
            "family": np.array([specs[si].family for si, _ in rows], dtype=object),
            "kernel": np.array([specs[si].label() for si, _ in rows], dtype=object),
            "params": [dict(specs[si].params()) for si, _ in rows],
            pen_name: np.array([penalties[p] for _, p in rows]),
            "mean_test_score": mean,
            "std_test_score": np.array([scores[si, p].std() for si, p in rows]),
        }
        for k in range(n_folds):
            res[f"split{k}_test_score"] = np.array([scores[si, p, k] for si, p in rows])
        from scipy.stats import rankdata
        res["rank_test_score"] = rankdata(-mean, method="min").astype(np.int64)
        res["gram_time"] = np.array([gram_time[si] for si, _ in rows])
        res["cv_time"] = np.array([cv_time[si] for si, _ in rows])
        self.cv_results_ = res
        self.best_index_ = best[1] * n_pen + best[2]
        self.best_score_ = best[0]
        self.best_kernel_ = specs[best[1]]
        self.best_params_ = dict(specs[best[1]].params(), **{pen_name: penalties[best[2]]})
        self.gram_time_ = float(gram_time.sum())
        self.cv_time_ = float(cv_time.sum())

    def cv_table(self) -> list:
        """``cv_results_`` as a list of flat dict rows (one per setting and C)."""
        check_is_fitted(self, "cv_results_")
        res = self.cv_results_
        pen = "C" if "C" in res else "alpha"
        out = []
        for i in range(len(res["mean_test_score"])):
            row = {"family": res["family"][i], "kernel": res["kernel"][i]}
            row.update(res["params"][i])
            row[pen] = float(res[pen][i])
            row["mean_cv"] = float(res["mean_test_score"][i])
            row["std_cv"] = float(res["std_test_score"][i])
            row["rank"] = int(res["rank_test_score"][i])
            row["gram_time_s"] = float(res["gram_time"][i])
            row["cv_time_s"] = float(res["cv_time"][i])
            out.append(row)
        return out

    # -- delegation ----------------------------------------------------------------
    def predict(self, X):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    def decision_function(self, X):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.decision_function(X)

    def score(self, X, y):
        """Score of the refit best estimator (accuracy / R^2, or ``scoring``)."""
        check_is_fitted(self, "best_estimator_")
        if self.scoring is None:
            return self.best_estimator_.score(X, y)
        from sklearn.metrics import get_scorer
        return get_scorer(self.scoring)(self.best_estimator_, X, y)

    def __sklearn_tags__(self):
        tags = _rntk_tags(super().__sklearn_tags__())
        tags.estimator_type = "classifier" if self.task == "classification" \
            else "regressor"
        return tags
