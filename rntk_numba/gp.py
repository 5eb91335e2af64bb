"""Predictions with uncertainty: the infinitely wide RNN as a Gaussian process, and the
mean and covariance of its ensemble trained by gradient descent.

An infinitely wide RNN at initialisation is a Gaussian process whose covariance is the
NNGP kernel ``K`` (spec section 3); trained by gradient flow on the squared loss it
stays linear in its parameters (spec section 5), so the trained network is a linear
function of the random initial one and its outputs over random initialisations are
again Gaussian, with a mean AND a covariance given in closed form by ``K`` and the NTK
``Theta`` together (Lee et al. 2019, "Wide neural networks of any depth evolve as
linear models under gradient descent", the "NTK-GP"). Both kernels come from one walk:
``gram(X, kind="both")``.

* :func:`nngp_posterior` -- exact Bayesian inference with the NNGP prior and Gaussian
  noise: mean and covariance (or its diagonal) at test sequences.
* :class:`GradientDescentEnsemble` / :func:`gradient_descent_ensemble` -- mean and
  covariance of the ensemble of networks trained for a time ``s`` (any number of times
  at once, ``np.inf`` included), training every parameter (the NTK) or only the
  read-out (the NNGP kernel is then the tangent kernel), with the ridge term of
  :class:`rntk_numba.analysis.GradientFlow`; one eigendecomposition.
* :func:`nngp_log_marginal_likelihood` and :func:`fit_output_scale_and_noise` -- the
  evidence, and its maximisation over the output scale and the noise level from one
  eigendecomposition of the training Gram.
* :class:`RNTKGaussianProcessRegressor` -- a scikit-learn regressor on sequences of any
  lengths with ``predict(X, return_std=True | return_cov=True)``, ``sample_y`` and the
  log marginal likelihood; :func:`evidence_search` chooses the RNTK hyperparameters by
  evidence instead of cross-validation.

Same sample (spec 3.2). The test-test kernel must be the symmetric ``gram(X_test)``
(or its diagonal, the self-kernels): a test sequence IS the same sample as itself, so
``sigma_h`` enters its variance, while two different test sequences are not.

Conventions of the gradient flow (as :class:`~rntk_numba.analysis.GradientFlow`): the
outputs follow ``df/ds = -lr [Theta (f - y) + ridge (f - f0)]``, i.e. gradient flow on
``1/2 ||f(X) - y||^2 + ridge/2 ||theta - theta_0||^2`` for a time ``s`` (``s = lr x``
the number of small gradient steps when ``lr = 1``).
"""

from __future__ import annotations

import itertools
import math
import numbers
import sys
import time as _time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .analysis import GradientFlow, _as_times, _positive
from .params import RNTK

__all__ = [
    "nngp_posterior",
    "GradientDescentEnsemble",
    "gradient_descent_ensemble",
    "nngp_log_marginal_likelihood",
    "fit_output_scale_and_noise",
    "RNTKGaussianProcessRegressor",
    "evidence_search",
    "POSTERIORS",
]

#: Accepted values of ``RNTKGaussianProcessRegressor(posterior=...)``.
POSTERIORS = ("nngp", "ntk")

_LOG_2PI = math.log(2.0 * math.pi)


# =====================================================================================
# validation
# =====================================================================================
def _square(K, name, n=None):
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {K.shape}")
    if n is not None and K.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n}, {n}), got {K.shape}")
    if not np.isfinite(K).all():
        raise ValueError(f"{name} contains NaN or inf")
    scale = float(np.abs(K).max()) or 1.0
    asym = float(np.abs(K - K.T).max())
    if asym > 1e-8 * scale:
        raise ValueError(f"{name} must be symmetric (max |K - K^T| = {asym:.3g}, max |K| "
                         f"= {scale:.3g}); pass the symmetric gram(X), not a cross kernel")
    return K


def _cross(K, name, n, m=None):
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[1] != n or (m is not None and K.shape[0] != m):
        want = f"({'n_test' if m is None else m}, {n})"
        raise ValueError(f"{name} must have shape {want}, got {K.shape}")
    if not np.isfinite(K).all():
        raise ValueError(f"{name} contains NaN or inf")
    return K


