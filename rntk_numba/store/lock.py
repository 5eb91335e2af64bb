"""Locking: the per-key writer lock and the registry of background completions.

Owns ``_KeyLock`` (``fcntl.flock`` on ``<key>.lock``, with an ``O_EXCL`` fallback) and
``_PENDING``, the entries this process is completing in background threads
(``GramStore(background=True)``), which readers, ``os.fork()`` and ``GramStore.wait``
join first. May import: the standard library, h5py (for the order of the at-fork
handlers, below) and :mod:`.fileio`.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
from pathlib import Path

from .fileio import _unlink

try:  # POSIX advisory locks; see _KeyLock for the fallback
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

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
    # h5py registers a before-fork handler that takes its global lock, and a background
    # completion needs that lock to finish. Python runs before-fork handlers in the
    # REVERSE order of registration, so ours (which waits for the completions) must be
    # registered after h5py's: importing h5py first guarantees it, whichever of the two
    # the program imported first (otherwise a fork during a completion deadlocks).
    import h5py  # noqa: F401

    os.register_at_fork(before=_join_pending)


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
