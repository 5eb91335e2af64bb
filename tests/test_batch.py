"""``rntk gram`` end to end, in subprocesses: a grid run, a rerun that computes nothing,
a run killed with SIGKILL and resumed (bit-identical), --out, and every malformed input
(exit code 2 with a message naming the file, series and position)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from rntk_numba import RNTK, GramStore, gram
from rntk_numba.batch import BadInput, parse_grid, parse_kernel, settings
from rntk_numba.gram import compute_dense
from rntk_numba.sequences import pack

ROOT = Path(__file__).resolve().parents[1]
SHARED_UCR = ROOT.parent / "shared" / "ucr"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RNTK_CACHE_DIR", None)
    return env


def rntk(*args, cwd, timeout=300):
    """Run ``rntk ARGS`` in a subprocess: (returncode, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "rntk_numba.cli", *map(str, args)],
                       cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def _ragged(seed=0, n=14, m=2, lo=5, hi=30):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(lo, hi)), m)) for _ in range(n)]


def _save_npz(path, X, lengths=True):
    values = np.concatenate(X)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in X])])
    arrays = {"values": values, "offsets": offsets}
    if lengths:
        arrays["lengths"] = np.diff(offsets)
    np.savez(path, **arrays)


# --------------------------------------------------------------------------- parsing
def test_parse_kernel_and_grid():
    assert parse_kernel("sigma_w=sqrt2, sigma_b=0.1,readout=mean,n_layers=2") == \
        {"sigma_w": np.sqrt(2.0), "sigma_b": 0.1, "readout": "mean", "n_layers": 2}
    axes = parse_grid(["sigma_b=0,0.1,0.5", "readout=last,mean"])
    ks = settings({"sigma_h": 0.2}, axes)
    assert len(ks) == 6 and ks[1] == RNTK(sigma_h=0.2, sigma_b=0.0, readout="mean")
    for bad, match in [("sigma_q=1", "unknown kernel parameter 'sigma_q'"),
                       ("sigma_b=x", "sigma_b: expected a number"),
                       ("sigma_b", "expected NAME=VALUE"),
                       ("n_layers=1.5", "n_layers: expected an integer")]:
        with pytest.raises(BadInput, match=match):
            parse_kernel(bad)
    with pytest.raises(BadInput, match="given twice"):
        parse_grid(["sigma_b=0", "sigma_b=1"])
    with pytest.raises(BadInput, match="sigma_b must be finite, >= 0"):
        settings({}, parse_grid(["sigma_b=0,-1"]))


# --------------------------------------------------------------------------- grid
def test_grid_run_then_rerun_computes_nothing(tmp_path):
    X = _ragged()
    _save_npz(tmp_path / "x.npz", X)
    args = ["gram", "x.npz", "--kernel", "sigma_h=0.3", "--grid", "sigma_b=0,0.2",
            "--grid", "readout=last,mean", "--kind", "both", "--cache", "store",
            "--n-jobs", "2", "--json"]
    rc, out, err = rntk(*args, cwd=tmp_path)
    assert rc == 0, err
    s = json.loads(out)
    assert [r["status"] for r in s["settings"]] == ["computed"] * 4
    assert s["computed"] == 4 and s["hits"] == 0
    assert s["inputs"]["X"] == {"source": "x.npz", "n": 14, "channels": 2,
                                "min_length": min(map(len, X)),
                                "max_length": max(map(len, X))}
    # not a terminal: one line per setting on stderr
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert len(lines) == 4 and lines[0].startswith("[1/4]") and "computed" in lines[0]
    store = GramStore(tmp_path / "store")
    for r in s["settings"]:
        k = RNTK.from_dict(r["kernel"])
        assert r["shape"] == [14, 14] and r["tiles_computed"] > 0
        # the store's key of gram() on the same array: a library call hits the entry
        assert r["key"] == store.key(X, kernel=k)
        ntk, nngp = gram(X, kernel=k, kind="both", cache=store)
        ref = compute_dense(pack(X), None, k, n_jobs=1, kind="both")
        np.testing.assert_array_equal(ntk, ref[0])
        np.testing.assert_array_equal(nngp, ref[1])
    assert store.stats["hits"] == 4 and store.stats["misses"] == 0
    assert len({r["key"] for r in s["settings"]}) == 4

    rc, out, err = rntk(*args, cwd=tmp_path)
    assert rc == 0, err
    s2 = json.loads(out)
    assert [r["status"] for r in s2["settings"]] == ["hit"] * 4
    assert s2["computed"] == 0 and all(r["tiles_computed"] == 0 for r in s2["settings"])
    assert [r["key"] for r in s2["settings"]] == [r["key"] for r in s["settings"]]


