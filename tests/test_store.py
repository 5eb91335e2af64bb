"""The HDF5 Gram store: keys, metadata, resume, crash safety, corruption, concurrency,
disk-full / read-only handling, sub-matrices, out-of-core handles, the CLI."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import rntk_numba
import rntk_numba.store as S
from rntk_numba.store import compute as S_compute
from rntk_numba.store import entry as S_entry
from rntk_numba.store import fileio as S_fileio
from rntk_numba.store import format as S_format
from rntk_numba.store import lock as S_lock
from rntk_numba.store import partial as S_partial
from rntk_numba import RNTK, gram
from rntk_numba.cli import main as cli
from rntk_numba.store import CacheWarning, CorruptEntryError, GramArray, GramStore

WORKER = str(Path(__file__).with_name("_store_worker.py"))
K = RNTK(sigma_b=0.2, sigma_h=0.4, n_layers=2)


def series(n=14, seed=0, m=1, lo=3, hi=25):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(lo, hi)), m)) for _ in range(n)]


def ref(X, Y=None, kernel=K):
    return gram(X, Y, kernel=kernel, kind="both", n_jobs=1)


def same(a, b):
    return all(np.array_equal(np.asarray(x), y) for x, y in zip(a, b))


@pytest.fixture(autouse=True, params=["mapped", "copied"])
def results(request, monkeypatch):
    """Every test runs twice: with in-memory results mapped copy-on-write from the
    entry's file (the default for matrices of MAP_MIN_BYTES or more; here for every
    size) and with copies (``GramStore(copy=True)``, and small matrices)."""
    monkeypatch.setattr(S, "MAP_MIN_BYTES", 0 if request.param == "mapped" else 1 << 62)
    monkeypatch.setenv("RNTK_TEST_MAP_MIN_BYTES", str(S.MAP_MIN_BYTES))
    return request.param


@pytest.fixture
def store(tmp_path):
    return GramStore(tmp_path / "store")


def run_worker(*args, timeout=120):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    res = subprocess.run([sys.executable, WORKER, *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- keys ----------------------------------------------------------------------------------

def test_hit_returns_the_computed_matrix_and_an_entry_stores_the_kinds_asked(store):
    X = series()
    ntk = store.gram(X, kernel=K)
    assert store.stats["misses"] == 1 and store.stats["hits"] == 0
    expect = ref(X)
    assert np.array_equal(ntk, expect[0])
    assert np.array_equal(store.gram(X, kernel=K), expect[0])
    assert store.stats["hits"] == 1
    with store.lookup(X, kernel=K) as e:
        assert e.kinds == ("ntk",) and e.has("ntk") and not e.has("nngp")
        with pytest.raises(KeyError, match="holds only ntk"):
            e.read("nngp")
    # the NNGP was not stored: a miss, and the new entry keeps the NTK too
    assert np.array_equal(store.gram(X, kernel=K, kind="nngp"), expect[1])
    assert store.stats["misses"] == 2
    with store.lookup(X, kernel=K) as e:
        assert e.kinds == ("ntk", "nngp")
    assert same(store.gram(X, kernel=K, kind="both"), expect)
    assert np.array_equal(store.gram(X, kernel=K), expect[0])
    assert store.stats["hits"] == 3 and store.stats["misses"] == 2
    assert len(list(store.path.glob("*.h5"))) == 1
    assert store.stats["tiles_computed"] > 0
    # equal inputs in another layout / dtype hit the same entry
    Xi = [np.round(5 * x).astype(np.int32) for x in X]
    Xf = [x.astype(np.float64) for x in Xi]
    a = store.gram(Xf, kernel=K)
    padded = rntk_numba.to_padded(Xi)
    b = store.gram(padded, kernel=K)
    assert np.array_equal(a, b) and store.stats["hits"] == 4


def test_every_key_component_misses(store, monkeypatch):
    X = series(8)
    Y = series(5, seed=1)
    base = store.key(X, kernel=K)
    X_val = [x.copy() for x in X]
    X_val[3][2, 0] = np.nextafter(X_val[3][2, 0], np.inf)        # one ulp
    X_len = [x.copy() for x in X]
    X_len[5] = X_len[5][:-1]                                     # one step shorter
    X_m = [np.hstack([x, x]) for x in X]                         # two channels
    variants = {
        "value": store.key(X_val, kernel=K),
        "length": store.key(X_len, kernel=K),
        "channels": store.key(X_m, kernel=K),
        "order": store.key(X[::-1], kernel=K),
        "cross": store.key(X, X, kernel=K),
        "cross Y": store.key(X, Y, kernel=K),
        "cross Y value": store.key(X, [y + 1e-12 for y in Y], kernel=K),
    }
    for name, value in [("sigma_w", 1.3), ("sigma_u", 0.7), ("sigma_b", 0.3),
                        ("sigma_h", 0.0), ("sigma_v", 2.0), ("n_layers", 3),
                        ("activation", "erf")]:
        variants[name] = store.key(X, kernel=K.replace(**{name: value}))
    variants["sigma_w ulp"] = store.key(
        X, kernel=K.replace(sigma_w=np.nextafter(K.sigma_w, 2)))
    monkeypatch.setattr(rntk_numba.params, "FORMULA_VERSION",
                        rntk_numba.params.FORMULA_VERSION + 1)
    variants["formula"] = store.key(X, kernel=K)
    monkeypatch.undo()
    keys = list(variants.values())
    assert base not in keys, [n for n, k in variants.items() if k == base]
    assert len(set(keys)) == len(keys)
    assert store.key(X, kernel=K) == base
    # and a changed value really is a miss that computes the right matrix
    store.gram(X, kernel=K)
    got = store.gram(X_val, kernel=K, kind="both")
    assert store.stats["misses"] == 2 and same(got, ref(X_val))
    # formula version: the old entry is not served
    monkeypatch.setattr(rntk_numba.params, "FORMULA_VERSION",
                        rntk_numba.params.FORMULA_VERSION + 1)
    store.gram(X, kernel=K)
    assert store.stats["misses"] == 3


def test_metadata_beside_each_entry(store):
    X, Y = series(7), series(4, seed=2, lo=30, hi=40)
    store.gram(X, Y, kernel=K, kind="nngp")
    key = store.key(X, Y, kernel=K)
    with store.lookup(X, Y, kernel=K) as e:
        meta = e.meta
        assert e.shape == (7, 4) and not e.symmetric and e.kernel == K
        assert np.array_equal(e.aux("y_lengths"), [len(y) for y in Y])
    assert meta["kernel"] == K.to_dict() and meta["canonical"] == K.canonical
    assert meta["shape"] == [7, 4] and meta["mode"] == "cross"
    assert meta["formula_version"] == rntk_numba.params.FORMULA_VERSION
    assert meta["engine_version"] == rntk_numba.__version__
    assert meta["compute_seconds"] >= 0 and meta["created"].endswith("Z")
    assert meta["y_lengths"][0] >= 30 and meta["x_fingerprint"] != meta["y_fingerprint"]
    side = json.loads((store.path / f"{key}.json").read_text())
    assert side["key"] == key and side["kernel"] == K.to_dict()
    # nothing but the entry and its lock remain
    store.wait()
    names = sorted(p.name for p in store.path.iterdir())
    assert names == [f"{key}.h5", f"{key}.json", f"{key}.lock"]


def test_background_completion(tmp_path):
    X = series(30)
    expect = ref(X)
    store = GramStore(tmp_path / "bg", background=True)
    G = store.gram(X, kernel=K)
    key = store.key(X, kernel=K)
    G *= 0                                        # the caller owns its array
    pid = os.fork()                               # a fork waits for the completion
    if pid == 0:
        os._exit(0 if store._final(key).exists() else 1)
    assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 0
    assert np.array_equal(store.gram(X, kernel=K), expect[0])
    assert store.stats["hits"] == 1
    sync = GramStore(tmp_path / "sync")
    sync.gram(X, kernel=K)
    assert sync._final(key).exists() and not S._PENDING


@pytest.mark.parametrize("durable", [False, True])
def test_durable_fsyncs_the_entry_and_its_directory(tmp_path, monkeypatch, durable):
    synced = []
    orig = S_partial._fsync_path
    monkeypatch.setattr(S_partial, "_fsync_path",
                        lambda path, directory=False: (synced.append((Path(path).name,
                                                                      directory)),
                                                       orig(path, directory)))
    X = series(12)
    store = GramStore(tmp_path / "d", durable=durable)
    assert np.array_equal(store.gram(X, kernel=K), ref(X)[0])
    key = store.key(X, kernel=K)
    want = [(f"{key}.partial.h5", False), ("d", True)] if durable else []
    assert synced == want
    assert np.array_equal(GramStore(store.path).gram(X, kernel=K), ref(X)[0])


def test_gram_cache_argument(tmp_path, monkeypatch):
    X = series(9)
    expect = ref(X)
    got = gram(X, kernel=K, kind="both", cache=tmp_path / "c")
    assert same(got, expect)
    GramStore(tmp_path / "c").wait()            # completed in the background
    assert len(list((tmp_path / "c").glob("*.h5"))) == 1
    monkeypatch.setenv("RNTK_CACHE_DIR", str(tmp_path / "env"))
    assert S.default_cache_dir() == tmp_path / "env"
    assert np.array_equal(gram(X, kernel=K, cache=True), expect[0])
    GramStore().wait()
    assert len(list((tmp_path / "env").glob("*.h5"))) == 1
    monkeypatch.delenv("RNTK_CACHE_DIR")
    monkeypatch.chdir(tmp_path)
    assert S.default_cache_dir() == tmp_path / "cache"
    st = GramStore(tmp_path / "x")
    assert S.as_store(st) is st and S.as_store(str(tmp_path)).path == tmp_path
    with pytest.raises(TypeError, match="cache must be"):
        S.as_store(3)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        GramStore(tmp_path / "afile")


# -- resume ------------------------------------------------------------------------------

def interrupt_after(monkeypatch, k):
    """Make the store's run_tiles raise KeyboardInterrupt after k finished tiles."""
    orig = S_compute.run_tiles
    count = [0]                        # across calls (out of core runs in batches)

    def run(problem, tiles, on_tile, **kw):
        def cb(t, a, b):
            if count[0] == k:
                raise KeyboardInterrupt
            count[0] += 1
            on_tile(t, a, b)
        return orig(problem, tiles, cb, **kw)
    monkeypatch.setattr(S_compute, "run_tiles", run)


