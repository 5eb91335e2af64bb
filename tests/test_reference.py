"""The literal reference (tests/reference.py) against independent checks.

* the finite-width RNN of ``rntk_numba.finite``: its empirical NTK, averaged over
  random initialisations, converges to the reference like 1/sqrt(width) (spec 3.3
  item 3), tied weights on ragged lengths and untied weights on equal lengths; the mean
  of f(x) f(x') converges to the reference NNGP kernel;
* the MLP closed form ``rntk_numba.baselines.mlp_ntk`` at T = 1, sigma_h = 0 (3.3 item 2);
* the network's backpropagation against finite differences, and gradient descent
  against its linearisation (spec section 5);
* internal consistency of the reference (self grid diagonal, symmetry, PSD).
"""

import math

import numpy as np
import pytest

from reference import (dual, reference_gram, reference_grids, reference_pair,
                       self_kernels)
from rntk_numba import finite
from rntk_numba.baselines import mlp_ntk
from rntk_numba.params import RNTK


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _ragged(rng, lengths, m=2):
    return [rng.standard_normal((T, m)) for T in lengths]


# -- the reference itself -------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_self_grid_diagonal_is_the_self_kernel(activation):
    rng = np.random.default_rng(0)
    k = RNTK(sigma_w=1.3, sigma_b=0.2, sigma_h=0.7, n_layers=3, activation=activation)
    x = rng.standard_normal((7, 2))
    g = reference_grids(x, x, k, same_sample=True)
    diag = np.diagonal(g["sigma"], axis1=1, axis2=2)
    np.testing.assert_array_equal(diag, self_kernels(x, k))
    # the grid of a same-sample pair is symmetric in (t, t')
    np.testing.assert_allclose(g["sigma"], g["sigma"].transpose(0, 2, 1), rtol=1e-13)
    np.testing.assert_allclose(g["theta"], g["theta"].transpose(0, 2, 1), rtol=1e-13)
    # sigma_h enters A[l](0, 0) only
    assert g["A"][0, 0, 0] == k.sigma_h ** 2
    assert np.all(g["A"][:, 0, 1:] == 0) and np.all(g["A"][:, 1:, 0] == 0)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_dual_same_sample_is_exact_and_matches_the_limit(activation):
    a = np.array([0.3, 1.0, 7.5])
    V, Vp = dual(a, a, a, activation, same=True)
    Vn, Vpn = dual(a, a, a * (1 - 1e-12), activation)
    np.testing.assert_allclose(V, Vn, rtol=1e-9)
    np.testing.assert_allclose(Vp, Vpn, rtol=1e-5)
    if activation == "relu":
        np.testing.assert_array_equal(V, a / 2)
        np.testing.assert_array_equal(Vp, 0.5)
        V0, Vp0 = dual(0.0, 2.0, 0.0, "relu")
        assert V0 == 0.0 and Vp0 == 0.25             # project choice for a*b == 0
    # Monte Carlo check of the closed forms at a generic covariance
    rng = np.random.default_rng(1)
    lam = np.array([[1.2, 0.5], [0.5, 0.8]])
    uv = rng.standard_normal((400_000, 2)) @ np.linalg.cholesky(lam).T
    if activation == "relu":
        phi, dphi = np.maximum(uv, 0), (uv > 0).astype(float)
    else:
        from scipy.special import erf
        phi, dphi = erf(uv), 2 / math.sqrt(math.pi) * np.exp(-uv ** 2)
    V, Vp = dual(1.2, 0.8, 0.5, activation)
    assert abs(np.mean(phi[:, 0] * phi[:, 1]) - V) < 0.01 * abs(V) + 3e-3
    assert abs(np.mean(dphi[:, 0] * dphi[:, 1]) - Vp) < 0.01 * abs(Vp) + 3e-3


