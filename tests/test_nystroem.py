"""RNTKNystroem: Nyström features of the RNTK, and the streaming ridge classifier."""

import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from rntk_numba import RNTK, RNTKNystroem, gram
from rntk_numba.linear import StreamingRidgeClassifier
from rntk_numba import nystroem
from rntk_numba.nystroem import PROJECTION_BLOCK

from reference import reference_gram


def _ragged(rng, n, lo=8, hi=30, m=None):
    shape = (lambda T: (T,)) if m is None else (lambda T: (T, m))
    return [rng.standard_normal(shape(int(T))) for T in rng.integers(lo, hi + 1, n)]


def _two_class(rng, n, lo=15, hi=45):
    X, y = [], []
    for i in range(n):
        T = int(rng.integers(lo, hi + 1))
        f = (1.0, 3.0)[i % 2]
        t = np.arange(T)
        X.append(np.sin(2 * np.pi * f * t / 30 + rng.uniform(0, 2 * np.pi))
                 + 0.15 * rng.standard_normal(T))
        y.append(i % 2)
    return X, np.array(y)


def _cosine_target(X, kernel, kind="ntk"):
    """The kernel the features approximate: the cross kernel k(X, X), cosine-scaled
    by the same-sample self-kernels."""
    K = gram(X, X, kernel=kernel, kind=kind)
    d = np.sqrt(np.diag(gram(X, kernel=kernel, kind=kind)))
    return K / d[:, None] / d[None, :]


def _rel(A, B, ord="fro"):
    return np.linalg.norm(A - B, ord) / np.linalg.norm(B, ord)


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("kw", [
    dict(),
    dict(sigma_h=0.5, sigma_b=0.1),
    dict(readout="mean", sigma_b=0.2),
    dict(activation="erf", n_layers=2, sigma_w=1.2),
    dict(kind="nngp", sigma_b=0.1),
])
def test_all_landmarks_reproduce_the_exact_gram(kw):
    rng = np.random.default_rng(0)
    X = _ragged(rng, 24, m=2)
    nys = RNTKNystroem(n_components=24, landmarks="uniform", random_state=0,
                       **kw).fit(X)
    F = nys.transform(X)
    target = _cosine_target(X, nys.kernel_, nys.kind)
    assert _rel(F @ F.T, target) < 1e-8
    # off the diagonal, the symmetric Gram (same-sample diagonal) agrees too
    G = gram(X, kernel=nys.kernel_, kind=nys.kind)
    d = np.sqrt(np.diag(G))
    off = ~np.eye(24, dtype=bool)
    np.testing.assert_allclose((F @ F.T)[off], (G / d[:, None] / d[None, :])[off],
                               rtol=1e-7, atol=1e-9)


def test_raw_kernel_features_match_the_literal_reference():
    rng = np.random.default_rng(1)
    X = _ragged(rng, 9, lo=3, hi=9)
    k = RNTK(sigma_b=0.3, sigma_w=1.3)
    nys = RNTKNystroem(n_components=9, landmarks="uniform", kernel_scaling="none",
                       sigma_b=0.3, sigma_w=1.3, random_state=0).fit(X)
    F = nys.transform(X)
    ref = reference_gram(X, X, kernel=k)
    off = ~np.eye(9, dtype=bool)
    np.testing.assert_allclose((F @ F.T)[off], ref[off], rtol=1e-8)
    # a series against itself as a cross pair goes through arccos near 1 (relu): the
    # reference's own rounding there is ~1e-8 relative
    np.testing.assert_allclose(np.diag(F @ F.T), np.diag(ref), rtol=1e-6)
    # a new series: its features' inner products with the landmarks' are the kernel
    x_new = [rng.standard_normal(7)]
    np.testing.assert_allclose(nys.transform(x_new) @ F.T,
                               reference_gram(x_new, X, kernel=k), rtol=1e-8)


