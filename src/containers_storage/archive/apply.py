"""Apply a layer tarball to a directory: one streaming pass, confined to the directory.

A reader thread reads the input, hashes it, decompresses it and hashes the result (all in C code
that releases the GIL) while the calling thread parses the tar, records tar-split entries and
writes files.  Runs of plain entries (the bulk of a root filesystem) go through the C loop in
``_fastapply`` when it was built: the same checks, system calls and tar-split lines as the
Python path below, which handles every other entry and every error.

Semantics follow Go's ``archive.UnpackLayer`` (the "plain" target used by vfs and naive diff)
and ``archive.Unpack`` with the overlay whiteout converter (the "overlay" target), as they
behave inside the chroot Go runs them in: ``..`` and absolute names stay inside the layer.
Every path is resolved beneath a directory fd (see ``confine``), so neither hostile names nor
symlinks planted by earlier entries reach anything outside ``dest``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from _queue import Empty, SimpleQueue

from .. import TYPE_CHECKING, lightthread
from ..errors import InvalidArchive, InvalidMappings, StorageError
from ..idtools import IDMap, to_host
from ..lazylog import LazyLogger
from . import tarread as t
from .accel import fastapply
from .compression import MAGIC_LEN, Compression, Decompressor, detect
from .confine import open_beneath, open_root
from .crc64 import crc64, crc64_call, crc64_zeros
from .gopath import go_clean
from .tarsplit import TarSplitWriter

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO, Literal, Protocol
else:
    Any = object
    Protocol = object

# The C loop, or None (the Python path then does it all); tests swap it for None or a proxy.
_fastapply: Any = fastapply

__all__ = ["ApplyOptions", "ApplyResult", "InsufficientIDs", "TarSplitSink", "apply_layer"]

log = LazyLogger(__name__)

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"
WHITEOUT_LINK_DIR = b".wh..wh.plnk"
OVERRIDE_XATTR = "user.containers.override_stat"
_IGNORED_XATTRS = frozenset((b"security.selinux",))

READ_SIZE = 1 << 20  # input read size
QUEUE_DEPTH = 8  # chunks in flight between the threads (each at most 4 MiB): bounds memory
# Chunks the tap (ApplyOptions.tap) runs behind the apply: its first call does the most work (a
# partial pull's TOC and tar-split are read there), and the applying thread keeps going on these
# meanwhile (memory: up to this many chunks more).  A whole zstd:chunked layer's first chunk
# reached the applying thread 0.096 s after the pull began with the tap called first, 0.058 s
# with this lag; the applying thread waited for data 0.030 s, then 0.010 s.
TAP_LAG = 16
_DIR_CACHE_MAX = 256
_MAX_TIME_NS = (1 << 63) - 1

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATHDIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Errors that say nothing about the archive: report them as they are.
_ENVIRONMENT_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM,
                                 errno.EMFILE, errno.ENFILE))


class InsufficientIDs(StorageError):
    """An owner in the layer has no ID in this user namespace: chown failed with EINVAL.

    Go's ``idtools.checkChownErr`` text, which names the host IDs asked for and the path as
    seen from the layer's root.  Typical for a rootless user whose ``/etc/subuid`` range is
    smaller than the IDs an image uses (or who has none); ``ignore_chown_errors`` lets such a
    layer in with those files owned by the namespace's root instead.
    """

    def __init__(self, uid: int, gid: int, path: str, op: str = "lchown",
                 message: str | None = None) -> None:
        self.uid, self.gid, self.path, self.op = uid, gid, path, op
        self.errno = errno.EINVAL
        super().__init__(message if message is not None else (
            f"potentially insufficient UIDs or GIDs available in user namespace (requested "
            f"{uid}:{gid} for {path}): Check /etc/subuid and /etc/subgid if configured locally "
            f'and run "podman system migrate": {op} {path}: invalid argument'))

    def wrapped(self, template: str) -> InsufficientIDs:
        """The same failure with Go's text around it (``template`` holds one ``{}``)."""
        return InsufficientIDs(self.uid, self.gid, self.path, self.op, template.format(self))


class TarSplitSink(Protocol):
    """What apply needs from ``tarsplit.TarSplitWriter``."""

    def add_segment(self, raw: bytes | bytearray | memoryview) -> None: ...
    def add_file(self, name: bytes, size: int, crc: bytes | None) -> None: ...


class ApplyOptions:
    """How to apply: target form, ID mapping, and where tar-split entries go.

    Plain classes rather than dataclasses: importing dataclasses costs ~10 ms per CLI call.
    """

    def __init__(self, whiteouts: Literal["plain", "overlay", "aufs"] = "plain",
                 uid_map: list[IDMap] | None = None, gid_map: list[IDMap] | None = None,
                 ignore_chown_errors: bool = False, force_mask: int | None = None,
                 tar_split: TarSplitSink | None = None,
                 overlay_xattr_prefix: str = "trusted.overlay.",
                 reuse: dict[bytes, tuple[int, bool]] | None = None,
                 detect_compression: bool = True,
                 tap: Callable[[bytes], None] | None = None) -> None:
        self.whiteouts = whiteouts
        self.uid_map = uid_map
        self.gid_map = gid_map
        self.ignore_chown_errors = ignore_chown_errors
        self.force_mask = force_mask
        self.tar_split = tar_split
        # Go uses "user.overlay." when rootless; the overlay driver knows which one it mounts with.
        self.overlay_xattr_prefix = overlay_xattr_prefix
        # Partial pulls (archive/chunked): regular files whose content a file of another layer
        # already has, by tar name -> (an fd of that file, hard link it rather than clone it).
        # The stream still carries the content (it is hashed); it is just not written.  The
        # puller fills it while the stream is read; each fd is closed here once used.
        self.reuse = reuse
        # False when the input is known to be an uncompressed tar (a partial pull rebuilds one,
        # whose first header may happen to start like a compressed stream's magic).
        self.detect_compression = detect_compression
        # Called with each piece of the uncompressed tar, in order, in the reading thread (a
        # partial pull checks a whole zstd:chunked blob against its TOC and tar-split there),
        # then with b"" at its end, before the applying thread sees the end: what it raises
        # fails the apply.  The calls run up to TAP_LAG pieces behind the applying thread.
        self.tap = tap


