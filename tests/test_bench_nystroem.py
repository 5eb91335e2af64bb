"""Smoke test of scripts/bench_nystroem.py: a tiny configuration in a subprocess.

Checks that every selected stage writes its CSV and Markdown, that they parse and hold
plausible values (accuracies in [0, 100], relative kernel errors in [0, 1], positive
times and rates). The fidelity and learner stages need the shared UCR data
(``../shared/ucr``); without it they are left out (the synthetic stages still run).
"""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_nystroem.py"
UCR = ROOT.parent / "shared" / "ucr"


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _finite(v):
    return math.isfinite(float(v))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_nystroem")
    have_ucr = (UCR / "GunPoint").is_dir()
    stages = ["crossover", "scale", "peers"]
    if have_ucr:
        stages = ["fidelity", "learners"] + stages
    cmd = [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--no-plot",
           "--stage", ",".join(stages), "--crossover-sources", "synthetic",
           "--tslearn-nmax", "20", "--data-dir", str(UCR)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                          cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, stages


def test_report_and_machine_info(smoke):
    out, stages = smoke
    report = (out / "report.md").read_text()
    info = json.loads((out / "run.json").read_text())
    assert info["cores"] >= 1 and info["cpu_model"]
    assert "CPU:" in report and "bench_nystroem.py" in report
    for s in stages:
        assert (out / f"{s}.md").read_text().startswith("## ")


def test_fidelity_outputs(smoke):
    out, stages = smoke
    if "fidelity" not in stages:
        pytest.skip("the shared UCR data (../shared/ucr) is absent")
    rows = _rows(out / "fidelity.csv")
    # GunPoint has 50 training series: m in {8, 16} and the target 25, two landmark
    # methods, one seed.
    assert sorted({int(r["m"]) for r in rows}) == [8, 16, 25]
    assert {r["landmarks"] for r in rows} == {"rpcholesky", "uniform"}
    for r in rows:
        for k in ("acc_exact", "acc_opt", "acc_a", "acc_ridgecv", "acc_linsvc-sq"):
            assert 0.0 <= float(r[k]) <= 100.0
        assert 0.0 < float(r["rel_fro"]) < 1.0
        assert 0.0 < float(r["rel_spec"]) < 1.0
        assert float(r["nys_fit_s"]) > 0
        assert (r["target"] == "True") == (int(r["m"]) == 25)
    exact = _rows(out / "fidelity_exact.csv")
    assert [r["dataset"] for r in exact] == ["GunPoint"]
    learners = _rows(out / "learners.csv")
    assert {"linsvc-sq", "linsvc-hinge", "ridge", "ridgecv", "sgd"} <= \
        {r["learner"] for r in learners}
    assert all(0.0 <= float(r["acc"]) <= 100.0 for r in learners)


def test_crossover_outputs(smoke):
    out, _ = smoke
    rows = _rows(out / "crossover.csv")
    assert [int(r["n_train"]) for r in rows] == [40, 80]
    for r in rows:
        assert _finite(r["speedup"]) and float(r["speedup"]) > 0
        assert int(r["m"]) < int(r["n_train"])


def test_scale_outputs(smoke):
    out, _ = smoke
    res = json.loads((out / "scale.json").read_text())
    assert res["N"] == 2000 and res["m"] == 16
    assert res["transform_rate"] > 0 and res["gram_rate"] > 0
    assert 0.0 <= res["accuracy"] <= 100.0
    assert res["exact_bytes"] == 8.0 * 2000 * 2000
    stages = [r["stage"] for r in _rows(out / "scale_stages.csv")]
    assert stages == ["generate", "pack", "fit", "transform", "train", "predict"]
    assert not list(out.glob("features_*.npy"))        # removed unless --keep-features


def test_peers_outputs(smoke):
    out, _ = smoke
    rows = _rows(out / "peers.csv")
    sk = [r for r in rows if r["peer"].startswith("sklearn")]
    assert len(sk) == 1 and float(sk[0]["per_call_us"]) > 0
    assert float(sk[0]["extrapolated_s"]) > float(sk[0]["seconds"])


def test_rank_m_optimum_is_the_exact_svc_at_full_rank_and_low_rank_below():
    sys.path.insert(0, str(ROOT / "scripts"))
    import numpy as np
    from bench_nystroem import rank_m_optimum, svc

    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((60, 80)), rng.standard_normal((40, 80))
    w = rng.standard_normal(80)
    ytr, yte = (A @ w > 0).astype(int), (B @ w > 0).astype(int)
    K, Kte = A @ A.T / 80, B @ A.T / 80
    exact = 100 * np.mean(svc(1.0).fit(K, ytr).predict(Kte) == yte)
    opt = rank_m_optimum(K, Kte, ytr, yte, 1.0, [1, 60])
    assert abs(opt[60] - exact) <= 100 / 40      # at most one test series apart
    assert opt[1] < exact              # one direction cannot hold 80 of signal
