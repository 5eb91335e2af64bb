"""Tests of rntk_numba.gp: the NNGP posterior, the gradient-descent ensemble's mean and
covariance, the evidence, RNTKGaussianProcessRegressor and evidence_search."""

import doctest
import math
import pickle

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.stats import multivariate_normal, norm
from sklearn.utils.estimator_checks import parametrize_with_checks

from rntk_numba import RNTK, gram
from rntk_numba import gp as gp_module
from rntk_numba.gp import (GradientDescentEnsemble, RNTKGaussianProcessRegressor,
                           evidence_search, fit_output_scale_and_noise,
                           gradient_descent_ensemble, nngp_log_marginal_likelihood,
                           nngp_posterior)

TIMES = np.array([0.0, 0.05, 0.7, 4.0, np.inf])


def _ragged(rng, n, lo, hi, m=1):
    return [rng.standard_normal((int(T), m)) for T in rng.integers(lo, hi + 1, n)]


@pytest.fixture(scope="module")
def problem():
    """Both kernels of a small ragged problem (sigma_h > 0: same-sample diagonals)."""
    rng = np.random.default_rng(4)
    k = RNTK(sigma_b=0.2, sigma_h=0.4)
    X, Xt = _ragged(rng, 9, 3, 8), _ragged(rng, 5, 2, 9)
    Th, K = gram(X, kernel=k, kind="both")
    Ths, Ks = gram(Xt, X, kernel=k, kind="both")
    _, Kt = gram(Xt, kernel=k, kind="both")
    y = rng.standard_normal(9)
    return dict(k=k, X=X, Xt=Xt, Th=Th, K=K, Ths=Ths, Ks=Ks, Kt=Kt, y=y)


def _dense_ensemble(K, Ks, Kt, Theta, Thetas, y, s, lr=1.0, ridge=0.0, target_noise=0.0):
    """The NTK-GP by its literal formulas (dense inverse and matrix exponential)."""
    n = K.shape[0]
    Tr = Theta + ridge * np.eye(n)
    if math.isinf(s):
        A = Thetas @ np.linalg.inv(Tr)
    else:
        A = Thetas @ np.linalg.solve(Tr, np.eye(n) - expm(-lr * s * Tr))
    cov = Kt - A @ Ks.T - Ks @ A.T + A @ K @ A.T + target_noise * A @ A.T
    return A @ y, cov


def _psd(C, tol=1e-9):
    w = np.linalg.eigvalsh(C)
    return w[0] >= -tol * max(abs(w[-1]), 1.0)


