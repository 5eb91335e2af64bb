"""From packed sequences to tiles of the Gram matrix.

``prepare`` does the per-sequence work once (self-kernels, their factors, the diagonal);
``compute_tile`` is the one picklable task every executor runs (threads, processes, a
Dask cluster); ``run_tiles`` streams finished tiles to a callback through joblib's
configured backend.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import threading

import numpy as np

from . import _kernels
from .params import RNTK
from .sequences import PackedSequences
from .tiles import Tile, plan_tiles

__all__ = ["GramProblem", "prepare", "compute_tile", "run_tiles", "default_n_jobs",
           "warm_up", "resolve_n_jobs", "LANES"]

#: Pairs run in lock-step per batch (a multiple of the SIMD width; 64 measured best).
LANES = 64


def default_n_jobs() -> int:
    """Cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_n_jobs(n_jobs=None) -> int:
    """The number of parallel workers a call will use.

    ``None``: the ``n_jobs`` of an active ``joblib.parallel_config``, else every worker
    of a configured backend (e.g. all threads of a Dask cluster), else all local cores
    (threads running serial numba kernels: one per core, no oversubscription).
    Negative values count back from the backend's maximum as in joblib.
    """
    from joblib.parallel import get_active_backend

    if n_jobs is not None:
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral):
            raise TypeError(f"n_jobs must be an integer or None, got {n_jobs!r}")
        n_jobs = int(n_jobs)
        if n_jobs == 0:
            raise ValueError("n_jobs must be a non-zero integer (or None for all cores)")
    backend, configured = get_active_backend(prefer="threads")
    if n_jobs is None:
        if configured not in (None, 1):          # set by joblib.parallel_config
            n_jobs = configured
        elif _is_default(backend):
            return default_n_jobs()
        else:
            return max(1, backend.effective_n_jobs(-1))
    if n_jobs < 0:
        total = default_n_jobs() if _is_default(backend) else backend.effective_n_jobs(-1)
        return max(1, total + 1 + n_jobs)
    return n_jobs


def _is_default(backend) -> bool:
    from joblib._parallel_backends import ThreadingBackend
    return type(backend) is ThreadingBackend


@dataclasses.dataclass(frozen=True, eq=False)
class GramProblem:
    """Everything a tile needs: the packed sequences of rows (and columns) side by side
    and their per-sequence precomputations. Picklable; arrays are read-only in use."""

    kernel: RNTK
    values: np.ndarray        # (total_T, m): rows' series, then columns' (cross case)
    offsets: np.ndarray       # (n_rows [+ n_cols] + 1,)
    lengths: np.ndarray
    f1: np.ndarray            # (L, total_T) self-kernel factors (see _kernels)
    f2: np.ndarray
    diag_ntk: np.ndarray      # (n_rows,) same-sample diagonal (symmetric case)
    diag_nngp: np.ndarray
    n_rows: int
    n_cols: int
    symmetric: bool

    @property
    def col_offset(self) -> int:
        return 0 if self.symmetric else self.n_rows

    @property
    def row_lengths(self) -> np.ndarray:
        return self.lengths[:self.n_rows]

    @property
    def col_lengths(self) -> np.ndarray:
        return self.lengths[self.col_offset:self.col_offset + self.n_cols]

    def plan(self, tile_size=None, n_workers=1) -> list[Tile]:
        return plan_tiles(self.row_lengths,
                          None if self.symmetric else self.col_lengths,
                          n_layers=self.kernel.n_layers, tile_size=tile_size,
                          n_workers=n_workers)


def _scalars(k: RNTK):
    return (k.sigma_w ** 2, k.sigma_u ** 2, k.sigma_b ** 2, k.sigma_h ** 2,
            k.sigma_v ** 2)


def prepare(X: PackedSequences, Y: PackedSequences | None, kernel: RNTK) -> GramProblem:
    """Per-sequence precomputation (spec 3.1): self-kernels once per sequence."""
    symmetric = Y is None
    if symmetric:
        values, offsets, lengths = X.values, X.offsets, X.lengths
    else:
        values = np.ascontiguousarray(np.concatenate([X.values, Y.values]))
        offsets = np.concatenate([X.offsets[:-1], X.offsets[-1] + Y.offsets])
        lengths = np.concatenate([X.lengths, Y.lengths])
    sw2, su2, sb2, sh2, sv2 = _scalars(kernel)
    sig, dntk, dnngp = _kernels._self_walk(values, offsets, lengths, kernel.n_layers,
                                           kernel.activation_code, sw2, su2, sb2,
                                           sh2, sv2, kernel.readout_code)
    f1, f2 = _kernels._self_factors(sig, kernel.activation_code)
    n_rows = X.n
    return GramProblem(kernel, values, offsets, lengths, f1, f2, dntk[:n_rows],
                       dnngp[:n_rows], n_rows, X.n if symmetric else Y.n, symmetric)