def test_reference_symmetry_psd_and_same_sample_convention():
    rng = np.random.default_rng(2)
    X = _ragged(rng, [1, 3, 6, 2, 5, 5], m=2)
    for k in (RNTK(sigma_b=0.3, sigma_h=0.8, n_layers=2),
              RNTK(sigma_w=1.1, sigma_h=0.5, n_layers=2, activation="erf")):
        G = reference_gram(X, kernel=k)
        np.testing.assert_array_equal(G, G.T)
        ev = np.linalg.eigvalsh(G)
        assert ev[0] >= -1e-9 * ev[-1]
        C = reference_gram(X, X, kernel=k)
        off = ~np.eye(len(X), dtype=bool)
        np.testing.assert_allclose(G[off], C[off], rtol=1e-13)
        assert np.all(np.abs(np.diag(G) - np.diag(C)) > 1e-6 * np.abs(G).max())
        for i, j in [(0, 2), (2, 4), (1, 3)]:
            a = reference_pair(X[i], X[j], k)
            b = reference_pair(X[j], X[i], k)
            np.testing.assert_allclose(a, b, rtol=1e-13)
    # with sigma_h = 0 the diagonal of gram(X) and gram(X, X) agree closely
    k = RNTK(sigma_b=0.3, n_layers=2)
    G, C = reference_gram(X, kernel=k), reference_gram(X, X, kernel=k)
    np.testing.assert_allclose(np.diag(G), np.diag(C), rtol=1e-6)


def test_reference_is_the_paper_theorem_at_one_step():
    """T = T' = 1, L = 1, sh = 0: Theta = V + V' * Sigma, Sigma = su^2 <x,y>/m + sb^2."""
    k = RNTK(sigma_u=1.3, sigma_b=0.4, sigma_v=0.7)
    x, y = np.array([[1.0, 2.0]]), np.array([[-0.5, 1.5]])
    s = 1.3 ** 2 * np.dot(x[0], y[0]) / 2 + 0.16
    a = 1.3 ** 2 * np.dot(x[0], x[0]) / 2 + 0.16
    b = 1.3 ** 2 * np.dot(y[0], y[0]) / 2 + 0.16
    th = math.acos(s / math.sqrt(a * b))
    V = math.sqrt(a * b) / (2 * math.pi) * (math.sin(th) + (math.pi - th) * math.cos(th))
    Vp = (math.pi - th) / (2 * math.pi)
    ntk, nngp = reference_pair(x, y, k)
    assert ntk == pytest.approx(0.49 * (V + Vp * s), rel=1e-14)
    assert nngp == pytest.approx(0.49 * V, rel=1e-14)


# -- MLP limit (spec 3.3 item 2) ------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_reference_one_step_equals_mlp_ntk(activation, n_layers):
    rng = np.random.default_rng(10 + n_layers)
    X = rng.standard_normal((6, 3))
    Y = rng.standard_normal((4, 3))
    k = RNTK(sigma_w=1.7, sigma_u=1.2, sigma_b=0.3, sigma_h=0.0, sigma_v=0.8,
             n_layers=n_layers, activation=activation)
    kw = dict(n_layers=n_layers, sigma_w=1.2, sigma_b=0.3, sigma_v=0.8,
              activation=activation)
    for kind in ("ntk", "nngp"):
        R = reference_gram(list(X[:, None, :]), kernel=k, kind=kind)
        M = mlp_ntk(X, kind=kind, **kw)
        assert np.abs(R - M).max() <= 1e-12 * np.abs(M).max()
        R = reference_gram(list(X[:, None, :]), list(Y[:, None, :]), kernel=k, kind=kind)
        M = mlp_ntk(X, Y, kind=kind, **kw)
        assert np.abs(R - M).max() <= 1e-12 * np.abs(M).max()
    ntk, nngp = mlp_ntk(X, Y, kind="both", **kw)
    np.testing.assert_array_equal(ntk, mlp_ntk(X, Y, **kw))


