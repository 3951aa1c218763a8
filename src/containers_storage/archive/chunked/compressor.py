"""The zstd:chunked writer: a layer tarball in, a blob Go's tools can pull partially out.

The blob is an ordinary zstd stream of the tarball (any zstd reader gets the tar back), cut into
frames as Go's ``pkg/chunked/compressor`` cuts it: the tar headers between files share a frame,
each regular file's content starts a new one, and large files are cut further where a rolling
checksum says (so that files which share most of their bytes share most of their chunks).  After
the last frame come three skippable frames Go's readers know: the zstd-compressed TOC (JSON), the
zstd-compressed tar-split (the tar's headers, to rebuild the exact tarball), and a 64-byte footer.
The layer's annotations say where the first two are and authenticate the TOC.

Image builders use :func:`compress`; :meth:`containers_storage.store.Store.diff_zstd_chunked`
writes a layer's diff this way.
"""

from __future__ import annotations

import hashlib
import struct

from ... import TYPE_CHECKING
from ...records import format_time_ns
from ..crc64 import crc64
from . import toc as _toc

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO, Literal

    from ..tarread import TarHeader

__all__ = ["DEFAULT_LEVEL", "ChunkedBlob", "compress"]

# libzstd's own default: Go's writer asks klauspost/compress for level 10 ("better
# compression"), which libzstd reaches at a third of the speed for a few percent of size.
DEFAULT_LEVEL = 3

SKIPPABLE_MAGIC = b"\x50\x2a\x4d\x18"
FOOTER_MAGIC = b"GNUlInUx"  # Go's ZstdChunkedFrameMagic (Go 1.43 wrote "GnUlInUx", 40 bytes)
FOOTER_SIZE = 64
MANIFEST_TYPE_CRFS = 1

_READ = 1 << 20


class ChunkedBlob:
    """What :func:`compress` wrote.

    Attributes:
        digest: ``sha256:...`` of the blob (the layer descriptor's digest).
        size: the blob's size in bytes.
        diff_id: ``sha256:...`` of the uncompressed tarball (the image config's diff ID).
        tar_size: the uncompressed tarball's size.
        toc_digest: the TOC's digest (``sha256:...`` of its compressed bytes).
        annotations: the layer descriptor's annotations that make the blob pullable in part.
    """

    __slots__ = ("annotations", "diff_id", "digest", "size", "tar_size", "toc_digest")

    def __init__(self, digest: str, size: int, diff_id: str, tar_size: int, toc_digest: str,
                 annotations: dict[str, str]) -> None:
        self.digest = digest
        self.size = size
        self.diff_id = diff_id
        self.tar_size = tar_size
        self.toc_digest = toc_digest
        self.annotations = annotations

    def __repr__(self) -> str:
        """A short description for debugging."""
        return f"ChunkedBlob(digest={self.digest!r}, size={self.size}, toc_digest={self.toc_digest!r})"


class _Out:
    """The blob being written: counts bytes and hashes them on the way."""

    __slots__ = ("_write", "hash", "offset")

    def __init__(self, out: BinaryIO) -> None:
        self._write = out.write
        self.hash = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        if data:
            self._write(data)
            self.hash.update(data)
            self.offset += len(data)


class _Frames:
    """zstd frames on ``out``: ``end()`` closes the current one and says where the next starts."""

    def __init__(self, out: _Out, level: int | None) -> None:
        from backports.zstd import ZstdCompressor  # type: ignore[import-not-found,unused-ignore]

        self._out = out
        # No level: Go's NoCompression, the layout of zstd:chunked over the plain tar bytes.
        self._cctx = ZstdCompressor(level) if level is not None else None
        self._flush_frame: Literal[1, 2] = ZstdCompressor.FLUSH_FRAME
        self.open = False  # the current frame has input

    def write(self, data: bytes | memoryview) -> None:
        if data:
            if self._cctx is None:
                self._out.write(bytes(data))
            else:
                self._out.write(self._cctx.compress(data))
            self.open = True

    def end(self) -> int:
        if self.open and self._cctx is not None:
            self._out.write(self._cctx.flush(self._flush_frame))
        self.open = False
        return self._out.offset


def _new_chunker() -> Callable[[], object]:
    """``_rollsum.Chunker``, or the Python one (see :mod:`containers_storage.native`)."""
    from ...native import load

    rollsum = load("containers_storage.archive.chunked._rollsum")
    return _PyChunker if rollsum is None else rollsum.Chunker