class ApplyResult:
    """What layers.json records about an applied diff."""

    def __init__(self, compression: Compression, compressed_digest: str, compressed_size: int,
                 uncompressed_digest: str, uncompressed_size: int, uids: list[int] | None = None,
                 gids: list[int] | None = None) -> None:
        self.compression = compression
        self.compressed_digest = compressed_digest
        self.compressed_size = compressed_size
        self.uncompressed_digest = uncompressed_digest
        self.uncompressed_size = uncompressed_size
        self.uids: list[int] = uids if uids is not None else []
        self.gids: list[int] = gids if gids is not None else []

    def __repr__(self) -> str:
        return f"ApplyResult({vars(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApplyResult) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces


# --- the reader thread ----------------------------------------------------------------------

class _Stop(Exception):
    """The consumer gave up; the reader thread just ends."""


class _Source:
    """Reads, hashes and decompresses ``src`` in a thread; the consumer pulls chunks.

    Built on ``_thread`` and the C ``SimpleQueue`` rather than ``threading`` and ``queue``, whose
    imports (functools, collections, heapq...) cost a cold CLI call several milliseconds.
    """

    def __init__(self, src: BinaryIO, detect_compression: bool = True,
                 tap: Callable[[bytes], None] | None = None) -> None:
        self._src = src
        self._detect = detect_compression
        self._tap = tap
        self._backlog: list[bytes] = []  # chunks handed over, not yet tapped
        self._q: SimpleQueue[bytes | BaseException | None] = SimpleQueue()
        # One token per chunk that may be in flight: the reader takes one before it hands a chunk
        # over and the consumer returns it on taking the chunk, which bounds memory.
        self._slots: SimpleQueue[None] = SimpleQueue()
        for _ in range(QUEUE_DEPTH):
            self._slots.put(None)
        self._stopped = False
        self.compression = Compression.UNCOMPRESSED
        self.raw_hash = hashlib.sha256()
        self.raw_size = 0
        self.tar_hash = self.raw_hash
        self.tar_size = 0
        self._done = False
        # Set (before the first decompressed chunk is queued) when the consumer hashes.
        self._hash_taken: Callable[[bytes], None] | None = None
        self._running = lightthread.start(self._run)  # held until the reader thread ends

    def _put(self, item: bytes | BaseException | None) -> None:
        while True:
            if self._stopped:
                raise _Stop
            try:
                self._slots.get(timeout=0.1)
            except Empty:
                continue
            self._q.put(item)
            return

    def _hand(self, chunk: bytes) -> None:
        """Give the consumer ``chunk``, then the tap the one TAP_LAG chunks older."""
        self._put(chunk)
        if self._tap is not None:
            self._backlog.append(chunk)
            if len(self._backlog) > TAP_LAG:
                self._tap(self._backlog.pop(0))

    def _read(self) -> bytes:
        data = self._src.read(READ_SIZE)
        if data:
            if self._detect:
                self.raw_hash.update(data)
            self.raw_size += len(data)
        return data

    def _run(self) -> None:
        try:
            head = self._read()
            while self._detect and head and len(head) < MAGIC_LEN:
                more = self._read()
                if not more:
                    break
                head += more
            self.compression = detect(head) if self._detect else Compression.UNCOMPRESSED
            if self.compression is Compression.UNCOMPRESSED:
                hash_here: Callable[[bytes], None] | None = None
                if not self._detect:
                    # A partial pull's tarball (archive/chunked), its digest computed in the
                    # thread with CPU to spare.  Rebuilt here from local copies (opened in a thread
                    # of their own) and fetched chunks, the applying thread is the busier one, so
                    # this one hashes (medians of 5: 1.056 -> 1.016 s and 0.919 -> 0.872 s; again
                    # 0.708 -> 0.666 s later).  A whole layer's frames decoded here and checked by
                    # the tap (each file's SHA-256, the TOC, the tar-split) make this one the
                    # busier: the applying thread hashes (medians of 5: 0.650 -> 0.517 s).
                    self.tar_hash = hashlib.sha256()
                    if self._tap is not None:
                        self._hash_taken = self.tar_hash.update
                    else:
                        hash_here = self.tar_hash.update
                chunk = head
                while chunk:
                    self.tar_size += len(chunk)
                    if hash_here is not None:
                        hash_here(chunk)
                    self._hand(chunk)
                    chunk = self._read()
            else:
                # The applying thread hashes the decompressed stream as it takes each chunk: this
                # one already reads, hashes and decompresses the input, while that one mostly waits
                # in system calls now that plain entries are applied in C.  Root filesystem,
                # medians of 6 (hashing here -> there): .tar.gz 1.08 -> 0.82 s, .tar.zst 0.67 ->
                # 0.54 s on ext4, 0.77 -> 0.66 and 0.52 -> 0.38 s into tmpfs.
                self.tar_hash = hashlib.sha256()
                self._hash_taken = self.tar_hash.update
                dec = Decompressor(self.compression)
                chunk = head
                while chunk:
                    for out in dec.feed(chunk):
                        self.tar_size += len(out)
                        self._hand(out)
                    chunk = self._read()
                dec.finish()
            if self._tap is not None:
                for chunk in self._backlog:
                    self._tap(chunk)
                self._backlog.clear()
                self._tap(b"")
            self._put(None)
        except _Stop:
            return
        except BaseException as e:  # handed to the consumer, which raises it
            try:
                self._put(e)
            except _Stop:
                return

    def next_chunk(self) -> bytes:
        """The next piece of the uncompressed tar; ``b""`` at its end."""
        if self._done:
            return b""
        item = self._q.get()
        self._slots.put(None)
        if item is None:
            self._done = True
            return b""
        if isinstance(item, BaseException):
            self._done = True
            if isinstance(item, InvalidArchive):
                raise InvalidArchive(str(item)) from item
            if isinstance(item, OSError):
                raise item
            raise InvalidArchive(f"reading layer: {item}") from item
        if self._hash_taken is not None:
            self._hash_taken(item)
        return item

    def summary(self) -> tuple[Compression, str, int, str, int]:
        """(compression, raw digest, raw size, tar digest, tar size) once the consumer took the
        whole stream (``next_chunk`` returned ``b""``)."""
        return (self.compression, "sha256:" + self.raw_hash.hexdigest(), self.raw_size,
                "sha256:" + self.tar_hash.hexdigest(), self.tar_size)

    def close(self) -> None:
        """Stop the thread (if still running) without waiting for a blocked read."""
        self._stopped = True
        self._slots.put(None)  # wakes a reader waiting for room; it then sees the stop flag
        try:
            while True:
                self._q.get_nowait()
        except Empty:
            pass
        # It notices the stop flag within 0.1 s unless a read of a slow pipe blocks it; it is a
        # daemon thread, so never wait long for that.
        if self._running.acquire(timeout=-1 if self._done else 1.0):
            self._running.release()