@pytest.mark.parametrize("method", ["uniform", "rpcholesky"])
def test_error_falls_as_the_number_of_landmarks_grows(method):
    rng = np.random.default_rng(2)
    X = _ragged(rng, 60, lo=10, hi=40)
    target = _cosine_target(X, RNTK(sigma_b=0.2, readout="mean"))
    errs = []
    for m in (4, 16, 40, 60):
        e = [_rel((F := RNTKNystroem(n_components=m, landmarks=method, sigma_b=0.2,
                                     readout="mean", random_state=s).fit_transform(X))
                  @ F.T, target) for s in range(3)]
        errs.append(np.mean(e))
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[3] < 1e-8 and errs[0] > 1e-3


def test_rpcholesky_beats_uniform_on_rare_shapes():
    """90 % of the series share one shape, the rest are of six rare shapes: uniform
    landmarks mostly land in the common cluster, randomly pivoted Cholesky finds the
    rare ones."""
    rng = np.random.default_rng(3)
    X = []
    t = np.arange(30) / 30
    for i in range(150):
        f = 1.0 if i % 10 else 2.0 + (i // 10) % 6
        X.append(np.sin(2 * np.pi * f * t) + 0.005 * rng.standard_normal(30))
    kw = dict(n_components=12, sigma_b=0.1, readout="mean")
    target = _cosine_target(X, RNTK(sigma_b=0.1, readout="mean"))
    err = {}
    for method in ("uniform", "rpcholesky"):
        err[method] = np.mean([
            np.trace(target - (F := RNTKNystroem(landmarks=method, random_state=s, **kw)
                               .fit_transform(X)) @ F.T)
            for s in range(5)])
    assert err["rpcholesky"] < 0.6 * err["uniform"], err


def test_rpcholesky_never_picks_a_duplicate():
    rng = np.random.default_rng(4)
    base = _ragged(rng, 10)
    X = base + [x.copy() for x in base] + [x.copy() for x in base]
    nys = RNTKNystroem(n_components=10, random_state=0).fit(X)
    chosen = [X[i].tobytes() for i in nys.landmark_indices_]
    assert len(set(chosen)) == 10


# --------------------------------------------------------------------------- determinism
def test_features_are_bit_identical_over_jobs_chunks_and_backends():
    rng = np.random.default_rng(5)
    X = _ragged(rng, 2 * PROJECTION_BLOCK + 37, lo=5, hi=25)
    Xfit = X[:80]
    ref = RNTKNystroem(n_components=50, random_state=1, n_jobs=1).fit(Xfit)
    F = ref.transform(X)
    for kw in (dict(n_jobs=2), dict(chunk_size=7), dict(chunk_size=PROJECTION_BLOCK + 1),
               dict(chunk_size=100000, n_jobs=2)):
        nys = RNTKNystroem(n_components=50, random_state=1, **kw).fit(Xfit)
        np.testing.assert_array_equal(nys.landmark_indices_, ref.landmark_indices_)
        np.testing.assert_array_equal(nys.normalization_, ref.normalization_)
        np.testing.assert_array_equal(nys.transform(X), F)
    with joblib.parallel_config(backend="loky", n_jobs=2):
        np.testing.assert_array_equal(clone(ref).set_params(n_jobs=None).fit(Xfit)
                                      .transform(X), F)
    # one series alone has the bits it has among others
    np.testing.assert_array_equal(ref.transform([X[300]]), F[300:301])


def test_dask_backend_gives_the_same_bits():
    distributed = pytest.importorskip("distributed", reason="dask[distributed] extra "
                                      "not installed")
    rng = np.random.default_rng(6)
    X = _ragged(rng, 60)
    nys = RNTKNystroem(n_components=20, random_state=0, n_jobs=1).fit(X)
    F = nys.transform(X)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            np.testing.assert_array_equal(clone(nys).set_params(n_jobs=None).fit(X)
                                          .transform(X), F)


def test_float32_features_are_the_float64_ones_rounded():
    rng = np.random.default_rng(7)
    X = _ragged(rng, 30)
    F64 = RNTKNystroem(n_components=10, random_state=0).fit_transform(X)
    F32 = RNTKNystroem(n_components=10, random_state=0, dtype="float32").fit_transform(X)
    assert F32.dtype == np.float32
    np.testing.assert_array_equal(F32, F64.astype(np.float32))


# --------------------------------------------------------------------------- streaming
def test_transform_into_memmap_hdf5_and_batches(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(8)
    X = _ragged(rng, 45)
    y = np.arange(45)
    nys = RNTKNystroem(n_components=12, random_state=0, chunk_size=10,
                       dtype="float32").fit(X)
    F = nys.transform(X)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32,
                                   shape=F.shape)
    assert nys.transform(X, out=mm) is mm
    mm.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), F)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("phi", shape=F.shape, dtype="f4")
        nys.transform(X, out=d)
        np.testing.assert_array_equal(d[...], F)
    batches = list(nys.transform_batches(X, y))
    assert [b[0].shape[0] for b in batches] == [10, 10, 10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), F)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    np.testing.assert_array_equal(np.concatenate(list(nys.transform_batches(X))), F)
    with pytest.raises(ValueError, match=r"out has shape \(45, 11\), expected \(45, 12\)"):
        nys.transform(X, out=np.empty((45, 11)))