class _PyChunker:
    """``_rollsum.Chunker`` in Python (the same cut points; a few MB/s)."""

    def __init__(self) -> None:
        self.s1 = 64 * 31
        self.s2 = 64 * 63 * 31
        self.window = bytearray(64)
        self.wofs = 0
        self.out = 0
        self.zeros = 0

    def _roll(self, ch: int) -> None:
        drop = self.window[self.wofs]
        self.s1 = (self.s1 + ch - drop) & 0xFFFFFFFF
        self.s2 = (self.s2 + self.s1 - 64 * (drop + 31)) & 0xFFFFFFFF
        self.window[self.wofs] = ch
        self.wofs = (self.wofs + 1) & 63

    def _resolve(self, events: list[tuple[int, int]]) -> None:
        n, self.zeros = self.zeros, 0
        if n >= 1024:
            events.append((self.out, 1))
            for _ in range(min(n, 64)):
                self._roll(0)
            self.wofs = (self.wofs + n - min(n, 64)) & 63
            self.out += n
            events.append((self.out, 2))
            return
        for _ in range(n):
            self._roll(0)
            self.out += 1
            if self.s2 & 0xFFFF == 0xFFFF:
                events.append((self.out, 0))

    def feed(self, data: bytes | memoryview) -> tuple[int, list[tuple[int, int]]]:
        events: list[tuple[int, int]] = []
        for b in bytes(data):
            if not b:
                self.zeros += 1
                continue
            if self.zeros:
                self._resolve(events)
            self._roll(b)
            self.out += 1
            if self.s2 & 0xFFFF == 0xFFFF:
                events.append((self.out, 0))
        return self.out, events

    def finish(self) -> tuple[int, list[tuple[int, int]]]:
        events: list[tuple[int, int]] = []
        self._resolve(events)
        return self.out, events


class _FileWriter:
    """One file's content into frames and chunks, as Go's writeZstdChunkedStream loop does."""

    def __init__(self, frames: _Frames, chunker: object) -> None:
        self.frames = frames
        self.chunker = chunker
        self.start = 0  # blob offset of the first content frame (0: no content yet)
        self.last_offset = 0  # blob offset where the current chunk's frame starts
        self.chunk_start = 0  # content offset where the current chunk starts
        self.written = 0  # content bytes written
        self.payload = hashlib.sha256()
        self.chunk_hash = hashlib.sha256()
        self.chunks: list[tuple[int, int, str, int, str]] = []  # content off, blob off, digest, size, type
        self.zeros = False  # the bytes since the last cut are a hole

    def _data(self, data: bytes | memoryview) -> None:
        if not data:
            return
        if self.start == 0:
            self.start = self.frames.end()
            self.last_offset = self.start
        self.payload.update(data)
        self.chunk_hash.update(data)
        self.frames.write(data)
        self.written += len(data)

    def _cut(self) -> None:
        if self.start == 0:
            return
        off = self.frames.end()
        size = self.written - self.chunk_start
        if size > 0:
            self.chunks.append((self.chunk_start, self.last_offset, "sha256:" + self.chunk_hash.hexdigest(),
                                size, _toc.CHUNK_ZEROS if self.zeros else _toc.CHUNK_DATA))
        self.last_offset = off
        self.chunk_start = self.written
        self.chunk_hash = hashlib.sha256()
        self.zeros = False

    def _events(self, resolved: int, events: list[tuple[int, int]], piece: bytes | memoryview,
                piece_start: int) -> None:
        """Write content up to ``resolved``, cutting where ``events`` say.  Content not yet
        written that lies before ``piece`` is a zero run the chunker had kept pending."""
        for offset, kind in events:
            self._upto(offset, piece, piece_start)
            if kind == 1:  # a hole starts: what came before is a chunk of its own
                if self.written > self.chunk_start:
                    self._cut()
                self.zeros = True
            else:
                self._cut()
        self._upto(resolved, piece, piece_start)

    def _upto(self, offset: int, piece: bytes | memoryview, piece_start: int) -> None:
        if offset <= self.written:
            return
        if self.written < piece_start:
            self._data(bytes(min(offset, piece_start) - self.written))
        if offset > self.written:
            self._data(piece[self.written - piece_start : offset - piece_start])

    def feed(self, piece: bytes | memoryview, piece_start: int) -> None:
        resolved, events = self.chunker.feed(piece)  # type: ignore[attr-defined]
        self._events(resolved, events, piece, piece_start)

    def finish(self, total: int) -> None:
        resolved, events = self.chunker.finish()  # type: ignore[attr-defined]
        self._events(resolved, events, b"", total)
        self._cut()