# --- names ---------------------------------------------------------------------------------

def in_root(cleaned: bytes) -> bytes:
    """The path below the layer root that a cleaned name lands on when joined to ``/`` (as in
    Go's chroot): leading ``/`` and ``..`` vanish; ``b""`` is the root itself."""
    comps = cleaned.split(b"/")
    i = 0
    while i < len(comps) and comps[i] in (b"", b".", b".."):
        i += 1
    return b"/".join(comps[i:])


def _split(rel: bytes) -> tuple[bytes, bytes]:
    slash = rel.rfind(b"/")
    if slash < 0:
        return b"", rel
    return rel[:slash], rel[slash + 1 :]


def _clamp_time(ns: int) -> int:
    """Go's ``system.Chtimes``: times before the epoch or past 2262 become the epoch."""
    return ns if 0 <= ns <= _MAX_TIME_NS else 0


def _detect_userns() -> bool:
    """Go's ``InUserNS`` (``unshare.IsRootless``): not root, in a rootless user's namespace (uid 0
    there, yet no device nodes and no privileged xattrs), or root without the full ID range."""
    from ..userns import is_rootless

    return is_rootless()


class _EntryError(Exception):
    """Wraps an OSError with the entry it happened on (converted by apply_layer)."""

    def __init__(self, name: bytes, err: OSError) -> None:
        super().__init__(name, err)
        self.name = name
        self.err = err


# --- the applier ---------------------------------------------------------------------------

