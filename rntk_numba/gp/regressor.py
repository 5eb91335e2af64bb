"""The scikit-learn face of the Gaussian-process predictions:
:class:`RNTKGaussianProcessRegressor` (sequences of any lengths in, mean and standard
deviation or covariance out, the evidence fitted by default) and
:func:`evidence_search` (hyperparameters by evidence, each kernel through the store).

Owns: the estimator and the search. Imports: :mod:`.inference` (the formulas), the
package's input checks, ``gram`` and the store.
"""

from __future__ import annotations

import math
import numbers
import sys
import time as _time

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from ..analysis import _positive
from ..kernel_models import _RNTKParams
from ..params import RNTK
from .inference import (GradientDescentEnsemble, _eigh_psd, _lml_from_eig,
                        _posterior_from_eig, _profile_fit)

__all__ = ["RNTKGaussianProcessRegressor", "evidence_search", "POSTERIORS"]

#: Accepted values of ``RNTKGaussianProcessRegressor(posterior=...)``.
POSTERIORS = ("nngp", "ntk")

# =====================================================================================
# the scikit-learn estimator
# =====================================================================================
_RNTK_FIELDS = ("sigma_w", "sigma_u", "sigma_b", "sigma_h", "sigma_v", "n_layers",
                "activation", "readout")


def _normalise_targets(y, normalize):
    if not normalize:
        return 0.0, 1.0
    mean, std = float(np.mean(y)), float(np.std(y))
    return mean, (std if std > 0 and math.isfinite(std) else 1.0)


