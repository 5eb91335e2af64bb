"""The band checksum of the store: incremental == one-shot, and damage changes it."""

import numpy as np
import pytest

from rntk_numba import _checksum


@pytest.fixture
def data():
    return np.random.default_rng(0).standard_normal((300, 70))


def test_incremental_equals_one_shot(data):
    whole = _checksum.checksum(data)
    state = _checksum.new_state()
    for rows in np.array_split(np.arange(300), 7):
        _checksum.update(state, data[rows])
    assert _checksum.digest(state, data.size) == whole
    assert _checksum.checksum(data.copy()) == whole           # depends on bytes only


def test_damage_is_detected(data):
    whole = _checksum.checksum(data)
    rng = np.random.default_rng(1)
    for _ in range(200):                                      # single bit flips
        d = data.copy()
        d.view(np.uint8).reshape(-1)[rng.integers(d.nbytes)] ^= np.uint8(1 << rng.integers(8))
        assert _checksum.checksum(d) != whole
    for word in (0, 1, 2, 999, data.size - 2, data.size - 1):  # structured flips:
        for bit in (0, 31, 32, 62, 63):                        # the top bit too
            d = data.copy().reshape(-1)
            d.view(np.uint64)[word] ^= np.uint64(1 << bit)
            assert _checksum.checksum(d) != whole
    swapped = data.copy().reshape(-1)
    swapped[[10, 11]] = swapped[[11, 10]]
    assert _checksum.checksum(swapped) != whole               # order matters
    assert _checksum.checksum(data.reshape(-1)[:-1]) != whole  # truncation
    zeros = np.zeros(100)
    assert _checksum.checksum(zeros) != _checksum.checksum(np.zeros(101))