def test_landmark_gram_goes_through_the_store(tmp_path):
    from rntk_numba import GramStore
    rng = np.random.default_rng(9)
    X = _ragged(rng, 30)
    store = GramStore(tmp_path / "cache")
    kw = dict(n_components=10, random_state=0, landmarks="uniform")
    a = RNTKNystroem(cache=store, **kw).fit(X)
    assert len(list(store.entries())) == 1
    b = RNTKNystroem(cache=store, **kw).fit(X)
    c = RNTKNystroem(**kw).fit(X)
    np.testing.assert_array_equal(a.normalization_, b.normalization_)
    np.testing.assert_array_equal(a.normalization_, c.normalization_)
    # rpcholesky has the landmark Gram from its selection: nothing is stored, and the
    # cache changes no bit
    d = RNTKNystroem(n_components=10, random_state=0, cache=store).fit(X)
    e = RNTKNystroem(n_components=10, random_state=0).fit(X)
    assert len(list(store.entries())) == 1
    np.testing.assert_array_equal(d.normalization_, e.normalization_)


def test_progress_bar_covers_the_transform(capsys):
    rng = np.random.default_rng(10)
    X = _ragged(rng, 20)
    nys = RNTKNystroem(n_components=5, random_state=0, chunk_size=4,
                       progress=True).fit(X)
    nys.transform(X)
    err = capsys.readouterr().err
    assert "nystroem" in err and "landmarks" in err
    RNTKNystroem(n_components=5, random_state=0, landmarks="uniform",
                 progress=True).fit(X)
    assert "landmark gram" in capsys.readouterr().err


def test_every_streaming_method_closes_its_bar_full(capsys, tmp_path):
    """transform, transform_to_file (also when resumed), transform_batches and
    captured_fraction each end with their bar at 100 % (pair-steps), closed."""
    import json
    rng = np.random.default_rng(12)
    X = _ragged(rng, 24)
    nys = RNTKNystroem(n_components=5, random_state=0, chunk_size=8,
                       progress=True).fit(X)
    capsys.readouterr()
    runs = [lambda: nys.transform(X),
            lambda: nys.transform_to_file(X, tmp_path / "f.npy"),
            lambda: list(nys.transform_batches(X)),
            lambda: nys.captured_fraction(X)]
    for run in runs:
        run()
        err = capsys.readouterr().err
        assert "100%" in err and err.count("\n") >= 1, err
    state = tmp_path / "f.npy.progress.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "rows_done": 8}))
    nys.transform_to_file(X, tmp_path / "f.npy")          # resumed: 8 rows counted done
    assert "100%" in capsys.readouterr().err


# --------------------------------------------------------------------------- sklearn
def test_pipelines_and_search():
    rng = np.random.default_rng(11)
    X, y = _two_class(rng, 60)
    Xt, yt = _two_class(rng, 40)
    model = make_pipeline(RNTKNystroem(n_components=20, random_state=0),
                          StreamingRidgeClassifier()).fit(X, y)
    assert model.score(Xt, yt) >= 0.9
    search = GridSearchCV(make_pipeline(RNTKNystroem(random_state=0),
                                        RidgeClassifier()),
                          {"rntknystroem__n_components": [4, 16],
                           "rntknystroem__sigma_b": [0.0, 0.1]}, cv=3).fit(X, y)
    assert search.best_score_ >= 0.8
    nys = model[0]
    names = nys.get_feature_names_out()
    assert names.tolist()[:2] == ["rntknystroem0", "rntknystroem1"] and names.size == 20
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again[0].transform(Xt), nys.transform(Xt))
    np.testing.assert_array_equal(again.predict(Xt), model.predict(Xt))