# -- exact inference ---------------------------------------------------------------------
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_nngp_posterior_matches_dense_formula(problem, noise):
    K, Ks, Kt, y = problem["K"], problem["Ks"], problem["Kt"], problem["y"]
    mean, cov = nngp_posterior(K, Ks, Kt, y, noise=noise)
    Kr = K + noise * np.eye(9)
    np.testing.assert_allclose(mean, Ks @ np.linalg.solve(Kr, y), rtol=1e-7, atol=1e-9)
    ref = Kt - Ks @ np.linalg.solve(Kr, Ks.T)
    np.testing.assert_allclose(cov, ref, rtol=1e-7, atol=1e-9 * np.abs(Kt).max())
    np.testing.assert_array_equal(cov, cov.T)
    assert _psd(cov)
    # diagonal on request, from the full matrix or from the self-kernels alone
    from rntk_numba.engine import prepare
    from rntk_numba.sequences import pack
    self_k = prepare(pack(problem["Xt"]), None, problem["k"]).diag_nngp
    np.testing.assert_array_equal(self_k, np.diag(Kt))          # the same-sample diagonal
    m2, var = nngp_posterior(K, Ks, self_k, y, noise=noise, diag=True)
    np.testing.assert_allclose(var, np.diag(cov), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(m2, mean)
    # several outputs share the covariance
    M, C2 = nngp_posterior(K, Ks, Kt, np.stack([y, 2 * y], 1), noise=noise)
    np.testing.assert_allclose(M[:, 1], 2 * mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(C2, cov)


def test_posterior_at_the_training_set_shrinks_to_the_noise(problem):
    """At the training sequences (symmetric Gram as test-test kernel) the posterior
    variance is below both the prior variance and the noise."""
    K, y = problem["K"], problem["y"]
    _, var = nngp_posterior(K, K, K, y, noise=0.05, diag=True)
    assert np.all(var < np.diag(K)) and np.all(var < 0.05)


# -- the gradient-descent ensemble ------------------------------------------------------
@pytest.mark.parametrize("ridge, target_noise", [(0.0, 0.0), (0.4, 0.0), (0.2, 0.3)])
@pytest.mark.parametrize("readout_only", [False, True])
def test_ensemble_matches_dense_formula(problem, ridge, target_noise, readout_only):
    p = problem
    lr = 0.7
    Theta, Thetas = (p["K"], p["Ks"]) if readout_only else (p["Th"], p["Ths"])
    kw = {} if readout_only else dict(ntk_train=p["Th"], ntk_test_train=p["Ths"])
    mean, cov = gradient_descent_ensemble(p["K"], p["Ks"], p["Kt"], p["y"], TIMES, lr=lr,
                                          ridge=ridge, target_noise=target_noise, **kw)
    assert mean.shape == (5, 5) and cov.shape == (5, 5, 5)
    m_d, var = gradient_descent_ensemble(p["K"], p["Ks"], p["Kt"], p["y"], TIMES, lr=lr,
                                         ridge=ridge, target_noise=target_noise,
                                         diag=True, **kw)
    np.testing.assert_array_equal(m_d, mean)
    scale = np.abs(p["Kt"]).max()
    for i, s in enumerate(TIMES):
        if math.isinf(s) and ridge == 0.0:
            continue            # checked below (Theta is ill-conditioned: inverse vs eigh)
        ref_m, ref_c = _dense_ensemble(p["K"], p["Ks"], p["Kt"], Theta, Thetas, p["y"], s,
                                       lr, ridge, target_noise)
        np.testing.assert_allclose(mean[i], ref_m, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(cov[i], ref_c, rtol=1e-6, atol=1e-8 * scale)
        np.testing.assert_allclose(var[i], np.diag(ref_c), rtol=1e-6, atol=1e-8 * scale)
        np.testing.assert_array_equal(cov[i], cov[i].T)
        assert _psd(cov[i]), (s, np.linalg.eigvalsh(cov[i])[:2])


def test_ensemble_limits(problem):
    """s = 0: the prior; s -> inf: the closed form (kernel regression); read-out training
    at s = inf with ridge = target noise = noise is exactly the NNGP posterior."""
    p = problem
    K, Ks, Kt, y = p["K"], p["Ks"], p["Kt"], p["y"]
    ens = GradientDescentEnsemble(K, y, ntk_train=p["Th"], ridge=0.0)
    m0, c0 = ens.predict(Ks, Kt, 0.0, ntk_test_train=p["Ths"])
    np.testing.assert_array_equal(m0, 0.0)
    np.testing.assert_allclose(c0, Kt, rtol=1e-14)
    minf, cinf = ens.predict(Ks, Kt, np.inf, ntk_test_train=p["Ths"])
    A = p["Ths"] @ np.linalg.solve(p["Th"], np.eye(9))
    np.testing.assert_allclose(minf, A @ y, rtol=1e-6, atol=1e-8)
    ref = Kt - A @ Ks.T - Ks @ A.T + A @ K @ A.T
    np.testing.assert_allclose(cinf, ref, rtol=1e-5, atol=1e-7 * np.abs(Kt).max())
    # a long finite time approaches the limit continuously
    late = 1e6 / np.linalg.eigvalsh(p["Th"])[0]
    ml, cl = ens.predict(Ks, Kt, late, ntk_test_train=p["Ths"])
    np.testing.assert_allclose(ml, minf, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(cl, cinf, rtol=1e-6, atol=1e-9)
    # the training outputs interpolate at s = inf and have zero spread there
    mt, vt = ens.train(np.inf, diag=True)
    np.testing.assert_allclose(mt, y, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(vt, 0.0, atol=1e-7 * np.abs(K).max())
    # read-out only, s = inf, ridge = target noise = noise: the GP posterior
    s2 = 0.25
    mg, cg = gradient_descent_ensemble(K, Ks, Kt, y, np.inf, ridge=s2, target_noise=s2)
    mp, cp = nngp_posterior(K, Ks, Kt, y, noise=s2)
    np.testing.assert_allclose(mg, mp, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cg, cp, rtol=1e-8, atol=1e-11)
    # without the target noise the ensemble is narrower than the posterior
    _, c_ens = gradient_descent_ensemble(K, Ks, Kt, y, np.inf, ridge=s2)
    assert _psd(cp - c_ens) and np.all(np.diag(c_ens) < np.diag(cp))


def test_ensemble_time_scaling_shapes_and_flow_mean(problem):
    from rntk_numba.analysis import gradient_flow_predict
    p = problem
    kw = dict(ntk_train=p["Th"], ntk_test_train=p["Ths"])
    a = gradient_descent_ensemble(p["K"], p["Ks"], p["Kt"], p["y"], TIMES, lr=2.0, **kw)
    b = gradient_descent_ensemble(p["K"], p["Ks"], p["Kt"], p["y"], 2.0 * TIMES, **kw)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-12)
    # the mean is GradientFlow's prediction
    np.testing.assert_allclose(a[0], gradient_flow_predict(p["Th"], p["Ths"], p["y"],
                                                           TIMES, lr=2.0), rtol=1e-12)
    m1, c1 = gradient_descent_ensemble(p["K"], p["Ks"], p["Kt"], p["y"], 0.7, lr=2.0, **kw)
    assert m1.shape == (5,) and c1.shape == (5, 5)
    np.testing.assert_allclose(c1, a[1][2], rtol=1e-13)


def test_ensemble_errors(problem):
    p = problem
    K, Ks, Kt, y = p["K"], p["Ks"], p["Kt"], p["y"]
    with pytest.raises(ValueError, match="both ntk_train and ntk_test_train"):
        gradient_descent_ensemble(K, Ks, Kt, y, 1.0, ntk_train=p["Th"])
    ens = GradientDescentEnsemble(K, y, ntk_train=p["Th"])
    with pytest.raises(ValueError, match="ntk_test_train is required"):
        ens.predict(Ks, Kt, 1.0)
    with pytest.raises(ValueError, match="only the read-out"):
        GradientDescentEnsemble(K, y).predict(Ks, Kt, 1.0, ntk_test_train=p["Ths"])
    with pytest.raises(ValueError, match="diag=True"):
        ens.predict(Ks, np.diag(Kt), 1.0, ntk_test_train=p["Ths"])
    with pytest.raises(ValueError, match="K_test_test"):
        ens.predict(Ks, Kt[:3, :3], 1.0, ntk_test_train=p["Ths"])
    with pytest.raises(ValueError, match="symmetric"):
        ens.predict(Ks, Kt + np.triu(np.ones((5, 5)), 1), 1.0, ntk_test_train=p["Ths"])
    with pytest.raises(ValueError, match="K_test_train"):
        ens.predict(Ks.T, Kt, 1.0, ntk_test_train=p["Ths"])
    with pytest.raises(ValueError, match="ntk_test_train"):
        ens.predict(Ks, Kt, 1.0, ntk_test_train=p["Ths"][:2])
    with pytest.raises(ValueError, match="times"):
        ens.predict(Ks, Kt, -1.0, ntk_test_train=p["Ths"])
    with pytest.raises(ValueError, match="target_noise"):
        ens.predict(Ks, Kt, 1.0, ntk_test_train=p["Ths"], target_noise=-1.0)
    with pytest.raises(ValueError, match="ntk_train"):
        GradientDescentEnsemble(K, y, ntk_train=p["Th"][:4, :4])
    with pytest.raises(ValueError, match="y must have"):
        GradientDescentEnsemble(K, y[:3])
    with pytest.raises(ValueError, match="noise"):
        nngp_posterior(K, Ks, Kt, y, noise=-0.1)
    with pytest.raises(ValueError, match="NaN"):
        nngp_posterior(K, np.full_like(Ks, np.nan), Kt, y)


# -- Monte Carlo: finite-width networks trained by gradient descent ----------------------
def _mc_errors(outputs, mean, var):
    em, ev = outputs.mean(axis=0), outputs.var(axis=0, ddof=1)
    return (float(np.linalg.norm(em - mean) / np.sqrt(var.mean())),
            float(np.linalg.norm(ev - var) / np.linalg.norm(var)))


@pytest.fixture(scope="module")
def mc_problem():
    rng = np.random.default_rng(1)
    k = RNTK(sigma_b=0.2, sigma_h=0.3)
    X, Xt = _ragged(rng, 5, 3, 5), _ragged(rng, 3, 3, 5)
    y = rng.standard_normal(5)
    Th, K = gram(X, kernel=k, kind="both")
    Ths, Ks = gram(Xt, X, kernel=k, kind="both")
    _, Kt = gram(Xt, kernel=k, kind="both")
    return k, X, Xt, y, Th, K, Ths, Ks, Kt


@pytest.mark.slow
def test_monte_carlo_ntk_ensemble_approaches_the_formulas(mc_problem):
    """Mean and variance over 800 seeds of finite RNNs (every parameter trained by
    full-batch gradient descent, small learning rate) approach the NTK-GP formulas as
    the width grows: the error at 4x the width is much smaller (it falls ~1/width;
    Monte Carlo floor ~0.035 for the mean, ~0.05 for the variance)."""
    from threadpoolctl import threadpool_limits

    from rntk_numba.finite import train_gd

    k, X, Xt, y, Th, K, Ths, Ks, Kt = mc_problem
    lr, steps = 0.2 / np.linalg.eigvalsh(Th)[-1], 40
    mean, var = gradient_descent_ensemble(K, Ks, Kt, y, steps * lr, ntk_train=Th,
                                          ntk_test_train=Ths, lr=1.0, diag=True)
    errors = {}
    with threadpool_limits(1):
        for width in (10, 40):
            out = np.array([train_gd(X, y, k, width, lr, steps,
                                     np.random.default_rng([width, s]), Xt,
                                     record_every=steps).test[-1] for s in range(800)])
            errors[width] = _mc_errors(out, mean, var)
    (m10, v10), (m40, v40) = errors[10], errors[40]
    assert m40 < 0.5 * m10 and v40 < 0.5 * v10, errors
    assert m40 < 0.1 and v40 < 0.2, errors


@pytest.mark.slow
def test_monte_carlo_readout_ensemble_approaches_the_formulas(mc_problem):
    """The same for read-out-only training (tangent kernel = the NNGP): the read-out of
    the library's finite RNN (random features phi, f = phi . v) trained by gradient
    flow, solved exactly per seed (the model is linear in v: no step-size bias and no
    divergence of narrow networks whose feature Gram is far larger than K)."""
    from threadpoolctl import threadpool_limits

    from rntk_numba.analysis import GradientFlow
    from rntk_numba.finite import draw_initial_states, init_params, per_sample_gradients

    k, X, Xt, y, Th, K, Ths, Ks, Kt = mc_problem
    s = 8.0 / np.linalg.eigvalsh(K)[-1]
    mean, var = gradient_descent_ensemble(K, Ks, Kt, y, s, diag=True)
    errors = {}
    with threadpool_limits(1):
        for width in (10, 40):
            out = []
            for seed in range(800):
                rng = np.random.default_rng([width, seed])
                params = init_params(k, 1, width, rng)
                phi = per_sample_gradients(params, X, draw_initial_states(
                    k, len(X), width, rng))["v"]                     # f = phi . v
                phit = per_sample_gradients(params, Xt, draw_initial_states(
                    k, len(Xt), width, rng))["v"]
                flow = GradientFlow(phi @ phi.T, y, f0_train=phi @ params.v)
                out.append(flow.predict(phit @ phi.T, s, f0_test=phit @ params.v))
            errors[width] = _mc_errors(np.array(out), mean, var)
    (m10, v10), (m40, v40) = errors[10], errors[40]
    assert m40 < 0.5 * m10 and v40 < 0.5 * v10, errors
    assert m40 < 0.1 and v40 < 0.2, errors


# -- the evidence -------------------------------------------------------------------------
def test_log_marginal_likelihood_matches_scipy(problem):
    K, y = problem["K"], problem["y"]
    for a, s in [(1.0, 0.1), (0.3, 2.0), (5.0, 1e-3)]:
        ref = multivariate_normal(np.zeros(9), a * K + s * np.eye(9)).logpdf(y)
        assert nngp_log_marginal_likelihood(K, y, noise=s, output_scale=a) == \
            pytest.approx(ref, rel=1e-9)
    Y = np.stack([y, -y + 1.0], 1)
    ref = sum(multivariate_normal(np.zeros(9), K + 0.2 * np.eye(9)).logpdf(c) for c in Y.T)
    assert nngp_log_marginal_likelihood(K, Y, noise=0.2) == pytest.approx(ref, rel=1e-9)


def test_evidence_fit_is_the_maximum(problem):
    """The profile search finds the 2-D maximum (checked by a generic optimiser)."""
    from scipy.optimize import minimize
    K, y = problem["K"], problem["y"]
    rng = np.random.default_rng(0)
    y = np.linalg.cholesky(2.0 * K + 0.3 * np.eye(9)) @ rng.standard_normal(9)
    a, s, lml = fit_output_scale_and_noise(K, y)
    assert lml == pytest.approx(nngp_log_marginal_likelihood(K, y, noise=s,
                                                             output_scale=a), rel=1e-12)

    def neg(t):
        return -multivariate_normal(np.zeros(9), math.exp(t[0]) * K
                                    + math.exp(t[1]) * np.eye(9)).logpdf(y)
    best = min((minimize(neg, x0, method="Nelder-Mead",
                         options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
                for x0 in ([0.0, -1.0], [1.0, -3.0], [-1.0, 0.0])), key=lambda r: r.fun)
    assert lml >= -best.fun - 1e-6
    assert a == pytest.approx(math.exp(best.x[0]), rel=1e-2)


# -- the estimator --------------------------------------------------------------------
def _gp(**kw):
    base = dict(sigma_b=0.2, sigma_h=0.4)
    base.update(kw)
    return RNTKGaussianProcessRegressor(**base)


@pytest.mark.parametrize("normalize_y", [False, True])
def test_regressor_nngp_matches_direct_formula(problem, normalize_y):
    p = problem
    y = 3.0 + 2.0 * p["y"]
    gp = _gp(optimizer=None, noise=0.05, output_scale=2.0,
             normalize_y=normalize_y).fit(p["X"], y)
    c = 2.0 / np.mean(np.diag(p["K"]))
    ym, ys = (y.mean(), y.std()) if normalize_y else (0.0, 1.0)
    yn = (y - ym) / ys
    Kr = c * p["K"] + 0.05 * np.eye(9)
    ref_m = ym + ys * (c * p["Ks"]) @ np.linalg.solve(Kr, yn)
    ref_c = ys ** 2 * (c * p["Kt"] - c ** 2 * p["Ks"] @ np.linalg.solve(Kr, p["Ks"].T)
                       + 0.05 * np.eye(5))
    mean, cov = gp.predict(p["Xt"], return_cov=True)
    np.testing.assert_allclose(mean, ref_m, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cov, ref_c, rtol=1e-7, atol=1e-10)
    m2, std = gp.predict(p["Xt"], return_std=True)
    np.testing.assert_array_equal(m2, mean)
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov)), rtol=1e-9)
    np.testing.assert_array_equal(gp.predict(p["Xt"]), mean)
    _, latent = gp.predict(p["Xt"], return_std=True, observation_noise=False)
    np.testing.assert_allclose(latent ** 2, std ** 2 - 0.05 * ys ** 2, rtol=1e-9)
    ref_lml = multivariate_normal(np.zeros(9), Kr).logpdf(yn)
    assert gp.log_marginal_likelihood_value_ == pytest.approx(ref_lml, rel=1e-9)
    assert gp.log_marginal_likelihood() == pytest.approx(ref_lml, rel=1e-9)
    assert gp.time_ is None and gp.ensemble_ is None


@pytest.mark.parametrize("posterior, time", [("ntk", None), ("ntk", 0.0), ("ntk", 3.0),
                                             ("nngp", 0.0), ("nngp", 3.0)])
def test_regressor_ensemble_matches_function(problem, posterior, time):
    p = problem
    gp = _gp(posterior=posterior, time=time).fit(p["X"], p["y"])
    a, s = gp.output_scale_, gp.noise_
    c = a / np.mean(np.diag(p["K"]))
    ym, ys = p["y"].mean(), p["y"].std()
    kw = dict(ntk_train=c * p["Th"], ntk_test_train=c * p["Ths"]) \
        if posterior == "ntk" else {}
    t = np.inf if time is None else time
    ref_m, ref_c = gradient_descent_ensemble(c * p["K"], c * p["Ks"], c * p["Kt"],
                                             (p["y"] - ym) / ys, t, ridge=s,
                                             target_noise=s, **kw)
    mean, cov = gp.predict(p["Xt"], return_cov=True)
    np.testing.assert_allclose(mean, ym + ys * ref_m, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, ys ** 2 * (ref_c + s * np.eye(5)), rtol=1e-9,
                               atol=1e-12)
    assert gp.time_ == t and gp.ridge_ == s
    if time == 0.0:                         # the prior (plus noise), centred on the mean
        np.testing.assert_allclose(mean, ym)
        np.testing.assert_allclose(cov, ys ** 2 * (c * p["Kt"] + s * np.eye(5)),
                                   rtol=1e-12)
    _, std = gp.predict(p["Xt"], return_std=True)
    np.testing.assert_allclose(std, np.sqrt(np.diag(cov)), rtol=1e-9)
    assert _psd(cov)


def test_regressor_intervals_are_calibrated_on_gp_data():
    """Targets drawn from the NNGP prior plus noise: with default arguments (evidence
    fit of output scale and noise) the 90 % intervals cover about 90 % of new targets,
    for the exact posterior and for the trained NTK ensemble."""
    rng = np.random.default_rng(12)
    k = RNTK(sigma_b=0.2, sigma_h=0.2)
    Z = _ragged(rng, 500, 4, 12)
    K = gram(Z, kernel=k, kind="nngp")
    f = np.linalg.cholesky(K + 1e-10 * np.eye(500)) @ rng.standard_normal(500)
    y = 5.0 + 3.0 * (f + math.sqrt(0.1 * np.mean(np.diag(K))) * rng.standard_normal(500))
    tr, te = np.arange(250), np.arange(250, 500)
    Xtr, Xte = [Z[i] for i in tr], [Z[i] for i in te]
    z90 = norm.ppf(0.95)
    for posterior in ("nngp", "ntk"):
        gp = RNTKGaussianProcessRegressor(sigma_b=0.2, sigma_h=0.2,
                                          posterior=posterior).fit(Xtr, y[tr])
        mean, std = gp.predict(Xte, return_std=True)
        cover = np.mean(np.abs(y[te] - mean) <= z90 * std)
        assert 0.84 <= cover <= 0.96, (posterior, cover)
    # the fitted noise is near the truth (0.1 of the mean prior variance, times 9)
    assert gp.noise_ * gp.y_train_std_ ** 2 == pytest.approx(
        9 * 0.1 * np.mean(np.diag(K)), rel=0.5)


def test_sample_y(problem):
    p = problem
    gp = _gp().fit(p["X"], p["y"])
    mean, cov = gp.predict(p["Xt"], return_cov=True)
    S = gp.sample_y(p["Xt"], n_samples=20000, random_state=3)
    assert S.shape == (5, 20000)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(S.mean(axis=1), mean, atol=0.05 * sd.max())
    np.testing.assert_allclose(np.cov(S), cov, atol=0.05 * np.diag(cov).max())
    np.testing.assert_array_equal(gp.sample_y(p["Xt"], 3, random_state=1),
                                  gp.sample_y(p["Xt"], 3, random_state=1))
    assert gp.sample_y(p["Xt"][:1]).shape == (1, 1)
    with pytest.raises(ValueError, match="n_samples"):
        gp.sample_y(p["Xt"], n_samples=0)


def test_regressor_clone_pickle_and_errors(problem, tmp_path):
    from sklearn.base import clone

    import rntk_numba
    assert rntk_numba.RNTKGaussianProcessRegressor is RNTKGaussianProcessRegressor
    assert rntk_numba.evidence_search is evidence_search
    p = problem
    gp = _gp(posterior="ntk", time=2.0)
    c = clone(gp)
    assert c.get_params() == gp.get_params()
    gp.fit(p["X"], p["y"])
    back = pickle.loads(pickle.dumps(gp))
    m1, s1 = gp.predict(p["Xt"], return_std=True)
    m2, s2 = back.predict(p["Xt"], return_std=True)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(s1, s2)
    from sklearn.metrics import r2_score
    assert gp.score(p["Xt"], m1) == pytest.approx(1.0)
    assert gp.score(p["X"], p["y"]) == pytest.approx(r2_score(p["y"], gp.predict(p["X"])))
    # n_jobs does not change any bit
    g1 = _gp(n_jobs=1).fit(p["X"], p["y"])
    g2 = _gp(n_jobs=2).fit(p["X"], p["y"])
    np.testing.assert_array_equal(g1.predict(p["Xt"], return_std=True)[1],
                                  g2.predict(p["Xt"], return_std=True)[1])
    with pytest.raises(RuntimeError, match="At most one"):
        gp.predict(p["Xt"], return_std=True, return_cov=True)
    with pytest.raises(ValueError, match="posterior"):
        _gp(posterior="mlp").fit(p["X"], p["y"])
    with pytest.raises(ValueError, match="time"):
        _gp(time=-1.0).fit(p["X"], p["y"])
    with pytest.raises(ValueError, match="optimizer"):
        _gp(optimizer="lbfgs").fit(p["X"], p["y"])
    with pytest.raises(ValueError, match="output_scale"):
        _gp(output_scale=0.0).fit(p["X"], p["y"])
    with pytest.raises(ValueError, match="ridge"):
        _gp(ridge=-1.0).fit(p["X"], p["y"])
    with pytest.raises(ValueError, match="one output"):
        _gp().fit(p["X"], np.stack([p["y"], p["y"]], 1))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        _gp().fit(p["X"], p["y"][:4])
    with pytest.raises(ValueError, match="series 1"):
        _gp().fit([np.ones(3), np.array([1.0, np.nan, 2.0])], [0.0, 1.0])
    with pytest.raises(ValueError, match="channels"):
        gp.predict([np.ones((4, 2))])
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        _gp().predict(p["Xt"])


def test_evidence_search_picks_the_largest_evidence(problem, tmp_path):
    from rntk_numba import GramStore
    p = problem
    grid = {"sigma_w": [1.2, math.sqrt(2.0)], "sigma_b": [0.0, 0.2], "sigma_h": [0.0, 0.4]}
    store = GramStore(tmp_path / "store")
    gp = evidence_search(p["X"], p["y"], grid, cache=store)
    rows = gp.evidence_results_
    assert len(rows) == 8 and sorted(r["rank"] for r in rows) == list(range(1, 9))
    lmls = [r["log_marginal_likelihood"] for r in rows]
    assert gp.best_index_ == int(np.argmax(lmls)) and rows[gp.best_index_]["rank"] == 1
    best = rows[gp.best_index_]
    assert (gp.sigma_w, gp.sigma_b, gp.sigma_h) == (best["sigma_w"], best["sigma_b"],
                                                    best["sigma_h"])
    assert gp.log_marginal_likelihood_value_ == pytest.approx(max(lmls), rel=1e-12)
    # every row's evidence is that of a fit with the same setting
    for r in rows[:3]:
        ref = RNTKGaussianProcessRegressor(sigma_w=r["sigma_w"], sigma_b=r["sigma_b"],
                                           sigma_h=r["sigma_h"]).fit(p["X"], p["y"])
        assert ref.log_marginal_likelihood_value_ == pytest.approx(
            r["log_marginal_likelihood"], rel=1e-9)
    # the refit model equals a plain fit of the winner
    plain = RNTKGaussianProcessRegressor(**{k: best[k] for k in
                                            ("sigma_w", "sigma_b", "sigma_h")})
    np.testing.assert_allclose(gp.predict(p["Xt"], return_std=True)[1],
                               plain.fit(p["X"], p["y"]).predict(p["Xt"],
                                                                 return_std=True)[1],
                               rtol=1e-9)
    # a second search reads every Gram from the store and finds the same
    hits = store.stats["hits"]
    again = evidence_search(p["X"], p["y"], grid, cache=store)
    assert store.stats["hits"] >= hits + 8
    assert [r["log_marginal_likelihood"] for r in again.evidence_results_] == lmls
    # explicit kernels; posterior="ntk" is passed through
    ks = [RNTK(sigma_b=0.2), RNTK(sigma_b=0.2, sigma_h=0.4)]
    g2 = evidence_search(p["X"], p["y"], kernels=ks, posterior="ntk", time=5.0)
    assert g2.posterior == "ntk" and g2.time_ == 5.0 and g2.ensemble_ is not None
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        evidence_search(p["X"], p["y"], {"gamma": [1.0]})
    with pytest.raises(ValueError, match="both in param_grid"):
        evidence_search(p["X"], p["y"], {"sigma_b": [0.0]}, sigma_b=0.1)
    with pytest.raises(TypeError, match="RNTK"):
        evidence_search(p["X"], p["y"], kernels=[{"sigma_w": 1.0}])


# the scikit-learn checks that cannot apply to estimators of sequence sets
_ANY_LENGTH = ("series of any length are accepted (an (N, T) array is N series of T "
               "steps, not T features): no fixed n_features_in_")


@pytest.mark.slow
@parametrize_with_checks([RNTKGaussianProcessRegressor()],
                         expected_failed_checks=lambda est: {
                             "check_n_features_in": _ANY_LENGTH,
                             "check_n_features_in_after_fitting": _ANY_LENGTH},
                         xfail_strict=True)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_docstring_examples():
    from rntk_numba.gp import inference, regressor
    attempted = 0
    for module in (gp_module, inference, regressor):
        res = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert res.failed == 0, module.__name__
        attempted += res.attempted
    assert attempted >= 4


@pytest.mark.slow
def test_regression_script_intervals_quick(tmp_path, capsys):
    """scripts/regression.py --intervals --quick keeps working (CSV, timing, PNG)."""
    import csv
    import importlib.util
    import pathlib

    pytest.importorskip("matplotlib")
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "regression.py"
    if not path.exists():
        pytest.skip(f"{path} not in this checkout")
    spec = importlib.util.spec_from_file_location("_script_regression_gp", path)
    reg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reg)
    out = tmp_path / "iv"
    reg.main(["--intervals", "--quick", "--datasets", "sine", "--n-train", "40",
              "--n-test", "30", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "intervals.csv")))
    sets = {r["dataset"] for r in rows}
    assert sets == {"sine"}
    assert {r["method"] for r in rows} == set(reg.INTERVAL_METHODS)
    for r in rows:
        assert 0.0 <= float(r["coverage90"]) <= 1.0 and math.isfinite(float(r["nlpd"]))
    timing = list(csv.DictReader(open(out / "intervals_timing.csv")))
    assert len(timing) == len(sets) and all(float(t["evidence_s"]) > 0 for t in timing)
    assert (out / "intervals.png").stat().st_size > 0
    assert "search over 27 RNTK settings" in capsys.readouterr().out
    reg.main(["--intervals", "--replot", "--no-plot", "--out", str(out)])
    assert "re-read" in capsys.readouterr().out