def _ctime_ns(hdr: TarHeader, header_block: bytes) -> int | None:
    """The change time Go's tar reader finds: a PAX ``ctime``, or a GNU header's ctime field."""
    from ..tarread import parse_numeric, parse_pax_time

    if hdr.pax and hdr.pax.get(b"ctime"):
        return parse_pax_time(hdr.pax[b"ctime"])
    if len(header_block) == 512 and header_block[257:265] == b"ustar  \x00" and header_block[357]:
        try:
            return parse_numeric(header_block[357:369]) * 1_000_000_000
        except Exception:
            return None
    return None


_TAR_TYPES = {ord("0"): _toc.TYPE_REG, ord("1"): _toc.TYPE_LINK, ord("2"): _toc.TYPE_SYMLINK,
              ord("3"): _toc.TYPE_CHAR, ord("4"): _toc.TYPE_BLOCK, ord("5"): _toc.TYPE_DIR,
              ord("6"): _toc.TYPE_FIFO}


def _text(b: bytes) -> str:
    # Go keeps names as (possibly invalid) UTF-8 strings; JSON then has U+FFFD per bad byte.
    return b.decode("utf-8", "replace")


def _entry_for(hdr: TarHeader, header_block: bytes) -> _toc.TOCEntry:
    """Go's minimal.NewFileMetadata for one tar header."""
    import base64

    typ = _TAR_TYPES.get(hdr.typeflag)
    if typ is None:
        raise _toc.ChunkedError(f"unknown tarball type: {hdr.typeflag}")
    e = _toc.TOCEntry(typ, _text(hdr.name))
    e.linkname = _text(hdr.linkname)
    e.mode = hdr.mode
    e.size = hdr.size
    e.uid = hdr.uid
    e.gid = hdr.gid
    e.modtime = format_time_ns(hdr.mtime_ns)
    if hdr.atime_ns is not None:
        e.accesstime = format_time_ns(hdr.atime_ns)
    ctime = _ctime_ns(hdr, header_block)
    if ctime is not None:
        e.changetime = format_time_ns(ctime)
    e.devmajor = hdr.devmajor
    e.devminor = hdr.devminor
    e.xattrs = {_text(k): base64.b64encode(v).decode() for k, v in hdr.xattrs()}
    return e


def _toc_json(entries: list[_toc.TOCEntry], tar_split_digest: str) -> bytes:
    """The TOC as Go's json.Marshal writes minimal.TOC."""
    from ..tarsplit import go_json_string

    def value(v: object) -> str:
        if isinstance(v, str):
            return go_json_string(v)
        if isinstance(v, dict):
            return "{" + ",".join(f"{go_json_string(k)}:{go_json_string(x)}" for k, x in v.items()) + "}"
        return str(v)

    parts = []
    for e in entries:
        parts.append("{" + ",".join(f'"{k}":{value(v)}' for k, v in e.to_json().items()) + "}")
    text = '{"version":1,"entries":[' + ",".join(parts) + "]"
    if tar_split_digest:
        text += f',"tarSplitDigest":"{tar_split_digest}"'
    return (text + "}").encode("utf-8")


def _skippable(out: _Out, data: bytes) -> None:
    out.write(SKIPPABLE_MAGIC + struct.pack("<I", len(data)) + data)


