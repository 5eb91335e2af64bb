"""Baseline kernels for comparisons (spec 3.3 item 2 and section 6).

Everything here is plain vectorised NumPy on flattened, equal-length vectors and is
written independently of the RNTK engine.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["mlp_ntk"]

_KINDS = ("ntk", "nngp", "both")


def _as_matrix(X, name):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        raise ValueError(f"mlp_ntk: {name} must be 2-D (N, d); got a 1-D array, "
                         f"use {name}[None, :] for a single vector")
    if X.ndim > 2:
        X = X.reshape(X.shape[0], -1)       # flatten (N, T, m) series
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"mlp_ntk: {name} has shape {X.shape}; need N >= 1 and d >= 1")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"mlp_ntk: {name} contains NaN or inf")
    return X


def _relu_dual(a, b, c):
    """Arc-cosine duals (V, V') of [[a, c], [c, b]], with V = 0, V' = 1/4 where ab = 0."""
    ab = a * b
    pos = ab > 0.0
    root = np.sqrt(np.where(pos, ab, 1.0))
    rho = np.clip(np.where(pos, c / root, 0.0), -1.0, 1.0)
    theta = np.arccos(rho)
    V = np.where(pos, root * (np.sin(theta) + (math.pi - theta) * np.cos(theta))
                 / (2.0 * math.pi), 0.0)
    Vp = np.where(pos, (math.pi - theta) / (2.0 * math.pi), 0.25)
    return V, Vp


def _relu_self(a):
    """The rho = 1 duals of [[a, a], [a, a]]."""
    pos = a > 0.0
    return np.where(pos, a / 2.0, 0.0), np.where(pos, 0.5, 0.25)


def _erf_dual(a, b, c):
    prod = (1.0 + 2.0 * a) * (1.0 + 2.0 * b)
    return ((2.0 / math.pi) * np.arcsin(2.0 * c / np.sqrt(prod)),
            (4.0 / math.pi) / np.sqrt(prod - 4.0 * c * c))


def _erf_self(a):
    return ((2.0 / math.pi) * np.arcsin(2.0 * a / (1.0 + 2.0 * a)),
            (4.0 / math.pi) / np.sqrt(1.0 + 4.0 * a))


_DUALS = {"relu": (_relu_dual, _relu_self), "erf": (_erf_dual, _erf_self)}


def mlp_ntk(X, Y=None, *, n_layers, sigma_w, sigma_b, sigma_v=1.0, activation="relu",
            kind="ntk"):
    """NTK / NNGP kernel of an infinitely wide fully connected network (closed form).

    The network has ``n_layers`` hidden layers of width n -> infinity in NTK
    parameterisation, weights of standard deviation ``sigma_w`` (the input layer scaled
    by ``1/sqrt(d)``, hidden layers by ``1/sqrt(n)``), biases of standard deviation
    ``sigma_b``, and a linear read-out of standard deviation ``sigma_v`` without bias:

        Sigma_1(x, y) = sigma_w^2 <x, y> / d + sigma_b^2,         Theta_1 = Sigma_1
        Sigma_l       = sigma_w^2 V(Lam_{l-1}) + sigma_b^2
        Theta_l       = Sigma_l + sigma_w^2 V'(Lam_{l-1}) Theta_{l-1}    (l = 2..L)
        NNGP(x, y)    = sigma_v^2 V(Lam_L)
        NTK(x, y)     = sigma_v^2 (V(Lam_L) + V'(Lam_L) Theta_L)

    with ``Lam_l = [[Sigma_l(x,x), Sigma_l(x,y)], [Sigma_l(x,y), Sigma_l(y,y)]]`` and
    the dual activations ``V, V'`` of spec section 2 (arc-cosine kernels for relu; for
    relu, ``sigma_w = sqrt(2)``, ``sigma_b = 0`` is the form of Arora et al. 2019, "On
    exact computation with an infinitely wide neural net"). This is the RNTK at
    ``T = 1``, ``sigma_h = 0`` with ``sigma_u = sigma_w`` (spec 3.3 item 2).

    Parameters
    ----------
    X : array (N, d)
        Vectors (an (N, T, m) array of equal-length series is flattened to (N, T*m)).
    Y : array (M, d), optional
        Omitted: the symmetric Gram ``K(X, X)``, whose diagonal uses the exact
        ``rho = 1`` forms.
    n_layers : int >= 1
        Number of hidden layers L.
    sigma_w, sigma_b, sigma_v : float >= 0
    activation : {"relu", "erf"}
    kind : {"ntk", "nngp", "both"}

    Returns
    -------
    ndarray (N, M) (M = N when Y is omitted), or (ntk, nngp) for ``kind="both"``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0]])
    >>> round(float(mlp_ntk(x, n_layers=1, sigma_w=np.sqrt(2), sigma_b=0.0)[0, 0]), 12)
    1.0
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) \
            or n_layers < 1:
        raise ValueError(f"mlp_ntk: n_layers must be an integer >= 1, got {n_layers!r}")
    for name, val in (("sigma_w", sigma_w), ("sigma_b", sigma_b), ("sigma_v", sigma_v)):
        if not (isinstance(val, numbers.Real) and math.isfinite(val) and val >= 0):
            raise ValueError(f"mlp_ntk: {name} must be finite and >= 0, got {val!r}")
    if activation not in _DUALS:
        raise ValueError(f"mlp_ntk: activation must be 'relu' or 'erf', "
                         f"got {activation!r}")
    if kind not in _KINDS:
        raise ValueError(f"mlp_ntk: kind must be one of {_KINDS}, got {kind!r}")
    pair_dual, self_dual = _DUALS[activation]
    X = _as_matrix(X, "X")
    symmetric = Y is None
    Y = X if symmetric else _as_matrix(Y, "Y")
    if Y.shape[1] != X.shape[1]:
        raise ValueError(f"mlp_ntk: X has dimension {X.shape[1]}, Y has {Y.shape[1]}")
    d = X.shape[1]
    sw2, sb2, sv2 = float(sigma_w) ** 2, float(sigma_b) ** 2, float(sigma_v) ** 2

    sxx = sw2 * np.einsum("ij,ij->i", X, X) / d + sb2           # (N,)
    syy = sxx if symmetric else sw2 * np.einsum("ij,ij->i", Y, Y) / d + sb2
    sxy = sw2 * (X @ Y.T) / d + sb2                               # (N, M)
    if symmetric:
        np.fill_diagonal(sxy, sxx)
    theta = sxy.copy()

    def duals(sxx, syy, sxy):
        V, Vp = pair_dual(sxx[:, None], syy[None, :], sxy)
        if symmetric:
            vs, vps = self_dual(sxx)
            np.fill_diagonal(V, vs)
            np.fill_diagonal(Vp, vps)
        return V, Vp

    for _ in range(1, n_layers):
        V, Vp = duals(sxx, syy, sxy)
        sxy = sw2 * V + sb2
        theta = sxy + sw2 * Vp * theta
        sxx = sw2 * self_dual(sxx)[0] + sb2
        syy = sxx if symmetric else sw2 * self_dual(syy)[0] + sb2
    V, Vp = duals(sxx, syy, sxy)
    nngp = sv2 * V
    ntk = sv2 * (V + Vp * theta)
    if kind == "ntk":
        return ntk
    if kind == "nngp":
        return nngp
    return ntk, nngp
