"""Assembling Gram matrices from tiles: what ``gram`` and the store both need.

Owns the argument check of ``gram`` (:func:`check_args`), packing a pair of sequence
sets (:func:`pack_pair`), the length sort of a ragged set (:func:`by_length`), where a
finished tile goes in the full matrix (:func:`tile_positions`, :func:`scatter_block`,
:func:`gather_block`), the in-memory computation (:func:`compute_dense`) and the
overflow warning. It sits below both :mod:`rntk_numba.gram` (the public function) and
:mod:`rntk_numba.store` (the on-disk cache), so that neither imports the other's
private names. May import: ``engine``, ``params``, ``sequences`` (never ``gram`` or
``store``).
"""

from __future__ import annotations

import warnings

import numpy as np

from .engine import prepare, resolve_n_jobs, run_tiles
from .params import RNTK
from .sequences import pack

__all__ = ["KINDS", "check_args", "pack_pair", "by_length", "tile_positions",
           "scatter_block", "gather_block", "compute_dense", "select_kind",
           "warn_if_not_finite"]

KINDS = ("ntk", "nngp", "both")


def check_args(kernel, kind):
    if not isinstance(kernel, RNTK):
        raise TypeError(f"gram: kernel must be an rntk_numba.RNTK, got "
                        f"{type(kernel).__name__} (e.g. kernel=RNTK(sigma_w=1.4))")
    if kind not in KINDS:
        raise ValueError(f"gram: kind must be one of {KINDS}, got {kind!r}")


def pack_pair(X, Y):
    """Validate and pack X (and Y); checks that their channel counts agree."""
    PX = pack(X, "X")
    PY = None if Y is None else pack(Y, "Y")
    if PY is not None and PY.m != PX.m:
        raise ValueError(f"gram: X has {PX.m} channels per time step, Y has {PY.m}")
    return PX, PY




def warn_if_not_finite(arr, name="ntk", stacklevel=3):
    """A RuntimeWarning if the kernel overflowed somewhere (it does not raise: the
    finite entries are still the kernel's values)."""
    if np.isfinite(arr).all():
        return
    bad = ~np.isfinite(arr)
    i, j = (int(v) for v in np.argwhere(bad)[0])
    warnings.warn(
        f"gram: {int(bad.sum())} {name} entries are not finite (first at ({i}, {j}): "
        f"{arr[i, j]}): the kernel overflowed float64. RNTK values grow geometrically "
        f"along a series when sigma_w is far from sqrt(2) (relu) or large (erf); use "
        f"sigma_w closer to sqrt(2), or shorter or rescaled series.",
        RuntimeWarning, stacklevel=stacklevel)


def select_kind(ntk, nngp, kind):
    return {"ntk": ntk, "nngp": nngp, "both": (ntk, nngp)}[kind]


def by_length(P):
    """(P sorted by decreasing length, the permutation) -- or (P, None) when every
    series has the same length."""
    if P is None or P.lengths.min() == P.lengths.max():
        return P, None
    order = np.argsort(-P.lengths, kind="stable")
    return P.subset(order), order


def tile_positions(tile, px, py, permuted: bool):
    """(rows, cols): where a tile's rows and columns go in the full matrix -- slices
    when the sets are in their own order (``permuted`` False), else index arrays into
    the original positions (``px`` / ``py``: the length sort of X / Y, None for a set
    that kept its order)."""
    if not permuted:
        return slice(tile.r0, tile.r1), slice(tile.c0, tile.c1)
    rows = np.arange(tile.r0, tile.r1) if px is None else px[tile.r0:tile.r1]
    cols = np.arange(tile.c0, tile.c1) if py is None else py[tile.c0:tile.c1]
    return rows, cols


def scatter_block(dst, rows, cols, block, mirror: bool) -> None:
    """``dst[rows, cols] = block`` (and its transpose at ``[cols, rows]`` if
    ``mirror``), for slices or index arrays from :func:`tile_positions`."""
    if isinstance(rows, slice):
        dst[rows, cols] = block
        if mirror:
            dst[cols, rows] = block.T
    else:
        dst[np.ix_(rows, cols)] = block
        if mirror:
            dst[np.ix_(cols, rows)] = block.T


def gather_block(src, rows, cols) -> np.ndarray:
    """A copy of ``src[rows, cols]`` (slices or index arrays, as above)."""
    return np.array(src[rows, cols] if isinstance(rows, slice) else src[np.ix_(rows, cols)])


def compute_dense(PX, PY, kernel, *, n_jobs=None, progress=False, tile_size=None,
                  kind="both", description="gram"):
    """The kernels as in-memory arrays (validated, packed inputs).

    Ragged sets are computed in order of decreasing length (tiles, and the lock-step
    lanes inside them, then hold series of similar lengths and idle less) and each tile
    is scattered back to the original positions. Every entry is computed independently
    of its tile, so the order changes no bit of the result.

    Returns ``(ntk, nngp)``; the one that ``kind`` does not ask for is None (peak
    memory: the requested output(s) plus a few tiles in flight).
    """
    SX, px = by_length(PX)
    SY, py = by_length(PY)
    if PY is None:
        py = px
    problem = prepare(SX, SY, kernel)
    shape = (problem.n_rows, problem.n_cols)
    ntk = np.empty(shape) if kind in ("ntk", "both") else None
    nngp = np.empty(shape) if kind in ("nngp", "both") else None
    outputs = [(dst, i) for i, dst in enumerate((ntk, nngp)) if dst is not None]

    permuted = px is not None or py is not None

    def put(tile, *blocks):
        rows, cols = tile_positions(tile, px, py, permuted)
        mirror = problem.symmetric and not tile.diagonal
        for dst, i in outputs:
            scatter_block(dst, rows, cols, blocks[i], mirror)

    workers = resolve_n_jobs(n_jobs)
    run_tiles(problem, problem.plan(tile_size, workers), put, n_jobs=workers,
              progress=progress, description=description)
    return ntk, nngp