def _test_test(K, m, diag, name="K_test_test"):
    """The prior covariance of the test outputs: its diagonal (m,) when ``diag``."""
    K = np.asarray(K, dtype=np.float64)
    if K.ndim == 1:
        if not diag:
            raise ValueError(f"{name} is 1-D (self-kernels only): pass diag=True, or the "
                             f"full symmetric gram(X_test) for the covariance")
        if K.shape != (m,):
            raise ValueError(f"{name} must have shape ({m},), got {K.shape}")
        if not np.isfinite(K).all():
            raise ValueError(f"{name} contains NaN or inf")
        return K
    K = _square(K, name, m)
    return np.diag(K).copy() if diag else K


def _targets(y, n):
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 0 or y.shape[0] != n or y.ndim > 2:
        raise ValueError(f"y must have shape ({n},) or ({n}, k), got {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or inf")
    return y


def _clip_variance(var):
    """Rounding can make a variance slightly negative where it is ~0: clip at 0."""
    return np.maximum(var, 0.0)


def _symmetrise(C):
    return 0.5 * (C + np.swapaxes(C, -1, -2))


# =====================================================================================
# exact inference with the NNGP prior
# =====================================================================================
def _posterior_from_eig(lam, Q, Qy, noise, Ks, Ktt, diag, rcond):
    """Mean and covariance of the GP posterior with ``K = Q diag(lam) Q^T``."""
    mu = lam + noise
    cut = rcond * (mu.max() if mu.size else 0.0)
    w = np.where(mu > cut, 1.0 / np.where(mu > cut, mu, 1.0), 0.0)   # (K + noise)^+
    C = Ks @ Q                                                       # (m, n)
    mean = C @ (w[:, None] * Qy)
    if diag:
        cov = _clip_variance(Ktt - np.einsum("jn,n,jn->j", C, w, C))
    else:
        cov = _symmetrise(Ktt - (C * w) @ C.T)
    return mean, cov


def nngp_posterior(K_train, K_test_train, K_test_test, y, *, noise=0.0, diag=False,
                   rcond=None):
    """Exact Bayesian inference of the infinitely wide RNN: the GP posterior.

    With the NNGP prior ``f ~ GP(0, K)`` and targets ``y = f(X) + eps``,
    ``eps ~ N(0, noise I)``, the latent outputs at the test sequences are Gaussian with::

        mean = K(X*, X) (K + noise I)^{-1} y
        cov  = K(X*, X*) - K(X*, X) (K + noise I)^{-1} K(X, X*)

    (add ``noise`` to the diagonal for the predictive distribution of new noisy
    targets). ``noise = 0`` is noise-free inference (a pseudo-inverse if ``K`` is
    singular).

    Parameters
    ----------
    K_train : array (n, n)
        The symmetric NNGP Gram ``gram(X, kind="nngp")``.
    K_test_train : array (m, n)
        ``gram(X_test, X, kind="nngp")``.
    K_test_test : array (m, m) or (m,)
        The symmetric ``gram(X_test, kind="nngp")`` (same-sample diagonal, spec 3.2), or,
        with ``diag=True``, just its diagonal (the test self-kernels).
    y : array (n,) or (n, k)
    noise : float, default 0.0
        Noise variance (the diagonal regulariser), >= 0.
    diag : bool, default False
        Return the variances (m,) instead of the covariance (m, m).
    rcond : float, optional
        Eigenvalues of ``K + noise I`` below ``rcond`` times the largest are treated as
        zero (pseudo-inverse). Default ``n * eps``.

    Returns
    -------
    mean : ndarray (m,) or (m, k)
    cov : ndarray (m, m), or the variances (m,) with ``diag=True`` (shared by the k
        outputs)

    Examples
    --------
    >>> import numpy as np
    >>> from rntk_numba import RNTK, gram
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.standard_normal(T) for T in (5, 8, 6, 7)]
    >>> Xt = [rng.standard_normal(T) for T in (4, 9)]
    >>> k = RNTK(sigma_b=0.1)
    >>> K, Ks, Kt = (gram(X, kernel=k, kind="nngp"), gram(Xt, X, kernel=k, kind="nngp"),
    ...              gram(Xt, kernel=k, kind="nngp"))
    >>> mean, cov = nngp_posterior(K, Ks, Kt, np.array([1.0, 0.0, -1.0, 0.5]), noise=0.1)
    >>> mean.shape, cov.shape, bool(np.all(np.diag(cov) <= np.diag(Kt)))
    ((2,), (2, 2), True)
    """
    K = _square(K_train, "K_train")
    n = K.shape[0]
    y = _targets(y, n)
    Ks = _cross(K_test_train, "K_test_train", n)
    Ktt = _test_test(K_test_test, Ks.shape[0], diag)
    noise = _positive(noise, "noise", allow_zero=True)
    lam, Q = _eigh_psd(K, "K_train")
    rcond = n * np.finfo(np.float64).eps if rcond is None else float(rcond)
    y2 = y.reshape(n, -1)
    mean, cov = _posterior_from_eig(lam, Q, Q.T @ y2, noise, Ks, Ktt, diag, rcond)
    return (mean[:, 0] if y.ndim == 1 else mean), cov