def test_mlp_ntk_known_values():
    # Arora et al. normalisation (relu, sigma_w = sqrt 2): Theta(x, x) = (L + 1) |x|^2/d
    x = np.array([[3.0, 4.0]])
    for L in (1, 2, 3):
        G = mlp_ntk(x, n_layers=L, sigma_w=math.sqrt(2), sigma_b=0.0)
        assert G[0, 0] == pytest.approx((L + 1) * 12.5, rel=1e-14)
    # orthogonal inputs, L = 1: rho = 0, so Theta = V + V' * 0 = sqrt(2 * 2)/(2 pi)
    X = np.eye(2) * math.sqrt(2)
    G = mlp_ntk(X, n_layers=1, sigma_w=math.sqrt(2), sigma_b=0.0)
    assert G[0, 1] == pytest.approx(1 / math.pi, rel=1e-14)


# -- finite network: backprop ---------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("untied", [False, True])
def test_backprop_matches_finite_differences(activation, n_layers, untied):
    rng = np.random.default_rng(20)
    k = RNTK(sigma_w=1.2, sigma_u=0.9, sigma_b=0.3, sigma_h=0.5, sigma_v=1.1,
             n_layers=n_layers, activation=activation)
    X = _ragged(rng, [4, 4, 4] if untied else [3, 5, 2])
    n = 7
    p = finite.init_params(k, 2, n, rng, untied=untied, T=5)
    h0 = finite.draw_initial_states(k, len(X), n, rng)
    g = finite.per_sample_gradients(p, X, h0)
    flat = np.concatenate([a.reshape(len(X), -1) for key in "WUb" for a in g[key]]
                          + [g["v"]], axis=1)
    # the kernel trick of ntk_of_params equals the Gram of the explicit gradients
    K = finite.ntk_of_params(p, X, h0)
    np.testing.assert_allclose(K, flat @ flat.T, rtol=1e-12, atol=1e-12 * np.abs(K).max())
    # directional derivatives by central differences
    dirs = [rng.standard_normal(a.shape) for a in p.arrays()]
    eps = 1e-6
    plus, minus = p.copy(), p.copy()
    for a, b, d in zip(plus.arrays(), minus.arrays(), dirs):
        a += eps * d
        b -= eps * d
    fd = (finite.forward(plus, X, h0) - finite.forward(minus, X, h0)) / (2 * eps)
    analytic = flat @ np.concatenate([d.ravel() for d in dirs])
    np.testing.assert_allclose(fd, analytic, rtol=1e-6, atol=1e-7 * np.abs(analytic).max())
    # and single coordinates of W, U of the first layer
    for name in ("W", "U"):
        arr = getattr(p, name)[0]
        idx = (0, 1, 0)
        old = arr[idx]
        arr[idx] = old + eps
        fp = finite.forward(p, X, h0)
        arr[idx] = old - eps
        fm = finite.forward(p, X, h0)
        arr[idx] = old
        np.testing.assert_allclose((fp - fm) / (2 * eps), g[name][0][(slice(None),) + idx],
                                   rtol=1e-5, atol=1e-8)


# -- finite network -> RNTK (spec 3.3 item 3) ------------------------------------------
_CONV_SEEDS = 32


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("untied", [False, True])
def test_empirical_ntk_converges_to_reference(activation, n_layers, untied):
    rng = np.random.default_rng(30 + n_layers)
    if untied:                                   # Theorem 3: equal lengths
        X = _ragged(rng, [5] * 5)
    else:
        X = _ragged(rng, [3, 4, 5, 6, 4, 3])
    k = RNTK(sigma_w=math.sqrt(2) if activation == "relu" else 1.2, sigma_u=1.0,
             sigma_b=0.2, sigma_h=0.6, n_layers=n_layers, activation=activation)
    R = reference_gram(X, kernel=k)
    errors, means = {}, {}
    for n in (128, 512):
        Ks = np.array([finite.empirical_ntk(X, k, n, np.random.default_rng(n * 1000 + s),
                                            untied=untied) for s in range(_CONV_SEEDS)])
        errors[n] = np.mean([_rel(K, R) for K in Ks])
        means[n] = _rel(Ks.mean(axis=0), R)
    ratio = errors[512] / errors[128]
    assert 0.3 <= ratio <= 0.7, (errors, ratio)
    assert means[512] < 0.05, means


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_network_outputs_converge_to_reference_nngp(activation, n_layers):
    rng = np.random.default_rng(40)
    X = _ragged(rng, [2, 3, 4, 3])
    k = RNTK(sigma_w=1.0, sigma_u=1.0, sigma_b=0.3, sigma_h=0.5, n_layers=n_layers,
             activation=activation)
    R = reference_gram(X, kernel=k, kind="nngp")
    out = finite.network_outputs(X, k, 64, np.random.default_rng(41), n_draws=3000)
    assert out.shape == (3000, 4)
    prod = out[:, :, None] * out[:, None, :]
    M = prod.mean(axis=0)
    se = prod.std(axis=0) / math.sqrt(len(out))
    assert np.all(np.abs(M - R) <= 4 * se + 0.03 * np.abs(R).max()), (M, R, se)
    assert _rel(M, R) < 0.08


