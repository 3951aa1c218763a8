"""Small filesystem helpers shared by the stores: atomic replacement of metadata files."""

from __future__ import annotations

import _thread
import os
import stat

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future, ThreadPoolExecutor
    from typing import Any, BinaryIO, TypeVar

    _T = TypeVar("_T")


def atomic_write(path: str, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    Temporary file in the same directory, fdatasync (skipped for volatile files), rename — what Go's
    ioutils.AtomicWriteFile does, so a crash leaves either version intact.
    """
    tmp = write_temp(path, data, mode, sync)
    try:
        os.rename(tmp, path)
    except BaseException:
        unlink_if_there(tmp)
        raise


def write_temp(path: str, data: bytes, mode: int = 0o600, sync: bool = True) -> str:
    """``data`` in a new file named ``path`` and a random suffix, fdatasync'd unless ``sync`` is
    False; its name (nothing is left behind when this raises)."""
    fd, tmp = create_temp(path)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, mode)
            if sync:
                os.fdatasync(fd)  # what Go's AtomicFileWriter calls: the data and the size, not the times
        finally:
            os.close(fd)
    except BaseException:
        unlink_if_there(tmp)
        raise
    return tmp


_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def unlink_if_there(path: str) -> None:
    """Remove the file ``path`` unless it is gone already (a failed write's temporary file)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unique(prefix: str, create: Callable[[str], _T]) -> tuple[_T, str]:
    """``create(prefix + random hex)`` until the name is new (tempfile's loop; tempfile itself
    costs ~7 ms of import in a fresh process)."""
    while True:
        name = prefix + os.urandom(6).hex()
        try:
            return create(name), name
        except FileExistsError:
            continue


def create_temp(path: str) -> tuple[int, str]:
    """(fd, name) of a new 0600 file beside ``path``, named after it with a dot before and a
    random suffix (tempfile.mkstemp's contract)."""
    directory, base = os.path.split(path)
    return _unique(os.path.join(directory or ".", "." + base), lambda p: os.open(p, _TEMP_FLAGS, 0o600))


def make_temp_dir(parent: str) -> str:
    """A new, empty 0700 directory with a random name in ``parent`` (tempfile.mkdtemp's contract)."""
    return _unique(os.path.join(parent, ""), lambda p: os.mkdir(p, 0o700))[1]


def anonymous_file(directory: str) -> BinaryIO:
    """A new read-write file in ``directory`` that has no name, so nothing is left behind when
    it is closed or the process dies (tempfile.TemporaryFile's contract, without its import):
    O_TMPFILE, else a file unlinked as soon as it is made."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as e:
        import errno  # (not loaded at start-up)

        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        fd, name = create_temp(os.path.join(directory, "tmp"))
        os.unlink(name)
    return open(fd, "w+b")


def move_file(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``; across mounts (the overlay driver's home is a mount of its
    own), copy it (with its permission bits) to ``dst`` + ".tmp", rename that and remove
    ``src`` (shutil.move without shutil's ~5 ms import)."""
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        import errno

        if e.errno != errno.EXDEV:
            raise
    tmp = dst + ".tmp"
    with open(src, "rb") as fi, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                             stat.S_IMODE(os.fstat(fi.fileno()).st_mode)), "wb") as fo:
        try:
            while os.copy_file_range(fi.fileno(), fo.fileno(), 1 << 30):
                pass
        except OSError:  # (not between these file systems, or not on this kernel)
            fi.seek(0)
            fo.seek(0)
            fo.truncate()
            while piece := fi.read(1 << 20):
                fo.write(piece)
    os.rename(tmp, dst)
    os.unlink(src)


