"""A plain, slow, literal NumPy reference of the RNTK (spec sections 2 and 3).

Written independently of the numba engine, and deliberately with a different algorithm:
the engine walks only the one diagonal of the (t, t') grid that the output needs, with
the two sequences aligned at their ends (spec 3.1); this reference fills the FULL grid
``Sigma[l](t, t')``, ``Theta[l](t, t')`` for every ``t = 1..T``, ``t' = 1..T'`` with
both sequences indexed from their start, exactly as the recursions of spec section 3 are
written, and reads the output at the corner ``(T, T')``.

Conventions (the same as ``rntk_numba.gram``):

* a sequence is an array ``(T,)`` or ``(T, m)``; ``B[1](t, t') = <x_t, x'_t'> / m``;
* ``reference_gram(X)`` (``Y`` omitted) is symmetric and its diagonal pairs are the
  same sample (``A[l](0, 0) = sigma_h**2``, spec 3.2); ``reference_gram(X, Y)`` never
  treats a pair as the same sample;
* the self-kernels ``Sigma[l](t, t)(x, x)`` are the diagonal of the full grid of the
  pair ``(x, x)`` as the same sample; on those same-sample diagonal cells the dual
  activations use the exact ``rho = 1`` forms (spec section 2, "Conditioning").

Only the Python standard library and NumPy are used.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "dual",
    "self_kernels",
    "reference_grids",
    "reference_pair",
    "reference_gram",
    "as_sequence",
    "as_sequence_list",
]

_TWO_PI = 2.0 * math.pi


# -- spec section 2: dual activations --------------------------------------------------
def dual(a, b, c, activation, same=False):
    """Dual activations ``(V, V')`` of the 2x2 covariance ``[[a, c], [c, b]]``.

    Parameters
    ----------
    a, b, c : array_like, broadcastable
        Variances ``a, b >= 0`` and covariance ``c``.
    activation : {"relu", "erf"}
    same : bool or array of bool, broadcastable
        Where true, the two arguments are the same sample (then ``a == b == c`` in exact
        arithmetic) and the exact ``rho = 1`` forms are used: relu ``V = a/2``,
        ``V' = 1/2``; erf ``V = (2/pi) arcsin(2a/(1+2a))``, ``V' = (4/pi)/sqrt(1+4a)``.
        For relu with ``a == 0`` the project choice ``V = 0, V' = 1/4`` wins (it only
        ever multiplies zeros).

    Returns
    -------
    V, Vp : ndarray
    """
    a, b, c, same = np.broadcast_arrays(
        np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
        np.asarray(c, dtype=np.float64), np.asarray(same, dtype=bool))
    if activation == "relu":
        ab = a * b
        pos = ab > 0.0
        root = np.sqrt(np.where(pos, ab, 1.0))
        rho = np.where(pos, c / root, 0.0)
        rho = np.clip(rho, -1.0, 1.0)                 # project choice: clip rho
        theta = np.arccos(rho)
        V = np.where(pos, root / _TWO_PI * (np.sin(theta) + (math.pi - theta)
                                            * np.cos(theta)), 0.0)
        Vp = np.where(pos, (math.pi - theta) / _TWO_PI, 0.25)   # project choice a*b == 0
        exact = same & (a > 0.0)
        V = np.where(exact, a / 2.0, V)
        Vp = np.where(exact, 0.5, Vp)
    elif activation == "erf":
        prod = (1.0 + 2.0 * a) * (1.0 + 2.0 * b)
        V = (2.0 / math.pi) * np.arcsin(2.0 * c / np.sqrt(prod))
        Vp = (4.0 / math.pi) / np.sqrt(prod - 4.0 * c * c)
        V = np.where(same, (2.0 / math.pi) * np.arcsin(2.0 * a / (1.0 + 2.0 * a)), V)
        Vp = np.where(same, (4.0 / math.pi) / np.sqrt(1.0 + 4.0 * a), Vp)
    else:
        raise ValueError(f"unknown activation {activation!r}")
    return V, Vp


# -- input handling --------------------------------------------------------------------
def as_sequence(x) -> np.ndarray:
    """One sequence as a float64 array (T, m)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"a sequence must have shape (T,) or (T, m), got {x.shape}")
    return x


