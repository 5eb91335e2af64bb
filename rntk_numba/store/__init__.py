"""The on-disk Gram store: every Gram matrix a one-time cost.

A hyperparameter search asks for the same Gram matrices again and again (every CV fold,
every C, every rerun). :class:`GramStore` keeps them in a directory of HDF5 files that
survive ``kill -9``, a full disk, two jobs on the same data and a power cut mid-write::

    from rntk_numba import RNTK, GramStore, gram
    store = GramStore("cache")
    K = gram(X, kernel=RNTK(), cache=store)        # computed once, then read back
    K_tr = store.gram_subset(X, train_idx, kernel=RNTK())              # CV folds:
    K_te = store.gram_subset(X, test_idx, train_idx, kernel=RNTK())    # slices

``gram(..., cache="some/dir")`` and ``cache=True`` (:func:`default_cache_dir`) work
too. Equal inputs and hyperparameters are read back, verified against their checksums;
an interrupted computation resumes; a corrupt entry is removed and recomputed, never
served; results of :data:`MAP_MIN_BYTES` or more are mapped copy-on-write from the
entry's file; a Gram larger than ``memory_budget`` comes back as an on-disk
:class:`GramArray`. ``docs/store.md`` describes what an entry is, the files of a store,
the guarantees and their limits.

The package, one room per responsibility (each file's docstring says what it owns and
what it may import; imports only go down this list)::

    cli.py        the ``rntk cache`` subcommands
    gramstore.py  the GramStore facade: paths, look-ups, serving, housekeeping
    compute.py    the cold path: tiles into a partial entry, completion
    partial.py    the partial entry, its journal and resume
    entry.py      the complete entry (GramEntry) and its out-of-core handle (GramArray)
    keys.py       entry keys and per-series fingerprints
    lock.py       the per-key writer lock, background completions
    fileio.py     pwrite / pread, preallocation, libc mmap, fsync
    format.py     the file format: version, row bands, checksums, exceptions

This module re-exports the public names and, for code written against the former
single module, its private ones. They are the same objects; a test that patches one
patches the module that looks it up (``rntk_numba.store.compute.run_tiles``, say).
:data:`MAP_MIN_BYTES` is defined here and read at call time.
"""

#: In-memory results of at least this many bytes are mapped copy-on-write from the
#: entry's file (``GramStore(copy=False)``, the default); smaller ones are copies.
MAP_MIN_BYTES = 8 << 20

# The public names, then the former single module's other names (same objects).
from .entry import GramArray, GramEntry  # noqa: E402
from .format import STORE_FORMAT, CacheWarning, CorruptEntryError  # noqa: E402
from .gramstore import GramStore, as_store, default_cache_dir  # noqa: E402
from .cli import register  # noqa: E402

from .cli import (_ACTIONS, _cli, _cmd_clear, _cmd_info, _cmd_ls, _cmd_prune,  # noqa: E402,F401
                  _cmd_verify, _kernel_short, _parse_bytes, _table, _when)
from .entry import _as_index  # noqa: E402,F401
from .fileio import (_MADV_POPULATE_READ, _MADV_POPULATE_WRITE,  # noqa: E402,F401
                     _atomic_write_text, _disk_free, _fsync_path, _libc, _map_cow,
                     _os_error, _populate, _preallocate, _pread_into, _pwrite_all,
                     _unlink, _write_all)
from .format import (BAND_BYTES, _KINDS, _LIBVER, _attr_str, _band_crcs,  # noqa: E402,F401
                     _band_rows, _contiguous_dataset, _fixed, _fmt_bytes, _h5py,
                     _kinds_of, _n_kinds, _now_iso)
from .keys import _match_series, entry_key, pack_inputs, series_fingerprints  # noqa: E402,F401
from .lock import _PENDING, _PENDING_LOCK, _join_pending, _KeyLock  # noqa: E402,F401
from .partial import _journal_line, _parse_journal, _Partial, _plan_from  # noqa: E402,F401

__all__ = ["GramStore", "GramEntry", "GramArray", "CacheWarning", "CorruptEntryError",
           "as_store", "default_cache_dir", "register", "STORE_FORMAT", "MAP_MIN_BYTES"]