def read_optional(path: str) -> bytes:
    """File contents, or empty bytes when it does not exist (Go treats both alike)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# remove_tree: helper threads, started once the tree proves big enough to be worth them.
_REMOVE_THREADS = 4
_REMOVE_THREADS_AFTER = 64  # entries


def _c_removetree() -> Any:
    """The ``_removetree`` extension, or None (see :mod:`containers_storage.native`).  Loaded
    once a tree is big enough to use it, so that deleting a small layer does not load it."""
    global _removetree, _removetree_looked_up
    if not _removetree_looked_up:
        from .native import load

        _removetree_looked_up = True
        _removetree = load("containers_storage._removetree")
    return _removetree


_removetree: Any = None
_removetree_looked_up = False


class _Dir:
    """A directory being removed: its fd stays open until every subdirectory below it is gone."""

    __slots__ = ("fd", "name", "parent", "pending")

    def __init__(self, parent: _Dir | None, name: str) -> None:
        self.parent = parent
        self.name = name
        self.fd = -1
        self.pending = 1  # its own scan, plus one per subdirectory still to remove


class _TreeRemover:
    """``os.RemoveAll`` for big trees: unlinks in several threads (the syscalls release the GIL, so
    a cold-cache delete keeps several inode reads in flight and both cores busy).

    Every name is resolved relative to its parent's directory fd without following symlinks, so
    a symlink inside the tree is removed, never followed.  Directories are removed bottom-up as
    soon as their last subdirectory is gone, which bounds the open fds to the directories on the
    paths being worked on.  A directory we may not write or read (a rootless layer's 0555 dirs)
    is made accessible to us (u+rwx) when the kernel refuses, as Go's EnsureRemoveAll does.
    """

    def __init__(self, top_parent_fd: int, top_name: str) -> None:
        # Bare _thread locks, never threading: importing threading (functools, collections, ...)
        # costs ~1.5 ms, 3% of deleting a 6,800-entry layer on a tmpfs.
        self.lock = _thread.allocate_lock()
        self.waiters: list[_thread.LockType] = []  # helpers asleep until work (or the end) comes
        self.stack: list[_Dir] = []
        self.seen = 0
        self.error: BaseException | None = None
        self.done = False
        self.threads: list[_thread.LockType] = []  # each held by its helper until it returns
        self.open_fds: set[int] = set()
        self.top_parent_fd = top_parent_fd
        self.top = _Dir(None, top_name)

    # -- per directory (no lock held) --------------------------------------------------------
    def _open(self, d: _Dir) -> None:
        pfd = d.parent.fd if d.parent is not None else self.top_parent_fd
        try:
            fd = os.open(d.name, _O_DIR, dir_fd=pfd)
        except PermissionError:
            os.chmod(d.name, 0o700, dir_fd=pfd, follow_symlinks=False)
            fd = os.open(d.name, _O_DIR, dir_fd=pfd)
        with self.lock:
            d.fd = fd
            self.open_fds.add(fd)

    def _scan(self, d: _Dir) -> list[_Dir]:
        """Unlink everything but subdirectories; return those."""
        if self.threads:
            # In C, without the GIL: in this loop the GIL changed hands around every unlink, and
            # the threads spent more time queueing for it than the kernel spent unlinking.
            fast = _c_removetree()
            got = fast.unlink_entries(d.fd) if fast is not None else None
            if got is not None:
                names, count = got
                self.seen += count
                return [_Dir(d, name) for name in names]
            # None: an error stopped it (e.g. a directory we may not write); the loop below
            # reads the directory again from its start and deals with it.
        subdirs: list[_Dir] = []
        fd = d.fd
        unlink = os.unlink
        with os.scandir(fd) as it:
            entries = list(it)
        made_writable = False
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(_Dir(d, name))
                    continue
            except FileNotFoundError:
                continue
            try:
                unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:  # replaced by a directory since the scan
                subdirs.append(_Dir(d, name))
            except PermissionError:
                if made_writable:
                    raise
                os.fchmod(fd, 0o700)
                made_writable = True
                unlink(name, dir_fd=fd)
        self.seen += len(entries)  # approximate across threads; only decides when to fan out
        return subdirs

    def _finish(self, d: _Dir | None) -> None:
        """One of ``d``'s jobs ended; remove it (and then maybe its parents) once none is left."""
        while d is not None:
            with self.lock:
                d.pending -= 1
                if d.pending:
                    return
                self.open_fds.discard(d.fd)
            os.close(d.fd)
            d.fd = -1
            pfd = d.parent.fd if d.parent is not None else self.top_parent_fd
            try:
                os.rmdir(d.name, dir_fd=pfd)
            except FileNotFoundError:
                pass
            except PermissionError:
                if d.parent is None:
                    raise
                os.fchmod(pfd, 0o700)
                os.rmdir(d.name, dir_fd=pfd)
            if d.parent is None:
                with self.lock:
                    self.done = True
                    self._notify()
                return
            d = d.parent

    def _process(self, d: _Dir) -> None:
        try:
            self._open(d)
        except FileNotFoundError:
            if d.parent is None:
                raise
            self._finish(d.parent)  # removed meanwhile (by _in_c, or by another remover)
            return
        subdirs = self._scan(d)
        if subdirs:
            with self.lock:
                d.pending += len(subdirs)
                self.stack.extend(subdirs)
                self._notify(len(subdirs))
            if not self.threads and self.seen >= _REMOVE_THREADS_AFTER and not self._in_c():
                self._start_helpers()
        self._finish(d)

    def _in_c(self) -> bool:
        """Once the tree proves big (no helpers yet): every queued subtree removed in C, in
        threads of its own, with the GIL given up once rather than once per directory (the
        benchmark's rootfs on a tmpfs, medians of 11: 44.8 -> 38.4 ms; 2, 4 or 8 threads alike).
        False when it cannot: the extension is missing, or an error stopped it (a directory we
        may not write, a mount point), and then the Python loop goes on with what is left and
        reports what fails."""
        fast = _c_removetree()
        if fast is None:
            return False
        todo, self.stack = self.stack, []  # (no helpers: no other thread uses it)
        parents = [d.parent for d in todo if d.parent is not None]  # (all of them: subdirectories)
        if fast.remove_trees([(p.fd, d.name) for p, d in zip(parents, todo, strict=True)], _REMOVE_THREADS):
            self.stack = todo
            return False
        for parent in parents:
            self._finish(parent)
        return True

    # -- the work loop ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.stack and not self.done and self.error is None:
                    # Only helpers leave the stack empty with work still out (alone, we finish it).
                    self._wait()
                if self.done or self.error is not None:
                    return
                d = self.stack.pop()
            try:
                self._process(d)
            except BaseException as e:
                with self.lock:
                    if self.error is None:
                        self.error = e
                    self._notify()
                return

    def _wait(self) -> None:
        """Sleep until ``_notify`` (threading.Condition.wait's way); called with ``lock`` held."""
        waiter = _thread.allocate_lock()
        waiter.acquire()
        self.waiters.append(waiter)
        self.lock.release()
        try:
            waiter.acquire()
        finally:
            self.lock.acquire()

    def _notify(self, n: int | None = None) -> None:
        """Wake ``n`` waiting helpers (all of them without ``n``); called with ``lock`` held."""
        wake = self.waiters[:] if n is None else self.waiters[:n]
        del self.waiters[:len(wake)]
        for waiter in wake:
            waiter.release()

    def _start_helpers(self) -> None:
        from . import lightthread

        for _ in range(_REMOVE_THREADS - 1):
            self.threads.append(lightthread.start(self._work))

    def run(self) -> None:
        try:
            self._process(self.top)
            self._work()
        except BaseException as e:
            with self.lock:
                if self.error is None:
                    self.error = e
                self._notify()
        for running in self.threads:
            running.acquire()  # the helper has returned
        if self.error is not None:
            for fd in self.open_fds:  # the directories an error left unfinished
                os.close(fd)
            self.open_fds.clear()
            raise self.error


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything below it, never following symlinks (Go's RemoveAll).

    A missing ``path`` is not an error; a non-directory is simply unlinked.  Mount points below
    ``path`` make it fail with EBUSY, as ``rmdir`` does.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    pfd = os.open(parent or "/", _O_DIR)
    try:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=pfd)
            return
        _TreeRemover(pfd, name).run()
    finally:
        os.close(pfd)


def rmtree(path: str, ignore_errors: bool = False) -> None:
    """``remove_tree``, optionally ignoring failures (what the stores did with shutil.rmtree,
    whose import pulls bz2, lzma and fnmatch into every CLI call)."""
    try:
        remove_tree(path)
    except OSError:
        if not ignore_errors:
            raise


def mkdir_all(path: str, mode: int = 0o700) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def copy_tree(src: str, dst: str) -> None:
    """Copy a layer tree exactly: contents (reflinked where the filesystem can), hardlinks,
    ownership, modes, xattrs, device nodes and times — what Go's vfs driver does for a child.

    ``dst`` must exist; its own metadata is set from ``src``.
    """
    import stat as st

    links: dict[tuple[int, int], str] = {}

    def copy_meta(spath: str, dpath: str, s: os.stat_result, is_link: bool) -> None:
        # chown before chmod so setuid/setgid bits survive; never chmod through a symlink.
        os.lchown(dpath, s.st_uid, s.st_gid)
        for name in _listxattr(spath):
            try:
                value = os.getxattr(spath, name, follow_symlinks=False)
                os.setxattr(dpath, name, value, follow_symlinks=False)
            except OSError:
                pass
        if not is_link:
            os.chmod(dpath, st.S_IMODE(s.st_mode))

    reflink = [True]  # FICLONE until the filesystem says it cannot

    def walk(sdir: str, ddir: str) -> None:
        with os.scandir(sdir) as it:
            entries = [(e, e.stat(follow_symlinks=False)) for e in it]
        # Everything but subdirectories first, through a directory fd, which is closed before
        # descending: open fds do not grow with the depth of the tree.
        sdir_fd = os.open(sdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for entry, s in entries:
                if not st.S_ISDIR(s.st_mode):
                    copy_entry(entry, s, sdir_fd, ddir)
        finally:
            os.close(sdir_fd)
        for entry, s in entries:
            if st.S_ISDIR(s.st_mode):
                dpath = os.path.join(ddir, entry.name)
                os.mkdir(dpath, 0o700)
                walk(entry.path, dpath)
                dirs.append((entry.path, dpath, s))

    def copy_entry(entry: os.DirEntry[str], s: os.stat_result, sdir_fd: int, ddir: str) -> None:
        spath = entry.path
        dpath = os.path.join(ddir, entry.name)
        mode = s.st_mode
        key = (s.st_dev, s.st_ino)
        if s.st_nlink > 1 and key in links:
            if st.S_ISREG(mode):
                pending_links.append((links[key], dpath))
            else:
                os.link(links[key], dpath)
            return
        if st.S_ISREG(mode):
            # Contents and metadata through the open fds, in a pool of threads: the syscalls
            # release the GIL, and a cold-cache copy keeps several reads in flight.
            if s.st_nlink > 1:
                links[key] = dpath  # later links to it wait until every copy is done
            if not pools:  # made on the first file: an empty parent needs no threads at all
                from concurrent.futures import ThreadPoolExecutor

                pools.append(ThreadPoolExecutor(_COPY_THREADS, thread_name_prefix="copy-tree"))
            copies.append(pools[0].submit(_copy_file, spath, dpath, s, reflink))
            return
        else:
            if st.S_ISLNK(mode):
                os.symlink(os.readlink(spath), dpath)
            elif st.S_ISCHR(mode) or st.S_ISBLK(mode) or st.S_ISFIFO(mode):
                os.mknod(dpath, mode, s.st_rdev)
            else:
                return  # sockets are not layer content
            copy_meta(spath, dpath, s, st.S_ISLNK(mode))
            os.utime(dpath, ns=(s.st_atime_ns, s.st_mtime_ns), follow_symlinks=False)
        if s.st_nlink > 1:
            links[key] = dpath

    pools: list[ThreadPoolExecutor] = []
    copies: list[Future[None]] = []
    pending_links: list[tuple[str, str]] = []
    dirs: list[tuple[str, str, os.stat_result]] = []  # children before their parents
    top = os.lstat(src)
    try:
        walk(src, dst)
    finally:
        # Let the copies already queued finish (or fail) before anything else happens.
        for f in copies:
            f.exception()
        if pools:
            pools[0].shutdown()
    for f in copies:
        f.result()  # the first failure, if any
    for target, dpath in pending_links:
        os.link(target, dpath)
    # Directory metadata last (a read-only directory must not stop its children from being
    # copied into it), times after modes.
    for spath, dpath, s in dirs:
        copy_meta(spath, dpath, s, False)
        os.utime(dpath, ns=(s.st_atime_ns, s.st_mtime_ns), follow_symlinks=False)
    copy_meta(src, dst, top, False)
    os.utime(dst, ns=(top.st_atime_ns, top.st_mtime_ns))


def _listxattr(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


_FICLONE = 0x40049409


_COPY_THREADS = 4


def _copy_file(src: str, dst: str, s: os.stat_result, reflink: list[bool]) -> None:
    """Copy a regular file with its owner, xattrs, mode and times, all through its fds."""
    import fcntl

    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            cloned = False
            if reflink[0] and s.st_size:
                try:
                    fcntl.ioctl(dfd, _FICLONE, sfd)
                    cloned = True
                except OSError:
                    reflink[0] = False  # not on this filesystem: do not ask again per file
            size = s.st_size
            copied = size if cloned else 0
            while copied < size:
                try:
                    n = os.copy_file_range(sfd, dfd, size - copied)
                except OSError:
                    n = os.sendfile(dfd, sfd, None, size - copied)
                if n == 0:
                    break
                copied += n
            # chown before chmod so setuid/setgid bits survive
            os.fchown(dfd, s.st_uid, s.st_gid)
            try:
                names = os.listxattr(sfd)
            except OSError:
                names = []
            for xname in names:
                try:
                    os.setxattr(dfd, xname, os.getxattr(sfd, xname))
                except OSError:
                    pass
            os.fchmod(dfd, stat.S_IMODE(s.st_mode))
            os.utime(dfd, ns=(s.st_atime_ns, s.st_mtime_ns))
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def directory_size(path: str) -> int:
    """Go's directory.Size: bytes of everything under ``path``, hard links counted once.

    Directories themselves count nothing; entries that vanish during the walk are skipped, a
    missing ``path`` is an error.
    """
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    seen = {st.st_ino}
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except FileNotFoundError:
            continue
        with it:
            for entry in it:
                try:
                    est = entry.stat(follow_symlinks=False)  # scandir's lstat: one call an entry
                except FileNotFoundError:
                    continue
                if est.st_ino in seen:
                    continue
                seen.add(est.st_ino)
                if stat.S_ISDIR(est.st_mode):
                    stack.append(entry.path)
                else:
                    total += est.st_size
    return total
