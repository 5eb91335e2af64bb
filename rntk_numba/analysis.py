"""Analysis of the RNTK: training dynamics and sensitivity to each time step.

* :class:`GradientFlow` / :func:`gradient_flow_predict` -- the prediction of the
  infinitely wide RNN trained by gradient flow for a time ``s`` (spec section 5), for
  any number of times at once (``s = inf`` included), from ONE eigendecomposition of
  the training Gram matrix.
* :func:`kernel_gradient` / :func:`sensitivity` -- the exact gradient of the kernel
  with respect to the first argument's inputs, and its per-time-step norm
  ``S_t(x, x') = || d Theta(x, x') / d x_t ||`` (spec section 4), by forward-mode
  differentiation of the recursion (jitted, :mod:`rntk_numba._sensitivity`).
* :func:`sensitivity_profile` and :func:`recommend_hyperparameters` -- the mean
  normalised sensitivity over random pairs (the paper's Figure 3) and the "a priori"
  choice of hyperparameters whose sensitivity is flattest for given data lengths.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import NamedTuple

import numpy as np

from .params import ACTIVATIONS, RNTK
from .sequences import pack

__all__ = [
    "GradientFlow",
    "gradient_flow_predict",
    "kernel_gradient",
    "sensitivity",
    "sensitivity_profile",
    "flatness",
    "Recommendation",
    "recommend_hyperparameters",
]

_KINDS = ("ntk", "nngp")


# =====================================================================================
# Training dynamics (spec section 5)
# =====================================================================================
def _as_times(times):
    t = np.asarray(times, dtype=np.float64)
    scalar = t.ndim == 0
    t = t.reshape(-1)
    if np.isnan(t).any() or (t < 0).any():
        raise ValueError(f"times must be >= 0 (np.inf allowed), got {times!r}")
    return t, scalar


def _positive(value, name, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return value


class GradientFlow:
    """Gradient-flow training of a linearised (infinitely wide) model, solved once.

    The training outputs follow ``df/ds = -lr [K (f - y) + ridge (f - f0)]``: gradient
    flow with learning rate ``lr`` on ``1/2 ||f - y||^2 + ridge/2 ||theta - theta_0||^2``
    of a model linear in its parameters with tangent kernel ``K`` (for the RNTK:
    the infinitely wide RNN, spec section 5, Theorem 2). The solution, with
    ``K = Q diag(mu) Q^T`` and ``mu_r = mu + ridge``::

        f_s(X)  = f0(X)  + K     Q g_s(mu_r) Q^T (y - f0(X))
        f_s(X*) = f0(X*) + K_*   Q g_s(mu_r) Q^T (y - f0(X))
        g_s(mu) = (1 - exp(-lr mu s)) / mu        (= lr s at mu = 0)

    which at ``ridge = 0`` is spec section 5's
    ``f0 + K_* K^{-1} (I - exp(-lr K s)) (y - f0)``. As ``s -> inf``,
    ``g -> 1 / mu_r``: kernel ridge regression with ridge ``ridge``, ridge-less
    (minimum-norm interpolation, pseudo-inverse) at ``ridge = 0``.

    Parameters
    ----------
    K_train : array (n, n)
        Symmetric positive semi-definite training Gram matrix, e.g. ``gram(X)``.
    y : array (n,) or (n, k)
        Targets.
    lr : float, default 1.0
        Learning rate eta (time is measured in units of ``1/lr``: ``(lr, s)`` and
        ``(1, lr * s)`` give the same prediction).
    ridge : float, default 0.0
        Weight-decay / ridge term lambda >= 0.
    f0_train : array (n,) or (n, k), optional
        Outputs at initialisation on the training inputs (default 0: the mean
        prediction of the random network).
    rcond : float, optional
        At ``s = inf`` eigenvalues ``mu_r <= rcond * max(mu_r)`` are treated as zero
        (pseudo-inverse). Default ``n * eps``.

    Attributes
    ----------
    eigenvalues_ : ndarray (n,)
        Eigenvalues of ``K_train`` (ascending; rounding-level negative values set to 0).
    eigenvectors_ : ndarray (n, n)

    Notes
    -----
    One ``numpy.linalg.eigh`` at construction, O(n^3); each prediction is then
    O(n_test n (n_times + n)). Eigenvalues below ``-1e-8 max|mu|`` (a matrix that is
    not PSD) raise a ``RuntimeWarning``: the flow then diverges along those directions
    and they are clipped to 0 instead.

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 0.5], [0.5, 1.0]]); y = np.array([1.0, -1.0])
    >>> flow = GradientFlow(K, y)
    >>> bool(np.allclose(flow.train(np.inf), y))      # ridge-less: interpolates
    True
    >>> bool(np.allclose(flow.train(0.0), 0.0))       # f_0 = 0
    True
    """

    def __init__(self, K_train, y, *, lr=1.0, ridge=0.0, f0_train=None, rcond=None):
        K = np.asarray(K_train, dtype=np.float64)
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
            raise ValueError(f"K_train must be a non-empty square matrix, got shape "
                             f"{K.shape}")
        if not np.isfinite(K).all():
            raise ValueError("K_train contains NaN or inf")
        n = K.shape[0]
        scale = float(np.abs(K).max()) or 1.0
        asym = float(np.abs(K - K.T).max())
        if asym > 1e-8 * scale:
            raise ValueError(f"K_train must be symmetric (max |K - K^T| = {asym:.3g}, "
                             f"max |K| = {scale:.3g}); pass gram(X), not a cross kernel")
        self.lr = _positive(lr, "lr")
        self.ridge = _positive(ridge, "ridge", allow_zero=True)
        y = np.asarray(y, dtype=np.float64)
        self._vector = y.ndim == 1
        y2 = y.reshape(n, -1) if y.ndim == 1 and y.shape[0] == n else y
        if y2.ndim != 2 or y2.shape[0] != n:
            raise ValueError(f"y must have shape ({n},) or ({n}, k), got {y.shape}")
        if not np.isfinite(y2).all():
            raise ValueError("y contains NaN or inf")
        self._f0 = self._outputs(f0_train, (n, y2.shape[1]), "f0_train")
        mu, Q = np.linalg.eigh(0.5 * (K + K.T))
        top = float(np.abs(mu).max()) if n else 0.0
        if mu[0] < -1e-8 * top:
            warnings.warn(f"K_train is not positive semi-definite (smallest eigenvalue "
                          f"{mu[0]:.3g}, largest {top:.3g}); negative eigenvalues are "
                          f"clipped to 0", RuntimeWarning, stacklevel=2)
        self.eigenvalues_ = np.maximum(mu, 0.0)
        self.eigenvectors_ = Q
        self.rcond = n * np.finfo(np.float64).eps if rcond is None else float(rcond)
        self._coef = Q.T @ (y2 - self._f0)                 # (n, k)
        self.n_train = n
        self.n_outputs = y2.shape[1]

    def _outputs(self, f0, shape, name):
        if f0 is None:
            return np.zeros(shape)
        f0 = np.atleast_1d(np.asarray(f0, dtype=np.float64))
        if f0.size != shape[0] * shape[1] or f0.shape[0] != shape[0]:
            raise ValueError(f"{name} must have {shape[0]} rows matching the targets, "
                             f"got shape {f0.shape}")
        f0 = f0.reshape(shape)
        if not np.isfinite(f0).all():
            raise ValueError(f"{name} contains NaN or inf")
        return f0

    def spectral_weights(self, times) -> np.ndarray:
        """``g_s(mu_r)`` for every time and eigenvalue: array (n_times, n)."""
        t, _ = _as_times(times)
        mu = self.eigenvalues_ + self.ridge
        G = np.empty((t.size, mu.size))
        pos = mu > 0.0
        cut = mu > self.rcond * (mu.max() if mu.size else 0.0)
        for i, s in enumerate(t):
            if math.isinf(s):
                G[i] = np.where(cut, 1.0 / np.where(cut, mu, 1.0), 0.0)
            else:
                safe = np.where(pos, mu, 1.0)
                G[i] = np.where(pos, -np.expm1(-self.lr * safe * s) / safe,
                                self.lr * s)
        return G

    def _shape(self, out, scalar):
        if self._vector:
            out = out[..., 0]
        return out[0] if scalar else out

    def train(self, times) -> np.ndarray:
        """Predictions on the training inputs at the given time(s).

        Returns
        -------
        ndarray (n_times, n[, k]), or (n[, k]) for a scalar time.
        """
        t, scalar = _as_times(times)
        G = self.spectral_weights(t) * self.eigenvalues_          # K Q g Q^T
        out = self._f0[None] + np.einsum("in,sn,nk->sik", self.eigenvectors_, G,
                                         self._coef)
        return self._shape(out, scalar)

    def predict(self, K_test_train, times, f0_test=None) -> np.ndarray:
        """Predictions on test inputs at the given time(s).

        Parameters
        ----------
        K_test_train : array (n_test, n)
            Cross kernel ``K(X_test, X_train)``, e.g. ``gram(X_test, X_train)``.
        times : float or array of floats >= 0 (``np.inf`` allowed)
        f0_test : array (n_test,) or (n_test, k), optional
            Outputs at initialisation on the test inputs (default 0).

        Returns
        -------
        ndarray (n_times, n_test[, k]), or (n_test[, k]) for a scalar time.
        """
        Ks = np.asarray(K_test_train, dtype=np.float64)
        if Ks.ndim != 2 or Ks.shape[1] != self.n_train:
            raise ValueError(f"K_test_train must have shape (n_test, {self.n_train}), "
                             f"got {Ks.shape}")
        if not np.isfinite(Ks).all():
            raise ValueError("K_test_train contains NaN or inf")
        t, scalar = _as_times(times)
        f0 = self._outputs(f0_test, (Ks.shape[0], self.n_outputs), "f0_test")
        KQ = Ks @ self.eigenvectors_
        out = f0[None] + np.einsum("jn,sn,nk->sjk", KQ, self.spectral_weights(t),
                                   self._coef)
        return self._shape(out, scalar)


def gradient_flow_predict(K_train, K_test_train, y, times, *, lr=1.0, ridge=0.0,
                          f0_train=None, f0_test=None, return_train=False, rcond=None):
    """Prediction of the infinitely wide network trained by gradient flow (spec 5).

    ``f_s(X*) = f0(X*) + K(X*, X) K^{-1} (I - exp(-lr K s)) (y - f0(X))`` for every time
    ``s`` in ``times`` (``np.inf``: kernel regression), with
    ``K -> K + ridge I`` inside the inverse and the exponential when ``ridge > 0``.
    See :class:`GradientFlow` for the derivation and the conventions.

    Parameters
    ----------
    K_train : array (n, n)
        Training Gram matrix (symmetric PSD), e.g. ``gram(X, kernel=k)``.
    K_test_train : array (n_test, n)
        ``gram(X_test, X, kernel=k)``.
    y : array (n,) or (n, k)
    times : float or array of floats >= 0, ``np.inf`` allowed
    lr : float, default 1.0
    ridge : float, default 0.0
    f0_train, f0_test : arrays, optional
        Outputs at initialisation (default 0, the mean prediction).
    return_train : bool, default False
        Also return the predictions on the training inputs.
    rcond : float, optional
        Pseudo-inverse cut-off at ``s = inf`` (see :class:`GradientFlow`).

    Returns
    -------
    test : ndarray (n_times, n_test[, k]) (no time axis for a scalar ``times``)
    train : ndarray (n_times, n[, k]), only with ``return_train=True``

    Examples
    --------
    >>> import numpy as np
    >>> from rntk_numba import RNTK, gram
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.standard_normal(T) for T in (5, 8, 6, 7)]
    >>> k = RNTK()
    >>> K, Ks = gram(X[:3], kernel=k), gram(X[3:], X[:3], kernel=k)
    >>> y = np.array([1.0, 0.0, -1.0])
    >>> f = gradient_flow_predict(K, Ks, y, [0.0, 1.0, np.inf])
    >>> f.shape
    (3, 1)
    >>> bool(np.allclose(f[2], Ks @ np.linalg.solve(K, y)))
    True
    """
    flow = GradientFlow(K_train, y, lr=lr, ridge=ridge, f0_train=f0_train, rcond=rcond)
    test = flow.predict(K_test_train, times, f0_test=f0_test)
    if return_train:
        return test, flow.train(times)
    return test


# =====================================================================================
# Sensitivity (spec section 4)
# =====================================================================================
def _check_kernel(kernel, kind, who):
    if not isinstance(kernel, RNTK):
        raise TypeError(f"{who}: kernel must be an rntk_numba.RNTK, got "
                        f"{type(kernel).__name__}")
    if kind not in _KINDS:
        raise ValueError(f"{who}: kind must be one of {_KINDS}, got {kind!r}")
    if kernel.readout != "last":
        raise ValueError(f"{who}: the gradient is implemented for the spec's read-out "
                         f"(readout='last'), got readout={kernel.readout!r}")


def _pairs(PX, PY, who):
    if PX.m != PY.m:
        raise ValueError(f"{who}: X has {PX.m} channels per time step, Y has {PY.m}")
    if PX.n == PY.n:
        idx = np.arange(PX.n, dtype=np.int64)
        return idx, idx.copy()
    if PX.n == 1:
        return np.zeros(PY.n, dtype=np.int64), np.arange(PY.n, dtype=np.int64)
    if PY.n == 1:
        return np.arange(PX.n, dtype=np.int64), np.zeros(PX.n, dtype=np.int64)
    raise ValueError(f"{who}: X has {PX.n} sequences and Y has {PY.n}; the pairs are "
                     f"(X[i], Y[i]), so the counts must match or one of them be 1")


def _chunks(cost, n_chunks):
    """Contiguous index ranges of roughly equal total cost."""
    n = cost.size
    n_chunks = max(1, min(int(n_chunks), n))
    cum = np.cumsum(cost, dtype=np.float64)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_chunks) / n_chunks)
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    return list(zip(bounds[:-1], bounds[1:]))


def kernel_gradient(X, Y, *, kernel: RNTK, kind: str = "ntk", align: str = "start",
                    n_jobs=None):
    """Exact gradient ``d k(x, y) / d x`` of the kernel with respect to every input of
    its first argument, for many pairs.

    Computed by forward-mode differentiation of the recursion of spec section 3 (no
    step size; exact up to rounding), O(L T^2 m) per pair for x of length T.

    Parameters
    ----------
    X, Y : sequence sets
        The pairs are ``(X[i], Y[i])``; if one set has a single sequence it is paired
        with every sequence of the other. Every pair is treated as two DIFFERENT
        samples, as in a cross kernel ``gram(X, Y)`` (spec 3.2: ``sigma_h`` reaches the
        pair only through the self-kernels).
    kernel : RNTK
    kind : {"ntk", "nngp"}
        Differentiate the RNTK Theta or the NNGP kernel K.
    align : {"start", "end"}
        Layout of the time axis of the result for pairs of different lengths:
        ``"start"``: entry ``[p, t]`` is x's time step ``t + 1``; ``"end"``: entry
        ``[p, -1 - j]`` is x's step ``T - j`` (lags from the end, where the kernel
        aligns its arguments). Entries beyond a sequence's length are NaN.
    n_jobs : int, optional
        Worker threads (default: all cores). Results do not depend on it.

    Returns
    -------
    values : ndarray (P,)
        ``k(X[i], Y[i])`` (equal to ``gram(X, Y)`` on those pairs up to rounding).
    grad : ndarray (P, T_max, m)
        NaN-padded gradients.

    Notes
    -----
    The relu recursion is not differentiable where a 2x2 block has |rho| = 1 exactly;
    :mod:`rntk_numba._sensitivity` documents the convention used there (the value of
    the derivative along perturbations that keep the block rank one, which is the exact
    derivative in the only case where it arises generically: the first aligned step of
    two univariate series of equal length with sigma_b = sigma_h = 0).
    """
    from joblib import Parallel, delayed

    from ._sensitivity import _batch_gradient
    from .engine import resolve_n_jobs

    _check_kernel(kernel, kind, "kernel_gradient")
    if align not in ("start", "end"):
        raise ValueError(f"kernel_gradient: align must be 'start' or 'end', got {align!r}")
    PX = pack(X, "X")
    PY = pack(Y, "Y")
    ix, iy = _pairs(PX, PY, "kernel_gradient")
    m = PX.m
    Tx = PX.lengths[ix]
    goff = np.zeros(ix.size + 1, dtype=np.int64)
    np.cumsum(Tx * m, out=goff[1:])
    values = np.empty(ix.size)
    flat = np.empty(int(goff[-1]))
    k = kernel
    args = (k.n_layers, ACTIVATIONS[k.activation], k.sigma_w ** 2, k.sigma_u ** 2,
            k.sigma_b ** 2, k.sigma_h ** 2, k.sigma_v ** 2, kind == "ntk")
    xv, yv = PX.values, PY.values

    def run(a, b):
        _batch_gradient(xv, PX.offsets, yv, PY.offsets, ix[a:b], iy[a:b], *args,
                        goff[a:b + 1] - goff[a], values[a:b], flat[goff[a]:goff[b]])

    workers = resolve_n_jobs(n_jobs)
    cost = (Tx.astype(np.float64) ** 2) * m * k.n_layers + 1.0
    chunks = _chunks(cost, 4 * workers if workers > 1 else 1)
    if workers == 1 or len(chunks) == 1:
        for a, b in chunks:
            run(a, b)
    else:
        Parallel(n_jobs=workers, prefer="threads")(delayed(run)(a, b) for a, b in chunks)
    Tmax = int(Tx.max())
    grad = np.full((ix.size, Tmax, m), np.nan)
    for p in range(ix.size):
        g = flat[goff[p]:goff[p + 1]].reshape(Tx[p], m)
        if align == "start":
            grad[p, :Tx[p]] = g
        else:
            grad[p, Tmax - Tx[p]:] = g
    return values, grad


def sensitivity(X, Y, *, kernel: RNTK, kind: str = "ntk", normalize: bool = False,
                align: str = "start", n_jobs=None) -> np.ndarray:
    """Sensitivity ``S_t(x, y) = || d k(x, y) / d x_t ||_2`` for every t and many pairs.

    Spec section 4 (the paper's section 3.4): how strongly the kernel between x and y
    responds to x's input at time step t. Exact (forward-mode derivative, see
    :func:`kernel_gradient`).

    Parameters
    ----------
    X, Y : sequence sets
        Pairs ``(X[i], Y[i])`` (a single sequence on either side is broadcast); each
        pair is two different samples (spec 3.2).
    kernel : RNTK
    kind : {"ntk", "nngp"}
    normalize : bool, default False
        Divide every pair's curve by its maximum over t (the paper plots
        ``S_t / max_t S_t``).
    align : {"start", "end"}
        Time axis layout for ragged pairs (see :func:`kernel_gradient`).
    n_jobs : int, optional

    Returns
    -------
    ndarray (P, T_max)
        NaN beyond each x's length.

    Examples
    --------
    >>> import numpy as np
    >>> from rntk_numba import RNTK
    >>> rng = np.random.default_rng(0)
    >>> S = sensitivity(rng.standard_normal((4, 20)), rng.standard_normal((4, 20)),
    ...                 kernel=RNTK(), normalize=True)
    >>> S.shape, bool(np.allclose(np.nanmax(S, axis=1), 1.0))
    ((4, 20), True)
    """
    _, grad = kernel_gradient(X, Y, kernel=kernel, kind=kind, align=align, n_jobs=n_jobs)
    S = np.sqrt(np.sum(grad * grad, axis=2))
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN rows
            S = S / np.nanmax(S, axis=1, keepdims=True)
    return S


def _random_pairs(lengths, n_pairs, m, rng):
    lengths = np.asarray(lengths).reshape(-1)
    if lengths.size == 0 or (lengths < 1).any() or not np.issubdtype(lengths.dtype,
                                                                     np.integer):
        raise ValueError(f"lengths must be positive integers, got {lengths!r}")
    tx = rng.choice(lengths, size=n_pairs)
    ty = rng.choice(lengths, size=n_pairs)
    X = [rng.standard_normal((int(t), m)) for t in tx]
    Y = [rng.standard_normal((int(t), m)) for t in ty]
    return X, Y


def sensitivity_profile(kernel: RNTK, lengths, *, n_pairs: int = 100, m: int = 1,
                        kind: str = "ntk", seed=0, pairs=None, n_jobs=None):
    """Mean normalised sensitivity over random pairs (the paper's Figure 3).

    Draws ``n_pairs`` pairs of independent N(0, I) sequences whose lengths are drawn
    (with replacement) from ``lengths``, computes every pair's ``S_t / max_t S_t`` and
    averages over pairs, lag by lag from the END of x (the kernel aligns its arguments
    at their ends; for a single length this is just time t = 1..T).

    Parameters
    ----------
    kernel : RNTK
    lengths : int or array of ints
        The sequence lengths of the data (e.g. ``100`` for the paper's T = 100).
    n_pairs : int, default 100
    m : int, default 1
        Input channels.
    kind : {"ntk", "nngp"}
    seed : int or numpy.random.Generator, default 0
    pairs : tuple (X, Y), optional
        Use these pairs instead of random ones.
    n_jobs : int, optional

    Returns
    -------
    ndarray (T_max,)
        Entry ``t`` is the mean of ``S / max S`` at x's time step ``T - T_max + t + 1``
        (i.e. lag ``T_max - 1 - t`` from the end), averaged over the pairs long enough
        to have it. NaN where a pair's curve is not finite (overflowing kernels, e.g.
        relu with sigma_w >> sqrt(2) and long sequences) is ignored; all-NaN if none
        is finite.
    """
    if pairs is None:
        if int(n_pairs) < 1:
            raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
        rng = np.random.default_rng(seed)
        X, Y = _random_pairs(np.atleast_1d(lengths), int(n_pairs), int(m), rng)
    else:
        X, Y = pairs
    return _profile(kernel, X, Y, kind, n_jobs)[0]


def _profile(kernel, X, Y, kind, n_jobs):
    """(mean normalised end-aligned profile, number of pairs that overflowed)."""
    with np.errstate(over="ignore", invalid="ignore"):
        S = sensitivity(X, Y, kernel=kernel, kind=kind, normalize=True, align="end",
                        n_jobs=n_jobs)
    bad = ~_row_finite(S)
    S[bad] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(S, axis=0), int(bad.sum())


def _row_finite(S):
    """Rows whose defined entries are all finite and whose maximum was positive."""
    defined = ~np.isnan(S)
    ok = np.where(defined, np.isfinite(S), True).all(axis=1)
    return ok & defined.any(axis=1)


def flatness(profile) -> float:
    """Coefficient of variation ``std / mean`` of a sensitivity profile (0 = flat).

    NaN entries are ignored; ``inf`` if nothing finite is left.
    """
    p = np.asarray(profile, dtype=np.float64)
    p = p[np.isfinite(p)]
    if p.size == 0 or not p.mean() > 0:
        return math.inf
    return float(p.std() / p.mean())


class Recommendation(NamedTuple):
    """Result of :func:`recommend_hyperparameters`.

    Attributes
    ----------
    kernel : RNTK
        The flattest candidate.
    score : float
        Its :func:`flatness` (coefficient of variation of the mean normalised
        sensitivity; 0 = perfectly flat).
    table : list of dict
        Every candidate: ``sigma_w, sigma_b, sigma_h, score``, sorted by score.
    profile : ndarray
        The winner's mean normalised sensitivity (see :func:`sensitivity_profile`).
    """

    kernel: RNTK
    score: float
    table: list
    profile: np.ndarray


def recommend_hyperparameters(lengths, *, activation: str = "relu",
                              sigma_w=None, sigma_b=(0.0,), sigma_h=(0.0,),
                              sigma_u: float = 1.0, n_layers: int = 1, m: int = 1,
                              n_pairs: int = 64, kind: str = "ntk", seed=0,
                              n_jobs=None) -> Recommendation:
    """Pick, before seeing the data values, the hyperparameters whose sensitivity is
    flattest for sequences of the given lengths (the paper's "a priori" selection,
    section 3.4).

    Every candidate ``(sigma_w, sigma_b, sigma_h)`` of the grid is scored by the
    :func:`flatness` of its :func:`sensitivity_profile` on the SAME random pairs
    (N(0, I) inputs with lengths drawn from ``lengths``); the lowest score wins (ties:
    the first in grid order). Candidates whose kernel overflows float64 on these
    lengths score ``inf``.

    Parameters
    ----------
    lengths : int or array of ints
        Lengths of the data's sequences (e.g. ``[len(s) for s in X]``).
    activation : {"relu", "erf"}
    sigma_w : sequence of floats, optional
        Default ``0.5, 0.6, ..., 2.5`` and ``sqrt(2)``.
    sigma_b, sigma_h : sequences of floats, default (0,)
    sigma_u : float, default 1.0
    n_layers, m : int
        Layers and input channels.
    n_pairs : int, default 64
    kind : {"ntk", "nngp"}
    seed : int or Generator, default 0
    n_jobs : int, optional

    Returns
    -------
    Recommendation

    Examples
    --------
    >>> rec = recommend_hyperparameters(30, sigma_w=[1.0, 1.4, 2.0], n_pairs=16)
    >>> rec.kernel.sigma_w in (1.0, 1.4, 2.0), len(rec.table)
    (True, 3)
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, "
                         f"got {activation!r}")
    if sigma_w is None:
        sigma_w = np.unique(np.r_[np.round(np.arange(0.5, 2.5001, 0.1), 2),
                                  math.sqrt(2.0)])
    grid = [(float(w), float(b), float(h)) for w in np.atleast_1d(sigma_w)
            for b in np.atleast_1d(sigma_b) for h in np.atleast_1d(sigma_h)]
    if not grid:
        raise ValueError("recommend_hyperparameters: the grid is empty")
    if int(n_pairs) < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    rng = np.random.default_rng(seed)
    pairs = _random_pairs(np.atleast_1d(lengths), int(n_pairs), int(m), rng)
    table, profiles = [], []
    for w, b, h in grid:
        k = RNTK(sigma_w=w, sigma_u=sigma_u, sigma_b=b, sigma_h=h, n_layers=n_layers,
                 activation=activation)
        prof, n_bad = _profile(k, *pairs, kind, n_jobs)
        score = flatness(prof) if n_bad == 0 else math.inf
        table.append({"sigma_w": w, "sigma_b": b, "sigma_h": h, "score": score})
        profiles.append(prof)
    best = int(np.argmin([row["score"] for row in table]))
    w, b, h = grid[best]
    kern = RNTK(sigma_w=w, sigma_u=sigma_u, sigma_b=b, sigma_h=h, n_layers=n_layers,
                activation=activation)
    order = sorted(range(len(table)), key=lambda i: (table[i]["score"], i))
    return Recommendation(kern, table[best]["score"], [table[i] for i in order],
                          profiles[best])