def test_out_npy_and_h5_cross_kernel(tmp_path):
    X, Y = _ragged(1, n=9, m=1), _ragged(2, n=5, m=1)
    np.save(tmp_path / "x.npy", np.stack([np.pad(x[:, 0], (0, 30 - len(x)),
                                                 constant_values=np.nan) for x in X]))
    _save_npz(tmp_path / "y.npz", Y, lengths=False)
    k = RNTK(sigma_b=0.1, readout="mean")
    rc, out, err = rntk("gram", "x.npy", "--y", "y.npz", "--kernel",
                        "sigma_b=0.1,readout=mean", "--cache", "c", "--out", "k.npy",
                        "--json", cwd=tmp_path)
    assert rc == 0, err
    ref = gram(X, Y, kernel=k)
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), ref)
    assert json.loads(out)["settings"][0]["shape"] == [9, 5]
    rc, out, err = rntk("gram", "x.npy", "--y", "y.npz", "--kernel",
                        "sigma_b=0.1,readout=mean", "--cache", "c", "--out", "k.h5",
                        "--kind", "both", "--json", cwd=tmp_path)
    assert rc == 0, err
    with h5py.File(tmp_path / "k.h5", "r") as f:
        np.testing.assert_array_equal(f["ntk"][...], ref)
        np.testing.assert_array_equal(f["nngp"][...], gram(X, Y, kernel=k, kind="nngp"))
        assert RNTK.from_dict(json.loads(f.attrs["kernel"])) == k


def test_failure_exit_code_1(tmp_path):
    _save_npz(tmp_path / "x.npz", _ragged(n=4))
    rc, out, err = rntk("gram", "x.npz", "--cache", "c", "--out",
                        tmp_path / "no" / "such" / "dir" / "k.npy", cwd=tmp_path)
    assert rc == 1 and "rntk gram: failed" in err and out == ""


# --------------------------------------------------------------------------- kill
def test_sigkill_and_resume_bit_identical(tmp_path):
    rng = np.random.default_rng(5)
    X = [rng.standard_normal(int(rng.integers(300, 500))) for _ in range(1200)]
    _save_npz(tmp_path / "x.npz", X)
    args = ["gram", "x.npz", "--kernel", "sigma_b=0.1,sigma_h=0.2", "--cache", "c",
            "--n-jobs", "1", "--tile-size", "16", "--out", "k.npy", "--json"]
    killed = False
    for attempt in range(3):                  # retry if the job finished before the kill
        p = subprocess.Popen([sys.executable, "-m", "rntk_numba.cli", *args],
                             cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        journal, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            js = list((tmp_path / "c").glob("*.journal"))
            # the header (tile plan), then one line per finished tile: kill after 20
            if js and js[0].read_bytes().count(b"\n") > 20:
                journal = js[0]
                break
            time.sleep(0.02)
        if p.poll() is None and journal is not None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            killed = p.returncode == -signal.SIGKILL
        else:
            p.wait()
        if killed:
            break
        for f in (tmp_path / "c").glob("*"):
            f.unlink()
    assert killed, "the job finished before it could be killed"
    assert not (tmp_path / "k.npy").exists()
    rc, out, err = rntk(*args, cwd=tmp_path)
    assert rc == 0, err
    r = json.loads(out)["settings"][0]
    assert r["status"] == "resumed" and r["tiles_resumed"] > 0, r
    ref = compute_dense(pack(X), None, RNTK(sigma_b=0.1, sigma_h=0.2), n_jobs=2)[0]
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), ref)


# --------------------------------------------------------------------------- bad input
def _bad_npy_nan(d):
    a = np.ones((4, 10))
    a[2, 5] = np.nan
    np.save(d / "bad.npy", a)
    return ["bad.npy"], ["bad.npy", "series 2, time step 5", "NaN"]


def _bad_npy_inf(d):
    a = np.ones((3, 6, 2))
    a[1, 3, 1] = np.inf
    np.save(d / "bad.npy", a)
    return ["bad.npy"], ["bad.npy", "series 1, time step 3, channel 1"]


def _bad_npy_1d(d):
    np.save(d / "bad.npy", np.ones(10))
    return ["bad.npy"], ["bad.npy", "expected an array (N, T) or (N, T, m)"]


def _bad_npy_object(d):
    np.save(d / "bad.npy", np.array([np.ones(3), np.ones(4)], dtype=object))
    return ["bad.npy"], ["bad.npy", "not a plain numeric .npy"]


