"""Re-own a layer's files from one ID mapping to another (Go's ChownPathByMaps).

When a layer's mappings differ from its parent's, the files it inherits still carry the host
IDs of the parent's mapping.  Each owner is mapped back into the container with the old mapping
and out to the host with the new one, so the container sees the same owners as before.

The walk is fd-relative and never follows a symlink: every directory is opened beneath the
layer root (``RESOLVE_IN_ROOT``, ``O_NOFOLLOW``), every entry is changed by name relative to its
directory's fd with ``AT_SYMLINK_NOFOLLOW``, and regular files through an fd of their own.  A
symlink in the tree is re-owned itself; its target, inside the layer or not, is never touched.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import TYPE_CHECKING
from ..errors import InvalidMappings, StorageError
from ..idtools import IDMap, to_container, to_host_overflow

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Future, ThreadPoolExecutor

_CAPABILITY = "security.capability"
_SETID = stat.S_ISUID | stat.S_ISGID
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_PATH_OPEN = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ChownError(StorageError):
    """The walk could not re-own an entry; the text is what Go's chown helper reports."""


def _go_error(path: str, op: str, e: OSError) -> ChownError:
    text = (e.strerror or str(e))
    text = text[:1].lower() + text[1:]
    return ChownError(f"error during chown: storage-chown-by-maps: {op} {path}: {text}: exit status 1")


class _Mapper:
    """Old host IDs -> container IDs -> new host IDs, for one pair at a time."""

    def __init__(self, old_uid: Sequence[IDMap], old_gid: Sequence[IDMap],
                 new_uid: Sequence[IDMap], new_gid: Sequence[IDMap]) -> None:
        self.old = (list(old_uid), list(old_gid)) if (old_uid or old_gid) else None
        self.new = (list(new_uid), list(new_gid)) if (new_uid or new_gid) else None

    def map(self, uid: int, gid: int, path: str) -> tuple[int, int]:
        if self.old is not None:
            try:
                cuid, cgid = to_container(uid, self.old[0]), to_container(gid, self.old[1])
            except InvalidMappings as e:
                # Go lets 0:0 through unmapped: a parent layer that should have had mapped
                # owners but did not must not stop its children from being created.
                if uid != 0 or gid != 0:
                    raise ChownError(
                        f"error during chown: mapping host ID pair idtools.IDPair{{UID:{uid}, GID:{gid}}} "
                        f'for "{path}" to container: {e}: exit status 1') from None
                cuid, cgid = uid, gid
            uid, gid = cuid, cgid
        if self.new is not None:
            uid, gid = to_host_overflow(uid, gid, self.new[0], self.new[1])
        return uid, gid


# Files re-owned at once when the walk runs in parallel: overlay copies each one up (its data
# too), which is I/O the kernel does without the GIL.  Bounded, since each holds a dup'ed fd.
_THREADS = 8
_IN_FLIGHT = 64


class _Files:
    """Regular files to re-own, inline or in a pool of threads (each with its own dir fd)."""

    def __init__(self, parallel: bool) -> None:
        self.pool: ThreadPoolExecutor | None = None
        self.futures: list[Future[None]] = []
        # Directories' times before the walk, to put back: two copy-ups in one directory at
        # once can leave it with a new mtime (each restores what it saw, maybe the other's).
        self.dir_times: list[tuple[str, int, int]] = []
        if parallel:
            import threading
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="chown")
            self.slots = threading.BoundedSemaphore(_IN_FLIGHT)

    def chown(self, dfd: int, name: str, path: str, st: os.stat_result, uid: int, gid: int) -> None:
        if self.pool is None:
            _chown_file(dfd, name, path, st, uid, gid)
            return
        self.slots.acquire()
        fd = os.dup(dfd)

        def work() -> None:
            try:
                _chown_file(fd, name, path, st, uid, gid)
            finally:
                os.close(fd)
                self.slots.release()

        self.futures.append(self.pool.submit(work))

    def note_dir(self, path: str, st: os.stat_result) -> None:
        if self.pool is not None:
            self.dir_times.append((path, st.st_atime_ns, st.st_mtime_ns))

    def restore_dir_times(self, root_fd: int) -> None:
        from ..archive.confine import open_beneath

        for path, atime, mtime in self.dir_times:
            try:
                fd = open_beneath(root_fd, path, _DIR_OPEN)
            except FileNotFoundError:
                continue
            try:
                if os.fstat(fd).st_mtime_ns != mtime:
                    os.utime(fd, ns=(atime, mtime))
            finally:
                os.close(fd)

    def finish(self) -> None:
        """Wait for every file; the first failure, if any, is raised."""
        if self.pool is None:
            return
        try:
            for f in self.futures:
                f.exception()
        finally:
            self.pool.shutdown()
        for f in self.futures:
            f.result()


