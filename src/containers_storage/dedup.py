"""Deduplicate identical file contents across layers with the kernel's FIDEDUPERANGE (Go's
``internal/dedup`` and ``Store.Dedup``).

Files are grouped by a cheap key (Go's hash methods: ``crc`` — CRC-64 with Go's ECMA table,
``size``, or ``sha256``); within a group the kernel compares the bytes itself and shares the
extents of equal files, so a weak key can only cost time, never data.  Only file systems that
can share extents (reflinks: btrfs, XFS with reflink=1) do it; elsewhere the kernel answers
EOPNOTSUPP and, as in Go, the run stops there without an error, reporting what it saved so far
(``DedupResult.supported`` then says why nothing was saved).

The reported size counts every byte the kernel confirmed as shared, including bytes shared by an
earlier run, so repeated runs report the same number (as Go's do).

Differences from Go that cannot change the result: a file whose size no other file has is never
hashed (it cannot equal any other file), and files are keyed by (size, hash) rather than by the
hash alone (equal contents have equal sizes).
"""

from __future__ import annotations

import os

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .store import Store

HASH_METHODS = ("crc", "size", "sha256")
FIDEDUPERANGE = 0xC0189436  # _IOWR(0x94, 54, struct file_dedupe_range)
# struct file_dedupe_range (24 bytes) with one struct file_dedupe_range_info (32 bytes).
_RANGE = "=QQHHI"
_INFO = "=qQQiI"
_SMALL_FILE = 4096  # Go reads smaller files whole, maps bigger ones


class ReflinksNotSupported(OSError):
    """The file system cannot share extents (Go's errNotSupported)."""

    def __init__(self) -> None:
        super().__init__(95, "reflinks are not supported on this platform")

    def __str__(self) -> str:
        return "reflinks are not supported on this platform"


class DedupResult:
    """What a run saved: ``deduped`` bytes (Go's DedupResult.Deduped), and whether the file
    system could share extents at all (False once it refused; Go only logs that at debug)."""

    def __init__(self, deduped: int = 0, supported: bool = True) -> None:
        self.deduped = deduped
        self.supported = supported

    def to_json(self) -> dict[str, int]:
        return {"Deduped": self.deduped}

    def __repr__(self) -> str:
        return f"DedupResult(deduped={self.deduped}, supported={self.supported})"


def _read_key(method: str, path: str, size: int) -> bytes:
    if method == "size":
        return b""  # the size is part of every key already
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        if size < _SMALL_FILE:
            data: bytes | memoryview = os.read(fd, size)
            mapped = None
        else:
            import mmap

            mapped = mmap.mmap(fd, size, mmap.MAP_PRIVATE, mmap.PROT_READ)
            mapped.madvise(mmap.MADV_SEQUENTIAL)
            data = memoryview(mapped)
        try:
            if method == "sha256":
                import hashlib

                return hashlib.sha256(data).digest()
            from fastcrc import crc64

            # Go's crc64 with the ECMA table is the reflected CRC-64 known as CRC-64/XZ.
            return int(crc64.xz(data)).to_bytes(8, "big")
        finally:
            if mapped is not None:
                data.release()  # type: ignore[union-attr]
                mapped.close()
    finally:
        os.close(fd)


