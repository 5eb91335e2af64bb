"""The public entry point: ``gram``.

The packing, tile placement and in-memory computation live in
:mod:`rntk_numba.assembly` (shared with the store); ``cache=`` calls up into the store
through its public :func:`rntk_numba.store.as_store`, imported on first use (the store
never imports this module).
"""

from __future__ import annotations

from .assembly import (KINDS, check_args, compute_dense, pack_pair, select_kind,
                       warn_if_not_finite)
from .params import RNTK

# The helpers below lived in this module before rntk_numba.assembly; older code imports
# them from here.
from .assembly import by_length as _by_length  # noqa: F401
from .assembly import check_args as _check_args  # noqa: F401
from .assembly import gather_block, scatter_block, tile_positions  # noqa: F401

__all__ = ["gram", "KINDS"]


def gram(X, Y=None, *, kernel: RNTK, kind: str = "ntk", n_jobs=None,
         progress: bool = False, cache=None, tile_size=None):
    """RNTK / NNGP Gram matrix of a set of sequences of any lengths.

    Parameters
    ----------
    X : sequence set, N series
        A list of arrays ``(T_i,)`` or ``(T_i, m)``, an array ``(N, T)`` or ``(N, T, m)``
        (trailing all-NaN rows are padding), or a ``PackedSequences``.
        See :mod:`rntk_numba.sequences` for the layout rules.
    Y : sequence set, M series, optional
        ``None``: the symmetric Gram of X, its diagonal entries ``(i, i)`` treated as
        the same sample (sigma_h enters, spec 3.2). Otherwise the cross kernel
        ``K[i, j] = k(X[i], Y[j])``, in which no pair is the same sample -- so with
        ``sigma_h > 0``, ``gram(X)[i, i] != gram(X, X)[i, i]`` by design.
    kernel : RNTK
        Hyperparameters.
    kind : {"ntk", "nngp", "both"}
        The RNTK Theta, the NNGP (GP) kernel K, or the pair ``(ntk, nngp)``. Both come
        from the same walk, so "both" costs the same as either.
    n_jobs : int, optional
        Parallel workers (default: all cores). Results do not depend on it.
    progress : bool
        Show a progress bar over pair-steps.
    cache : GramStore or path, optional
        Look the matrix up in / store it into an on-disk store (see ``GramStore``):
        equal inputs and hyperparameters are read back (verified) instead of
        recomputed, an interrupted computation resumes, and a subset of a cached set
        is sliced from it. Results of 8 MiB or more are then mapped copy-on-write from
        the entry's file (no copy; ``GramStore(copy=True)`` for copies). A Gram whose
        kernels exceed the store's ``memory_budget``
        comes back as an on-disk ``GramArray`` (NumPy-style slicing; see
        ``GramStore.gram(..., out_of_core=True)``).
    tile_size : int, optional
        Rows per tile (default: cost-based). Results do not depend on it.

    Returns
    -------
    ndarray (N, M) float64, or a tuple ``(ntk, nngp)`` for ``kind="both"``.

    Raises
    ------
    ValueError, TypeError
        Malformed sequences (the message names the series, time step and channel), a
        bad ``kind``, ``n_jobs=0`` or ``tile_size < 1``; ``kernel`` not an ``RNTK``.

    Examples
    --------
    >>> import numpy as np
    >>> from rntk_numba import RNTK, gram
    >>> X = [np.sin(np.linspace(0, 3, T)) for T in (20, 35, 50)]
    >>> G = gram(X, kernel=RNTK())
    >>> G.shape, bool(np.allclose(G, G.T))
    ((3, 3), True)
    """
    check_args(kernel, kind)
    PX, PY = pack_pair(X, Y)
    if cache is not None:
        from .store import as_store
        return as_store(cache).gram(PX, PY, kernel=kernel, kind=kind, n_jobs=n_jobs,
                                    progress=progress, tile_size=tile_size)
    ntk, nngp = compute_dense(PX, PY, kernel, n_jobs=n_jobs, progress=progress,
                              tile_size=tile_size, kind=kind)
    for name, arr in (("ntk", ntk), ("nngp", nngp)):
        if arr is not None:
            warn_if_not_finite(arr, name)
    return select_kind(ntk, nngp, kind)

