"""GramArray.to_dask(): a lazy dask array over a stored kernel, chunks aligned to the
checksummed row bands, every band verified when read."""

import os
import pickle
import shutil

import h5py
import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is not installed")

from rntk_numba import RNTK, gram  # noqa: E402
from rntk_numba.store import CorruptEntryError, GramStore, _band_rows  # noqa: E402

K = RNTK(sigma_b=0.1, sigma_h=0.3)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """An entry of 1,000 short ragged series (8 row bands) and the in-memory matrices."""
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((int(T), 2)) for T in rng.integers(3, 12, 1000)]
    ref = gram(X, kernel=K, kind="both")
    return X, ref, tmp_path_factory.mktemp("dask")


def _fresh(stored, name):
    X, ref, root = stored
    store = GramStore(root / name)
    ntk, nngp = store.gram(X, kernel=K, kind="both", out_of_core=True)
    return store, ntk, nngp, ref


def test_to_dask_equals_the_in_memory_matrix(stored):
    store, ntk, nngp, (ref_ntk, ref_nngp) = _fresh(stored, "equal")
    with ntk, nngp:
        D, E = ntk.to_dask(), nngp.to_dask()
    band = _band_rows(1000)
    assert D.shape == (1000, 1000) and D.dtype == np.float64
    assert D.chunks[1] == (1000,) and len(D.chunks[0]) == -(-1000 // band) >= 4
    assert all(c == band for c in D.chunks[0][:-1])          # aligned to the bands
    assert D.name != E.name
    np.testing.assert_array_equal(D.compute(), ref_ntk)       # bit for bit
    np.testing.assert_array_equal(E.compute(), ref_nngp)
    np.testing.assert_array_equal(D[130:777:7, 3:900:11].compute(),
                                  ref_ntk[130:777:7, 3:900:11])
    np.testing.assert_array_equal(D[[5, 999, 130, 131]].compute(),
                                  ref_ntk[[5, 999, 130, 131]])
    np.testing.assert_array_equal(D.rechunk((97, 333)).compute(), ref_ntk)
    np.testing.assert_array_equal(D.T.compute(), ref_ntk)    # symmetric
    # the graph travels (a cluster's workers read the file by path)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(D)).compute(
        scheduler="synchronous"), ref_ntk)


def _damage(path, kind, row, n_cols):
    with h5py.File(path, "r") as f:
        off = f[kind].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(off + 8 * (row * n_cols + 17))
        fh.write(np.array([12345.678]).tobytes())


def test_a_damaged_band_raises_when_read(stored):
    store, ntk, nngp, (ref_ntk, _) = _fresh(stored, "damaged")
    path = ntk.path
    with ntk, nngp:
        D = ntk.to_dask()
    band = _band_rows(1000)
    _damage(path, "ntk", 3 * band + 2, 1000)     # after to_dask: nothing was read yet
    with pytest.raises(CorruptEntryError, match=rf"ntk rows {3 * band}\.\.{4 * band - 1}"
                                                r": checksum mismatch"):
        D.compute()
    with pytest.raises(CorruptEntryError):
        D[3 * band + 5].compute()
    # the other bands still read, verified
    np.testing.assert_array_equal(D.blocks[0].compute(), ref_ntk[:band])
    np.testing.assert_array_equal(D[4 * band:].compute(), ref_ntk[4 * band:])
    # the store finds the damage too, removes the entry and recomputes it
    with pytest.warns(Warning, match="corrupt"):
        again = store.gram(stored[0], kernel=K, kind="both")
    np.testing.assert_array_equal(again[0], ref_ntk)


def test_a_removed_entry_and_a_replaced_one(stored):
    store, ntk, nngp, (ref_ntk, _) = _fresh(stored, "removed")
    path = ntk.path
    with ntk, nngp:
        D = ntk.to_dask()
    os.unlink(path)
    with pytest.raises(FileNotFoundError, match="the entry is gone"):
        D.compute()
    # recomputed into a new file (another inode): read through HDF5, same checksums
    res = store.gram(stored[0], kernel=K, kind="both", out_of_core=True)
    for r in res:
        r.close()
    np.testing.assert_array_equal(D.compute(), ref_ntk)
    # replaced by a copy (certainly another inode, while the old one still exists)
    res = store.gram(stored[0], kernel=K, kind="both", out_of_core=True)
    D = res[0].to_dask()
    for r in res:
        r.close()
    shutil.copyfile(path, str(path) + ".copy")
    ino = os.stat(path).st_ino
    os.replace(str(path) + ".copy", path)
    assert os.stat(path).st_ino != ino
    np.testing.assert_array_equal(D.compute(), ref_ntk)


def test_to_dask_without_dask(stored, monkeypatch):
    import sys
    store, ntk, nngp, _ = _fresh(stored, "nodask")
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with ntk, nngp, pytest.raises(ImportError, match="needs dask"):
        ntk.to_dask()
