"""A fast checksum for the row bands of stored Gram matrices.

Fletcher-style, over 64-bit words: two running sums ``s1 += w``, ``s2 += s1`` (mod
2^64), folded into one 64-bit value. Any change of a single word, any truncation and
any swap of two words changes it. It detects accidental damage (what the store guards
against), not tampering. Integer sums are associative, so LLVM vectorises the loop:
~20 GB/s, 5x zlib's CRC-32, which made CRC-32 half the cost of a cache hit.
The state is a (2,) uint64 array, so a band can be checksummed piece by piece.
"""

import numpy as np

from ._jit import jit

@jit
def _update(words, state):
    s1 = state[0]
    s2 = state[1]
    for i in range(words.shape[0]):
        s1 += words[i]
        s2 += s1
    state[0] = s1
    state[1] = s2


def new_state() -> np.ndarray:
    return np.zeros(2, dtype=np.uint64)


def update(state: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Add the bytes of the C-contiguous float64 array ``data`` to ``state``."""
    a = np.ascontiguousarray(data, dtype=np.float64)
    _update(a.reshape(-1).view(np.uint64), state)
    return state


_MASK = 0xFFFFFFFFFFFFFFFF


def _mix(z: int) -> int:
    """splitmix64's finaliser: a bijective, avalanching mix of 64 bits."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def digest(state: np.ndarray, n_words: int) -> int:
    """Fold the state and the length (in 64-bit words) into one 64-bit value.

    s1 (the plain sum) changes with any single word, and s2 and the length enter
    through an avalanching mix, so no structured change (a flipped top bit, say) can
    cancel between them."""
    s1, s2 = int(state[0]), int(state[1])
    return (s1 + _mix(s2 ^ _mix(n_words))) & _MASK


def checksum(data: np.ndarray) -> int:
    """The checksum of one float64 array."""
    return digest(update(new_state(), data), int(np.size(data)))


# -- per-series fingerprints ----------------------------------------------------------
# 128 bits per series (two independent 64-bit lanes of xxHash64-style rounds), used to
# find the rows of a cached set that a later request's series are (subset look-ups).
# Not cryptographic: it tells accidental differences apart, as the checksums do.

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_S31 = np.uint64(31)
_S33 = np.uint64(33)
_S29 = np.uint64(29)
_S32 = np.uint64(32)


@jit
def _series_hashes(words, starts, ends, m, out):
    for i in range(out.shape[0]):
        n = np.uint64(ends[i] - starts[i])
        h1 = _P3 ^ np.uint64(m)
        h2 = _P4 ^ n
        for j in range(starts[i], ends[i]):
            w = words[j]
            h1 = h1 + w * _P2
            h1 = ((h1 << _S31) | (h1 >> _S33)) * _P1
            h2 = h2 + (w ^ _P3) * _P1
            h2 = ((h2 << _S29) | (h2 >> (np.uint64(64) - _S29))) * _P2
        for k in range(2):
            z = (h1 if k == 0 else h2 ^ h1) ^ n
            z = (z ^ (z >> _S33)) * _P2
            z = (z ^ (z >> _S29)) * _P3
            out[i, k] = z ^ (z >> _S32)


def series_hashes(values: np.ndarray, offsets: np.ndarray, m: int) -> np.ndarray:
    """(N, 2) uint64: a 128-bit hash of each series (its float64 bytes, its length in
    time steps and the channel count ``m``) of a packed set (``values`` (total, m)
    float64, ``offsets`` (N + 1,) in time steps)."""
    words = np.ascontiguousarray(values, dtype="<f8").reshape(-1).view(np.uint64)
    off = np.asarray(offsets, dtype=np.int64) * int(m)
    out = np.empty((off.size - 1, 2), dtype=np.uint64)
    _series_hashes(words, off[:-1], off[1:], int(m), out)
    return out
