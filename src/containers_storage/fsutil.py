"""Small filesystem helpers shared by the stores: atomic replacement of metadata files."""

from __future__ import annotations

import os
import stat
import tempfile


def atomic_write(path: str, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    Temporary file in the same directory, fsync (skipped for volatile files), rename — what Go's
    ioutils.AtomicWriteFile does, so a crash leaves either version intact.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path), dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_optional(path: str) -> bytes:
    """File contents, or empty bytes when it does not exist (Go treats both alike)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def mkdir_all(path: str, mode: int = 0o700) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def copy_tree(src: str, dst: str) -> None:
    """Copy a layer tree exactly: contents (reflinked where the filesystem can), hardlinks,
    ownership, modes, xattrs, device nodes and times — what Go's vfs driver does for a child.

    ``dst`` must exist; its own metadata is set from ``src``.
    """
    import stat as st

    links: dict[tuple[int, int], str] = {}
    dir_times: list[tuple[str, int, int]] = []

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

    def walk(sdir: str, ddir: str) -> None:
        with os.scandir(sdir) as it:
            entries = list(it)
        for entry in entries:
            spath = entry.path
            dpath = os.path.join(ddir, entry.name)
            s = entry.stat(follow_symlinks=False)
            mode = s.st_mode
            if st.S_ISDIR(mode):
                os.mkdir(dpath, 0o700)
                walk(spath, dpath)
                copy_meta(spath, dpath, s, False)
                dir_times.append((dpath, s.st_atime_ns, s.st_mtime_ns))
                continue
            key = (s.st_dev, s.st_ino)
            if s.st_nlink > 1 and key in links:
                os.link(links[key], dpath)
                continue
            if st.S_ISREG(mode):
                _copy_file(spath, dpath)
            elif st.S_ISLNK(mode):
                os.symlink(os.readlink(spath), dpath)
            elif st.S_ISCHR(mode) or st.S_ISBLK(mode) or st.S_ISFIFO(mode):
                os.mknod(dpath, mode, s.st_rdev)
            else:
                continue  # sockets are not layer content
            copy_meta(spath, dpath, s, st.S_ISLNK(mode))
            os.utime(dpath, ns=(s.st_atime_ns, s.st_mtime_ns), follow_symlinks=False)
            if s.st_nlink > 1:
                links[key] = dpath

    top = os.lstat(src)
    walk(src, dst)
    copy_meta(src, dst, top, False)
    for path, atime, mtime in dir_times:
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    os.utime(dst, ns=(top.st_atime_ns, top.st_mtime_ns))


def _listxattr(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


_FICLONE = 0x40049409


def _copy_file(src: str, dst: str) -> None:
    import fcntl

    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.ioctl(dfd, _FICLONE, sfd)
                return
            except OSError:
                pass
            size = os.fstat(sfd).st_size
            copied = 0
            while copied < size:
                try:
                    n = os.copy_file_range(sfd, dfd, size - copied)
                except OSError:
                    n = os.sendfile(dfd, sfd, None, size - copied)
                if n == 0:
                    break
                copied += n
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def directory_size(path: str) -> int:
    """Go's directory.Size: bytes of everything under ``path``, hard links counted once.

    Directories themselves count nothing; entries that vanish during the walk are skipped, a
    missing ``path`` is an error.
    """
    os.lstat(path)
    seen: set[int] = set()
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            continue
        if st.st_ino in seen:
            continue
        seen.add(st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(current) as it:
                    stack.extend(e.path for e in it)
            except FileNotFoundError:
                continue
            continue
        total += st.st_size
    return total
