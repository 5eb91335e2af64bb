"""The on-disk Gram store: every Gram matrix a one-time cost.

A hyperparameter search asks for the same Gram matrices again and again (every CV fold,
every C, every rerun). ``GramStore`` keeps them in a directory of HDF5 files and makes
them survive what a long batch job meets: ``kill -9``, a full disk, two jobs on the same
data, a power cut in the middle of a write.

Use
---
::

    from rntk_numba import RNTK, GramStore, gram
    store = GramStore("cache")
    K = gram(X, kernel=RNTK(), cache=store)        # computed once, then read back
    K_tr = store.gram_subset(X, train_idx, kernel=RNTK())              # CV folds:
    K_te = store.gram_subset(X, test_idx, train_idx, kernel=RNTK())    # slices

``gram(..., cache="some/dir")`` and ``cache=True`` (the default directory, see
:func:`default_cache_dir`) work too.

What an entry is
----------------
One entry holds the kernel(s) of one (kernel, data) pair that were asked for: ``kind=
"ntk"`` stores the NTK, ``"nngp"`` the NNGP, ``"both"`` both (they come from the same
walk, so both cost no extra computation, but twice the bytes on disk; writing bytes is
what a cold entry costs). Asking an entry for a kernel it does not hold is a miss: the
matrix is recomputed and the new entry holds both. The key is a hash of

* ``kernel.canonical`` (every hyperparameter, floats in exact hex form),
* ``rntk_numba.params.FORMULA_VERSION`` (bumped when the mathematics or numerics
  change, so that no matrix of an older formula is ever served),
* the fingerprints of X and Y (number of channels, lengths, float64 bytes; see
  ``PackedSequences.fingerprint``), and
* the mode: ``"sym"`` for ``gram(X)`` (diagonal = same sample, spec 3.2) or
  ``"cross"`` for ``gram(X, Y)`` -- so ``gram(X)`` and ``gram(X, X)`` are different
  entries, as they are different matrices when ``sigma_h > 0``.

Equal inputs hit (a list or a padded array of the same series, any integer or float
dtype of the same values); any change of a value, a length or a hyperparameter misses.

Files in the store directory, per key::

    <key>.h5          a complete entry; appears only by an atomic rename, never changes
    <key>.json        human-readable metadata (informative; the .h5 attributes rule)
    <key>.journal     an entry being computed: its tile plan, then one checksummed
                      line per finished tile
    <key>.partial.h5  its HDF5 file, the tiles copied in as they finish (an entry that
                      fits in memory), or the file being assembled (out of core)
    <key>.tiles       out of core only: the finished tiles, appended as they come
    <key>.lock        the per-key writer lock (fcntl.flock)

A complete file has a float64 dataset ``ntk`` and/or ``nngp`` (``meta["kinds"]``) of the
full (N, M) matrix (a symmetric Gram is materialised, both triangles, so any slice reads
directly), stored contiguously, plus ``crc_ntk`` / ``crc_nngp``: 64-bit checksums
(``_checksum``, a vectorised Fletcher-style sum, ~5x faster than CRC-32) of row bands of
about 1 MiB, the lengths and fingerprints of the data, per-series fingerprints (for
subset look-ups), and the metadata as an attribute: hyperparameters, shapes, lengths,
creation time, engine and library versions, compute time, tile counts, and CRC-32s of
the small datasets. HDF5 metadata is checksummed as well (HDF5 1.8 file format:
superblock v2, object headers v2; attributes are fixed-length strings, stored in the
checksummed object header).

While an entry that fits in ``memory_budget`` is computed, each finished tile is copied
into its place (and its mirror's) in the memory-mapped, preallocated datasets of
``<key>.partial.h5``, then journaled with a 64-bit checksum per block: every byte of the
entry is written once, during the computation, and completing it only adds checksums
and metadata before the rename. Out of core, tiles are appended to ``<key>.tiles`` and
the file is assembled from it row band by row band at the end (see ``_Partial``). In
memory, a ragged set is computed in order of decreasing length, as ``gram`` does without
a store (same bits, fewer idle lanes).

Guarantees
----------
* Resume: the tile plan is stored with the partial entry when it is created and reused
  on resume (whatever ``tile_size`` the resuming call passes). A resumed computation
  computes only the tiles the journal lists as missing; each journaled tile is read
  back and checked against its checksum first (a mismatch is recomputed). Every matrix
  entry is computed independently of the tiling, so the result is bit-identical to an
  uninterrupted computation.
* Crash safety: a ``<key>.h5`` only ever comes from renaming a file after it was
  completed, checksummed and closed. A process killed at any instant (``kill -9``)
  leaves at most a partial entry, which the next call resumes (a completion killed
  midway is redone: the HDF5 structure is rebuilt around the verified tiles) or, if
  unreadable, restarts. A power cut can lose writes
  the kernel had not yet flushed; since every read verifies the checksums of what it
  reads and every resumed tile is verified before use, what it damaged is recomputed,
  never served. ``GramStore(durable=True)`` also fsyncs each entry before its rename
  (and the directory after it), so that completed entries survive a power cut too; it
  is off by default because it costs about as much as the rest of the store (an fsync
  of 200 MB runs at ~2 GB/s here; see BENCHMARKS.md).
* Corruption: every read of a complete entry checks the row-band checksums of what it
  reads (out-of-core handles check each band the first time they touch it). A file
  that cannot be opened (truncated, damaged metadata), or whose checksums do not match,
  is never served: :meth:`GramStore.gram` warns (``CacheWarning``), removes it and
  recomputes; an out-of-core handle raises ``CorruptEntryError`` and removes the file,
  so the next call recomputes.
* Concurrency: any number of readers (complete files are immutable and read without a
  lock). Writers of one key serialise on ``<key>.lock``; the second process waits, then
  finds the entry complete and reads it: the work is done once. A process that
  finished waiting re-checks the lock file's identity, so housekeeping may delete lock
  files safely. HDF5's own file locking is not used (it fails on some network file
  systems, and no HDF5 file is ever opened for writing by two processes here).
* Disk full / read-only directory: the store warns (``CacheWarning``) and the computed
  matrix is still returned when it fits in memory; otherwise (out of core) an
  ``OSError`` says what is missing. A partial entry left behind never looks complete.
  The memory-mapped datasets are allocated on disk (``posix_fallocate``) before the
  first tile is copied in, so a full disk is an ``OSError`` up front, never a SIGBUS.

Results in memory: mapped, not copied
-------------------------------------
A result of 8 MiB or more (``MAP_MIN_BYTES``) that fits in memory is an ordinary,
writeable ndarray whose memory is the entry file's own pages, mapped copy-on-write
(``MAP_PRIVATE``): a hit verifies the checksums in place and copies nothing, and a cold
computation returns the pages its tiles were copied into -- the matrix is held once,
not twice (on a VM that hands freed memory back to its host, fresh memory is what a
cold entry cost most). Writing into the array copies the pages written; the file never
changes. Removing, pruning or replacing the entry leaves the array valid (the store
only ever unlinks complete files or renames new ones over them). Hits fault the pages
in first (``MADV_POPULATE_READ``), so an unreadable file is a corrupt entry, not a
crash. A mapped array holds no file descriptor, but its file's disk blocks stay
allocated until the array is gone (``prune`` and ``clear`` free them then). Do not
truncate or overwrite entry files by hand while such arrays are alive (a mapped page
that vanished raises SIGBUS); on a network file system shared with other hosts, where
a page evicted and read again later might no longer be there, use
``GramStore(copy=True)``, which returns copies.

Sub-matrices and out-of-core
----------------------------
:meth:`GramStore.gram_subset` answers ``G[rows][:, cols]`` of the symmetric Gram of a
full set from the store (computing the full Gram once if absent) -- what CV folds
need: ``gram_subset(X, tr, kernel=k)`` is the training Gram of a fold and
``gram_subset(X, te, tr, kernel=k)`` its test-vs-train kernel, both bit-identical to
``gram(X[tr])`` and ``gram(X[te], X[tr])`` when ``te`` and ``tr`` are disjoint.
:meth:`GramStore.lookup` / :meth:`GramStore.ensure` return a :class:`GramEntry` for
repeated slicing without reopening. As a convenience ``gram(X_sub, cache=store)`` also
hits when ``X_sub`` (and ``Y_sub``) are series of a cached symmetric entry of the same
kernel (matched by per-series fingerprints; rows and columns must be distinct samples).

A Gram whose requested kernel(s) would not fit in ``memory_budget`` (default: half the
physical memory), or any Gram with ``out_of_core=True``, is written tile by tile and
returned as a :class:`GramArray`: a read-only handle on the on-disk dataset with
``.shape``, NumPy-style ``[...]`` indexing (rows are cheap, columns read whole row
bands), ``take(rows, cols)``, ``read()`` and ``close()``.
"""

from __future__ import annotations

import argparse
import errno
import functools
import hashlib
import json
import mmap
import os
import socket
import sys
import threading
import time
import warnings
import weakref
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from . import _checksum, params
from ._version import __version__
from .engine import default_n_jobs, prepare, run_tiles
from .assembly import (by_length, check_args, compute_dense, gather_block, pack_pair,
                       scatter_block, select_kind, tile_positions)
from .params import RNTK
from .sequences import PackedSequences
from .tiles import Tile

try:  # POSIX advisory locks; see _KeyLock for the fallback
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["GramStore", "GramEntry", "GramArray", "CacheWarning", "CorruptEntryError",
           "as_store", "default_cache_dir", "register", "STORE_FORMAT", "MAP_MIN_BYTES"]

#: Version of the on-disk layout (entries of another format are recomputed).
STORE_FORMAT = 3      # 2: 64-bit band checksums; 3: only the kernels asked for (meta "kinds")
#: Target size of a checksummed row band.
BAND_BYTES = 1 << 20
#: HDF5 file-format bounds: the 1.8 format (superblock v2 and object headers v2, both
#: checksummed; no SWMR "open for write" flag, which a killed writer would leave set
#: and which would make its partial file unopenable), readable by HDF5 >= 1.8.
_LIBVER = ("v108", "v108")
_KINDS = ("ntk", "nngp")


class CacheWarning(UserWarning):
    """The store could not do something (write, remove, lock) but the result is valid."""


class CorruptEntryError(OSError):
    """A stored entry failed its integrity checks (it is removed, never served)."""


def _h5py():
    import h5py
    return h5py


# Entries being completed by background threads, (store dir, key) -> Thread. Completing
# an in-memory entry (checksums, the HDF5 file, fsync, rename) happens after gram()
# returns; anything in this process that looks at the entry waits for it first, and so
# does os.fork() (a child must not inherit a thread inside HDF5).
_PENDING: dict = {}                 # (only with GramStore(background=True))
_PENDING_LOCK = threading.Lock()


