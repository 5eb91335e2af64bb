"""The entry file format: its version, row bands and their checksums, HDF5 helpers.

Owns what a complete or partial entry file looks like on disk (``STORE_FORMAT``, the
1 MiB row bands and their 64-bit checksums, the HDF5 1.8 file-format bounds,
fixed-length string attributes, contiguous datasets), the two exceptions of the store
(``CacheWarning``, ``CorruptEntryError``) and the small formatting helpers the other
rooms share. May import: ``rntk_numba._checksum`` and the standard library (h5py on
first use, through :func:`_h5py`); nothing else of the store.
"""

from __future__ import annotations

import time

import numpy as np

from .. import _checksum

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


def _now_iso(t=None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


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
