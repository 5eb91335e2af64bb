"""The partial entry, its journal and resume: an entry while it is being computed.

Owns ``_Partial`` (``<key>.partial.h5``, ``<key>.journal`` and, out of core,
``<key>.tiles``): creating it with its tile plan, writing finished tiles into the
preallocated, memory-mapped datasets (or appending them to the tile log), journaling
each with a checksum, reading and verifying journaled tiles on resume, and completing
the file (checksums of row bands, metadata) before its atomic rename. Crash safety
lives here: a ``<key>.h5`` only ever comes from renaming a completed, checksummed,
closed file. May import: :mod:`.format`, :mod:`.fileio`, ``_checksum``, ``tiles``,
``assembly`` (tile placement). It reaches the store's paths through the ``store``
object it is given, never by importing the facade.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from .. import _checksum
from ..assembly import gather_block, scatter_block, tile_positions
from ..tiles import Tile
from .fileio import (_fsync_path, _map_cow, _populate, _pread_into, _preallocate,
                     _pwrite_all, _unlink, _write_all)
from .format import (STORE_FORMAT, _LIBVER, CacheWarning, CorruptEntryError, _attr_str,
                     _band_crcs, _contiguous_dataset, _fixed, _h5py)

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