def test_fixed_length_arrays_and_multichannel():
    rng = np.random.default_rng(12)
    A = rng.standard_normal((20, 15, 3))
    nys = RNTKNystroem(n_components=6, random_state=0).fit(A)
    np.testing.assert_array_equal(nys.transform(A), nys.transform(list(A)))
    padded = np.full((20, 15, 3), np.nan)
    lengths = rng.integers(5, 16, 20)
    for i, T in enumerate(lengths):
        padded[i, :T] = A[i, :T]
    np.testing.assert_array_equal(
        RNTKNystroem(n_components=6, random_state=0).fit_transform(padded),
        RNTKNystroem(n_components=6, random_state=0).fit_transform(
            [A[i, :T] for i, T in enumerate(lengths)]))


# --------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    rng = np.random.default_rng(13)
    X = _ragged(rng, 10)
    with pytest.raises(ValueError, match="n_components=11 is larger than the training "
                                         r"set \(10 series\)"):
        RNTKNystroem(n_components=11).fit(X)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="n_components must be an integer >= 1"):
            RNTKNystroem(n_components=bad).fit(X)
    with pytest.raises(TypeError, match="n_components must be an integer"):
        RNTKNystroem(n_components=2.5).fit(X)
    with pytest.raises(ValueError, match="landmarks must be one of"):
        RNTKNystroem(n_components=3, landmarks="kmeans").fit(X)
    with pytest.raises(ValueError, match=r"kernel_scaling must be one of \(.cosine"):
        RNTKNystroem(n_components=3, kernel_scaling="trace").fit(X)
    with pytest.raises(ValueError, match="dtype must be float64 or float32"):
        RNTKNystroem(n_components=3, dtype="float16").fit(X)
    nys = RNTKNystroem(n_components=3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 2 channels per time step, but this "
                                         "RNTKNystroem was fitted on series with 1"):
        nys.transform([rng.standard_normal((9, 2))])
    bad = [x.copy() for x in X]
    bad[4][3] = np.nan
    with pytest.raises(ValueError, match="series 4"):
        nys.transform(bad)
    with pytest.raises(ValueError, match="series 4"):
        RNTKNystroem(n_components=3).fit(bad)


@pytest.mark.parametrize("method", ["uniform", "rpcholesky"])
def test_rank_deficient_landmarks_raise(method):
    rng = np.random.default_rng(14)
    base = _ragged(rng, 4)
    X = base * 3                                  # 12 series, 4 distinct
    with pytest.raises(ValueError, match="numerically rank deficient"):
        RNTKNystroem(n_components=6 if method == "rpcholesky" else 12,
                     landmarks=method, random_state=0).fit(X)
    # at the rank, rpcholesky succeeds
    RNTKNystroem(n_components=4, random_state=0).fit(X)


# Which scikit-learn checks cannot apply to a transformer of sequence sets, and why.
_ANY_LENGTH = ("series of any length are accepted (an (N, T) array is N series of T "
               "steps, not T features): no fixed n_features_in_")


def _expected_failures(est):
    if isinstance(est, StreamingRidgeClassifier):
        return {"check_sample_weight_equivalence_on_dense_data": (
            "the penalty is chosen by leave-one-out over a grid, and leaving out one of "
            "two repeated rows is not leaving out a row of weight 2 (as for scikit-learn's "
            "RidgeClassifierCV); with one penalty the two are equal (tested)")}
    if not isinstance(est, RNTKNystroem):
        return {}
    return {"check_n_features_in": _ANY_LENGTH,
            "check_n_features_in_after_fitting": _ANY_LENGTH,
            "check_transformer_general": "fails only at its last step, which expects "
                                         "an error for another number of features: "
                                         + _ANY_LENGTH}


