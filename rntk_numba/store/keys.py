"""Keys and fingerprints: which entry a request maps to.

Owns the entry key (a hash of the kernel's canonical form, the formula version, the
fingerprints of X and Y and the mode "sym" / "cross"), the per-series fingerprints
stored with an entry, and the matching of a subset's series against them. May import:
``params``, ``sequences``, ``_checksum``, ``assembly`` (packing); nothing of the store
but this room.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .. import _checksum, params
from ..assembly import pack_pair
from ..params import RNTK
from ..sequences import PackedSequences


def pack_inputs(X, Y):
    """(PX, PY) packed and checked, passing ``PackedSequences`` through unchanged."""
    if isinstance(X, PackedSequences) and (Y is None or isinstance(Y, PackedSequences)):
        if Y is not None and Y.m != X.m:
            raise ValueError(f"gram: X has {X.m} channels per time step, Y has {Y.m}")
        return X, Y
    return pack_pair(X, Y)


def entry_key(PX, PY, kernel: RNTK) -> str:
    """The entry key of ``gram(PX, PY, kernel=kernel)`` (32 hex digits, any kind)."""
    text = (f"rntk-gram;{kernel.canonical};formula={params.FORMULA_VERSION};"
            f"mode={'sym' if PY is None else 'cross'};X={PX.fingerprint()};"
            f"Y={'-' if PY is None else PY.fingerprint()}")
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def series_fingerprints(P: PackedSequences) -> np.ndarray:
    """(N, 16) uint8: a 128-bit hash per series (channels, length, float64 bytes; see
    ``_checksum.series_hashes``: jitted, ~1 ms for 5,000 series of length 100)."""
    h = _checksum.series_hashes(P.values, P.offsets, P.m)
    return np.ascontiguousarray(h.astype("<u8")).view(np.uint8).reshape(P.n, 16)


def _match_series(full: np.ndarray, fpx: np.ndarray, fpy):
    """Indices into the full set for the rows (and columns): distinct samples, the k-th
    copy of a repeated series matched to its k-th copy. None if impossible."""
    pos = {}
    for i, row in enumerate(full):
        pos.setdefault(row.tobytes(), []).append(i)
    used = {k: 0 for k in pos}

    def assign(fps):
        out = np.empty(len(fps), dtype=np.int64)
        for a, row in enumerate(fps):
            k = row.tobytes()
            lst = pos.get(k)
            if lst is None or used[k] >= len(lst):
                return None
            out[a] = lst[used[k]]
            used[k] += 1
        return out

    r = assign(fpx)
    if r is None:
        return None
    if fpy is None:
        return r, None
    c = assign(fpy)
    return None if c is None else (r, c)
