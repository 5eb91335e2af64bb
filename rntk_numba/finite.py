"""The finite-width Elman RNN of spec section 1, in NumPy, with its own backpropagation.

Used to check the infinite-width kernels (spec 3.3 item 3: the empirical NTK of a wide
network approaches the RNTK; the mean of ``f(x) f(x')`` approaches the NNGP kernel) and
for training-dynamics experiments (spec section 5).

The network, for layers ``l = 1..L`` and time steps ``t = 1..T``::

    g[l,t] = sw/sqrt(n) W[l] h[l,t-1] + su/sqrt(n_{l-1}) U[l] h[l-1,t] + sb b[l]
    h[l,t] = phi(g[l,t]),   h[0,t] = x_t,   f(x) = sv/sqrt(n) v . h[L,T]

with every entry of ``W, U, b, v`` i.i.d. N(0, 1) and the initial hidden state
``h[l,0] ~ N(0, sh^2 I)`` drawn independently for every input sequence and not trained.
With ``untied=True`` every time step ``t`` has its own ``W[l]_t, U[l]_t, b[l]_t``
(indexed from the start of the sequence; the kernel limit of spec 3.3 item 3 is stated
for sequences of equal length).

Sequence sets are anything :func:`rntk_numba.sequences.pack` accepts (a list of
``(T_i,)`` / ``(T_i, m)`` arrays, an ``(N, T)`` or ``(N, T, m)`` array). Internally a
batch is zero-padded at its END and run in lock step; the read-out of sample ``i`` is
taken at its own last step ``T_i`` and the steps after it receive no gradient.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf as _erf

from .params import RNTK
from .sequences import pack

__all__ = [
    "RNNParams",
    "init_params",
    "draw_initial_states",
    "forward",
    "per_sample_gradients",
    "ntk_of_params",
    "empirical_ntk",
    "network_outputs",
    "TrainHistory",
    "train_gd",
]

_SQRT_PI = math.sqrt(math.pi)


# -- activations ---------------------------------------------------------------------
def _phi(g, activation):
    if activation == "relu":
        return np.maximum(g, 0.0)
    return _erf(g)


def _dphi(g, activation):
    if activation == "relu":
        return (g > 0.0).astype(np.float64)
    return (2.0 / _SQRT_PI) * np.exp(-g * g)


# -- parameters ----------------------------------------------------------------------
@dataclasses.dataclass
class RNNParams:
    """Trainable parameters of a finite RNN (spec section 1).

    Attributes
    ----------
    kernel : RNTK
        The hyperparameters (the scales sigma_* and the number of layers / activation).
    width : int
        Hidden width n.
    m : int
        Input channels.
    untied : bool
        Fresh weights at every time step.
    W : list of L arrays (P, n, n)
    U : list of L arrays (P, n, n_{l-1})   (n_0 = m)
    b : list of L arrays (P, n)
    v : array (n,)
        ``P = 1`` for tied weights, ``P = T`` (the number of time steps) when untied.
    """

    kernel: RNTK
    width: int
    m: int
    untied: bool
    W: list
    U: list
    b: list
    v: np.ndarray

    @property
    def n_steps(self):
        """Number of per-step weight sets (``None`` for tied weights)."""
        return self.W[0].shape[0] if self.untied else None

    def arrays(self):
        """All trainable arrays, in a fixed order (W[1..L], U[1..L], b[1..L], v)."""
        return [*self.W, *self.U, *self.b, self.v]

    def copy(self) -> "RNNParams":
        return dataclasses.replace(self, W=[w.copy() for w in self.W],
                                   U=[u.copy() for u in self.U],
                                   b=[b.copy() for b in self.b], v=self.v.copy())


def _require_last_readout(kernel: RNTK, who: str) -> None:
    if kernel.readout != "last":
        raise ValueError(f"{who}: the finite network reads out its last hidden state "
                         f"(readout='last'); the mean read-out's kernel is that of the "
                         f"end-aligned prefix pairs, summed and scaled (see "
                         f"rntk_numba.RNTK)")


def init_params(kernel: RNTK, m: int, width: int, rng, untied: bool = False,
                T: int | None = None) -> RNNParams:
    """Draw NTK-initialised parameters: every entry i.i.d. N(0, 1).

    Parameters
    ----------
    kernel : RNTK
    m : int
        Input channels.
    width : int
        Hidden width n.
    rng : numpy.random.Generator
    untied : bool, default False
        One weight set per time step (then ``T`` is required).
    T : int, optional
        Number of time steps for untied weights (sequences up to this length).

    Returns
    -------
    RNNParams
    """
    if not isinstance(kernel, RNTK):
        raise TypeError(f"init_params: kernel must be an RNTK, got {type(kernel).__name__}")
    _require_last_readout(kernel, "init_params")
    if int(width) < 1 or int(m) < 1:
        raise ValueError(f"init_params: width and m must be >= 1, got {width}, {m}")
    if untied:
        if T is None or int(T) < 1:
            raise ValueError("init_params: untied=True needs the number of steps T >= 1")
        P = int(T)
    else:
        P = 1
    n, L = int(width), kernel.n_layers
    W, U, b = [], [], []
    for l in range(L):
        n_in = int(m) if l == 0 else n
        W.append(rng.standard_normal((P, n, n)))
        U.append(rng.standard_normal((P, n, n_in)))
        b.append(rng.standard_normal((P, n)))
    v = rng.standard_normal(n)
    return RNNParams(kernel, n, int(m), bool(untied), W, U, b, v)


def draw_initial_states(kernel: RNTK, n_sequences: int, width: int, rng) -> np.ndarray:
    """Initial hidden states ``h[l,0] ~ N(0, sigma_h^2 I)``, one draw per sequence.

    Returns
    -------
    ndarray (L, n_sequences, width)
    """
    return kernel.sigma_h * rng.standard_normal((kernel.n_layers, int(n_sequences),
                                                 int(width)))


# -- forward / backward --------------------------------------------------------------
def _batch(X):
    """Pack a sequence set into a zero-padded (Tmax, N, m) batch and its lengths."""
    P = pack(X)
    Tmax = int(P.lengths.max())
    xs = np.zeros((Tmax, P.n, P.m))
    for i in range(P.n):
        xs[:P.lengths[i], i] = P.series(i)
    return xs, P.lengths.astype(np.int64)


def _step(params, t):
    """Index of the weight set used at (0-based) step t."""
    return t if params.untied else 0


def _check(params, xs, lengths, h0s):
    k = params.kernel
    Tmax, N, m = xs.shape
    if m != params.m:
        raise ValueError(f"the network takes {params.m} input channels, the data has {m}")
    if params.untied and Tmax > params.n_steps:
        raise ValueError(f"untied network has {params.n_steps} steps, a sequence has "
                         f"{Tmax}")
    h0s = np.asarray(h0s, dtype=np.float64)
    if h0s.shape != (k.n_layers, N, params.width):
        raise ValueError(f"h0s must have shape {(k.n_layers, N, params.width)}, "
                         f"got {h0s.shape}")
    return h0s


def _forward(params, xs, lengths, h0s):
    """Lock-step forward pass of a padded batch.

    Returns
    -------
    f : (N,) outputs; cache : dict with ``G[l]`` (Tmax, N, n) pre-activations,
    ``H[l]`` (Tmax+1, N, n) hidden states (``H[l][0] = h[l,0]``), ``below[l]``
    (Tmax, N, n_{l-1}) the input of layer l, ``hT`` (N, n) the read-out state.
    """
    k = params.kernel
    act = k.activation
    n = params.width
    Tmax, N, _ = xs.shape
    cw = k.sigma_w / math.sqrt(n)
    below = xs
    G, H, B = [], [], []
    for l in range(k.n_layers):
        n_in = below.shape[2]
        cu = k.sigma_u / math.sqrt(n_in)
        W, U, b = params.W[l], params.U[l], params.b[l]
        # input-to-hidden part of every step at once
        if params.untied:
            inp = cu * (below @ U[:Tmax].transpose(0, 2, 1)) + k.sigma_b * b[:Tmax, None, :]
        else:
            inp = cu * (below @ U[0].T) + k.sigma_b * b[0]
        Hl = np.empty((Tmax + 1, N, n))
        Hl[0] = h0s[l]
        Gl = np.empty((Tmax, N, n))
        for t in range(Tmax):
            g = cw * (Hl[t] @ W[_step(params, t)].T) + inp[t]
            Gl[t] = g
            Hl[t + 1] = _phi(g, act)
        G.append(Gl)
        H.append(Hl)
        B.append(below)
        below = Hl[1:]
    hT = H[-1][lengths, np.arange(N)]                     # h[L, T_i] of each sample
    f = (k.sigma_v / math.sqrt(n)) * (hT @ params.v)
    return f, {"G": G, "H": H, "below": B, "hT": hT, "lengths": lengths}


def _backward(params, cache, seeds):
    """Backpropagation through time: ``delta[l][t, i] = seeds[i] * df_i / dg[l,t]``.

    Returns
    -------
    list of L arrays (Tmax, N, n); zero at the steps after each sample's end.
    """
    k = params.kernel
    act = k.activation
    n = params.width
    L = k.n_layers
    G = cache["G"]
    lengths = cache["lengths"]
    Tmax, N, _ = G[0].shape
    cw = k.sigma_w / math.sqrt(n)
    # gradient arriving at h[L, t] from the read-out
    ext = np.zeros((Tmax, N, n))
    ext[lengths - 1, np.arange(N)] = (np.asarray(seeds, dtype=np.float64)[:, None]
                                      * (k.sigma_v / math.sqrt(n)) * params.v[None, :])
    deltas = [None] * L
    for l in range(L - 1, -1, -1):
        W = params.W[l]
        D = np.empty((Tmax, N, n))
        rec = np.zeros((N, n))                            # from g[l, t+1] via W[l]
        dphi = _dphi(G[l], act)
        for t in range(Tmax - 1, -1, -1):
            d = (ext[t] + rec) * dphi[t]
            D[t] = d
            rec = cw * (d @ W[_step(params, t)])
        deltas[l] = D
        if l > 0:                                         # to h[l-1, t] via U[l]
            cu = k.sigma_u / math.sqrt(n)
            if params.untied:
                ext = cu * (D @ params.U[l][:Tmax])
            else:
                ext = cu * (D @ params.U[l][0])
    return deltas


def _flat_outer(D, H):
    """sum over steps and samples of outer(D[t, j], H[t, j]): (n, d)."""
    return D.reshape(-1, D.shape[2]).T @ H.reshape(-1, H.shape[2])


def _summed_gradients(params, cache, deltas):
    """Gradients of ``sum_i seeds[i] f_i`` (the seeds are already in ``deltas``).

    ``v``'s gradient is returned as the per-sample read-out states; the caller weights
    them by the seeds.
    """
    k = params.kernel
    n = params.width
    cw = k.sigma_w / math.sqrt(n)
    gW, gU, gb = [], [], []
    for l in range(k.n_layers):
        D, Hprev, below = deltas[l], cache["H"][l][:-1], cache["below"][l]
        cu = k.sigma_u / math.sqrt(below.shape[2])
        if params.untied:
            P = params.n_steps
            Tmax = D.shape[0]
            w = np.zeros((P, n, n))
            u = np.zeros((P, n, below.shape[2]))
            bb = np.zeros((P, n))
            w[:Tmax] = cw * (D.transpose(0, 2, 1) @ Hprev)
            u[:Tmax] = cu * (D.transpose(0, 2, 1) @ below)
            bb[:Tmax] = k.sigma_b * D.sum(axis=1)
        else:
            w = cw * _flat_outer(D, Hprev)[None]
            u = cu * _flat_outer(D, below)[None]
            bb = k.sigma_b * D.sum(axis=(0, 1))[None]
        gW.append(w)
        gU.append(u)
        gb.append(bb)
    return gW, gU, gb


def forward(params: RNNParams, X, h0s) -> np.ndarray:
    """Outputs ``f(x_i)`` of the network for a sequence set.

    Parameters
    ----------
    params : RNNParams
    X : sequence set of N sequences with ``params.m`` channels
    h0s : array (L, N, n)
        Initial hidden state of every sequence (see :func:`draw_initial_states`).

    Returns
    -------
    ndarray (N,)
    """
    xs, lengths = _batch(X)
    h0s = _check(params, xs, lengths, h0s)
    return _forward(params, xs, lengths, h0s)[0]


def per_sample_gradients(params: RNNParams, X, h0s) -> dict:
    """Gradient of every output ``f(x_i)`` with respect to every trainable array.

    Memory is ``N`` times the parameter count: for checks at small width.

    Returns
    -------
    dict with ``"W"``, ``"U"``, ``"b"`` (lists over layers of arrays (N, P, ...) shaped
    like the parameters with a leading sample axis) and ``"v"`` (N, n).
    """
    xs, lengths = _batch(X)
    h0s = _check(params, xs, lengths, h0s)
    k = params.kernel
    n = params.width
    f, cache = _forward(params, xs, lengths, h0s)
    deltas = _backward(params, cache, np.ones(len(lengths)))
    cw = k.sigma_w / math.sqrt(n)
    out = {"W": [], "U": [], "b": []}
    for l in range(k.n_layers):
        D, Hprev, below = deltas[l], cache["H"][l][:-1], cache["below"][l]
        cu = k.sigma_u / math.sqrt(below.shape[2])
        Tmax, N, _ = D.shape
        if params.untied:
            P = params.n_steps
            w = np.zeros((N, P, n, n))
            u = np.zeros((N, P, n, below.shape[2]))
            bb = np.zeros((N, P, n))
            w[:, :Tmax] = cw * np.einsum("tjn,tjm->jtnm", D, Hprev, optimize=True)
            u[:, :Tmax] = cu * np.einsum("tjn,tjm->jtnm", D, below, optimize=True)
            bb[:, :Tmax] = k.sigma_b * D.transpose(1, 0, 2)
        else:
            w = cw * np.einsum("tjn,tjm->jnm", D, Hprev, optimize=True)[:, None]
            u = cu * np.einsum("tjn,tjm->jnm", D, below, optimize=True)[:, None]
            bb = k.sigma_b * D.sum(axis=0)[:, None]
        out["W"].append(w)
        out["U"].append(u)
        out["b"].append(bb)
    out["v"] = (k.sigma_v / math.sqrt(n)) * cache["hT"]
    return out


def _pair_sum(GD, GH, untied):
    """sum over time pairs of (delta . delta') (h . h'): GD, GH are (Tmax, N, Tmax, N)
    (tied) or (Tmax, N, N) (untied, same step only)."""
    if untied:
        return (GD * GH).sum(axis=0)
    return (GD * GH).sum(axis=(0, 2))


def _time_gram(A, untied):
    """Inner products of per-step vectors A (Tmax, N, d) across samples (and steps)."""
    if untied:
        return A @ A.transpose(0, 2, 1)
    Tmax, N, d = A.shape
    flat = A.reshape(Tmax * N, d)
    return (flat @ flat.T).reshape(Tmax, N, Tmax, N)


def ntk_of_params(params: RNNParams, X, h0s) -> np.ndarray:
    """Empirical NTK ``<grad f(x_i), grad f(x_j)>`` of given parameters.

    The gradients are with respect to ``W, U, b`` of every layer and ``v``; the inner
    products are taken without forming the per-sample gradients: for tied ``W[l]``,
    ``<grad_W f(x), grad_W f(x')> = sw^2/n sum_{t,s} (delta_t . delta'_s)
    (h_{t-1} . h'_{s-1})``, and only ``t = s`` for untied weights.

    Returns
    -------
    ndarray (N, N)
    """
    xs, lengths = _batch(X)
    h0s = _check(params, xs, lengths, h0s)
    k = params.kernel
    n = params.width
    untied = params.untied
    f, cache = _forward(params, xs, lengths, h0s)
    deltas = _backward(params, cache, np.ones(len(lengths)))
    K = (k.sigma_v ** 2 / n) * (cache["hT"] @ cache["hT"].T)
    for l in range(k.n_layers):
        D, Hprev, below = deltas[l], cache["H"][l][:-1], cache["below"][l]
        GD = _time_gram(D, untied)
        K += (k.sigma_w ** 2 / n) * _pair_sum(GD, _time_gram(Hprev, untied), untied)
        K += (k.sigma_u ** 2 / below.shape[2]) * _pair_sum(
            GD, _time_gram(below, untied), untied)
        K += k.sigma_b ** 2 * (GD.sum(axis=0) if untied else GD.sum(axis=(0, 2)))
    return K


def empirical_ntk(X, kernel: RNTK, width: int, rng, untied: bool = False) -> np.ndarray:
    """Empirical NTK of one random width-``width`` RNN at initialisation.

    Draws the parameters (:func:`init_params`), then one initial hidden state per
    sequence (:func:`draw_initial_states`), and returns :func:`ntk_of_params`. Because
    every sequence has its own ``h[l,0]``, the diagonal entries are "same sample" pairs
    and the off-diagonal ones are not, as in ``rntk_numba.gram(X)`` (spec 3.2).

    Parameters
    ----------
    X : sequence set of N sequences
    kernel : RNTK
    width : int
    rng : numpy.random.Generator
    untied : bool, default False
        Fresh W, U, b at every time step (spec 3.3 item 3: the limit is the same RNTK
        when all sequences have the same length).

    Returns
    -------
    ndarray (N, N)
    """
    xs, lengths = _batch(X)
    params = init_params(kernel, xs.shape[2], width, rng, untied=untied,
                         T=xs.shape[0])
    h0s = draw_initial_states(kernel, xs.shape[1], width, rng)
    return ntk_of_params(params, X, h0s)


def network_outputs(X, kernel: RNTK, width: int, rng, n_draws: int = 1,
                    untied: bool = False, chunk: int | None = None) -> np.ndarray:
    """Outputs of ``n_draws`` independent random networks (fresh weights and h[l,0]).

    ``mean(out[:, i] * out[:, j])`` estimates the NNGP kernel ``K(x_i, x_j)`` (spec
    section 3) -- for i == j with the same initial state, otherwise independent ones.

    Parameters
    ----------
    X : sequence set of N sequences
    kernel : RNTK
    width : int
    rng : numpy.random.Generator
    n_draws : int
    untied : bool
        Fresh weights at every step (drawn on the fly).
    chunk : int, optional
        Networks evaluated together (memory ~ chunk * width^2 floats); default chosen
        to keep about 8 M floats (64 MB) per weight array.

    Returns
    -------
    ndarray (n_draws, N)
    """
    _require_last_readout(kernel, "network_outputs")
    xs, lengths = _batch(X)
    Tmax, N, m = xs.shape
    n = int(width)
    k = kernel
    act = k.activation
    if chunk is None:
        chunk = max(1, min(int(n_draws), (8 << 20) // (n * max(n, m))))
    cw = k.sigma_w / math.sqrt(n)
    out = np.empty((int(n_draws), N))
    idx = np.arange(N)
    for start in range(0, int(n_draws), chunk):
        D = min(chunk, int(n_draws) - start)
        below = np.broadcast_to(xs[:, None], (Tmax, D, N, m))
        for l in range(k.n_layers):
            n_in = below.shape[-1]
            cu = k.sigma_u / math.sqrt(n_in)
            h = k.sigma_h * rng.standard_normal((D, N, n))
            if not untied:
                W = rng.standard_normal((D, n, n))
                U = rng.standard_normal((D, n, n_in))
                b = rng.standard_normal((D, 1, n))
            Hl = np.empty((Tmax, D, N, n))
            for t in range(Tmax):
                if untied:
                    W = rng.standard_normal((D, n, n))
                    U = rng.standard_normal((D, n, n_in))
                    b = rng.standard_normal((D, 1, n))
                g = (cw * (h @ W.transpose(0, 2, 1))
                     + cu * (below[t] @ U.transpose(0, 2, 1)) + k.sigma_b * b)
                h = _phi(g, act)
                Hl[t] = h
            below = Hl
        v = rng.standard_normal((D, n))
        hT = below[lengths - 1, :, idx]                   # (N, D, n)
        out[start:start + D] = (k.sigma_v / math.sqrt(n)) * np.einsum(
            "idn,dn->di", hT, v)
    return out


# -- training (spec section 5) ---------------------------------------------------------
class TrainHistory(NamedTuple):
    """Predictions recorded during :func:`train_gd`.

    Attributes
    ----------
    steps : ndarray (R,)
        The gradient steps at which predictions were recorded (0 = initialisation).
    test : ndarray (R, N_test)
        Predictions on ``X_test``.
    train : ndarray (R, N)
        Predictions on the training inputs.
    """

    steps: np.ndarray
    test: np.ndarray
    train: np.ndarray


def train_gd(X, y, kernel: RNTK, width: int, lr: float, steps: int, rng, X_test, *,
             untied: bool = False, record_every: int = 1, init=None) -> TrainHistory:
    """Full-batch gradient descent of a finite RNN on the squared loss.

    The loss is ``1/2 sum_i (f(x_i) - y_i)^2`` (no 1/N), so that for a wide network
    with a small learning rate ``lr`` the training predictions follow
    ``f_s = f_0 + Theta Theta^{-1} (I - exp(-lr Theta s)) (y - f_0)`` (spec section 5)
    with ``s`` the number of steps. The initial hidden states of the training and test
    sequences are drawn once and kept (they are not trained).

    Parameters
    ----------
    X : sequence set (N sequences)
    y : array (N,)
    kernel : RNTK
    width : int
    lr : float
        Learning rate.
    steps : int
        Number of gradient steps.
    rng : numpy.random.Generator
        Draws, in this order: ``init_params``, the training ``h0s``, the test ``h0s``.
    X_test : sequence set (N_test sequences)
    untied : bool, default False
    record_every : int, default 1
        Record predictions every this many steps (and always at 0 and ``steps``).
    init : tuple (RNNParams, h0_train, h0_test), optional
        Start from these instead of drawing (the parameters are copied, not modified).

    Returns
    -------
    TrainHistory
    """
    xs, lengths = _batch(X)
    xt, lengths_t = _batch(X_test)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] != xs.shape[1]:
        raise ValueError(f"train_gd: {xs.shape[1]} sequences but {y.shape[0]} targets")
    if int(steps) < 0 or int(record_every) < 1:
        raise ValueError("train_gd: steps must be >= 0 and record_every >= 1")
    if init is None:
        params = init_params(kernel, xs.shape[2], width, rng, untied=untied,
                             T=max(xs.shape[0], xt.shape[0]))
        h0 = draw_initial_states(kernel, xs.shape[1], width, rng)
        h0t = draw_initial_states(kernel, xt.shape[1], width, rng)
    else:
        params, h0, h0t = init
        params = params.copy()
    h0 = _check(params, xs, lengths, h0)
    h0t = _check(params, xt, lengths_t, h0t)
    rec_steps, rec_test, rec_train = [], [], []
    n = params.width
    for s in range(int(steps) + 1):
        f, cache = _forward(params, xs, lengths, h0)
        if s % int(record_every) == 0 or s == int(steps):
            rec_steps.append(s)
            rec_train.append(f)
            rec_test.append(_forward(params, xt, lengths_t, h0t)[0])
        if s == int(steps):
            break
        r = f - y
        deltas = _backward(params, cache, r)
        gW, gU, gb = _summed_gradients(params, cache, deltas)
        gv = (kernel.sigma_v / math.sqrt(n)) * (r @ cache["hT"])
        for l in range(kernel.n_layers):
            params.W[l] -= lr * gW[l]
            params.U[l] -= lr * gU[l]
            params.b[l] -= lr * gb[l]
        params.v -= lr * gv
    return TrainHistory(np.array(rec_steps), np.array(rec_test), np.array(rec_train))
