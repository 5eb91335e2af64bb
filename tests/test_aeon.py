"""The aeon estimators: aeon's own estimator checks, input types, n_jobs, delegation."""

import pickle

import numpy as np
import pytest

pytest.importorskip("aeon", reason="the aeon extra is not installed")

from aeon.testing.estimator_checking import parametrize_with_checks  # noqa: E402
from aeon.testing.estimator_checking._yield_multithreading_checks import (  # noqa: E402
    check_estimator_multithreading)
from aeon.testing.testing_data import FULL_TEST_DATA_DICT  # noqa: E402

from rntk_numba import estimators as sk  # noqa: E402
from rntk_numba.aeon import RNTKClassifier, RNTKRegressor  # noqa: E402


@parametrize_with_checks([RNTKClassifier, RNTKRegressor])
def test_aeon_check_estimator(check):
    """aeon's own conformance checks (the same as aeon.testing's check_estimator)."""
    check()


# aeon switches its multithreading checks off by default (MULTITHREAD_TESTING); run the
# one that compares n_jobs=1 with n_jobs>1 and checks `_n_jobs` explicitly
@pytest.mark.parametrize("cls, datatype", [
    (RNTKClassifier, "UnequalLengthMultivariate-Classification-np-list"),
    (RNTKClassifier, "EqualLengthUnivariate-Classification-numpy3D"),
    (RNTKRegressor, "UnequalLengthUnivariate-Regression-np-list"),
])
def test_aeon_multithreading_check(cls, datatype):
    assert datatype in FULL_TEST_DATA_DICT
    est = cls(**cls._get_test_params()[0])
    check_estimator_multithreading(estimator=est, datatype=datatype)


def _ragged_channels_first(rng, n, m=2, lo=12, hi=30):
    X, y = [], []
    for i in range(n):
        T = int(rng.integers(lo, hi + 1))
        t = np.arange(T)
        f = (1.0, 3.0)[i % 2]
        X.append(np.stack([np.sin(2 * np.pi * f * t / 20 + c) for c in range(m)])
                 + 0.1 * rng.standard_normal((m, T)))
        y.append(i % 2)
    return X, np.array(y)


def test_aeon_delegates_to_ours_unequal_multivariate():
    """Same predictions and decision values as rntk_numba.estimators on (T_i, m)."""
    rng = np.random.default_rng(0)
    X, y = _ragged_channels_first(rng, 16)
    Xt, _ = _ragged_channels_first(rng, 7)
    ours = sk.RNTKClassifier(sigma_b=0.1, C=10.0).fit([x.T for x in X], y)
    clf = RNTKClassifier(sigma_b=0.1, C=10.0).fit(X, y)
    assert isinstance(clf.estimator_, sk.RNTKClassifier)
    np.testing.assert_array_equal(clf.predict(Xt), ours.predict([x.T for x in Xt]))
    np.testing.assert_array_equal(clf.estimator_.decision_function([x.T for x in Xt]),
                                  ours.decision_function([x.T for x in Xt]))
    assert clf.get_tag("capability:unequal_length")
    assert clf.get_tag("capability:multivariate")
    assert clf.get_tag("capability:multithreading")
    assert not clf.get_tag("capability:missing_values")


def test_aeon_numpy3d_equals_list_and_2d():
    """numpy3D (N, 1, T), 2-D (N, T) and a list of (1, T) arrays give the same model."""
    rng = np.random.default_rng(1)
    X3 = rng.standard_normal((12, 1, 25))
    y = rng.standard_normal(12)
    Xt = rng.standard_normal((5, 1, 25))
    pred = [RNTKRegressor(alpha=1e-2).fit(a, y).predict(b)
            for a, b in [(X3, Xt), (X3[:, 0], Xt[:, 0]), (list(X3), list(Xt))]]
    np.testing.assert_array_equal(pred[0], pred[1])
    np.testing.assert_array_equal(pred[0], pred[2])
    ours = sk.RNTKRegressor(alpha=1e-2).fit(X3[:, 0], y).predict(Xt[:, 0])
    np.testing.assert_array_equal(pred[0], ours)


def test_aeon_predict_writes_nothing_and_n_jobs():
    rng = np.random.default_rng(2)
    X, y = _ragged_channels_first(rng, 12, m=1)
    clf = RNTKClassifier(n_jobs=-1).fit(X, y)
    from aeon.utils.validation import check_n_jobs
    assert clf._n_jobs == check_n_jobs(-1) >= 1
    assert clf.estimator_.n_jobs == clf._n_jobs
    before = pickle.dumps(clf)          # the whole state, the inner estimator's too
    p = clf.predict(X[:4])
    clf.predict_proba(X[:4])
    assert pickle.dumps(clf) == before
    assert set(p) <= set(clf.classes_)
    # the default is one worker, aeon's convention
    assert RNTKClassifier().n_jobs == 1


def test_aeon_bad_input_messages():
    """aeon refuses missing values; our validation names the bad parameter."""
    X = [np.ones((1, 10)), np.ones((1, 12))]
    X[1][0, 3] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        RNTKClassifier().fit(X, np.array([0, 1]))
    with pytest.raises(ValueError, match="C must be"):
        RNTKClassifier(C=-1.0).fit([np.ones((1, 10)), np.zeros((1, 8))], np.array([0, 1]))


def test_aeon_workflow_cross_validation():
    """Inside aeon's workflow: fit_predict uses aeon's own cross-validation."""
    rng = np.random.default_rng(3)
    X, y = _ragged_channels_first(rng, 20, m=1)
    clf = RNTKClassifier(sigma_b=0.1, C=10.0, readout="mean")
    cv_pred = clf.fit_predict(X, y, cv_size=4)
    assert cv_pred.shape == (20,)
    assert np.mean(cv_pred == y) >= 0.8
