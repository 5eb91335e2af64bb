"""Loaders (UCR tsv layout, .ts, aeon wrapper, bundled demo) and normalisation."""

import os

import numpy as np
import pytest

from rntk_numba import datasets
from rntk_numba.datasets import (list_ucr, load_classification, load_demo, load_ucr,
                                 normalize, read_ts, read_ucr_tsv)

SHARED_UCR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "ucr")
needs_ucr = pytest.mark.skipif(not os.path.isdir(SHARED_UCR),
                               reason="../shared/ucr (UCR development data) absent")


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- tsv
def test_tsv_ragged_nan_padding_and_labels(tmp_path):
    p = _write(tmp_path / "A" / "A_TRAIN.tsv",
               "1\t0.5\t1.5\t2.5\n"
               "2\t3.0\tNaN\tNaN\n"
               "-1\t4.0\t5.0\tNaN\n")
    X, y = read_ucr_tsv(p)
    assert [x.tolist() for x in X] == [[0.5, 1.5, 2.5], [3.0], [4.0, 5.0]]
    assert y.dtype == np.int64 and y.tolist() == [1, 2, -1]
    assert all(x.dtype == np.float64 for x in X)


def test_tsv_float_and_string_labels(tmp_path):
    X, y = read_ucr_tsv(_write(tmp_path / "f.tsv", "1.0\t1\t2\n2.0\t3\t4\n"))
    assert y.dtype == np.int64 and y.tolist() == [1, 2]
    X, y = read_ucr_tsv(_write(tmp_path / "s.tsv", "1.5\t1\t2\n2\t3\t4\n"))
    assert y.dtype.kind == "U" and y.tolist() == ["1.5", "2"]


def test_tsv_interior_nan_kept_for_pack_to_report(tmp_path):
    X, _ = read_ucr_tsv(_write(tmp_path / "n.tsv", "1\t1\tNaN\t3\n"))
    assert X[0].shape == (3,) and np.isnan(X[0][1])
    from rntk_numba import pack
    with pytest.raises(ValueError, match="series 0, time step 1"):
        pack(X)


@pytest.mark.parametrize("text, match", [
    ("", "no series"),
    ("1\t1\tabc\n", "line 1: non-numeric"),
    ("1\t2\n2\tNaN\tNaN\n", "line 2: the series has no values"),
])
def test_tsv_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_ucr_tsv(_write(tmp_path / "bad.tsv", text))