def compute_tile(problem: GramProblem, tile: Tile):
    """Compute one tile. Returns ``(tile, ntk_block, nngp_block)``, float64 blocks of
    shape ``tile.shape``. A plain function of picklable arguments (any joblib backend).
    """
    k = problem.kernel
    rows = np.arange(tile.r0, tile.r1, dtype=np.int64)
    cols = np.arange(tile.c0, tile.c1, dtype=np.int64) + problem.col_offset
    # columns by decreasing length (stable: deterministic), so lanes walk alike
    corder = np.argsort(-problem.lengths[cols], kind="stable")
    cols = cols[corder]
    rorder = corder if tile.diagonal else np.arange(rows.size)
    rows = rows[rorder]
    ntk_s = np.empty(tile.shape)
    nngp_s = np.empty(tile.shape)
    sw2, su2, sb2, _, sv2 = _scalars(k)
    _kernels._tile_lockstep(problem.values, problem.offsets, problem.lengths,
                            problem.f1, problem.f2, rows, cols, tile.diagonal,
                            k.n_layers, k.activation_code, sw2, su2, sb2, sv2,
                            k.readout_code, LANES, ntk_s, nngp_s)
    ntk = np.empty(tile.shape)
    nngp = np.empty(tile.shape)
    if tile.diagonal:
        iu, ju = np.triu_indices(tile.shape[0], k=1)
        ri, cj = rorder[iu], corder[ju]       # local positions in the tile
        for src, dst in ((ntk_s, ntk), (nngp_s, nngp)):
            vals = src[iu, ju]
            dst[ri, cj] = vals
            dst[cj, ri] = vals
        d = np.arange(tile.shape[0])
        ntk[d, d] = problem.diag_ntk[tile.r0:tile.r1]
        nngp[d, d] = problem.diag_nngp[tile.r0:tile.r1]
    else:
        ntk[:, corder] = ntk_s
        nngp[:, corder] = nngp_s
    return tile, ntk, nngp


_warm_lock = threading.Lock()
_warm_done: set = set()


def warm_up(m: int, activation_code: int) -> None:
    """Compile / load the jitted kernels in this process before any worker thread does
    (numba compiles once per signature; cache=True makes this a disk load)."""
    key = (m > 0, activation_code)
    with _warm_lock:
        if key in _warm_done:
            return
        X = PackedSequences(np.ones((3, 1)), np.array([0, 1, 3]), np.array([1, 2]))
        p = prepare(X, None, RNTK(activation=("relu", "erf")[activation_code]))
        compute_tile(p, p.plan()[0])
        _warm_done.add(key)


def run_tiles(problem: GramProblem, tiles, on_tile, *, n_jobs=None, progress=False,
              description="gram"):
    """Compute ``tiles`` and call ``on_tile(tile, ntk_block, nngp_block)`` in the
    calling thread as each finishes (any order).

    Tiles run through joblib with ``prefer="threads"``: by default serial ``nogil``
    numba kernels in ``n_jobs`` threads (no oversubscription: the kernels themselves
    are single-threaded). A backend configured by the caller
    (``with joblib.parallel_config(backend="loky" | "dask"):``) takes precedence.
    """
    from joblib import Parallel, delayed

    tiles = sorted(tiles, key=lambda t: (-t.cost, t.index))   # longest first
    n_jobs = resolve_n_jobs(n_jobs)
    warm_up(problem.values.shape[1], problem.kernel.activation_code)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(t.cost for t in tiles), unit="step", unit_scale=True,
                   desc=description, smoothing=0.1)
    try:
        if n_jobs == 1 or len(tiles) <= 1:
            results = (compute_tile(problem, t) for t in tiles)
        else:
            results = Parallel(n_jobs=n_jobs, prefer="threads",
                               return_as="generator_unordered")(
                delayed(compute_tile)(problem, t) for t in tiles)
        for tile, ntk, nngp in results:
            on_tile(tile, ntk, nngp)
            if bar is not None:
                bar.update(tile.cost)
    finally:
        if bar is not None:
            bar.close()