def test_untied_network_outputs_nngp():
    rng = np.random.default_rng(42)
    X = _ragged(rng, [4, 4, 4])
    k = RNTK(sigma_w=1.4, sigma_b=0.2, sigma_h=0.5)
    R = reference_gram(X, kernel=k, kind="nngp")
    out = finite.network_outputs(X, k, 64, np.random.default_rng(43), n_draws=2000,
                                 untied=True)
    prod = out[:, :, None] * out[:, None, :]
    se = prod.std(axis=0) / math.sqrt(len(out))
    assert np.all(np.abs(prod.mean(axis=0) - R) <= 4 * se + 0.03 * np.abs(R).max())


def test_empirical_ntk_sees_the_same_sample_convention():
    """With a large sigma_h the diagonal (same initial state) differs from the entry of
    two independent copies of the same sequence, in the network as in the kernel."""
    rng = np.random.default_rng(50)
    x = rng.standard_normal((3, 2))
    X = [x, x.copy()]
    k = RNTK(sigma_w=1.2, sigma_h=2.0, activation="erf")
    R = reference_gram(X, kernel=k)
    assert R[0, 0] - R[0, 1] > 0.1 * R[0, 0]
    Ks = np.mean([finite.empirical_ntk(X, k, 1024, np.random.default_rng(s))
                  for s in range(32)], axis=0)
    np.testing.assert_allclose(Ks, R, rtol=0.04)
    assert Ks[0, 0] - Ks[0, 1] > 0.1 * R[0, 0]


def _multihead_ntk(X, kernel, width, rng):
    """Empirical NTK of ``f(x) = T^-1/2 sum_k sv/sqrt(n) v_k . h[L, T-k](x)``: one RNN
    (W, U, b and each sequence's h[l,0] shared by all heads) read out at every step by
    its own head v_k, k = steps before the last. Assembled from the single-head
    network's per-sample gradients of the prefixes x[:T-k] (head v_k, the sequence's
    own initial state): the shared parameters' gradients add up over the heads, each
    head's gradient is its own."""
    last = kernel.replace(readout="last")
    N, m = len(X), X[0].shape[1]
    lengths = np.array([x.shape[0] for x in X])
    params = finite.init_params(last, m, width, rng)
    h0 = finite.draw_initial_states(last, N, width, rng)
    heads = rng.standard_normal((lengths.max(), width))
    shared, own = None, np.zeros((N, lengths.max(), width))
    for k in range(lengths.max()):
        idx = np.flatnonzero(lengths > k)
        p = params.copy()
        p.v = heads[k]
        g = finite.per_sample_gradients(p, [X[i][:lengths[i] - k] for i in idx],
                                        h0[:, idx])
        flat = np.concatenate([a.reshape(idx.size, -1)
                               for a in (*g["W"], *g["U"], *g["b"])], axis=1)
        if shared is None:
            shared = np.zeros((N, flat.shape[1]))
        shared[idx] += flat
        own[idx, k] = g["v"]
    scale = 1.0 / np.sqrt(lengths)
    shared *= scale[:, None]
    own = own.reshape(N, -1) * scale[:, None]
    return shared @ shared.T + own @ own.T


