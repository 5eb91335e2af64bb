"""Input model: every accepted layout packs alike; every malformed input is named."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rntk_numba import RNTK, from_channels_first, gram, pack, to_padded

K = RNTK()


def test_layouts_agree():
    rng = np.random.default_rng(0)
    X3 = rng.standard_normal((4, 7, 2))
    as_list = [x for x in X3]
    a, b = pack(X3), pack(as_list)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.lengths, b.lengths)
    # univariate: (N, T) == list of (T,) == list of (T, 1)
    X2 = X3[:, :, 0]
    for other in ([x for x in X2], [x[:, None] for x in X2]):
        assert np.array_equal(pack(X2).values, pack(other).values)
    assert pack(X2).m == 1 and pack(X3).m == 2


def test_trailing_nan_padding_is_stripped():
    x = np.array([[1.0, 2.0, np.nan, np.nan], [3.0, 4.0, 5.0, np.nan]])
    p = pack(x)
    assert p.lengths.tolist() == [2, 3]
    assert np.array_equal(p.series(1)[:, 0], [3.0, 4.0, 5.0])
    ragged = [np.arange(3.0), np.arange(5.0)]
    padded = to_padded(ragged)
    assert padded.shape == (2, 5, 1)
    assert np.array_equal(gram(padded, kernel=K), gram(ragged, kernel=K))


def test_channels_first_conversion():
    rng = np.random.default_rng(1)
    aeon_style = rng.standard_normal((3, 2, 6))           # (N, m, T)
    out = from_channels_first(aeon_style)
    assert len(out) == 3 and out[0].shape == (6, 2)
    assert np.array_equal(out[1], aeon_style[1].T)
    unequal = [rng.standard_normal((2, T)) for T in (4, 9)]
    out = from_channels_first(unequal)
    assert [o.shape for o in out] == [(4, 2), (9, 2)]


def test_zero_prepadding_helper():
    padded = to_padded([np.ones(2), np.ones(4)], fill=0.0, side="start")
    assert padded[0, :, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("bad, exc, words", [
    ([np.ones(3), np.array([1.0, np.nan, 2.0])], ValueError, ["series 1", "time step 1"]),
    ([np.ones(3), np.array([1.0, np.inf])], ValueError, ["series 1", "time step 1"]),
    ([np.ones(3), np.array([])], ValueError, ["series 1", "empty"]),
    ([np.ones(3), np.full(4, np.nan)], ValueError, ["series 1", "empty"]),
    ([np.ones((3, 2)), np.ones((3, 3))], ValueError, ["series 1", "channels"]),
    ([np.ones(3), np.array(["a", "b"])], TypeError, ["series 1"]),
    ([np.ones(3), np.ones(3) * 1j], TypeError, ["series 1", "complex"]),
    ([np.ones(3), np.ones((2, 2, 2))], ValueError, ["series 1", "shape"]),
    ([], ValueError, ["empty"]),
    (np.ones(5), ValueError, ["1-D", "ambiguous"]),
    (np.ones((2, 3, 4, 5)), ValueError, ["shape"]),
    ("abc", TypeError, ["sequence set"]),
    (None, TypeError, ["sequence set"]),
    (3.0, TypeError, ["sequence set"]),
    (np.array([[1.0, np.nan, 3.0]]), ValueError, ["series 0", "time step 1"]),
    (np.array([[[1.0, np.nan], [2.0, 3.0]]]), ValueError, ["series 0", "time step 0",
                                                           "channel 1"]),
])
def test_malformed_inputs_are_named(bad, exc, words):
    with pytest.raises(exc) as info:
        gram(bad, kernel=K)
    for w in words:
        assert w in str(info.value)


def test_channel_mismatch_between_x_and_y():
    with pytest.raises(ValueError, match="X has 2 channels.*Y has 3"):
        gram([np.ones((3, 2))], [np.ones((3, 3))], kernel=K)
    with pytest.raises(ValueError, match="Y: series 0"):
        gram([np.ones(3)], [np.array([np.inf])], kernel=K)


def test_bad_kernel_and_kind():
    with pytest.raises(TypeError, match="RNTK"):
        gram([np.ones(3)], kernel={"sigma_w": 1.0})
    with pytest.raises(ValueError, match="kind"):
        gram([np.ones(3)], kernel=K, kind="gp")


# -- property-based: random corruption of a valid set is always caught and named ----
finite = st.floats(-1e3, 1e3, allow_nan=False)


@st.composite
def ragged_sets(draw):
    n = draw(st.integers(1, 5))
    m = draw(st.integers(1, 3))
    out = []
    for _ in range(n):
        T = draw(st.integers(1, 8))
        vals = draw(st.lists(finite, min_size=T * m, max_size=T * m))
        out.append(np.array(vals).reshape(T, m))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ragged_sets(), st.data())
def test_corruption_is_always_reported(X, data):
    G = gram(X, kernel=K)                                # valid input: finite, symmetric
    assert np.isfinite(G).all() and np.array_equal(G, G.T)
    i = data.draw(st.integers(0, len(X) - 1))
    T, m = X[i].shape
    t = data.draw(st.integers(0, T - 1))
    c = data.draw(st.integers(0, m - 1))
    bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    corrupted = [x.copy() for x in X]
    corrupted[i][t, c] = bad
    is_padding = np.isnan(bad) and m == 1 and t == T - 1
    if is_padding:
        # a trailing all-NaN row is padding: the series just gets shorter (or empty)
        if T == 1:
            with pytest.raises(ValueError, match=f"series {i} is empty"):
                gram(corrupted, kernel=K)
        else:
            assert pack(corrupted).lengths[i] == T - 1
        return
    with pytest.raises(ValueError) as info:
        gram(corrupted, kernel=K)
    msg = str(info.value)
    assert f"series {i}" in msg and f"time step {t}" in msg and f"channel {c}" in msg


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=3), st.just([]),
                          st.just([[1.0, 2.0], [3.0]])), min_size=1, max_size=3))
def test_junk_never_crashes(items):
    X = [np.ones(3)] + items
    with pytest.raises((ValueError, TypeError)):
        gram(X, kernel=K)


def test_pack_of_an_array_owns_its_values():
    rng = np.random.default_rng(0)
    for make in (lambda a: a, lambda a: a[:, :, None], np.asfortranarray):
        arr = make(rng.standard_normal((6, 5)))
        P = pack(arr)
        before = P.values.copy()
        assert not np.shares_memory(P.values, arr)
        arr[...] = 7.0                   # the caller reuses its buffer
        np.testing.assert_array_equal(P.values, before)


def test_fingerprint_is_the_sha256_of_the_documented_bytes():
    """(m, lengths, float64 values) hashed from the arrays' buffers: the same digest as
    hashing copies of their bytes (store keys and resume files depend on it)."""
    import hashlib
    rng = np.random.default_rng(0)
    for m in (1, 3):
        P = pack([rng.standard_normal((int(rng.integers(1, 40)), m)) for _ in range(30)])
        h = hashlib.sha256(b"rntk-packed-v1")
        h.update(np.int64(m).tobytes())
        h.update(P.lengths.astype("<i8").tobytes())
        h.update(P.values.astype("<f8").tobytes())
        assert P.fingerprint() == h.hexdigest()