def _eigh_psd(K, name):
    lam, Q = np.linalg.eigh(0.5 * (K + K.T))
    top = float(np.abs(lam).max())
    if lam[0] < -1e-8 * top:
        warnings.warn(f"{name} is not positive semi-definite (smallest eigenvalue "
                      f"{lam[0]:.3g}, largest {top:.3g}); negative eigenvalues are "
                      f"clipped to 0", RuntimeWarning, stacklevel=3)
    return np.maximum(lam, 0.0), Q


# =====================================================================================
# the gradient-descent ensemble (Lee et al. 2019)
# =====================================================================================
class GradientDescentEnsemble:
    """Mean and covariance of infinitely wide RNNs trained by gradient flow, over their
    random initialisations.

    With ``f0 ~ GP(0, K)`` (the NNGP) and the tangent kernel ``Theta`` fixed (infinite
    width), the network trained for a time ``s`` is (see
    :class:`~rntk_numba.analysis.GradientFlow`)::

        f_s(X*) = f0(X*) + A_s (y - f0(X)),   A_s = Theta(X*, X) Q g_s(mu + ridge) Q^T

    with ``Theta(X, X) = Q diag(mu) Q^T`` and ``g_s(mu) = (1 - exp(-lr mu s)) / mu``.
    It is Gaussian over initialisations, with::

        mean_s = A_s y
        cov_s  = K(X*, X*) - A_s K(X, X*) - K(X*, X) A_s^T + A_s K(X, X) A_s^T
                 [+ target_noise A_s A_s^T]

    (Lee et al. 2019, the NTK-GP). ``s = 0`` is the prior; ``s = inf`` with
    ``ridge = 0`` is ``A = Theta* Theta^{-1}`` (a pseudo-inverse when singular).
    Training only the read-out makes the NNGP kernel the tangent kernel
    (``Theta = K``: pass ``ntk_train=None``); then ``s = inf`` with
    ``ridge = target_noise = noise`` is exactly the GP posterior of
    :func:`nngp_posterior` (sampling the prior and optimising is posterior sampling).

    ``target_noise``: the variance of noise on the training targets. The formula above
    holds the targets fixed; if every member of the ensemble were trained on its own
    noisy copy ``y + eps`` (or: to measure how far the mean is from noisy truth under
    the model), the covariance gains ``target_noise A_s A_s^T``.

    Parameters
    ----------
    K_train : array (n, n)
        NNGP Gram of the training set (``gram(X, kind="both")[1]``).
    y : array (n,) or (n, k)
    ntk_train : array (n, n), optional
        The NTK Gram ``gram(X, kind="both")[0]``: all parameters are trained. ``None``:
        only the read-out is trained (tangent kernel = ``K_train``).
    lr : float, default 1.0
    ridge : float, default 0.0
        Weight decay lambda >= 0 (as in :class:`~rntk_numba.analysis.GradientFlow`).
    rcond : float, optional
        Pseudo-inverse cut-off at ``s = inf``.

    Attributes
    ----------
    flow_ : GradientFlow
        The mean's solver (one ``eigh`` of the tangent kernel).
    n_train : int

    Notes
    -----
    One ``eigh`` of the tangent Gram, O(n^3); each call of :meth:`predict` is then
    O(n_times m n (m + n)) for the covariance, O(n_times m n^2) for the variances.
    """

    def __init__(self, K_train, y, *, ntk_train=None, lr=1.0, ridge=0.0, rcond=None):
        K = _square(K_train, "K_train")
        n = K.shape[0]
        y = _targets(y, n)
        self.readout_only = ntk_train is None
        Theta = K if self.readout_only else _square(ntk_train, "ntk_train", n)
        self.flow_ = GradientFlow(Theta, y, lr=lr, ridge=ridge, rcond=rcond)
        Q = self.flow_.eigenvectors_
        self._K = K
        self._Theta = None if self.readout_only else Theta
        self._KQ = _symmetrise(Q.T @ K @ Q)
        self._Qy = Q.T @ y.reshape(n, -1)
        self._vector = y.ndim == 1
        self.n_train = n

    def spectral_weights(self, times) -> np.ndarray:
        """``g_s(mu + ridge)`` for every time and eigenvalue of the tangent Gram."""
        return self.flow_.spectral_weights(times)

    def predict(self, K_test_train, K_test_test, times, *, ntk_test_train=None,
                diag=False, target_noise=0.0):
        """Mean and covariance of the trained ensemble at test sequences.

        Parameters
        ----------
        K_test_train : array (m, n)
            NNGP cross kernel ``gram(X_test, X, kind="both")[1]``.
        K_test_test : array (m, m) or (m,)
            The symmetric NNGP Gram ``gram(X_test, kind="both")[1]`` (or its diagonal,
            the self-kernels, with ``diag=True``).
        times : float or array of floats >= 0 (``np.inf`` allowed)
        ntk_test_train : array (m, n)
            NTK cross kernel ``gram(X_test, X, kind="both")[0]``; required when the
            ensemble was built with ``ntk_train``, not allowed otherwise.
        diag : bool, default False
            Variances (n_times, m) instead of covariances (n_times, m, m).
        target_noise : float, default 0.0
            Noise variance of the training targets (adds ``target_noise A A^T``).

        Returns
        -------
        mean : ndarray (n_times, m[, k]) -- no time axis for a scalar ``times``
        cov : ndarray (n_times, m, m), or (n_times, m) with ``diag=True``
        """
        n = self.n_train
        Ks = _cross(K_test_train, "K_test_train", n)
        m = Ks.shape[0]
        if self.readout_only:
            if ntk_test_train is not None:
                raise ValueError("ntk_test_train was given, but the ensemble trains "
                                 "only the read-out (built without ntk_train)")
            Ts = Ks
        else:
            if ntk_test_train is None:
                raise ValueError("ntk_test_train is required: the ensemble trains every "
                                 "parameter (built with ntk_train)")
            Ts = _cross(ntk_test_train, "ntk_test_train", n, m)
        Ktt = _test_test(K_test_test, m, diag)
        tn = _positive(target_noise, "target_noise", allow_zero=True)
        t, scalar = _as_times(times)
        G = self.spectral_weights(t)                       # (S, n)
        Q = self.flow_.eigenvectors_
        B = Ts @ Q                                         # Theta* Q   (m, n)
        C = Ks @ Q                                         # K* Q       (m, n)
        mean = np.einsum("jn,sn,nk->sjk", B, G, self._Qy)
        M = self._KQ + tn * np.eye(n) if tn else self._KQ
        if diag:
            cov = np.empty((t.size, m))
        else:
            cov = np.empty((t.size, m, m))
        for i in range(t.size):
            BG = B * G[i]                                  # A_s Q    (m, n)
            if diag:
                cross = np.einsum("jn,jn->j", C, BG)
                quad = np.einsum("jn,jn->j", BG @ M, BG)
                cov[i] = _clip_variance(Ktt - 2.0 * cross + quad)
            else:
                cross = C @ BG.T
                cov[i] = _symmetrise(Ktt - cross - cross.T + (BG @ M) @ BG.T)
        if self._vector:
            mean = mean[..., 0]
        if scalar:
            return mean[0], cov[0]
        return mean, cov

    def train(self, times, *, diag=False, target_noise=0.0):
        """Mean and covariance of the ensemble on the training sequences themselves
        (each the same sample as itself: the symmetric Grams are used)."""
        return self.predict(self._K, self._K, times, ntk_test_train=self._Theta, diag=diag,
                            target_noise=target_noise)