class RNTKGaussianProcessRegressor(_RNTKParams, RegressorMixin, BaseEstimator):
    """Gaussian-process regression with the infinitely wide RNN, on sequences of any
    lengths: predictions with calibrated uncertainty.

    The model: targets ``y = f(x) + eps`` with ``f`` the infinitely wide RNN of the
    given hyperparameters, either as a Bayesian prior (``posterior="nngp"``: exact GP
    inference with the NNGP kernel) or trained by gradient descent from random
    initialisations (``posterior="ntk"``: the ensemble of networks whose every parameter
    is trained for a time ``time``, Lee et al. 2019; ``posterior="nngp"`` with a
    ``time``: only the read-out is trained). The kernels are divided by the mean of the
    training NNGP Gram's diagonal; then the output scale ``a`` (multiplies both
    kernels, as ``sigma_v**2`` does) and the noise variance ``s`` are fitted by
    maximising the evidence ``log N(y; 0, a K + s I)`` (``optimizer="evidence"``, the
    default: one eigendecomposition of the training Gram, then a one-dimensional
    search), as scikit-learn's ``GaussianProcessRegressor`` fits its kernel.

    Predictive distributions (``predict(return_std=True | return_cov=True)``, with
    ``observation_noise=True``, the default) are those of a NEW noisy target: the latent
    covariance plus ``s``. For the trained ensembles the latent covariance is the
    ensemble's (Lee et al.) plus ``s A A^T``, the spread that the training targets'
    noise puts into the trained networks (see :class:`GradientDescentEnsemble`); with
    read-out training at ``time=inf`` and ``ridge=s`` this is exactly the NNGP posterior.

    Parameters
    ----------
    sigma_w, sigma_u, sigma_b, sigma_h, sigma_v, n_layers, activation, readout
        The RNTK hyperparameters (see :class:`rntk_numba.RNTK`). ``sigma_v`` only
        rescales both kernels, which the fitted output scale absorbs.
    posterior : {"nngp", "ntk"}, default "nngp"
        "nngp": the Bayesian posterior (or, with ``time``, the read-out-only ensemble);
        "ntk": the ensemble of networks with every parameter trained.
    time : float >= 0 or None, default None
        Training time ``s`` of gradient flow on ``1/2 ||f(X) - y~||^2 + ridge/2
        ||theta - theta_0||^2`` at learning rate 1 (``y~``: the normalised targets;
        the network's output scale is the fitted one). ``None``: the exact posterior for
        "nngp", ``np.inf`` (trained to convergence) for "ntk". ``time=0`` is the prior.
        The attribute ``ntk_scale_`` (mean diagonal of the tangent Gram used) sets the
        time scale: training starts to move the outputs near ``time ~ 1 / ntk_scale_``.
    ridge : float >= 0 or None, default None
        Weight decay of the trained ensembles. ``None``: the (fitted) noise variance,
        the maximum-a-posteriori choice for a linearised network with a standard normal
        prior on its parameters.
    noise : float >= 0, default 0.1
        Noise variance (in units of the normalised targets); the starting point is not
        needed by the evidence fit, so this is used only with ``optimizer=None``.
    output_scale : float > 0, default 1.0
        Multiplier of the normalised kernels; used only with ``optimizer=None``.
    optimizer : {"evidence", None}, default "evidence"
        "evidence": fit ``noise`` and ``output_scale`` by maximum marginal likelihood;
        None: keep the given values.
    normalize_y : bool, default True
        Centre the targets and divide them by their standard deviation before fitting
        (the GP prior has mean 0); predictions are transformed back.
    n_jobs : int, optional
        Workers for the kernel computations (results do not depend on it).
    cache : str, path or GramStore, optional
        Store / look up every Gram on disk (see :func:`rntk_numba.gram`).

    Attributes
    ----------
    kernel_ : RNTK
    kernel_scale_ : float
        Mean diagonal of the training NNGP Gram (the kernels are divided by it).
    output_scale_, noise_ : float
        Fitted (or given) output scale and noise variance, normalised units
        (``noise_ * y_train_std_**2`` is the noise variance in the units of y).
    log_marginal_likelihood_value_ : float
        Evidence of the normalised training targets at the fitted values.
    y_train_mean_, y_train_std_ : float
    time_ : float or None
        The training time used (None for the exact posterior).
    ridge_ : float or None
    ntk_scale_ : float or None
        Mean diagonal of the (scaled) tangent Gram of the trained ensemble.
    eigenvalues_, eigenvectors_ : ndarrays
        Eigendecomposition of the normalised training NNGP Gram.
    ensemble_ : GradientDescentEnsemble or None
    X_train_ : PackedSequences
    n_channels_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.standard_normal(T) for T in rng.integers(5, 15, 40)]      # ragged
    >>> y = np.array([x[-1] + 0.5 * x[-2] for x in X]) + 0.1 * rng.standard_normal(40)
    >>> gp = RNTKGaussianProcessRegressor().fit(X[:30], y[:30])
    >>> mean, std = gp.predict(X[30:], return_std=True)
    >>> mean.shape, std.shape, bool(np.all(std > 0))
    ((10,), (10,), True)
    """

    def __init__(self, sigma_w=math.sqrt(2.0), sigma_u=1.0, sigma_b=0.0, sigma_h=0.0,
                 sigma_v=1.0, n_layers=1, activation="relu", readout="last",
                 posterior="nngp", time=None, ridge=None, noise=0.1, output_scale=1.0,
                 optimizer="evidence", normalize_y=True, n_jobs=None, cache=None):
        self.sigma_w = sigma_w
        self.sigma_u = sigma_u
        self.sigma_b = sigma_b
        self.sigma_h = sigma_h
        self.sigma_v = sigma_v
        self.n_layers = n_layers
        self.activation = activation
        self.readout = readout
        self.posterior = posterior
        self.time = time
        self.ridge = ridge
        self.noise = noise
        self.output_scale = output_scale
        self.optimizer = optimizer
        self.normalize_y = normalize_y
        self.n_jobs = n_jobs
        self.cache = cache

    # -- configuration -------------------------------------------------------------
    def _check_params(self):
        if self.posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got "
                             f"{self.posterior!r}")
        if self.time is not None:
            if isinstance(self.time, bool) or not isinstance(self.time, numbers.Real) \
                    or not float(self.time) >= 0:
                raise ValueError(f"time must be None or a number >= 0 (np.inf allowed), "
                                 f"got {self.time!r}")
        if self.ridge is not None:
            _positive(self.ridge, "ridge", allow_zero=True)
        _positive(self.noise, "noise", allow_zero=True)
        _positive(self.output_scale, "output_scale")
        if self.optimizer not in ("evidence", None):
            raise ValueError(f"optimizer must be 'evidence' or None, got "
                             f"{self.optimizer!r}")
        if not isinstance(self.normalize_y, (bool, np.bool_)):
            raise TypeError(f"normalize_y must be a bool, got {self.normalize_y!r}")

    def _kinds(self):
        return "both" if self.posterior == "ntk" else "nngp"

    def _grams(self, PX, PY=None, kernel=None):
        """(ntk or None, nngp) for X (and Y)."""
        from ..gram import gram
        kind = self._kinds()
        res = gram(PX, PY, kernel=self.kernel_ if kernel is None else kernel, kind=kind,
                   n_jobs=self.n_jobs, cache=self.cache)
        return (res[0], res[1]) if kind == "both" else (None, res)

    # -- fitting -------------------------------------------------------------------
    def fit(self, X, y):
        """Compute the training kernels once, fit the output scale and the noise (by
        evidence, unless ``optimizer=None``) and solve the posterior.

        Parameters
        ----------
        X : sequence set of N series (ragged list, (N, T) or (N, T, m) array)
        y : array (N,)

        Returns
        -------
        self
        """
        from ..inputs import _check_y, _validate_X
        PX = _validate_X(X)
        y = _check_y(y, PX.n, False)
        if y.ndim != 1:
            raise ValueError(f"RNTKGaussianProcessRegressor supports one output; y has "
                             f"shape {y.shape}: fit one regressor per column")
        self._check_params()
        kernel = self._kernel()
        Th, K = self._grams(PX, kernel=kernel)
        return self._fit_kernels(PX, y, kernel, K, Th)

    def _fit_kernels(self, PX, y, kernel, K, Th, eig=None):
        """Fit from already computed training kernels (also used by the search)."""
        from ..kernel_models import _require_finite
        K = np.asarray(K, dtype=np.float64)
        _require_finite(K, f"the training NNGP Gram of {kernel}")
        scale = float(np.mean(np.diag(K)))
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"the training NNGP Gram of {kernel} has a mean diagonal of "
                             f"{scale}: the kernel is degenerate on these series")
        ym, ys = _normalise_targets(y, self.normalize_y)
        yn = (y - ym) / ys
        Kn = K / scale
        lam, Q = _eigh_psd(Kn, "the training NNGP Gram") if eig is None else eig
        Qy = Q.T @ yn
        if self.optimizer == "evidence":
            a, s, lml = _profile_fit(lam, Qy ** 2, 1)
        else:
            a, s = float(self.output_scale), float(self.noise)
            lml = _lml_from_eig(lam, Qy ** 2, 1, a, s)
        self.kernel_ = kernel
        self.kernel_scale_ = scale
        self.output_scale_ = a
        self.noise_ = s
        self.log_marginal_likelihood_value_ = lml
        self.y_train_mean_, self.y_train_std_ = ym, ys
        self.eigenvalues_, self.eigenvectors_ = lam, Q
        self._Qy = Qy
        self.X_train_ = PX
        self.n_channels_ = PX.m
        if self.posterior == "nngp" and self.time is None:
            self.ensemble_ = None
            self.time_ = self.ridge_ = self.ntk_scale_ = None
            return self
        self.time_ = math.inf if self.time is None else float(self.time)
        self.ridge_ = s if self.ridge is None else float(self.ridge)
        if self.posterior == "ntk":
            Th = np.asarray(Th, dtype=np.float64)
            _require_finite(Th, f"the training NTK Gram of {kernel}")
            tangent = (a / scale) * Th
        else:
            tangent = None
        self.ensemble_ = GradientDescentEnsemble(a * Kn, yn, ntk_train=tangent,
                                                 ridge=self.ridge_)
        self.ntk_scale_ = float(np.mean(np.diag(a * Kn if tangent is None else tangent)))
        return self

    # -- prediction ----------------------------------------------------------------
    def _test_set(self, X):
        from ..inputs import _validate_X
        check_is_fitted(self, "kernel_")
        PX = _validate_X(X)
        if PX.m != self.n_channels_:
            raise ValueError(f"X has {PX.m} channels per time step, but this estimator "
                             f"was fitted on series with {self.n_channels_}")
        return PX

    def _latent(self, PX, diag, need_cov):
        """Latent mean and covariance (normalised units) at a packed test set."""
        from ..kernel_models import _require_finite
        c = self.output_scale_ / self.kernel_scale_
        Ths, Ks = self._grams(PX, self.X_train_)
        _require_finite(Ks, "the NNGP kernel between X and the training set")
        Ks = c * np.asarray(Ks, dtype=np.float64)
        m = PX.n
        if not need_cov:
            Ktt = np.zeros(m)
            diag = True
        elif diag:
            from ..engine import prepare
            Ktt = c * prepare(PX, None, self.kernel_).diag_nngp
        else:
            from ..gram import gram
            Ktt = c * np.asarray(gram(PX, kernel=self.kernel_, kind="nngp",
                                      n_jobs=self.n_jobs, cache=self.cache))
        _require_finite(Ktt, "the NNGP kernel of X with itself")
        if self.ensemble_ is None:
            n = self.eigenvalues_.size
            rcond = n * np.finfo(np.float64).eps
            mean, cov = _posterior_from_eig(self.output_scale_ * self.eigenvalues_,
                                            self.eigenvectors_, self._Qy[:, None],
                                            self.noise_, Ks, Ktt, diag, rcond)
            return mean[:, 0], cov
        Ths_used = None
        if self.posterior == "ntk":
            _require_finite(Ths, "the NTK between X and the training set")
            Ths_used = c * np.asarray(Ths, dtype=np.float64)
        return self.ensemble_.predict(Ks, Ktt, self.time_, ntk_test_train=Ths_used,
                                      diag=diag, target_noise=self.noise_)

    def predict(self, X, return_std=False, return_cov=False, *, observation_noise=True):
        """Predictive mean, and optionally its standard deviation or covariance.

        Parameters
        ----------
        X : sequence set of M series
        return_std : bool, default False
            Also return the predictive standard deviations (M,) (from the test
            self-kernels only: no M x M kernel is computed).
        return_cov : bool, default False
            Also return the predictive covariance (M, M) (computes ``gram(X)``).
        observation_noise : bool, default True
            Include the noise of a new observation (``noise_``): the distribution of the
            observed target. False: of the noise-free function value.

        Returns
        -------
        mean : ndarray (M,)
        std : ndarray (M,), only with ``return_std``
        cov : ndarray (M, M), only with ``return_cov``
        """
        if return_std and return_cov:
            raise RuntimeError("At most one of return_std or return_cov can be requested.")
        PX = self._test_set(X)
        need = bool(return_std or return_cov)
        mean, cov = self._latent(PX, diag=bool(return_std), need_cov=need)
        mean = self.y_train_mean_ + self.y_train_std_ * mean
        if not need:
            return mean
        if observation_noise:
            if return_std:
                cov = cov + self.noise_
            else:
                cov = cov + self.noise_ * np.eye(cov.shape[0])
        cov = cov * self.y_train_std_ ** 2
        if return_std:
            return mean, np.sqrt(cov)
        return mean, cov

    def sample_y(self, X, n_samples=1, random_state=0, *, observation_noise=True):
        """Draw joint samples of the predictive distribution at X.

        Parameters
        ----------
        X : sequence set of M series
        n_samples : int, default 1
        random_state : int, Generator, RandomState or None, default 0
        observation_noise : bool, default True
            As in :meth:`predict`.

        Returns
        -------
        ndarray (M, n_samples)
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) \
                or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
        mean, cov = self.predict(X, return_cov=True, observation_noise=observation_noise)
        if isinstance(random_state, np.random.Generator):
            rng = random_state
        else:
            from sklearn.utils import check_random_state
            rng = check_random_state(random_state)
        # eigh-based square root: robust for covariances that are PSD only up to rounding
        w, V = np.linalg.eigh(cov)
        root = V * np.sqrt(np.maximum(w, 0.0))
        z = rng.standard_normal((cov.shape[0], int(n_samples)))
        return mean[:, None] + root @ z

    def log_marginal_likelihood(self, output_scale=None, noise=None) -> float:
        """Log evidence of the normalised training targets under the NNGP model
        ``N(0, output_scale K~ + noise I)`` (K~: the training Gram divided by
        ``kernel_scale_``). Defaults: the fitted values."""
        check_is_fitted(self, "kernel_")
        a = self.output_scale_ if output_scale is None else _positive(output_scale,
                                                                      "output_scale")
        s = self.noise_ if noise is None else _positive(noise, "noise", allow_zero=True)
        return _lml_from_eig(self.eigenvalues_, self._Qy ** 2, 1, a, s)

    def __sklearn_tags__(self):
        from ..inputs import _rntk_tags
        return _rntk_tags(super().__sklearn_tags__())


# =====================================================================================
# the evidence search
# =====================================================================================
def _grid_kernels(param_grid, kernels, base):
    if kernels is not None:
        out = list(kernels)
        if not out:
            raise ValueError("evidence_search: kernels is an empty list")
        for k in out:
            if not isinstance(k, RNTK):
                raise TypeError(f"evidence_search: kernels must hold RNTK objects, got "
                                f"{type(k).__name__}")
        return out
    from ..kernel_specs import grid
    from ..search import _as_grid_list
    try:
        grids = _as_grid_list(param_grid)
    except TypeError as exc:
        raise TypeError(f"evidence_search: {exc}") from None
    out = []
    for g in grids:
        bad = sorted(set(g) - set(_RNTK_FIELDS))
        if bad:
            raise ValueError(f"evidence_search: unknown hyperparameter(s) {bad} in "
                             f"param_grid; allowed: {list(_RNTK_FIELDS)}")
        # the fixed settings first (one value each), then the grid's axes in order:
        # the same product order as RNTKSearchCV's grids
        fixed = {k: [v] for k, v in base.items() if k not in g}
        out.extend(spec.kernel for spec in grid("RNTK", **fixed, **g))
    if not out:
        raise ValueError("evidence_search: the grid is empty")
    return out


def evidence_search(X, y, param_grid=None, *, kernels=None, n_jobs=None, cache=None,
                    verbose=0, **params) -> RNTKGaussianProcessRegressor:
    """Choose the RNTK hyperparameters (and the noise) by evidence instead of CV.

    For every kernel setting the training NNGP Gram is computed once (through the store
    when ``cache`` is given), the output scale and noise are fitted by maximum
    marginal likelihood from its eigendecomposition, and the setting with the largest
    log marginal likelihood wins (ties: the first). The winner is refit from the Gram
    already in memory. No fold, no held-out data: one ``eigh`` per setting.

    Parameters
    ----------
    X : sequence set of N series
    y : array (N,)
    param_grid : dict of lists, or list of such dicts, optional
        RNTK hyperparameters to search (keys among ``sigma_w, sigma_u, sigma_b,
        sigma_h, sigma_v, n_layers, activation, readout``); the others come from
        ``params``. Default: :data:`rntk_numba.estimators.DEFAULT_RNTK_GRID`.
    kernels : list of RNTK, optional
        Explicit settings instead of ``param_grid``.
    n_jobs : int, optional
    cache : str, path or GramStore, optional
    verbose : int, default 0
        1: one line per setting on stderr.
    **params
        Other parameters of :class:`RNTKGaussianProcessRegressor` (e.g.
        ``posterior="ntk"``, ``normalize_y``); ``optimizer=None`` compares the
        settings at the fixed ``noise`` and ``output_scale``.

    Returns
    -------
    RNTKGaussianProcessRegressor
        Fitted with the best setting, with ``evidence_results_`` (a list of dict rows:
        the hyperparameters, ``output_scale``, ``noise``, ``log_marginal_likelihood``,
        ``rank``, ``gram_time_s``, ``fit_time_s``), ``best_index_`` and
        ``search_time_`` (seconds).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.standard_normal(T) for T in rng.integers(5, 10, 20)]
    >>> y = np.array([x[-1] + 0.1 * rng.standard_normal() for x in X])
    >>> gp = evidence_search(X, y, {"sigma_w": [1.2, 1.5], "sigma_b": [0.0, 0.3]})
    >>> len(gp.evidence_results_), gp.evidence_results_[gp.best_index_]["rank"]
    (4, 1)
    """
    from ..inputs import _check_y, _validate_X
    overlap = sorted(set(params) & {"n_jobs", "cache"})
    if overlap:  # pragma: no cover - caught by Python's own duplicate-keyword check
        raise TypeError(f"evidence_search: pass {overlap} once")
    est = RNTKGaussianProcessRegressor(n_jobs=n_jobs, cache=cache, **params)
    est._check_params()
    t_start = _time.perf_counter()
    PX = _validate_X(X)
    y = _check_y(y, PX.n, False)
    if y.ndim != 1:
        raise ValueError(f"evidence_search supports one output; y has shape {y.shape}")
    base = est._kernel().to_dict()
    if param_grid is not None and kernels is None:
        grids = [param_grid] if isinstance(param_grid, dict) else list(param_grid)
        fixed = sorted({k for g in grids if isinstance(g, dict) for k in g} & set(params))
        if fixed:
            raise ValueError(f"evidence_search: {fixed} given both in param_grid and as "
                             f"fixed parameters")
    settings = _grid_kernels(param_grid, kernels, base)
    ym, ys = _normalise_targets(y, est.normalize_y)
    yn = (y - ym) / ys
    rows, best, keep = [], -1, None
    for i, k in enumerate(settings):
        t0 = _time.perf_counter()
        Th, K = est._grams(PX, kernel=k)
        K = np.asarray(K, dtype=np.float64)
        t1 = _time.perf_counter()
        row = dict(k.to_dict())
        scale = float(np.mean(np.diag(K)))
        if not (np.isfinite(K).all() and math.isfinite(scale) and scale > 0):
            row.update(output_scale=math.nan, noise=math.nan,
                       log_marginal_likelihood=-math.inf)
            eig = None
        else:
            lam, Q = _eigh_psd(K / scale, "the training NNGP Gram")
            c2 = (Q.T @ yn) ** 2
            if est.optimizer == "evidence":
                a, s, lml = _profile_fit(lam, c2, 1)
            else:
                a, s = float(est.output_scale), float(est.noise)
                lml = _lml_from_eig(lam, c2, 1, a, s)
            row.update(output_scale=a, noise=s, log_marginal_likelihood=lml)
            eig = (lam, Q)
        t2 = _time.perf_counter()
        row.update(gram_time_s=t1 - t0, fit_time_s=t2 - t1)
        rows.append(row)
        if eig is not None and (best < 0 or row["log_marginal_likelihood"]
                                > rows[best]["log_marginal_likelihood"]):
            best, keep = i, (K, Th, eig)
        if verbose:
            print(f"[evidence_search] {i + 1}/{len(settings)} {k}: gram {t1 - t0:.2f} s, "
                  f"fit {t2 - t1:.3f} s, log evidence "
                  f"{row['log_marginal_likelihood']:.3f}", file=sys.stderr, flush=True)
    if best < 0:
        raise ValueError("evidence_search: every kernel setting overflowed float64 (use "
                         "sigma_w closer to sqrt(2), or shorter or rescaled series)")
    order = sorted(range(len(rows)), key=lambda j: (-rows[j]["log_marginal_likelihood"],
                                                    j))
    for rank, j in enumerate(order, 1):
        rows[j]["rank"] = rank
    K, Th, eig = keep
    est.set_params(**{f: getattr(settings[best], f) for f in _RNTK_FIELDS})
    est._fit_kernels(PX, y, settings[best], K, Th, eig=eig)
    est.evidence_results_ = rows
    est.best_index_ = best
    est.search_time_ = _time.perf_counter() - t_start
    return est
