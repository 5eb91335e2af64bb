"""The closed forms: exact NNGP inference, the gradient-descent ensemble's mean and
covariance (Lee et al. 2019), and the evidence with its maximisation over the output
scale and the noise. Plain NumPy on kernel matrices (any kernel; the RNTK's come from
``gram(..., kind="both")``); see the package docstring for the conventions.

Owns: the formulas. Imports: NumPy, :mod:`rntk_numba.analysis` (the gradient flow).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..analysis import GradientFlow, _as_times, _positive

__all__ = ["nngp_posterior", "GradientDescentEnsemble", "gradient_descent_ensemble",
           "nngp_log_marginal_likelihood", "fit_output_scale_and_noise"]

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