def gradient_descent_ensemble(K_train, K_test_train, K_test_test, y, times, *,
                              ntk_train=None, ntk_test_train=None, lr=1.0, ridge=0.0,
                              target_noise=0.0, diag=False, rcond=None):
    """Mean and covariance of the infinitely wide RNN trained by gradient descent for a
    time ``s``, over random initialisations (Lee et al. 2019's NTK-GP).

    See :class:`GradientDescentEnsemble` for the formulas. Pass the NTK matrices to
    train every parameter; leave them out to train only the read-out (NNGP).

    Parameters
    ----------
    K_train, K_test_train, K_test_test : arrays
        NNGP kernels: ``gram(X, kind="both")[1]``, ``gram(X_test, X, kind="both")[1]``
        and ``gram(X_test, kind="both")[1]`` (or its diagonal with ``diag=True``).
    y : array (n,) or (n, k)
    times : float or array of floats >= 0, ``np.inf`` allowed
    ntk_train, ntk_test_train : arrays, optional
        NTK kernels ``gram(X, kind="both")[0]`` and ``gram(X_test, X, kind="both")[0]``
        (both or neither).
    lr, ridge, target_noise, diag, rcond
        As in :class:`GradientDescentEnsemble`.

    Returns
    -------
    mean : ndarray (n_times, m[, k]) (no time axis for a scalar ``times``)
    cov : ndarray (n_times, m, m), or (n_times, m) with ``diag=True``

    Examples
    --------
    >>> import numpy as np
    >>> from rntk_numba import RNTK, gram
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.standard_normal(T) for T in (5, 8, 6, 7)]
    >>> Xt = [rng.standard_normal(T) for T in (4, 9)]
    >>> k = RNTK(sigma_b=0.1)
    >>> (Th, K), (Ths, Ks), (_, Kt) = (gram(X, kernel=k, kind="both"),
    ...     gram(Xt, X, kernel=k, kind="both"), gram(Xt, kernel=k, kind="both"))
    >>> y = np.array([1.0, 0.0, -1.0, 0.5])
    >>> mean, var = gradient_descent_ensemble(K, Ks, Kt, y, [0.0, 1.0, np.inf],
    ...                                       ntk_train=Th, ntk_test_train=Ths, diag=True)
    >>> mean.shape, var.shape, bool(np.allclose(var[0], np.diag(Kt)))   # s = 0: prior
    ((3, 2), (3, 2), True)
    """
    if (ntk_train is None) != (ntk_test_train is None):
        raise ValueError("pass both ntk_train and ntk_test_train (train every parameter) "
                         "or neither (train only the read-out)")
    ens = GradientDescentEnsemble(K_train, y, ntk_train=ntk_train, lr=lr, ridge=ridge,
                                  rcond=rcond)
    return ens.predict(K_test_train, K_test_test, times, ntk_test_train=ntk_test_train,
                       diag=diag, target_noise=target_noise)


