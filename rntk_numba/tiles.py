"""Tile plans: how a Gram matrix is cut into independent, cost-balanced pieces.

A tile is a rectangle ``[r0, r1) x [c0, c1)`` of the output. For a symmetric Gram only
tiles on or above the diagonal are planned (diagonal tiles compute their strict upper
triangle and mirror it). Tiles need not divide N. Their cost is counted in pair-steps
(one cell of the end-aligned diagonal walk of one pair, for one layer): the pair
(x, x') costs ``n_layers * min(T, T')``. The same plan serves the joblib scheduler
(``parallel.run_tiles``) and the on-disk store (which records finished tiles and
resumes the others).
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

__all__ = ["Tile", "plan_tiles", "pair_steps", "MAX_TILE_ROWS"]

#: Upper bound on a tile's side, so that a tile's temporary arrays stay small (a few MB).
MAX_TILE_ROWS = 512
#: Default work per tile (pair-steps): ~0.05-0.1 s on one core.
TARGET_TILE_STEPS = 2e7


@dataclasses.dataclass(frozen=True)
class Tile:
    """One rectangle of the output, with its cost in pair-steps."""

    index: int
    r0: int
    r1: int
    c0: int
    c1: int
    diagonal: bool      # a diagonal tile of a symmetric Gram (r0 == c0, r1 == c1)
    cost: int

    @property
    def shape(self):
        return (self.r1 - self.r0, self.c1 - self.c0)


def _sum_min(a: np.ndarray, b: np.ndarray) -> int:
    """sum_i sum_j min(a_i, b_j), in O((n + m) log(n + m))."""
    b_sorted = np.sort(b)
    csum = np.concatenate(([0], np.cumsum(b_sorted, dtype=np.int64)))
    k = np.searchsorted(b_sorted, a, side="right")     # b_j <= a_i for j < k
    total = csum[k] + a.astype(np.int64) * (b_sorted.size - k)
    return int(total.sum())


def pair_steps(len_rows: np.ndarray, len_cols: np.ndarray | None = None,
               n_layers: int = 1) -> int:
    """Total pair-steps of a Gram: symmetric (strict upper triangle) if len_cols is None."""
    a = np.asarray(len_rows, dtype=np.int64)
    if len_cols is None:
        return n_layers * (_sum_min(a, a) - int(a.sum())) // 2
    return n_layers * _sum_min(a, np.asarray(len_cols, dtype=np.int64))


#: Block boundaries are rounded to multiples of this (the kernel's lane count), so that
#: column blocks fill whole lock-step batches.
ALIGN = 64


def _boundaries(lengths: np.ndarray, n_blocks: int, max_rows: int) -> np.ndarray:
    """Cut rows into about n_blocks blocks of equal total length, at most max_rows each."""
    n = lengths.size
    n_blocks = max(1, min(n, n_blocks))
    csum = np.cumsum(lengths, dtype=np.float64)
    cuts = np.searchsorted(csum, csum[-1] * np.arange(1, n_blocks) / n_blocks,
                           side="right")
    if n >= 2 * ALIGN * n_blocks:
        cuts = np.round(cuts / ALIGN).astype(np.int64) * ALIGN
    bounds = np.unique(np.concatenate(([0], cuts, [n])))
    out = [0]
    for hi in bounds[1:]:
        while hi - out[-1] > max_rows:
            out.append(out[-1] + max_rows)
        if hi > out[-1]:
            out.append(int(hi))
    return np.array(out, dtype=np.int64)


def plan_tiles(len_rows, len_cols=None, *, n_layers: int = 1,
               tile_size: int | None = None, n_workers: int = 1) -> list[Tile]:
    """Plan the tiles of a Gram matrix.

    Parameters
    ----------
    len_rows, len_cols : int arrays of series lengths; ``len_cols=None`` plans the
        symmetric Gram of the rows (upper triangle only).
    tile_size : int, optional
        Rows (and columns) per tile. Default: cost-based, about
        ``TARGET_TILE_STEPS`` pair-steps per tile, at least ~8 tiles per worker, at most
        ``MAX_TILE_ROWS`` rows.
    n_workers : int
        Parallel workers the plan should keep busy.

    Returns
    -------
    list of Tile, in a deterministic order (by position); the scheduler reorders by cost.
    """
    a = np.asarray(len_rows, dtype=np.int64)
    symmetric = len_cols is None
    b = a if symmetric else np.asarray(len_cols, dtype=np.int64)
    if tile_size is not None:
        if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral):
            raise TypeError(f"tile_size must be an integer >= 1, got {tile_size!r}")
        if int(tile_size) < 1:
            raise ValueError(f"tile_size must be >= 1, got {tile_size}")
        tile_size = int(tile_size)
        rb = np.unique(np.append(np.arange(0, a.size, tile_size), a.size))
        cb = rb if symmetric else np.unique(np.append(np.arange(0, b.size, tile_size),
                                                      b.size))
    else:
        total = pair_steps(a, None if symmetric else b, n_layers)
        want_tiles = max(8 * n_workers, int(np.ceil(total / TARGET_TILE_STEPS)), 1)
        if symmetric:
            nb = int(np.ceil(np.sqrt(2 * want_tiles)))
            rb = cb = _boundaries(a, nb, MAX_TILE_ROWS)
        else:
            # split both sides in proportion to their sizes
            ratio = np.sqrt(want_tiles * a.size / max(b.size, 1))
            nr = max(1, int(np.ceil(ratio)))
            nc = max(1, int(np.ceil(want_tiles / nr)))
            rb = _boundaries(a, nr, MAX_TILE_ROWS)
            cb = _boundaries(b, nc, MAX_TILE_ROWS)
    tiles = []
    for bi in range(rb.size - 1):
        r0, r1 = int(rb[bi]), int(rb[bi + 1])
        for bj in range(bi if symmetric else 0, cb.size - 1):
            c0, c1 = int(cb[bj]), int(cb[bj + 1])
            diag = symmetric and bi == bj
            if diag:
                la = a[r0:r1]
                cost = n_layers * (_sum_min(la, la) - int(la.sum())) // 2
            else:
                cost = n_layers * _sum_min(a[r0:r1], b[c0:c1])
            tiles.append(Tile(len(tiles), r0, r1, c0, c1, diag, int(cost)))
    return tiles