def test_load_ucr_any_root_and_errors(tmp_path):
    root = tmp_path / "archive"
    _write(root / "Toy" / "Toy_TRAIN.tsv", "1\t1\t2\t3\n2\t2\t4\t6\n")
    _write(root / "Toy" / "Toy_TEST.tsv", "1\t0\t0\t3\n")
    _write(root / "Other" / "Other_TRAIN.tsv", "1\t1\n")
    Xtr, ytr, Xte, yte = load_ucr("Toy", root)
    assert len(Xtr) == 2 and len(Xte) == 1 and ytr.tolist() == [1, 2]
    Xtr_n, *_ = load_ucr("Toy", str(root), normalize="l2")
    np.testing.assert_allclose([np.linalg.norm(x) for x in Xtr_n], 1.0)
    assert list_ucr(root) == ["Other", "Toy"]
    with pytest.raises(FileNotFoundError, match="Other, Toy"):
        load_ucr("Missing", root)
    with pytest.raises(FileNotFoundError, match="Other_TEST"):
        load_ucr("Other", root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_ucr("Toy", tmp_path / "nowhere")


# --------------------------------------------------------------------------- .ts
TS_UNI = """# comment
@problemName toy
@timeStamps false
@missing true
@univariate true
@equalLength false
@classLabel true a b
@data
1.0,2.0,3.0:a
4.0,?,6.0,7.0:b
5.0,6.0,?,?:a
"""

TS_MULTI = """@problemName m
@timeStamps false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true 1 2
@data
1,2,3:4,5,6:1
7,8,9:10,11,12:2
"""


def test_ts_univariate_missing_and_ragged(tmp_path):
    X, y = read_ts(_write(tmp_path / "u.ts", TS_UNI))
    assert y.tolist() == ["a", "b", "a"]
    assert X[0].tolist() == [1.0, 2.0, 3.0]
    assert X[1].shape == (4,) and np.isnan(X[1][1])      # interior missing kept
    assert X[2].tolist() == [5.0, 6.0]                     # trailing missing = padding


def test_ts_multivariate(tmp_path):
    X, y = read_ts(_write(tmp_path / "m.ts", TS_MULTI))
    assert y.tolist() == [1, 2] and y.dtype == np.int64
    assert X[0].shape == (3, 2)
    np.testing.assert_array_equal(X[1], [[7, 10], [8, 11], [9, 12]])


def test_ts_regression_and_unlabelled(tmp_path):
    X, y = read_ts(_write(tmp_path / "r.ts",
                          "@targetLabel true\n@data\n1,2:0.5\n3,4,5:1.25\n"))
    assert y.dtype == np.float64 and y.tolist() == [0.5, 1.25]
    X, y = read_ts(_write(tmp_path / "n.ts", "@classLabel false\n@data\n1,2\n3\n"))
    assert y is None and [x.tolist() for x in X] == [[1.0, 2.0], [3.0]]


@pytest.mark.parametrize("text, match", [
    ("@timeStamps true\n@data\n(0,1):a\n", "timeStamps true"),
    ("@classLabel true a\n1,2:a\n", "line 2: expected a header"),
    ("@classLabel true a\n", "no @data"),
    ("@classLabel true a\n@data\n1,2:3,4:a\n1,2:a\n", "line 4: 1 channels"),
    ("@classLabel true a\n@data\n1,2:3:a\n", "different lengths"),
    ("@classLabel true a\n@data\n1,x:a\n", "line 3, channel 0: non-numeric"),
])
def test_ts_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_ts(_write(tmp_path / "bad.ts", text))


def test_load_ucr_reads_ts_files(tmp_path):
    _write(tmp_path / "M" / "M_TRAIN.ts", TS_MULTI)
    _write(tmp_path / "M" / "M_TEST.ts", TS_MULTI)
    Xtr, ytr, Xte, yte = load_ucr("M", tmp_path)
    assert Xtr[0].shape == (3, 2) and yte.tolist() == [1, 2]


# --------------------------------------------------------------------------- aeon
def _fake_aeon(monkeypatch, loader):
    """Install a stand-in ``aeon.datasets`` (aeon is an optional extra, and the tests
    must not need a network)."""
    import sys
    import types
    aeon = types.ModuleType("aeon")
    datasets = types.ModuleType("aeon.datasets")
    datasets.load_classification = loader
    aeon.datasets = datasets
    monkeypatch.setitem(sys.modules, "aeon", aeon)
    monkeypatch.setitem(sys.modules, "aeon.datasets", datasets)


def test_load_classification_offline_error(monkeypatch):
    def offline(name, **kw):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    _fake_aeon(monkeypatch, offline)
    with pytest.raises(OSError, match="load_ucr"):
        load_classification("GunPoint")


def test_load_classification_without_aeon(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "aeon", None)
    monkeypatch.setitem(sys.modules, "aeon.datasets", None)
    with pytest.raises(ImportError, match="pip install aeon"):
        load_classification("GunPoint")


def test_load_classification_converts_layout(monkeypatch):
    rng = np.random.default_rng(0)
    data = {"train": ([rng.normal(size=(1, 5)), rng.normal(size=(1, 7))],
                      np.array(["1", "2"])),
            "test": (rng.normal(size=(3, 2, 4)), np.array(["1", "2", "1"]))}

    def fake(name, split=None, **kw):
        return data[split]
    _fake_aeon(monkeypatch, fake)
    Xtr, ytr, Xte, yte = load_classification("Fake")
    assert [x.shape for x in Xtr] == [(5,), (7,)]      # univariate -> (T_i,)
    np.testing.assert_array_equal(Xtr[1], data["train"][0][1][0])
    assert [x.shape for x in Xte] == [(4, 2)] * 3       # channels last
    np.testing.assert_array_equal(Xte[2], data["test"][0][2].T)
    assert ytr.tolist() == [1, 2] and yte.dtype == np.int64


# --------------------------------------------------------------------------- demo
def test_load_demo_shapes():
    Xtr, ytr, Xte, yte = load_demo()
    assert len(Xtr) == 50 and len(Xte) == 150
    assert all(x.shape == (150,) and x.dtype == np.float64 for x in Xtr + Xte)
    assert sorted(set(ytr.tolist())) == [1, 2] and ytr.dtype == np.int64
    assert np.bincount(yte)[1:].tolist() == [76, 74]
    Xn, *_ = load_demo(normalize="znorm")
    np.testing.assert_allclose([x.mean() for x in Xn], 0.0, atol=1e-12)


@needs_ucr
def test_demo_matches_the_archive_files():
    a = load_demo()
    b = load_ucr("GunPoint", SHARED_UCR)
    for u, v in zip(a[0] + a[2], b[0] + b[2]):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[3], b[3])