class _Applier:
    """The state of one apply: root fd, a cache of directory fds, deferred directory times."""

    def __init__(self, dest: str, options: ApplyOptions) -> None:
        self.opts = options
        # "plain" is Go's UnpackLayer (vfs, naive diff): whiteouts delete.  The others are Go's
        # Unpack, as the overlay driver calls it: "overlay" converts whiteouts to the kernel's
        # form, "aufs" (under a mount program) writes them as the files they are.
        self.unpack = options.whiteouts in ("overlay", "aufs")
        self.overlay = options.whiteouts == "overlay"
        self.literal = options.whiteouts == "aufs"
        self.root = open_root(dest)
        self.cache: dict[bytes, int] = {}
        # fds dropped from the cache while an entry may still hold them; closed between entries
        self.stale: list[int] = []
        self.dir_times: list[tuple[bytes, int, int]] = []
        self.unpacked: set[bytes] = set()
        self.plnk: dict[bytes, tuple[t.TarHeader, int, int]] = {}
        self.plnk_fd = -1
        self.plnk_end = 0
        self.force_mask = options.force_mask
        self.chown = not (self.unpack and options.force_mask is not None)
        self.userns = _detect_userns()
        self.uid_map = options.uid_map or None
        self.gid_map = options.gid_map or None
        self.root_ids = (self._host_uid(0), self._host_gid(0)) if self.unpack else (-1, -1)
        self.chown_failures = 0
        self.root_hdr: t.TarHeader | None = None

    def close(self) -> None:
        self.forget_dirs()
        self.close_stale()
        if self.plnk_fd >= 0:
            os.close(self.plnk_fd)
            self.plnk_fd = -1
        os.close(self.root)

    # -- ids ------------------------------------------------------------------------------
    def _host_uid(self, uid: int) -> int:
        try:
            return to_host(uid, self.uid_map)
        except InvalidMappings as e:
            raise InvalidArchive(f"Container ID {uid} cannot be mapped to a host ID") from e

    def _host_gid(self, gid: int) -> int:
        try:
            return to_host(gid, self.gid_map)
        except InvalidMappings as e:
            raise InvalidArchive(f"Container ID {gid} cannot be mapped to a host ID") from e

    # -- directories -----------------------------------------------------------------------
    def dir_fd(self, rel: bytes) -> int:
        """A directory fd for ``rel`` (resolved in-root), creating missing directories as Go does."""
        if not rel:
            return self.root
        fd = self.cache.get(rel)
        if fd is not None:
            return fd
        try:
            fd = open_beneath(self.root, rel, _O_PATHDIR)
        except FileNotFoundError:
            self._mkdir_all(rel)
            fd = open_beneath(self.root, rel, _O_PATHDIR)
        self._remember(rel, fd)
        return fd

    def _remember(self, rel: bytes, fd: int) -> None:
        cache = self.cache
        old = cache.pop(rel, None)
        if old is not None:
            self.stale.append(old)
        elif len(cache) >= _DIR_CACHE_MAX:
            self.stale.append(cache.pop(next(iter(cache))))
        cache[rel] = fd

    def forget_dirs(self) -> None:
        """Something was removed or replaced: cached resolutions may be stale."""
        self.stale.extend(self.cache.values())
        self.cache.clear()

    def close_stale(self) -> None:
        for fd in self.stale:
            os.close(fd)
        self.stale.clear()

    def _mkdir_all(self, rel: bytes) -> None:
        """Go's ``MkdirAll(parent, 0755)`` (chowned to the mapped root for overlay), confined."""
        comps = rel.split(b"/")
        missing: list[int] = []
        i = len(comps)
        while i > 0:  # find the deepest existing ancestor
            prefix = b"/".join(comps[:i])
            try:
                os.close(open_beneath(self.root, prefix, _O_PATHDIR))
                break
            except FileNotFoundError:
                missing.append(i)
                i -= 1
        for i in reversed(missing):
            parent, name = b"/".join(comps[: i - 1]), comps[i - 1]
            pfd = self.root if not parent else open_beneath(self.root, parent, _O_PATHDIR)
            try:
                try:
                    os.mkdir(name, 0o755, dir_fd=pfd)
                except FileExistsError:
                    continue
                os.chmod(name, 0o755, dir_fd=pfd, follow_symlinks=False)
                if self.unpack and self.root_ids != (os.geteuid(), os.getegid()):
                    os.chown(name, *self.root_ids, dir_fd=pfd, follow_symlinks=False)
            finally:
                if pfd != self.root:
                    os.close(pfd)

    # -- removal --------------------------------------------------------------------------
    def remove_all(self, pfd: int, name: bytes) -> None:
        """``os.RemoveAll`` of ``name`` in ``pfd``, never following a symlink."""
        try:
            os.unlink(name, dir_fd=pfd)
            self.forget_dirs()
            return
        except FileNotFoundError:
            return
        except (IsADirectoryError, PermissionError) as e:
            if isinstance(e, PermissionError) and e.errno != errno.EISDIR:
                try:
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                if not stat.S_ISDIR(st.st_mode):
                    raise
        self.forget_dirs()
        _remove_tree(pfd, name)

    # -- per-entry helpers ---------------------------------------------------------------------
    def set_owner(self, hdr: t.TarHeader, uid: int, gid: int, fd: int = -1, pfd: int = -1,
                  name: bytes = b"", whiteout: bytes | None = None) -> None:
        """Chown an entry (``whiteout``: the path of the whiteout made for it, which Go chowns
        following links); EINVAL means the IDs do not exist in this user namespace."""
        try:
            if fd >= 0:
                os.fchown(fd, uid, gid)
            else:
                os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
        except OSError as e:
            if not self.opts.ignore_chown_errors:
                if e.errno == errno.EINVAL:
                    if whiteout is not None:
                        raise InsufficientIDs(uid, gid, "/" + os.fsdecode(whiteout), "chown") from e
                    raise InsufficientIDs(uid, gid, "/" + os.fsdecode(in_root(go_clean(hdr.name)))) from e
                raise
            self.chown_failures += 1
            log.debug("ignoring chown error on %r: %s", hdr.name, e)

    def set_xattrs(self, hdr: t.TarHeader, fd: int = -1, pfd: int = -1, name: bytes = b"") -> None:
        for key, value in hdr.xattrs():
            if key in _IGNORED_XATTRS:
                continue
            try:
                if fd >= 0:
                    os.setxattr(fd, key, value)
                else:
                    os.setxattr(b"/proc/self/fd/%d/%b" % (pfd, name), key, value,
                                follow_symlinks=False)
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) or (
                        self.userns and e.errno == errno.EPERM):
                    # Go warns from its unpacking child, whose output is dropped on success.
                    log.info("ignored xattr %s on %s: %s", os.fsdecode(key), os.fsdecode(hdr.name),
                             e.strerror)
                    continue
                raise

    def set_override(self, hdr: t.TarHeader, fd: int = -1, pfd: int = -1, name: bytes = b"") -> None:
        """Go's ``user.containers.override_stat`` for force_mask: the ownership and mode the
        archive asked for, which the forced mask hides."""
        kind = {t.DIR: "dir", t.SYMLINK: "symlink", t.FIFO: "pipe",
                t.CHAR: f"char-{hdr.devmajor}-{hdr.devminor}",
                t.BLOCKDEV: f"block-{hdr.devmajor}-{hdr.devminor}"}.get(hdr.typeflag, "file")
        value = f"{hdr.uid}:{hdr.gid}:{hdr.mode & 0o7777:04o}:{kind}".encode()
        if fd >= 0:
            os.setxattr(fd, OVERRIDE_XATTR, value)
        else:
            os.setxattr(b"/proc/self/fd/%d/%b" % (pfd, name), OVERRIDE_XATTR, value,
                        follow_symlinks=False)


def _remove_tree(pfd: int, name: bytes | str) -> None:
    """Remove a directory tree below ``pfd`` iteratively (no recursion limit, no symlink follow)."""
    stack: list[tuple[int, bytes | str, int, list[str]]] = []
    dfd = os.open(name, _O_DIR, dir_fd=pfd)
    stack.append((pfd, name, dfd, os.listdir(dfd)))
    while stack:
        parent, dname, dfd, children = stack[-1]
        if not children:
            stack.pop()
            os.close(dfd)
            try:
                os.rmdir(dname, dir_fd=parent)
            except FileNotFoundError:
                pass
            continue
        child = children.pop()
        try:
            os.unlink(child, dir_fd=dfd)
            continue
        except FileNotFoundError:
            continue
        except (IsADirectoryError, PermissionError):
            pass
        try:
            cfd = os.open(child, _O_DIR, dir_fd=dfd)
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                os.unlink(child, dir_fd=dfd)
                continue
            raise
        stack.append((dfd, child, cfd, os.listdir(cfd)))


# --- the main loop --------------------------------------------------------------------------