@pytest.mark.parametrize("n_layers", [1, 2])
def test_mean_readout_is_the_kernel_of_a_network_with_a_head_per_step(n_layers):
    """RNTK(readout="mean") (its literal reference: the mean of the kernels of the
    end-aligned prefix pairs) is the infinite-width NTK of the multi-head network of
    ``_multihead_ntk``: the empirical NTK converges to it, its error shrinking like
    width^-1/2 (the cross terms of different heads vanish only in the limit)."""
    rng = np.random.default_rng(60 + n_layers)
    X = _ragged(rng, [2, 7, 4, 1, 6])            # spread lengths: the scaling matters
    k = RNTK(sigma_b=0.2, sigma_h=0.5, n_layers=n_layers, readout="mean")
    R = reference_gram(X, kernel=k)
    errors, means = {}, {}
    for n in (128, 512):
        Ks = np.array([_multihead_ntk(X, k, n, np.random.default_rng(n * 1000 + s))
                       for s in range(_CONV_SEEDS)])
        errors[n] = np.mean([_rel(K, R) for K in Ks])
        means[n] = _rel(Ks.mean(axis=0), R)
    ratio = errors[512] / errors[128]
    assert 0.3 <= ratio <= 0.7, (errors, ratio)
    assert means[512] < 0.05, means
    # the network's kernel is clearly closer to this definition than to its near
    # misses: the sum scaled by 1/max(T, T') or 1/min(T, T'), or the last step alone
    T = np.array([x.shape[0] for x in X], dtype=float)
    root = np.sqrt(np.outer(T, T))
    near = {"1/max": R * root / np.maximum.outer(T, T),
            "1/min": R * root / np.minimum.outer(T, T),
            "last": reference_gram(X, kernel=k.replace(readout="last"))}
    mean512 = Ks.mean(axis=0)
    for name, alt in near.items():
        assert means[512] < 0.6 * _rel(mean512, alt), (name, means[512],
                                                       _rel(mean512, alt))


# -- gradient descent (spec section 5) ------------------------------------------------
def test_train_gd_follows_its_linearisation():
    rng = np.random.default_rng(60)
    X = _ragged(rng, [3, 4, 5, 4])
    Xt = _ragged(rng, [3, 5])
    y = rng.standard_normal(4)
    k = RNTK(sigma_w=1.2, sigma_b=0.2, sigma_h=0.3, activation="erf")
    n, lr, steps = 384, 0.03, 60
    r = np.random.default_rng(61)
    p = finite.init_params(k, 2, n, r)
    h0, h0t = (finite.draw_initial_states(k, 4, n, r),
               finite.draw_initial_states(k, 2, n, r))
    hist = finite.train_gd(X, y, k, n, lr, steps, None, Xt, record_every=10,
                           init=(p, h0, h0t))
    np.testing.assert_array_equal(hist.steps, np.arange(0, steps + 1, 10))
    assert hist.test.shape == (7, 2) and hist.train.shape == (7, 4)
    # the linear model with the empirical NTK at initialisation, same discrete steps
    H0 = np.concatenate([h0, h0t], axis=1)
    K = finite.ntk_of_params(p, X + Xt, H0)
    f = finite.forward(p, X + Xt, H0)
    ftr, fte = f[:4].copy(), f[4:].copy()
    lin = [fte.copy()]
    for s in range(steps):
        res = ftr - y
        fte = fte - lr * K[4:, :4] @ res
        ftr = ftr - lr * K[:4, :4] @ res
        if (s + 1) % 10 == 0:
            lin.append(fte.copy())
    lin = np.array(lin)
    moved = np.abs(hist.test[-1] - hist.test[0]).max()
    assert moved > 0.1
    assert np.abs(hist.test - lin).max() < 0.1 * moved
    # the training loss decreases monotonically
    loss = ((hist.train - y) ** 2).sum(axis=1)
    assert np.all(np.diff(loss) < 0) and loss[-1] < 0.2 * loss[0]
    # init is not modified
    np.testing.assert_array_equal(finite.forward(p, X + Xt, H0), f)
