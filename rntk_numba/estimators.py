"""scikit-learn estimators on precomputed kernels, and the cross-validated kernel search.

* :class:`RNTKClassifier` -- a C-SVM (``SVC(kernel="precomputed")``) on the RNTK;
* :class:`RNTKRegressor` -- kernel ridge regression on the RNTK;
* :class:`KernelClassifier` / :class:`KernelRegressor` -- the same on any kernel spec of
  :mod:`rntk_numba.search_kernels` (RNTK, MLP NTK, RBF, polynomial);
* :class:`RNTKSearchCV` -- the paper's protocol: for every kernel setting of a grid the
  training Gram is computed ONCE (through the on-disk store when ``cache`` is given) and
  every fold and every C is evaluated by slicing it; the best setting is refit on the
  whole training set;
* :class:`SeriesNormalizer` -- per-series L2 / z-normalisation as a pipeline step.

Every estimator takes sequence sets in any layout :func:`rntk_numba.pack` accepts: ragged
lists of ``(T_i,)`` / ``(T_i, m)`` arrays, ``(N, T)`` or ``(N, T, m)`` arrays (trailing
NaN rows are padding). ``fit`` computes the training Gram once; ``predict`` computes
only the cross kernel ``K(X, X_train)``.

Kernel scaling (``kernel_scaling``). RNTK values grow or shrink geometrically with the
sequence length when ``sigma_w != sqrt(2)``, so raw Gram matrices differ in scale by
orders of magnitude between settings. ``"trace"`` (default) divides the training Gram
and every cross kernel by the mean of the training Gram's diagonal: the same as
dividing C by that constant (for kernel ridge: multiplying alpha), so one C grid means
the same thing for every setting, and libsvm stays well-conditioned. ``"cosine"``
normalises every entry by the self-kernels, ``K(x, y) / sqrt(K(x, x) K(y, y))`` (each
series' self-kernel as the same sample, spec 3.2), which also removes the dependence of
a series' kernel norm on its length; for kernels whose self-kernel is constant (RBF, and
the MLP NTK and polynomial kernels on unit-norm vectors) it is the same as "trace".
``"none"`` uses the raw kernel.

Same-sample pairs (spec 3.2). The symmetric training Gram treats its diagonal as the
same sample (``sigma_h`` enters there); in ``K(X_test, X_train)`` no pair is the same
sample. Slicing the training Gram for cross-validation, ``G[val, train]`` never contains
a diagonal entry, so it is exactly the cross kernel between the two folds.
"""

from __future__ import annotations

import math
import sys
import time
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .params import RNTK
from .search_kernels import KernelSpec, RNTKSpec, grid
from .sequences import PackedSequences, pack

__all__ = ["RNTKClassifier", "RNTKRegressor", "KernelClassifier", "KernelRegressor",
           "RNTKSearchCV", "SeriesNormalizer", "DEFAULT_RNTK_GRID", "DEFAULT_C",
           "DEFAULT_ALPHA", "KERNEL_SCALINGS"]

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


# --------------------------------------------------------------------------- validation
def _validate_X(X, name="X") -> PackedSequences:
    """Pack a sequence set, with the messages scikit-learn users expect."""
    if isinstance(X, PackedSequences):
        return X
    try:
        import scipy.sparse as sp
        if sp.issparse(X):
            raise TypeError(f"{name}: sparse input is not supported; pass dense "
                            f"series (a list of arrays or a 2-D / 3-D array)")
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(X, (np.ndarray, list, tuple)) and hasattr(X, "__array__"):
        X = np.asarray(X)                             # pandas DataFrame, array-likes
    if isinstance(X, np.ndarray):
        if X.dtype.kind == "c":
            raise ValueError(f"{name}: Complex data not supported")
        if X.ndim == 1 and X.dtype != object:
            raise ValueError(
                f"{name}: expected a sequence set, got a 1-D array of shape {X.shape}. "
                f"Reshape your data: {name}[None, :] for one univariate series, or "
                f"pass a list of arrays for several series")
        if X.ndim >= 2 and X.shape[1] == 0:
            raise ValueError(f"{name}: 0 feature(s) (shape={X.shape}) while a minimum "
                             f"of 1 is required: every series needs a time step")
        if X.dtype == object and X.ndim >= 2:
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name}: object array that is not numeric: "
                                f"argument must be a string or a real number ({exc})") \
                    from None
    return pack(X, name)