def _bad_npy_text(d):
    (d / "bad.npy").write_text("not an array")
    return ["bad.npy"], ["bad.npy"]


def _bad_npz_missing(d):
    np.savez(d / "bad.npz", values=np.ones(10))
    return ["bad.npz"], ["bad.npz", "'offsets'", "missing"]


def _bad_npz_decreasing(d):
    np.savez(d / "bad.npz", values=np.ones(10), offsets=np.array([0, 6, 4, 10]))
    return ["bad.npz"], ["bad.npz", "offsets decrease at series 1"]


def _bad_npz_end(d):
    np.savez(d / "bad.npz", values=np.ones(10), offsets=np.array([0, 4, 9]))
    return ["bad.npz"], ["bad.npz", "offsets[-1] = 9", "10 time steps"]


def _bad_npz_lengths(d):
    np.savez(d / "bad.npz", values=np.ones(10), offsets=np.array([0, 4, 10]),
             lengths=np.array([4, 5]))
    return ["bad.npz"], ["bad.npz", "series 1: lengths[1] = 5", "offsets give 6"]


def _bad_npz_nan(d):
    v = np.ones((10, 2))
    v[7, 0] = np.nan
    np.savez(d / "bad.npz", values=v, offsets=np.array([0, 4, 10]))
    return ["bad.npz"], ["bad.npz", "series 1, time step 3, channel 0"]


def _bad_npz_empty_series(d):
    np.savez(d / "bad.npz", values=np.ones(10), offsets=np.array([0, 4, 4, 10]))
    return ["bad.npz"], ["bad.npz", "series 1 is empty"]


def _bad_tsv_text(d):
    (d / "bad.tsv").write_text("1\t0.5\t0.25\n2\t0.1\t0.3\n1\t0.2\tabc\n")
    return ["bad.tsv"], ["bad.tsv", "line 3", "non-numeric"]


def _bad_tsv_nan_inside(d):
    (d / "bad.tsv").write_text("1\t0.5\t0.25\t1\n2\t0.1\tNaN\t0.3\n")
    return ["bad.tsv"], ["bad.tsv", "series 1, time step 1", "NaN"]


def _bad_ts(d):
    (d / "bad.ts").write_text("@problemName x\n@univariate true\n@classLabel true 1 2\n"
                              "@data\n1,2,3:1\n1,2,x:2\n")
    return ["bad.ts"], ["bad.ts", "line 6"]


def _bad_extension(d):
    (d / "x.csv").write_text("1,2,3\n")
    return ["x.csv"], ["x.csv", "unknown input type"]


def _missing_file(d):
    return ["nothere.npy"], ["nothere.npy", "no such file"]


def _channels_mismatch(d):
    np.save(d / "x.npy", np.ones((3, 5, 2)))
    np.save(d / "y.npy", np.ones((3, 5, 3)))
    return ["x.npy", "--y", "y.npy"], ["x.npy has 2 channels", "y.npy has 3"]


def _bad_kernel(d):
    np.save(d / "x.npy", np.ones((3, 5)))
    return ["x.npy", "--kernel", "sigma_w=1.4,sigmab=0.1"], ["unknown kernel parameter "
                                                            "'sigmab'"]


def _bad_grid_value(d):
    np.save(d / "x.npy", np.ones((3, 5)))
    return ["x.npy", "--grid", "activation=relu,tanh"], ["activation must be one of"]


def _out_with_grid(d):
    np.save(d / "x.npy", np.ones((3, 5)))
    return ["x.npy", "--grid", "sigma_b=0,1", "--out", "k.npy"], ["grid has 2 settings"]


def _bad_kind(d):
    np.save(d / "x.npy", np.ones((3, 5)))
    return ["x.npy", "--kind", "theta"], ["--kind must be one of"]


def _no_input(d):
    return [], ["give one input"]


BAD = [_bad_npy_nan, _bad_npy_inf, _bad_npy_1d, _bad_npy_object, _bad_npy_text,
       _bad_npz_missing, _bad_npz_decreasing, _bad_npz_end, _bad_npz_lengths,
       _bad_npz_nan, _bad_npz_empty_series, _bad_tsv_text, _bad_tsv_nan_inside, _bad_ts,
       _bad_extension, _missing_file, _channels_mismatch, _bad_kernel, _bad_grid_value,
       _out_with_grid, _bad_kind, _no_input]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__.lstrip("_") for f in BAD])
