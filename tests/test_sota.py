"""scripts/_sota.py: published accuracies beside the UCR table (--sota), offline."""

import csv
import importlib.util
import os
import sys

import numpy as np
import pytest
from scipy.stats import rankdata

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "scripts")


def _module(name):
    sys.path.insert(0, SCRIPTS)          # ucr_classification imports _sota by name
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS,
                                                                         f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(SCRIPTS)


sota = _module("_sota")


def test_aeon_ships_the_four_methods_offline():
    if sota.aeon_results_dir() is None:
        pytest.skip("aeon (with its packaged results) is not installed")
    res, desc = sota.read_sota("aeon")
    assert set(res) == {"HC2", "InceptionTime", "FreshPRINCE", "WEASEL-2.0"}
    assert "package data" in desc
    # resample 0 is the first value column of the packaged file, read independently
    path = os.path.join(sota.aeon_results_dir(), "HC2_accuracy.csv")
    with open(path, newline="") as fh:
        rows = {r[0]: r[1:] for r in csv.reader(fh)}
    for name in ("Beef", "GunPoint", "Herring"):
        assert res["HC2"][name] == pytest.approx(100 * float(rows[name][0]))
    assert all(0 <= v <= 100 for v in res["WEASEL-2.0"].values())
    assert not any(k.endswith(":") for k in res["HC2"])          # the header row


def test_user_directory_and_wide_csv(tmp_path):
    d = tmp_path / "ref"
    d.mkdir()
    (d / "HC2_accuracy.csv").write_text("Resamples:,0,1\nA,0.5,0.9\nB,1.0,0.2\n")
    (d / "WEASEL-2.0_accuracy.csv").write_text("Resamples:,0,1\nA,0.75,0.1\n")
    res, _ = sota.read_sota(str(d))
    assert res == {"HC2": {"A": 50.0, "B": 100.0}, "WEASEL-2.0": {"A": 75.0}}
    wide = tmp_path / "wide.csv"
    wide.write_text("dataset,HC2,Mine\nA,95.5,80\nB,,70\n")
    res, _ = sota.read_sota(str(wide))
    assert res == {"HC2": {"A": 95.5}, "Mine": {"A": 80.0, "B": 70.0}}
    (d / "HC2_accuracy.csv").write_text("Resamples:,0\nA,0.5\nB,oops\n")
    with pytest.raises(ValueError, match="line 3"):
        sota.read_sota(str(d))
    with pytest.raises(FileNotFoundError, match="neither"):
        sota.read_sota(str(tmp_path / "nothing"))


def test_report_table_ranks_and_cd(tmp_path):
    pytest.importorskip("aeon")
    pytest.importorskip("matplotlib")
    ref = tmp_path / "ref.csv"
    rng = np.random.default_rng(0)
    names = [f"D{i}" for i in range(6)]
    pub = rng.uniform(50, 100, (6, 2))
    with open(ref, "w") as fh:
        fh.write("dataset,HC2,InceptionTime\n")
        for n, row in zip(names[:5], pub):            # D5 not covered
            fh.write(f"{n},{row[0]},{row[1]}\n")
    acc = {n: {"RNTK": float(v), "RBF": float(w)}
           for n, v, w in zip(names, rng.uniform(50, 100, 6), rng.uniform(50, 100, 6))}
    s = sota.report(str(tmp_path), names, acc, ["RNTK", "RBF"], str(ref), plot=True,
                    log=lambda m: None)
    assert s["covered"] == names[:5] and s["not_covered"] == ["D5"]
    A = np.array([[acc[n]["RNTK"], acc[n]["RBF"], pub[i, 0], pub[i, 1]]
                  for i, n in enumerate(names[:5])])
    ranks = np.mean([rankdata(-r) for r in A], axis=0)
    assert [s["average_rank"][m] for m in s["methods"]] == pytest.approx(ranks.tolist())
    assert s["methods"] == ["RNTK", "RBF", "HC2", "InceptionTime"]
    with open(tmp_path / "sota.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["dataset"] for r in rows] == names[:5]
    assert float(rows[2]["HC2"]) == pytest.approx(pub[2, 0], abs=0.006)
    md = (tmp_path / "sota.md").read_text()
    assert "resample 0 only, the archive's default" in md and "D5" in md
    assert (tmp_path / "sota_cd.png").stat().st_size > 1000


def test_ucr_script_has_the_hook_and_fails_early(tmp_path):
    mod = _module("ucr_classification")
    args = mod.parse_args(["--data-dir", str(tmp_path), "--sota"])
    assert args.sota == "aeon"
    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "X_TRAIN.tsv").write_text("1\t1\t2\n")
    with pytest.raises(FileNotFoundError, match="neither"):
        mod.main(["--data-dir", str(tmp_path), "--sota", str(tmp_path / "missing"),
                  "--out", str(tmp_path / "out"), "--methods", "RNTK"])
    assert not (tmp_path / "out" / "accuracy.csv").exists()