@parametrize_with_checks([RNTKNystroem(n_components=1, random_state=0),
                          StreamingRidgeClassifier()],
                         expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- ridge
@pytest.mark.parametrize("n_classes", [2, 4])
def test_streaming_ridge_equals_sklearn_ridge(n_classes, tmp_path):
    rng = np.random.default_rng(15)
    X = rng.standard_normal((300, 12)) + 0.3
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], np.linspace(-1, 1, n_classes - 1))
    ref = RidgeClassifier(alpha=2.0).fit(X, y)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                   shape=X.shape)
    mm[:] = X
    for data, bs in ((X, 1000), (X, 37), (mm, 64)):
        s = StreamingRidgeClassifier(alphas=2.0, alpha_scale="absolute",
                                     batch_size=bs).fit(data, y)
        Xd = np.asarray(data, dtype=np.float64)
        r = RidgeClassifier(alpha=2.0).fit(Xd, y)
        # (scikit-learn may give a binary model's coef_ as (m,), ours is (1, m))
        np.testing.assert_allclose(s.coef_.ravel(), np.ravel(r.coef_), rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(s.intercept_.ravel(), np.ravel(r.intercept_),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(s.predict(data), r.predict(Xd))
    np.testing.assert_allclose(ref.coef_, RidgeClassifier(alpha=2.0).fit(X, y).coef_)
    # partial_fit over batches is fit
    p = StreamingRidgeClassifier(alphas=2.0, alpha_scale="absolute")
    for a in range(0, 300, 50):
        p.partial_fit(X[a:a + 50], y[a:a + 50], classes=np.arange(n_classes))
    np.testing.assert_allclose(p.coef_.ravel(), np.ravel(ref.coef_), rtol=1e-9,
                               atol=1e-12)


def test_streaming_ridge_gcv_is_the_brute_force_one():
    rng = np.random.default_rng(16)
    X = rng.standard_normal((80, 6))
    y = (X[:, 0] + 0.8 * rng.standard_normal(80) > 0).astype(int)
    alphas = [1e-2, 1.0, 30.0]
    s = StreamingRidgeClassifier(alphas=alphas, alpha_scale="absolute",
                                 alpha_selection="gcv").fit(X, y)
    Xc = X - X.mean(0)
    Y = np.where(y == 1, 1.0, -1.0)[:, None] * np.array([-1.0, 1.0])
    Yc = Y - Y.mean(0)
    for a, g in zip(alphas, s.cv_scores_):
        H = Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(6), Xc.T)
        rss = np.sum((Yc - H @ Yc) ** 2)
        df = np.trace(H) + 1
        np.testing.assert_allclose(g, rss / 80 / (1 - df / 80) ** 2, rtol=1e-9)
    assert s.alpha_ == alphas[int(np.argmin(s.cv_scores_))]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_streaming_ridge_loo_is_the_brute_force_one(n_classes):
    """The default penalty choice: exact leave-one-out, refitting without each row."""
    rng = np.random.default_rng(19)
    X = rng.standard_normal((40, 5)) + 0.5
    y = np.arange(40) % n_classes
    X[:, 0] += y
    alphas = [1e-3, 0.5, 20.0]
    s = StreamingRidgeClassifier(alphas=alphas, alpha_scale="absolute",
                                 batch_size=7).fit(X, y)
    Y = -np.ones((40, n_classes))
    Y[np.arange(40), y] = 1.0
    for a, score in zip(alphas, s.cv_scores_):
        sse = 0.0
        for i in range(40):
            keep = np.arange(40) != i
            Xk, Yk = X[keep], Y[keep]
            mu, yb = Xk.mean(0), Yk.mean(0)
            W = np.linalg.solve((Xk - mu).T @ (Xk - mu) + a * np.eye(5),
                                (Xk - mu).T @ (Yk - yb))
            sse += np.sum((Y[i] - ((X[i] - mu) @ W + yb)) ** 2)
        np.testing.assert_allclose(score, sse / 40, rtol=1e-8)
    assert s.alpha_ == alphas[int(np.argmin(s.cv_scores_))]


def test_streaming_ridge_errors():
    X = np.ones((4, 2))
    with pytest.raises(ValueError, match="classes must be given"):
        StreamingRidgeClassifier().partial_fit(X, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="alphas must be positive"):
        StreamingRidgeClassifier(alphas=[0.0]).fit(X, [0, 1, 0, 1])
    s = StreamingRidgeClassifier().partial_fit(X, [0, 1, 0, 1], classes=[0, 1])
    with pytest.raises(ValueError, match=r"y\[2\] = 7 is not one of the classes"):
        s.partial_fit(X, [0, 1, 7, 1])
    bad = X.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"X\[3, 1\] is NaN or inf"):
        StreamingRidgeClassifier().fit(bad, [0, 1, 0, 1])