@pytest.mark.parametrize("ooc", [False, True], ids=["in-memory", "out-of-core"])
@pytest.mark.parametrize("Ymode", [None, "cross"])
def test_resume_computes_only_missing_tiles_bit_identical(store, monkeypatch, Ymode, ooc):
    X = series(30, lo=2, hi=30)
    Y = None if Ymode is None else series(11, seed=5)
    interrupt_after(monkeypatch, 9)
    with pytest.raises(KeyboardInterrupt):
        store.gram(X, Y, kernel=K, kind="both", tile_size=4, n_jobs=2, out_of_core=ooc)
    monkeypatch.undo()
    key = store.key(X, Y, kernel=K)
    assert not store._final(key).exists()
    header, done = S._parse_journal(store._journal(key))
    n_tiles = len(header["tiles"])
    assert len(done) == 9 and n_tiles > 20
    (e,) = store.entries()
    assert e["state"] == "partial" and e["tiles_done"] == 9
    # resume with another tile_size: the stored plan is reused
    fresh = GramStore(store.path)
    got = fresh.gram(X, Y, kernel=K, kind="both", tile_size=7, n_jobs=1, out_of_core=ooc)
    assert fresh.stats["tiles_resumed"] == 9
    assert fresh.stats["tiles_computed"] == n_tiles - 9
    assert isinstance(got[0], GramArray) == ooc
    assert same(got, ref(X, Y))
    if ooc:
        for g in got:
            g.close()
    with fresh.lookup(X, Y, kernel=K) as entry:
        assert entry.meta["n_tiles"] == n_tiles and entry.meta["tiles_resumed"] == 9
        assert same((entry.read("ntk"), entry.read("nngp")), ref(X, Y))
    assert [p.name for p in store.path.iterdir() if not p.name.endswith(
        (".h5", ".json", ".lock"))] == []


def damage_tile(store, X, key, header, done, victim, mirror=False):
    """Overwrite 3 bytes of the last stored block (the NNGP if stored) of a journaled
    tile (or of its mirror)."""
    r0, r1, c0, c1 = header["tiles"][victim][:4]
    kind = header["kinds"][-1]
    if header["sink"] == "log":
        nk = len(header["kinds"]) - 1
        path, pos = store._tiles(key), done[victim]["o"] + nk * 8 * (r1 - r0) * (c1 - c0) + 8
    else:
        n = len(X)
        perm = (np.argsort(-np.array([len(x) for x in X]), kind="stable")
                if header["order"] == "length" else np.arange(n))
        i, j = perm[r0], perm[c0 + 1]
        if mirror:
            i, j = j, i
        path, pos = store._partial(key), header["offsets"][kind] + 8 * (i * n + j)
    with open(path, "r+b") as fh:
        fh.seek(pos)
        fh.write(b"\x42" * 3)


@pytest.mark.parametrize("ooc", [False, True], ids=["in-memory", "out-of-core"])
@pytest.mark.parametrize("where", ["file", "file-mirror", "log"])
def test_resume_recomputes_a_damaged_tile(store, monkeypatch, ooc, where):
    X = series(24)
    interrupt_after(monkeypatch, 6)
    budget = 100 if where == "log" else None       # too small: the tile log
    with pytest.raises(KeyboardInterrupt):
        GramStore(store.path, memory_budget=budget).gram(X, kernel=K, kind="both",
                                                         tile_size=4, n_jobs=1)
    monkeypatch.undo()
    key = store.key(X, kernel=K)
    header, done = S._parse_journal(store._journal(key))
    assert header["sink"] == where.split("-")[0]
    assert header["order"] == (None if where == "log" else "length")
    victim = [i for i in sorted(done) if not header["tiles"][i][4]][1]   # off-diagonal
    damage_tile(store, X, key, header, done, victim, mirror=where.endswith("mirror"))
    fresh = GramStore(store.path)
    got = fresh.gram(X, kernel=K, kind="both", out_of_core=ooc)
    assert fresh.stats["tiles_resumed"] == 5
    assert fresh.stats["tiles_computed"] == len(header["tiles"]) - 5
    assert same(got, ref(X))
    if ooc:
        for g in got:
            g.close()
    with fresh.lookup(X, kernel=K) as e:
        e.verify()


