"""Computing an entry: tiles into a partial entry under the key's lock, then its
completion (in the caller's thread or a background one).

Owns the cold path of :meth:`GramStore.gram`: choosing where tiles go (the entry's
file when the kernels fit in ``memory_budget``, else the tile log), resuming a partial
entry, falling back to memory when the disk fails, the entry's metadata, and completing
it (``finish`` / ``finish_later``). The functions take the ``GramStore`` as their first
argument (its paths, counters, settings and warnings) and are called only by it. May
import: ``engine``, ``assembly``, ``params``, :mod:`.format`, :mod:`.fileio`,
:mod:`.keys`, :mod:`.lock`, :mod:`.partial` (never the facade or ``gram``).
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import threading
import time
import warnings

import numpy as np

from .. import params
from .._version import __version__
from ..assembly import by_length, compute_dense, scatter_block, select_kind, tile_positions
from ..engine import default_n_jobs, prepare, run_tiles
from .fileio import _atomic_write_text, _disk_free
from .format import (STORE_FORMAT, _KINDS, CacheWarning, _band_rows, _fmt_bytes, _kinds_of,
                     _n_kinds, _now_iso)
from .keys import series_fingerprints
from .lock import _PENDING, _PENDING_LOCK, _join_pending
from .partial import _Partial

__all__ = ["compute", "without_store", "finish", "finish_later"]


def without_store(store, PX, PY, kernel, kind, n_jobs, progress, tile_size, ooc, why):
    """The store cannot be written (or the key's lock not taken, ``why``): warn and
    compute in memory -- or raise OSError if out of core the Gram would not fit."""
    shape = (PX.n, PX.n if PY is None else PY.n)
    store.stats["write_errors"] += 1
    need = 8 * _n_kinds(kind) * shape[0] * shape[1]
    if ooc and need > store.memory_budget:
        raise OSError(f"rntk cache ({store.path}): {why.split(';')[0]}; a "
                      f"{shape[0]}x{shape[1]} Gram needs {_fmt_bytes(need)} on disk "
                      f"out of core (more than memory_budget="
                      f"{_fmt_bytes(store.memory_budget)} in memory)")
    store._warn(why)
    ntk, nngp = compute_dense(PX, PY, kernel, n_jobs=n_jobs, progress=progress,
                              tile_size=tile_size, kind=kind)
    return select_kind(ntk, nngp, kind)


def _metadata(store, key, PX, PY, kernel, shape, seconds, n_tiles, resumed, started):
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


def compute(store, key, PX, PY, kernel, kind, n_jobs, progress, tile_size, ooc,
             lock=None, keep=()):
    """Compute (or resume) the entry ``key`` under its lock (see _compute_entry);
    a partial entry opened here is closed (its files kept) if anything fails or is
    interrupted, wherever that happens."""
    opened = []
    try:
        return _compute_entry(store, key, PX, PY, kernel, kind, n_jobs, progress,
                              tile_size, ooc, lock, keep, opened)
    except BaseException:
        for part in opened:
            part.close()
        raise


def _compute_entry(store, key, PX, PY, kernel, kind, n_jobs, progress, tile_size,
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
    fits = len(kinds) * 8 * shape[0] * shape[1] <= store.memory_budget
    if not fits and not ooc and len(kinds) > len(_kinds_of(kind)):
        # the replaced entry's other kernel would not fit in memory beside the one
        # asked for: the new entry holds only the latter
        kinds = _kinds_of(kind)
        fits = len(kinds) * 8 * shape[0] * shape[1] <= store.memory_budget
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
        part = _Partial.resume(store, key, shape, symmetric, kinds)
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
            free = _disk_free(store.path)
            if free is not None and free + have < need:
                raise OSError(errno.ENOSPC, f"not enough free space: the entry needs "
                                            f"{_fmt_bytes(need)}, {_fmt_bytes(free)} "
                                            f"free")
            if part is None:
                part = _Partial.create(store, key, shape, symmetric, plan, kinds,
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
            raise OSError(f"rntk cache ({store.path}): cannot write the out-of-core "
                          f"{shape[0]}x{shape[1]} Gram: {why}") from why
        store.stats["write_errors"] += 1
        store._warn(f"cannot write the store ({why}); the result is computed in memory "
                   f"and not stored")
        handles = ooc = False         # nothing on disk to hand back
        kinds = _kinds_of(kind)
    plan = part.plan if part is not None else problem.plan(tile_size, workers)
    permuted = order is not None

    # mapped (GramStore(copy=False)): the tiles go only into the entry's file, and
    # the result is that file's pages, mapped copy-on-write -- never a second copy.
    # So in memory without arrays ("mem" None, not out of core) means mapped.
    mapped = (part is not None and part.sink == "file" and not ooc
              and not store._copies(shape))
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
        store.stats["write_errors"] += 1
        if state["mem"] is None:
            if not fits:
                p.close()
                raise OSError(f"rntk cache ({store.path}): writing the out-of-core "
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
        store._warn(f"writing entry {key} failed ({exc}); the result is computed in "
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
    store.stats["tiles_resumed"] += len(done_ok)

    def on_tile(tile, a, b):
        store.stats["tiles_computed"] += 1
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
            meta, datasets = _metadata(store, key, PX, PY, kernel, shape, seconds,
                                       len(plan), len(done_ok), t_start)
            meta["kinds"] = list(kinds)
            mem = state["mem"]
            state["part"] = None
            # the result: the arrays in memory, or the file's pages (mapped before
            # the completion closes the file; renaming it keeps them valid)
            res = mem if mem is not None or ooc else part.cow_views(_kinds_of(kind))
            if (store.background and not handles and res is not None
                    and lock is not None and part.sink == "file"):
                # the caller owns the arrays; the thread checksums the file
                finish_later(store, key, part, meta, datasets, None, lock)
                return select_kind(res.get("ntk"), res.get("nngp"), kind)
            stored = finish(store, key, part, meta, datasets, mem,
                            raise_errors=res is None)
            if stored and handles:
                res = store._serve(key, shape, kind, True, count=False)
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


def finish(store, key, part, meta, datasets, mem, raise_errors=False) -> bool:
    """Complete a partial entry (see _Partial.finalize) and write its side file.
    On failure: warn (or raise OSError if ``raise_errors``); the journal stays."""
    try:
        part.finalize(meta, datasets, mem)
    except (OSError, RuntimeError, ValueError) as exc:
        part.close()
        if raise_errors:
            raise OSError(f"rntk cache ({store.path}): completing the entry {key} "
                          f"failed: {exc}") from exc
        store.stats["write_errors"] += 1
        warnings.warn(f"rntk cache ({store.path}): completing entry {key} failed "
                      f"({exc}); the result was returned but is not stored",
                      CacheWarning, stacklevel=2)
        return False
    try:
        _atomic_write_text(store._sidecar(key), json.dumps(meta, indent=1))
    except OSError:
        pass
    return True


def finish_later(store, key, part, meta, datasets, mem, lock) -> None:
    """``finish`` in a (non-daemon) thread that then releases the key's lock."""
    _join_pending(store.path)            # at most one completion in flight
    ident = (str(store.path), key)

    def job():
        try:
            finish(store, key, part, meta, datasets, mem)
        finally:
            lock.release()
            with _PENDING_LOCK:
                _PENDING.pop(ident, None)

    thread = threading.Thread(target=job, name=f"rntk-store-{key[:8]}")
    lock.transferred = True
    with _PENDING_LOCK:         # registered and started at once: nobody can see
        _PENDING[ident] = thread    # (and join) a thread that has not started
        thread.start()
