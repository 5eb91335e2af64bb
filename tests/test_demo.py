"""``rntk demo`` end to end on the bundled GunPoint data."""

import io
import os
import subprocess
import sys

import pytest

from rntk_numba.cli import build_parser
from rntk_numba.demo import run_demo


def test_run_demo_accuracy_and_report():
    buf = io.StringIO()
    res = run_demo(n_jobs=2, out=buf)
    text = buf.getvalue()
    # GunPoint: the RNTK SVM is above 90 % (paper: 98 %), RBF above 85 % (paper 95.3 %)
    assert res["RNTK"]["test_accuracy"] >= 0.90
    assert res["RBF"]["test_accuracy"] >= 0.85
    assert 0.5 <= res["RNTK"]["cv_accuracy"] <= 1.0
    assert res["RNTK"]["params"]["C"] in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    assert res["RNTK"]["n_settings"] == 6          # one kernel setting x 6 values of C
    assert res["data"] == {"name": "GunPoint", "n_train": 50, "n_test": 150}
    assert "RNTK" in text and "RBF" in text and "test acc" in text
    assert f"{100 * res['RNTK']['test_accuracy']:.2f}%" in text


def test_run_demo_is_deterministic():
    a = run_demo(n_jobs=1, cv=5, out=io.StringIO())
    b = run_demo(n_jobs=2, cv=5, out=io.StringIO())
    for m in ("RNTK", "RBF"):
        assert a[m]["test_accuracy"] == b[m]["test_accuracy"]
        assert a[m]["params"] == b[m]["params"]


def test_demo_subcommand_is_registered():
    args = build_parser().parse_args(["demo", "--sigma-w", "1.3", "--n-jobs", "1",
                                      "--search"])
    assert args.sigma_w == 1.3 and args.n_jobs == 1 and args.search
    assert callable(args.func)


def test_rntk_demo_command_line():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-m", "rntk_numba.cli", "demo", "--n-jobs",
                           "2"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RNTK ")]
    assert len(lines) == 1
    acc = float(lines[0].split("%")[1].split()[-1])       # the "test acc" column
    assert acc >= 90.0


def test_rntk_demo_bad_argument_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "rntk_numba.cli", "demo",
                           "--sigma-w", "-1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "sigma_w must be finite, >= 0" in proc.stderr


def test_run_demo_with_the_mean_readout():
    buf = io.StringIO()
    res = run_demo(n_jobs=2, out=buf, readout="mean")
    assert res["RNTK"]["params"]["readout"] == "mean"
    assert "readout=mean" in res["RNTK"]["kernel"] and "readout=mean" in buf.getvalue()
    assert res["RNTK"]["test_accuracy"] >= 0.90
    args = build_parser().parse_args(["demo", "--readout", "mean"])
    assert args.readout == "mean"
