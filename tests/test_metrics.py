"""Summary metrics of spec section 6."""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest

from rntk_numba.metrics import METRICS, friedman_ranks, summary_metrics

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
PAPER = os.path.join(SHARED, "paper_table2.csv")


def test_hand_computed_table():
    # rows: data sets; columns: methods A, B, C
    acc = [[90.0, 80.0, 90.0],     # A, C tie for best
           [50.0, 100.0, 94.0],    # B best; C at 0.94 of max; A at 0.5
           [70.0, 60.0, 63.0]]     # A best; C at 0.9; B at 0.857
    m = summary_metrics(acc, ["A", "B", "C"])
    assert set(m["A"]) == set(METRICS)
    assert m["A"]["mean"] == pytest.approx(70.0)
    assert m["A"]["std"] == pytest.approx(np.std([90, 50, 70], ddof=1))
    # P90: ratio >= 0.9  -> A: 1, 0.5, 1 -> 2/3 ; B: .889, 1, .857 -> 1/3 ; C: 1,.94,.9 -> 1
    assert m["A"]["P90"] == pytest.approx(2 / 3)
    assert m["B"]["P90"] == pytest.approx(1 / 3)
    assert m["C"]["P90"] == pytest.approx(1.0)      # 63 / 70 == 0.9 exactly counts
    # P95: C has 1, .94, .9 -> 1/3
    assert m["C"]["P95"] == pytest.approx(1 / 3)
    assert m["B"]["PMA"] == pytest.approx(np.mean([80 / 90, 1.0, 60 / 70]))
    # ranks (ties="min"): row 1: A=1, C=1, B=3; row 2: B=1, C=2, A=3; row 3: A=1, C=2, B=3
    assert m["A"]["friedman_rank"] == pytest.approx((1 + 3 + 1) / 3)
    assert m["B"]["friedman_rank"] == pytest.approx((3 + 1 + 3) / 3)
    assert m["C"]["friedman_rank"] == pytest.approx((1 + 2 + 2) / 3)
    avg = summary_metrics(acc, ["A", "B", "C"], ties="average")
    assert avg["A"]["friedman_rank"] == pytest.approx((1.5 + 3 + 1) / 3)


def test_ranks_are_permutation_consistent_and_sum():
    rng = np.random.default_rng(0)
    A = rng.integers(50, 100, size=(20, 5)).astype(float)   # many ties
    R = friedman_ranks(A, ties="average")
    k = A.shape[1]
    np.testing.assert_allclose(R.sum(axis=1), k * (k + 1) / 2)
    perm = rng.permutation(k)
    np.testing.assert_array_equal(friedman_ranks(A[:, perm]), friedman_ranks(A)[:, perm])
    # the best method of each row always has rank 1 under "min"
    Rm = friedman_ranks(A)
    assert np.all(Rm[np.arange(20), A.argmax(axis=1)] == 1.0)


def test_scale_invariance_of_relative_metrics():
    rng = np.random.default_rng(1)
    A = rng.uniform(0.3, 1.0, size=(10, 4))
    a, b = summary_metrics(A), summary_metrics(100 * A)
    for j in a:
        for key in ("P90", "P95", "PMA", "friedman_rank"):
            assert a[j][key] == pytest.approx(b[j][key])
        assert b[j]["mean"] == pytest.approx(100 * a[j]["mean"])


def test_friedman_test_detects_a_dominant_method():
    rng = np.random.default_rng(2)
    A = rng.uniform(60, 80, size=(15, 3))
    A[:, 0] += 15
    m = summary_metrics(A, ["good", "x", "y"], friedman_test=True)
    assert m["_friedman_test"]["pvalue"] < 0.01
    assert m["good"]["friedman_rank"] == 1.0


@pytest.mark.parametrize("bad, match", [
    ([1.0, 2.0], "2-D"),
    ([[1.0, np.nan]], "every method"),
    ([[1.0, -2.0]], "negative"),
    (np.zeros((0, 3)), "empty"),
])
def test_bad_tables(bad, match):
    with pytest.raises(ValueError, match=match):
        summary_metrics(bad)