def _join_pending(path=None, key=None) -> None:
    with _PENDING_LOCK:
        jobs = [t for (d, k), t in _PENDING.items()
                if (path is None or d == str(path)) and (key is None or k == key)]
    for t in jobs:
        if t is not threading.current_thread():
            t.join()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_join_pending)


def default_cache_dir() -> Path:
    """``$RNTK_CACHE_DIR`` if set, else ``cache/`` in the current working directory."""
    env = os.environ.get("RNTK_CACHE_DIR")
    return Path(env) if env else Path.cwd() / "cache"


def as_store(cache) -> "GramStore":
    """A ``GramStore`` from what ``gram(..., cache=...)`` accepts: a store, a directory
    (str or path-like), or ``True`` for :func:`default_cache_dir`."""
    if isinstance(cache, GramStore):
        return cache
    if cache is True:
        return GramStore()
    if isinstance(cache, (str, os.PathLike)):
        return GramStore(cache)
    raise TypeError(f"cache must be a GramStore, a directory path or True, "
                    f"got {type(cache).__name__}")


# -- small helpers ------------------------------------------------------------------------

def _kinds_of(kind: str) -> tuple:
    """The stored kernels that ``kind`` ("ntk", "nngp", "both") needs."""
    return _KINDS if kind == "both" else (kind,)


def _n_kinds(kind: str) -> int:
    return len(_kinds_of(kind))


def _band_rows(n_cols: int) -> int:
    return max(1, BAND_BYTES // (8 * max(1, n_cols)))


def _band_crcs(a: np.ndarray, band_rows: int) -> np.ndarray:
    """Checksum (``rntk_numba._checksum``, 64-bit) of each row band of a C-contiguous
    2-D array (two threads for large arrays: the jitted sum releases the GIL)."""
    starts = list(range(0, a.shape[0], band_rows))

    def some(part):
        return [_checksum.checksum(a[s:s + band_rows]) for s in part]
    if a.nbytes < (32 << 20) or len(starts) < 2:
        sums = some(starts)
    else:
        from concurrent.futures import ThreadPoolExecutor
        half = len(starts) // 2
        with ThreadPoolExecutor(2) as ex:
            first = ex.submit(some, starts[:half])
            sums = first.result() + some(starts[half:])
    return np.array(sums, dtype=np.uint64)


def series_fingerprints(P: PackedSequences) -> np.ndarray:
    """(N, 16) uint8: a 128-bit hash per series (channels, length, float64 bytes; see
    ``_checksum.series_hashes``: jitted, ~1 ms for 5,000 series of length 100)."""
    h = _checksum.series_hashes(P.values, P.offsets, P.m)
    return np.ascontiguousarray(h.astype("<u8")).view(np.uint8).reshape(P.n, 16)


def _fsync_path(path, directory=False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse directory fsync
        pass
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _unlink(path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _attr_str(attrs, name: str) -> str:
    v = attrs[name]
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def _fixed(text: str) -> np.bytes_:
    """A fixed-length string attribute: stored inside the (checksummed) object header,
    unlike h5py's default variable-length strings (global heap, not checksummed)."""
    return np.bytes_(text.encode())


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}"  # pragma: no cover


def _parse_bytes(text: str) -> int:
    """'1000', '500K', '1.5G', '2GB', '3GiB' -> bytes (K/M/G/T are powers of 1024)."""
    s = str(text).strip().upper().replace("IB", "").rstrip("B")
    mult = 1
    if s and s[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(s[-1]) + 1)
        s = s[:-1]
    try:
        value = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (examples: 1000000, 500M, 2G)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"size must be >= 0, got {text!r}")
    return int(value * mult)


def _kernel_short(d: dict) -> str:
    try:
        return (f"{d['activation']} L={d['n_layers']} sw={d['sigma_w']:.4g} "
                f"su={d['sigma_u']:.4g} sb={d['sigma_b']:.4g} sh={d['sigma_h']:.4g} "
                f"sv={d['sigma_v']:.4g}"
                + ("" if d.get("readout", "last") == "last" else f" {d['readout']}"))
    except (KeyError, TypeError, ValueError):
        return "?"


def _now_iso(t=None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


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


# -- reading complete entries -------------------------------------------------------

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


# -- the per-key lock ---------------------------------------------------------------------

class _KeyLock:
    """Exclusive per-key writer lock: ``fcntl.flock`` on ``<key>.lock``.

    After locking, the lock file's identity is re-checked (another process may have
    deleted and recreated it), so housekeeping can remove lock files safely. Where
    ``flock`` is unavailable (no fcntl, or ENOLCK on some network file systems) the
    fallback is an ``O_EXCL`` companion file holding ``host:pid``, taken over when that
    process is gone or the file is older than ``stale_s``.
    """

    def __init__(self, path: Path, timeout=None, progress=False, stale_s=24 * 3600):
        self.path = Path(path)
        self.timeout = timeout
        self.progress = progress
        self.stale_s = stale_s
        self._fd = None
        self._excl = None
        self.waited = False             # had to wait for another holder

    def _try_flock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return False
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd = fd
        return True

    def _try_excl(self) -> bool:
        excl = self.path.with_name(self.path.name + ".excl")
        me = f"{socket.gethostname()}:{os.getpid()}"
        try:
            fd = os.open(excl, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                owner = excl.read_text().strip()
                age = time.time() - excl.stat().st_mtime
            except OSError:
                return False
            host, _, pid = owner.partition(":")
            dead = False
            if host == socket.gethostname() and pid.isdigit():
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    dead = True
                except PermissionError:
                    pass
            if dead or age > self.stale_s:
                _unlink(excl)
            return False
        os.write(fd, me.encode())
        os.close(fd)
        self._excl = excl
        return True

    def acquire(self):
        start = time.monotonic()
        delay, told = 0.01, False
        use_flock = fcntl is not None
        while True:
            if use_flock:
                try:
                    if self._try_flock():
                        return self
                except OSError as exc:
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
                    use_flock = False
                    continue
            elif self._try_excl():
                return self
            waited = time.monotonic() - start
            self.waited = True
            if self.timeout is not None and waited >= self.timeout:
                raise TimeoutError(f"waited {waited:.0f} s for the lock {self.path}")
            if self.progress and not told and waited > 1.0:
                print(f"rntk: waiting for another process computing this Gram "
                      f"(lock {self.path})", file=sys.stderr)
                told = True
            time.sleep(delay)
            delay = min(0.5, delay * 1.5)

    def release(self):
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
        if self._excl is not None:
            _unlink(self._excl)
            self._excl = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# -- the entry under construction --------------------------------------------------------

def _journal_line(obj) -> bytes:
    text = json.dumps(obj, separators=(",", ":"))
    return f"{text}\t{zlib.crc32(text.encode()):08x}\n".encode()


def _parse_journal(path: Path):
    """(header, {tile index: record}); lines with a bad checksum (a torn last line) are
    ignored; a bad header raises ValueError."""
    header, done = None, {}
    with open(path, "rb") as fh:
        for raw in fh:
            text, sep, crc = raw.rstrip(b"\n").rpartition(b"\t")
            if not sep or not raw.endswith(b"\n"):
                continue
            try:
                if int(crc, 16) != zlib.crc32(text):
                    continue
                obj = json.loads(text)
            except ValueError:
                continue
            if header is None:
                header = obj
                if "tiles" not in obj:
                    raise ValueError("journal does not start with a header")
            elif isinstance(obj, dict) and "t" in obj and "c" in obj:
                done[int(obj["t"])] = obj
    if header is None:
        raise ValueError("journal has no header")
    return header, done


def _plan_from(header, shape, symmetric) -> list[Tile]:
    tiles = [Tile(i, int(r0), int(r1), int(c0), int(c1), bool(d), int(cost))
             for i, (r0, r1, c0, c1, d, cost) in enumerate(header["tiles"])]
    n, m = shape
    area = 0
    for t in tiles:
        if not (0 <= t.r0 < t.r1 <= n and 0 <= t.c0 < t.c1 <= m):
            raise ValueError(f"tile {t.index} is outside the matrix")
        if t.diagonal and not (symmetric and t.r0 == t.c0 and t.r1 == t.c1):
            raise ValueError(f"tile {t.index}: bad diagonal tile")
        if symmetric and not t.diagonal and t.c0 < t.r1:
            raise ValueError(f"tile {t.index}: off-diagonal tile below the diagonal")
        area += (t.r1 - t.r0) * (t.c1 - t.c0) * (2 if symmetric and not t.diagonal else 1)
    if area != n * m:
        raise ValueError("tile plan does not cover the matrix")
    return tiles


def _pwrite_all(fd: int, buf: memoryview, off: int) -> None:
    while len(buf):
        n = os.pwrite(fd, buf, off)
        if n <= 0:  # pragma: no cover - pwrite raises ENOSPC itself
            raise OSError(errno.ENOSPC, "short write")
        buf, off = buf[n:], off + n


def _write_all(fd: int, data: bytes) -> None:
    """os.write until everything is written (a journal line is never torn by a short
    write; an error raises)."""
    view = memoryview(data)
    while len(view):
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - os.write raises ENOSPC itself
            raise OSError(errno.ENOSPC, "short write")
        view = view[n:]


def _pread_into(fd: int, out: np.ndarray, off: int) -> np.ndarray:
    """Fill the C-contiguous ``out`` from file offset ``off`` (OSError if short)."""
    mv = memoryview(out).cast("B")
    got = 0
    while got < len(mv):
        n = os.preadv(fd, [mv[got:]], off + got)
        if n <= 0:
            raise OSError(errno.EIO, f"short read at offset {off + got}")
        got += n
    return out


def _preallocate(fd: int, off: int, nbytes: int) -> None:
    """Reserve disk blocks for ``nbytes`` at ``off`` (OSError ENOSPC when the disk is
    full), so that writes through a memory map of them cannot fail later. Where the
    file system (or the OS: macOS) has no ``posix_fallocate``, zeros are written."""
    if nbytes <= 0:
        return
    try:
        os.posix_fallocate(fd, off, nbytes)
        return
    except AttributeError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
            raise
    zeros = memoryview(bytes(min(nbytes, 8 << 20)))
    done = 0
    while done < nbytes:
        n = min(len(zeros), nbytes - done)
        _pwrite_all(fd, zeros[:n], off + done)
        done += n


#: madvise(MADV_POPULATE_WRITE) (Linux >= 5.14; the mmap module names it from Python
#: 3.12 on).
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE",
                               23 if sys.platform.startswith("linux") else None)


def _populate(mm, off: int, nbytes: int) -> None:
    """Fault in the pages of ``mm[off:off + nbytes]`` for writing, in one sweep.

    Tiles land in the file in no particular order, and their mirrors as column-wise
    strips: faulted in that order, each page of a shared file mapping costs its own
    fault (and, on ext4, its own page_mkwrite), and copying the tiles of a 200 MB entry
    took ~0.21 s. Faulted in sequentially first, the same copies take ~0.03 s after a
    ~0.04 s sweep. Best effort: an older kernel (EINVAL) just takes the slow way."""
    if _MADV_POPULATE_WRITE is None or nbytes < (1 << 20):
        return
    start = off - off % mmap.PAGESIZE
    try:
        mm.madvise(_MADV_POPULATE_WRITE, start, off + nbytes - start)
    except (OSError, ValueError, AttributeError):
        pass


#: madvise(MADV_POPULATE_READ): fault a mapping in for reading, failing with an error
#: (EFAULT / EIO) where an access would raise SIGBUS (Linux >= 5.14).
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ",
                              22 if sys.platform.startswith("linux") else None)

#: In-memory results of at least this many bytes are mapped copy-on-write from the
#: entry's file (``GramStore(copy=False)``, the default); smaller ones are copies.
MAP_MIN_BYTES = 8 << 20


@functools.lru_cache(maxsize=None)
def _libc():
    """(ctypes, libc) with mmap / munmap / madvise declared, or None (not Linux, or a
    32-bit off_t). Python's own mmap object keeps a duplicate of the file's descriptor
    open for as long as it lives (before Python 3.13): every result mapped with it
    would hold one, and a search keeping a thousand results would reach the usual
    limit."""
    import ctypes
    if ctypes.sizeof(ctypes.c_long) != 8 or not sys.platform.startswith("linux"):
        return None                    # pragma: no cover - not Linux
    try:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                             ctypes.c_int, ctypes.c_int, ctypes.c_long)
        lib.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        lib.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    except (OSError, AttributeError):  # pragma: no cover - no libc
        return None
    return ctypes, lib