def test_malformed_input_exit_2(tmp_path, make):
    args, needles = make(tmp_path)
    rc, out, err = rntk("gram", *args, "--cache", "c", "--json", cwd=tmp_path)
    assert rc == 2, (rc, err)
    assert out == ""
    assert err.startswith("rntk gram: error:"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not any((tmp_path / "c").glob("*.h5"))     # nothing computed


@pytest.mark.skipif(not SHARED_UCR.is_dir(), reason="../shared/ucr absent")
def test_ucr_input_and_split_as_y(tmp_path):
    from rntk_numba.datasets import load_ucr
    rc, out, err = rntk("gram", "--ucr", "Coffee", "--data-dir", SHARED_UCR,
                        "--split", "test", "--y", "train", "--normalize", "l2",
                        "--cache", "c", "--out", "k.npy", "--json", cwd=tmp_path)
    assert rc == 0, err
    X, _, Xt, _ = load_ucr("Coffee", SHARED_UCR, normalize="l2")
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"),
                                  gram(Xt, X, kernel=RNTK()))
    assert json.loads(out)["inputs"]["Y"]["source"] == "ucr:Coffee:train"


def test_scheduler_runs_on_a_dask_cluster(tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] extra "
                                      "not installed")
    X = _ragged(3, n=10)
    _save_npz(tmp_path / "x.npz", X)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None) as cluster:
        rc, out, err = rntk("gram", "x.npz", "--scheduler", cluster.scheduler_address,
                            "--cache", "c", "--out", "k.npy", "--json", cwd=tmp_path)
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), gram(X, kernel=RNTK()))


def test_scheduler_unreachable_exit_1(tmp_path):
    pytest.importorskip("distributed", reason="dask[distributed] extra not installed")
    np.save(tmp_path / "x.npy", np.ones((3, 5)))
    rc, out, err = rntk("gram", "x.npy", "--scheduler", "tcp://127.0.0.1:9",
                        "--connect-timeout", "1", "--cache", "c", cwd=tmp_path, timeout=120)
    assert rc == 1 and "Dask scheduler" in err


def test_tsv_and_ts_inputs(tmp_path):
    """UCR .tsv (NaN-padded rows: ragged) and multichannel .ts files, used as given."""
    (tmp_path / "x.tsv").write_text("1\t0.5\t0.25\t1\t2\n2\t0.1\t0.3\tNaN\tNaN\n"
                                    "1\t-1\t0\t2\tNaN\n")
    (tmp_path / "x.ts").write_text("@problemName x\n@univariate false\n@dimensions 2\n"
                                   "@classLabel true a b\n@data\n1,2,3:4,5,6:a\n"
                                   "1,2:0,1:b\n")
    for name, X in [("x.tsv", [np.array([0.5, 0.25, 1, 2]), np.array([0.1, 0.3]),
                               np.array([-1.0, 0, 2])]),
                    ("x.ts", [np.array([[1.0, 4], [2, 5], [3, 6]]),
                              np.array([[1.0, 0], [2, 1]])])]:
        out = tmp_path / (name + ".npy")
        rc, _, err = rntk("gram", name, "--kernel", "sigma_b=0.2", "--cache", "c",
                          "--out", out, cwd=tmp_path)
        assert rc == 0, err
        np.testing.assert_array_equal(np.load(out), gram(X, kernel=RNTK(sigma_b=0.2)))


@pytest.mark.parametrize("dtype, m", [(np.float64, 1), (np.float64, 3), (np.float32, 2),
                                      (np.int16, 1)])
def test_npz_read_packed_directly_equals_the_list_path(tmp_path, dtype, m):
    """A clean ragged .npz becomes a PackedSequences without a per-series list, with
    the same values (fingerprint) as pack() of the list; a float64 file is not
    copied."""
    from rntk_numba.batch import read_sequences
    rng = np.random.default_rng(4)
    X = [(10 * rng.standard_normal((int(rng.integers(1, 30)), m))).astype(dtype)
         for _ in range(25)]
    if m == 1:
        X = [x[:, 0] for x in X]
    _save_npz(tmp_path / "x.npz", X)
    P, labels = read_sequences(tmp_path / "x.npz")
    assert labels is None and type(P).__name__ == "PackedSequences"
    ref = pack(X)
    assert P.fingerprint() == ref.fingerprint()
    np.testing.assert_array_equal(P.offsets, ref.offsets)
    assert P.values.dtype == np.float64 and P.values.flags.c_contiguous
    np.testing.assert_array_equal(gram(P, kernel=RNTK(sigma_b=0.1)),
                                  gram(X, kernel=RNTK(sigma_b=0.1)))
