"""Mapping and low-level I/O: the system calls the store makes on entry files.

Owns positioned reads and writes that finish or raise (``pwrite`` / ``pread`` loops),
preallocation (``posix_fallocate``, so a full disk is an ``OSError`` before the first
tile and never a SIGBUS), copy-on-write mappings through libc ``mmap`` (with
``MADV_POPULATE_READ`` / ``_WRITE`` where the kernel has them), fsync of files and
directories, atomic text writes, unlink that tolerates a missing file, and free disk
space. May import: the standard library and NumPy only.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import sys
import weakref
from pathlib import Path

import numpy as np

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


def _disk_free(path: Path):
    import shutil
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
