"""Layer diffs out of directories: Go's ``ExportChanges`` and ``TarWithOptions`` (overlay included).

Headers come out of ``tarwrite`` exactly as Go's ``tar.Writer`` writes them and are filled the way
Go's ``prepareAddFile`` fills them (permission bits only in the mode, no user or group names,
mtime truncated to seconds, ``security.capability``/``security.ima``/``user.*`` xattrs as PAX
records, hard links by inode, host IDs mapped back into the container), so a diff exported here
from the same files is the same bytes as the Go tools' -- except whiteouts of deleted paths, which
carry the time of the export in both.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque

from .. import TYPE_CHECKING
from ..errors import InvalidMappings, StorageError
from ..idtools import IDMap, to_container
from ..lazylog import LazyLogger
from .changes import Change, ChangeKind, lexical_walk, opaque_hides_lower, opaque_xattr, xattrs
from .confine import open_beneath, open_root
from .sink import BlockSink
from .tarwrite import (
    END_OF_ARCHIVE,
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_LINK,
    TYPE_REG,
    TYPE_SYMLINK,
    HeaderError,
    TarHeader,
    encode_header,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import IO, TypeVar

    _T = TypeVar("_T")

__all__ = ["ExportError", "export_changes", "export_overlay_diff", "export_tree"]

log = LazyLogger(__name__)

WHITEOUT_PREFIX = b".wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"

_OPEN_CONTENT = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
_ZEROS = bytes(512)
_SECURITY_XATTRS = ("security.capability", "security.ima")


class ExportError(StorageError):
    """A file changed or vanished while its content was being written into the diff."""

    text = "exporting layer diff"


def _legacy_major(dev: int) -> int:
    return (dev >> 8) & 0xFFF


def _legacy_minor(dev: int) -> int:
    return (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def _xattr_records(path: bytes) -> dict[bytes, bytes]:
    """``security.capability``, ``security.ima`` and ``user.*`` (not ``user.overlay.*``) as PAX."""
    records: dict[bytes, bytes] = {}
    for key, value in xattrs(path, _exported_xattr):
        if value is None:
            log.error("archive: Skipping xattr for file %s since value is too big: %s",
                      os.fsdecode(path), key)
            continue
        records[b"SCHILY.xattr." + os.fsencode(key)] = value
    return records


def _exported_xattr(key: str) -> bool:
    return (key.startswith("user.") and not key.startswith("user.overlay.")) or key in _SECURITY_XATTRS


class _Writer:
    """Go's ``tarWriter``: hard-link memory, ID mapping and (for overlay) whiteout conversion."""

    def __init__(self, out: IO[bytes], uid_map: Sequence[IDMap] | None, gid_map: Sequence[IDMap] | None,
                 lower_fds: Sequence[int] | None = None) -> None:
        self.sink = BlockSink(out)
        self.uid_map = uid_map or None
        self.gid_map = gid_map or None
        self.seen: dict[int, bytes] = {}
        self.lower_fds = lower_fds  # not None: convert overlay whiteouts (Go's overlayWhiteoutConverter)
        self.opaque_xattr = opaque_xattr() if lower_fds is not None else ""

    def prepare(self, path: bytes, name: bytes) -> tuple[TarHeader, TarHeader | None, os.stat_result] | None:
        """Go's ``prepareAddFile``: the header(s) for one path, nothing written yet; None skips it."""
        st = os.lstat(path)
        mode = st.st_mode
        link = b""
        if stat.S_ISREG(mode):
            typeflag = TYPE_REG
        elif stat.S_ISDIR(mode):
            typeflag = TYPE_DIR
            if not name.endswith(b"/"):
                name += b"/"
        elif stat.S_ISLNK(mode):
            typeflag = TYPE_SYMLINK
            link = os.readlink(path)
        elif stat.S_ISCHR(mode):
            typeflag = TYPE_CHAR
        elif stat.S_ISBLK(mode):
            typeflag = TYPE_BLOCK
        elif stat.S_ISFIFO(mode):
            typeflag = TYPE_FIFO
        elif stat.S_ISSOCK(mode):
            log.info("archive: skipping %r since it is a socket", os.fsdecode(path))
            return None
        else:
            raise ExportError.about(f"archive/tar: unknown file mode {mode:o}")
        hdr = TarHeader(name=name, typeflag=typeflag, mode=mode & 0o7777, uid=st.st_uid, gid=st.st_gid,
                        size=st.st_size if typeflag == TYPE_REG else 0,
                        # Go truncates to seconds before the writer would round.
                        mtime_ns=st.st_mtime_ns // 1_000_000_000 * 1_000_000_000, linkname=link)
        if mode & (stat.S_IFBLK | stat.S_IFCHR):  # Go's bit test, true for dirs and symlinks too
            hdr.devmajor, hdr.devminor = _legacy_major(st.st_rdev), _legacy_minor(st.st_rdev)
        hdr.pax_records = _xattr_records(path)
        if not stat.S_ISDIR(mode) and st.st_nlink > 1 and st.st_ino in self.seen:
            hdr.typeflag = TYPE_LINK
            hdr.linkname = self.seen[st.st_ino]
            hdr.size = 0
        base = name.rstrip(b"/").rsplit(b"/", 1)[-1]
        if not base.startswith(WHITEOUT_PREFIX) and (self.uid_map or self.gid_map):
            hdr.uid = to_container(st.st_uid, self.uid_map)
            hdr.gid = to_container(st.st_gid, self.gid_map)
        extra = self._convert_whiteout(hdr, path, st) if self.lower_fds is not None else None
        return hdr, extra, st

    def _convert_whiteout(self, hdr: TarHeader, path: bytes, st: os.stat_result) -> TarHeader | None:
        """Overlay on disk -> AUFS in the tar: char 0/0 becomes ``.wh.<name>``, and an opaque
        directory gets a ``.wh..wh..opq`` entry when it really hides a lower directory."""
        assert self.lower_fds is not None
        if stat.S_ISCHR(st.st_mode) and hdr.devmajor == 0 and hdr.devminor == 0:
            cut = hdr.name.rfind(b"/") + 1
            hdr.name = hdr.name[:cut] + WHITEOUT_PREFIX + hdr.name[cut:]
            hdr.mode = 0
            hdr.typeflag = TYPE_REG
            hdr.size = 0
        if stat.S_ISDIR(st.st_mode):
            try:
                opaque = os.getxattr(path, self.opaque_xattr, follow_symlinks=False) == b"y"
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
                opaque = False
            if opaque:
                hdr.pax_records.pop(b"SCHILY.xattr." + self.opaque_xattr.encode(), None)
                rel = b"/" + hdr.name.rstrip(b"/")
                if self.lower_fds and opaque_hides_lower(self.lower_fds, rel, need_dir=True):
                    return TarHeader(name=hdr.name + WHITEOUT_OPAQUE, typeflag=TYPE_REG,
                                     mode=hdr.mode & 0o777, uid=hdr.uid, gid=hdr.gid,
                                     uname=hdr.uname, gname=hdr.gname)
        return None

    def add(self, root_fd: int, rel: bytes, hdr: TarHeader, extra: TarHeader | None,
            st: os.stat_result, fd: int = -1) -> None:
        """Go's ``addFile``: write the header(s) and the content; errors here abort the export.

        ``fd``, when not -1, is the file already opened by the read-ahead (the caller closes it).
        """
        orig_name = hdr.name
        if extra is not None:
            self.sink.write(encode_header(hdr))
            hdr = extra
        self.sink.write(encode_header(hdr))
        if hdr.typeflag == TYPE_REG and hdr.size > 0:
            self._content(root_fd, rel, hdr.size, fd)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 and st.st_ino not in self.seen:
            self.seen[st.st_ino] = orig_name

    def _content(self, root_fd: int, rel: bytes, size: int, given_fd: int) -> None:
        fd = given_fd
        if fd < 0:
            try:
                fd = open_beneath(root_fd, rel, _OPEN_CONTENT)
            except OSError as e:
                raise ExportError.about(f"open {os.fsdecode(rel)}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                raise ExportError.about(f"{os.fsdecode(rel)}: file changed while being exported")
            self.sink.copy_fd(fd, size, lambda: ExportError.about(
                f"{os.fsdecode(rel)}: file shrank while being exported"))
            self.sink.write(_ZEROS[:-size % 512])
        finally:
            if given_fd < 0:
                os.close(fd)

    def add_path(self, root: bytes, root_fd: int, rel: bytes, name: bytes, fd: int = -1) -> None:
        """Prepare and add one path; preparation errors skip it, as Go logs and goes on."""
        try:
            prepared = self.prepare(root + b"/" + rel, name)
        except (OSError, InvalidMappings, ExportError) as e:
            log.debug("Can't add file %s to tar: %s", os.fsdecode(root + b"/" + rel), e)
            return
        if prepared is not None:
            self.add(root_fd, rel, *prepared, fd=fd)

    def whiteout(self, path: bytes) -> None:
        """The AUFS whiteout for a deleted path: an empty regular file stamped with the time now."""
        cut = path.rfind(b"/") + 1
        name = (path[:cut] + WHITEOUT_PREFIX + path[cut:]).lstrip(b"/")
        try:
            self.sink.write(encode_header(TarHeader(name=name, typeflag=TYPE_REG, mtime_ns=time.time_ns())))
        except HeaderError as e:
            log.debug("Can't write whiteout header: %s", e)

    def close(self) -> int:
        self.sink.write(END_OF_ARCHIVE)
        self.sink.close()
        return self.sink.written




def _read_ahead(root_fd: int, items: Iterable[_T], stat_of: Callable[[_T], os.stat_result | None],
                rel_of: Callable[[_T], bytes], window: int = 32) -> Iterator[tuple[_T, int]]:
    """``(item, fd)`` in order, regular files opened ``window`` items early with readahead asked.

    With a cold page cache the export would otherwise wait on the disk one file at a time; here
    the reads of the next files are in flight while this one is written.  Only what lstat says
    is a non-empty regular file is opened (opening a device node can have effects); others, or
    files that fail to open, come with fd -1 and are handled as without read-ahead.  Every fd
    is closed here, whatever the consumer does.
    """
    pending: deque[tuple[_T, int]] = deque()
    it = iter(items)
    try:
        for item in it:
            fd = -1
            st = stat_of(item)
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0:
                try:
                    fd = open_beneath(root_fd, rel_of(item), _OPEN_CONTENT)
                    os.posix_fadvise(fd, 0, st.st_size, os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass
            pending.append((item, fd))
            if len(pending) > window:
                yield from _hand_out(pending)
        while pending:
            yield from _hand_out(pending)
    finally:
        for _item, fd in pending:
            if fd >= 0:
                os.close(fd)


def _hand_out(pending: deque[tuple[_T, int]]) -> Iterator[tuple[_T, int]]:
    """The oldest pending ``(item, fd)``; its fd is closed once the consumer is done with it."""
    item, fd = pending.popleft()
    try:
        yield item, fd
    finally:
        if fd >= 0:
            os.close(fd)


def export_changes(root: str, changes: Iterable[Change], out: IO[bytes],
                   uid_map: Sequence[IDMap] | None = None, gid_map: Sequence[IDMap] | None = None) -> int:
    """Write a tar of ``changes`` (from ``changes_dirs``) under ``root`` to ``out``; Go's ``ExportChanges``.

    Entries go out sorted by path; a Delete becomes a ``.wh.<name>`` whiteout; a path that cannot
    be read is left out (Go logs it), while a file that changes size mid-copy fails the export.
    ``uid_map``/``gid_map`` are the layer's mappings; owners are written as container IDs.
    Returns the number of bytes written.
    """
    root_b = os.fsencode(root)
    root_fd = open_root(root_b)
    try:
        tw = _Writer(out, uid_map, gid_map)
        items = ((os.fsencode(c.path), c.kind == ChangeKind.DELETE)
                 for c in sorted(changes, key=lambda c: os.fsencode(c.path)))

        def stat_later(item: tuple[bytes, bool]) -> os.stat_result | None:
            path, deleted = item
            if deleted:
                return None
            try:
                return os.lstat(root_b + path)
            except OSError:
                return None

        for (path, deleted), fd in _read_ahead(root_fd, items, stat_later, lambda i: i[0].lstrip(b"/")):
            if deleted:
                tw.whiteout(path)
            else:
                rel = path.lstrip(b"/")
                tw.add_path(root_b, root_fd, rel, rel, fd)
        return tw.close()
    finally:
        os.close(root_fd)


def _export_walk(root: str, out: IO[bytes], uid_map: Sequence[IDMap] | None,
                 gid_map: Sequence[IDMap] | None, lower_fds: Sequence[int] | None) -> int:
    root_b = os.fsencode(root)
    root_fd = open_root(root_b)
    try:
        tw = _Writer(out, uid_map, gid_map, lower_fds)

        def skipped(e: OSError) -> None:
            log.error("Tar: Can't stat file %s to tar: %s", root, e)

        walk = lexical_walk(root_b, skipped)
        for (rel, _st), fd in _read_ahead(root_fd, walk, lambda item: item[1], lambda item: item[0][1:]):
            tw.add_path(root_b, root_fd, rel[1:], rel[1:], fd)
        return tw.close()
    finally:
        os.close(root_fd)


def export_tree(root: str, out: IO[bytes], uid_map: Sequence[IDMap] | None = None,
                gid_map: Sequence[IDMap] | None = None) -> int:
    """The whole tree under ``root`` as a tar, as Go's ``TarWithOptions`` (naive diff of a base layer).

    Entries come in a lexical depth-first walk, directories named with a trailing slash.
    """
    return _export_walk(root, out, uid_map, gid_map, None)


def export_overlay_diff(diff: str, lowers: Sequence[str], out: IO[bytes],
                        uid_map: Sequence[IDMap] | None = None,
                        gid_map: Sequence[IDMap] | None = None) -> int:
    """An overlay layer's native diff: its ``diff`` directory with whiteouts converted for the tar.

    Char 0/0 devices become ``.wh.<name>`` files; an opaque directory is followed by a
    ``.wh..wh..opq`` entry when one of ``lowers`` (nearest first) has a directory there that it
    hides, as Go's overlay whiteout converter decides.
    """
    lower_fds: list[int] = []
    try:
        for lower in lowers:
            lower_fds.append(open_root(lower))
        return _export_walk(diff, out, uid_map, gid_map, lower_fds)
    finally:
        for fd in lower_fds:
            os.close(fd)
