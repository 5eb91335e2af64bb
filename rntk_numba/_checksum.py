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
