"""``rntk features``: fit a map on one file, reuse it on another, the same bits as the
Python API; a rerun that computes nothing; a resumed run; every bad input or option
(exit code 2, a message naming what is wrong)."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from rntk_numba import RNTKNystroem
from rntk_numba.cli import main


def _ragged(seed=0, n=30, m=2, lo=8, hi=40):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(lo, hi)), m)) for _ in range(n)]


def _save_npz(path, X):
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in X])])
    np.savez(path, values=np.concatenate(X), offsets=offsets)


def rntk(capsys, *args):
    """``rntk ARGS`` in this process: (exit code, stdout, stderr)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


FIT = ["--n-components", "12", "--kernel", "sigma_b=0.5,readout=mean"]


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Xtr, Xte = _ragged(0), _ragged(1, n=17)
    _save_npz(tmp_path / "train.npz", Xtr)
    _save_npz(tmp_path / "test.npz", Xte)
    return Xtr, Xte


def _reference(Xtr, Xte, **kw):
    nys = RNTKNystroem(n_components=12, sigma_b=0.5, readout="mean", random_state=0,
                       **kw).fit(Xtr)
    return nys, nys.transform(Xtr), nys.transform(Xte)


def test_fit_then_reuse_the_map_same_bits_as_the_api(files, capsys):
    Xtr, Xte = files
    rc, out, err = rntk(capsys, "features", "train.npz", "--map", "map.pkl", "--out",
                        "train.npy", *FIT, "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["map_status"] == "fitted" and s["status"] == "computed"
    assert s["shape"] == [30, 12] and s["dtype"] == "float64"
    rc, out, err = rntk(capsys, "features", "test.npz", "--map", "map.pkl", "--out",
                        "test.npy", "--json", "--n-jobs", "1")
    assert rc == 0, err
    assert json.loads(out)["map_status"] == "loaded"
    ref, Ftr, Fte = _reference(Xtr, Xte)
    np.testing.assert_array_equal(np.load("train.npy"), Ftr)
    np.testing.assert_array_equal(np.load("test.npy"), Fte)
    with open("map.pkl", "rb") as f:
        pipe = pickle.load(f)          # (SeriesNormalizer("none"), RNTKNystroem)
    np.testing.assert_array_equal(pipe[-1].landmark_indices_, ref.landmark_indices_)
    np.testing.assert_array_equal(pipe.transform(Xte), Fte)
    # the same command again: nothing computed, the file untouched
    rc, out, err = rntk(capsys, "features", "test.npz", "--map", "map.pkl", "--out",
                        "test.npy", "--json")
    s = json.loads(out)
    assert rc == 0 and s["status"] == "up to date" and s["rows_resumed"] == 17
    assert "resuming" not in err and "up to date 17x12" in err
    np.testing.assert_array_equal(np.load("test.npy"), Fte)


def test_float32_and_uniform_landmarks(files, capsys):
    Xtr, Xte = files
    rc, out, err = rntk(capsys, "features", "train.npz", "--map", "m.pkl", "--out",
                        "f.npy", *FIT, "--dtype", "float32", "--landmarks", "uniform",
                        "--random-state", "3")
    assert rc == 0, err
    nys = RNTKNystroem(n_components=12, sigma_b=0.5, readout="mean", random_state=3,
                       dtype="float32", landmarks="uniform").fit(Xtr)
    F = np.load("f.npy")
    assert F.dtype == np.float32
    np.testing.assert_array_equal(F, nys.transform(Xtr))


def test_an_interrupted_run_resumes_with_the_same_bits(files, capsys, tmp_path):
    Xtr, Xte = files
    args = ["features", "test.npz", "--map", "map.pkl", "--out", "test.npy",
            "--chunk-size", "4", "--json"]
    assert rntk(capsys, "features", "train.npz", "--map", "map.pkl", "--out",
                "train.npy", *FIT)[0] == 0
    rc, out, err = rntk(capsys, *args)
    assert rc == 0, err
    full = np.load("test.npy").copy()
    # as a kill after two chunks leaves it: rows 8.. unwritten, the progress at 8
    state_path = tmp_path / "test.npy.progress.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "rows_done": 8}))
    mm = np.load("test.npy", mmap_mode="r+")
    mm[8:] = 0.0
    mm.flush()
    del mm
    rc, out, err = rntk(capsys, *args)
    s = json.loads(out)
    assert rc == 0 and s["status"] == "resumed" and s["rows_resumed"] == 8, err
    assert "resuming test.npy at series 8 of 17" in err
    np.testing.assert_array_equal(np.load("test.npy"), full)
    # --no-resume recomputes everything (same bits again)
    state_path.write_text(json.dumps({**state, "rows_done": 8}))
    rc, out, err = rntk(capsys, *args, "--no-resume")
    assert rc == 0 and json.loads(out)["status"] == "computed"
    np.testing.assert_array_equal(np.load("test.npy"), full)


def test_a_kill_while_fitting_leaves_no_map(files, capsys, monkeypatch):
    def interrupted(self, X, y=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(RNTKNystroem, "fit", interrupted)
    rc, out, err = rntk(capsys, "features", "train.npz", "--map", "map.pkl", "--out",
                        "train.npy", *FIT)
    assert rc == 130 and "rerun the same command to resume" in err
    assert not list(Path(".").glob("map.pkl*"))


@pytest.mark.parametrize("extra, message", [
    (["--n-components", "20"], "fitted with n_components=12, but 20 is asked"),
    (["--kernel", "sigma_b=0.1"], "fitted with sigma_b=0.5, but 0.1 is asked"),
    (["--dtype", "float32"], "fitted with dtype='float64'"),
    (["--landmarks", "uniform"], "fitted with landmarks='rpcholesky'"),
])
def test_options_that_disagree_with_the_map(files, capsys, extra, message):
    assert rntk(capsys, "features", "train.npz", "--map", "map.pkl", "--out",
                "train.npy", *FIT)[0] == 0
    rc, out, err = rntk(capsys, "features", "test.npz", "--map", "map.pkl", "--out",
                        "test.npy", *extra)
    assert rc == 2 and message in err, err
    assert out == ""
    # options that agree are fine
    rc, out, err = rntk(capsys, "features", "test.npz", "--map", "map.pkl", "--out",
                        "test.npy", *FIT)
    assert rc == 0, err


def _bad_channels(d):
    _save_npz(d / "one.npz", [x[:, :1] for x in _ragged(2, n=5)])
    return ["one.npz", "--map", "map.pkl", "--out", "o.npy"], \
        "has 1 channels per time step, the map map.pkl was fitted on 2"


def _bad_not_a_pickle(d):
    (d / "junk.pkl").write_bytes(b"not a pickle at all")
    return ["test.npz", "--map", "junk.pkl", "--out", "o.npy"], \
        "--map junk.pkl: not a map written by rntk features"


def _bad_other_object(d):
    with open(d / "other.pkl", "wb") as f:
        pickle.dump({"a": 1}, f)
    return ["test.npz", "--map", "other.pkl", "--out", "o.npy"], \
        "holds a dict, not a map written by rntk features"


def _bad_out_ext(d):
    return ["test.npz", "--map", "map.pkl", "--out", "o.h5"], "expected a .npy file"


def _bad_same_file(d):
    return ["test.npz", "--map", "x.npy", "--out", "x.npy"], \
        "--map, --out must name different files"


def _bad_too_many(d):
    return ["test.npz", "--map", "new.pkl", "--out", "o.npy", "--n-components", "18"], \
        "--n-components 18 is larger than the input (17 series)"


def _bad_nan(d):
    X = _ragged(3, n=6)
    X[4][3, 1] = np.nan
    _save_npz(d / "nan.npz", X)
    return ["nan.npz", "--map", "map.pkl", "--out", "o.npy"], "series 4"


def _bad_kernel(d):
    return ["test.npz", "--map", "new.pkl", "--out", "o.npy", "--kernel", "sigma_q=1"], \
        "unknown kernel parameter 'sigma_q'"


def _bad_zero_chunk(d):
    return ["test.npz", "--map", "map.pkl", "--out", "o.npy", "--chunk-size", "0"], \
        "--chunk-size must be >= 1"


def _bad_out_folder(d):
    return ["test.npz", "--map", "new.pkl", "--out", "no/such/o.npy"], \
        "--out no/such/o.npy: the folder"


def _bad_missing_input(d):
    return ["nope.npz", "--map", "map.pkl", "--out", "o.npy"], "nope.npz: no such file"


@pytest.mark.parametrize("make", [_bad_channels, _bad_not_a_pickle, _bad_other_object,
                                  _bad_out_ext, _bad_same_file, _bad_too_many, _bad_nan,
                                  _bad_kernel, _bad_zero_chunk, _bad_out_folder,
                                  _bad_missing_input])
def test_bad_input_exit_2(files, capsys, tmp_path, make):
    assert rntk(capsys, "features", "train.npz", "--map", "map.pkl", "--out",
                "train.npy", *FIT)[0] == 0
    args, message = make(tmp_path)
    rc, out, err = rntk(capsys, "features", *args)
    assert rc == 2 and message in err, err
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "new.pkl").exists()


def test_sigkill_during_the_transform_then_resume_bit_identical(tmp_path):
    """A real kill (SIGKILL, in a subprocess) between chunks or inside one: the rerun
    resumes from the progress file and the features equal an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    rng = np.random.default_rng(9)
    Xtr = [rng.standard_normal(int(rng.integers(300, 500))) for _ in range(200)]
    Xte = [rng.standard_normal(int(rng.integers(300, 500))) for _ in range(2000)]
    _save_npz(tmp_path / "train.npz", Xtr)
    _save_npz(tmp_path / "test.npz", Xte)
    cmd = [sys.executable, "-m", "rntk_numba.cli", "features"]
    fit = subprocess.run(cmd + ["train.npz", "--map", "map.pkl", "--out", "train.npy",
                                "--n-components", "96", "-q"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr
    args = ["test.npz", "--map", "map.pkl", "--out", "test.npy", "--n-jobs", "1",
            "--chunk-size", "32", "--json"]
    state = tmp_path / "test.npy.progress.json"
    killed = False
    for attempt in range(3):                  # retry if the job finished before the kill
        p = subprocess.Popen(cmd + args, cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            try:
                if json.loads(state.read_text())["rows_done"] >= 320:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            killed = p.returncode == -signal.SIGKILL
        else:
            p.wait()
        if killed:
            break
        state.unlink(missing_ok=True)
    assert killed, "the job finished before it could be killed"
    done = json.loads(state.read_text())["rows_done"]
    assert 320 <= done < 2000
    r = subprocess.run(cmd + args, cwd=tmp_path, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["status"] == "resumed" and s["rows_resumed"] >= done, s
    with open(tmp_path / "map.pkl", "rb") as f:
        pipe = pickle.load(f)
    np.testing.assert_array_equal(np.load(tmp_path / "test.npy"),
                                  pipe.set_params(nystroem__n_jobs=2).transform(Xte))


def test_scheduler_runs_the_features_on_a_dask_cluster(files, capsys):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] extra "
                                      "not installed")
    Xtr, Xte = files
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None) as cluster:
        rc, out, err = rntk(capsys, "features", "train.npz", "--map", "map.pkl",
                            "--out", "train.npy", *FIT, "--scheduler",
                            cluster.scheduler_address)
    assert rc == 0, err
    _, Ftr, _ = _reference(Xtr, Xte)
    np.testing.assert_array_equal(np.load("train.npy"), Ftr)


def test_scheduler_unreachable_exit_1(files, capsys):
    pytest.importorskip("distributed", reason="dask[distributed] extra not installed")
    rc, out, err = rntk(capsys, "features", "train.npz", "--map", "map.pkl", "--out",
                        "train.npy", *FIT, "--scheduler", "tcp://127.0.0.1:9",
                        "--connect-timeout", "1")
    assert rc == 1 and "cannot connect to the Dask scheduler" in err
    assert not Path("map.pkl").exists()


def test_the_map_is_checked_before_the_input_is_read(files, capsys, monkeypatch):
    (Path("junk.pkl")).write_bytes(b"junk")
    import rntk_numba.features as features
    monkeypatch.setattr(features, "load_inputs",
                        lambda args: pytest.fail("read the input before the map"))
    rc, out, err = rntk(capsys, "features", "train.npz", "--map", "junk.pkl", "--out",
                        "o.npy")
    assert rc == 2 and "--map junk.pkl: not a map" in err


def test_labels_out_writes_the_inputs_labels(files, capsys, tmp_path):
    (tmp_path / "x.tsv").write_text("1\t0.5\t0.25\t1\t2\n2\t0.1\t0.3\tNaN\tNaN\n"
                                    "1\t-1\t0\t2\tNaN\n3\t0.2\t0.1\t0.4\t1\n")
    rc, out, err = rntk(capsys, "features", "x.tsv", "--map", "t.pkl", "--out", "t.npy",
                        "--labels-out", "y.npy", "--n-components", "2", "--json")
    assert rc == 0, err
    assert json.loads(out)["labels_out"] == str(tmp_path / "y.npy")
    y = np.load("y.npy")
    assert y.tolist() == [1, 2, 1, 3] and np.load("t.npy").shape == (4, 2)
    # a ragged .npz carries no labels
    rc, out, err = rntk(capsys, "features", "test.npz", "--map", "t2.pkl", "--out",
                        "o.npy", "--labels-out", "y2.npy", "--n-components", "2")
    assert rc == 2 and "--labels-out: test.npz carries no labels" in err
    assert not Path("y2.npy").exists() and not Path("t2.pkl").exists()
    rc, out, err = rntk(capsys, "features", "x.tsv", "--map", "t.pkl", "--out", "t.npy",
                        "--labels-out", "t.npy")
    assert rc == 2 and "must name different files" in err


SHARED_UCR = Path(__file__).resolve().parents[1].parent / "shared" / "ucr"


@pytest.mark.skipif(not (SHARED_UCR / "GunPoint").is_dir(),
                    reason="../shared/ucr (the UCR archive) is not available")
def test_ucr_split_with_its_labels(files, capsys):
    from rntk_numba import load_ucr
    _, ytr, Xte, yte = load_ucr("GunPoint", SHARED_UCR)
    args = ["--ucr", "GunPoint", "--data-dir", SHARED_UCR, "--map", "g.pkl"]
    assert rntk(capsys, "features", *args, "--out", "tr.npy", "--n-components", "8",
                "--labels-out", "ytr.npy")[0] == 0
    rc, out, err = rntk(capsys, "features", *args, "--split", "test", "--out", "te.npy",
                        "--labels-out", "yte.npy")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load("ytr.npy"), ytr)
    np.testing.assert_array_equal(np.load("yte.npy"), yte)
    with open("g.pkl", "rb") as f:
        pipe = pickle.load(f)
    np.testing.assert_array_equal(np.load("te.npy"), pipe.transform(Xte))


def test_the_map_keeps_the_normalisation(files, capsys):
    """Fitted with --normalize l2: the test set is normalised the same way without
    being told; another --normalize is refused; a bare RNTKNystroem pickled from
    Python is a map without normalisation."""
    from rntk_numba import normalize
    Xtr, Xte = files
    assert rntk(capsys, "features", "train.npz", "--map", "map.pkl", "--out",
                "train.npy", *FIT, "--normalize", "l2")[0] == 0
    rc, out, err = rntk(capsys, "features", "test.npz", "--map", "map.pkl", "--out",
                        "test.npy", "--json")
    assert rc == 0 and json.loads(out)["normalize"] == "l2", err
    nys = RNTKNystroem(n_components=12, sigma_b=0.5, readout="mean",
                       random_state=0).fit(normalize(Xtr, "l2"))
    np.testing.assert_array_equal(np.load("train.npy"),
                                  nys.transform(normalize(Xtr, "l2")))
    np.testing.assert_array_equal(np.load("test.npy"),
                                  nys.transform(normalize(Xte, "l2")))
    with open("map.pkl", "rb") as f:
        np.testing.assert_array_equal(pickle.load(f).transform(Xte), np.load("test.npy"))
    rc, out, err = rntk(capsys, "features", "test.npz", "--map", "map.pkl", "--out",
                        "test.npy", "--normalize", "znorm")
    assert rc == 2 and "fitted with normalize='l2', but 'znorm' is asked" in err
    with open("bare.pkl", "wb") as f:
        pickle.dump(nys, f)
    rc, out, err = rntk(capsys, "features", "test.npz", "--map", "bare.pkl", "--out",
                        "bare.npy", "--json")
    assert rc == 0 and json.loads(out)["normalize"] == "none", err
    np.testing.assert_array_equal(np.load("bare.npy"), nys.transform(Xte))
