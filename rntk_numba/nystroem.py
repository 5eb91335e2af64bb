"""Nyström features of the RNTK: past the exact N x N Gram, with cost linear in N.

``RNTKNystroem`` maps each sequence (any length) to ``n_components`` features whose
inner products approximate the kernel: ``phi(x) = K_mm^(-1/2) k(L, x)``, with ``L`` the
m landmark series chosen at ``fit`` and ``K_mm = k(L, L)``. Linear models on the
features then stand in for kernel machines on the Gram: one N x m cross kernel through
the engine (``n_layers * min(T, T')`` pair-steps per entry, all cores) instead of
N^2 / 2 entries, and a linear learner instead of libsvm's quadratic-to-cubic solve.

What is approximated. Feature vectors are those of *new samples*: ``phi(x) . phi(y)``
approximates the cross kernel ``gram(X, Y)`` (no pair is the same sample, spec 3.2), so
``sigma_h`` enters the self-kernels of cosine scaling only, never a feature; with all
training series as landmarks, ``Phi Phi^T`` equals ``gram(X, X)`` (to rounding) and,
off its diagonal, ``gram(X)``.

Landmarks.
* ``"rpcholesky"`` (default): randomly pivoted Cholesky (Chen, Epperly, Tropp and
  Webber 2022) over a uniform candidate pool, in blocks with rejection sampling (Epperly,
  Tropp and Webber 2023, "accelerated RPCholesky") so that each block of kernel
  columns is one parallel pass over the pool (transform's tile code, the pool's
  self-kernel factors computed once). A pivot is drawn with probability proportional
  to the residual diagonal of the kernel given the pivots so far: near-duplicates of
  chosen series are (almost) never drawn again, rare shapes are. Extra cost: the
  ``pool x m`` kernel block, a fraction of the transform's ``N x m`` at scale; it is
  kept, so the landmark Gram is its landmark rows and, when the pool is the whole
  training set, ``fit_transform`` projects it instead of computing those entries again
  (the same bits as ``fit(X).transform(X)``).
* ``"uniform"``: m training series drawn without replacement.
The measured comparison is in BENCHMARKS.md ("Nyström features").

Landmark rows. A training series that is a landmark is reproduced exactly (its
features carry its whole self-kernel, leverage ~1); others carry the part the
landmarks span. On nearly diagonal kernels that imbalance misleads least-squares
learners: leave ``landmark_indices_`` out of their fit (``sample_weight=0`` in
:class:`rntk_numba.linear.StreamingRidgeClassifier`) when N is much larger than m
(where the landmarks are much of the training set, that drops data instead).
``captured_fraction(X)`` measures the imbalance: the share of each series'
self-kernel its features hold (1 for a landmark).

Numerical rank. The map needs ``K_mm``'s eigenvalues; those below ``eig_floor`` times
the largest are noise (the engine's entries carry ~1e-16 relative rounding, and
~1e-7 for relu pairs of nearly equal series). ``fit`` raises ``ValueError`` if any
eigenvalue is below the floor (the landmarks then hold fewer than m independent
directions: take fewer components, or rpcholesky, which stops at the numerical rank
with the same error), rather than return features dominated by rounding.

Bit-identical results. Kernel entries do not depend on tiling or workers (the engine's
guarantee). The projection ``k(L, x) -> phi(x)`` is a BLAS product whose summation
order could depend on the shape of the block it is given, so it always runs on blocks
of exactly ``PROJECTION_BLOCK`` rows (the last one zero-padded): the features of a
series are the same bits whatever ``n_jobs``, ``chunk_size`` or joblib backend.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from . import _kernels
from ._progress import progress_bar
from .assembly import compute_dense
from .engine import LANES, _scalars, resolve_n_jobs, warm_up
from .inputs import _validate_X
from .kernel_models import _check_scaling, _RNTKParams, _root_self
from .params import RNTK
from .sequences import PackedSequences
from .tiles import TARGET_TILE_STEPS, pair_steps

__all__ = ["RNTKNystroem", "LANDMARK_METHODS", "PROJECTION_BLOCK", "rows_of"]

#: Landmark selection methods.
LANDMARK_METHODS = ("rpcholesky", "uniform")
#: Rows per projection product (fixed, so the features' bits do not depend on chunking).
PROJECTION_BLOCK = 256
#: Default bytes of one chunk's float64 cross kernel (bounds transform's memory).
CHUNK_BYTES = 64 * 2**20
_SCALINGS = ("cosine", "none")
_KINDS = ("ntk", "nngp")


# --------------------------------------------------------------------------- helpers
def rows_of(P: PackedSequences, start: int, stop: int) -> PackedSequences:
    """Series ``start:stop`` of a packed set, as views (no copy)."""
    o0, o1 = int(P.offsets[start]), int(P.offsets[stop])
    return PackedSequences(P.values[o0:o1], P.offsets[start:stop + 1] - o0,
                           P.lengths[start:stop])


def _self_kernels(P, kernel, kind):
    """Same-sample self-kernels ``k(x, x)`` (sigma_h included, spec 3.2)."""
    return _factors(P, kernel, kind)[2]


def _cross_kernel(PX, PY, kernel, kind, *, n_jobs, progress=False,
                  description="gram"):
    """``k(X, Y)`` (no pair the same sample) through the tiled engine."""
    ntk, nngp = compute_dense(PX, PY, kernel, n_jobs=n_jobs, progress=progress,
                              kind=kind, description=description)
    return ntk if kind == "ntk" else nngp


def _check_int(name, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {lo}, got {value!r}")
    if int(value) < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value}")
    return int(value)


def _project(K: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``K @ M`` in blocks of exactly PROJECTION_BLOCK rows (the last zero-padded), so
    that a row's bits never depend on how many rows came with it."""
    n, B = K.shape[0], PROJECTION_BLOCK
    out = np.empty((n, M.shape[1]))
    pad = np.zeros((B, K.shape[1]))
    for a in range(0, n, B):
        b = min(n, a + B)
        if b - a == B:
            np.matmul(K[a:b], M, out=out[a:b])
        else:
            pad[:b - a] = K[a:b]
            pad[b - a:] = 0.0
            out[a:b] = (pad @ M)[:b - a]
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class _Landmarks:
    """The landmarks' side of every transform task, precomputed once per call: their
    packed series (sorted by decreasing length, as the lock-step lanes want them) and
    self-kernel factors (spec 3.1). Picklable."""

    values: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    f1: np.ndarray
    f2: np.ndarray

    @classmethod
    def of(cls, PL: PackedSequences, kernel: RNTK) -> "_Landmarks":
        f1, f2, _ = _factors(PL, kernel, None)
        return cls(PL.values, PL.offsets, PL.lengths, f1, f2)