@needs_ucr
def test_shared_archive_variable_length_sets():
    names = list_ucr(SHARED_UCR)
    assert len(names) == 16
    Xtr, ytr, Xte, yte = load_ucr("PLAID", SHARED_UCR)
    lengths = np.array([len(x) for x in Xtr + Xte])
    assert lengths.min() == 100 and lengths.max() == 1344
    assert len(Xtr) == len(ytr) == 537
    Xtr, *_ = load_ucr("AllGestureWiimoteX", SHARED_UCR)
    assert min(len(x) for x in Xtr) >= 11 and max(len(x) for x in Xtr) <= 385
    assert len({len(x) for x in Xtr}) > 50


# --------------------------------------------------------------------------- normalize
def test_normalize_l2_and_znorm():
    rng = np.random.default_rng(3)
    X = [rng.normal(3.0, 2.0, size=T) for T in (5, 9, 14)]
    Z = normalize(X, "l2")
    assert [z.shape for z in Z] == [(5,), (9,), (14,)]
    np.testing.assert_allclose([np.linalg.norm(z) for z in Z], 1.0, rtol=1e-14)
    np.testing.assert_allclose(Z[1] * np.linalg.norm(X[1]), X[1], rtol=1e-14)
    Z = normalize(X, "znorm")
    np.testing.assert_allclose([z.mean() for z in Z], 0.0, atol=1e-14)
    np.testing.assert_allclose([z.std() for z in Z], 1.0, rtol=1e-13)
    assert normalize(X, "none")[2] is not X[2]
    np.testing.assert_array_equal(normalize(X, "none")[2], X[2])


def test_normalize_multivariate_and_degenerate():
    rng = np.random.default_rng(4)
    X = [rng.normal(size=(6, 3)), np.zeros((4, 3))]
    X[0][:, 2] = 7.0                                 # a constant channel
    L2 = normalize(X, "l2")
    assert L2[0].shape == (6, 3)
    assert np.linalg.norm(L2[0]) == pytest.approx(1.0)
    np.testing.assert_array_equal(L2[1], 0.0)        # zero series left as is
    Z = normalize(X, "znorm")
    np.testing.assert_allclose(Z[0][:, :2].std(axis=0), 1.0)
    np.testing.assert_array_equal(Z[0][:, 2], 0.0)   # constant channel: centred only
    # (N, T) arrays with NaN padding become ragged lists
    A = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]])
    assert [z.shape for z in normalize(A)] == [(2,), (3,)]


def test_normalize_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        normalize([np.ones(3)], "minmax")
    with pytest.raises(ValueError, match="series 1"):
        normalize([np.ones(3), np.array([1.0, np.inf])])


def test_module_has_no_shared_runtime_dependency():
    # the bundled data ships inside the package
    assert "shared" not in datasets.__file__
    import importlib.resources as r
    assert r.files("rntk_numba").joinpath("data", "gunpoint.npz").is_file()