def test_bad_names_and_ties():
    with pytest.raises(ValueError, match="2 method names"):
        summary_metrics([[1.0, 2.0, 3.0]], ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        summary_metrics([[1.0, 2.0]], ["a", "a"])
    with pytest.raises(ValueError, match="ties"):
        friedman_ranks([[1.0, 2.0]], ties="max")


@pytest.mark.skipif(not os.path.isfile(PAPER), reason="../shared/paper_table2.csv absent")
def test_paper_table1_is_reproduced_from_table2():
    """The paper's Table 1 summary of its 56 data sets (spec section 6): RNTK mean
    80.15 %, P90 92.86 %, P95 80.36 %, PMA 97.23 %, Friedman rank 2.38; NTK 77.74 %,
    RBF 78.15 %, polynomial 77.69 % -- recomputed from the per-data-set Table 2."""
    with open(PAPER, newline="") as fh:
        rows = list(csv.reader(fh))
    methods = rows[0][1:]
    A = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert A.shape == (56, 7)
    m = summary_metrics(A, methods)
    r = m["RNTK"]
    assert round(r["mean"], 2) == 80.15
    assert round(100 * r["P90"], 2) == 92.86
    assert round(100 * r["P95"], 2) == 80.36
    assert round(100 * r["PMA"], 2) == 97.23
    assert round(r["friedman_rank"], 2) == 2.38
    assert round(m["NTK"]["mean"], 2) == 77.74
    assert round(m["RBF"]["mean"], 2) == 78.15
    assert round(m["POLY"]["mean"], 2) == 77.69


# --------------------------------------------------------------------------- the benchmark
SHARED_UCR = os.path.join(SHARED, "ucr")


def _script():
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "ucr_classification.py")
    spec = importlib.util.spec_from_file_location("ucr_classification", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not os.path.isdir(SHARED_UCR), reason="../shared/ucr absent")
def test_ucr_script_end_to_end_and_warm_rerun(tmp_path):
    """scripts/ucr_classification.py on two small shared sets with the quick grids:
    every output is written, consistent with the metrics module, and a rerun with a
    warm cache gives the same table."""
    pytest.importorskip("rntk_numba.store", reason="the Gram store is not available")
    mod = _script()
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["--data-dir", SHARED_UCR, "--datasets", "Coffee,PickupGestureWiimoteZ",
            "--grid", "quick", "--n-jobs", "2", "--out", str(out), "--cache", str(cache),
            "--methods", "RNTK,RNTK-mean,NTK,RBF,POLY" + (
                ",DTW" if importlib.util.find_spec("aeon") is not None else "")]
    assert mod.main(argv) == 0
    for f in ("accuracy.csv", "hyperparameters.csv", "cv_results.csv", "datasets.csv",
              "summary.csv", "comparison.md", "rntk_vs_baselines.png", "run.json"):
        assert (out / f).is_file(), f
    with open(out / "accuracy.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    have_dtw = importlib.util.find_spec("aeon") is not None      # DTW needs aeon
    methods = ["RNTK", "RNTK-mean", "NTK", "RBF", "POLY"] + (["DTW"] if have_dtw else [])
    assert list(rows[0]) == ["dataset"] + methods
    assert [r["dataset"] for r in rows] == ["Coffee", "PickupGestureWiimoteZ"]
    A = np.array([[float(r[m]) for m in methods] for r in rows])
    assert np.all((A >= 0) & (A <= 100))
    assert A[0, 0] >= 90.0                         # Coffee: the RNTK is near 100 %
    with open(out / "hyperparameters.csv", newline="") as fh:
        hp = list(csv.DictReader(fh))
    rntk = [r for r in hp if r["method"] == "RNTK"]
    assert len(rntk) == 2 and all(int(r["n_settings"]) == 4 for r in rntk)
    mean = [r for r in hp if r["method"] == "RNTK-mean"]       # the same grid, mean
    assert len(mean) == 2 and all(json.loads(r["params"])["readout"] == "mean"
                                  for r in mean)
    assert int(rntk[0]["n_folds"]) == 10 and int(rntk[1]["n_folds"]) == 5  # capped
    with open(out / "summary.csv", newline="") as fh:
        summ = list(csv.DictReader(fh))
    allk = [r for r in summ if r["group"].startswith("all (2 sets), ours, kernels")]
    ref = summary_metrics(A[:, :5], ["RNTK", "RNTK-mean", "NTK", "RBF", "POLY"])
    for r in allk:
        assert float(r["mean"]) == pytest.approx(ref[r["method"]]["mean"], abs=1e-3)
        assert float(r["friedman_rank"]) == pytest.approx(
            ref[r["method"]]["friedman_rank"], abs=1e-3)
    md = (out / "comparison.md").read_text()
    if os.path.isfile(PAPER):
        assert "RNTK paper" in md and "| Coffee |" in md and "100.00" in md
    first = (out / "accuracy.csv").read_bytes()
    assert len(list((cache / "dtw").glob("*.npy"))) == (2 if have_dtw else 0)
    assert mod.main(argv) == 0                     # warm: Grams and DTW from the cache
    assert (out / "accuracy.csv").read_bytes() == first
    assert json.loads((out / "run.json").read_text())["dtw_cached_sets"] == \
        (2 if have_dtw else 0)