@pytest.mark.parametrize("sink", ["file", "log"])
def test_interrupted_completion_is_redone(store, monkeypatch, sink):
    """Killed after the last tile, while completing the file: the next call only
    completes it (and a tile damaged meanwhile is recomputed first)."""
    X = series(20)
    orig = S._Partial.finalize

    def crash(self, *a, **k):
        if self.sink == "log":          # killed while writing the final file
            with open(self.store._partial(self.key), "wb") as fh:
                fh.write(b"half an HDF5 file")
        else:                           # killed while HDF5 edited the partial file
            self._release_map()
            with h5py.File(self.store._partial(self.key), "r+", locking=False) as f:
                f.create_dataset("crc_ntk", data=np.zeros(3))
            with open(self.store._partial(self.key), "r+b") as fh:
                fh.write(b"\x00" * 8)      # the superblock's signature
        raise KeyboardInterrupt
    monkeypatch.setattr(S._Partial, "finalize", crash)
    budget = 100 if sink == "log" else None
    with pytest.raises(KeyboardInterrupt):
        GramStore(store.path, memory_budget=budget).gram(X, kernel=K, tile_size=5,
                                                         out_of_core=True)
    monkeypatch.setattr(S._Partial, "finalize", orig)
    key = store.key(X, kernel=K)
    header, done = S._parse_journal(store._journal(key))
    assert header["sink"] == sink
    assert len(done) == len(header["tiles"]) and not store._final(key).exists()
    damage_tile(store, X, key, header, done, 0)
    fresh = GramStore(store.path, memory_budget=budget)
    G = fresh.gram(X, kernel=K, out_of_core=True)
    assert fresh.stats["tiles_computed"] == 1
    assert fresh.stats["tiles_resumed"] == len(header["tiles"]) - 1
    assert np.array_equal(G[:], ref(X)[0])
    G.close()
    assert not store._partial(key).exists() and not store._tiles(key).exists()
    with fresh.lookup(X, kernel=K) as e:
        e.verify()


@pytest.mark.parametrize("sink", ["file", "log"])
@pytest.mark.parametrize("what", ["journal", "data"])
def test_unusable_partial_is_restarted(store, monkeypatch, what, sink):
    X = series(12)
    interrupt_after(monkeypatch, 3)
    budget = 100 if sink == "log" else None
    with pytest.raises(KeyboardInterrupt):
        GramStore(store.path, memory_budget=budget).gram(X, kernel=K, kind="both",
                                                         tile_size=3)
    monkeypatch.undo()
    key = store.key(X, kernel=K)
    assert S._parse_journal(store._journal(key))[0]["sink"] == sink
    fresh = GramStore(store.path)
    if what == "journal":
        store._journal(key).write_bytes(b"not what it was")
        with pytest.warns(CacheWarning, match="unusable partial"):
            got = fresh.gram(X, kernel=K, kind="both")
    elif sink == "log":                    # the log lost its data: every tile redone
        store._tiles(key).write_bytes(b"")
        got = fresh.gram(X, kernel=K, kind="both")
        assert fresh.stats["tiles_resumed"] == 0
    else:                                  # the partial file was truncated
        store._partial(key).write_bytes(b"")
        with pytest.warns(CacheWarning, match="unusable partial"):
            got = fresh.gram(X, kernel=K, kind="both")
        assert fresh.stats["tiles_resumed"] == 0
    assert same(got, ref(X)) and store._final(key).exists()


@pytest.mark.parametrize("lengths", ["equal", "ragged"])
def test_partial_started_in_memory_resumes_out_of_core(store, monkeypatch, lengths):
    X = series(16, lo=12, hi=13) if lengths == "equal" else series(16)
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        store.gram(X, kernel=K, tile_size=3)
    monkeypatch.undo()
    header, _ = S._parse_journal(store._journal(store.key(X, kernel=K)))
    assert header["order"] == (None if lengths == "equal" else "length")
    assert header["sink"] == "file"
    small = GramStore(store.path, memory_budget=100)
    G = small.gram(X, kernel=K)
    assert isinstance(G, GramArray) and np.array_equal(G[:], ref(X)[0])
    assert small.stats["tiles_resumed"] == 3
    G.close()


def test_partial_started_out_of_core_resumes_in_memory(store, monkeypatch):
    X = series(16)
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        store.gram(X, kernel=K, tile_size=3, out_of_core=True)
    monkeypatch.undo()
    got = store.gram(X, kernel=K)
    assert type(got) is np.ndarray and np.array_equal(got, ref(X)[0])
    assert store.stats["tiles_resumed"] == 3


def test_out_of_core_runs_tiles_in_bounded_batches(store, monkeypatch):
    X = series(40)
    calls = []
    orig = S_compute.run_tiles

    def spy(problem, tiles, on_tile, **kw):
        calls.append(len(tiles))
        return orig(problem, tiles, on_tile, **kw)
    monkeypatch.setattr(S_compute, "run_tiles", spy)
    G = store.gram(X, kernel=K, tile_size=3, n_jobs=2, out_of_core=True)
    assert np.array_equal(G[:], ref(X)[0])
    n_tiles = G._entry.meta["n_tiles"]
    G.close()
    assert len(calls) > 1 and max(calls) <= 8 and sum(calls) == n_tiles
    calls.clear()
    store.gram(series(40, seed=1), kernel=K, tile_size=3, n_jobs=2)
    assert len(calls) == 1                        # in memory: one stream


def test_sigkill_at_random_moments_never_leaves_a_wrong_entry(tmp_path):
    out = run_worker("crash", tmp_path, "--kills", 25, "--seed", 1)
    assert out["kills"] >= 25
    assert out["corrupt_served"] == 0 and out["corrupt_detected"] == 0
    assert out["killed_running"] >= 8 and out["partial_left"] >= 5
    assert out["resumed_runs"] >= 1
    assert out["resumes_matched"] == out["resumed_runs"]


# -- corruption ------------------------------------------------------------------------------

def stored_path(store, X, Y=None):
    store.wait()
    return store._final(store.key(X, Y, kernel=K))


def test_overwritten_bytes_are_detected_and_recomputed(store):
    X = series(40, lo=5, hi=12)
    expect = ref(X)
    store.gram(X, kernel=K, kind="both")
    path = stored_path(store, X)
    with h5py.File(path, "r") as f:
        off = f["nngp"].id.get_offset()
    with open(path, "r+b") as fh:            # damage row 17 of the NNGP
        fh.seek(off + 8 * (17 * 40 + 3))
        fh.write(b"\x00\x01\x02")
    assert cli(["cache", "--dir", str(store.path), "verify"]) == 1
    fresh = GramStore(store.path)
    with pytest.warns(CacheWarning, match="checksum mismatch in nngp"):
        got = fresh.gram(X, kernel=K, kind="both")
    assert same(got, expect)
    assert fresh.stats["corrupt"] == 1 and fresh.stats["misses"] == 1
    assert cli(["cache", "--dir", str(store.path), "verify"]) == 0
    # damaged metadata (the superblock) is detected as well
    with open(path, "r+b") as fh:
        fh.seek(20)
        fh.write(b"\xff\xfe")
    with pytest.warns(CacheWarning, match="corrupt entry"):
        assert np.array_equal(GramStore(store.path).gram(X, kernel=K), expect[0])