def as_sequence_list(X) -> list:
    """A sequence set (list of (T_i,) / (T_i, m), array (N, T) or (N, T, m)) as a list."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 2:
            return [as_sequence(row) for row in X]
        if X.ndim == 3:
            return [as_sequence(row) for row in X]
        raise ValueError(f"expected an (N, T) or (N, T, m) array, got {X.shape}")
    return [as_sequence(x) for x in X]


def _input_gram(x, y):
    """B[1](t, t') = <x_t, y_t'> / m for all t, t'."""
    return (x @ y.T) / x.shape[1]


# -- spec section 3: the full grid ----------------------------------------------------
def _diagonal_walk(x, kernel):
    """Sigma[l](t, t)(x, x) for the same sample by the recursion along the diagonal.

    Only used to know the self-kernels before the full self grid is filled row by row;
    ``reference_grids(x, x, same_sample=True)`` recomputes these cells in the grid and
    the tests check that both agree exactly.
    """
    sw2, su2, sb2, sh2 = (kernel.sigma_w ** 2, kernel.sigma_u ** 2, kernel.sigma_b ** 2,
                          kernel.sigma_h ** 2)
    T = x.shape[0]
    B1 = np.diag(_input_gram(x, x))
    S = np.zeros((kernel.n_layers, T))
    for l in range(kernel.n_layers):
        for t in range(T):
            if t == 0:
                A = sh2
            else:
                a = S[l, t - 1]
                A = float(dual(a, a, a, kernel.activation, same=True)[0])
            if l == 0:
                B = B1[t]
            else:
                a = S[l - 1, t]
                B = float(dual(a, a, a, kernel.activation, same=True)[0])
            S[l, t] = sw2 * A + su2 * B + sb2
    return S


def self_kernels(x, kernel):
    """Self-kernels ``Sigma[l](t, t)(x, x)`` of ``x`` as the same sample (spec 3.1).

    Returns
    -------
    ndarray, shape (n_layers, T)
        Entry ``[l-1, t-1]`` is ``Sigma[l](t, t)(x, x)``, the diagonal of the full grid
        of the pair ``(x, x)`` with ``A[l](0, 0) = sigma_h**2``.
    """
    return _diagonal_walk(as_sequence(x), kernel)


def reference_grids(x, y, kernel, same_sample=False, Sx=None, Sy=None):
    """The full grids of the recursions of spec section 3 for the pair ``(x, y)``.

    Parameters
    ----------
    x : array (T,) or (T, m)
    y : array (T',) or (T', m)
    kernel : rntk_numba.RNTK
    same_sample : bool
        ``x`` and ``y`` are the same draw (then ``y`` must equal ``x``): ``A[l](0, 0) =
        sigma_h**2`` and the cells ``(t, t)`` use the exact ``rho = 1`` duals.
    Sx, Sy : ndarray (n_layers, T) / (n_layers, T'), optional
        Precomputed self-kernels (``self_kernels``).

    Returns
    -------
    dict with
        ``"sigma"``, ``"theta"``, ``"A"``, ``"Ap"``, ``"B"``, ``"Bp"`` : ndarray
        (n_layers, T, T'); ``[l-1, t-1, t'-1]`` holds ``Sigma[l](t, t')``,
        ``Theta[l](t, t')``, ``A[l](t-1, t'-1)``, ``A'[l](t-1, t'-1)`` (0 where a time
        index is 0), ``B[l](t, t')`` and ``B'[l](t, t')``.
        ``"Sx"``, ``"Sy"`` : the self-kernels used.
        ``"ntk"``, ``"nngp"`` : float, the RNTK and the NNGP kernel of the pair.
    """
    x = as_sequence(x)
    y = as_sequence(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError("x and y have different channel counts")
    if same_sample and not (x.shape == y.shape and np.array_equal(x, y)):
        raise ValueError("same_sample=True needs y == x")
    act = kernel.activation
    L = kernel.n_layers
    sw2, su2, sb2, sh2, sv2 = (kernel.sigma_w ** 2, kernel.sigma_u ** 2,
                               kernel.sigma_b ** 2, kernel.sigma_h ** 2,
                               kernel.sigma_v ** 2)
    T, Tp = x.shape[0], y.shape[0]
    if Sx is None:
        Sx = _diagonal_walk(x, kernel)
    if Sy is None:
        Sy = Sx if same_sample else _diagonal_walk(y, kernel)
    # cells (t, t') that are "the same sample at the same time": only the grid diagonal
    # of a same-sample pair
    same_cell = np.zeros((T, Tp), dtype=bool)
    if same_sample:
        same_cell[np.arange(T), np.arange(T)] = True

    sig = np.zeros((L, T, Tp))
    th = np.zeros((L, T, Tp))
    Agrid = np.zeros((L, T, Tp))
    Apgrid = np.zeros((L, T, Tp))
    Bgrid = np.zeros((L, T, Tp))
    Bpgrid = np.zeros((L, T, Tp))
    B1 = _input_gram(x, y)
    for l in range(L):
        # B[l](t, t') and B'[l](t, t') for the whole grid
        if l == 0:
            B = B1
            Bp = np.zeros((T, Tp))                      # the input is not trained
        else:
            B, Bp = dual(Sx[l - 1][:, None], Sy[l - 1][None, :], sig[l - 1], act,
                         same_cell)
        Bgrid[l], Bpgrid[l] = B, Bp
        # row by row: row t needs row t-1 of this layer (and the self-kernels)
        for t in range(T):
            A = np.zeros(Tp)
            Ap = np.zeros(Tp)
            th_prev = np.zeros(Tp)
            if t == 0:
                if same_sample:
                    A[0] = sh2                          # A[l](0, 0), same sample only
                # A[l](0, s') = 0 for s' >= 1; A' terms are 0 (h[l,0] not trained)
            elif Tp > 1:
                # cells (t, t') with t' >= 2 look at (t-1, t'-1), both >= 1
                V, Vp = dual(Sx[l, t - 1], Sy[l, :Tp - 1], sig[l, t - 1, :Tp - 1], act,
                             same_cell[t - 1, :Tp - 1])
                A[1:] = V
                Ap[1:] = Vp
                th_prev[1:] = th[l, t - 1, :Tp - 1]
                # cell (t, 1) looks at (t-1, 0): A = 0, A' term 0
            Agrid[l, t], Apgrid[l, t] = A, Ap
            sig[l, t] = sw2 * A + su2 * B[t] + sb2
            th[l, t] = sig[l, t] + sw2 * Ap * th_prev
            if l > 0:
                th[l, t] += su2 * Bp[t] * th[l - 1, t]
    V, Vp = dual(Sx[L - 1, T - 1], Sy[L - 1, Tp - 1], sig[L - 1, T - 1, Tp - 1], act,
                 same_cell[T - 1, Tp - 1])
    nngp = sv2 * float(V)
    ntk = sv2 * (float(V) + float(Vp) * th[L - 1, T - 1, Tp - 1])
    return {"sigma": sig, "theta": th, "A": Agrid, "Ap": Apgrid, "B": Bgrid,
            "Bp": Bpgrid, "Sx": Sx, "Sy": Sy, "ntk": ntk, "nngp": nngp}


def _mean_readout_pair(x, y, kernel, same_sample):
    """``readout="mean"``, literally by its definition (``rntk_numba.RNTK``): the
    last-step kernels of the end-aligned prefix pairs (x[:T-k], y[:T'-k]), each from a
    full grid of its own, summed and divided by sqrt(T T')."""
    x = as_sequence(x)
    y = as_sequence(y)
    last = kernel.replace(readout="last")
    T, Tp = x.shape[0], y.shape[0]
    ntk = nngp = 0.0
    for k in range(min(T, Tp)):
        g = reference_grids(x[:T - k], y[:Tp - k], last, same_sample=same_sample)
        ntk += g["ntk"]
        nngp += g["nngp"]
    scale = 1.0 / math.sqrt(T * Tp)
    return ntk * scale, nngp * scale


def reference_pair(x, y, kernel, same_sample=False):
    """RNTK and NNGP kernel of one pair of sequences, from the full grid (for the
    mean read-out, from the full grids of its prefix pairs).

    Returns
    -------
    (ntk, nngp) : tuple of float
    """
    if getattr(kernel, "readout", "last") == "mean":
        return _mean_readout_pair(x, y, kernel, same_sample)
    g = reference_grids(x, y, kernel, same_sample=same_sample)
    return g["ntk"], g["nngp"]


def reference_gram(X, Y=None, kernel=None, kind="ntk"):
    """Gram matrix by the full-grid reference, with the conventions of ``gram``.

    Parameters
    ----------
    X, Y : sequence sets (list of (T_i,) / (T_i, m) arrays, (N, T) or (N, T, m) arrays)
        ``Y`` omitted: the symmetric Gram of ``X`` whose diagonal pairs are the same
        sample; otherwise the cross kernel, where no pair is the same sample.
    kernel : rntk_numba.RNTK
    kind : {"ntk", "nngp", "both"}

    Returns
    -------
    ndarray (len(X), len(Y or X)), or the tuple (ntk, nngp) for ``kind="both"``.
    """
    if kernel is None:
        raise TypeError("reference_gram: kernel is required")
    if kind not in ("ntk", "nngp", "both"):
        raise ValueError(f"reference_gram: bad kind {kind!r}")
    Xs = as_sequence_list(X)
    Sxs = [_diagonal_walk(x, kernel) for x in Xs]
    if Y is None:
        Ys, Sys = Xs, Sxs
    else:
        Ys = as_sequence_list(Y)
        Sys = [_diagonal_walk(y, kernel) for y in Ys]
    ntk = np.zeros((len(Xs), len(Ys)))
    nngp = np.zeros((len(Xs), len(Ys)))
    for i, (x, Sx) in enumerate(zip(Xs, Sxs)):
        for j, (y, Sy) in enumerate(zip(Ys, Sys)):
            if Y is None and j < i:
                ntk[i, j], nngp[i, j] = ntk[j, i], nngp[j, i]
                continue
            same = Y is None and i == j
            if getattr(kernel, "readout", "last") == "mean":
                ntk[i, j], nngp[i, j] = _mean_readout_pair(x, y, kernel, same)
                continue
            g = reference_grids(x, y, kernel, same_sample=same, Sx=Sx, Sy=Sy)
            ntk[i, j], nngp[i, j] = g["ntk"], g["nngp"]
    if kind == "ntk":
        return ntk
    if kind == "nngp":
        return nngp
    return ntk, nngp
