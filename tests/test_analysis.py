"""Tests of rntk_numba.analysis: gradient-flow prediction and sensitivity (spec 4, 5)."""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from rntk_numba import RNTK, gram
from rntk_numba.analysis import (GradientFlow, flatness, gradient_flow_predict,
                                 kernel_gradient, recommend_hyperparameters,
                                 sensitivity, sensitivity_profile)


def _ragged(rng, n, lo, hi, m=1):
    return [rng.standard_normal((int(T), m)) for T in rng.integers(lo, hi + 1, n)]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    k = RNTK(sigma_b=0.2, sigma_h=0.3)
    X = _ragged(rng, 9, 3, 8)
    Xt = _ragged(rng, 4, 3, 8)
    K = gram(X, kernel=k)
    Ks = gram(Xt, X, kernel=k)
    y = rng.standard_normal(9)
    return K, Ks, y, rng.standard_normal(9), rng.standard_normal(4)


# -- gradient flow ---------------------------------------------------------------------
@pytest.mark.parametrize("ridge", [0.0, 0.4])
def test_gradient_flow_matches_ode(problem, ridge):
    """Closed form == numerical integration of df/ds = -lr [K (f - y) + ridge (f - f0)]
    on the training set, with the induced test dynamics
    df*/ds = -lr [K* (f - y) + ridge (f* - f0*)]."""
    K, Ks, y, f0, f0t = problem
    lr = 0.3
    n = K.shape[0]

    def rhs(_, z):
        f, ft = z[:n], z[n:]
        r = f - y
        return np.concatenate([-lr * (K @ r + ridge * (f - f0)),
                               -lr * (Ks @ r + ridge * (ft - f0t))])

    times = np.array([0.0, 0.05, 0.4, 2.0, 9.0])
    sol = solve_ivp(rhs, (0.0, times[-1]), np.concatenate([f0, f0t]), t_eval=times,
                    method="DOP853", rtol=1e-11, atol=1e-12)
    assert sol.success
    test, train = gradient_flow_predict(K, Ks, y, times, lr=lr, ridge=ridge,
                                        f0_train=f0, f0_test=f0t, return_train=True)
    assert test.shape == (5, 4) and train.shape == (5, 9)
    np.testing.assert_allclose(train, sol.y[:n].T, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(test, sol.y[n:].T, rtol=1e-8, atol=1e-9)


def test_infinite_time_is_kernel_regression(problem):
    K, Ks, y, f0, f0t = problem
    f = gradient_flow_predict(K, Ks, y, np.inf)
    np.testing.assert_allclose(f, Ks @ np.linalg.solve(K, y), rtol=1e-8, atol=1e-10)
    flow = GradientFlow(K, y)
    np.testing.assert_allclose(flow.train(np.inf), y, rtol=1e-8, atol=1e-10)
    lam = 0.7
    fr = gradient_flow_predict(K, Ks, y, np.inf, ridge=lam)
    np.testing.assert_allclose(fr, Ks @ np.linalg.solve(K + lam * np.eye(9), y),
                               rtol=1e-10, atol=1e-12)
    from sklearn.kernel_ridge import KernelRidge
    kr = KernelRidge(alpha=lam, kernel="precomputed").fit(K, y)
    np.testing.assert_allclose(fr, kr.predict(Ks), rtol=1e-9, atol=1e-12)
    # with an initial function the limit is f0* + kernel regression of the residual
    f = gradient_flow_predict(K, Ks, y, np.inf, f0_train=f0, f0_test=f0t)
    np.testing.assert_allclose(f, f0t + Ks @ np.linalg.solve(K, y - f0), rtol=1e-8,
                               atol=1e-10)
    # a long finite time approaches the limit continuously
    late = gradient_flow_predict(K, Ks, y, 1e9 / np.linalg.eigvalsh(K)[0])
    np.testing.assert_allclose(late, gradient_flow_predict(K, Ks, y, np.inf),
                               rtol=1e-7, atol=1e-9)


def test_singular_gram_uses_pseudo_inverse():
    """Duplicated training sequences (sigma_h = 0) make K singular: s = inf is the
    minimum-norm interpolant and finite times grow linearly along the null space
    without affecting predictions."""
    rng = np.random.default_rng(3)
    k = RNTK(sigma_b=0.1)
    base = _ragged(rng, 4, 3, 6)
    X = base + [base[0], base[2]]
    Xt = _ragged(rng, 3, 3, 6)
    K, Ks = gram(X, kernel=k), gram(Xt, X, kernel=k)
    y = rng.standard_normal(4)
    y = np.concatenate([y, y[[0, 2]]])       # consistent targets for the duplicates
    f = gradient_flow_predict(K, Ks, y, np.inf)
    np.testing.assert_allclose(f, Ks @ np.linalg.pinv(K, rcond=1e-10, hermitian=True) @ y,
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(GradientFlow(K, y).train(np.inf), y, rtol=1e-7,
                               atol=1e-9)
    late = gradient_flow_predict(K, Ks, y, 1e6)
    np.testing.assert_allclose(late, f, rtol=1e-6, atol=1e-8)


def test_gradient_flow_time_scaling_and_shapes(problem):
    K, Ks, y, *_ = problem
    times = [0.0, 0.3, 1.7, np.inf]
    a = gradient_flow_predict(K, Ks, y, times, lr=2.0)
    b = gradient_flow_predict(K, Ks, y, [2.0 * t for t in times], lr=1.0)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(a[0], 0.0)                       # f_0 = 0
    one = gradient_flow_predict(K, Ks, y, 0.3, lr=2.0)
    assert one.shape == (4,)
    np.testing.assert_allclose(one, a[1], rtol=1e-14)
    Y2 = np.stack([y, -2.0 * y], axis=1)
    multi = gradient_flow_predict(K, Ks, Y2, times, lr=2.0)
    assert multi.shape == (4, 4, 2)
    np.testing.assert_allclose(multi[..., 0], a, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(multi[..., 1], -2.0 * a, rtol=1e-12, atol=1e-14)


def test_gradient_flow_errors(problem):
    K, Ks, y, *_ = problem
    with pytest.raises(ValueError, match="times"):
        gradient_flow_predict(K, Ks, y, [-1.0])
    with pytest.raises(ValueError, match="times"):
        gradient_flow_predict(K, Ks, y, [np.nan])
    with pytest.raises(ValueError, match="symmetric"):
        gradient_flow_predict(K + np.triu(np.ones_like(K), 1), Ks, y, 1.0)
    with pytest.raises(ValueError, match="square"):
        gradient_flow_predict(Ks, Ks, y, 1.0)
    with pytest.raises(ValueError, match="K_test_train"):
        gradient_flow_predict(K, Ks.T, y, 1.0)
    with pytest.raises(ValueError, match="y must have"):
        gradient_flow_predict(K, Ks, y[:-1], 1.0)
    with pytest.raises(ValueError, match="lr"):
        gradient_flow_predict(K, Ks, y, 1.0, lr=0.0)
    with pytest.raises(ValueError, match="ridge"):
        gradient_flow_predict(K, Ks, y, 1.0, ridge=-1.0)
    with pytest.raises(ValueError, match="f0_test"):
        gradient_flow_predict(K, Ks, y, 1.0, f0_test=np.zeros(3))
    with pytest.warns(RuntimeWarning, match="positive semi-definite"):
        GradientFlow(K - 2 * np.linalg.eigvalsh(K)[-1] * np.eye(9), y)


def test_finite_rnn_tracks_kernel_prediction_as_width_grows():
    """A finite RNN trained by full-batch GD (small lr) follows the kernel prediction
    with its own f0; the relative deviation shrinks as the width grows (seeded)."""
    from threadpoolctl import threadpool_limits

    from rntk_numba.finite import train_gd

    rng = np.random.default_rng(0)
    k = RNTK(sigma_b=0.1)
    X = _ragged(rng, 8, 4, 7)
    Xt = _ragged(rng, 4, 4, 7)
    y = rng.standard_normal(8)
    K, Ks = gram(X, kernel=k), gram(Xt, X, kernel=k)
    lr = 0.3 / np.linalg.eigvalsh(K)[-1]
    errors = {}
    with threadpool_limits(1):
        for width in (16, 256):
            e = []
            for seed in range(4):
                h = train_gd(X, y, k, width, lr, 40, np.random.default_rng(seed), Xt,
                             record_every=10)
                pred = gradient_flow_predict(K, Ks, y, h.steps, lr=lr,
                                             f0_train=h.train[0], f0_test=h.test[0])
                e.append(np.linalg.norm(h.test - pred)
                         / np.linalg.norm(h.test - h.test[0]))
            errors[width] = float(np.mean(e))
    assert errors[256] < 0.6 * errors[16], errors
    assert errors[256] < 0.35, errors


# -- sensitivity -------------------------------------------------------------------------
def _central_differences(x, y, kernel, kind, h):
    """Central differences of the cross kernel gram([x + h e], [y]), all at once."""
    T, m = x.shape
    steps = h * np.maximum(1.0, np.abs(x))
    copies = []
    for t in range(T):
        for c in range(m):
            for s in (1.0, -1.0):
                z = x.copy()
                z[t, c] += s * steps[t, c]
                copies.append(z)
    G = gram(copies, [y], kernel=kernel, kind=kind)[:, 0]
    return ((G[0::2] - G[1::2]) / (2.0 * steps.reshape(-1))).reshape(T, m)


@pytest.mark.parametrize("kernel, shapes", [
    (RNTK(sigma_b=0.3, sigma_h=0.5), [(7, 7, 1), (9, 5, 2)]),
    (RNTK(sigma_w=1.2, sigma_b=0.2, sigma_h=0.4, activation="erf"), [(6, 9, 1),
                                                                      (8, 8, 3)]),
    (RNTK(n_layers=3, sigma_b=0.1, sigma_h=0.3), [(4, 8, 2), (8, 3, 1)]),
    (RNTK(n_layers=2, sigma_w=1.0, sigma_h=0.7, activation="erf"), [(5, 5, 2)]),
])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_kernel_gradient_matches_finite_differences(kernel, shapes, kind):
    rng = np.random.default_rng(11)
    for T, T2, m in shapes:
        x, y = rng.standard_normal((T, m)), rng.standard_normal((T2, m))
        values, grad = kernel_gradient([x], [y], kernel=kernel, kind=kind)
        ref = gram([x], [y], kernel=kernel, kind=kind)[0, 0]
        assert values[0] == pytest.approx(ref, rel=1e-13)
        fd = _central_differences(x, y, kernel, kind, 1e-5)
        scale = np.abs(fd).max()
        np.testing.assert_allclose(grad[0], fd, atol=1e-7 * scale, rtol=0)


def test_kernel_gradient_rank_one_first_step():
    """Univariate, equal lengths, sb = sh = 0: the first aligned block is exactly rank
    one; the convention (V' locally constant) is the true derivative. The engine's
    arccos near rho = 1 makes central differences noisy below h ~ 1e-4."""
    rng = np.random.default_rng(5)
    k = RNTK()
    x, y = rng.standard_normal((7, 1)), rng.standard_normal((7, 1))
    _, grad = kernel_gradient([x], [y], kernel=k)
    fd = _central_differences(x, y, k, "ntk", 1e-4)
    np.testing.assert_allclose(grad[0], fd, atol=1e-7 * np.abs(fd).max(), rtol=0)


def test_sensitivity_layout_broadcast_and_n_jobs():
    rng = np.random.default_rng(2)
    k = RNTK(sigma_b=0.2)
    X = _ragged(rng, 6, 3, 12, m=2)
    Y = _ragged(rng, 6, 3, 12, m=2)
    values, grad = kernel_gradient(X, Y, kernel=k)
    np.testing.assert_allclose(values, np.diag(gram(X, Y, kernel=k)), rtol=1e-13)
    S = sensitivity(X, Y, kernel=k)
    lengths = [len(x) for x in X]
    assert S.shape == (6, max(lengths))
    for p, T in enumerate(lengths):
        np.testing.assert_array_equal(S[p, :T], np.linalg.norm(grad[p, :T], axis=1))
        assert np.isnan(S[p, T:]).all()
    Se = sensitivity(X, Y, kernel=k, align="end")
    for p, T in enumerate(lengths):
        np.testing.assert_array_equal(Se[p, S.shape[1] - T:], S[p, :T])
    Sn = sensitivity(X, Y, kernel=k, normalize=True)
    np.testing.assert_allclose(np.nanmax(Sn, axis=1), 1.0)
    # bit-identical whatever the number of threads
    for n_jobs in (1, 2, 3):
        np.testing.assert_array_equal(sensitivity(X, Y, kernel=k, n_jobs=n_jobs), S)
    # a single sequence on either side is paired with every sequence of the other
    one = sensitivity(X[:1], Y, kernel=k)
    for p in range(6):
        np.testing.assert_array_equal(one[p], sensitivity(X[:1], Y[p:p + 1],
                                                          kernel=k)[0])
    assert sensitivity(X, Y[:1], kernel=k).shape == (6, max(lengths))


def test_sensitivity_errors():
    rng = np.random.default_rng(0)
    X, Y = _ragged(rng, 3, 3, 5), _ragged(rng, 2, 3, 5)
    with pytest.raises(ValueError, match="counts must match"):
        sensitivity(X, Y, kernel=RNTK())
    with pytest.raises(ValueError, match="channels"):
        sensitivity(X, _ragged(rng, 3, 3, 5, m=2), kernel=RNTK())
    with pytest.raises(ValueError, match="kind"):
        sensitivity(X, X, kernel=RNTK(), kind="both")
    with pytest.raises(ValueError, match="align"):
        sensitivity(X, X, kernel=RNTK(), align="middle")
    with pytest.raises(TypeError, match="RNTK"):
        sensitivity(X, X, kernel={"sigma_w": 1.0})
    with pytest.raises(ValueError, match="series 1"):
        sensitivity([np.ones(3), np.array([1.0, np.nan, 2.0])], X[:2], kernel=RNTK())


def test_sensitivity_profile_follows_the_paper_for_relu():
    """Spec section 4: with relu and su = 1, sw < sqrt(2) over-weights the last steps,
    sw > sqrt(2) the first ones, sw = sqrt(2) is roughly flat."""
    prof = {w: sensitivity_profile(RNTK(sigma_w=w), 40, n_pairs=48, seed=1)
            for w in (1.0, math.sqrt(2.0), 2.0)}
    assert prof[1.0][-1] > 100 * prof[1.0][0]
    assert prof[2.0][0] > 100 * prof[2.0][-1]
    flat = prof[math.sqrt(2.0)]
    assert flat.min() > 0.5 * flat.max()
    assert flatness(flat) < 0.3 < flatness(prof[1.0])


def test_sigma_b_reduces_weight_of_first_steps():
    """Spec section 4: sb > 0 lowers the first steps relative to the last ones."""
    def ratio(p):
        return p[:10].mean() / p[-10:].mean()
    base = ratio(sensitivity_profile(RNTK(), 40, n_pairs=48, seed=2))
    bias = ratio(sensitivity_profile(RNTK(sigma_b=2.0), 40, n_pairs=48, seed=2))
    assert base > 0.8 and bias < 0.6 * base


def test_recommendation_relu_is_near_sqrt2():
    rec = recommend_hyperparameters(60, activation="relu", n_pairs=32, seed=0)
    assert abs(rec.kernel.sigma_w - math.sqrt(2.0)) <= 0.1 + 1e-12, rec.table[:3]
    assert rec.kernel.sigma_u == 1.0 and rec.kernel.activation == "relu"
    assert rec.score == rec.table[0]["score"] == min(r["score"] for r in rec.table)
    assert len(rec.table) == 22 and rec.profile.shape == (60,)


def test_recommendation_ragged_lengths_and_overflow():
    """Lengths drawn from a ragged set; a relu sw large enough to overflow float64 on
    these lengths scores inf instead of winning or crashing."""
    rec = recommend_hyperparameters([30, 45, 60, 900], sigma_w=[1.0, 1.4, 6.0],
                                    n_pairs=12, seed=0)
    scores = {r["sigma_w"]: r["score"] for r in rec.table}
    assert scores[6.0] == math.inf
    assert rec.kernel.sigma_w == 1.4
    assert rec.profile.shape == (900,)


# -- the experiment scripts (smoke runs: they must keep working) -------------------------
def _script(name):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{path} not in this checkout")
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_scripts_quick_runs(tmp_path, capsys):
    import csv

    pytest.importorskip("matplotlib")
    _script("sensitivity").main(["--quick", "--T", "12", "--n-pairs", "6",
                                 "--rec-lengths", "8", "--out", str(tmp_path / "s")])
    rows = list(csv.DictReader(open(tmp_path / "s" / "sensitivity.csv")))
    assert {r["activation"] for r in rows} == {"relu", "erf"} and len(rows) == 2 * 13 * 12
    assert (tmp_path / "s" / "sensitivity.png").stat().st_size > 0
    _script("dynamics").main(["--quick", "--steps", "20", "--widths", "8", "16",
                              "--out", str(tmp_path / "d")])
    rows = list(csv.DictReader(open(tmp_path / "d" / "dynamics.csv")))
    assert {r["model"] for r in rows} == {"kernel", "kernel_expected", "rnn"}
    reg = _script("regression")
    reg.main(["--quick", "--sweeps", "T_var", "--repeats", "1", "--n-train", "40",
              "--n-test", "30", "--out", str(tmp_path / "r")])
    rows = list(csv.DictReader(open(tmp_path / "r" / "regression.csv")))
    assert {r["method"] for r in rows} == set(reg.METHODS)
    assert {int(r["T_var"]) for r in rows} == {0, 8}
    assert all(math.isfinite(float(r["snr_db"])) for r in rows)
    assert "rntk-best pad_end" in capsys.readouterr().out