def compress(src: BinaryIO, out: BinaryIO, *, level: int | None = DEFAULT_LEVEL,
             legacy_annotations: bool = True) -> ChunkedBlob:
    """Write the uncompressed layer tarball ``src`` to ``out`` as a zstd:chunked blob.

    The result's annotations go on the layer's descriptor in the image manifest; without them
    the blob is still an ordinary ``application/vnd.oci.image.layer.v1.tar+zstd`` layer.

    Args:
        src: the tarball, uncompressed, read once from where it stands.
        out: where the blob goes; written sequentially (a pipe will do).
        level: the zstd compression level of every frame; None writes the same layout without
            compressing anything (what Go's ``convert_images`` keeps locally).
        legacy_annotations: also give the annotation names Go 1.43 reads (Debian's skopeo 1.9.3
            and podman 4.3 pull such layers partially only with them); current Go ignores them.

    Returns:
        The blob's digest and size, the tarball's digest and size, the TOC digest and the
        annotations.

    Raises:
        InvalidArchive: the tarball is malformed, or has an entry type zstd:chunked cannot hold
            (Go refuses the same ones).
    """
    from backports.zstd import ZstdCompressor  # type: ignore[import-not-found,unused-ignore]

    from ..tarread import TarReader
    from ..tarsplit import TarSplitWriter

    blob = _Out(out)
    frames = _Frames(blob, level)
    tar_hash = hashlib.sha256()
    tar_size = 0

    def read_chunk() -> bytes:
        nonlocal tar_size
        data = src.read(_READ)
        tar_hash.update(data)
        tar_size += len(data)
        return data

    # The tar-split is zstd-compressed in memory, as Go does: a small fraction of the tarball.
    import io

    ts_buf = io.BytesIO()
    ts_cctx = ZstdCompressor(level) if level is not None else None
    ts_raw_size = 0

    class _Counting:  # counts the JSON lines on their way into the zstd compressor
        def compress(self, data: bytes) -> bytes:
            nonlocal ts_raw_size
            ts_raw_size += len(data)
            return ts_cctx.compress(data) if ts_cctx is not None else data

        def flush(self) -> bytes:
            if ts_cctx is None:
                return b""
            return ts_cctx.flush(ZstdCompressor.FLUSH_FRAME)

    tar_split = TarSplitWriter(ts_buf, compressor=_Counting())
    reader = TarReader(read_chunk)
    new_chunker = _new_chunker()
    entries: list[_toc.TOCEntry] = []
    while True:
        hdr = reader.next()
        for piece in reader.flushed_raw:
            frames.write(piece)
            tar_split.add_segment(piece)
        header_tail = b"".join(reader.flushed_raw)[-512:]
        reader.flushed_raw.clear()
        if hdr is None:
            break
        raw = reader.take_raw()
        frames.write(raw)
        tar_split.add_segment(raw)
        if reader.sparse is not None:
            raise _toc.ChunkedError(f"sparse file {_text(hdr.name)!r}: unknown tarball type: "
                                    f"{hdr.typeflag}")
        entry = _entry_for(hdr, (header_tail + raw)[-512:])
        fw = _FileWriter(frames, new_chunker())
        crc = 0
        pos = 0
        for content in reader.content():
            crc = crc64(content, crc)
            fw.feed(content, pos)
            pos += len(content)
        fw.finish(pos)
        tar_split.add_file(hdr.name, hdr.size, crc.to_bytes(8, "big") if hdr.size > 0 else None)
        if fw.start:
            entry.digest = "sha256:" + fw.payload.hexdigest()
            entry.offset = fw.start
            entry.end_offset = fw.last_offset
        entries.append(entry)
        if len(fw.chunks) > 1:
            for n, chunk in enumerate(fw.chunks):
                c = entry if n == 0 else _toc.TOCEntry(_toc.TYPE_CHUNK, entry.name)
                c.chunk_offset, c.offset, c.chunk_digest, c.chunk_size, c.chunk_type = chunk
                if n:
                    entries.append(c)
    raw = reader.take_raw()
    frames.write(raw)
    tar_split.add_segment(raw)
    for piece in reader.trailing():
        frames.write(piece)
        tar_split.add_segment(piece)
    # (Unlike Go 1.43's import, current Go's packer records no empty segment at the end.)
    data_end = frames.end()
    tar_split.close()

    ts_data = ts_buf.getvalue()
    ts_digest = "sha256:" + hashlib.sha256(ts_data).hexdigest()
    manifest = _toc_json(entries, ts_digest)
    manifest_z = (ZstdCompressor(level).compress(manifest, ZstdCompressor.FLUSH_FRAME) if level is not None
                  else manifest)
    toc_digest = "sha256:" + hashlib.sha256(manifest_z).hexdigest()
    manifest_offset = data_end + 8
    ts_offset = manifest_offset + len(manifest_z) + 8
    _skippable(blob, manifest_z)
    _skippable(blob, ts_data)
    footer = struct.pack("<7Q", manifest_offset, len(manifest_z), len(manifest), MANIFEST_TYPE_CRFS,
                         ts_offset, len(ts_data), ts_raw_size) + FOOTER_MAGIC
    _skippable(blob, footer)
    position = f"{manifest_offset}:{len(manifest_z)}:{len(manifest)}:{MANIFEST_TYPE_CRFS}"
    annotations = {
        _toc.MANIFEST_CHECKSUM: toc_digest,
        _toc.MANIFEST_POSITION: position,
        _toc.TARSPLIT_POSITION: f"{ts_offset}:{len(ts_data)}:{ts_raw_size}",
    }
    if legacy_annotations:
        annotations[_toc.LEGACY_MANIFEST_CHECKSUM] = toc_digest
        annotations[_toc.LEGACY_MANIFEST_POSITION] = position
    return ChunkedBlob("sha256:" + blob.hash.hexdigest(), blob.offset, "sha256:" + tar_hash.hexdigest(),
                       tar_size, toc_digest, annotations)
