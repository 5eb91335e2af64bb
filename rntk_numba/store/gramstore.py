"""The ``GramStore`` facade: the one class users meet.

Owns the store directory and its file names, the look-ups (``gram``, ``gram_subset``,
``lookup``, ``ensure``, and subsets of a cached symmetric entry), serving a complete
entry (verified; mapped copy-on-write or copied), the removal of corrupt entries, and
housekeeping (``entries``, ``info``, ``verify``, ``remove``, ``prune``, ``clear``). The
cold path is :mod:`.compute`; keys are :mod:`.keys`; reading is :mod:`.entry`. About
650 lines: one class whose methods are the public API and its short glue; splitting it
further would scatter one object's state over files. May import every room of the
store (never ``gram``: ``gram(..., cache=)`` calls up into :func:`as_store`).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from .. import params
from ..assembly import check_args
from ..params import RNTK
from .compute import compute, without_store
from .entry import GramArray, GramEntry, _as_index
from .fileio import _atomic_write_text, _unlink
from .format import (STORE_FORMAT, _KINDS, CacheWarning, CorruptEntryError, _kinds_of,
                     _n_kinds)
from .keys import _match_series, entry_key, pack_inputs, series_fingerprints
from .lock import _join_pending, _KeyLock
from .partial import _Partial, _parse_journal

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




class GramStore:
    """HDF5-backed store of Gram matrices in a directory (see ``docs/store.md``).

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
    _pack = staticmethod(pack_inputs)
    _key = staticmethod(entry_key)

    def key(self, X, Y=None, *, kernel: RNTK) -> str:
        """The entry key of ``gram(X, Y, kernel=kernel)`` (any ``kind``)."""
        check_args(kernel, "ntk")
        PX, PY = self._pack(X, Y)
        return self._key(PX, PY, kernel)

    def _copies(self, shape) -> bool:
        """Whether an in-memory result of ``shape`` is a copy (else mapped, see copy)."""
        # MAP_MIN_BYTES is the package's (rntk_numba.store.MAP_MIN_BYTES), read here at
        # call time so that setting it there takes effect, as it did in the module
        map_min = sys.modules[__package__].MAP_MIN_BYTES
        return self.copy or 8 * shape[0] * shape[1] < max(map_min, 1)

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
            return without_store(self, PX, PY, kernel, kind, n_jobs, progress,
                                 tile_size, ooc, f"{exc}; computing without storing")
        except OSError as exc:
            return without_store(self, PX, PY, kernel, kind, n_jobs, progress,
                                 tile_size, ooc, f"cannot write the store ({exc}); "
                                 f"computing without storing")
        self.stats["lock_waits"] += lock.waited
        try:
            res = self._serve(key, shape, kind, ooc, seen=seen)  # done while we waited?
            if res is not None:
                self.stats["misses"] -= 1
                return res
            return compute(self, key, PX, PY, kernel, kind, n_jobs, progress,
                           tile_size, ooc, lock, keep=seen)
        finally:
            if not getattr(lock, "transferred", False):
                lock.release()







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