def test_transform_to_file_resumes_after_an_interruption(tmp_path, monkeypatch):
    rng = np.random.default_rng(17)
    X = _ragged(rng, 50)
    nys = RNTKNystroem(n_components=8, random_state=0, chunk_size=6, n_jobs=1).fit(X)
    F = nys.transform(X)
    path = tmp_path / "phi.npy"
    calls, crashed = [], []
    real = nystroem._strip_features

    def crash_at_the_fourth(P, *args):
        calls.append(P.n)
        if len(calls) == 4 and not crashed:
            crashed.append(True)
            raise RuntimeError("interrupted")
        return real(P, *args)

    monkeypatch.setattr(nystroem, "_strip_features", crash_at_the_fourth)
    with pytest.raises(RuntimeError, match="interrupted"):
        nys.transform_to_file(X, path)
    state = (tmp_path / "phi.npy.progress.json").read_text()
    assert '"rows_done": 18' in state
    calls.clear()
    out = nys.transform_to_file(X, path)
    assert sum(calls) == 50 - 18                  # only the missing rows
    np.testing.assert_array_equal(out, F)
    # another X (or another map) starts over
    calls.clear()
    X2 = [x + 1.0 for x in X]
    out2 = nys.transform_to_file(X2, path)
    assert sum(calls) == 50
    np.testing.assert_array_equal(out2, nys.transform(X2))
    calls.clear()
    nys.transform_to_file(X2, path, resume=False)
    assert sum(calls) == 50


def test_readme_recipes_run(tmp_path, monkeypatch):
    """The README's Nyström section: every code block runs as written."""
    import re
    from pathlib import Path
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Past the exact Gram"):]
    section = section[:section.index("\n## ", 5)]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "transform_to_file" in code and "StreamingRidgeClassifier" in code
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["model"].score(scope["X_test"], scope["y_test"]) > 0.8
    assert (tmp_path / "phi.npy").exists()
    assert 0.2 < scope["held"] < 0.4                  # the value the README quotes


@pytest.mark.parametrize("kw", [dict(), dict(kind="nngp", n_layers=2, readout="mean"),
                                dict(activation="erf", sigma_h=0.3)])
def test_transform_kernel_is_gram_bit_for_bit(kw, monkeypatch):
    """Before the projection, transform's strips hold exactly gram(X, landmarks)."""
    rng = np.random.default_rng(18)
    X = _ragged(rng, 70, lo=3, hi=40, m=2)
    nys = RNTKNystroem(n_components=20, kernel_scaling="none", random_state=0,
                       **kw).fit(X)
    monkeypatch.setattr(nystroem, "_project", lambda K, M: K.copy())
    np.testing.assert_array_equal(
        nys.transform(X), gram(X, nys.landmarks_, kernel=nys.kernel_, kind=nys.kind))
    assert list(np.diff(nys.landmarks_.lengths) <= 0) == [True] * 19