def apply_layer(src: BinaryIO, dest: str, options: ApplyOptions | None = None) -> ApplyResult:
    """Extract the layer tarball ``src`` (any supported compression) into ``dest``.

    Returns digests and sizes of the raw and the uncompressed stream, the compression, and the
    sorted sets of IDs in the headers; records tar-split entries into ``options.tar_split``.
    Raises ``InvalidArchive`` for bad input; the caller removes ``dest`` on failure.
    """
    options = options or ApplyOptions()
    source = _Source(src, options.detect_compression, options.tap)
    try:
        applier = _Applier(dest, options)
    except BaseException:
        source.close()
        raise
    uids: set[int] = set()
    gids: set[int] = set()
    try:
        _run(source, applier, options.tar_split, uids, gids)
        _finish_dirs(applier)
    except _EntryError as e:
        if e.err.errno in _ENVIRONMENT_ERRNOS:
            raise e.err from None
        raise InvalidArchive(f"extracting {os.fsdecode(e.name)!r}: {e.err.strerror or e.err}") from e.err
    finally:
        source.close()
        applier.close()
    if applier.chown_failures:
        # Go prints this from its unpacking child, whose output nobody sees when it succeeds.
        log.info("Chown error detected. Ignoring due to ignoreChownErrors flag (%d entries)",
                    applier.chown_failures)
    compression, raw_digest, raw_size, tar_digest, tar_size = source.summary()
    return ApplyResult(
        compression=compression,
        compressed_digest=raw_digest,
        compressed_size=raw_size,
        uncompressed_digest=tar_digest,
        uncompressed_size=tar_size,
        uids=sorted(uids),
        gids=sorted(gids),
    )


def _run(source: _Source, ap: _Applier, ts: TarSplitSink | None, uids: set[int],
         gids: set[int]) -> None:
    reader = t.TarReader(source.next_chunk)
    add_segment: Callable[[bytes], None] = ts.add_segment if ts is not None else _ignore
    add_file: Callable[[bytes, int, bytes | None], None] = (
        ts.add_file if ts is not None else _ignore3)
    # The C loop does what _entry does for plain entries when nothing masks them.
    fast = _fastapply
    if ap.force_mask is not None or ap.opts.ignore_chown_errors:
        fast = None
    writer = ts if isinstance(ts, TarSplitWriter) else None
    if ts is not None and writer is None:
        fast = None  # a sink that cannot take pre-formatted lines
    seen = writer.seen if writer is not None else None
    unpacked = None if ap.unpack else ap.unpacked
    while True:
        if fast is not None:
            buf, pos, pad = reader.window()
            if pos + pad + t.BLOCK <= len(buf):
                pos, pad, _count, lines, err = fast.run(
                    buf, pos, pad, ap.root, ap.cache, ap.stale, ap.dir_times, unpacked, uids,
                    gids, ap.chown, seen, crc64_call, writer.entries if writer is not None else 0,
                    ap.uid_map, ap.gid_map, ap.opts.reuse)
                reader.advance(pos, pad)
                if writer is not None and lines:
                    writer.add_lines(lines)
                if err is not None:
                    _fast_failure(ap, reader, *err)
        hdr = reader.next()
        for piece in reader.flushed_raw:
            add_segment(piece)
        reader.flushed_raw.clear()
        if hdr is None:
            break
        raw = reader.take_raw()
        if raw:
            add_segment(raw)
        name = hdr.name
        if WHITEOUT_PREFIX not in name or not (
                name.rstrip(b"/").rpartition(b"/")[2].startswith(WHITEOUT_PREFIX)):
            uids.add(hdr.uid)
            gids.add(hdr.gid)
        try:
            crc = _entry(ap, reader, hdr)
        except OSError as e:
            raise _EntryError(name, e) from e
        except (OverflowError, ValueError) as e:
            raise InvalidArchive(f"extracting {os.fsdecode(name)!r}: {e}") from e
        if ap.stale:
            ap.close_stale()
        add_file(name, hdr.size, crc.to_bytes(8, "big") if hdr.size > 0 else None)
    raw = reader.take_raw()
    if raw:
        add_segment(raw)
    for piece in reader.trailing():
        add_segment(piece)
    # tar-split as built into Go's 1.43 CLI records the final zero-length read after the end of
    # the archive as an empty segment; doing the same keeps our tar-split files byte-identical.
    add_segment(b"")


def _fast_failure(ap: _Applier, reader: t.TarReader, name: bytes, err: OSError) -> None:
    """Raise what the C loop's failure on entry ``name`` means.  EINVAL there is the chown to an
    ID this user namespace lacks when chowning the entry again fails the same way (the C loop
    does not say which call failed): Go's text then, as the Python path gives."""
    if err.errno == errno.EINVAL and ap.chown:
        try:
            hdr = reader.next()  # the loop stopped at the failing entry's header
        except (InvalidArchive, OSError):
            hdr = None
        if hdr is not None and hdr.name == name:
            rel = in_root(go_clean(hdr.name))
            parent, base = _split(rel)
            try:
                ap.set_owner(hdr, ap._host_uid(hdr.uid), ap._host_gid(hdr.gid),
                             pfd=ap.dir_fd(parent), name=base)
            except OSError:
                pass
    raise _EntryError(name, err)


def _ignore(*_: object) -> None:
    return None


def _ignore3(_a: object, _b: object, _c: object) -> None:
    return None


def _drain(reader: t.TarReader) -> int:
    if reader.sparse is not None:
        return _sparse_content(reader, -1, 0)
    crc = 0
    for piece in reader.content():
        crc = crc64(piece, crc)
    return crc


def _sparse_content(reader: t.TarReader, fd: int, base: int) -> int:
    """Write a sparse entry's fragments at ``base`` + their offsets in ``fd`` (none when -1),
    leaving the holes unwritten, and size the region to the real size; returns the CRC-64 of
    the expanded content, which is what Go's tar-split records for the entry."""
    sparse = reader.sparse
    assert sparse is not None
    crc = 0
    pos = 0
    pwrite = os.pwrite
    for off, piece in reader.fragments():
        if off > pos:
            crc = crc64_zeros(crc, off - pos)
        crc = crc64(piece, crc)
        pos = off + len(piece)
        if fd >= 0:
            at = base + off
            while piece:
                n = pwrite(fd, piece, at)
                piece = piece[n:]
                at += n
    if sparse.size > pos:
        crc = crc64_zeros(crc, sparse.size - pos)
    if fd >= 0:
        os.ftruncate(fd, base + sparse.size)
    return crc