def dedupe_range(src: str, dst: str, dst_stat: os.stat_result) -> int:
    """Share ``src``'s extents with ``dst`` where their bytes are equal; the bytes the kernel
    confirmed (0 when they differ).  ``ReflinksNotSupported`` when the file system cannot."""
    import fcntl
    import struct

    src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        # Go opens the destination write-only: the kernel lets a writer (or the owner) dedupe.
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            st = os.fstat(src_fd)
            if st.st_dev == dst_stat.st_dev and st.st_ino == dst_stat.st_ino:
                return 0  # hard links of one inode
            request = struct.pack(_RANGE, 0, st.st_size, 1, 0, 0) + struct.pack(_INFO, dst_fd, 0, 0, 0, 0)
            buf = bytearray(request)
            try:
                fcntl.ioctl(src_fd, FIDEDUPERANGE, buf, True)
            except OSError as e:
                if e.errno == 95:  # EOPNOTSUPP (ENOTSUP): no reflinks here
                    raise ReflinksNotSupported() from None
                raise OSError(e.errno, f"failed to clone file {src!r}: {e.strerror}") from None
            deduped: int = struct.unpack_from("=Q", buf, 24 + 16)[0]
            return deduped
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def _walk(top: str) -> Iterable[tuple[str, os.stat_result]]:
    """Regular files below ``top`` with their lstat, never following symlinks (Go's WalkDir)."""
    import stat

    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            return  # a symlinked root (an additional layer store's diff) is not walked into
    except FileNotFoundError:
        return
    stack = [top]
    while stack:
        current = stack.pop()
        with os.scandir(current) as it:
            entries = list(it)
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                yield entry.path, entry.stat(follow_symlinks=False)


def dedup_dirs(dirs: Iterable[str], method: str = "crc") -> DedupResult:
    """Deduplicate the regular files below ``dirs`` (Go's DedupDirs).

    Each inode is looked at once (hard links share it already); empty files are skipped.
    Progress is logged at debug level, in Go's words.
    """
    if method not in HASH_METHODS:
        raise ValueError(f"invalid hash method: {method}")
    from .lazylog import LazyLogger

    debug = LazyLogger(__name__).debug
    seen: set[tuple[int, int]] = set()
    by_size: dict[int, list[tuple[str, os.stat_result]]] = {}
    for top in dirs:
        debug("Deduping directory %s", top)
        for path, st in _walk(top):
            if st.st_size == 0 or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            by_size.setdefault(st.st_size, []).append((path, st))
    groups = [g for g in by_size.values() if len(g) > 1]
    result = DedupResult()
    if not groups:
        return result

    def run(group: list[tuple[str, os.stat_result]]) -> int:
        saved = 0
        candidates: dict[bytes, list[str]] = {}
        for path, st in group:
            key = _read_key(method, path, st.st_size)
            sources = candidates.get(key)
            if sources is None:
                candidates[key] = [path]
                continue
            deduped = 0
            for src in sources:
                try:
                    deduped = dedupe_range(src, path, st)
                except ReflinksNotSupported:
                    raise
                except OSError as e:
                    debug("Failed to deduplicate: %s", e.strerror or e)
                    continue
                if deduped > 0:
                    debug("Deduped %r -> %r (%d bytes)", src, path, deduped)
                    break
            if deduped > 0:
                saved += deduped
            else:
                sources.append(path)
        return saved

    # Hashing (fastcrc, hashlib) and the ioctl release the GIL: groups overlap in threads.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        futures = [pool.submit(run, g) for g in groups]
        first_error: BaseException | None = None
        for future in futures:
            try:
                result.deduped += future.result()
            except ReflinksNotSupported:
                result.supported = False
                debug("Failed to deduplicate: reflinks are not supported on this platform")
            except BaseException as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error
    return result


def dedup_store(store: Store, method: str = "crc") -> DedupResult:
    """Go's Store.Dedup: deduplicate the layers of every image (top layers, their mapped copies
    and all their parents) in the read-write layer store, through its driver."""
    if method not in HASH_METHODS:
        raise ValueError(f"invalid hash method: {method}")
    tops: list[str] = []
    for image in store.images():
        tops.append(image.top_layer)
        tops.extend(image.mapped_top_layers)
    with store.layer_store.writing() as rl:
        layers: list[str] = []
        visited: set[str] = set()
        for top in tops:
            current = top
            while current and current not in visited:
                layer = rl.lookup(current)
                if layer is None:
                    break
                visited.add(current)
                layers.append(layer.id)
                current = layer.parent
        dedup = getattr(rl.driver, "dedup", None)
        if dedup is None:
            return DedupResult()  # Go's drivers without deduplication report nothing saved
        found: DedupResult = dedup(layers, method)
        return found


__all__ = ["HASH_METHODS", "DedupResult", "ReflinksNotSupported", "dedup_dirs", "dedup_store", "dedupe_range"]