def chown_by_maps(root: str, old_uid_map: Sequence[IDMap], old_gid_map: Sequence[IDMap],
                  new_uid_map: Sequence[IDMap], new_gid_map: Sequence[IDMap],
                  parallel: bool = False) -> None:
    """Re-own everything below ``root`` (not ``root`` itself, as Go) from the old to the new maps.

    Hard links stay hard links: when a file system breaks a link while re-owning (overlay
    copies the first name up and leaves the others on the lower layer), the later names are
    linked again to the first one.  ``parallel`` re-owns regular files in threads, worth it
    where that copies data (overlay).
    """
    from ..archive.confine import open_beneath

    mapper = _Mapper(old_uid_map, old_gid_map, new_uid_map, new_gid_map)
    if mapper.old is None and mapper.new is None:
        return
    root_fd = os.open(root, _DIR_OPEN)
    try:
        # (dev, ino) of a multiply linked file -> its first name (dir, name) and new owner.
        links: dict[tuple[int, int], tuple[str, str, int, int]] = {}
        later_links: list[tuple[str, str]] = []  # names to check once every file is done
        files = _Files(parallel)
        try:
            pending = [""]
            while pending:
                rel = pending.pop()
                if rel:
                    try:
                        dfd = open_beneath(root_fd, rel, _DIR_OPEN)
                    except FileNotFoundError:
                        continue  # gone while we walked, as Go's walk skips it
                else:
                    dfd = os.dup(root_fd)
                try:
                    with os.scandir(dfd) as it:
                        names = [e.name for e in it]
                    for name in names:
                        if _one(dfd, rel, name, mapper, links, later_links, files):
                            pending.append(f"{rel}/{name}" if rel else name)
                finally:
                    os.close(dfd)
        finally:
            files.finish()
        for rel, name in later_links:
            dfd = open_beneath(root_fd, rel, _DIR_OPEN) if rel else os.dup(root_fd)
            try:
                _relink(root_fd, dfd, rel, name, links)
            finally:
                os.close(dfd)
        files.restore_dir_times(root_fd)
    finally:
        os.close(root_fd)


def _one(dfd: int, rel: str, name: str, mapper: _Mapper,
         links: dict[tuple[int, int], tuple[str, str, int, int]], later_links: list[tuple[str, str]],
         files: _Files) -> bool:
    """Re-own one entry; True when it is a directory to descend into."""
    path = f"{rel}/{name}" if rel else name
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mode = st.st_mode
    is_dir = stat.S_ISDIR(mode)
    key = (st.st_dev, st.st_ino)
    if not is_dir and key in links:
        later_links.append((rel, name))
        return False
    uid, gid = mapper.map(st.st_uid, st.st_gid, path)
    if is_dir:
        files.note_dir(path, st)
    elif st.st_nlink > 1:
        links[key] = (rel, name, uid, gid)
    if (uid, gid) == (st.st_uid, st.st_gid):
        return is_dir
    if stat.S_ISREG(mode):
        files.chown(dfd, name, path, st, uid, gid)
        return False
    try:
        os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISLNK(mode) and mode & _SETID:
            # chown clears set-user/group-ID bits; put them back (never through a symlink).
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise _go_error(path, "lchown", e) from None
    return is_dir


def _chown_file(dfd: int, name: str, path: str, st: os.stat_result, uid: int, gid: int) -> None:
    """A regular file, through its own fd: its file capabilities and set-ID bits survive."""
    try:
        fd = os.open(name, _FILE_OPEN, dir_fd=dfd)
    except FileNotFoundError:
        return
    except OSError as e:
        raise _go_error(path, "open", e) from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
            return  # replaced under us: not the file we looked at
        try:
            cap: bytes | None = os.getxattr(fd, _CAPABILITY)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOVERFLOW):
                raise _go_error(path, "lgetxattr", e) from None
            cap = None
        try:
            os.fchown(fd, uid, gid)
            if st.st_mode & _SETID:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
            if cap is not None:
                os.setxattr(fd, _CAPABILITY, cap)
        except OSError as e:
            raise _go_error(path, "lchown", e) from None
    finally:
        os.close(fd)


def _relink(root_fd: int, dfd: int, rel: str, name: str,
            links: dict[tuple[int, int], tuple[str, str, int, int]]) -> None:
    """A later name of a multiply linked file: link it to the first name again if it was split.

    Still the same inode (vfs, or a kernel keeping links on copy-up) means it already has the
    new owner, and is left alone: no needless change to its directory's times.
    """
    from ..archive.confine import open_beneath

    path = f"{rel}/{name}" if rel else name
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    first = links.get((st.st_dev, st.st_ino))
    if first is None:
        return  # not a name of a file we re-owned (replaced meanwhile)
    first_rel, first_name, uid, gid = first
    if (first_rel, first_name) == (rel, name) or (st.st_uid, st.st_gid) == (uid, gid):
        return
    src_fd = open_beneath(root_fd, first_rel, _PATH_OPEN) if first_rel else os.dup(root_fd)
    try:
        dir_st = os.fstat(dfd)
        try:
            os.unlink(name, dir_fd=dfd)
            os.link(first_name, name, src_dir_fd=src_fd, dst_dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            raise _go_error(path, "link", e) from None
        # Linking again is bookkeeping, not a change to the directory: keep its times (Go's
        # relink leaves them moved, which then reads as modified content).
        os.utime(dfd, ns=(dir_st.st_atime_ns, dir_st.st_mtime_ns))
    finally:
        os.close(src_fd)