def _validate_sample_weight(sample_weight, n):
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},)")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    return w


def _check_y(y, n, classification):
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import column_or_1d
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    if classification:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
    else:
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"y must be numeric for regression, got dtype "
                                 f"{y.dtype}") from None
        if y.ndim == 2 and y.shape[1] == 1:
            from sklearn.utils.validation import column_or_1d as _c1d
            y = _c1d(y, warn=True)
        y = y.astype(np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or inf")
    if y.shape[0] != n:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                         f"[{n}, {y.shape[0]}]")
    return y


#: Accepted values of ``kernel_scaling``.
KERNEL_SCALINGS = ("trace", "cosine", "none")


def _check_scaling(value):
    if value not in KERNEL_SCALINGS:
        raise ValueError(f"kernel_scaling must be one of {KERNEL_SCALINGS}, "
                         f"got {value!r}")
    return value


def _root_self(d: np.ndarray) -> np.ndarray:
    """sqrt of self-kernels for cosine normalisation (1 where not positive / finite)."""
    d = np.asarray(d, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    return np.sqrt(np.where(ok, d, 1.0))


def _cosine(K: np.ndarray, r_rows: np.ndarray, r_cols: np.ndarray) -> np.ndarray:
    return K / r_rows[:, None] / r_cols[None, :]


def _gram_scale(G: np.ndarray, sample_weight=None) -> float:
    """Mean of the diagonal, weighted by ``sample_weight`` if given (so that a weight 2
    is the same as a repeated series); 1.0 if that is not a positive finite number."""
    diag = np.diag(G)
    if sample_weight is None:
        d = float(np.mean(diag))
    else:
        total = float(np.sum(sample_weight))
        d = float(np.dot(sample_weight, diag)) / total if total > 0 else float("nan")
    return d if (math.isfinite(d) and d > 0) else 1.0


def _rntk_tags(tags):
    tags.input_tags.two_d_array = True
    tags.input_tags.three_d_array = True
    tags.input_tags.sparse = False
    tags.input_tags.allow_nan = False
    tags.input_tags.pairwise = False
    tags.non_deterministic = False
    return tags


# --------------------------------------------------------------------------- base
def _require_finite(G, what):
    """ValueError naming the first non-finite entry of a kernel matrix (an overflow)."""
    G = np.asarray(G)
    if np.isfinite(G).all():
        return
    i, j = (int(v) for v in np.argwhere(~np.isfinite(G))[0])
    raise ValueError(f"{what} has a non-finite entry at ({i}, {j}): {G[i, j]} (the "
                     f"kernel overflowed float64: use sigma_w closer to sqrt(2), or "
                     f"shorter or rescaled series)")


class _KernelModel(BaseEstimator):
    """Shared fit / predict logic: kernel spec -> Gram -> inner precomputed estimator."""

    _classification = True

    # subclasses: _kernel_spec(), _inner()
    def _kernel_spec(self) -> KernelSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def _inner(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X, y, sample_weight=None):
        """Compute the training Gram once and fit the inner estimator on it.

        Parameters
        ----------
        X : sequence set of N series (ragged list, (N, T) or (N, T, m) array)
        y : array (N,) (classification) or (N,) / (N, k) (regression)
        sample_weight : array (N,), optional

        Returns
        -------
        self
        """
        PX = _validate_X(X)
        y = _check_y(y, PX.n, self._classification)
        w = _validate_sample_weight(sample_weight, PX.n)
        spec = self._kernel_spec().fixed_for(PX)
        G = np.asarray(spec.gram(PX, n_jobs=self.n_jobs, cache=self.cache))
        _require_finite(G, f"the training Gram of {spec.label()}")
        return self._fit_gram(G, PX, y, spec, w)

    def _fit_gram(self, G, PX, y, spec, sample_weight=None):
        """Fit from an already computed training Gram (used by RNTKSearchCV)."""
        scaling = _check_scaling(self.kernel_scaling)
        root = None
        if scaling == "cosine":
            root = _root_self(np.diag(G))
            G, scale = _cosine(G, root, root), 1.0
        elif scaling == "trace":
            scale = _gram_scale(G, sample_weight)
            G = G / scale
        else:
            scale = 1.0
        inner = self._inner()
        if sample_weight is None:
            inner.fit(G, y)
        else:
            inner.fit(G, y, sample_weight=sample_weight)
        self.estimator_ = inner
        self.kernel_spec_ = spec
        self.kernel_scale_ = scale
        self.train_self_root_ = root
        self.X_train_ = PX
        self.n_channels_ = PX.m
        if self._classification:
            self.classes_ = inner.classes_
        return self

    def cross_kernel(self, X) -> np.ndarray:
        """The (scaled) kernel ``K(X, X_train)`` the inner estimator predicts from.

        Returns
        -------
        ndarray (N, N_train) float64
        """
        check_is_fitted(self, "estimator_")
        PX = _validate_X(X)
        if PX.m != self.n_channels_:
            raise ValueError(f"X has {PX.m} channels per time step, but this estimator "
                             f"was fitted on series with {self.n_channels_}")
        K = np.asarray(self.kernel_spec_.gram(PX, self.X_train_, n_jobs=self.n_jobs,
                                              cache=self.cache))
        _require_finite(K, "the kernel between X and the training set")
        if self.train_self_root_ is not None:
            return _cosine(K, _root_self(self.kernel_spec_.diag(PX)),
                           self.train_self_root_)
        return K / self.kernel_scale_

    def predict(self, X):
        """Predict from the cross kernel to the training set only.

        Parameters
        ----------
        X : sequence set of M series

        Returns
        -------
        ndarray (M,) (or (M, k) for multi-output regression)
        """
        K = self.cross_kernel(X)                 # checks that the model is fitted
        return self.estimator_.predict(K)

    def __sklearn_tags__(self):
        return _rntk_tags(super().__sklearn_tags__())


class _RNTKParams:
    """The RNTK hyperparameters as estimator parameters."""

    def _kernel_spec(self) -> KernelSpec:
        return RNTKSpec(RNTK(sigma_w=self.sigma_w, sigma_u=self.sigma_u,
                             sigma_b=self.sigma_b, sigma_h=self.sigma_h,
                             sigma_v=self.sigma_v, n_layers=self.n_layers,
                             activation=self.activation,
                             readout=self.readout), kind=self.kind)


#: Iteration cap of every SVM fit (libsvm's default is none). On nearly constant
#: kernels (sub-critical sigma_w, large sigma_b) with a large C, libsvm can run for
#: ever; with the cap such a fit stops with a ``ConvergenceWarning`` from scikit-learn
#: instead (well-posed fits on a thousand series take far fewer iterations).
SVM_MAX_ITER = 1_000_000


def _classifier_inner(est):
    from sklearn.svm import SVC
    if not (isinstance(est.C, numbers.Real) and math.isfinite(est.C) and est.C > 0):
        raise ValueError(f"C must be a finite number > 0, got {est.C!r}")
    return SVC(kernel="precomputed", C=float(est.C), class_weight=est.class_weight,
               max_iter=SVM_MAX_ITER)


def _inner_for(classification, penalty):
    if classification:
        from sklearn.svm import SVC
        return SVC(kernel="precomputed", C=penalty, max_iter=SVM_MAX_ITER)
    from sklearn.kernel_ridge import KernelRidge
    return KernelRidge(alpha=penalty, kernel="precomputed")


def _regressor_inner(est):
    from sklearn.kernel_ridge import KernelRidge
    if not (isinstance(est.alpha, numbers.Real) and math.isfinite(est.alpha)
            and est.alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {est.alpha!r}")
    return KernelRidge(alpha=float(est.alpha), kernel="precomputed")


class _ClassifierMethods:
    def decision_function(self, X):
        """SVM decision values from the cross kernel (shape as ``SVC``'s)."""
        K = self.cross_kernel(X)
        return self.estimator_.decision_function(K)


# --------------------------------------------------------------------------- RNTK
class RNTKClassifier(_ClassifierMethods, ClassifierMixin, _RNTKParams, _KernelModel):
    """C-SVM on the precomputed Recurrent Neural Tangent Kernel.

    Parameters
    ----------
    sigma_w, sigma_u, sigma_b, sigma_h, sigma_v, n_layers, activation, readout
        The RNTK hyperparameters (see :class:`rntk_numba.RNTK`; ``readout="mean"`` is
        an extension outside the spec, often much stronger for classification).
    kind : {"ntk", "nngp"}, default "ntk"
        The RNTK or its NNGP (GP) kernel.
    C : float, default 1.0
        SVM cost (applied to the scaled kernel, see ``kernel_scaling``).
    class_weight : dict or "balanced", optional
        Passed to ``SVC``.
    kernel_scaling : {"trace", "cosine", "none"}, default "trace"
        "trace": divide the kernels by the mean of the training Gram's diagonal
        (equivalent to rescaling C; makes C comparable across kernel settings).
        "cosine": ``K(x, y) / sqrt(K(x, x) K(y, y))``. "none": the raw kernel.
        See the module docstring.
    n_jobs : int, optional
        Workers for the Gram computation (default: all cores). Results do not depend
        on it.
    cache : str, path or GramStore, optional
        Store / look up Gram matrices on disk (see ``rntk_numba.gram``).

    Attributes
    ----------
    estimator_ : sklearn.svm.SVC
        Fitted on the (scaled) training Gram.
    classes_ : ndarray
    X_train_ : PackedSequences
        The training series, packed (predict needs them for the cross kernel).
    kernel_spec_ : RNTKSpec
    kernel_scale_ : float
        The constant the kernels were divided by ("trace"; 1.0 otherwise).
    train_self_root_ : ndarray (N,) or None
        ``sqrt`` of the training self-kernels ("cosine").
    n_channels_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = [np.sin(np.linspace(0, f, T)) for f, T in zip([1, 1, 6, 6], [20, 30, 25, 40])]
    >>> clf = RNTKClassifier(C=10.0).fit(X, [0, 0, 1, 1])
    >>> clf.predict([np.sin(np.linspace(0, 6, 33))]).tolist()
    [1]
    """

    def __init__(self, sigma_w=math.sqrt(2.0), sigma_u=1.0, sigma_b=0.0, sigma_h=0.0,
                 sigma_v=1.0, n_layers=1, activation="relu", kind="ntk", C=1.0,
                 class_weight=None, kernel_scaling="trace", n_jobs=None, cache=None,
                 readout="last"):
        self.sigma_w = sigma_w
        self.sigma_u = sigma_u
        self.sigma_b = sigma_b
        self.sigma_h = sigma_h
        self.sigma_v = sigma_v
        self.n_layers = n_layers
        self.activation = activation
        self.readout = readout
        self.kind = kind
        self.C = C
        self.class_weight = class_weight
        self.kernel_scaling = kernel_scaling
        self.n_jobs = n_jobs
        self.cache = cache

    def _inner(self):
        return _classifier_inner(self)


class RNTKRegressor(RegressorMixin, _RNTKParams, _KernelModel):
    """Kernel ridge regression on the precomputed Recurrent Neural Tangent Kernel.

    ``alpha -> 0`` is the infinitely wide RNN trained to convergence by gradient flow
    on the MSE loss (spec section 5).

    Parameters
    ----------
    sigma_w, sigma_u, sigma_b, sigma_h, sigma_v, n_layers, activation, readout, kind
        As :class:`RNTKClassifier`.
    alpha : float, default 1e-3
        Ridge penalty (on the scaled kernel, see ``kernel_scaling``).
    kernel_scaling, n_jobs, cache
        As :class:`RNTKClassifier`.

    Attributes
    ----------
    estimator_ : sklearn.kernel_ridge.KernelRidge
    X_train_, kernel_spec_, kernel_scale_, n_channels_
        As :class:`RNTKClassifier`.
    """

    _classification = False

    def __init__(self, sigma_w=math.sqrt(2.0), sigma_u=1.0, sigma_b=0.0, sigma_h=0.0,
                 sigma_v=1.0, n_layers=1, activation="relu", kind="ntk", alpha=1e-3,
                 kernel_scaling="trace", n_jobs=None, cache=None, readout="last"):
        self.sigma_w = sigma_w
        self.sigma_u = sigma_u
        self.sigma_b = sigma_b
        self.sigma_h = sigma_h
        self.sigma_v = sigma_v
        self.n_layers = n_layers
        self.activation = activation
        self.readout = readout
        self.kind = kind
        self.alpha = alpha
        self.kernel_scaling = kernel_scaling
        self.n_jobs = n_jobs
        self.cache = cache

    def _inner(self):
        return _regressor_inner(self)


# --------------------------------------------------------------------------- any spec
class _SpecParams:
    def _kernel_spec(self) -> KernelSpec:
        spec = RNTKSpec() if self.kernel is None else self.kernel
        if not isinstance(spec, KernelSpec):
            raise TypeError(f"kernel must be a kernel spec of rntk_numba.search_kernels "
                            f"(RNTKSpec, NTKSpec, RBFSpec, PolySpec), got "
                            f"{type(spec).__name__}")
        return spec


class KernelClassifier(_ClassifierMethods, ClassifierMixin, _SpecParams, _KernelModel):
    """C-SVM on any precomputed kernel spec (the RNTK or a baseline).

    Parameters
    ----------
    kernel : KernelSpec, optional
        E.g. ``RBFSpec(gamma=1.0)`` or ``NTKSpec(n_layers=3)`` (default: ``RNTKSpec()``).
        Fixed-length kernels zero-pad ragged series at their start; the padded length
        is fixed at fit time (``kernel_spec_.length``) unless the spec sets it.
    C, class_weight, kernel_scaling, n_jobs, cache
        As :class:`RNTKClassifier`.
    """

    def __init__(self, kernel=None, C=1.0, class_weight=None, kernel_scaling="trace",
                 n_jobs=None, cache=None):
        self.kernel = kernel
        self.C = C
        self.class_weight = class_weight
        self.kernel_scaling = kernel_scaling
        self.n_jobs = n_jobs
        self.cache = cache

    def _inner(self):
        return _classifier_inner(self)


class KernelRegressor(RegressorMixin, _SpecParams, _KernelModel):
    """Kernel ridge regression on any precomputed kernel spec.

    Parameters
    ----------
    kernel : KernelSpec, optional
    alpha, kernel_scaling, n_jobs, cache
        As :class:`RNTKRegressor`.
    """

    _classification = False

    def __init__(self, kernel=None, alpha=1e-3, kernel_scaling="trace", n_jobs=None,
                 cache=None):
        self.kernel = kernel
        self.alpha = alpha
        self.kernel_scaling = kernel_scaling
        self.n_jobs = n_jobs
        self.cache = cache

    def _inner(self):
        return _regressor_inner(self)


# --------------------------------------------------------------------------- transformer
class SeriesNormalizer(TransformerMixin, BaseEstimator):
    """Normalise every series on its own (a stateless pipeline step).

    Parameters
    ----------
    method : {"l2", "znorm", "none"}, default "l2"
        See :func:`rntk_numba.datasets.normalize`. Output: a ragged list.
    """

    def __init__(self, method="l2"):
        self.method = method

    def fit(self, X, y=None):
        from .datasets import NORMALIZATIONS
        if self.method not in NORMALIZATIONS:
            raise ValueError(f"SeriesNormalizer: method must be one of "
                             f"{NORMALIZATIONS}, got {self.method!r}")
        self.n_channels_ = _validate_X(X).m
        return self

    def transform(self, X):
        """Normalised series, in the input's layout: a list for a list; for an array
        ``(N, T)`` / ``(N, T, m)``, an array of the same shape (NaN padding kept)."""
        from .datasets import normalize
        from .sequences import to_padded
        check_is_fitted(self, "n_channels_")
        if not isinstance(X, (np.ndarray, list, tuple)) and hasattr(X, "__array__"):
            X = np.asarray(X)
        was_array = isinstance(X, np.ndarray) and X.dtype != object
        shape = X.shape if was_array else None
        P = _validate_X(X)
        if P.m != self.n_channels_:
            raise ValueError(f"X has {P.m} channels per time step, but SeriesNormalizer "
                             f"was fitted on series with {self.n_channels_}")
        out = normalize(P, self.method)
        if not was_array:
            return out
        arr = to_padded(out, length=shape[1], fill=np.nan, side="end")
        return arr.reshape(shape)

    def __sklearn_tags__(self):
        tags = _rntk_tags(super().__sklearn_tags__())
        tags.requires_fit = True
        return tags


# --------------------------------------------------------------------------- search
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