def test_truncated_file_is_detected_and_recomputed(store):
    X = series(20)
    expect = ref(X)
    store.gram(X, kernel=K)
    path = stored_path(store, X)
    size = path.stat().st_size
    for cut in (size - 100, size // 2, 10, 0):
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        with pytest.warns(CacheWarning, match="corrupt entry"):
            got = store.gram(X, kernel=K, kind="both")
        assert same(got, expect)
        with GramStore(store.path).lookup(X, kernel=K) as e:      # stored again
            e.verify()


def test_random_damage_is_never_served(tmp_path):
    out = run_worker("fuzz", tmp_path, "--rounds", 60, "--seed", 4)
    assert out["rounds"] == 60 and out["errors"] == 0
    assert out["served_wrong"] == 0
    assert out["detected"] >= 30


# -- concurrency -------------------------------------------------------------------------------

def test_two_processes_at_once(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([sys.executable, WORKER, "race", str(d), str(tmp_path / f"{i}.npy")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for i in range(2)]
    time.sleep(1.5)                     # both imported and polling
    (d / "go").touch()
    stats = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        stats.append(json.loads(out.strip().splitlines()[-1]))
    sys.path.insert(0, str(Path(WORKER).parent))
    try:
        import _store_worker as w
    finally:
        sys.path.pop(0)
    X, kernel = w.problem(0, 48)
    expect = w.reference(X, kernel)
    for i in range(2):
        got = np.load(tmp_path / f"{i}.npy")
        assert np.array_equal(got[0], expect[0]) and np.array_equal(got[1], expect[1])
    store = GramStore(d)
    with store.lookup(X, kernel=kernel) as e:
        e.verify()
        n_tiles = e.meta["n_tiles"]
    computed = sum(s.get("tiles_computed", 0) for s in stats)
    assert n_tiles <= computed <= 2 * n_tiles
    assert sum(s.get("hits", 0) for s in stats) + sum(s.get("misses", 0) for s in stats) == 2


def test_lock_timeout_computes_without_storing(store):
    X = series(6)
    key = store.key(X, kernel=K)
    store.path.mkdir(parents=True)
    holder = S._KeyLock(store._lockfile(key)).acquire()
    try:
        impatient = GramStore(store.path, lock_timeout=0.2)
        with pytest.warns(CacheWarning, match="waited"):
            got = impatient.gram(X, kernel=K, kind="both")
        assert same(got, ref(X)) and not store._final(key).exists()
    finally:
        holder.release()
    store.gram(X, kernel=K)
    store.wait()
    assert store._final(key).exists()


def test_lock_fallback_without_flock(store, monkeypatch):
    """Where fcntl.flock is unavailable, an O_EXCL lock file with host:pid is used; a
    lock of a dead process is taken over, a live one is waited for."""
    import socket
    monkeypatch.setattr(S_lock, "fcntl", None)
    X = series(6)
    key = store.key(X, kernel=K)
    store.path.mkdir(parents=True)
    excl = store.path / f"{key}.lock.excl"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    excl.write_text(f"{socket.gethostname()}:{dead.pid}")          # a dead owner
    assert same(store.gram(X, kernel=K, kind="both"), ref(X))
    store.wait()
    assert store._final(key).exists() and not excl.exists()
    Y = series(5, seed=3)
    key_y = store.key(Y, kernel=K)
    live = store.path / f"{key_y}.lock.excl"
    live.write_text(f"{socket.gethostname()}:{os.getpid()}")       # alive: this process
    impatient = GramStore(store.path, lock_timeout=0.3)
    with pytest.warns(CacheWarning, match="waited"):
        assert same(impatient.gram(Y, kernel=K, kind="both"), ref(Y))
    assert not store._final(key_y).exists() and impatient.stats["lock_waits"] == 1
    live.unlink()
    store.gram(Y, kernel=K)
    store.wait()
    assert store._final(key_y).exists()


def test_missing_side_file_is_recreated(store):
    X = series(12)
    store.gram(X, kernel=K)
    key = store.key(X, kernel=K)
    store.wait()
    store._sidecar(key).unlink()
    (e,) = store.entries()
    assert e["state"] == "complete" and e["shape"] == (12, 12)
    assert json.loads(store._sidecar(key).read_text())["key"] == key
    assert np.array_equal(gram(X[3:9], kernel=K, cache=store), ref(X[3:9])[0])
    assert store.stats["subset_hits"] == 1


# -- disk full / read-only -----------------------------------------------------------------

class read_only:
    """Make a directory read-only for this process: chmod for a normal user; for root
    (who ignores permissions) the immutable attribute, or skip if unavailable."""

    def __init__(self, path):
        self.path = path
        self.root = hasattr(os, "geteuid") and os.geteuid() == 0

    def __enter__(self):
        if not self.root:
            os.chmod(self.path, 0o555)
            return self
        try:
            res = subprocess.run(["chattr", "+i", str(self.path)], capture_output=True)
        except OSError:
            res = None
        if res is None or res.returncode != 0:
            pytest.skip("running as root and chattr +i is unavailable: cannot make a "
                        "directory read-only")
        return self

    def __exit__(self, *exc):
        if self.root:
            subprocess.run(["chattr", "-i", str(self.path)], check=True)
        else:
            os.chmod(self.path, 0o755)


def test_read_only_directory(store):
    X = series(10)
    store.gram(X[:5], kernel=K)
    store.wait()
    interrupted = series(6, seed=9)
    with read_only(store.path):
        with pytest.raises(OSError):
            (store.path / "probe").touch()
        with pytest.warns(CacheWarning, match="cannot write"):
            got = store.gram(X, kernel=K, kind="both")
        assert same(got, ref(X))
        with warnings.catch_warnings():             # a stored entry is still served
            warnings.simplefilter("error")
            assert np.array_equal(store.gram(X[:5], kernel=K), ref(X[:5])[0])
        assert store.stats["hits"] == 1
        with pytest.raises(OSError, match="out of core"):
            GramStore(store.path, memory_budget=100).gram(interrupted, kernel=K)
    assert len(list(store.path.glob("*.h5"))) == 1


def test_unwritable_store_warns_and_returns_the_matrix(store, monkeypatch):
    X = series(10)
    store.gram(X[:5], kernel=K)          # an entry stored while writable
    store.wait()
    n_files = len(list(store.path.iterdir()))

    def refuse(self):
        raise PermissionError(errno.EROFS, "Read-only file system", str(self.path))
    monkeypatch.setattr(S._KeyLock, "acquire", refuse)
    monkeypatch.setattr(os, "utime", lambda *a, **k: refuse(store))
    with pytest.warns(CacheWarning, match="Read-only file system"):
        got = store.gram(X, kernel=K, kind="both")
    assert same(got, ref(X)) and len(list(store.path.iterdir())) == n_files
    with warnings.catch_warnings():           # reading needs no write access
        warnings.simplefilter("error")
        assert np.array_equal(store.gram(X[:5], kernel=K), ref(X[:5])[0])
    # out of core and too big for memory: a clear error instead
    tiny = GramStore(store.path, memory_budget=100)
    with pytest.raises(OSError, match="out of core"):
        tiny.gram(X, kernel=K)


def fail_writes_after(monkeypatch, k):
    orig = S._Partial.write_tile
    count = [0]

    def write(self, tile, blocks):
        if count[0] >= k:
            raise OSError(errno.ENOSPC, "No space left on device")
        count[0] += 1
        return orig(self, tile, blocks)
    monkeypatch.setattr(S._Partial, "write_tile", write)


def test_disk_full_mid_computation(store, monkeypatch):
    X = series(20)
    expect = ref(X)
    fail_writes_after(monkeypatch, 5)
    with pytest.warns(CacheWarning, match="No space left"):
        got = store.gram(X, kernel=K, kind="both", tile_size=3)
    assert same(got, expect)
    key = store.key(X, kernel=K)
    assert not store._final(key).exists()          # nothing looks complete
    assert len(S._parse_journal(store._journal(key))[1]) == 5
    monkeypatch.undo()                              # space freed: resume
    fresh = GramStore(store.path)
    assert same(fresh.gram(X, kernel=K, kind="both"), expect)
    fresh.wait()
    assert fresh.stats["tiles_resumed"] == 5 and store._final(key).exists()


def test_disk_full_when_the_entry_file_is_allocated(store, monkeypatch):
    X = series(20)

    def full(fd, off, n):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.warns(CacheWarning, match="No space left"):
        got = store.gram(X, kernel=K)
    assert np.array_equal(got, ref(X)[0])
    assert [p.name for p in store.path.iterdir() if not p.name.endswith(".lock")] == []
    # without posix_fallocate (macOS) the blocks are reserved by writing zeros
    monkeypatch.delattr(os, "posix_fallocate")
    assert np.array_equal(store.gram(X, kernel=K), ref(X)[0])
    assert np.array_equal(GramStore(store.path).gram(X, kernel=K), ref(X)[0])


def test_disk_full_out_of_core(store, monkeypatch):
    X = series(20)
    expect = ref(X)
    fail_writes_after(monkeypatch, 4)
    # fits in memory: falls back to an in-memory result
    with pytest.warns(CacheWarning, match="No space left"):
        got = store.gram(X, kernel=K, kind="both", tile_size=3, out_of_core=True)
    assert isinstance(got[0], np.ndarray) and same(got, expect)
    # does not fit: a clear error, partial kept for later
    small = GramStore(store.path, memory_budget=1000)
    with pytest.raises(OSError, match="No space left"):
        small.gram(X, kernel=K, tile_size=3)
    key = store.key(X, kernel=K)
    assert store._journal(key).exists() and not store._final(key).exists()
    # not enough free space known up front: warned before computing
    monkeypatch.undo()
    monkeypatch.setattr(S_compute, "_disk_free", lambda path: 10)
    with pytest.warns(CacheWarning, match="not enough free space"):
        assert np.array_equal(GramStore(store.path).gram(X[:7], kernel=K), ref(X[:7])[0])


# -- sub-matrices --------------------------------------------------------------------------

def test_gram_subset_is_a_slice_bit_for_bit(store):
    X = series(36, lo=2, hi=30)
    rng = np.random.default_rng(3)
    perm = rng.permutation(36)
    tr, te = perm[:25], perm[25:]
    G_tr, _ = store.gram_subset(X, tr, kernel=K, kind="both")
    computed = store.stats["tiles_computed"]
    assert np.array_equal(G_tr, gram([X[i] for i in tr], kernel=K))
    assert np.array_equal(store.gram_subset(X, tr, kernel=K), G_tr)
    G_te = store.gram_subset(X, te, tr, kernel=K, kind="both")
    assert same(G_te, ref([X[i] for i in te], [X[i] for i in tr]))
    mask = np.zeros(36, bool)
    mask[tr] = True
    assert np.array_equal(store.gram_subset(X, mask, kernel=K, kind="nngp"),
                          ref([X[i] for i in np.flatnonzero(mask)])[1])
    assert store.stats["tiles_computed"] == computed       # no recomputation
    with store.lookup(X, kernel=K) as e:
        assert np.array_equal(e.take(te, tr), G_te[0])
    with pytest.raises(IndexError, match="out of range"):
        store.gram_subset(X, [0, 36], kernel=K)
    with pytest.raises(IndexError, match="boolean mask"):
        store.gram_subset(X, mask[:-1], kernel=K)


def test_gram_of_a_subset_hits_the_cached_full_set(store):
    X = series(30)
    X = X + [X[4].copy(), X[9].copy()]            # duplicated series: distinct samples
    store.gram(X, kernel=K, kind="both")
    computed = store.stats["tiles_computed"]
    idx = [31, 4, 2, 9, 30, 17]                   # both copies of X[4] and of X[9]
    sub = [X[i] for i in idx]
    got = gram(sub, kernel=K, kind="both", cache=store)
    assert same(got, ref(sub))
    te = [X[i] for i in (1, 3, 5)]
    tr = [X[i] for i in (0, 2, 4, 6, 31)]
    assert same(store.gram(te, tr, kernel=K, kind="both"), ref(te, tr))
    assert store.stats["subset_hits"] == 2 and store.stats["tiles_computed"] == computed
    # a cross request pairing a sample with itself is not a slice: computed
    overlap = store.gram([X[1]], [X[1], X[2]], kernel=K, kind="both")
    assert same(overlap, ref([X[1]], [X[1], X[2]]))
    assert store.stats["tiles_computed"] > computed


# -- out of core -----------------------------------------------------------------------------

def test_out_of_core_handle(store, monkeypatch):
    monkeypatch.setattr(S_format, "BAND_BYTES", 4 * 45 * 8)      # 4-row bands
    X = series(45, lo=2, hi=9)
    expect = ref(X)
    small = GramStore(store.path, memory_budget=45 * 45 * 8 - 1)  # < one kernel
    G = small.gram(X, kernel=K)
    assert isinstance(G, GramArray) and G.shape == (45, 45) and len(G) == 45
    assert G._entry.band_rows == 4
    A = expect[0]
    keys = [3, -1, (2, 5), (np.int64(7), slice(None)), slice(2, 17), slice(None, None, -3),
            [4, 1, 1, 40], ([1, 3], [2, 0]), (slice(None), [3, 1]), A[0] > A[0].mean(),
            (slice(1, 30, 2), slice(None, None, -1)), (np.array([[1, 2], [3, 4]]), 0),
            ([5, 6], slice(3, 9))]
    for key in keys:
        assert np.array_equal(G[key], A[key]), key
    assert np.array_equal(G.read(), A) and np.array_equal(np.asarray(G), A)
    assert np.array_equal(G.take([9, 2], [0, 44, 5]), A[np.ix_([9, 2], [0, 44, 5])])
    with pytest.raises(IndexError):
        G[..., 1]
    with pytest.raises(IndexError):
        G[45]
    G.close()
    ntk, nngp = small.gram(X, kernel=K, kind="both")     # adds the NNGP: a miss
    assert np.array_equal(nngp[:], expect[1]) and small.stats["misses"] == 2
    ntk.close()
    nngp.close()
    ntk, nngp = small.gram(X, kernel=K, kind="both")
    assert np.array_equal(ntk[:], A) and small.stats["hits"] == 1
    ntk.close()
    nngp.close()
    # damage one band: reading it raises, the file is removed, the next call recomputes
    path = stored_path(store, X)
    with h5py.File(path, "r") as f:
        off = f["ntk"].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(off + 8 * (44 * 45 + 1))
        fh.write(b"\x13\x37")
    G = small.gram(X, kernel=K)
    assert np.array_equal(G[:3], A[:3])                          # untouched band
    with pytest.warns(CacheWarning), pytest.raises(CorruptEntryError, match="checksum"):
        G[44]
    G.close()
    assert not path.exists()
    G = small.gram(X, kernel=K)
    assert np.array_equal(G[:], A) and small.stats["misses"] == 3
    G.close()


# -- housekeeping ---------------------------------------------------------------------------

def test_cli_ls_info_verify_prune_clear(store, capsys, monkeypatch):
    d = str(store.path)
    sets = [series(6 + i, seed=i) for i in range(3)]
    keys = []
    for i, X in enumerate(sets):
        store.gram(X, kernel=K.replace(sigma_w=1.0 + i))
        store.wait()
        keys.append(store.key(X, kernel=K.replace(sigma_w=1.0 + i)))
        os.utime(store._final(keys[-1]), (1e9 + i, 1e9 + i))    # last used: in order
    interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        store.gram(series(9, seed=7), kernel=K, tile_size=2)
    monkeypatch.undo()
    capsys.readouterr()
    assert cli(["cache", "--dir", d, "ls"]) == 0
    out = capsys.readouterr().out
    for k in keys:
        assert k[:12] in out
    assert "complete" in out and "partial 2/" in out and "7x7" in out
    assert "sw=1 " in out and "sw=3 " in out and "sh=0.4" in out and "LAST USED" in out
    assert cli(["cache", "ls", "--dir", d, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 4
    assert cli(["cache", "--dir", d, "info", keys[1][:10]]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["meta"]["kernel"]["sigma_w"] == 2.0 and info["shape"] == [7, 7]
    assert cli(["cache", "--dir", d, "info", "zzzz"]) == 2
    assert "no entry" in capsys.readouterr().err
    assert cli(["cache", "--dir", d, "verify"]) == 0
    assert "3 entries checked, 0 corrupt" in capsys.readouterr().out
    sizes = {e["key"]: e["bytes"] for e in store.entries()}
    keep = sizes[keys[1]] + sizes[keys[2]]
    assert cli(["cache", "--dir", d, "prune", "--max-bytes", str(keep)]) == 0
    left = {e["key"] for e in store.entries()}
    assert left == {keys[1], keys[2]}                 # the partial and the LRU entry went
    assert cli(["cache", "--dir", d, "prune", "--max-bytes", "1K"]) == 0
    assert store.entries() == []
    store.gram(sets[0], kernel=K)
    assert cli(["cache", "--dir", d, "clear"]) == 0     # waits for the completion
    assert list(store.path.iterdir()) == []
    capsys.readouterr()
    assert cli(["cache", "--dir", d, "ls"]) == 0 and "empty" in capsys.readouterr().out
    assert cli(["cache"]) == 2 and "verify" in capsys.readouterr().err   # no action
    with pytest.raises(SystemExit):
        cli(["cache", "prune", "--max-bytes", "lots"])
    assert S._parse_bytes("1.5K") == 1536 and S._parse_bytes("2GiB") == 2 << 30


def test_cli_default_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RNTK_CACHE_DIR", str(tmp_path / "envcache"))
    gram(series(5), kernel=K, cache=True)
    assert cli(["cache", "ls"]) == 0
    assert "5x5" in capsys.readouterr().out


def test_gram_subset_refuses_repeated_indices(tmp_path):
    rng = np.random.default_rng(21)
    X = [rng.standard_normal(int(T)) for T in rng.integers(3, 12, 6)]
    store = GramStore(tmp_path / "s")
    k = RNTK(sigma_h=1.0, sigma_b=0.3)
    with pytest.raises(ValueError, match="repeated"):
        store.gram_subset(X, [0, 0, 1], kernel=k)
    with pytest.raises(ValueError, match="repeated"):
        store.gram_subset(X, [0, 1], [2, 2], kernel=k)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tiny_sets_round_trip(store, n):
    X = series(n)
    Y = series(1, seed=9)
    for args in ((X,), (X, Y), (Y, X)):
        expect = ref(*args)
        assert same(store.gram(*args, kernel=K, kind="both"), expect)
        assert same(GramStore(store.path).gram(*args, kernel=K, kind="both"), expect)
    assert store.stats["misses"] == 3


# -- regressions found by review -------------------------------------------------------------

def test_hdf5_failure_creating_the_entry_file_warns_and_returns(store, monkeypatch):
    X = series(10)

    def fail(*a, **k):
        raise RuntimeError("unable to extend file properly (errno = 27)")
    monkeypatch.setattr(S_partial, "_contiguous_dataset", fail)
    with pytest.warns(CacheWarning, match="cannot create"):
        got = store.gram(X, kernel=K)
    assert np.array_equal(got, ref(X)[0])
    assert [p.name for p in store.path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("ooc", [False, True])
def test_a_failed_completion_keeps_every_tile(store, monkeypatch, ooc):
    X = series(16)

    def fail(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(S._Partial, "_file_crcs", fail)
    with pytest.raises(KeyboardInterrupt):
        store.gram(X, kernel=K, tile_size=4, out_of_core=ooc)
    monkeypatch.undo()
    key = store.key(X, kernel=K)
    assert store._journal(key).exists() and store._partial(key).exists()
    fresh = GramStore(store.path)
    got = fresh.gram(X, kernel=K, tile_size=4)
    assert np.array_equal(got, ref(X)[0]) and fresh.stats["tiles_computed"] == 0
    assert sorted(p.name for p in store.path.iterdir()) == [f"{key}.{x}" for x in
                                                            ("h5", "json", "lock")]


def test_a_killed_rebuild_keeps_the_partial_file(store, monkeypatch):
    X = series(16)
    orig = S._Partial.finalize

    def damaged(self, *a, **k):        # a completion killed inside HDF5, then resumed...
        self._release_map()
        with h5py.File(self.store._partial(self.key), "r+", locking=False) as f:
            f.create_dataset("crc_ntk", data=np.zeros(3))
        raise KeyboardInterrupt
    monkeypatch.setattr(S._Partial, "finalize", damaged)
    with pytest.raises(KeyboardInterrupt):
        store.gram(X, kernel=K, tile_size=4)
    monkeypatch.setattr(S._Partial, "finalize", orig)

    def dies(*a, **k):                 # ... and killed again while rebuilding it
        raise KeyboardInterrupt
    monkeypatch.setattr(S_partial, "_pwrite_all", dies)
    monkeypatch.setattr(S_fileio, "_pwrite_all", dies)
    with pytest.raises(KeyboardInterrupt):
        GramStore(store.path).gram(X, kernel=K)
    monkeypatch.undo()
    fresh = GramStore(store.path)
    assert np.array_equal(fresh.gram(X, kernel=K), ref(X)[0])
    assert fresh.stats["tiles_computed"] == 0 and fresh.stats["tiles_resumed"] > 0
    key = store.key(X, kernel=K)
    assert sorted(p.name for p in store.path.iterdir()) == [f"{key}.{x}" for x in
                                                            ("h5", "json", "lock")]


def test_an_open_handle_reads_its_own_file_after_the_entry_is_replaced(store):
    X = series(20)
    H = store.gram(X, kernel=K, kind="nngp", out_of_core=True)   # nngp-only entry
    GramStore(store.path).gram(X, kernel=K, kind="ntk")         # replaced: both kinds
    assert np.array_equal(H.read(), ref(X)[1])                  # no false corruption
    H.close()
    assert store.stats["corrupt"] == 0
    with store.lookup(X, kernel=K) as e:
        assert e.kinds == ("ntk", "nngp")


def _store_fds(path):
    out = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            out += os.readlink(f"/proc/self/fd/{fd}").startswith(str(path))
        except OSError:
            pass
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_an_interrupted_resume_leaks_no_descriptor(store, monkeypatch):
    X = series(16)
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        store.gram(X, kernel=K, tile_size=4)
    monkeypatch.undo()

    def stop(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(S_compute, "prepare", stop)  # interrupted right after resume
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            GramStore(store.path).gram(X, kernel=K)
    assert _store_fds(store.path) == 0


def test_a_kept_kernel_that_would_exceed_the_memory_budget_is_dropped(store):
    X = series(20)
    store.gram(X, kernel=K, kind="ntk")
    small = GramStore(store.path, memory_budget=20 * 20 * 8)        # one kernel only
    got = small.gram(X, kernel=K, kind="nngp", out_of_core=False)
    assert type(got) is np.ndarray and np.array_equal(got, ref(X)[1])
    with small.lookup(X, kernel=K) as e:
        assert e.kinds == ("nngp",)


def test_waiting_for_a_background_completion_that_has_not_started(tmp_path, monkeypatch):
    import threading
    X = series(12)
    GramStore(tmp_path / "warm").gram(X, kernel=K)

    class SlowStart(threading.Thread):
        def start(self):
            time.sleep(0.3)
            super().start()

    class Shim:                                     # the store module's `threading`
        Thread = SlowStart
        Lock = threading.Lock
        current_thread = staticmethod(threading.current_thread)
    monkeypatch.setattr(S_compute, "threading", Shim)
    monkeypatch.setattr(S_lock, "threading", Shim)
    store = GramStore(tmp_path / "bg", background=True)
    errors = []

    def other():
        time.sleep(0.15)                            # while start() is delayed
        try:
            store.wait()
        except RuntimeError as exc:                 # pragma: no cover - the bug
            errors.append(exc)
    t = threading.Thread(target=other)
    t.start()
    store.gram(X, kernel=K)
    t.join()
    store.wait()
    assert errors == [] and store._final(store.key(X, kernel=K)).exists()


def test_populating_the_mapped_file_is_best_effort(store, monkeypatch):
    """The sequential pre-fault of the entry file (madvise MADV_POPULATE_WRITE) only
    speeds things up: a kernel that refuses it changes nothing."""
    calls = []
    orig = S_partial._populate

    def spy(mm, off, nbytes):
        calls.append(nbytes)
        return orig(mm, off, nbytes)
    monkeypatch.setattr(S_partial, "_populate", spy)
    monkeypatch.setattr(S_fileio, "_MADV_POPULATE_WRITE", 987654)        # EINVAL
    X = series(400, lo=2, hi=4)                                     # 1.28 MB per kernel
    got = store.gram(X, kernel=K, kind="both", n_jobs=1)
    assert same(got, ref(X)) and calls == [400 * 400 * 8] * 2
    monkeypatch.setattr(S_fileio, "_MADV_POPULATE_WRITE", None)           # not Linux
    assert same(GramStore(store.path / "b").gram(X, kernel=K, kind="both"), ref(X))


@pytest.mark.parametrize("budget", [None, 100], ids=["file-sink", "log-sink"])
def test_every_object_header_is_checksummed(store, budget):
    """HDF5 1.8 object headers (signature OHDR) carry a checksum; version-1 headers
    do not. Objects added when the file sink completes its file in place must get them
    too."""
    X = series(20)
    res = GramStore(store.path, memory_budget=budget).gram(X, kernel=K)
    if isinstance(res, GramArray):
        res.close()
    path = stored_path(store, X)
    raw = path.read_bytes()
    with h5py.File(path, "r") as f:
        for name in [*f.keys(), "/"]:
            addr = h5py.h5o.get_info(f[name].id).addr
            assert raw[addr:addr + 4] == b"OHDR", name


@pytest.mark.parametrize("ooc", [False, True])
def test_the_mapping_is_really_closed(store, monkeypatch, ooc):
    """No view of the mapped file may outlive the tiles' copying: the mapping is then
    closed (a lingering NumPy view would make mmap.close() fail, silently)."""
    seen = []
    orig = S._Partial._release_map

    def spy(self):
        mm = self._mm
        orig(self)
        if mm is not None:
            seen.append(mm.closed)
    monkeypatch.setattr(S._Partial, "_release_map", spy)
    res = store.gram(series(20), kernel=K, out_of_core=ooc)
    if isinstance(res, GramArray):
        res.close()
    assert seen and all(seen)


# -- in-memory results: mapped copy-on-write, or copies -------------------------------------

def _mapped(a) -> bool:
    """Whether an array's memory is a private mapping of an entry file (.h5), as the
    process's memory map (/proc/self/maps) says."""
    addr = a.__array_interface__["data"][0]
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return parts[1].endswith("p") and ".h5" in (parts[5] if len(parts) > 5
                                                            else "")
    return False


def test_results_are_mapped_copy_on_write_and_the_file_never_changes(store, results):
    X = series(30)
    expect = ref(X)
    G = store.gram(X, kernel=K, kind="both")                    # cold: the file's pages
    H = store.gram(X, kernel=K, kind="both")                    # hit: mapped in place
    assert store.stats["hits"] == 1 and same(G, expect) and same(H, expect)
    for a in (*G, *H):
        assert _mapped(a) == (results == "mapped")
        assert a.flags.writeable and a.dtype == np.float64 and a.flags.c_contiguous
    G[0][:] = -1.0                                              # private copies of the
    H[1][3, :] += 7.0                                           # pages written
    np.fill_diagonal(H[0], 0.0)
    assert (G[0] == -1).all() and not np.array_equal(H[0], G[0])
    with store.lookup(X, kernel=K) as e:                        # the entry is intact
        e.verify()
        assert same(e.read("both"), expect)
    again = store.gram(X, kernel=K, kind="both")
    assert same(again, expect) and store.stats["corrupt"] == 0


def test_a_mapped_result_outlives_the_removal_and_replacement_of_its_entry(store):
    X = series(24)
    expect = ref(X)
    ntk = store.gram(X, kernel=K)
    path = stored_path(store, X)
    ino = path.stat().st_ino
    both = store.gram(X, kernel=K, kind="both")     # a kind added: the entry replaced
    assert path.stat().st_ino != ino
    assert np.array_equal(ntk, expect[0])
    store.clear()                                    # every entry removed
    assert not list(store.path.glob("*.h5"))
    assert np.array_equal(ntk, expect[0]) and same(both, expect)


def test_copies_where_asked_or_small(tmp_path, monkeypatch):
    """The default threshold: matrices under MAP_MIN_BYTES are copies; copy=True makes
    every result a copy."""
    monkeypatch.setattr(S, "MAP_MIN_BYTES", 8 * 20 * 20)
    X, Xs = series(20), series(19, seed=5)
    for copy in (False, True):
        store = GramStore(tmp_path / f"c{copy}", copy=copy)
        for _ in range(2):                          # cold, then a hit
            assert _mapped(store.gram(X, kernel=K)) is not copy
            assert not _mapped(store.gram(Xs, kernel=K))
        assert store.stats["hits"] == 2
    # out of core, handles as before
    res = GramStore(tmp_path / "ooc").gram(X, kernel=K, out_of_core=True)
    assert isinstance(res, GramArray)
    res.close()


def test_an_unreadable_mapping_is_a_corrupt_entry_not_a_crash(store, monkeypatch,
                                                                results):
    """Mapped hits fault their pages in with madvise(MADV_POPULATE_READ) first: a file
    that lost its pages (here: truncated after the entry was opened and checked) fails
    there with EFAULT instead of raising SIGBUS on first access; the entry is removed
    and recomputed."""
    X = series(60)
    store.gram(X, kernel=K)
    path = stored_path(store, X)
    real = S_fileio._map_cow

    def truncate_first(fd, off, shape, populate=False):
        os.truncate(path, off + 8)                  # behind the open entry's back
        return real(fd, off, shape, populate)
    monkeypatch.setattr(S_entry, "_map_cow", truncate_first)
    monkeypatch.setattr(S_partial, "_map_cow", truncate_first)
    if results == "mapped":
        with pytest.warns(CacheWarning, match="cannot map ntk"):
            got = store.gram(X, kernel=K)
        assert store.stats["corrupt"] == 1 and store.stats["misses"] == 2
    else:
        got = store.gram(X, kernel=K)                # copies never map
        assert store.stats["hits"] == 1
    assert np.array_equal(got, ref(X)[0])


def test_map_cow_faults_pages_in_or_fails_cleanly(tmp_path, monkeypatch):
    p = tmp_path / "pages"                                     # eight 4 KiB pages
    p.write_bytes(np.arange(512 * 8, dtype="<f8").tobytes())
    fd = os.open(p, os.O_RDONLY)
    try:
        a = S._map_cow(fd, 4096, (7, 512), populate=True)      # readable: no error
        assert np.array_equal(a.ravel(), np.arange(512, 8 * 512))
        os.truncate(p, 8192)                                   # six pages vanish
        if S._MADV_POPULATE_READ is not None:
            with pytest.raises(OSError) as exc:
                S._map_cow(fd, 4096, (7, 512), populate=True)
            assert exc.value.errno in (errno.EFAULT, errno.EIO)
        # a kernel without MADV_POPULATE_READ (EINVAL): best effort, no error
        monkeypatch.setattr(S_fileio, "_MADV_POPULATE_READ", 987654)
        b = S._map_cow(fd, 4096, (7, 512), populate=True)
        assert b.shape == (7, 512)                   # (its vanished pages not touched)
        assert a[0, 0] == 512.0                      # still mapped: the first page
    finally:
        os.close(fd)


def test_mapped_results_hold_no_file_descriptor(store, results):
    """A mapped result keeps its mapping, not a descriptor (Python's mmap object would
    keep a duplicate open for each), so a search may hold many of them."""
    fds = lambda: len(os.listdir("/proc/self/fd"))         # noqa: E731
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd on this platform")
    X = series(30)
    store.gram(X, kernel=K, kind="both")
    before = fds()
    held = [store.gram(X, kernel=K, kind="both") for _ in range(20)]
    assert fds() == before
    assert all(same(h, ref(X)) for h in held)
    store.clear()
    assert fds() == before and all(same(h, ref(X)) for h in held)


@pytest.mark.parametrize("how", ["in-place", "rebuild"])
def test_a_result_returned_by_a_failed_completion_survives_its_resume(store, monkeypatch,
                                                                       results, how):
    """A completion that fails (ENOSPC) still returns the matrix -- mapped from the
    partial file. Resuming that partial entry later (completing it in place, or
    rebuilding it beside) must leave the array unchanged, and the array's writes must
    not reach the entry."""
    X = series(40)
    expect = ref(X)[0]
    orig = S._Partial.finalize

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(S._Partial, "finalize", full)
    with pytest.warns(CacheWarning, match="completing entry"):
        A = store.gram(X, kernel=K)
    monkeypatch.setattr(S._Partial, "finalize", orig)
    assert _mapped(A) == (results == "mapped") and np.array_equal(A, expect)
    if how == "rebuild":
        monkeypatch.setattr(S._Partial, "_file_intact", lambda self, path: False)
    fresh = GramStore(store.path)
    B = fresh.gram(X, kernel=K)
    assert fresh.stats["tiles_computed"] == 0 and fresh.stats["tiles_resumed"] > 0
    assert np.array_equal(A, expect) and np.array_equal(B, expect)
    A[:] = 0.0
    with store.lookup(X, kernel=K) as e:
        e.verify()
    assert np.array_equal(B, expect) and np.array_equal(GramStore(store.path).gram(
        X, kernel=K), expect)


def test_the_mean_readout_is_its_own_entry_and_shows_in_ls(store, capsys):
    X = series(12)
    last, mean = K, K.replace(readout="mean")
    a, b = store.gram(X, kernel=last), store.gram(X, kernel=mean)
    assert store.stats["misses"] == 2 and not np.array_equal(a, b)
    assert np.array_equal(b, gram(X, kernel=mean)) and store.key(X, kernel=last) != \
        store.key(X, kernel=mean)
    capsys.readouterr()
    assert cli(["cache", "--dir", str(store.path), "ls"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if "sw=" in r]
    assert len(rows) == 2 and sum(r.rstrip().endswith("mean") or " mean " in r
                                  for r in rows) == 1


def test_a_mapped_result_stays_readable_in_atexit_handlers(tmp_path):
    """The mapping is not undone at interpreter exit: an atexit handler registered
    before the store was used (so run after weakref's own exit hook) may still read a
    mapped result (unmapping it there made the process segfault)."""
    script = tmp_path / "late.py"
    script.write_text(
        "import atexit, numpy as np\n"
        "held = {}\n"
        "atexit.register(lambda: print('sum', float(held['G'].sum()), flush=True))\n"
        "import rntk_numba.store as S\n"
        "from rntk_numba import RNTK\n"
        "S.MAP_MIN_BYTES = 0\n"
        f"store = S.GramStore({str(tmp_path / 's')!r})\n"
        "X = [np.sin(np.arange(10) * f) for f in (0.1, 0.2, 0.3, 0.5)]\n"
        "store.gram(X, kernel=RNTK())\n"
        "held['G'] = store.gram(X, kernel=RNTK())\n"
        "assert store.stats['hits'] == 1\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.startswith("sum ")


def test_fork_during_a_background_completion_does_not_deadlock(tmp_path):
    """The store imported BEFORE h5py, a fork while a background completion runs: the
    store's before-fork handler must run before h5py's (which takes the lock the
    completion needs). Before the fix this hung for ever."""
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import os, sys
        from rntk_numba.store import GramStore    # first: before any h5py import
        import numpy as np
        from rntk_numba import RNTK
        rng = np.random.default_rng(0)
        X = [rng.standard_normal(int(t)) for t in rng.integers(5, 40, 30)]
        store = GramStore({str(tmp_path / "c")!r}, background=True)
        store.gram(X, kernel=RNTK())
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print("forked")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "forked" in res.stdout, res.stderr