def _factors(P, kernel, kind):
    """Self-kernel factors of P's positions, and its same-sample self-kernels."""
    sw2, su2, sb2, sh2, sv2 = _scalars(kernel)
    sig, dntk, dnngp = _kernels._self_walk(P.values, P.offsets, P.lengths,
                                           kernel.n_layers, kernel.activation_code,
                                           sw2, su2, sb2, sh2, sv2, kernel.readout_code)
    f1, f2 = _kernels._self_factors(sig, kernel.activation_code)
    return f1, f2, (dntk if kind == "ntk" else dnngp)


def _check_finite(K, pair):
    """ValueError if K has a non-finite entry; ``pair(i, j)`` names its two series."""
    if not np.isfinite(K).all():
        i, j = (int(v) for v in np.argwhere(~np.isfinite(K))[0])
        raise ValueError(f"{pair(i, j)} is not finite: the kernel overflowed float64; "
                         f"use sigma_w closer to sqrt(2), or shorter or rescaled series")


def _rows_per_task(lengths, side_lengths, n_layers, multiple=1):
    """Rows of a strip against ``side_lengths`` columns worth ~TARGET_TILE_STEPS
    pair-steps, a whole multiple of ``multiple`` (at least one)."""
    per_row = max(1.0, float(np.mean(np.minimum(lengths.mean(), side_lengths))))
    per_row *= side_lengths.shape[0] * n_layers
    return max(1, int(TARGET_TILE_STEPS // (per_row * multiple))) * multiple


def _strip_kernel(P, f1, f2, self_k, side, kernel, kind, side_root):
    """``k(P, side)``: one lock-step tile through the numba core, P's self-kernel
    factors given, then (``side_root`` given) divided by the rows' and the columns'
    self-kernel roots, in that order.

    The tile is the one ``engine.compute_tile`` would run for these rows and columns
    (columns already by decreasing length), without its reordering copies; entries do
    not depend on which rows and columns share a tile."""
    n, m = P.n, side.lengths.shape[0]
    values = np.ascontiguousarray(np.concatenate([P.values, side.values]))
    offsets = np.concatenate([P.offsets[:-1], P.offsets[-1] + side.offsets])
    lengths = np.concatenate([P.lengths, side.lengths])
    f1 = np.ascontiguousarray(np.concatenate([f1, side.f1], axis=1))
    f2 = np.ascontiguousarray(np.concatenate([f2, side.f2], axis=1))
    ntk, nngp = np.empty((n, m)), np.empty((n, m))
    sw2, su2, sb2, _, sv2 = _scalars(kernel)
    _kernels._tile_lockstep(values, offsets, lengths, f1, f2,
                            np.arange(n, dtype=np.int64),
                            np.arange(n, n + m, dtype=np.int64), False,
                            kernel.n_layers, kernel.activation_code, sw2, su2, sb2, sv2,
                            kernel.readout_code, LANES, ntk, nngp)
    K = ntk if kind == "ntk" else nngp
    if side_root is not None:
        K /= _root_self(self_k)[:, None]
        K /= side_root[None, :]
    return K


def _strip_features(P, start, side, kernel, kind, landmark_root, M, dtype):
    """Features of the series P (rows ``start ...`` of X): their kernel to all
    landmarks (the landmarks' self-kernel factors computed once per call), scaled,
    projected. One picklable task for any joblib backend. Returns ``(features,
    pair_steps)``."""
    f1, f2, self_k = _factors(P, kernel, kind)
    K = _strip_kernel(P, f1, f2, self_k, side, kernel, kind, landmark_root)
    _check_finite(K, lambda i, j: f"the kernel between series {start + i} of X and "
                                  f"landmark {j}")
    cost = pair_steps(P.lengths, side.lengths, kernel.n_layers)
    return _project(K, M).astype(dtype, copy=False), cost


# --------------------------------------------------------------------------- landmarks
def _pool_strip(P, f1, f2, self_k, s0, s1, side, kernel, kind, side_root):
    """``k(P[s0:s1], side)`` with the strip's factors sliced from the pool's."""
    o0, o1 = int(P.offsets[s0]), int(P.offsets[s1])
    return _strip_kernel(rows_of(P, s0, s1), f1[:, o0:o1], f2[:, o0:o1],
                         self_k[s0:s1], side, kernel, kind, side_root)


def _pool_columns(P, factors, PC, kernel, kind, pc_root, *, n_jobs):
    """``k(P, PC)`` as transform computes such entries (scaled when ``pc_root``, the
    roots of PC's self-kernels, is given), in row strips on the workers; P's
    self-kernel factors (``factors``) are computed once per selection, not per block."""
    from joblib import Parallel, delayed

    f1, f2, self_k = factors
    corder = np.argsort(-PC.lengths, kind="stable")    # lanes walk alike
    side = _Landmarks.of(PC.subset(corder), kernel)
    side_root = None if pc_root is None else pc_root[corder]
    step = _rows_per_task(P.lengths, PC.lengths, kernel.n_layers, multiple=16)
    bounds = [(a, min(P.n, a + step)) for a in range(0, P.n, step)]
    args = (side, kernel, kind, side_root)
    workers = resolve_n_jobs(n_jobs)
    warm_up(P.m, kernel.activation_code)
    if workers == 1 or len(bounds) == 1:
        parts = [_pool_strip(P, f1, f2, self_k, a, b, *args) for a, b in bounds]
    else:
        parts = Parallel(n_jobs=workers, prefer="threads")(
            delayed(_pool_strip)(P, f1, f2, self_k, a, b, *args) for a, b in bounds)
    G = np.empty((P.n, PC.n))
    G[:, corder] = np.concatenate(parts)
    return G


def _rpcholesky(P, kernel, kind, scaling, m, rng, *, block, n_jobs, bar, tol,
                labels=None):
    """Pivots (indices into P) of block randomly pivoted Cholesky with rejection, and
    the pivots' kernel columns against P, ``(P.n, m)`` in pivot order, scaled as
    ``scaling`` says (the entries ``transform`` computes for these pairs, same bits).

    Each round draws ``block`` proposals i.i.d. with probability proportional to the
    residual diagonal, computes their kernel columns against the whole pool in one
    engine call, and runs pivoted Cholesky on the proposals in order, accepting one
    with probability (its residual now) / (its residual when drawn): the accepted
    pivots have the law of sequential RPCholesky. Raises ValueError when the residual
    trace falls below ``tol`` times the initial one before m pivots are found.
    ``labels``: P's positions in the training set, for error messages.
    """
    n = P.n
    labels = np.arange(n) if labels is None else labels
    factors = _factors(P, kernel, kind)
    d0 = factors[2].copy()
    if scaling == "cosine":
        root = _root_self(d0)
        d0 = np.where(d0 > 0, 1.0, 0.0)
    else:
        root = None
    d = d0.copy()
    trace0 = float(d0.sum())
    if not (np.isfinite(trace0) and trace0 > 0):
        raise ValueError("landmark selection: the kernel's self-kernels are not "
                         "positive and finite on the candidate pool")
    F = np.zeros((n, m))                  # Cholesky factor of the residual, columns 0..k
    cols = np.empty((n, m))               # the pivots' kernel columns, as computed
    pivots: list[int] = []
    stalled = 0
    while len(pivots) < m:
        if float(d.sum()) <= tol * trace0:
            _rank_error(len(pivots), m, "rpcholesky", tol)
        b = min(block, m - len(pivots))
        p = np.clip(d, 0.0, None)
        prop = rng.choice(n, size=b, p=p / p.sum())
        prop = np.array(list(dict.fromkeys(int(i) for i in prop)), dtype=np.int64)
        d_drawn = d[prop].copy()
        Pprop = P.subset(prop)
        # P as rows, the proposals as columns, scaled rows first: as transform's strips,
        # so the accepted columns are its kernel entries bit for bit
        G = _pool_columns(P, factors, Pprop, kernel, kind,
                          None if root is None else root[prop], n_jobs=n_jobs)
        if bar is not None:
            bar.update(pair_steps(P.lengths, Pprop.lengths, kernel.n_layers))
        _check_finite(G, lambda i, j: f"landmark selection: the kernel between training "
                                      f"series {labels[i]} and {labels[prop[j]]}")
        raw = G.copy()
        k = len(pivots)
        G -= F[:, :k] @ F[prop, :k].T               # residual columns, (n, b)
        u = rng.random(prop.size)
        accepted = 0
        for a in range(prop.size):
            s = int(prop[a])
            r = G[s, a]
            if not (len(pivots) < m and r > tol * d0[s] and u[a] * d_drawn[a] < r):
                # the residual as computed (cross pairs): where it differs from the
                # one derived from same-sample self-kernels (sigma_h, rounding), the
                # computed one is the kernel's; a near-duplicate is not drawn again
                d[s] = max(r, 0.0)
                continue
            g = G[:, a] / math.sqrt(r)
            F[:, len(pivots)] = g
            cols[:, len(pivots)] = raw[:, a]
            pivots.append(s)
            accepted += 1
            if a + 1 < prop.size:
                G[:, a + 1:] -= np.outer(g, g[prop[a + 1:]])
            d -= g * g
            d[s] = 0.0
        np.clip(d, 0.0, None, out=d)
        d[pivots] = 0.0
        stalled = 0 if accepted else stalled + 1
        if stalled >= 20:
            _rank_error(len(pivots), m, "rpcholesky", tol)
    return np.array(pivots, dtype=np.int64), cols


def _rank_error(r, m, method, floor):
    raise ValueError(
        f"the landmark Gram is numerically rank deficient: {method} landmarks span only "
        f"{r} of the {m} requested directions (relative floor {floor:g}); the training "
        f"series hold fewer independent shapes than n_components (e.g. duplicates). "
        f"Use a smaller n_components"
        + (", or landmarks='rpcholesky'" if method == "uniform" else "") + ".")


# --------------------------------------------------------------------------- estimator
class RNTKNystroem(_RNTKParams, TransformerMixin, BaseEstimator):
    """Nyström features of the RNTK (or its NNGP) for sequence sets of any lengths.

    Parameters
    ----------
    sigma_w, sigma_u, sigma_b, sigma_h, sigma_v, n_layers, activation, readout
        The RNTK hyperparameters (see :class:`rntk_numba.RNTK`).
    kind : {"ntk", "nngp"}, default "ntk"
    n_components : int, default 256
        Number of landmarks m = number of features.
    landmarks : {"rpcholesky", "uniform"}, default "rpcholesky"
        How landmarks are chosen (module docstring).
    landmark_pool : int, optional
        Candidates for ``"rpcholesky"``: a uniform sample of this many training series
        (default ``min(N, max(8 m, 4096))``). Costs ``pool x m`` kernel entries, and
        16 bytes per entry of memory while ``fit`` runs.
    random_state : int, Generator or None
    kernel_scaling : {"cosine", "none"}, default "cosine"
        "cosine": ``k(x, y) / sqrt(k(x, x) k(y, y))`` with same-sample self-kernels, as
        the estimators' option (features then have norm <= ~1 whatever the length);
        "none": the raw kernel.
    dtype : {"float64", "float32"}, default "float64"
        Of the features (the kernel and the projection are computed in float64).
    eig_floor : float, default 1e-12
        Relative eigenvalue floor of the landmark Gram (module docstring).
    chunk_size : int, optional
        Rows per transform chunk (default: a 64 MiB float64 cross kernel). Memory of
        ``transform`` is O(chunk_size x m) beyond its output. Never changes a bit.
    n_jobs : int, optional
        Workers (default all cores, or a configured joblib backend's). Never changes a bit.
    cache : str, path or GramStore, optional
        The landmark Gram of ``"uniform"`` landmarks is stored / looked up there
        (``"rpcholesky"`` has it from the selection's kernel columns).
    progress : bool, default False
        Progress bars over pair-steps (landmark selection, landmark Gram, one bar per
        ``transform`` call).

    Attributes
    ----------
    landmarks_ : PackedSequences
        The m landmark series, packed.
    landmark_indices_ : ndarray (m,) int
        Their positions in the training set, in the order of the features (by
        decreasing length, then position).
    normalization_ : ndarray (m, m)
        ``K_mm^(-1/2)`` (symmetric).
    eigenvalues_ : ndarray (m,)
        Of the (scaled) landmark Gram, ascending.
    landmark_self_root_ : ndarray (m,) or None
        ``sqrt`` of the landmarks' self-kernels ("cosine").
    n_channels_ : int
    kernel_ : RNTK
    fit_time_ : dict
        Seconds spent choosing landmarks and on the landmark Gram.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import RidgeClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> rng = np.random.default_rng(0)
    >>> X = [np.sin(np.linspace(0, f, T)) for f, T in zip([1, 1, 6, 6] * 5,
    ...                                                  rng.integers(20, 40, 20))]
    >>> y = [0, 0, 1, 1] * 5
    >>> model = make_pipeline(RNTKNystroem(n_components=8, random_state=0),
    ...                       RidgeClassifier(alpha=1e-3)).fit(X, y)
    >>> model.predict([np.sin(np.linspace(0, 6, 33))]).tolist()
    [1]
    """

    def __init__(self, sigma_w=math.sqrt(2.0), sigma_u=1.0, sigma_b=0.0, sigma_h=0.0,
                 sigma_v=1.0, n_layers=1, activation="relu", readout="last", kind="ntk",
                 n_components=256, landmarks="rpcholesky", landmark_pool=None,
                 random_state=None, kernel_scaling="cosine", dtype="float64",
                 eig_floor=1e-12, chunk_size=None, n_jobs=None, cache=None,
                 progress=False):
        self.sigma_w = sigma_w
        self.sigma_u = sigma_u
        self.sigma_b = sigma_b
        self.sigma_h = sigma_h
        self.sigma_v = sigma_v
        self.n_layers = n_layers
        self.activation = activation
        self.readout = readout
        self.kind = kind
        self.n_components = n_components
        self.landmarks = landmarks
        self.landmark_pool = landmark_pool
        self.random_state = random_state
        self.kernel_scaling = kernel_scaling
        self.dtype = dtype
        self.eig_floor = eig_floor
        self.chunk_size = chunk_size
        self.n_jobs = n_jobs
        self.cache = cache
        self.progress = progress

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.landmarks not in LANDMARK_METHODS:
            raise ValueError(f"landmarks must be one of {LANDMARK_METHODS}, got "
                             f"{self.landmarks!r}")
        scaling = _check_scaling(self.kernel_scaling)
        if scaling not in _SCALINGS:
            raise ValueError(f"kernel_scaling must be one of {_SCALINGS} for Nyström "
                             f"features, got {scaling!r} ('trace' rescales by the "
                             f"training Gram's diagonal, which features do not need)")
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float64 or float32, got {self.dtype!r}")
        if not (isinstance(self.eig_floor, numbers.Real) and
                0 <= float(self.eig_floor) < 1):
            raise ValueError(f"eig_floor must be a number in [0, 1), got "
                             f"{self.eig_floor!r}")
        m = _check_int("n_components", self.n_components)
        if self.chunk_size is not None:
            _check_int("chunk_size", self.chunk_size)
        if self.landmark_pool is not None:
            _check_int("landmark_pool", self.landmark_pool)
        return m

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Choose the landmarks and compute ``K_mm^(-1/2)``.

        Parameters
        ----------
        X : sequence set of N >= n_components series (any layout ``gram`` takes)
        y : ignored

        Returns
        -------
        self
        """
        self._fit(_validate_X(X))
        return self

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``, the same bits, with less work.

        When the landmark candidates are the whole of X (rpcholesky with
        ``landmark_pool`` covering it: N <= max(8 m, 4096) by default), the selection has
        already computed every kernel entry between X and the landmarks; they are
        projected instead of computed a second time.
        """
        PX = _validate_X(X)
        cols = self._fit(PX)
        if cols is None:
            return self.transform(PX)
        return _project(cols, self.normalization_).astype(np.dtype(self.dtype),
                                                          copy=False)

    def _fit(self, PX):
        """Fit on the packed set PX; return the kernel between all of PX and the
        landmarks (scaled, columns in feature order) when the selection computed it,
        else None."""
        m = self._check_params()
        kernel = self._kernel()
        if m > PX.n:
            raise ValueError(f"n_components={m} is larger than the training set "
                             f"({PX.n} series): at most {PX.n} landmarks can be chosen")
        rng = np.random.default_rng(self._seed())
        t0 = time.perf_counter()
        cols = None
        if self.landmarks == "uniform":
            idx = np.sort(rng.choice(PX.n, size=m, replace=False))
        else:
            pool_n = (min(PX.n, max(8 * m, 4096)) if self.landmark_pool is None
                      else min(PX.n, max(m, int(self.landmark_pool))))
            pool = (np.arange(PX.n) if pool_n == PX.n
                    else np.sort(rng.choice(PX.n, size=pool_n, replace=False)))
            PP = PX if pool_n == PX.n else PX.subset(pool)
            with progress_bar(self.progress,
                              pair_steps(PP.lengths, PP.lengths[:m], kernel.n_layers),
                              "landmarks") as bar:
                piv, cols = _rpcholesky(PP, kernel, self.kind, self.kernel_scaling, m,
                                        rng, block=min(64, m), n_jobs=self.n_jobs,
                                        bar=bar, tol=max(float(self.eig_floor), 1e-14),
                                        labels=pool)
            idx = np.sort(pool[piv])
        # landmarks by decreasing length: the tiles' column blocks (the lock-step
        # lanes) then hold series of similar lengths and idle less
        idx = idx[np.argsort(-PX.lengths[idx], kind="stable")]
        t1 = time.perf_counter()
        PL = PX.subset(idx)
        root = None
        if self.kernel_scaling == "cosine":
            root = _root_self(_self_kernels(PL, kernel, self.kind))
        if cols is None:
            K = self._landmark_gram(PL, kernel)
            if root is not None:
                K = K / root[:, None] / root[None, :]
        else:
            # rpcholesky computed k(pool, landmarks) already (scaled): the landmark
            # Gram is its landmark rows, and the columns go into feature order
            pos = np.searchsorted(pool, idx)          # the landmarks' rows in the pool
            order = np.argsort(piv)
            feature_cols = order[np.searchsorted(piv[order], pos)]
            K = cols[np.ix_(pos, feature_cols)]
            # the whole block only when it holds every row of X
            cols = cols[:, feature_cols] if pool_n == PX.n else None
        t2 = time.perf_counter()
        _check_finite(K, lambda i, j: f"the landmark Gram's entry ({i}, {j}), between "
                                      f"training series {idx[i]} and {idx[j]},")
        K = 0.5 * (K + K.T)
        lam, V = np.linalg.eigh(K)
        floor = float(self.eig_floor) * max(float(lam[-1]), 0.0)
        if lam[-1] <= 0 or lam[0] <= floor:
            _rank_error(int(np.sum(lam > floor)), m, self.landmarks, self.eig_floor)
        self.normalization_ = (V / np.sqrt(lam)) @ V.T
        self.eigenvalues_ = lam
        self.landmarks_ = PL
        self.landmark_indices_ = idx
        self.landmark_self_root_ = root
        self.n_channels_ = PX.m
        self.kernel_ = kernel
        self._n_features_out = m
        self.fit_time_ = {"landmarks": t1 - t0, "landmark_gram": t2 - t1}
        return cols

    def _seed(self):
        rs = self.random_state
        if isinstance(rs, np.random.Generator):
            return rs.integers(2**63)
        if isinstance(rs, np.random.RandomState):
            return rs.randint(2**31)
        return rs

    def _landmark_gram(self, PL, kernel):
        """``k(L, L)`` as a cross kernel (the landmarks as new samples)."""
        if self.cache is not None:
            from .gram import gram
            return np.array(gram(PL, PL, kernel=kernel, kind=self.kind,
                                 n_jobs=self.n_jobs, cache=self.cache,
                                 progress=self.progress))
        return _cross_kernel(PL, PL, kernel, self.kind, n_jobs=self.n_jobs,
                             progress=self.progress, description="landmark gram")

    # ------------------------------------------------------------------ transform
    def _check_X(self, X) -> PackedSequences:
        check_is_fitted(self, "normalization_")
        PX = _validate_X(X)
        if PX.m != self.n_channels_:
            raise ValueError(f"X has {PX.m} channels per time step, but this "
                             f"RNTKNystroem was fitted on series with {self.n_channels_}")
        return PX

    def _chunk_rows(self) -> int:
        if self.chunk_size is not None:
            return _check_int("chunk_size", self.chunk_size)
        m = self.landmarks_.n
        return max(PROJECTION_BLOCK,
                   CHUNK_BYTES // (8 * m) // PROJECTION_BLOCK * PROJECTION_BLOCK)

    def _chunks(self, PX, bar):
        """Yield ``(start, stop, features)`` over row chunks of PX, in order.

        The work is cut into row strips (whole multiples of ``PROJECTION_BLOCK`` rows,
        about ``TARGET_TILE_STEPS`` pair-steps each) against all landmarks; each task
        computes its strip's kernel AND projects it, so the projection runs on the
        workers beside the kernels, and one ordered joblib stream serves the whole
        call (no barrier between chunks). BLAS runs single-threaded meanwhile (the
        workers already use every core; results do not depend on BLAS threads).
        """
        from joblib import Parallel, delayed
        from threadpoolctl import threadpool_limits

        kernel, PL = self.kernel_, self.landmarks_
        step = self._chunk_rows()
        strip = self._strip_rows(PX)
        args = (_Landmarks.of(PL, kernel), kernel, self.kind, self.landmark_self_root_,
                self.normalization_, np.dtype(self.dtype).str)
        bounds = [(a, min(PX.n, a + step)) for a in range(0, PX.n, step)]
        tasks = [(s0, min(b, s0 + strip)) for a, b in bounds for s0 in range(a, b, strip)]
        workers = resolve_n_jobs(self.n_jobs)
        warm_up(PX.m, kernel.activation_code)
        jobs = (delayed(_strip_features)(rows_of(PX, s0, s1), s0, *args)
                for s0, s1 in tasks)
        with threadpool_limits(1, user_api="blas"):
            if workers == 1 or len(tasks) <= 1:
                results = (_strip_features(rows_of(PX, s0, s1), s0, *args)
                           for s0, s1 in tasks)
            else:
                results = Parallel(n_jobs=workers, prefer="threads",
                                   return_as="generator")(jobs)
            it = iter(results)
            for a, b in bounds:
                parts = []
                while sum(p.shape[0] for p in parts) < b - a:
                    F, cost = next(it)
                    parts.append(F)
                    if bar is not None:
                        bar.update(cost)
                yield a, b, parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _strip_rows(self, PX) -> int:
        """Rows per task: multiples of PROJECTION_BLOCK, ~TARGET_TILE_STEPS pair-steps."""
        return _rows_per_task(PX.lengths, self.landmarks_.lengths, self.kernel_.n_layers,
                              multiple=PROJECTION_BLOCK)

    def _bar(self, PX, desc="nystroem"):
        """A context: the bar over the pair-steps of PX against the landmarks."""
        return progress_bar(self.progress,
                            pair_steps(PX.lengths, self.landmarks_.lengths,
                                       self.kernel_.n_layers), desc)

    def transform(self, X, out=None):
        """Features of X, ``(N, n_components)``, computed in chunks of bounded memory.

        Parameters
        ----------
        X : sequence set (any layout ``gram`` takes)
        out : array-like (N, n_components), optional
            Written chunk by chunk (``out[a:b] = features``): an ``np.memmap`` or an
            HDF5 dataset makes a feature matrix larger than memory. Its dtype should
            be ``dtype``'s (values are cast on assignment).

        Returns
        -------
        ndarray (N, n_components) of ``dtype``, or ``out``.
        """
        PX = self._check_X(X)
        m = self.landmarks_.n
        if out is not None:
            shape = tuple(getattr(out, "shape", ()))
            if shape != (PX.n, m):
                raise ValueError(f"out has shape {shape}, expected {(PX.n, m)}")
        else:
            out = np.empty((PX.n, m), dtype=np.dtype(self.dtype))
        with self._bar(PX) as bar:
            for a, b, F in self._chunks(PX, bar):
                out[a:b] = F
        return out

    def transform_to_file(self, X, path, *, resume=True):
        """Write the features of X to a ``.npy`` file, resumably; return it mapped.

        For feature matrices larger than memory, or transforms long enough to be
        interrupted. Chunks are written into the preallocated file and, after each
        one is flushed, ``<path>.progress.json`` records the rows done (replaced
        atomically) with fingerprints of X and of this fitted map. A rerun with the
        same X and map (``resume=True``) continues at the first unfinished chunk and
        gives the same bits as an uninterrupted run; anything else starts over.

        Parameters
        ----------
        X : sequence set
        path : str or path, the ``.npy`` file
        resume : bool, default True

        Returns
        -------
        numpy.memmap (N, n_components) of ``dtype``, read-only.
        """
        return self._to_file(self._check_X(X), path, resume)[0]

    def _to_file(self, PX, path, resume=True, announce=None):
        """``transform_to_file`` on the packed PX: ``(memmap, rows already written)``;
        ``announce(rows)`` is called before any work (for a caller's message)."""
        import json
        import os
        from pathlib import Path

        path = Path(path)
        state_path = path.with_name(path.name + ".progress.json")
        m = self.landmarks_.n
        dtype = np.dtype(self.dtype)
        want, start = self._resume_point(PX, path, resume)
        if announce is not None:
            announce(start)
        if start == 0:
            state_path.unlink(missing_ok=True)
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype,
                                           shape=(PX.n, m))
        else:
            mm = np.lib.format.open_memmap(path, mode="r+")
            if mm.shape != (PX.n, m) or mm.dtype != dtype:
                raise ValueError(f"{path}: holds {mm.shape} {mm.dtype}, expected "
                                 f"{(PX.n, m)} {dtype} (remove it to start over)")
        with self._bar(PX) as bar:
            if bar is not None:
                bar.update(pair_steps(PX.lengths[:start], self.landmarks_.lengths,
                                      self.kernel_.n_layers))
            if start < PX.n:
                rest = rows_of(PX, start, PX.n)
                for a, b, F in self._chunks(rest, bar):
                    mm[start + a:start + b] = F
                    mm.flush()
                    tmp = state_path.with_name(state_path.name + ".tmp")
                    tmp.write_text(json.dumps({**want, "rows_done": start + b}))
                    os.replace(tmp, state_path)
        del mm
        return np.load(path, mmap_mode="r"), start

    def _resume_point(self, PX, path, resume=True):
        """(state, rows already written) of ``transform_to_file(PX, path)``: the rows
        its progress file records when X, the map, dtype and chunking all match."""
        import json
        from pathlib import Path
        path = Path(path)
        state_path = path.with_name(path.name + ".progress.json")
        want = {"format": "rntk-nystroem-features-v1", "n": PX.n,
                "m": self.landmarks_.n, "dtype": np.dtype(self.dtype).str,
                "chunk": self._chunk_rows(), "data": PX.fingerprint(),
                "map": self._map_fingerprint()}
        start = 0
        if resume and path.exists() and state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                if {k: state.get(k) for k in want} == want:
                    start = int(state["rows_done"])
            except (ValueError, KeyError, TypeError):
                start = 0
        return want, start

    def _map_fingerprint(self) -> str:
        import hashlib
        h = hashlib.sha256(b"rntk-nystroem-map-v1")
        h.update(self.kernel_.canonical.encode())
        h.update(f"{self.kind}|{self.kernel_scaling}".encode())
        h.update(self.landmarks_.fingerprint().encode())
        h.update(np.ascontiguousarray(self.normalization_).tobytes())
        return h.hexdigest()

    def transform_batches(self, X, y=None):
        """Iterate over the features of X chunk by chunk, for ``partial_fit`` learners.

        Yields ``(features, y[start:stop])`` (or ``features`` alone when ``y`` is None)
        for consecutive chunks of ``chunk_size`` series, in order; memory stays at one
        chunk. Each pass recomputes the kernel: for several epochs, write the features
        once with ``transform(X, out=np.lib.format.open_memmap(...))`` and iterate
        over that instead.
        """
        PX = self._check_X(X)
        if y is not None:
            y = np.asarray(y)
            if y.shape[0] != PX.n:
                raise ValueError(f"y has {y.shape[0]} entries, X has {PX.n} series")
        with self._bar(PX) as bar:
            for a, b, F in self._chunks(PX, bar):
                yield F if y is None else (F, y[a:b])

    def captured_fraction(self, X):
        """Share of each series' self-kernel that its features hold: a check of m.

        ``|phi(x)|^2 / k(x, x)`` per series, in [0, 1] (``k`` cosine-scaled when
        ``kernel_scaling="cosine"``, where ``k(x, x) = 1``): 1 for a landmark, and
        ``1 -`` it is the Nyström residual's diagonal relative to ``k(x, x)``. Its mean
        over held-out series estimates the relative trace error of the approximate
        Gram without computing the exact one. Near 1 (FordA with sigma_b = 2: 0.97 at
        m = 1800), the features hold the kernel; far below (FordA with sigma_w = sqrt 2,
        sigma_b = 0, a nearly diagonal kernel: 0.08), no m much below N will, and a
        less diagonal kernel (larger sigma_b) or the exact estimators are the better
        choice (BENCHMARKS.md, "Nyström features"). Costs one transform, chunk by
        chunk (memory stays at one chunk). With ``sigma_h > 0`` the self-kernel is the
        same-sample one (spec 3.2), which the cross kernel never reaches, so even a
        landmark stays below 1.

        Returns
        -------
        ndarray (N,) float64
        """
        PX = self._check_X(X)
        sq = np.empty(PX.n)
        with self._bar(PX, desc="captured") as bar:
            for a, b, F in self._chunks(PX, bar):
                sq[a:b] = np.einsum("ij,ij->i", F, F, dtype=np.float64)
        if self.kernel_scaling == "cosine":
            return sq
        return sq / _self_kernels(PX, self.kernel_, self.kind)

    def get_feature_names_out(self, input_features=None):
        """``rntknystroem0``, ``rntknystroem1``, ... (one per landmark)."""
        check_is_fitted(self, "normalization_")
        return np.array([f"rntknystroem{i}" for i in range(self.landmarks_.n)],
                        dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.input_tags.pairwise = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags
