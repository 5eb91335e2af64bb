"""``rntk_numba.gram`` against the literal full-grid reference and the spec's invariants
(spec 3.2 and 3.3)."""

import numpy as np
import pytest

from reference import reference_gram
from rntk_numba import RNTK, gram
from rntk_numba.baselines import mlp_ntk

TOL = 1e-10          # relative to max |entry|


def _ragged(rng, n, m, lo=1, hi=40):
    return [rng.standard_normal((int(T), m)) for T in rng.integers(lo, hi + 1, size=n)]


def _close(G, R, tol=TOL):
    assert G.shape == R.shape
    assert G.dtype == np.float64
    err = np.abs(G - R).max() / np.abs(R).max()
    assert err <= tol, err


_SIGMAS = [  # (sigma_b, sigma_h)
    (0.0, 0.0), (0.3, 0.0), (0.0, 0.7), (0.2, 0.5)]


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("sigma_b,sigma_h", _SIGMAS)
def test_gram_matches_reference(activation, n_layers, m, sigma_b, sigma_h):
    seed = [n_layers, m, int(10 * sigma_b), int(10 * sigma_h), len(activation)]
    rng = np.random.default_rng(seed)
    sw = 1.4 if activation == "relu" else 1.1
    k = RNTK(sigma_w=sw, sigma_u=0.9, sigma_b=sigma_b, sigma_h=sigma_h, sigma_v=1.3,
             n_layers=n_layers, activation=activation)
    X = _ragged(rng, 6, m)
    Y = _ragged(rng, 5, m)
    _close(gram(X, kernel=k), reference_gram(X, kernel=k))
    _close(gram(X, Y, kernel=k), reference_gram(X, Y, kernel=k))
    _close(gram(Y, X, kernel=k), reference_gram(Y, X, kernel=k))


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_kinds_match_reference(activation):
    rng = np.random.default_rng(1)
    k = RNTK(sigma_b=0.2, sigma_h=0.4, n_layers=2, activation=activation)
    X, Y = _ragged(rng, 7, 2), _ragged(rng, 4, 2)
    for args in ((X,), (X, Y)):
        ntk, nngp = gram(*args, kernel=k, kind="both")
        Rntk, Rnngp = reference_gram(*args, kernel=k, kind="both")
        _close(ntk, Rntk)
        _close(nngp, Rnngp)
        np.testing.assert_array_equal(gram(*args, kernel=k, kind="nngp"), nngp)
        np.testing.assert_array_equal(gram(*args, kernel=k, kind="ntk"), ntk)


def test_edge_lengths_and_univariate_layouts():
    rng = np.random.default_rng(2)
    k = RNTK(sigma_b=0.1, sigma_h=0.3, n_layers=2)
    X = [rng.standard_normal(T) for T in (1, 1, 2, 40, 39)]   # (T,) arrays
    _close(gram(X, kernel=k), reference_gram(X, kernel=k))
    A = rng.standard_normal((4, 9))                           # (N, T) array
    _close(gram(A, kernel=k), reference_gram(A, kernel=k))
    _close(gram(A, X, kernel=k), reference_gram(A, X, kernel=k))


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("sigma_h", [0.0, 0.6])
def test_symmetric_psd(activation, sigma_h):
    rng = np.random.default_rng(3)
    k = RNTK(sigma_b=0.2, sigma_h=sigma_h, n_layers=2, activation=activation)
    X = _ragged(rng, 30, 2, 1, 25)
    for kind in ("ntk", "nngp"):
        G = gram(X, kernel=k, kind=kind)
        np.testing.assert_array_equal(G, G.T)
        ev = np.linalg.eigvalsh(G)
        assert ev[0] >= -1e-9 * ev[-1], (ev[0], ev[-1])


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_gram_vs_cross_with_itself(activation):
    rng = np.random.default_rng(4)
    X = _ragged(rng, 8, 2, 1, 30)
    off = ~np.eye(len(X), dtype=bool)
    k0 = RNTK(sigma_b=0.2, sigma_h=0.0, n_layers=2, activation=activation)
    G, C = gram(X, kernel=k0), gram(X, X, kernel=k0)
    np.testing.assert_allclose(G[off], C[off], rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.diag(G), np.diag(C), rtol=1e-6)
    # sigma_h > 0: the diagonal of gram(X) is "same sample", gram(X, X) never is
    k1 = k0.replace(sigma_h=0.8)
    G, C = gram(X, kernel=k1), gram(X, X, kernel=k1)
    np.testing.assert_allclose(G[off], C[off], rtol=1e-12, atol=0)
    assert np.all(np.abs(np.diag(G) - np.diag(C)) > 1e-4 * np.abs(np.diag(G)))


def test_permutation_equivariance():
    rng = np.random.default_rng(5)
    k = RNTK(sigma_b=0.3, sigma_h=0.5, n_layers=2)
    X = _ragged(rng, 12, 2, 1, 20)
    X[7] = X[2].copy()                  # equal sequences and equal lengths included
    perm = rng.permutation(len(X))
    G = gram(X, kernel=k)
    Gp = gram([X[i] for i in perm], kernel=k)
    np.testing.assert_array_equal(Gp, G[np.ix_(perm, perm)])
    Y = _ragged(rng, 5, 2, 1, 20)
    C = gram(X, Y, kernel=k)
    q = rng.permutation(len(Y))
    Cp = gram([X[i] for i in perm], [Y[j] for j in q], kernel=k)
    np.testing.assert_array_equal(Cp, C[np.ix_(perm, q)])


def _pad_start(X, T):
    return [np.concatenate([np.zeros((T - len(x), x.shape[1])), x]) for x in X]


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_no_padding_needed_and_zero_padding(activation):
    """Spec 3.3 item 4, with cross kernels (no same-sample pairs)."""
    rng = np.random.default_rng(6)
    X = _ragged(rng, 5, 2, 2, 15)
    Y = _ragged(rng, 6, 2, 2, 15)
    Yp = _pad_start(Y, 20)
    # sigma_b = sigma_h = 0: zero-padding at the start is exactly equivalent
    k0 = RNTK(sigma_w=1.3, sigma_b=0.0, sigma_h=0.0, n_layers=2, activation=activation)
    for kind in ("ntk", "nngp"):
        _close(gram(X, Yp, kernel=k0, kind=kind), gram(X, Y, kernel=k0, kind=kind),
               tol=1e-12)
        _close(gram(X, Y, kernel=k0, kind=kind), reference_gram(X, Y, kernel=k0,
                                                                 kind=kind))
    # ... and so is any padding when sigma_w = 0 (no recurrence)
    kw = k0.replace(sigma_w=0.0, sigma_b=0.4, sigma_h=0.7)
    _close(gram(X, Yp, kernel=kw), gram(X, Y, kernel=kw), tol=1e-12)
    # sigma_b > 0 or sigma_h > 0 (with sigma_w > 0): not equivalent
    for k in (k0.replace(sigma_b=0.3), k0.replace(sigma_h=0.7)):
        G, Gp = gram(X, Y, kernel=k), gram(X, Yp, kernel=k)
        assert np.abs(G - Gp).max() > 1e-3 * np.abs(G).max()
        _close(Gp, reference_gram(X, Yp, kernel=k))


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_one_step_is_the_mlp_ntk(activation, n_layers):
    """Spec 3.3 item 2: T = 1, sigma_h = 0 is the MLP's NTK (sigma_w of the RNN unused)."""
    rng = np.random.default_rng(7 + n_layers)
    X, Y = rng.standard_normal((9, 4)), rng.standard_normal((5, 4))
    k = RNTK(sigma_w=0.7, sigma_u=1.3, sigma_b=0.2, sigma_v=0.9, n_layers=n_layers,
             activation=activation)
    kw = dict(n_layers=n_layers, sigma_w=1.3, sigma_b=0.2, sigma_v=0.9,
              activation=activation)
    for kind in ("ntk", "nngp"):
        _close(gram(X[:, None, :], kernel=k, kind=kind), mlp_ntk(X, kind=kind, **kw))
        _close(gram(X[:, None, :], Y[:, None, :], kernel=k, kind=kind),
               mlp_ntk(X, Y, kind=kind, **kw))


# -- the mean read-out (an extension; RNTK(readout="mean")) ----------------------------------

@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("sigma_b,sigma_h", [(0.0, 0.0), (0.2, 0.5)])
def test_mean_readout_matches_its_literal_definition(activation, n_layers, sigma_b,
                                                     sigma_h):
    """The engine accumulates the read-out along each pair's walk; the reference sums
    the last-step kernels of the end-aligned prefix pairs, each from its own full grid,
    and divides by sqrt(T T')."""
    rng = np.random.default_rng([n_layers, int(10 * sigma_h), len(activation)])
    sw = 1.4 if activation == "relu" else 1.1
    k = RNTK(sigma_w=sw, sigma_b=sigma_b, sigma_h=sigma_h, sigma_v=1.2,
             n_layers=n_layers, activation=activation, readout="mean")
    X = _ragged(rng, 5, 2, hi=14)
    Y = _ragged(rng, 4, 2, hi=14)
    for args in ((X,), (X, Y), (Y, X)):
        ntk, nngp = gram(*args, kernel=k, kind="both")
        Rntk, Rnngp = reference_gram(*args, kernel=k, kind="both")
        _close(ntk, Rntk)
        _close(nngp, Rnngp)


def test_mean_readout_properties():
    rng = np.random.default_rng(7)
    k = RNTK(sigma_b=0.2, sigma_h=0.4, readout="mean")
    last = k.replace(readout="last")
    X = _ragged(rng, 30, 1, hi=25)
    for kind in ("ntk", "nngp"):
        G = gram(X, kernel=k, kind=kind)
        assert np.array_equal(G, G.T)
        assert np.linalg.eigvalsh(G).min() > -1e-10 * np.abs(G).max()     # PSD
    # one step: the mean of one read-out is the last one
    one = [x[:1] for x in X]
    np.testing.assert_array_equal(gram(one, kernel=k), gram(one, kernel=last))
    # equal lengths: the average over t of the kernels of the first t steps
    A = rng.standard_normal((4, 9))
    expect = sum(gram(A[:, :t], kernel=last) for t in range(1, 10)) / 9
    _close(gram(A, kernel=k), expect, tol=1e-14)
    # the read-out is part of the kernel's identity (and of cache keys), the spec's
    # read-out is implied (keys from before the option hold)
    assert k != last and k.key() != last.key()
    assert "readout" not in last.canonical and "readout=mean" in k.canonical
    assert RNTK.from_dict(k.to_dict()) == k
    with pytest.raises(ValueError, match="readout must be one of"):
        RNTK(readout="max")


def test_mean_readout_through_the_estimators_and_refused_where_unsupported():
    from rntk_numba import RNTKClassifier, finite
    from rntk_numba.analysis import kernel_gradient
    rng = np.random.default_rng(3)
    X = [np.sin(np.linspace(0, f, int(T))) + 0.05 * rng.standard_normal(int(T))
         for f, T in zip([1, 1, 1, 6, 6, 6], [20, 30, 25, 40, 22, 31])]
    y = [0, 0, 0, 1, 1, 1]
    clf = RNTKClassifier(readout="mean", C=10.0).fit(X, y)
    assert clf.get_params()["readout"] == "mean"
    assert clf.kernel_spec_.kernel.readout == "mean" and "readout=mean" in \
        clf.kernel_spec_.label()
    np.testing.assert_allclose(                  # (up to the trace scaling's rounding)
        clf.cross_kernel(X[:2]) * clf.kernel_scale_,
        gram(X[:2], X, kernel=RNTK(readout="mean")), rtol=1e-14)
    assert clf.score(X, y) == 1.0
    k = RNTK(readout="mean")
    with pytest.raises(ValueError, match="readout"):
        finite.init_params(k, 1, 4, rng)
    with pytest.raises(ValueError, match="readout"):
        finite.network_outputs(X[:2], k, 4, rng)
    with pytest.raises(ValueError, match="readout"):
        kernel_gradient(X[:2], X[:2], kernel=k)


def _prefix_oracle(X, Y, k):
    """The mean read-out from its definition, by the last-step engine on explicit
    prefixes (one Gram per number k of steps dropped from the end)."""
    last = k.replace(readout="last")
    Ys = X if Y is None else Y
    tx = np.array([len(x) for x in X])
    ty = np.array([len(y) for y in Ys])
    out = np.zeros((len(X), len(Ys)))
    for d in range(min(tx.max(), ty.max())):
        i, j = np.flatnonzero(tx > d), np.flatnonzero(ty > d)
        if i.size == 0 or j.size == 0:
            continue
        PX = [X[a][:tx[a] - d] for a in i]
        G = gram(PX, kernel=last) if Y is None else \
            gram(PX, [Ys[b][:ty[b] - d] for b in j], kernel=last)
        out[np.ix_(i, j)] += G
    return out / np.sqrt(np.outer(tx, ty))


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_mean_readout_at_scale_entry_by_entry(activation):
    """Many lanes (more than 64 columns) and lengths 1..200, so that most lanes of a
    batch start late; every entry compared on its own scale."""
    rng = np.random.default_rng(11)
    k = RNTK(sigma_w=1.4 if activation == "relu" else 1.1, sigma_b=0.3, sigma_h=0.4,
             n_layers=2, activation=activation, readout="mean")
    X = [rng.standard_normal((int(T), 2)) for T in rng.integers(1, 201, 80)]
    Y = [rng.standard_normal((int(T), 2)) for T in rng.integers(1, 201, 30)]
    for args in ((X, None), (X, Y)):
        G = gram(args[0], args[1], kernel=k, tile_size=37)
        O = _prefix_oracle(args[0], args[1], k)
        assert np.max(np.abs(G - O) / np.abs(O)) < 1e-12