def _entry(ap: _Applier, reader: t.TarReader, hdr: t.TarHeader) -> int:
    """Apply one member; returns the CRC-64 of its content (which it always consumes)."""
    if not (0 <= hdr.uid <= 0xFFFFFFFF and 0 <= hdr.gid <= 0xFFFFFFFF and hdr.size >= 0):
        raise InvalidArchive(t.ERR_HEADER)
    flag = hdr.typeflag
    if flag == t.XGLOBAL:
        return _drain(reader)
    # Most names ("./usr/bin/x", "usr/lib/") are clean already and cannot be whiteouts.
    rel = _simple_name(hdr.name)
    simple = rel is not None
    if rel is None:
        cleaned = go_clean(hdr.name)
        rel = in_root(cleaned)
    slash = rel.rfind(b"/")
    parent, base = (rel[:slash], rel[slash + 1 :]) if slash >= 0 else (b"", rel)
    # Go makes sure the parent exists for every entry, whiteouts included.
    pfd = ap.cache.get(parent)
    if pfd is None:
        try:
            pfd = ap.dir_fd(parent)
        except NotADirectoryError:
            if base.startswith(WHITEOUT_PREFIX) and base != WHITEOUT_OPAQUE and not ap.literal:
                # "rm -rf /foo/bar" layers whiteout /foo and then /foo/bar; Go ignores the second.
                return _drain(reader)
            raise

    if not simple:
        if not ap.unpack and cleaned.startswith(WHITEOUT_META_PREFIX):
            if cleaned.startswith(WHITEOUT_LINK_DIR) and flag == t.REG:
                return _stash_plnk(ap, reader, hdr, base)
            if cleaned != WHITEOUT_OPAQUE:
                return _drain(reader)
        if base.startswith(WHITEOUT_PREFIX) and not ap.literal:
            _whiteout(ap, hdr, parent, pfd, base)
            return _drain(reader)
        if not rel:
            return _root_entry(ap, reader, hdr, cleaned)

    # Anything but a directory over a directory replaces what is there.  Creation below is
    # O_EXCL/EEXIST-driven, so the common fresh-tree case costs no extra lstat.
    force = ap.force_mask
    if force is not None and flag not in (t.DIR, t.SYMLINK, t.LINK):
        flag = t.REG
    link_src = hdr
    data_fd = -1
    data_off = 0
    if (flag == t.LINK and not ap.unpack and WHITEOUT_LINK_DIR in hdr.linkname
            and go_clean(hdr.linkname).startswith(WHITEOUT_LINK_DIR)):
        key = _split(go_clean(hdr.linkname))[1]
        found = ap.plnk.get(key)
        if found is None:
            raise InvalidArchive("invalid aufs hardlink")
        link_src, data_off, _size = found
        data_fd = ap.plnk_fd
        flag = t.REG
    uid = link_src.uid if ap.uid_map is None else ap._host_uid(link_src.uid)
    gid = link_src.gid if ap.gid_map is None else ap._host_gid(link_src.gid)
    crc = 0
    if flag == t.REG:
        crc = _write_file(ap, reader, hdr, link_src, pfd, base, uid, gid, data_fd, data_off)
    elif flag == t.DIR:
        _make_dir(ap, hdr, rel, pfd, base, uid, gid)
    elif flag == t.SYMLINK:
        _replace(ap, pfd, base, lambda: os.symlink(hdr.linkname, base, dir_fd=pfd))
        _finish_nofd(ap, hdr, pfd, base, uid, gid, chmod=False)
    elif flag == t.LINK:
        _hardlink(ap, hdr, pfd, base, uid, gid)
    elif flag in (t.CHAR, t.BLOCKDEV, t.FIFO):
        if flag != t.FIFO and ap.userns:
            log.debug("cannot create device %r in a user namespace", hdr.name)
            ap.unpacked.add(rel)
            return _drain(reader)
        kind = stat.S_IFIFO if flag == t.FIFO else stat.S_IFCHR if flag == t.CHAR else stat.S_IFBLK
        dev = os.makedev(hdr.devmajor, hdr.devminor)
        _replace(ap, pfd, base, lambda: os.mknod(base, kind | 0o600, dev, dir_fd=pfd))
        _finish_nofd(ap, hdr, pfd, base, uid, gid, chmod=True)
    else:
        raise InvalidArchive(f"unhandled tar header type {hdr.typeflag}")
    if not ap.unpack:
        ap.unpacked.add(rel)
    if flag != t.REG:
        crc = _drain(reader)
    return crc


def _simple_name(name: bytes) -> bytes | None:
    """``name`` relative to the root when it is already clean and plain, else None.

    Plain means: no empty, ``.`` or ``..`` components, not absolute, and no component starting
    with a dot (so no whiteouts); ``./`` in front and ``/`` at the end are allowed.
    """
    if name.startswith(b"./"):
        name = name[2:]
    if name.endswith(b"/"):
        name = name[:-1]
    if not name or name[0] in (0x2E, 0x2F) or b"//" in name or b"/." in name:
        return None
    return name


def _replace(ap: _Applier, pfd: int, name: bytes, create: Callable[[], None]) -> None:
    """Create an entry; if the name is taken, remove what is there (tree included) and retry."""
    try:
        create()
    except FileExistsError:
        ap.remove_all(pfd, name)
        create()


def _mode_bits(ap: _Applier, hdr: t.TarHeader) -> int:
    return ap.force_mask if ap.force_mask is not None else hdr.mode & 0o7777


def _times(hdr: t.TarHeader) -> tuple[int, int]:
    mtime = hdr.mtime_ns
    atime = hdr.atime_ns if hdr.atime_ns is not None and hdr.atime_ns > mtime else mtime
    return atime, mtime