def _os_error(ctypes) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, os.strerror(e))


def _map_cow(fd: int, off: int, shape, populate: bool = False) -> np.ndarray:
    """The float64 (n, m) matrix at byte ``off`` of the file ``fd``, mapped privately
    (MAP_PRIVATE, copy-on-write): reading shares the page cache's pages, writing copies
    the page written; the file never changes. The mapping lives as long as the array
    and holds no descriptor (closing ``fd``, renaming or unlinking the file does not
    end it; the file's blocks stay allocated until it is gone).

    ``populate``: fault every page in first (MADV_POPULATE_READ, one readahead sweep),
    so that a file that cannot be read (truncated, an I/O error) raises OSError here
    rather than SIGBUS on first access; best effort where the kernel lacks it."""
    n, m = (int(s) for s in shape)
    start = off - off % mmap.ALLOCATIONGRANULARITY
    length = off + 8 * n * m - start
    libc = _libc()
    if libc is None:                        # pragma: no cover - not Linux
        buf = mmap.mmap(fd, length, access=mmap.ACCESS_COPY, offset=start)
        if populate and _MADV_POPULATE_READ is not None:
            try:
                buf.madvise(_MADV_POPULATE_READ)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
    else:
        ctypes, lib = libc
        addr = lib.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE,
                        mmap.MAP_PRIVATE, fd, start)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise _os_error(ctypes)
        buf = (ctypes.c_char * length).from_address(addr)
        # unmapped with the last view -- but not at interpreter exit, where an atexit
        # handler might still read the array (the process's end unmaps it anyway)
        weakref.finalize(buf, lib.munmap, addr, length).atexit = False
        if populate and _MADV_POPULATE_READ is not None:
            if lib.madvise(addr, length, _MADV_POPULATE_READ) != 0:
                exc = _os_error(ctypes)
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):   # an older kernel
                    raise exc
    return np.frombuffer(buf, dtype="<f8", count=n * m, offset=off - start).reshape(n, m)


