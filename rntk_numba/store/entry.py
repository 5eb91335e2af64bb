"""The complete entry and its out-of-core handle: reading what the store holds.

Owns ``GramEntry`` (an open, structurally checked complete ``<key>.h5``: its metadata,
kernels and auxiliary datasets) and ``GramArray`` (a read-only, NumPy-indexable handle
on one stored kernel that verifies each row band the first time it reads it, or maps
the whole matrix copy-on-write). Complete files never change, so nothing here locks.
May import: :mod:`.format`, :mod:`.fileio`, ``_checksum``.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np

from .. import _checksum
from ..params import RNTK
from .fileio import _map_cow, _pread_into
from .format import STORE_FORMAT, _KINDS, CorruptEntryError, _attr_str, _band_crcs, _h5py

def _as_index(idx, n: int, what: str) -> np.ndarray:
    """A 1-D int64 index array from ints / a boolean mask, checked against n."""
    a = np.asarray(idx)
    if a.dtype == bool:
        if a.shape != (n,):
            raise IndexError(f"{what}: boolean mask has shape {a.shape}, expected ({n},)")
        return np.flatnonzero(a)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise IndexError(f"{what}: expected a 1-D array of integer indices or a boolean "
                         f"mask, got shape {a.shape} dtype {a.dtype}")
    a = a.astype(np.int64)
    bad = (a < -n) | (a >= n)
    if bad.any():
        raise IndexError(f"{what}: index {int(a[np.argmax(bad)])} is out of range for "
                         f"{n} series")
    return np.where(a < 0, a + n, a)


class GramArray:
    """Read-only handle on one stored kernel matrix (an out-of-core Gram).

    Behaves like a read-only 2-D float64 array for indexing: ``G[i]``, ``G[i, j]``,
    ``G[a:b]``, ``G[rows]``, ``G[rows, cols]``, ``G[:, cols]`` (NumPy semantics; rows
    are read in checksummed bands of about 1 MiB, so selecting columns reads whole
    rows). ``take(rows, cols)`` is ``G[rows][:, cols]``; ``read()`` / ``np.asarray(G)``
    load everything. Every band is verified against its CRC-32 the first time it is
    read: a mismatch raises :class:`CorruptEntryError` and removes the file, so the next
    ``GramStore.gram`` recomputes it. Close it (or use ``with``) to release the file.
    """

    def __init__(self, entry: "GramEntry", kind: str, owns_entry: bool = False):
        self._entry = entry
        self._owns = owns_entry
        self.kind = kind
        self._ds = entry._file[kind]
        self.shape = tuple(int(s) for s in self._ds.shape)
        self.dtype = np.dtype(np.float64)
        self._crc = entry._crcs[kind]
        self._band = entry.band_rows
        self._verified = np.zeros(self._crc.size, dtype=bool)

    # array-like basics
    ndim = 2

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return 8 * self.size

    @property
    def path(self) -> Path:
        return self._entry.path

    @property
    def key(self) -> str:
        return self._entry.key

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (f"GramArray(kind={self.kind!r}, shape={self.shape}, "
                f"key={self.key[:12]}, path={str(self.path)!r})")

    def close(self) -> None:
        if self._owns:
            self._entry.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _rows_of(self, b: int) -> str:
        return f"rows {b * self._band}..{min(self.shape[0], (b + 1) * self._band) - 1}"

    def _check_band(self, b: int, data: np.ndarray) -> None:
        if _checksum.checksum(data) != int(self._crc[b]):
            self._entry._corrupt(f"checksum mismatch in {self.kind} {self._rows_of(b)}")
        self._verified[b] = True

    def _read_band(self, b: int) -> np.ndarray:
        r0, r1 = b * self._band, min(self.shape[0], (b + 1) * self._band)
        try:
            data = self._ds[r0:r1]
        except (OSError, RuntimeError, ValueError) as exc:
            self._entry._corrupt(f"cannot read {self.kind} rows {r0}..{r1 - 1}: {exc}")
        if not self._verified[b]:
            self._check_band(b, data)
        return data

    def read(self) -> np.ndarray:
        """The whole matrix as an in-memory array (every band verified)."""
        out = np.empty(self.shape)
        n_cols = self.shape[1]
        off = self._ds.id.get_offset()       # contiguous: checked when the entry opened

        def read_bands(bands):
            """pread each band straight into ``out`` and checksum it while it is in
            cache (both release the GIL: two threads read two halves)."""
            bad = []
            fd = self._entry._fd            # the file HDF5 opened (pread: thread-safe)
            for b in bands:
                r0, r1 = b * self._band, min(self.shape[0], (b + 1) * self._band)
                block = out[r0:r1]
                _pread_into(fd, block, off + 8 * r0 * n_cols)
                if _checksum.checksum(block) != int(self._crc[b]):
                    bad.append(b)
            return bad

        bands = np.arange(self._crc.size)
        try:
            if out.nbytes < (32 << 20):
                bad = read_bands(bands)
            else:
                from concurrent.futures import ThreadPoolExecutor
                with ThreadPoolExecutor(2) as ex:
                    bad = sum(ex.map(read_bands, np.array_split(bands, 2)), [])
        except OSError as exc:
            self._entry._corrupt(f"cannot read {self.kind}: {exc}")
        self._fail_bands(bad)
        return out

    def _fail_bands(self, bad) -> None:
        """CorruptEntryError naming the bands that failed their checksums, if any; else
        every band counts as verified."""
        if len(bad):
            self._entry._corrupt(f"checksum mismatch in {self.kind} "
                                 f"{self._rows_of(int(bad[0]))} ({len(bad)} band(s))")
        self._verified[:] = True

    def mapped(self) -> np.ndarray:
        """The whole matrix mapped copy-on-write from the entry's file (see
        :func:`_map_cow`), every band verified: nothing is copied, and the pages are the
        page cache's own until written to."""
        off = self._ds.id.get_offset()       # contiguous: checked when the entry opened
        try:
            a = _map_cow(self._entry._fd, off, self.shape, populate=True)
        except (OSError, ValueError) as exc:
            self._entry._corrupt(f"cannot map {self.kind}: {exc}")
        self._fail_bands(np.flatnonzero(_band_crcs(a, self._band) != self._crc))
        return a

    def verify(self) -> None:
        """Check every band (reading one band at a time); raises CorruptEntryError."""
        for b in range(self._crc.size):
            r0, r1 = b * self._band, min(self.shape[0], (b + 1) * self._band)
            try:
                data = self._ds[r0:r1]
            except (OSError, RuntimeError, ValueError) as exc:
                self._entry._corrupt(f"cannot read {self.kind} rows {r0}..{r1 - 1}: {exc}")
            self._check_band(b, data)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted, unique int64) as an array (len(rows), n_cols)."""
        out = np.empty((rows.size, self.shape[1]))
        bands = rows // self._band
        ub, starts = np.unique(bands, return_index=True)
        ends = np.append(starts[1:], rows.size)
        for b, s, e in zip(ub.tolist(), starts.tolist(), ends.tolist()):
            data = self._read_band(b)
            out[s:e] = data[rows[s:e] - b * self._band]
        return out

    def take(self, rows, cols=None) -> np.ndarray:
        """``G[rows][:, cols]`` (``cols=None``: the same as rows) as an in-memory array.
        Memory: the result plus one band (about 1 MiB) at a time."""
        r = _as_index(rows, self.shape[0], "rows")
        c = r if cols is None else _as_index(cols, self.shape[1], "cols")
        out = np.empty((r.size, c.size))
        order = np.argsort(r, kind="stable")
        rs = r[order]
        bands = rs // self._band
        ub, starts = np.unique(bands, return_index=True)
        ends = np.append(starts[1:], rs.size)
        for b, s, e in zip(ub.tolist(), starts.tolist(), ends.tolist()):
            data = self._read_band(b)
            out[order[s:e]] = data[rs[s:e] - b * self._band][:, c]
        return out

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 2 or any(k is None or k is Ellipsis for k in key):
            raise IndexError("GramArray supports G[rows] and G[rows, cols] "
                             "(ints, slices, integer arrays, boolean masks)")
        rkey = key[0]
        ckey = key[1] if len(key) == 2 else slice(None)
        n = self.shape[0]
        if isinstance(rkey, (int, np.integer)):
            i = int(rkey)
            if not -n <= i < n:
                raise IndexError(f"row index {i} is out of range for {n} rows")
            return self._rows(np.array([i % n]))[0][ckey]
        sel = np.arange(n)[rkey]            # NumPy's own rules for slices / arrays / masks
        u, inv = np.unique(sel.ravel(), return_inverse=True)
        block = self._rows(u.astype(np.int64))
        inv = inv.reshape(sel.shape)
        if isinstance(rkey, slice):
            return block[inv][:, ckey]
        return block[inv, ckey]

    def __array__(self, dtype=None, copy=None):
        a = self.read()
        return a if dtype is None else a.astype(dtype)

    def to_dask(self):
        """A lazy ``dask.array`` over this kernel, one chunk per checksummed row band.

        Chunks are the entry's row bands (``band_rows`` x all columns, about 1 MiB);
        each chunk's task reads its band from the entry's file and checks it against the
        band's checksum before returning it: a damaged band raises
        :class:`CorruptEntryError` naming the file and rows. Nothing is read until the
        array is computed. The graph holds only the path, the data's offset and the
        checksums, so it can run on a Dask cluster whose workers see the same file
        system. A task reads the very file this handle opened (compared by inode); if
        the entry has been replaced meanwhile (by an equal recomputation), it reads the
        new file through HDF5 and checks the same checksums; if it has been removed,
        the task raises ``FileNotFoundError``.

        A damaged entry is not removed here (a task has no store); the store removes and
        recomputes it the next time it reads it whole (``GramStore.gram``), or
        ``rntk cache verify --remove``.

        Requires dask (``pip install 'rntk-numba[dask]'``).

        Returns
        -------
        dask.array.Array, shape ``self.shape``, float64, chunks ``(band_rows, n_cols)``

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> from rntk_numba import RNTK, GramStore
        >>> X = [np.sin(np.linspace(0, 3, T)) for T in (20, 35, 50)]
        >>> store = GramStore(tempfile.mkdtemp())
        >>> with store.gram(X, kernel=RNTK(), out_of_core=True) as G:
        ...     D = G.to_dask()
        ...     bool((D.compute() == G.read()).all())
        True
        """
        try:
            import dask.array as da
        except ImportError:
            raise ImportError("GramArray.to_dask needs dask (pip install "
                              "'rntk-numba[dask]')") from None
        reader = _BandReader(str(self.path), self.kind, self.shape, self._band,
                             self._crc.copy(), int(self._ds.id.get_offset()),
                             self._entry._ino)
        return da.from_array(reader, chunks=(self._band, self.shape[1]),
                             name=f"rntk-gram-{self.key}-{self.kind}", asarray=False,
                             fancy=False, meta=np.empty((0, 0)))


class _BandReader:
    """The read-only array-like behind :meth:`GramArray.to_dask`: picklable (a path,
    the data's offset, the band checksums); ``reader[rows, cols]`` reads the whole row
    bands that cover ``rows``, verifies each, and slices."""

    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, path, kind, shape, band_rows, crcs, offset, ino):
        self.path, self.kind, self.shape = path, kind, tuple(shape)
        self.band_rows, self.crcs, self.offset, self.ino = band_rows, crcs, offset, ino

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, b: int):
        return b * self.band_rows, min(self.shape[0], (b + 1) * self.band_rows)

    def band(self, b: int) -> np.ndarray:
        """Row band ``b``, verified against its checksum."""
        r0, r1 = self._rows(b)
        n_cols = self.shape[1]
        out = np.empty((r1 - r0, n_cols))
        where = f"{self.path}: {self.kind} rows {r0}..{r1 - 1}"
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: the entry is gone (removed or pruned "
                                    f"since to_dask() was called)") from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == self.ino:
                _pread_into(fd, out, self.offset + 8 * r0 * n_cols)
            else:                   # replaced by an equal recomputation: same bits
                with _h5py().File(self.path, "r", locking=False) as f:
                    out[...] = f[self.kind][r0:r1]
        except (OSError, KeyError, RuntimeError, ValueError) as exc:
            raise CorruptEntryError(f"{where}: cannot read: {exc}") from exc
        finally:
            os.close(fd)
        if _checksum.checksum(out) != int(self.crcs[b]):
            raise CorruptEntryError(f"{where}: checksum mismatch (the entry is damaged)")
        return out

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        rkey = key[0] if key else slice(None)
        ckey = key[1] if len(key) > 1 else slice(None)
        rows = np.arange(self.shape[0])[rkey]
        if np.ndim(rows) == 0:
            return self.band(int(rows) // self.band_rows)[
                int(rows) % self.band_rows][ckey]
        if rows.size == 0:
            return np.empty((0, self.shape[1]))[:, ckey]
        bands = np.unique(rows // self.band_rows)
        first = int(bands[0]) * self.band_rows
        if bands.size == int(bands[-1]) - int(bands[0]) + 1:      # contiguous bands
            block = np.concatenate([self.band(int(b)) for b in bands])
            return block[rows - first][:, ckey]
        parts = {int(b): self.band(int(b)) for b in bands}
        return np.stack([parts[int(r) // self.band_rows][int(r) % self.band_rows]
                         for r in rows])[:, ckey]


class GramEntry:
    """An opened, complete store entry (the kernel(s) of one (kernel, data) pair).

    Attributes
    ----------
    key : str
    path : Path
    meta : dict -- hyperparameters, shapes, creation time, versions, compute time
    shape : (n_rows, n_cols)
    symmetric : bool -- ``gram(X)`` (True) or ``gram(X, Y)`` (False)
    kernel : RNTK
    kinds : tuple of str -- the kernels stored: ``("ntk",)``, ``("nngp",)`` or both

    ``array(kind)`` gives a lazily verified :class:`GramArray`, ``read(kind)`` an
    in-memory copy (``kind="both"``: a tuple; ``copy=False``: mapped copy-on-write),
    ``take(rows, cols, kind)`` a verified sub-matrix. Opening checks the format, the completeness mark, the key and the
    shapes; a file that fails raises :class:`CorruptEntryError`.
    """

    def __init__(self, path, key: str | None = None, *, on_corrupt=None):
        self.path = Path(path)
        self._on_corrupt = on_corrupt
        self._file = None
        self._fd = None
        os.stat(self.path)                  # FileNotFoundError: no entry
        try:
            self._file = _h5py().File(self.path, "r", locking=False)
            f = self._file
            # every raw read goes through this descriptor of the very file HDF5 opened
            # (a path reopened later could name a newer entry that replaced it)
            self._fd = os.dup(f.id.get_vfd_handle())
            st = os.fstat(self._fd)
            self._ino = (st.st_dev, st.st_ino)
            self.bytes = st.st_size
            a = f.attrs
            if int(a["format"]) != STORE_FORMAT:
                raise ValueError(f"store format {int(a['format'])}, "
                                 f"expected {STORE_FORMAT}")
            if not bool(a["complete"]):
                raise ValueError("not marked complete")
            self.key = _attr_str(a, "key")
            if key is not None and self.key != key:
                raise ValueError(f"holds key {self.key}, expected {key}")
            self.meta = json.loads(_attr_str(a, "meta"))
            self.shape = tuple(int(s) for s in self.meta["shape"])
            self.symmetric = self.meta["mode"] == "sym"
            self.band_rows = int(self.meta["band_rows"])
            n_bands = -(-self.shape[0] // self.band_rows)
            self.kinds = tuple(k for k in _KINDS if k in self.meta["kinds"])
            if not self.kinds:
                raise ValueError("no kernel stored")
            self._crcs = {}
            for kind in self.kinds:
                ds = f[kind]
                if tuple(ds.shape) != self.shape or ds.dtype != np.float64:
                    raise ValueError(f"dataset {kind} has shape {ds.shape} dtype "
                                     f"{ds.dtype}, expected {self.shape} float64")
                off = ds.id.get_offset()
                if (ds.chunks is not None or off is None
                        or off + 8 * self.shape[0] * self.shape[1] > st.st_size):
                    raise ValueError(f"dataset {kind} is not stored contiguously "
                                     f"within the file")
                crc = self.aux("crc_" + kind)
                if crc.shape != (n_bands,) or crc.dtype != np.uint64:
                    raise ValueError(f"crc_{kind} has shape {crc.shape}, "
                                     f"expected ({n_bands},)")
                self._crcs[kind] = crc
            self.kernel = RNTK.from_dict(self.meta["kernel"])
        except CorruptEntryError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            self.close()
            raise CorruptEntryError(f"{self.path}: unreadable or incomplete entry: "
                                    f"{exc}") from exc

    def aux(self, name: str) -> np.ndarray:
        """A small auxiliary dataset (checksums, lengths, series fingerprints), checked
        against the CRC-32 recorded in the (checksummed) metadata."""
        data = np.ascontiguousarray(self._file[name][()])
        want = self.meta.get("aux_crc", {}).get(name)
        if want is None or zlib.crc32(data) != int(want):
            raise CorruptEntryError(f"{self.path}: checksum mismatch in {name}")
        return data

    def _corrupt(self, reason: str):
        if self._on_corrupt is not None:
            self._on_corrupt(self, reason)
        raise CorruptEntryError(f"{self.path}: {reason}")

    def has(self, kind: str) -> bool:
        """Whether the entry holds ``kind`` ("ntk", "nngp" or "both")."""
        return all(k in self.kinds for k in (_KINDS if kind == "both" else (kind,)))

    def array(self, kind: str = "ntk") -> GramArray:
        if kind not in _KINDS:
            raise ValueError(f"kind must be 'ntk' or 'nngp', got {kind!r}")
        if kind not in self.kinds:
            raise KeyError(f"entry {self.key[:12]} holds only {', '.join(self.kinds)}, "
                           f"not {kind} (ask GramStore.gram(..., kind={kind!r}) to add "
                           f"it)")
        return GramArray(self, kind)

    def read(self, kind: str = "ntk", copy: bool = True):
        """The kernel ``kind`` (a tuple for ``"both"``), every band verified: a copy in
        memory, or with ``copy=False`` mapped copy-on-write from the file
        (:meth:`GramArray.mapped`)."""
        if kind == "both":
            return self.read("ntk", copy), self.read("nngp", copy)
        a = self.array(kind)
        return a.read() if copy else a.mapped()

    def take(self, rows, cols=None, kind: str = "ntk"):
        """``G[rows][:, cols]`` read from disk (only the row bands it needs)."""
        if kind == "both":
            return self.take(rows, cols, "ntk"), self.take(rows, cols, "nngp")
        return self.array(kind).take(rows, cols)

    def verify(self) -> None:
        for kind in self.kinds:
            self.array(kind).verify()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"GramEntry(key={getattr(self, 'key', '?')[:12]}, "
                f"shape={getattr(self, 'shape', '?')}, path={str(self.path)!r})")