def _write_file(ap: _Applier, reader: t.TarReader, hdr: t.TarHeader, meta: t.TarHeader, pfd: int,
                name: bytes, uid: int, gid: int, data_fd: int, data_off: int) -> int:
    if ap.opts.reuse and data_fd < 0 and reader.sparse is None:
        found = ap.opts.reuse.pop(hdr.name, None)
        if found is not None:
            return _reuse_file(ap, reader, hdr, pfd, name, uid, gid, *found)
    try:
        fd = os.open(name, _O_NEWFILE, 0o600, dir_fd=pfd)
    except FileExistsError:
        ap.remove_all(pfd, name)
        fd = os.open(name, _O_NEWFILE, 0o600, dir_fd=pfd)
    crc = 0
    try:
        if reader.sparse is None:
            write = os.write
            for piece in reader.content():
                crc = crc64(piece, crc)
                while piece:
                    n = write(fd, piece)
                    piece = piece[n:]
        else:  # holes stay holes (Go 1.43 writes them out as zeros: same content)
            crc = _sparse_content(reader, fd, 0)
        if data_fd >= 0:  # an AUFS hardlink: the content of the stashed .wh..wh.plnk file
            _copy_range(data_fd, fd, data_off, meta.size)
        _finish_fd(ap, hdr, fd, uid, gid, meta)
        atime, mtime = _times(meta)
        os.utime(fd, ns=(_clamp_time(atime), _clamp_time(mtime)))
    finally:
        os.close(fd)
    return crc


def _reuse_file(ap: _Applier, reader: t.TarReader, hdr: t.TarHeader, pfd: int, name: bytes,
                uid: int, gid: int, src_fd: int, link: bool) -> int:
    """A file whose content another layer's file ``src_fd`` has (a partial pull): a hard link to
    it when ``link`` and its owner and mode are already the ones to set (Go's use_hard_links,
    which then leaves the attributes alone), else a reflink clone or an in-kernel copy.  The
    content in the stream is only checksummed."""
    try:
        st = os.fstat(src_fd)
        if link and ap.force_mask is None and (st.st_uid, st.st_gid) == (uid, gid) and (
                stat.S_IMODE(st.st_mode) == hdr.mode & 0o7777):
            def make_link() -> None:
                os.link(f"/proc/self/fd/{src_fd}", name, dst_dir_fd=pfd, follow_symlinks=True)

            try:
                _replace(ap, pfd, name, make_link)
            except OSError:
                link = False  # another file system, too many links: copy instead
        else:
            link = False
        if not link:
            try:
                fd = os.open(name, _O_NEWFILE, 0o600, dir_fd=pfd)
            except FileExistsError:
                ap.remove_all(pfd, name)
                fd = os.open(name, _O_NEWFILE, 0o600, dir_fd=pfd)
            try:
                _clone(src_fd, fd, hdr.size, st.st_size)
                _finish_fd(ap, hdr, fd, uid, gid)
                atime, mtime = _times(hdr)
                os.utime(fd, ns=(_clamp_time(atime), _clamp_time(mtime)))
            finally:
                os.close(fd)
    finally:
        os.close(src_fd)
    return _drain(reader)


_FICLONE = 0x40049409


def _clone(src_fd: int, dst_fd: int, size: int, src_size: int) -> None:
    """``dst_fd`` gets ``src_fd``'s first ``size`` bytes (of its ``src_size``): shared extents
    where the file system has reflinks (FICLONE), else copy_file_range (which some file systems
    also share)."""
    import fcntl

    if src_size == size:
        try:
            fcntl.ioctl(dst_fd, _FICLONE, src_fd)
            return
        except OSError:
            pass
    _copy_range(src_fd, dst_fd, 0, size)


def _copy_range(src_fd: int, dst_fd: int, offset: int, size: int) -> None:
    while size > 0:
        n = os.copy_file_range(src_fd, dst_fd, size, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short copy from the AUFS link stash")
        offset += n
        size -= n


def _make_dir(ap: _Applier, hdr: t.TarHeader, rel: bytes, pfd: int, name: bytes, uid: int,
              gid: int) -> None:
    try:
        os.mkdir(name, 0o700, dir_fd=pfd)
    except FileExistsError:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):  # a non-directory is replaced; a directory is merged
            ap.remove_all(pfd, name)
            os.mkdir(name, 0o700, dir_fd=pfd)
    fd = os.open(name, _O_DIR, dir_fd=pfd)
    try:
        _finish_fd(ap, hdr, fd, uid, gid)
    except BaseException:
        os.close(fd)
        raise
    ap._remember(rel, fd)  # its children usually follow: keep the fd as their parent
    ap.dir_times.append((rel, *_times(hdr)))


def _finish_fd(ap: _Applier, hdr: t.TarHeader, fd: int, uid: int, gid: int,
               meta: t.TarHeader | None = None) -> None:
    """Owner, then mode, xattrs and the force_mask override, through ``fd`` (chown before chmod
    keeps setuid bits).  ``meta`` gives the mode and xattrs when not ``hdr`` (an AUFS hard link
    takes them from the stashed file)."""
    meta = hdr if meta is None else meta
    if ap.chown:
        ap.set_owner(hdr, uid, gid, fd=fd)
    os.fchmod(fd, _mode_bits(ap, meta))
    if meta.pax:
        ap.set_xattrs(meta, fd=fd)
    if ap.force_mask is not None:
        ap.set_override(meta, fd=fd)


def _finish_nofd(ap: _Applier, hdr: t.TarHeader, pfd: int, name: bytes, uid: int, gid: int,
                 chmod: bool) -> None:
    """Ownership, mode, xattrs and times of an entry we cannot open (symlink, device, fifo)."""
    if ap.chown:
        ap.set_owner(hdr, uid, gid, pfd=pfd, name=name)
    if chmod:
        os.chmod(name, _mode_bits(ap, hdr), dir_fd=pfd, follow_symlinks=False)
    if hdr.pax:
        ap.set_xattrs(hdr, pfd=pfd, name=name)
    atime, mtime = _times(hdr)
    if chmod:
        atime, mtime = _clamp_time(atime), _clamp_time(mtime)
    else:  # Go's LUtimesNano path for symlinks does not clamp, but the kernel needs int64
        atime, mtime = (max(min(x, _MAX_TIME_NS), -_MAX_TIME_NS) for x in (atime, mtime))
    os.utime(name, ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)