def test_streaming_ridge_zero_weights_drop_rows_and_weights_repeat_them():
    rng = np.random.default_rng(20)
    X = rng.standard_normal((60, 4))
    y = (X[:, 0] + 0.3 * rng.standard_normal(60) > 0).astype(int)
    w = np.ones(60)
    w[::5] = 0.0
    a = StreamingRidgeClassifier(batch_size=9).fit(X, y, sample_weight=w)
    b = StreamingRidgeClassifier().fit(X[w > 0], y[w > 0])
    np.testing.assert_allclose(a.cv_scores_, b.cv_scores_, rtol=1e-9)
    np.testing.assert_allclose(a.alpha_, b.alpha_, rtol=1e-12)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.intercept_, b.intercept_, rtol=1e-9, atol=1e-12)
    # an integer weight is a repeated row (fixed penalty)
    w2 = rng.integers(1, 4, 60)
    c = StreamingRidgeClassifier(alphas=0.3).fit(X, y, sample_weight=w2)
    d = StreamingRidgeClassifier(alphas=0.3).fit(np.repeat(X, w2, axis=0),
                                                 np.repeat(y, w2))
    np.testing.assert_allclose(c.coef_, d.coef_, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="sample_weight must be finite and non-negative"):
        StreamingRidgeClassifier().fit(X, y, sample_weight=-w)
    with pytest.raises(ValueError, match="zero everywhere"):
        StreamingRidgeClassifier().fit(X, y, sample_weight=0 * w)


# --------------------------------------------------------------------------- diagnostic
@pytest.mark.parametrize("scaling", ["cosine", "none"])
def test_captured_fraction_is_one_minus_the_relative_residual_diagonal(scaling):
    rng = np.random.default_rng(7)
    X = _ragged(rng, 40, lo=10, hi=35)
    nys = RNTKNystroem(n_components=12, sigma_b=0.3, readout="mean",
                       kernel_scaling=scaling, random_state=0).fit(X)
    c = nys.captured_fraction(X)
    # the same-sample self-kernels (the symmetric Gram's diagonal), the approximated
    # cross kernel, and the features' Gram
    F = nys.transform(X)
    k = np.diag(gram(X, kernel=nys.kernel_)) if scaling == "none" else np.ones(40)
    K = (gram(X, X, kernel=nys.kernel_) if scaling == "none"
         else _cosine_target(X, nys.kernel_))
    np.testing.assert_allclose(c, np.einsum("ij,ij->i", F, F) / k, rtol=1e-12)
    # the cross form's k(x, x) meets the same-sample one to ~1e-8 only (arccos at a
    # correlation of 1 is ill-conditioned), hence the tolerance
    resid = np.diag(K - F @ F.T) / k
    np.testing.assert_allclose(c, 1 - resid, atol=1e-6)
    assert np.all(c <= 1 + 1e-9) and np.all(c >= 0)
    np.testing.assert_allclose(c[nys.landmark_indices_], 1.0, atol=1e-6)
    others = np.setdiff1d(np.arange(40), nys.landmark_indices_)
    assert c[others].max() < 1 - 1e-6          # a non-landmark is not held exactly
    # weighted by k(x, x), it sums to the features' trace; under cosine scaling its
    # mean is one minus the relative trace error of the approximation
    np.testing.assert_allclose(np.sum(c * k), np.trace(F @ F.T), rtol=1e-12)
    if scaling == "cosine":
        np.testing.assert_allclose(1 - c.mean(), np.trace(K - F @ F.T) / np.trace(K),
                                   atol=1e-6)