# =====================================================================================
# the evidence
# =====================================================================================
def _lml_from_eig(lam, c2, k, output_scale, noise):
    """log N(y; 0, a K + s I) summed over k outputs, with c2 = sum_k (Q^T y)^2."""
    d = output_scale * lam + noise
    if (d <= 0).any():
        return -math.inf
    n = lam.size
    return float(-0.5 * np.sum(c2 / d) - 0.5 * k * np.sum(np.log(d))
                 - 0.5 * n * k * _LOG_2PI)


def _profile_fit(lam, c2, k):
    """Maximise the evidence over (output scale a, noise s): for a fixed ratio
    r = s / a the best a is closed form, ``a(r) = sum c2 / (lam + r) / (n k)``; the ratio
    is found by a grid in log r and a bounded scalar search around the best point."""
    from scipy.optimize import minimize_scalar

    n = lam.size
    unit = float(lam.mean()) if lam.mean() > 0 else 1.0
    lo, hi = math.log(1e-8 * unit), math.log(1e4 * unit)

    def neg(log_r):
        d = lam + math.exp(log_r)
        a = max(float(np.sum(c2 / d)) / (n * k), 1e-300)
        return 0.5 * n * k * (1.0 + _LOG_2PI + math.log(a)) + 0.5 * k * float(
            np.sum(np.log(d)))

    grid = np.linspace(lo, hi, 97)
    vals = np.array([neg(g) for g in grid])
    j = int(np.argmin(vals))
    a_, b_ = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
    res = minimize_scalar(neg, bounds=(a_, b_), method="bounded",
                          options={"xatol": 1e-6})
    log_r = float(res.x) if res.fun <= vals[j] else float(grid[j])
    r = math.exp(log_r)
    a = max(float(np.sum(c2 / (lam + r))) / (n * k), 1e-300)
    return a, a * r, _lml_from_eig(lam, c2, k, a, a * r)


