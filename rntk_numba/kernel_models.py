"""The estimators on precomputed kernels: SVM classification and kernel ridge
regression on the RNTK or on any kernel spec.

* :class:`RNTKClassifier` -- a C-SVM (``SVC(kernel="precomputed")``) on the RNTK;
* :class:`RNTKRegressor` -- kernel ridge regression on the RNTK;
* :class:`KernelClassifier` / :class:`KernelRegressor` -- the same on any kernel spec of
  :mod:`rntk_numba.kernel_specs` (RNTK, MLP NTK, RBF, polynomial).

``fit`` computes the training Gram once; ``predict`` computes only the cross kernel
``K(X, X_train)``. May import: ``inputs``, ``kernel_specs``, ``params``, ``engine`` and
scikit-learn; never the search (:mod:`rntk_numba.search`, which builds on this module).

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
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .inputs import _check_y, _rntk_tags, _validate_sample_weight, _validate_X
from .kernel_specs import KernelSpec, RNTKSpec
from .params import RNTK

__all__ = ["RNTKClassifier", "RNTKRegressor", "KernelClassifier", "KernelRegressor",
           "KERNEL_SCALINGS", "SVM_MAX_ITER"]


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

    def _kernel(self) -> RNTK:
        return RNTK(sigma_w=self.sigma_w, sigma_u=self.sigma_u, sigma_b=self.sigma_b,
                    sigma_h=self.sigma_h, sigma_v=self.sigma_v, n_layers=self.n_layers,
                    activation=self.activation, readout=self.readout)

    def _kernel_spec(self) -> KernelSpec:
        return RNTKSpec(self._kernel(), kind=self.kind)


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
            raise TypeError(f"kernel must be a kernel spec of rntk_numba.kernel_specs "
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