def _hardlink(ap: _Applier, hdr: t.TarHeader, pfd: int, name: bytes, uid: int, gid: int) -> None:
    """A hard link to an existing non-directory inside the layer (resolved in-root)."""
    target = in_root(go_clean(hdr.linkname))
    if not target:
        raise InvalidArchive(f"invalid hardlink {os.fsdecode(hdr.name)!r} -> {os.fsdecode(hdr.linkname)!r}")
    tparent, tname = _split(target)
    tpfd = ap.dir_fd(tparent) if tparent else ap.root

    def link() -> None:
        os.link(tname, name, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)

    _replace(ap, pfd, name, link)
    if ap.chown:
        ap.set_owner(hdr, uid, gid, pfd=pfd, name=name)
    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):  # Go skips mode and times when the target is a symlink
        os.chmod(name, _mode_bits(ap, hdr), dir_fd=pfd, follow_symlinks=False)
    if hdr.pax:
        ap.set_xattrs(hdr, pfd=pfd, name=name)
    if not stat.S_ISLNK(st.st_mode):
        atime, mtime = _times(hdr)
        os.utime(name, ns=(_clamp_time(atime), _clamp_time(mtime)), dir_fd=pfd,
                 follow_symlinks=False)


def _stash_plnk(ap: _Applier, reader: t.TarReader, hdr: t.TarHeader, base: bytes) -> int:
    """Keep an AUFS ``.wh..wh.plnk`` file's content (in an unnamed file in the layer) so hard
    links to it can be materialised as copies, as Go does."""
    if ap.plnk_fd < 0:
        ap.plnk_fd = os.open(b".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=ap.root)
    offset = ap.plnk_end
    crc = 0
    if reader.sparse is not None:
        crc = _sparse_content(reader, ap.plnk_fd, offset)
        ap.plnk_end = offset + hdr.size
    else:
        for piece in reader.content():
            crc = crc64(piece, crc)
            while piece:
                n = os.pwrite(ap.plnk_fd, piece, ap.plnk_end)
                ap.plnk_end += n
                piece = piece[n:]
    ap.plnk[base] = (hdr, offset, ap.plnk_end - offset)
    return crc


def _whiteout(ap: _Applier, hdr: t.TarHeader, parent: bytes, pfd: int, base: bytes) -> None:
    if base == WHITEOUT_OPAQUE:
        if ap.overlay:
            dfd = os.open(b".", _O_DIR, dir_fd=pfd)
            try:
                os.setxattr(dfd, ap.opts.overlay_xattr_prefix + "opaque", b"y")
            finally:
                os.close(dfd)
        else:
            _make_opaque(ap, parent, pfd)
        return
    target = base[len(WHITEOUT_PREFIX):]
    if target in (b"", b".", b".."):
        raise InvalidArchive(f"invalid whiteout {os.fsdecode(hdr.name)!r}")
    if ap.overlay:
        try:
            os.mknod(target, stat.S_IFCHR, 0, dir_fd=pfd)
        except NotADirectoryError:
            return  # "rm -rf /foo/bar" layers whiteout /foo and then /foo/bar, as Go tolerates
        ap.set_owner(hdr, ap._host_uid(hdr.uid), ap._host_gid(hdr.gid), pfd=pfd, name=target,
                     whiteout=parent + b"/" + target if parent else target)
    else:
        ap.remove_all(pfd, target)


def _make_opaque(ap: _Applier, parent: bytes, pfd: int) -> None:
    """Plain target: remove what the directory held before this layer (Go's opaque walk)."""
    top = os.open(b".", _O_DIR, dir_fd=pfd)
    prefix = parent + b"/" if parent else b""
    stack: list[tuple[int, bytes]] = [(top, prefix)]
    removed = False
    try:
        while stack:
            dfd, pre = stack.pop()
            try:
                for child in os.listdir(dfd):
                    cname = os.fsencode(child)
                    if pre + cname in ap.unpacked:
                        try:
                            cfd = os.open(cname, _O_DIR, dir_fd=dfd)
                        except OSError:
                            continue
                        stack.append((cfd, pre + cname + b"/"))
                    else:
                        removed = True
                        try:
                            os.unlink(cname, dir_fd=dfd)
                        except (IsADirectoryError, PermissionError):
                            _remove_tree(dfd, cname)
                        except FileNotFoundError:
                            pass
            finally:
                os.close(dfd)
    finally:
        for dfd, _ in stack:
            os.close(dfd)
    if removed:
        ap.forget_dirs()


def _root_entry(ap: _Applier, reader: t.TarReader, hdr: t.TarHeader, cleaned: bytes) -> int:
    """An entry naming the layer root: a directory updates its metadata (plain, and overlay
    unless it is spelled "."); anything else would replace the root and is refused."""
    if hdr.typeflag != t.DIR:
        raise InvalidArchive(f"refusing to replace the layer root with {os.fsdecode(hdr.name)!r}")
    ap.root_hdr = hdr
    if ap.unpack and cleaned == b".":
        return _drain(reader)
    fd = os.open(b".", _O_DIR, dir_fd=ap.root)
    try:
        _finish_fd(ap, hdr, fd, ap._host_uid(hdr.uid), ap._host_gid(hdr.gid))
    finally:
        os.close(fd)
    ap.dir_times.append((b"", *_times(hdr)))
    ap.unpacked.add(b"")
    return _drain(reader)


def _finish_dirs(ap: _Applier) -> None:
    """Directory times last, so creating their children does not disturb them."""
    for rel, atime, mtime in ap.dir_times:
        parent, name = _split(rel)
        ns = (_clamp_time(atime), _clamp_time(mtime))
        try:
            if not rel:
                os.utime(b".", ns=ns, dir_fd=ap.root, follow_symlinks=False)
            else:
                os.utime(name, ns=ns, dir_fd=ap.dir_fd(parent), follow_symlinks=False)
        except OSError as e:
            raise _EntryError(rel, e) from e
    if ap.unpack and ap.force_mask is not None:
        hdr = ap.root_hdr or t.TarHeader()
        if ap.root_hdr is None:
            hdr.typeflag, hdr.mode = t.DIR, 0o755
        fd = os.open(b".", _O_DIR, dir_fd=ap.root)
        try:
            ap.set_override(hdr, fd=fd)
        finally:
            os.close(fd)