def nngp_log_marginal_likelihood(K_train, y, *, noise, output_scale=1.0) -> float:
    """Log evidence ``log N(y; 0, output_scale K + noise I)`` of the NNGP model.

    Summed over the columns of a 2-D ``y``. Computed from one eigendecomposition;
    ``-inf`` if the covariance is singular.

    Parameters
    ----------
    K_train : array (n, n)
        Symmetric NNGP Gram ``gram(X, kind="nngp")``.
    y : array (n,) or (n, k)
    noise : float >= 0
    output_scale : float > 0, default 1.0

    Returns
    -------
    float
    """
    K = _square(K_train, "K_train")
    y = _targets(y, K.shape[0]).reshape(K.shape[0], -1)
    noise = _positive(noise, "noise", allow_zero=True)
    a = _positive(output_scale, "output_scale")
    lam, Q = _eigh_psd(K, "K_train")
    c2 = np.sum((Q.T @ y) ** 2, axis=1)
    return _lml_from_eig(lam, c2, y.shape[1], a, noise)


def fit_output_scale_and_noise(K_train, y):
    """Maximum-evidence output scale and noise variance for the NNGP model.

    Maximises ``log N(y; 0, a K + s I)`` over ``a > 0`` and ``s > 0`` from one
    eigendecomposition of ``K``: for a fixed ratio ``s / a`` the best ``a`` is closed
    form, and the ratio (searched in ``[1e-8, 1e4]`` times the mean eigenvalue) by a
    grid and a bounded scalar search.

    Returns
    -------
    output_scale : float
    noise : float
    log_marginal_likelihood : float
    """
    K = _square(K_train, "K_train")
    y = _targets(y, K.shape[0]).reshape(K.shape[0], -1)
    lam, Q = _eigh_psd(K, "K_train")
    c2 = np.sum((Q.T @ y) ** 2, axis=1)
    return _profile_fit(lam, c2, y.shape[1])


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


class RNTKGaussianProcessRegressor(RegressorMixin, BaseEstimator):
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
    def _kernel(self) -> RNTK:
        return RNTK(**{f: getattr(self, f) for f in _RNTK_FIELDS})

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
        from .gram import gram
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
        from .inputs import _check_y, _validate_X
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
        from .kernel_models import _require_finite
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
        from .inputs import _validate_X
        check_is_fitted(self, "kernel_")
        PX = _validate_X(X)
        if PX.m != self.n_channels_:
            raise ValueError(f"X has {PX.m} channels per time step, but this estimator "
                             f"was fitted on series with {self.n_channels_}")
        return PX

    def _latent(self, PX, diag, need_cov):
        """Latent mean and covariance (normalised units) at a packed test set."""
        from .kernel_models import _require_finite
        c = self.output_scale_ / self.kernel_scale_
        Ths, Ks = self._grams(PX, self.X_train_)
        _require_finite(Ks, "the NNGP kernel between X and the training set")
        Ks = c * np.asarray(Ks, dtype=np.float64)
        m = PX.n
        if not need_cov:
            Ktt = np.zeros(m)
            diag = True
        elif diag:
            from .engine import prepare
            Ktt = c * prepare(PX, None, self.kernel_).diag_nngp
        else:
            from .gram import gram
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
        from .inputs import _rntk_tags
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
    if param_grid is None:
        from .search import DEFAULT_RNTK_GRID
        param_grid = DEFAULT_RNTK_GRID
    grids = [param_grid] if isinstance(param_grid, dict) else list(param_grid)
    if not grids or not all(isinstance(g, dict) for g in grids):
        raise TypeError("evidence_search: param_grid must be a dict of lists or a list "
                        "of such dicts")
    out = []
    for g in grids:
        bad = sorted(set(g) - set(_RNTK_FIELDS))
        if bad:
            raise ValueError(f"evidence_search: unknown hyperparameter(s) {bad} in "
                             f"param_grid; allowed: {list(_RNTK_FIELDS)}")
        keys = list(g)
        values = [list(g[k]) if isinstance(g[k], (list, tuple, np.ndarray)) else [g[k]]
                  for k in keys]
        for combo in itertools.product(*values):
            out.append(RNTK(**dict(base, **dict(zip(keys, combo)))))
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
    from .inputs import _check_y, _validate_X
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