def _contiguous_dataset(h5py, f, name: str, shape) -> int:
    """Create a contiguous float64 dataset, allocated now (sparse, never filled), and
    return its file offset."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    space = h5py.h5s.create_simple(tuple(shape))
    dsid = h5py.h5d.create(f.id, name.encode(), h5py.h5t.IEEE_F64LE, space, dcpl=dcpl)
    return int(dsid.get_offset())


class _Partial:
    """The entry under construction: ``<key>.journal`` plus its tiles' data, in one of
    two sinks (chosen when the entry is created, kept on resume):

    * ``"file"`` (the kernels fit in ``memory_budget``): the entry's own HDF5 file,
      ``<key>.partial.h5``, is created first, its contiguous datasets preallocated
      (``posix_fallocate``: a full disk fails here, not in a page fault), and memory
      mapped; each finished tile is copied to its place (and its mirror) in the file's
      pages, then journaled with a 64-bit checksum per block. Nothing is written twice:
      completing the entry only adds the band checksums and the metadata and renames
      the file. A killed process loses nothing it copied (the pages belong to the
      kernel's page cache, not to the process).
    * ``"log"`` (out of core, larger than memory): each finished tile is appended to
      ``<key>.tiles`` as raw blocks (one large sequential write each), then journaled;
      completing the entry writes ``<key>.partial.h5`` row band by row band of the tile
      grid, each band assembled in memory from its tiles (and the transposes of the
      tiles above the diagonal) with one sequential write per kernel. (Scattered
      writes of a matrix larger than memory defeat the disk's write-back: a first
      version that did so was an order of magnitude slower.)

    The journal's first line holds the tile plan, the sink, the kinds and the series
    order. A resume verifies every journaled tile against its checksum before trusting
    it, whether it continues in memory or out of core.
    """

    def __init__(self, store: "GramStore", key: str, header: dict, plan, done):
        self.store = store
        self.key = key
        self.shape = tuple(header["shape"])
        self.symmetric = bool(header["symmetric"])
        self.kinds = tuple(header["kinds"])
        self.order = header.get("order")    # "length": tiles index length-sorted series
        self.sink = header.get("sink", "log")
        self.plan = plan
        self.done = done                # tile index -> journal record
        self._perm = (None, None)       # original positions of sorted rows / columns
        self._jfd = self._fd = self._mm = None
        self._views = {}
        try:
            if self.sink == "file":
                self._open_file(header)
            else:
                self._fd = os.open(store._tiles(key), os.O_RDWR)
                self._end = os.fstat(self._fd).st_size
            self._jfd = os.open(store._journal(key), os.O_WRONLY | os.O_APPEND)
        except BaseException:
            self.close()
            raise

    def _open_file(self, header) -> None:
        n, m = self.shape
        offsets = self._offsets = {k: int(header["offsets"][k]) for k in self.kinds}
        self._fd = os.open(self.store._partial(self.key), os.O_RDWR)
        size = os.fstat(self._fd).st_size
        # (datasets of 64 KiB or more start on a 4 KiB boundary; a smaller one may
        # start anywhere, and NumPy reads and writes it unaligned)
        if any(off < 0 or off + 8 * n * m > size for off in offsets.values()):
            raise ValueError("the partial file is shorter than its datasets")
        self._mm = mmap.mmap(self._fd, size)
        for k, off in offsets.items():
            self._views[k] = np.frombuffer(self._mm, dtype="<f8", count=n * m,
                                           offset=off).reshape(n, m)
            _populate(self._mm, off, 8 * n * m)

    def set_order(self, px, py) -> None:
        """The permutations of a length-sorted computation (tile index -> series)."""
        self._perm = (px, py)

    def _positions(self, tile: Tile):
        px, py = self._perm
        return tile_positions(tile, px, py, self.order is not None)

    @staticmethod
    def files(store, key):
        return (store._journal(key), store._tiles(key), store._partial(key),
                store._rebuild(key))

    @classmethod
    def discard(cls, store, key):
        for p in cls.files(store, key):
            _unlink(p)

    @staticmethod
    def log_bytes(plan, n_kinds: int) -> int:
        return sum(8 * n_kinds * t.shape[0] * t.shape[1] for t in plan)

    # creation / resumption
    @classmethod
    def create(cls, store, key, shape, symmetric, plan, kinds, order=None, sink="log"):
        cls.discard(store, key)
        header = {"format": STORE_FORMAT, "key": key, "shape": list(shape),
                  "symmetric": symmetric, "kinds": list(kinds), "order": order,
                  "sink": sink, "created": time.time(),
                  "tiles": [[t.r0, t.r1, t.c0, t.c1, int(t.diagonal), t.cost]
                            for t in plan]}
        if sink == "file":
            header["offsets"] = cls._create_file(store, key, shape, kinds)
        else:
            open(store._tiles(key), "xb").close()
        jpath = store._journal(key)
        tmp = jpath.with_name(jpath.name + f".tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(_journal_line(header))
            os.replace(tmp, jpath)
        except BaseException:
            _unlink(tmp)
            cls.discard(store, key)
            raise
        return cls(store, key, header, plan, {})

    @staticmethod
    def _create_file(store, key, shape, kinds) -> dict:
        """``<key>.partial.h5`` with a preallocated contiguous dataset per kind (4 KiB
        aligned), not yet marked complete; returns the datasets' file offsets."""
        h5py = _h5py()
        path = store._partial(key)
        try:
            with h5py.File(path, "x", libver=_LIBVER, locking=False,
                           alignment_threshold=1 << 16, alignment_interval=4096) as f:
                f.attrs["format"] = STORE_FORMAT
                f.attrs["key"] = _fixed(key)
                f.attrs["complete"] = False
                offsets = {k: _contiguous_dataset(h5py, f, k, shape) for k in kinds}
            fd = os.open(path, os.O_RDWR)
            try:
                nbytes = 8 * shape[0] * shape[1]
                for off in offsets.values():
                    _preallocate(fd, off, nbytes)
            finally:
                os.close(fd)
        except (RuntimeError, ValueError) as exc:     # h5py's face of a failed write
            _unlink(path)
            raise OSError(errno.EIO, f"cannot create {path}: {exc}") from exc
        except BaseException:
            _unlink(path)
            raise
        return offsets

    @classmethod
    def resume(cls, store, key, shape, symmetric, kinds, orders=(None, "length"),
               sinks=("file", "log")):
        """The partial entry of ``key`` if there is a usable one, else None (removed).
        A partial entry that does not hold every kind of ``kinds`` (an earlier call
        asked for another kernel), or whose series order is not in ``orders`` or sink
        not in ``sinks``, is started again."""
        jpath = store._journal(key)
        if not jpath.exists():
            cls.discard(store, key)
            return None
        try:
            header, done = _parse_journal(jpath)
            if (header.get("format") != STORE_FORMAT or header.get("key") != key
                    or tuple(header.get("shape", ())) != tuple(shape)
                    or bool(header.get("symmetric")) != symmetric):
                raise ValueError("journal belongs to another computation")
            if (not set(kinds) <= set(header.get("kinds", ()))
                    or header.get("order") not in orders
                    or header.get("sink", "log") not in sinks):
                cls.discard(store, key)
                return None
            plan = _plan_from(header, shape, symmetric)
            done = {i: c for i, c in done.items() if 0 <= i < len(plan)}
            if header.get("sink", "log") == "log":
                if not store._tiles(key).exists():
                    raise ValueError("its tile log is missing")
                _unlink(store._partial(key))    # an interrupted completion restarts
            return cls(store, key, header, plan, done)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            warnings.warn(f"rntk cache: discarding the unusable partial entry {key} "
                          f"({exc}); starting it again", CacheWarning, stacklevel=4)
            cls.discard(store, key)
            return None

    def disk_bytes(self) -> int:
        return sum(p.stat().st_blocks * 512 for p in self.files(self.store, self.key)
                   if p.exists())

    # tiles
    def write_tile(self, tile: Tile, blocks: dict) -> None:
        """Store a finished tile's blocks (one per stored kind), then journal it."""
        sums = []
        record = {"t": tile.index}
        if self.sink == "file":
            rows, cols = self._positions(tile)
            mirror = self.symmetric and not tile.diagonal
            for k in self.kinds:
                scatter_block(self._views[k], rows, cols, blocks[k], mirror)
                sums.append(_checksum.checksum(np.ascontiguousarray(blocks[k])))
        else:
            record["o"] = self._end
            for k in self.kinds:
                blk = np.ascontiguousarray(blocks[k])
                _pwrite_all(self._fd, memoryview(blk).cast("B"), self._end)
                self._end += blk.nbytes
                sums.append(_checksum.checksum(blk))
        record["c"] = sums
        _write_all(self._jfd, _journal_line(record))
        self.done[tile.index] = record

    def read_tile(self, tile: Tile):
        """{kind: block} of a journaled tile, or None if it fails its checks (in the
        file sink, the block and its mirror are both checked)."""
        try:
            rec = self.done[tile.index]
            if len(rec["c"]) != len(self.kinds):
                return None
            out = {}
            if self.sink == "file":
                rows, cols = self._positions(tile)
                mirror = self.symmetric and not tile.diagonal
                for i, k in enumerate(self.kinds):
                    blk = gather_block(self._views[k], rows, cols)
                    if _checksum.checksum(blk) != int(rec["c"][i]):
                        return None
                    if mirror:
                        tr = gather_block(self._views[k], cols, rows).T
                        if _checksum.checksum(np.ascontiguousarray(tr)) != int(rec["c"][i]):
                            return None
                    out[k] = blk
                return out
            size = 8 * tile.shape[0] * tile.shape[1]
            for i, k in enumerate(self.kinds):
                blk = _pread_into(self._fd, np.empty(tile.shape), int(rec["o"]) + i * size)
                if _checksum.checksum(blk) != int(rec["c"][i]):
                    return None
                out[k] = blk
            return out
        except (OSError, KeyError, TypeError, ValueError, IndexError):
            return None

    # completion
    def _assemble(self, f, band: int) -> dict:
        """Write the datasets of the new file row band by row band (tile grid) from
        the log; returns the checksums of the ``band``-row checksum bands."""
        h5py = _h5py()
        n, m = self.shape
        kinds = self.kinds
        offsets = {k: _contiguous_dataset(h5py, f, k, self.shape) for k in kinds}
        f.flush()
        fd = os.open(f.filename, os.O_RDWR)
        try:
            rows = sorted({(t.r0, t.r1) for t in self.plan})
            by_row = {}
            for t in self.plan:
                by_row.setdefault(t.r0, []).append(t)
                if self.symmetric and not t.diagonal:
                    by_row.setdefault(t.c0, []).append(t)     # its mirror
            crcs = {k: [] for k in kinds}
            run = {k: _checksum.new_state() for k in kinds}    # band in progress
            filled = 0                                    # rows in the band so far
            for r0, r1 in rows:
                blocks = {k: np.empty((r1 - r0, m)) for k in kinds}
                for t in by_row[r0]:
                    got = self.read_tile(t)
                    if got is None:
                        raise CorruptEntryError(f"tile {t.index} of {self.key} changed "
                                                f"on disk before the entry was completed")
                    for k in kinds:
                        if t.r0 == r0:
                            blocks[k][:, t.c0:t.c1] = got[k]
                        else:                             # the mirror of a tile above
                            blocks[k][:, t.r0:t.r1] = got[k].T
                for k in kinds:
                    _pwrite_all(fd, memoryview(blocks[k]).cast("B"),
                                offsets[k] + 8 * r0 * m)
                # checksum bands of ``band`` rows, continued across tile bands
                pos = 0
                while pos < r1 - r0:
                    take = min(band - filled, r1 - r0 - pos)
                    for k in kinds:
                        _checksum.update(run[k], blocks[k][pos:pos + take])
                    pos += take
                    filled += take
                    if filled == band or r0 + pos == n:
                        for k in kinds:
                            crcs[k].append(_checksum.digest(run[k], filled * m))
                            run[k] = _checksum.new_state()
                        filled = 0
        finally:
            os.close(fd)
        return {k: np.array(v, dtype=np.uint64) for k, v in crcs.items()}

    def finalize(self, meta: dict, datasets: dict, arrays=None) -> Path:
        """Complete the entry: checksum the kernels (from ``arrays``, the matrices held
        in memory, else from the file or the log), add the small datasets and the
        metadata, mark it complete, rename it to ``<key>.h5`` (fsync-ed first if the
        store is ``durable``); then remove the journal, the log and the partial file.

        In the file sink the partial file is completed in place -- unless a completion
        killed inside HDF5 left its structure damaged: then a new file is built beside
        it (``<key>.rebuild.partial.h5``) from the verified data, and the partial file
        stays until the new one is renamed. If completing fails, the journal and the
        partial file are kept (a later call resumes with every tile and completes it);
        in the log sink, the file being assembled is removed."""
        band = int(meta["band_rows"])
        datasets = dict(datasets)
        meta = dict(meta, aux_crc={}, kinds=list(self.kinds))
        partial, final = self.store._partial(self.key), self.store._final(self.key)
        rebuild = self.store._rebuild(self.key)
        h5py = _h5py()
        target = partial
        try:
            if self.sink == "file":
                datasets.update(self._file_crcs(arrays, band))
                if self._file_intact(partial):
                    self._release_map()
                    f = h5py.File(partial, "r+", libver=_LIBVER, locking=False)
                else:
                    if arrays is None:
                        arrays = {k: np.array(self._views[k]) for k in self.kinds}
                    self._release_map()
                    target = rebuild
            if target != partial or self.sink == "log":
                _unlink(target)
                f = h5py.File(target, "x", libver=_LIBVER, locking=False)
                f.attrs["format"] = STORE_FORMAT
                f.attrs["key"] = _fixed(self.key)
                f.attrs["complete"] = False
                if arrays is not None:
                    offsets = {k: _contiguous_dataset(h5py, f, k, self.shape)
                               for k in self.kinds}
                    f.flush()
                    fd = os.open(target, os.O_RDWR)
                    try:             # one large write per kernel, no HDF5 buffering
                        for kind in self.kinds:
                            a = np.ascontiguousarray(arrays[kind])
                            _pwrite_all(fd, memoryview(a).cast("B"), offsets[kind])
                            datasets["crc_" + kind] = _band_crcs(a, band)
                    finally:
                        os.close(fd)
                else:
                    crcs = self._assemble(f, band)
                    for kind in self.kinds:
                        datasets["crc_" + kind] = crcs[kind]
            with f:
                for name, value in datasets.items():
                    value = np.ascontiguousarray(value)
                    f.create_dataset(name, data=value, track_times=False)
                    meta["aux_crc"][name] = zlib.crc32(value)
                f.attrs["meta"] = _fixed(json.dumps(meta))
                f.attrs["complete"] = True
            self.close()
            if self.store.durable:
                _fsync_path(target)
            os.replace(target, final)
        except BaseException:
            self.close()
            if target != partial or self.sink == "log":
                _unlink(target)
            raise
        if self.store.durable:
            _fsync_path(self.store.path, directory=True)
        _unlink(self.store._journal(self.key))
        _unlink(self.store._tiles(self.key))
        _unlink(partial)
        _unlink(rebuild)                    # left by a rebuild that was killed
        return final

    def cow_views(self, kinds) -> dict:
        """{kind: the kernel mapped copy-on-write from the file (see _map_cow)} for the
        kinds asked for -- a copy where the mapping cannot be made."""
        out = {}
        for k in kinds:
            try:
                out[k] = _map_cow(self._fd, self._offsets[k], self.shape)
            except (OSError, ValueError):  # pragma: no cover - out of address space
                out[k] = np.array(self._views[k])
        return out

    def _file_crcs(self, arrays, band: int) -> dict:
        """Band checksums of the kernels, from the arrays in memory or the mapped file
        (a function of its own, so that no view of the mapping outlives it)."""
        return {"crc_" + k: _band_crcs(arrays[k] if arrays is not None
                                       else self._views[k], band)
                for k in self.kinds}

    def _file_intact(self, path) -> bool:
        """Whether the partial file's HDF5 structure is as created (a completion
        killed while HDF5 was editing it may have left it unreadable)."""
        try:
            with _h5py().File(path, "r", locking=False) as f:
                return (int(f.attrs["format"]) == STORE_FORMAT
                        and _attr_str(f.attrs, "key") == self.key
                        and "meta" not in f.attrs and set(f.keys()) == set(self.kinds)
                        and all(f[k].id.get_offset() == self._offsets[k]
                                and tuple(f[k].shape) == self.shape
                                for k in self.kinds))
        except (OSError, KeyError, ValueError, TypeError, RuntimeError):
            return False

    def _release_map(self) -> None:
        self._views = {}
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # pragma: no cover - a view still alive somewhere
                pass
            self._mm = None

    def close(self) -> None:
        self._release_map()
        for name in ("_jfd", "_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


# -- the store ------------------------------------------------------------------------

class GramStore:
    """HDF5-backed store of Gram matrices in a directory (see the module docstring).

    Parameters
    ----------
    path : str or path-like, optional
        The store directory (created on first write). Default: :func:`default_cache_dir`
        (``$RNTK_CACHE_DIR`` or ``./cache``).
    memory_budget : int, optional
        Bytes a computation may hold in memory. A Gram whose requested kernel(s)
        (N x M x 8 bytes each) exceed it is computed and returned out of core.
        Default: half the physical memory.
    lock_timeout : float, optional
        Seconds to wait for another process computing the same entry (default: wait).
        On timeout the matrix is computed here without being stored (with a warning).
    durable : bool, default False
        fsync a completed entry before its atomic rename (and the directory after it),
        so that a completed entry survives a power cut. Without it a power cut may lose
        an entry's last writes; such an entry fails its checksums and is recomputed
        (never served). Off by default: on a cold computation the fsync costs more
        than all the rest of the store.
    background : bool, default False
        Complete in-memory entries in a background thread: ``gram`` returns as soon as
        the last tile is computed (and journaled), while a (non-daemon) thread
        checksums the entry's file, adds its metadata (fsyncs it if ``durable``) and
        renames it, holding the key's lock. Everything in this process that reads the
        entry waits for it, as do :meth:`wait`, ``os.fork()`` and the interpreter's
        exit; a process killed meanwhile leaves a complete journal, and the next call
        only completes the file. Completing takes a few tens of milliseconds for a
        200 MB entry (more with ``durable``), so this pays mainly with ``durable=True``.
        Off by default: deleting the store directory right after ``gram`` returns (a
        ``TemporaryDirectory``, say) would race with the thread.
    copy : bool, default False
        How results held in memory are returned. ``False``: a matrix of 8 MiB or more
        (:data:`MAP_MIN_BYTES`) is an ndarray mapped copy-on-write (``MAP_PRIVATE``)
        from the entry's file -- a hit copies nothing (it verifies the checksums in
        place), and a cold computation returns the very pages its tiles were written
        to, so the matrix is never held twice. Writing into such an array copies the
        pages written; the file never changes. The mapping stays valid when the entry
        is removed, replaced or pruned (the store never rewrites a complete file, it
        renames new ones over it), though the file's disk blocks stay allocated while
        the array lives. Do not truncate or overwrite entry files by hand while arrays
        from them are alive: a mapped page that vanished raises SIGBUS. ``True``: every
        result is a copy in the process's own memory (a hit then reads the file into
        fresh memory, which costs about as much again); use it for a store on a network
        file system shared with other hosts.

    Attributes
    ----------
    stats : collections.Counter
        This object's counters: ``hits``, ``subset_hits``, ``misses``,
        ``tiles_computed``, ``tiles_resumed``, ``corrupt``, ``write_errors``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from rntk_numba import RNTK, GramStore
    >>> store = GramStore(tempfile.mkdtemp())
    >>> X = [np.sin(np.linspace(0, 3, T)) for T in (20, 35, 50)]
    >>> G = store.gram(X, kernel=RNTK())          # computed, stored
    >>> bool((store.gram(X, kernel=RNTK()) == G).all()), store.stats["hits"]
    (True, 1)
    >>> sub = store.gram_subset(X, [2, 0], kernel=RNTK())      # a slice, no computation
    >>> bool((sub == G[np.ix_([2, 0], [2, 0])]).all())
    True
    """

    def __init__(self, path=None, *, memory_budget=None, lock_timeout=None,
                 durable: bool = False, background: bool = False, copy: bool = False):
        self.path = Path(path) if path is not None else default_cache_dir()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"GramStore: {self.path} exists and is not a directory")
        if memory_budget is None:
            try:
                memory_budget = (os.sysconf("SC_PAGE_SIZE")
                                 * os.sysconf("SC_PHYS_PAGES") // 2)
            except (ValueError, OSError, AttributeError):  # pragma: no cover
                memory_budget = 4 << 30
        self.memory_budget = int(memory_budget)
        self.lock_timeout = lock_timeout
        self.durable = bool(durable)
        self.background = bool(background)
        self.copy = bool(copy)
        self.stats = Counter()

    def __repr__(self) -> str:
        return f"GramStore({str(self.path)!r})"

    def wait(self) -> None:
        """Wait until entries being completed in the background (this process, this
        store directory) are on disk."""
        _join_pending(self.path)

    # paths
    def _final(self, key) -> Path:
        return self.path / f"{key}.h5"

    def _partial(self, key) -> Path:
        return self.path / f"{key}.partial.h5"

    def _rebuild(self, key) -> Path:
        return self.path / f"{key}.rebuild.partial.h5"

    def _journal(self, key) -> Path:
        return self.path / f"{key}.journal"

    def _sidecar(self, key) -> Path:
        return self.path / f"{key}.json"

    def _tiles(self, key) -> Path:
        return self.path / f"{key}.tiles"

    def _lockfile(self, key) -> Path:
        return self.path / f"{key}.lock"

    # keys
    @staticmethod
    def _pack(X, Y):
        if isinstance(X, PackedSequences) and (Y is None or isinstance(Y, PackedSequences)):
            if Y is not None and Y.m != X.m:
                raise ValueError(f"gram: X has {X.m} channels per time step, Y has {Y.m}")
            return X, Y
        return pack_pair(X, Y)

    @staticmethod
    def _key(PX, PY, kernel: RNTK) -> str:
        text = (f"rntk-gram;{kernel.canonical};formula={params.FORMULA_VERSION};"
                f"mode={'sym' if PY is None else 'cross'};X={PX.fingerprint()};"
                f"Y={'-' if PY is None else PY.fingerprint()}")
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def key(self, X, Y=None, *, kernel: RNTK) -> str:
        """The entry key of ``gram(X, Y, kernel=kernel)`` (any ``kind``)."""
        check_args(kernel, "ntk")
        PX, PY = self._pack(X, Y)
        return self._key(PX, PY, kernel)

    def _copies(self, shape) -> bool:
        """Whether an in-memory result of ``shape`` is a copy (else mapped, see copy)."""
        return self.copy or 8 * shape[0] * shape[1] < max(MAP_MIN_BYTES, 1)

    def _out_of_core(self, shape, out_of_core, kind="both") -> bool:
        if out_of_core is None:
            return _n_kinds(kind) * 8 * shape[0] * shape[1] > self.memory_budget
        return bool(out_of_core)

    # warnings / corruption
    def _warn(self, msg):
        warnings.warn(f"rntk cache ({self.path}): {msg}", CacheWarning, stacklevel=3)

    def _remove_corrupt(self, path: Path, key: str, ino, reason: str) -> None:
        """Count, warn about and remove a corrupt complete entry -- only if ``path``
        still holds the file that was found corrupt (a concurrent writer may have
        replaced it with a good one meanwhile)."""
        self.stats["corrupt"] += 1
        try:
            st = os.stat(path)
            if ino is None or (st.st_dev, st.st_ino) == ino:
                os.unlink(path)
                _unlink(self._sidecar(key))
                removed = "removed; it will be recomputed"
            else:
                removed = "already replaced"
        except FileNotFoundError:
            removed = "already removed"
        except OSError as exc:
            removed = f"could not remove it: {exc}"
        warnings.warn(f"rntk cache: corrupt entry {path} ({reason}); {removed}",
                      CacheWarning, stacklevel=4)

    def _discard(self, entry: GramEntry, reason: str) -> None:
        self._remove_corrupt(entry.path, entry.path.name[:-3], entry._ino, reason)

    def _open_entry(self, key, shape=None) -> GramEntry | None:
        """The complete entry of ``key``, opened and structurally checked, or None (a
        file that fails its checks is removed with a warning)."""
        path = self._final(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        ino = (st.st_dev, st.st_ino)
        try:
            entry = GramEntry(path, key, on_corrupt=self._discard)
        except FileNotFoundError:
            return None
        except CorruptEntryError as exc:
            self._remove_corrupt(path, key, ino, str(exc.__cause__ or exc))
            return None
        if shape is not None and entry.shape != tuple(shape):
            entry.close()
            self._remove_corrupt(path, key, ino, f"shape {entry.shape}, expected {shape}")
            return None
        return entry

    def _touch(self, path):
        try:
            os.utime(path)
        except OSError:
            pass

    def _serve(self, key, shape, kind, ooc, count=True, seen=None):
        """Result of a complete entry of ``key`` (verified), or None. An entry that
        does not hold ``kind`` is a miss; its kinds are added to the set ``seen`` (the
        recomputed entry keeps them)."""
        _join_pending(self.path, key)
        entry = self._open_entry(key, shape)
        if entry is None:
            return None
        if not entry.has(kind):
            if seen is not None:
                seen.update(entry.kinds)
            entry.close()
            return None
        if ooc:
            kinds = _KINDS if kind == "both" else (kind,)
            arrays = []
            try:
                for i, k in enumerate(kinds):
                    e = (entry if i == 0 else
                         GramEntry(entry.path, key, on_corrupt=self._discard))
                    arrays.append(GramArray(e, k, owns_entry=True))
            except (OSError, KeyError):     # replaced or removed meanwhile
                entry.close()
                for a in arrays:
                    a.close()
                return None
            result = tuple(arrays) if kind == "both" else arrays[0]
        else:
            try:
                result = entry.read(kind, copy=self._copies(shape))
            except CorruptEntryError:
                return None
            finally:
                entry.close()
        self._touch(self._final(key))
        self.stats["hits"] += count
        return result

    # public API
    def lookup(self, X, Y=None, *, kernel: RNTK) -> GramEntry | None:
        """The complete entry of ``gram(X, Y, kernel=kernel)`` if stored, else None.
        Nothing is computed. Close the entry when done (or use ``with``)."""
        check_args(kernel, "ntk")
        PX, PY = self._pack(X, Y)
        key = self._key(PX, PY, kernel)
        _join_pending(self.path, key)
        entry = self._open_entry(key, (PX.n, PX.n if PY is None else PY.n))
        if entry is not None:
            self._touch(entry.path)
        return entry

    def ensure(self, X, Y=None, *, kernel: RNTK, kind: str = "ntk", n_jobs=None,
               progress=False, tile_size=None) -> GramEntry:
        """The entry of ``gram(X, Y, kernel=kernel)`` holding ``kind`` ("ntk", "nngp"
        or "both"), computed (out of core) and stored first if absent. Raises OSError
        if the store cannot be written."""
        check_args(kernel, kind)
        entry = self.lookup(X, Y, kernel=kernel)
        if entry is not None and not entry.has(kind):
            entry.close()
            entry = None
        if entry is None:
            res = self.gram(X, Y, kernel=kernel, kind=kind, n_jobs=n_jobs,
                            progress=progress, tile_size=tile_size, out_of_core=True)
            for r in (res if isinstance(res, tuple) else (res,)):
                if isinstance(r, GramArray):
                    r.close()
            entry = self.lookup(X, Y, kernel=kernel)
            if entry is None:  # pragma: no cover - removed by someone else meanwhile
                raise OSError(f"the entry could not be stored in {self.path}")
        return entry

    def gram_subset(self, X, rows, cols=None, *, kernel: RNTK, kind: str = "ntk",
                    n_jobs=None, progress=False, tile_size=None):
        """``G[rows][:, cols]`` of the symmetric Gram ``G = gram(X, kernel=kernel)``.

        The full Gram of X is computed (and stored) once if absent; every later call is
        a slice of the stored matrix -- the CV-fold path:

        * ``gram_subset(X, tr)`` equals ``gram(X[tr])`` bit for bit (same-sample
          diagonal), for any order of distinct indices (a repeated index, as in a
          bootstrap sample, is refused: its copies would be the same sample here but
          different samples in ``gram``);
        * ``gram_subset(X, te, tr)`` equals ``gram(X[te], X[tr])`` bit for bit when
          ``te`` and ``tr`` share no index (a shared index i gives ``G[i, i]``, the
          same-sample entry, which differs from the cross kernel when sigma_h > 0).

        Parameters
        ----------
        X : sequence set (anything ``gram`` accepts), N series -- the full set
        rows, cols : 1-D integer indices into X or boolean masks of length N
            (``cols=None``: ``cols = rows``).
        kernel, kind, n_jobs, progress, tile_size : as in :meth:`gram`

        Returns
        -------
        ndarray (len(rows), len(cols)) float64 (a tuple of two for ``kind="both"``).
        """
        check_args(kernel, kind)
        PX, _ = self._pack(X, None)
        r = _as_index(rows, PX.n, "rows")
        c = r if cols is None else _as_index(cols, PX.n, "cols")
        for name, idx in (("rows", r), ("cols", c)):
            if np.unique(idx).size != idx.size:
                raise ValueError(f"gram_subset: {name} has repeated indices; pass "
                                 f"distinct indices (for a bootstrap sample, call "
                                 f"gram(X_sample) instead)")
        res = self.gram(PX, kernel=kernel, kind=kind, n_jobs=n_jobs, progress=progress,
                        tile_size=tile_size)
        parts = res if kind == "both" else (res,)
        out = []
        for p in parts:
            if isinstance(p, GramArray):
                with p:
                    out.append(p.take(r, c))
            else:
                out.append(p[np.ix_(r, c)])
        return tuple(out) if kind == "both" else out[0]

    def gram(self, X, Y=None, *, kernel: RNTK, kind: str = "ntk", n_jobs=None,
             progress: bool = False, tile_size=None, out_of_core=None):
        """``rntk_numba.gram(X, Y, ...)`` through the store.

        Parameters
        ----------
        X, Y, kernel, kind, n_jobs, progress, tile_size
            As in :func:`rntk_numba.gram` (X, Y may already be ``PackedSequences``).
        out_of_core : bool, optional
            ``True``: write tile by tile without holding the matrix in memory and
            return :class:`GramArray` handles. ``False``: in-memory arrays. ``None``
            (default): out of core only if the requested kernel(s) exceed ``memory_budget``.

        Returns
        -------
        ndarray (N, M) float64 (or GramArray out of core); a tuple for ``kind="both"``.
        From 8 MiB on, the ndarray is mapped copy-on-write from the entry's file unless
        the store was made with ``copy=True`` (see :class:`GramStore`).

        A stored entry is verified before it is returned (a corrupt one is removed and
        recomputed). Otherwise the matrix is computed under the key's lock, tiles
        written as they finish; an interrupted computation resumes where it stopped.
        If the store cannot be written (read-only, disk full) a ``CacheWarning`` is
        issued and the in-memory result is returned anyway.
        """
        check_args(kernel, kind)
        PX, PY = self._pack(X, Y)
        shape = (PX.n, PX.n if PY is None else PY.n)
        key = self._key(PX, PY, kernel)
        seen = set()                      # kinds of an entry that lacks ``kind``
        ooc = self._out_of_core(shape, out_of_core, kind)
        res = self._serve(key, shape, kind, ooc, seen=seen)
        if res is not None:
            return res
        if not ooc:
            res = self._from_superset(PX, PY, kernel, kind)
            if res is not None:
                return res
        self.stats["misses"] += 1
        lock = _KeyLock(self._lockfile(key), timeout=self.lock_timeout, progress=progress)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except TimeoutError as exc:
            self.stats["lock_waits"] += 1
            return self._without_store(PX, PY, kernel, kind, n_jobs, progress, tile_size,
                                       ooc, f"{exc}; computing without storing")
        except OSError as exc:
            return self._without_store(PX, PY, kernel, kind, n_jobs, progress, tile_size,
                                       ooc, f"cannot write the store ({exc}); "
                                       f"computing without storing")
        self.stats["lock_waits"] += lock.waited
        try:
            res = self._serve(key, shape, kind, ooc, seen=seen)  # done while we waited?
            if res is not None:
                self.stats["misses"] -= 1
                return res
            return self._compute(key, PX, PY, kernel, kind, n_jobs, progress, tile_size,
                                 ooc, lock, keep=seen)
        finally:
            if not getattr(lock, "transferred", False):
                lock.release()

    def _without_store(self, PX, PY, kernel, kind, n_jobs, progress, tile_size, ooc, why):
        shape = (PX.n, PX.n if PY is None else PY.n)
        self.stats["write_errors"] += 1
        need = 8 * _n_kinds(kind) * shape[0] * shape[1]
        if ooc and need > self.memory_budget:
            raise OSError(f"rntk cache ({self.path}): {why.split(';')[0]}; a "
                          f"{shape[0]}x{shape[1]} Gram needs {_fmt_bytes(need)} on disk "
                          f"out of core (more than memory_budget="
                          f"{_fmt_bytes(self.memory_budget)} in memory)")
        self._warn(why)
        ntk, nngp = compute_dense(PX, PY, kernel, n_jobs=n_jobs, progress=progress,
                                  tile_size=tile_size, kind=kind)
        return select_kind(ntk, nngp, kind)

    # the computation
    def _metadata(self, key, PX, PY, kernel, shape, seconds, n_tiles, resumed, started):
        import h5py
        import numba
        lx = PX.lengths
        meta = {
            "format": STORE_FORMAT, "key": key, "mode": "sym" if PY is None else "cross",
            "kernel": kernel.to_dict(), "canonical": kernel.canonical,
            "formula_version": params.FORMULA_VERSION, "shape": list(shape),
            "m": PX.m, "x_fingerprint": PX.fingerprint(),
            "y_fingerprint": None if PY is None else PY.fingerprint(),
            "x_lengths": [int(lx.min()), int(lx.max()), float(lx.mean())],
            "y_lengths": (None if PY is None else
                          [int(PY.lengths.min()), int(PY.lengths.max()),
                           float(PY.lengths.mean())]),
            "band_rows": _band_rows(shape[1]), "bytes_data": 16 * shape[0] * shape[1],
            "created": _now_iso(), "created_unix": time.time(),
            "started_unix": started, "compute_seconds": round(seconds, 3),
            "n_tiles": n_tiles, "tiles_resumed": resumed,
            "engine_version": __version__, "numpy": np.__version__,
            "numba": numba.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version, "host": socket.gethostname(),
        }
        datasets = {"x_lengths": PX.lengths.astype(np.int64),
                    "x_series_fp": series_fingerprints(PX)}
        if PY is not None:
            datasets["y_lengths"] = PY.lengths.astype(np.int64)
            datasets["y_series_fp"] = series_fingerprints(PY)
        return meta, datasets

    def _compute(self, key, PX, PY, kernel, kind, n_jobs, progress, tile_size, ooc,
                 lock=None, keep=()):
        """Compute (or resume) the entry ``key`` under its lock (see _compute_entry);
        a partial entry opened here is closed (its files kept) if anything fails or is
        interrupted, wherever that happens."""
        opened = []
        try:
            return self._compute_entry(key, PX, PY, kernel, kind, n_jobs, progress,
                                       tile_size, ooc, lock, keep, opened)
        except BaseException:
            for part in opened:
                part.close()
            raise

    def _compute_entry(self, key, PX, PY, kernel, kind, n_jobs, progress, tile_size,
                       ooc, lock, keep, opened):
        """Compute (or resume) the entry ``key`` under its lock; see _Partial.

        The entry stores the kernel(s) ``kind`` asks for, plus ``keep`` (those of an
        entry it replaces, unless computing in memory they would not fit in
        ``memory_budget`` beside them). When the kernels fit in ``memory_budget`` (tiles go
        straight into the entry's file), a ragged set is computed in order of
        decreasing length, as in :func:`rntk_numba.assembly.compute_dense`, and the
        journal records the order; in the tile log of a larger Gram the tiles index the series
        as given, as the band-by-band assembly of the file needs.
        """
        t_start = time.time()
        t0 = time.perf_counter()
        kinds = tuple(k for k in _KINDS if k in set(_kinds_of(kind)) | set(keep))
        shape = (PX.n, PX.n if PY is None else PY.n)
        symmetric = PY is None
        workers = default_n_jobs() if n_jobs is None else max(1, int(n_jobs))
        fits = len(kinds) * 8 * shape[0] * shape[1] <= self.memory_budget
        if not fits and not ooc and len(kinds) > len(_kinds_of(kind)):
            # the replaced entry's other kernel would not fit in memory beside the one
            # asked for: the new entry holds only the latter
            kinds = _kinds_of(kind)
            fits = len(kinds) * 8 * shape[0] * shape[1] <= self.memory_budget
        handles = ooc                     # return GramArray handles at the end

        def ragged(P):
            return P is not None and P.lengths.min() != P.lengths.max()

        # the kernels fit in memory: tiles go straight into the entry's file (and a
        # ragged set is computed in order of decreasing length, as gram() does);
        # larger than memory: into the tile log, in the series' own order (the
        # file is assembled from it band by band)
        sink = "file" if fits else "log"
        order = "length" if sink == "file" and (ragged(PX) or ragged(PY)) else None
        part, why = None, None
        try:
            part = _Partial.resume(self, key, shape, symmetric, kinds)
        except OSError as exc:
            part, why = None, exc
        if part is not None:
            opened.append(part)
            kinds, order, sink = part.kinds, part.order, part.sink
        SX, SY, px, py = PX, PY, None, None
        if order is not None:
            SX, px = by_length(PX)
            SY, py = by_length(PY)
            if PY is None:
                py = px
        problem = prepare(SX, SY, kernel)
        if why is None:
            try:
                plan = part.plan if part is not None else problem.plan(tile_size, workers)
                need = 8 * len(kinds) * shape[0] * shape[1] + (1 << 20)
                if sink == "log":
                    need += _Partial.log_bytes(plan, len(kinds))
                have = part.disk_bytes() if part is not None else 0
                free = _disk_free(self.path)
                if free is not None and free + have < need:
                    raise OSError(errno.ENOSPC, f"not enough free space: the entry needs "
                                                f"{_fmt_bytes(need)}, {_fmt_bytes(free)} "
                                                f"free")
                if part is None:
                    part = _Partial.create(self, key, shape, symmetric, plan, kinds,
                                           order, sink)
                    opened.append(part)
            except OSError as exc:
                if part is not None:
                    part.close()
                part, why = None, exc
        if part is not None:
            part.set_order(px, py)
        if part is None:
            if ooc and not fits:
                raise OSError(f"rntk cache ({self.path}): cannot write the out-of-core "
                              f"{shape[0]}x{shape[1]} Gram: {why}") from why
            self.stats["write_errors"] += 1
            self._warn(f"cannot write the store ({why}); the result is computed in memory "
                       f"and not stored")
            handles = ooc = False         # nothing on disk to hand back
            kinds = _kinds_of(kind)
        plan = part.plan if part is not None else problem.plan(tile_size, workers)
        permuted = order is not None

        # mapped (GramStore(copy=False)): the tiles go only into the entry's file, and
        # the result is that file's pages, mapped copy-on-write -- never a second copy.
        # So in memory without arrays ("mem" None, not out of core) means mapped.
        mapped = (part is not None and part.sink == "file" and not ooc
                  and not self._copies(shape))
        state = {"part": part,
                 "mem": None if ooc or mapped else {k: np.empty(shape) for k in kinds}}
        have = set()                      # tiles present in state["mem"]

        def put(tile, blocks):            # exactly as gram.compute_dense
            rows, cols = tile_positions(tile, px, py, permuted)
            mirror = symmetric and not tile.diagonal
            for k, dst in state["mem"].items():
                scatter_block(dst, rows, cols, blocks[k], mirror)
            have.add(tile.index)

        def to_memory(exc):
            """Writing failed: continue in memory (if the matrix fits)."""
            p = state["part"]
            state["part"] = None
            self.stats["write_errors"] += 1
            if state["mem"] is None:
                if not fits:
                    p.close()
                    raise OSError(f"rntk cache ({self.path}): writing the out-of-core "
                                  f"Gram failed: {exc}; the partial entry is kept and "
                                  f"resumes when space is available") from exc
                state["mem"] = {k: np.empty(shape) for k in kinds}
                for t in plan:
                    if t.index in p.done:
                        blocks = p.read_tile(t)
                        if blocks is not None:
                            put(t, blocks)
            n_done = len(p.done)
            p.close()
            self._warn(f"writing entry {key} failed ({exc}); the result is computed in "
                       f"memory and not stored (the partial entry with {n_done}/"
                       f"{len(plan)} tiles is kept and resumes later)")

        # tiles already done (resume): verify them (and load them if in memory)
        done_ok = set()
        if part is not None and part.done:
            for t in plan:
                if t.index in part.done:
                    blocks = part.read_tile(t)
                    if blocks is None:
                        del part.done[t.index]
                        continue
                    done_ok.add(t.index)
                    if state["mem"] is not None:
                        put(t, blocks)
            if progress:
                print(f"rntk: resuming {key[:12]}: {len(done_ok)}/{len(plan)} tiles "
                      f"already stored", file=sys.stderr)
        self.stats["tiles_resumed"] += len(done_ok)

        def on_tile(tile, a, b):
            self.stats["tiles_computed"] += 1
            blocks = {"ntk": a, "nngp": b}
            if state["mem"] is not None:
                put(tile, blocks)
            p = state["part"]
            if p is not None:
                try:
                    p.write_tile(tile, blocks)
                except OSError as exc:
                    to_memory(exc)
                    if tile.index not in have:
                        put(tile, blocks)

        def run(tiles):
            # Out of core, tiles are handed to the executor in batches: run_tiles
            # streams results as they finish, and without this bound finished tiles
            # would pile up in memory whenever the disk is slower than the workers.
            if state["mem"] is not None or not ooc:      # in memory, or mapped
                run_tiles(problem, tiles, on_tile, n_jobs=n_jobs, progress=progress,
                          description=f"gram {key[:8]}")
                return
            step = max(8, 4 * workers)
            ordered = sorted(tiles, key=lambda t: (-t.cost, t.index))
            bar = None
            if progress:                  # one bar over all batches
                from tqdm.auto import tqdm
                bar = tqdm(total=sum(t.cost for t in tiles), unit="step",
                           unit_scale=True, desc=f"gram {key[:8]}", smoothing=0.1)

            def tick(tile, a, b):
                on_tile(tile, a, b)
                if bar is not None:
                    bar.update(tile.cost)
            try:
                for i in range(0, len(ordered), step):
                    run_tiles(problem, ordered[i:i + step], tick, n_jobs=n_jobs)
            finally:
                if bar is not None:
                    bar.close()

        try:
            run([t for t in plan if t.index not in done_ok])
            if state["mem"] is not None:       # tiles lost when switching to memory
                missing = [t for t in plan if t.index not in have]
                if missing:
                    run(missing)
            part = state["part"]
            if part is not None:
                seconds = time.perf_counter() - t0
                meta, datasets = self._metadata(key, PX, PY, kernel, shape, seconds,
                                                len(plan), len(done_ok), t_start)
                meta["kinds"] = list(kinds)
                mem = state["mem"]
                state["part"] = None
                # the result: the arrays in memory, or the file's pages (mapped before
                # the completion closes the file; renaming it keeps them valid)
                res = mem if mem is not None or ooc else part.cow_views(_kinds_of(kind))
                if (self.background and not handles and res is not None
                        and lock is not None and part.sink == "file"):
                    # the caller owns the arrays; the thread checksums the file
                    self._finish_later(key, part, meta, datasets, None, lock)
                    return select_kind(res.get("ntk"), res.get("nngp"), kind)
                stored = self._finish(key, part, meta, datasets, mem,
                                      raise_errors=res is None)
                if stored and handles:
                    res = self._serve(key, shape, kind, True, count=False)
                    if res is not None:
                        return res
                if res is None:  # pragma: no cover - removed meanwhile
                    raise OSError(f"the out-of-core entry {key} was not stored")
                return select_kind(res.get("ntk"), res.get("nngp"), kind)
        finally:
            if state["part"] is not None:        # interrupted: keep it for resume
                state["part"].close()
        m = state["mem"]
        return select_kind(m.get("ntk"), m.get("nngp"), kind)

    def _finish(self, key, part, meta, datasets, mem, raise_errors=False) -> bool:
        """Complete a partial entry (see _Partial.finalize) and write its side file.
        On failure: warn (or raise OSError if ``raise_errors``); the journal stays."""
        try:
            part.finalize(meta, datasets, mem)
        except (OSError, RuntimeError, ValueError) as exc:
            part.close()
            if raise_errors:
                raise OSError(f"rntk cache ({self.path}): completing the entry {key} "
                              f"failed: {exc}") from exc
            self.stats["write_errors"] += 1
            warnings.warn(f"rntk cache ({self.path}): completing entry {key} failed "
                          f"({exc}); the result was returned but is not stored",
                          CacheWarning, stacklevel=2)
            return False
        try:
            _atomic_write_text(self._sidecar(key), json.dumps(meta, indent=1))
        except OSError:
            pass
        return True

    def _finish_later(self, key, part, meta, datasets, mem, lock) -> None:
        """_finish in a (non-daemon) thread that then releases the key's lock."""
        _join_pending(self.path)            # at most one completion in flight
        ident = (str(self.path), key)

        def job():
            try:
                self._finish(key, part, meta, datasets, mem)
            finally:
                lock.release()
                with _PENDING_LOCK:
                    _PENDING.pop(ident, None)

        thread = threading.Thread(target=job, name=f"rntk-store-{key[:8]}")
        lock.transferred = True
        with _PENDING_LOCK:         # registered and started at once: nobody can see
            _PENDING[ident] = thread    # (and join) a thread that has not started
            thread.start()

    def _sidecars(self) -> list[dict]:
        """The metadata side files of the store (parsed once per file version)."""
        cache = self.__dict__.setdefault("_side_cache", {})
        out, seen = [], set()
        for side in self.path.glob("*.json"):
            if side.name.count(".") != 1:
                continue
            try:
                st = side.stat()
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                hit = cache.get(side.name)
                if hit is None or hit[0] != stamp:
                    hit = (stamp, json.loads(side.read_text()))
                    cache[side.name] = hit
            except (OSError, ValueError):
                continue
            seen.add(side.name)
            if isinstance(hit[1], dict):
                out.append(hit[1])
        for name in set(cache) - seen:
            del cache[name]
        return out

    # subsets of a cached symmetric entry (the convenience path of gram(X_sub, cache=))
    def _from_superset(self, PX, PY, kernel, kind):
        self.wait()
        if not self.path.is_dir():
            return None
        want = PX.n + (0 if PY is None else PY.n)
        candidates = []
        for meta in self._sidecars():
            try:
                if (meta.get("mode") == "sym" and meta.get("canonical") == kernel.canonical
                        and meta.get("formula_version") == params.FORMULA_VERSION
                        and meta.get("m") == PX.m and meta["shape"][0] >= want
                        and meta.get("format") == STORE_FORMAT
                        and set(_kinds_of(kind)) <= set(meta.get("kinds", ()))):
                    candidates.append((meta["shape"][0], meta["key"]))
            except (KeyError, TypeError, IndexError):
                continue
        if not candidates:
            return None
        fpx = series_fingerprints(PX)
        fpy = None if PY is None else series_fingerprints(PY)
        for _, key in sorted(candidates):
            entry = self._open_entry(key)
            if entry is None:
                continue
            try:
                full = entry.aux("x_series_fp")
                idx = _match_series(full, fpx, fpy)
                if idx is None:
                    continue
                r, c = idx
                result = entry.take(r, r if c is None else c, kind)
            except CorruptEntryError:
                continue
            except (OSError, KeyError, ValueError):
                continue
            finally:
                entry.close()
            self._touch(self._final(key))
            self.stats["subset_hits"] += 1
            return result
        return None

    # housekeeping
    def entries(self) -> list[dict]:
        """One dict per entry (complete, partial, or unreadable), for ``rntk cache ls``:
        key, state, path, bytes, shape, mode, kernel, created, last_used (unix time),
        tiles_done / n_tiles for partial entries. Nothing is verified (see ``verify``)."""
        self.wait()
        if not self.path.is_dir():
            return []
        out = []
        for p in sorted(self.path.iterdir()):
            name = p.name
            if name.endswith(".partial.h5") or not name.endswith(".h5"):
                continue
            key = name[:-3]
            try:
                st = p.stat()
            except FileNotFoundError:       # removed meanwhile
                continue
            info = {"key": key, "state": "complete", "path": str(p), "bytes": st.st_size,
                    "last_used": st.st_mtime}
            meta = None
            try:
                meta = json.loads(self._sidecar(key).read_text())
            except (OSError, ValueError):
                try:
                    with GramEntry(p, key) as e:
                        meta = e.meta
                except (OSError, CorruptEntryError):
                    info["state"] = "unreadable"
                else:                       # re-create the missing side file
                    try:
                        _atomic_write_text(self._sidecar(key),
                                           json.dumps({k: v for k, v in meta.items()
                                                       if k != "aux_crc"}, indent=1))
                    except OSError:
                        pass
            if meta is not None:
                info.update(shape=tuple(meta["shape"]), mode=meta["mode"],
                            kinds=tuple(meta.get("kinds", ())),
                            kernel=meta["kernel"], created=meta.get("created_unix"),
                            compute_seconds=meta.get("compute_seconds"))
            out.append(info)
        for j in sorted(self.path.glob("*.journal")):
            key = j.name[:-len(".journal")]
            part = self._partial(key)
            try:
                data = [p for p in (self._tiles(key), part) if p.exists()]
                info = {"key": key, "state": "partial", "path": str(j),
                        "bytes": sum(p.stat().st_size for p in data),
                        "last_used": j.stat().st_mtime}
            except FileNotFoundError:       # finished meanwhile
                continue
            try:
                header, done = _parse_journal(j)
                info.update(shape=tuple(header["shape"]),
                            mode="sym" if header["symmetric"] else "cross",
                            kinds=tuple(header.get("kinds", ())),
                            created=header.get("created"), tiles_done=len(done),
                            n_tiles=len(header["tiles"]))
            except (OSError, ValueError, KeyError):
                info["state"] = "partial?"
            out.append(info)
        return out

    def _resolve(self, prefix: str) -> str:
        keys = sorted({e["key"] for e in self.entries()})
        hits = [k for k in keys if k.startswith(prefix)]
        if not hits:
            raise ValueError(f"no entry with key {prefix!r} in {self.path}")
        if len(hits) > 1:
            raise ValueError(f"key prefix {prefix!r} is ambiguous: {', '.join(hits[:5])}")
        return hits[0]

    def info(self, key: str) -> dict:
        """Everything known about one entry (a unique key prefix is enough)."""
        key = self._resolve(key)
        out = next(e for e in self.entries() if e["key"] == key)
        final = self._final(key)
        if final.exists():
            try:
                with GramEntry(final, key) as e:
                    out["meta"] = e.meta
            except (OSError, CorruptEntryError) as exc:
                out["error"] = str(exc)
        return out

    def verify(self, remove: bool = False) -> list[tuple[str, bool, str]]:
        """Read every complete entry in full and check all checksums.

        Returns (key, ok, message) per entry; ``remove=True`` deletes the bad ones."""
        out = []
        for e in self.entries():
            if e["state"] not in ("complete", "unreadable"):
                continue
            key, path = e["key"], Path(e["path"])
            try:
                with GramEntry(path, key) as entry:
                    entry.verify()
                out.append((key, True, "ok"))
            except (OSError, CorruptEntryError) as exc:
                msg = str(exc)
                if remove:
                    _unlink(path)
                    _unlink(self._sidecar(key))
                    msg += " (removed)"
                out.append((key, False, msg))
        return out

    def remove(self, key: str) -> int:
        """Delete one entry (complete and partial files); returns bytes freed. A partial
        entry being computed by a live process (its lock held) is left alone."""
        _join_pending(self.path, key)
        freed = 0
        final = self._final(key)
        if final.exists():
            freed += final.stat().st_size
            _unlink(final)
        _unlink(self._sidecar(key))
        lock = _KeyLock(self._lockfile(key), timeout=0)
        try:
            lock.acquire()
        except (TimeoutError, OSError):
            return freed
        try:
            for tmp in self.path.glob(f"{key}.*.tmp*"):  # left by a killed process
                _unlink(tmp)
            for p in _Partial.files(self, key):
                if p.exists():
                    freed += p.stat().st_size
                    _unlink(p)
            _unlink(self._lockfile(key))
        finally:
            lock.release()
        return freed

    def total_bytes(self) -> int:
        return sum(e["bytes"] for e in self.entries())

    def prune(self, max_bytes: int) -> list[str]:
        """Delete least recently used entries until the store holds at most
        ``max_bytes`` (partial entries not being computed count and go first)."""
        entries = self.entries()
        total = sum(e["bytes"] for e in entries)
        removed = []
        order = sorted(entries, key=lambda e: (e["state"] == "complete", e["last_used"]))
        for e in order:
            if total <= max_bytes:
                break
            freed = self.remove(e["key"])
            if freed or not Path(e["path"]).exists():
                total -= e["bytes"]
                removed.append(e["key"])
        return removed

    def clear(self) -> int:
        """Delete every entry (and stray temporary files); returns the number of keys
        removed. Partial entries being computed by a live process are left alone."""
        self.wait()
        if not self.path.is_dir():
            return 0
        keys = set()
        for p in self.path.iterdir():
            head = p.name.split(".", 1)[0]
            if len(head) == 32 and all(ch in "0123456789abcdef" for ch in head):
                keys.add(head)
                if ".tmp" in p.name:
                    _unlink(p)
        for key in sorted(keys):
            self.remove(key)
        return len(keys)


def _disk_free(path: Path):
    import shutil
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _match_series(full: np.ndarray, fpx: np.ndarray, fpy):
    """Indices into the full set for the rows (and columns): distinct samples, the k-th
    copy of a repeated series matched to its k-th copy. None if impossible."""
    pos = {}
    for i, row in enumerate(full):
        pos.setdefault(row.tobytes(), []).append(i)
    used = {k: 0 for k in pos}

    def assign(fps):
        out = np.empty(len(fps), dtype=np.int64)
        for a, row in enumerate(fps):
            k = row.tobytes()
            lst = pos.get(k)
            if lst is None or used[k] >= len(lst):
                return None
            out[a] = lst[used[k]]
            used[k] += 1
        return out

    r = assign(fpx)
    if r is None:
        return None
    if fpy is None:
        return r, None
    c = assign(fpy)
    return None if c is None else (r, c)


# -- the `rntk cache` command -------------------------------------------------------------

def _table(rows, headers) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _when(t) -> str:
    if t is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _cmd_ls(store: GramStore, args) -> int:
    entries = store.entries()
    if args.json:
        print(json.dumps(entries, indent=1, default=str))
        return 0
    if not entries:
        print(f"{store.path}: empty")
        return 0
    rows = []
    for e in sorted(entries, key=lambda e: -e["last_used"]):
        shape = "x".join(map(str, e["shape"])) if "shape" in e else "?"
        state = e["state"]
        if state == "partial" and "n_tiles" in e:
            state = f"partial {e['tiles_done']}/{e['n_tiles']}"
        rows.append((e["key"][:12], state, shape, e.get("mode", "?"),
                     "+".join(e.get("kinds", ())) or "?", _fmt_bytes(e["bytes"]),
                     _kernel_short(e.get("kernel", {})) if "kernel" in e else "-",
                     _when(e["last_used"])))
    print(_table(rows, ("KEY", "STATE", "SHAPE", "MODE", "KINDS", "SIZE",
                        "HYPERPARAMETERS", "LAST USED")))
    total = sum(e["bytes"] for e in entries)
    print(f"{len(entries)} entries, {_fmt_bytes(total)} in {store.path}")
    return 0


def _cmd_info(store: GramStore, args) -> int:
    print(json.dumps(store.info(args.key), indent=1, default=str))
    return 0


def _cmd_verify(store: GramStore, args) -> int:
    results = store.verify(remove=args.remove)
    bad = 0
    for key, ok, msg in results:
        print(f"{key[:12]}  {'ok' if ok else 'CORRUPT'}  {'' if ok else msg}".rstrip())
        bad += not ok
    print(f"{len(results)} entries checked, {bad} corrupt")
    return 1 if bad else 0


def _cmd_prune(store: GramStore, args) -> int:
    removed = store.prune(args.max_bytes)
    for k in removed:
        print(f"removed {k[:12]}")
    print(f"{len(removed)} removed; {_fmt_bytes(store.total_bytes())} left in {store.path}")
    return 0


def _cmd_clear(store: GramStore, args) -> int:
    n = store.clear()
    print(f"removed {n} entries from {store.path}")
    return 0


_ACTIONS = {"ls": _cmd_ls, "info": _cmd_info, "verify": _cmd_verify,
            "prune": _cmd_prune, "clear": _cmd_clear}


def register(subparsers) -> None:
    """Add ``rntk cache {ls,info,verify,prune,clear}`` to the ``rntk`` command."""
    p = subparsers.add_parser(
        "cache", help="inspect and manage the on-disk Gram store",
        description="Inspect and manage the Gram store (default directory: "
                    "$RNTK_CACHE_DIR, else ./cache).")
    p.add_argument("--dir", default=None, help="store directory")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS, help="store directory")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    ls = sub.add_parser("ls", parents=[common], help="list entries: size, shape, "
                        "hyperparameters, last used")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    info = sub.add_parser("info", parents=[common], help="all metadata of one entry")
    info.add_argument("key", help="entry key (a unique prefix is enough)")
    ver = sub.add_parser("verify", parents=[common],
                         help="read every entry and check its checksums (exit 1 if any "
                              "is corrupt)")
    ver.add_argument("--remove", action="store_true", help="delete corrupt entries")
    pr = sub.add_parser("prune", parents=[common],
                        help="delete least recently used entries down to a size")
    pr.add_argument("--max-bytes", required=True, type=_parse_bytes, metavar="N",
                    help="size to keep, e.g. 20G, 500M or a number of bytes")
    sub.add_parser("clear", parents=[common], help="delete every entry")
    p.set_defaults(func=_cli, _cache_parser=p)


def _cli(args) -> int:
    action = getattr(args, "cache_command", None)
    if action is None:
        args._cache_parser.print_help(sys.stderr)
        return 2
    store = GramStore(args.dir) if args.dir else GramStore()
    return _ACTIONS[action](store, args)