def test_captured_fraction_grows_with_m_and_is_bit_identical_over_jobs():
    rng = np.random.default_rng(8)
    X, X_new = _ragged(rng, 50, lo=10, hi=35), _ragged(rng, 20, lo=10, hi=35)
    means = [RNTKNystroem(n_components=m, landmarks="uniform", random_state=0,
                          sigma_b=0.2).fit(X).captured_fraction(X_new).mean()
             for m in (4, 16, 50)]
    assert means[0] < means[1] < means[2] <= 1 + 1e-9
    nys = RNTKNystroem(n_components=16, random_state=0).fit(X)
    a = nys.captured_fraction(X_new)
    b = clone(nys).set_params(n_jobs=2, chunk_size=3).fit(X).captured_fraction(X_new)
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------- reuse
@pytest.mark.parametrize("kw", [
    dict(),
    dict(kernel_scaling="none", sigma_b=0.2),
    dict(sigma_h=0.5, readout="mean", dtype="float32"),
    dict(kind="nngp", n_layers=2, activation="erf", sigma_w=1.2),
])
def test_fit_transform_reuses_the_selection_columns_with_the_same_bits(kw, monkeypatch):
    rng = np.random.default_rng(21)
    X = _ragged(rng, 90, lo=3, hi=40, m=2)
    ref = RNTKNystroem(n_components=24, random_state=0, **kw).fit(X)
    F_ref = ref.transform(X)
    computed = []
    real = nystroem._strip_features
    monkeypatch.setattr(nystroem, "_strip_features",
                        lambda P, *a: computed.append(P.n) or real(P, *a))
    nys = RNTKNystroem(n_components=24, random_state=0, **kw)
    F = nys.fit_transform(X)
    assert computed == []                       # no kernel entry computed twice
    assert F.dtype == F_ref.dtype
    np.testing.assert_array_equal(F, F_ref)
    np.testing.assert_array_equal(nys.normalization_, ref.normalization_)
    # the landmark Gram from the selection's columns is gram(landmarks, landmarks)
    K = gram(nys.landmarks_, nys.landmarks_, kernel=nys.kernel_, kind=nys.kind)
    if nys.kernel_scaling == "cosine":
        K = K / nys.landmark_self_root_[:, None] / nys.landmark_self_root_[None, :]
    lam, V = np.linalg.eigh(0.5 * (K + K.T))
    np.testing.assert_allclose(nys.normalization_, (V / np.sqrt(lam)) @ V.T,
                               rtol=1e-9, atol=1e-9 * np.abs(nys.normalization_).max())


def test_fit_transform_with_a_partial_pool_or_uniform_landmarks_transforms():
    rng = np.random.default_rng(22)
    X = _ragged(rng, 60, lo=5, hi=30)
    for kw in (dict(landmark_pool=20), dict(landmarks="uniform")):
        a = RNTKNystroem(n_components=10, random_state=1, **kw).fit_transform(X)
        b = RNTKNystroem(n_components=10, random_state=1, **kw).fit(X).transform(X)
        np.testing.assert_array_equal(a, b)
    # and a search over the jobs changes no bit
    a = RNTKNystroem(n_components=10, random_state=1, n_jobs=1).fit_transform(X)
    b = RNTKNystroem(n_components=10, random_state=1, n_jobs=2).fit_transform(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("landmarks", ["rpcholesky", "uniform"])
@pytest.mark.parametrize("scaling", ["cosine", "none"])
def test_an_overflowing_kernel_is_a_clear_error(landmarks, scaling):
    rng = np.random.default_rng(23)
    X = [rng.standard_normal(int(T)) for T in rng.integers(300, 400, 20)]
    nys = RNTKNystroem(n_components=5, sigma_w=10.0, landmarks=landmarks,
                       kernel_scaling=scaling, random_state=0, landmark_pool=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="overflowed float64|not positive and "
                                             "finite") as err:
            nys.fit_transform(X)
    msg = str(err.value)
    if "training series" in msg:                # names series of X, not of the pool
        named = [int(v) for v in re.findall(r"training series (\d+) and (\d+)", msg)[0]]
        assert all(0 <= v < 20 for v in named)


@pytest.mark.parametrize("selection", ["loo", "gcv"])
def test_streaming_ridge_progress_counts_the_rows_read_and_changes_nothing(
        selection, capsys):
    rng = np.random.default_rng(31)
    X = rng.standard_normal((100, 6))
    y = (X[:, 1] > 0).astype(int)
    quiet = StreamingRidgeClassifier(alpha_selection=selection, batch_size=16).fit(X, y)
    capsys.readouterr()
    loud = StreamingRidgeClassifier(alpha_selection=selection, batch_size=16,
                                    progress=True).fit(X, y)
    err = capsys.readouterr().err
    rows = 200 if selection == "loo" else 100        # leave-one-out reads X twice
    assert "ridge fit" in err and f"{rows}/{rows}" in err, err
    np.testing.assert_array_equal(loud.coef_, quiet.coef_)
    np.testing.assert_array_equal(loud.decision_function(X), quiet.decision_function(X))
    assert "ridge predict" in capsys.readouterr().err
