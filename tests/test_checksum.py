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


def _series_hash_py(words, m):
    """The per-series hash in plain Python integers (mod 2^64), as a reference."""
    M = (1 << 64) - 1
    P1, P2, P3, P4 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63)
    n = len(words)
    h1, h2 = P3 ^ m, P4 ^ n
    for w in (int(x) for x in words):
        h1 = (h1 + w * P2) & M
        h1 = ((((h1 << 31) | (h1 >> 33)) & M) * P1) & M
        h2 = (h2 + (w ^ P3) * P1) & M
        h2 = ((((h2 << 29) | (h2 >> 35)) & M) * P2) & M
    out = []
    for z in (h1, h2 ^ h1):
        z ^= n
        z = ((z ^ (z >> 33)) * P2) & M
        z = ((z ^ (z >> 29)) * P3) & M
        out.append(z ^ (z >> 32))
    return out


def test_series_hashes_match_a_plain_reference_and_tell_series_apart():
    from rntk_numba import pack
    rng = np.random.default_rng(2)
    X = [rng.standard_normal((int(rng.integers(1, 9)), 2)) for _ in range(12)]
    P = pack(X)
    got = _checksum.series_hashes(P.values, P.offsets, P.m)
    for i, x in enumerate(X):
        assert got[i].tolist() == _series_hash_py(x.reshape(-1).view(np.uint64), 2)
    # one ulp, one more time step, the channel layout: all change the hash
    Y = [x.copy() for x in X]
    Y[3][0, 1] = np.nextafter(Y[3][0, 1], np.inf)
    PY = pack(Y)
    diff = (_checksum.series_hashes(PY.values, PY.offsets, 2) != got).any(axis=1)
    assert diff.tolist() == [i == 3 for i in range(12)]
    a = np.zeros((4, 2))
    flat = a.reshape(8, 1)
    h = _checksum.series_hashes(a, np.array([0, 4]), 2)
    assert (h != _checksum.series_hashes(flat, np.array([0, 8]), 1)).all()
    assert (h != _checksum.series_hashes(np.zeros((5, 2)), np.array([0, 5]), 2)).all()
