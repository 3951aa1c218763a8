"""Cross-process locks that exclude the Go tools: POSIX record locks plus a "last write" token.

Go's pkg/lockfile takes ``fcntl(F_SETLKW)`` write or read locks over the whole ``*.lock`` file and,
before a writer saves JSON, stores a 64-byte token at offset 0 (LE UnixNano, LE counter, LE pid,
random bytes).  Readers compare the token with the one they last saw to decide whether to reload.

POSIX locks belong to the process, and closing *any* fd of the file drops them, so each lock path
has exactly one ``LockFile`` (and one fd) per process; threads coordinate through an in-process
reader/writer lock layered on top.
"""

from __future__ import annotations

import _thread
import fcntl
import os
import time

from . import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

LAST_WRITE_SIZE = 64

_registry: dict[str, LockFile] = {}
_registry_lock = _thread.allocate_lock()
_counter = 0  # tokens made by this process (under _registry_lock; no itertools at start-up)


def new_last_write() -> bytes:
    """A fresh token in Go's layout: time, counter, pid, then random bytes."""
    global _counter
    with _registry_lock:
        _counter += 1
        count = _counter
    head = ((time.time_ns() & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
            + (count & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
            + (os.getpid() & 0xFFFFFFFF).to_bytes(4, "little"))
    return head + os.urandom(LAST_WRITE_SIZE - len(head))


class LockFile:
    """One lock file, shared by every user in this process (get it with ``get_lock_file``)."""

    def __init__(self, path: str, read_only: bool = False, *, create: bool = True) -> None:
        self.path = path
        self.read_only = read_only
        self._fd = self._open(create)
        # Thread state is guarded by a bare lock; the Condition (and the threading module) is
        # only made when a thread actually has to wait, which a CLI call never does.
        self._mutex = _thread.allocate_lock()
        self._cond: threading.Condition | None = None
        self._readers = 0
        self._writer: int | None = None  # thread ident holding the write lock
        self._write_depth = 0

    def _wait(self) -> None:
        """Sleep until another thread releases; called with ``_mutex`` held."""
        if self._cond is None:
            import threading

            self._cond = threading.Condition(self._mutex)
        self._cond.wait()

    def _wake(self) -> None:
        if self._cond is not None:
            self._cond.notify_all()

    def _open(self, create: bool) -> int:
        flags = os.O_CLOEXEC | (os.O_RDONLY if self.read_only else os.O_RDWR)
        if not create:
            return os.open(self.path, flags)
        flags |= os.O_CREAT
        try:
            return os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            return os.open(self.path, flags, 0o644)

    # -- acquiring -------------------------------------------------------------------------
    def lock(self) -> None:
        """Exclusive lock, against other processes and other threads."""
        if self.read_only:
            raise PermissionError(f"can't take write lock on read-only lock file {self.path}")
        me = _thread.get_ident()
        with self._mutex:
            if self._writer == me:  # re-entry by the same thread
                self._write_depth += 1
                return
            while self._writer is not None or self._readers:
                self._wait()
            self._writer = me
            self._write_depth = 1
        try:
            _fcntl_lock(self._fd, fcntl.F_WRLCK)
        except BaseException:
            with self._mutex:
                self._writer = None
                self._write_depth = 0
                self._wake()
            raise

    def rlock(self) -> None:
        """Shared lock; threads of this process share one process-wide read lock."""
        me = _thread.get_ident()
        with self._mutex:
            if self._writer == me:  # a writer may read what it holds
                self._write_depth += 1
                return
            while self._writer is not None:
                self._wait()
            self._readers += 1
            first = self._readers == 1
            if first:
                try:
                    _fcntl_lock(self._fd, fcntl.F_RDLCK)
                except BaseException:
                    self._readers -= 1
                    raise

    def unlock(self) -> None:
        me = _thread.get_ident()
        with self._mutex:
            if self._writer == me:
                self._write_depth -= 1
                if self._write_depth == 0:
                    _fcntl_lock(self._fd, fcntl.F_UNLCK)
                    self._writer = None
                    self._wake()
                return
            if self._readers <= 0:
                raise RuntimeError(f"lock {self.path!r} has been unlocked too often")
            self._readers -= 1
            if self._readers == 0:
                _fcntl_lock(self._fd, fcntl.F_UNLCK)
                self._wake()

    def writing(self) -> _Held:
        return _Held(self, True)

    def reading(self) -> _Held:
        return _Held(self, False)

    @property
    def locked_for_writing(self) -> bool:
        return self._writer == _thread.get_ident()

    # -- last-write tokens -----------------------------------------------------------------
    def get_last_write(self) -> bytes:
        """The token currently on disk (empty for a lock file nobody has written)."""
        return os.pread(self._fd, LAST_WRITE_SIZE, 0)

    def record_write(self) -> bytes:
        """Store a new token; callers hold the write lock and do this *before* saving data."""
        if not self.locked_for_writing:
            raise RuntimeError(f"recording a write to {self.path!r} without holding its write lock")
        token = new_last_write()
        if os.pwrite(self._fd, token, 0) != len(token):
            raise OSError(f"short write to lock file {self.path!r}")
        return token

    def modified_since(self, previous: bytes) -> tuple[bytes, bool]:
        current = self.get_last_write()
        return current, current != previous

    def touched_since(self, when_ns: int) -> bool:
        """The mtime test Go 1.43's graph lock uses."""
        try:
            return os.fstat(self._fd).st_mtime_ns > when_ns
        except OSError:
            return True


class _Held:
    """``with lock.writing():`` / ``with lock.reading():`` (a class: no contextlib at start-up)."""

    __slots__ = ("_lf", "_write")

    def __init__(self, lf: LockFile, write: bool) -> None:
        self._lf = lf
        self._write = write

    def __enter__(self) -> LockFile:
        if self._write:
            self._lf.lock()
        else:
            self._lf.rlock()
        return self._lf

    def __exit__(self, *exc: object) -> None:
        self._lf.unlock()


def _fcntl_lock(fd: int, kind: int) -> None:
    # lockf maps LOCK_EX/LOCK_SH/LOCK_UN onto fcntl(F_SETLKW) over the whole file, which is
    # exactly the record lock Go takes; flock() would not exclude Go at all.
    op = {fcntl.F_WRLCK: fcntl.LOCK_EX, fcntl.F_RDLCK: fcntl.LOCK_SH, fcntl.F_UNLCK: fcntl.LOCK_UN}[kind]
    while True:
        try:
            fcntl.lockf(fd, op, 0, 0, os.SEEK_SET)
            return
        except InterruptedError:
            continue
        except OSError as e:
            # The kernel's deadlock detector can refuse a wait that would in fact resolve; Go
            # retries every failure after 10ms, so do we.
            import errno  # only here: the CLI's listings take locks and import little

            if e.errno != errno.EDEADLK:
                raise
            time.sleep(0.01)


def get_lock_file(path: str, read_only: bool = False, *, create: bool = True) -> LockFile:
    """The process-wide ``LockFile`` for ``path`` (one fd per path, as POSIX locks require).

    Without ``create`` a missing lock file is an error (FileNotFoundError): readers that must
    not change a store use that.
    """
    path = os.path.abspath(path)
    with _registry_lock:
        lf = _registry.get(path)
        if lf is None:
            lf = LockFile(path, read_only, create=create)
            _registry[path] = lf
        elif lf.read_only and not read_only:
            raise PermissionError(f"lock file {path!r} was opened read-only in this process")
        return lf
