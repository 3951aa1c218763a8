"""Reading a layer's table of contents: zstd:chunked (annotations or footer) and eStargz (footer).

Every byte read here is checked before it is used: the TOC against the digest in the layer's
annotations (which the image manifest, itself checked by digest, carries), the tar-split against
the digest the TOC gives it, and the two against each other, entry by entry, as Go does, so that
what is applied from the TOC is what ``diff`` later gives back from the tar-split.
"""

from __future__ import annotations

import hashlib
import struct

from ... import TYPE_CHECKING
from ...records import format_time_ns
from .. import tarread
from . import toc as _toc
from .toc import MAX_TOC_SIZE, ChunkedError, FallbackToFullPull

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Mapping
    from typing import IO, Any

    from ..tarread import TarHeader
    from .source import BlobSource, RangeReader

__all__ = ["LayerTOC", "TarSplitFile", "read_estargz_toc", "read_zstd_chunked_toc"]

ZSTD_CHUNKED = "zstd:chunked"
ESTARGZ = "estargz"
UNCOMPRESSED = "uncompressed"  # convert_images: a local zstd:chunked-shaped copy, not compressed

_FOOTER_MAGIC = b"GNUlInUx"
_LEGACY_FOOTER_MAGIC = b"GnUlInUx"  # Go 1.43's 40-byte footer
_ESTARGZ_FOOTER = 51
# A tar-split larger than this (uncompressed) is refused rather than written to disk.
MAX_TAR_SPLIT_SIZE = 1 << 33
_FIRST_BLOCK = 64 << 10  # the first block of a tar-split read as it is decompressed


# Why a layer without a trusted tar-split is pulled whole (unless the insecure option is set).
NO_TAR_SPLIT = ("zstd:chunked layers without tar-split data don't support partial pulls with guaranteed "
                "consistency with non-partial pulls")


def reading_manifest(e: ChunkedError) -> ChunkedError:
    """``e``, found reading a zstd:chunked TOC, worded as Go words it."""
    return ChunkedError(f"read zstd:chunked manifest: {e}")


def _check_tar_split_digest(named: str, got: str) -> None:
    if got != named:
        raise ChunkedError(f"validating and decompressing tar-split: invalid blob checksum, expected "
                           f"checksum {named}, got {got}")


class TarSplitFile:
    """The layer's tar-split, uncompressed JSON lines in an unnamed temporary file.

    Attributes:
        file: the temporary file; written when first asked for when made with ``fill`` (its
            bytes were checked against their digest already; decompressing them can still fail).
        tar_size: the size of the tarball it describes (segments plus file sizes).
        files: ``(name, size, crc)`` of its file entries with content, in order.
    """

    def __init__(self, file: IO[bytes] | None = None, *,
                 fill: tuple[Callable[[], IO[bytes]], Callable[[], Iterator[bytes]]] | None = None) -> None:
        """``file`` as it is, or ``fill``: (a new empty file, the decompressed pieces to write
        to it), called when the tar-split is first read."""
        assert (file is None) != (fill is None)
        self._file = file
        self._fill = fill
        self.tar_size = 0
        self.files: list[tuple[bytes, int, bytes | None]] = []

    @property
    def file(self) -> IO[bytes]:
        if self._file is None:
            for _ in self._filling():
                pass
        assert self._file is not None
        return self._file

    def _filling(self) -> Iterator[bytes]:
        """Write the file, yielding each piece as it is written.  Left before its end (an error,
        or a reader that stops), the part written is dropped and the next read starts again."""
        assert self._fill is not None
        new_file, pieces = self._fill
        f = new_file()
        try:
            for piece in pieces():
                f.write(piece)
                yield piece
        except BaseException:
            f.close()
            raise
        self._file = f
        self._fill = None

    def close(self) -> None:
        self._fill = None
        if self._file is not None:
            self._file.close()

    def blocks(self) -> Generator[bytes, None, None]:
        """Its JSON text in bounded pieces of whole lines (the last may lack its newline).

        The first read decompresses as it goes (and keeps what it decompressed in the file), and
        its first block is a small one: a partial pull's first file is streamed once the lines
        before it are checked, not once the whole tar-split is decompressed and its first MiB
        checked (~25 and ~15 ms of the benchmark's layer)."""
        file = self._file
        if file is None:
            pieces = self._filling()
            first = _FIRST_BLOCK
        else:
            file.seek(0)
            pieces = iter(lambda: file.read(1 << 20), b"")
            first = 0
        rest = b""
        for block in pieces:
            data = rest + block if rest else block
            if first and len(data) > first:
                cut = data.rfind(b"\n", 0, first)
                if cut >= 0:
                    yield data[:cut]
                    data = data[cut + 1 :]
                first = 0
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            yield data[:cut]
        if rest.strip():
            yield rest

    def lines(self) -> Iterator[bytes]:
        """Its JSON lines."""
        for block in self.blocks():
            yield from block.split(b"\n")


class LayerTOC:
    """A layer's checked table of contents and what came with it.

    Attributes:
        kind: ``"zstd:chunked"``, ``"estargz"`` or ``"uncompressed"`` (a converted copy).
        toc_digest: the TOC digest the annotations gave.
        manifest: the TOC as stored in the layer's ``zstd-chunked-manifest`` big data.
        toc: the parsed entries.
        tar_split: the tar-split, when the layer has one.
        data_end: where file data ends in the blob (the TOC's own offset).
    """

    def __init__(self, kind: str, toc_digest: str, manifest: bytes | None,
                 toc: _toc.TOC | tuple[int, list[object], str] | None, tar_split: TarSplitFile | None,
                 data_end: int, *, manifest_z: bytes = b"", manifest_size: int = 0,
                 tar_split_digest: str = "") -> None:
        """``manifest`` and ``toc`` None: the TOC is decompressed (from ``manifest_z``, at most
        ``manifest_size`` bytes) and loaded when first needed, and the digest its
        ``tarSplitDigest`` names must be ``tar_split_digest``, the tar-split's."""
        self.kind = kind
        self.toc_digest = toc_digest
        self._manifest = manifest
        self._manifest_z = manifest_z
        self._manifest_size = manifest_size
        self._tar_split_digest = tar_split_digest
        # Parsed when first needed: a layer applied whole checks its TOC while it streams.
        self._toc = toc if isinstance(toc, _toc.TOC) else None
        self._loaded = toc if not isinstance(toc, _toc.TOC) else None
        self.tar_split = tar_split
        self.data_end = data_end

    @property
    def manifest(self) -> bytes:
        """The TOC as stored in the layer's ``zstd-chunked-manifest`` big data."""
        if self._manifest is None:
            try:
                self._manifest = b"".join(_zstd_decompress(self._manifest_z, self._manifest_size, "the TOC"))
            except ChunkedError as e:
                raise reading_manifest(e) from None
            self._manifest_z = b""
        return self._manifest

    @property
    def toc(self) -> _toc.TOC:
        """The parsed, checked entries (ChunkedError when they are not valid)."""
        if self._toc is None:
            if self._loaded is None:
                self._loaded = self._load()
            self._toc = _toc.parse_toc(self._loaded, self.data_end, estargz=self.kind == ESTARGZ)
            self._loaded = None
        return self._toc

    def _load(self) -> tuple[int, list[object], str]:
        """The TOC read late (see read_zstd_chunked_toc's ``defer``), with the checks made
        there otherwise, and what they raise there."""
        manifest = self.manifest  # (its faults are worded already)
        try:
            loaded = _toc.load_toc(manifest)
            if loaded[2]:
                _check_tar_split_digest(loaded[2], self._tar_split_digest)
        except ChunkedError as e:
            raise reading_manifest(e) from None
        if not loaded[2]:  # Go would have ignored the tar-split, and so pulled the layer whole
            raise FallbackToFullPull(NO_TAR_SPLIT, can_convert=True)
        return loaded

    def close(self) -> None:
        """Drop the temporary tar-split file."""
        if self.tar_split is not None:
            self.tar_split.close()
            self.tar_split = None


def _read_exact(reader: RangeReader, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = reader.read(n - got)
        if not data:
            raise ChunkedError("not enough data returned from the blob source")
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _fetch(source: BlobSource, chunks: list[tuple[int, int]]) -> list[bytes]:
    """Small ranges (a TOC, a footer) read whole into memory (each at most MAX_TOC_SIZE)."""
    from .toc import BadRangeRequest

    try:
        readers = source.get_blob_at(chunks)
    except BadRangeRequest as e:
        raise FallbackToFullPull(str(e), can_convert=True) from e
    out: list[bytes] = []
    try:
        for (_, length), reader in zip(chunks, readers, strict=False):
            out.append(_read_exact(reader, length))
    finally:
        close = getattr(readers, "close", None)
        if close is not None:
            close()
    if len(out) != len(chunks):
        raise ChunkedError("not enough data returned from the blob source")
    return out


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _decompressed(data: bytes, gzip: bool, limit: int, too_big: str, invalid: str) -> Iterator[bytes]:
    """``data``'s zstd frames (gzip members with ``gzip``), in pieces: ChunkedError(``too_big``)
    beyond ``limit`` bytes (a decompression bomb), ChunkedError(``invalid: why``) when they are
    not valid."""
    from ...errors import InvalidArchive
    from ..compression import Compression, Decompressor

    dec = Decompressor(Compression.GZIP if gzip else Compression.ZSTD)
    size = 0
    try:
        for piece in dec.feed(data):
            size += len(piece)
            if size > limit:
                raise ChunkedError(too_big)
            yield piece
        dec.finish()
    except ChunkedError:
        raise
    except InvalidArchive as e:
        raise ChunkedError(f"{invalid}: {e}") from None


def _zstd_decompress(data: bytes, limit: int, what: str) -> Iterator[bytes]:
    """``data``'s zstd frames, in pieces, refused beyond ``limit`` bytes (a decompression bomb)."""
    return _decompressed(data, False, limit, f"{what} is larger than announced", f"decompressing {what}")


def _parse_position(value: str, fields: int, what: str) -> tuple[int, ...]:
    parts = value.split(":")
    if len(parts) != fields or not all(p.isdigit() for p in parts):
        raise ChunkedError(f"invalid {what} annotation {value!r}")
    return tuple(int(p) for p in parts)


def _footer_position(source: BlobSource, blob_size: int) -> tuple[int, int, int, int]:
    """Where the TOC is, from the footer at the end of the blob (Go 1.43 without annotations)."""
    if blob_size <= 64:
        raise ChunkedError("blob too small")
    (footer,) = _fetch(source, [(blob_size - 64, 64)])
    if footer[-8:] == _FOOTER_MAGIC:
        offset, length, length_raw, kind = struct.unpack("<4Q", footer[:32])
    elif footer[-8:] == _LEGACY_FOOTER_MAGIC:
        offset, length, length_raw, kind = struct.unpack("<4Q", footer[24:56])
    else:
        raise ChunkedError("invalid magic number")
    return offset, length, length_raw, kind


def read_zstd_chunked_toc(source: BlobSource, blob_size: int, toc_digest: str,
                          annotations: Mapping[str, str], tmp_dir: str, *,
                          compressed: bool = True, check: bool = True,
                          defer: Callable[[], bool] | None = None) -> LayerTOC:
    """Fetch and check a zstd:chunked TOC and tar-split: one request for both, as Go makes.

    With ``check`` False the TOC and the tar-split are not compared here: the caller does it
    (:func:`check_toc_matches_tar_split`, or entry by entry while it streams the layer).
    With ``check`` False and ``defer`` saying so once they are fetched, a TOC with a tar-split
    is only checked against its digest here: decompressing and loading it, and holding the
    tar-split to the digest the TOC names, wait until the TOC is first used (a layer applied
    whole does that in the thread that reads it, once the apply has started: ~30 ms of the
    benchmark's layer); a TOC naming no tar-split then falls back to a full pull.

    Raises:
        FallbackToFullPull: the TOC is too large to read into memory, or the source has no ranges.
        ChunkedError: anything does not match its digest or the other.
    """
    position = annotations.get(_toc.MANIFEST_POSITION)
    ts_position = annotations.get(_toc.TARSPLIT_POSITION) if position else None
    if position is None:
        position = annotations.get(_toc.LEGACY_MANIFEST_POSITION)
    if position:
        offset, length, length_raw, kind = _parse_position(position, 4, "manifest position")
    else:
        offset, length, length_raw, kind = _footer_position(source, blob_size)
    if kind != 1:
        raise ChunkedError("invalid manifest type")
    if length > MAX_TOC_SIZE or length_raw > MAX_TOC_SIZE:
        raise FallbackToFullPull("zstd:chunked manifest too big to process in memory "
                                 f"({max(length, length_raw)} bytes)")
    chunks = [(offset, length)]
    ts_chunk: tuple[int, int, int] | None = None
    if ts_position:
        ts_off, ts_len, ts_raw = _parse_position(ts_position, 3, "tar-split position")
        ts_chunk = (ts_off, ts_len, ts_raw)
        if ts_len > MAX_TOC_SIZE:
            raise FallbackToFullPull(f"zstd:chunked tar-split too big to process in memory ({ts_len} bytes)")
        chunks.append((ts_chunk[0], ts_chunk[1]))
    for off, n in chunks:
        if off + n > blob_size or n <= 0:
            raise ChunkedError(f"TOC range {off}+{n} is outside the blob ({blob_size} bytes)")
    blobs = _fetch(source, chunks)
    manifest_z = blobs[0]
    got = _sha256(manifest_z)
    if got != toc_digest:
        raise ChunkedError(f"validating and decompressing TOC: invalid blob checksum, expected checksum "
                           f"{toc_digest}, got {got}")
    if compressed and ts_chunk is not None and not check and defer is not None and defer():
        ts_z = blobs[1]
        late_ts = _write_tar_split(ts_z, ts_chunk[2], tmp_dir, True)
        return LayerTOC(ZSTD_CHUNKED, toc_digest, None, None, late_ts, offset - 8 if offset >= 8 else 0,
                        manifest_z=manifest_z, manifest_size=length_raw, tar_split_digest=_sha256(ts_z))
    manifest = b"".join(_zstd_decompress(manifest_z, length_raw, "the TOC")) if compressed else manifest_z
    loaded = _toc.load_toc(manifest)
    tar_split_digest = loaded[2]
    tar_split: TarSplitFile | None = None
    if tar_split_digest:
        if ts_chunk is None:
            raise ChunkedError(f"TOC requires a tar-split, but the {_toc.TARSPLIT_POSITION} annotation does "
                               "not describe a position")
        ts_z = blobs[1]
        _check_tar_split_digest(tar_split_digest, _sha256(ts_z))
        tar_split = _write_tar_split(ts_z, ts_chunk[2], tmp_dir, compressed)
    # (A tar-split the TOC does not name a digest for cannot be trusted: ignored, as in Go.)
    layer_toc = LayerTOC(ZSTD_CHUNKED if compressed else UNCOMPRESSED, toc_digest, manifest, loaded,
                         tar_split, offset - 8 if offset >= 8 else 0)
    if check:
        try:
            toc = layer_toc.toc
            if tar_split is not None:
                check_toc_matches_tar_split(toc, tar_split)
        except BaseException:
            layer_toc.close()
            raise
    return layer_toc


def _write_tar_split(data: bytes, announced: int, tmp_dir: str, compressed: bool) -> TarSplitFile:
    """The tar-split (checked against its digest), decompressed when first read: a layer
    applied whole reads it first in the thread that decodes the layer, after the apply started,
    rather than before (~11 ms of the benchmark's layer)."""
    from ...fsutil import anonymous_file

    limit = min(announced, MAX_TAR_SPLIT_SIZE) if announced else MAX_TAR_SPLIT_SIZE

    def new_file() -> IO[bytes]:
        return anonymous_file(tmp_dir)  # the TarSplitFile owns it

    def pieces() -> Iterator[bytes]:
        if not compressed:
            return iter((data,))
        return _zstd_decompress(data, limit, "the tar-split")

    return TarSplitFile(fill=(new_file, pieces))


# -- TOC against tar-split -------------------------------------------------------------------

def _decode_line(line: bytes) -> tuple[int, bytes, int, bytes | None] | None:
    """One tar-split JSON line as (type, name, size, payload), type 1 a file, 2 raw bytes, as
    the tar-split reader decodes it (Go's JSON: strict base64, ``name_raw`` or ``name``); None
    for a blank line.  The TOC check also wants a type it knows and 8-byte file checksums."""
    from ...errors import InvalidArchive
    from ..tarsplit import _decode_line as decode

    try:
        entry = decode(line)
    except InvalidArchive as e:
        raise ChunkedError(f"tar-split: {e}") from None
    if entry is None:
        return None
    typ, payload = entry.type, entry.payload
    if typ == 1:
        if payload is not None and len(payload) != 8:
            raise ChunkedError("corrupt tar-split: bad checksum in file entry")
    elif typ != 2:
        raise ChunkedError(f"unexpected tar-split entry type {typ!r}")
    return typ, entry.name, entry.size, payload


def checked_entries(ts: TarSplitFile, pending: dict[str, _toc.TOCEntry]
                    ) -> Iterator[tuple[int, bytes, int, bytes | None]]:
    """The tar-split's entries as (type, name, size, payload), type 1 a file, 2 raw bytes; a
    file entry once the tar header before it (in the raw bytes since the previous file, after
    that file's padding) says what the TOC entry of its name says, that entry taken out of
    ``pending`` (Go's ensureTOCMatchesTarSplit, entry by entry; :func:`check_none_pending`
    at the end).

    With the ``_tocmatch`` extension the lines in the packer's shapes and the plain headers
    are checked in C, a block of lines at a time, and only the others here: the same checks,
    without a Python loop over every entry (a seventh of a whole layer's apply)."""

    def check(region: bytes, pad: int, name: bytes, size: int) -> None:
        hdr, block = _header(region, pad, name)
        if hdr.data_size() != size:
            raise ChunkedError(f"tar-split: the size of {name!r} is not its header's")
        check_entry(pending, hdr, block)

    scanner = _tocmatch_scanner()
    if scanner is not None:
        feed = scanner(pending, _decode_line, check).feed
        for block in ts.blocks():
            yield from feed(block)
        return
    region = bytearray()
    pad = 0
    for line in ts.lines():
        entry = _decode_line(line)
        if entry is None:
            continue
        typ, name, size, payload = entry
        if typ == 2:
            if payload:
                region += payload
        else:
            check(bytes(region), pad, name, size)
            region.clear()
            pad = -size % 512
        yield entry


def _tocmatch_scanner() -> Any:
    """The C ``Scanner``, or None (see :func:`toc.accelerator`)."""
    accel = _toc.accelerator()
    return None if accel is None else accel.Scanner


def _header(region: bytes, pad: int, name: bytes) -> tuple[TarHeader, bytes]:
    """The one tar header (after any PAX or GNU long-name headers) that the tar-split's raw bytes
    before a file entry hold, after ``pad`` bytes of the previous file's padding."""
    pos = pad
    pax: dict[bytes, bytes] | None = None
    long_name = long_link = b""
    while True:
        block = region[pos : pos + tarread.BLOCK]
        if len(block) < tarread.BLOCK:
            raise ChunkedError(f"tar-split: no header for {name!r}")
        hdr = tarread.parse_header_block(block)
        pos += tarread.BLOCK
        flag = hdr.typeflag
        if flag in (tarread.XHEADER, tarread.GNU_LONGNAME, tarread.GNU_LONGLINK):
            if not 0 <= hdr.size <= tarread.MAX_SPECIAL_FILE or pos + hdr.size > len(region):
                raise ChunkedError(f"tar-split: invalid extended header before {name!r}")
            data = region[pos : pos + hdr.size]
            pos += hdr.size + (-hdr.size % tarread.BLOCK)
            if flag == tarread.XHEADER:
                pax = tarread.parse_pax(data)
            elif flag == tarread.GNU_LONGNAME:
                long_name = tarread._cstring(data)
            else:
                long_link = tarread._cstring(data)
            continue
        break
    if pos != len(region):
        raise ChunkedError(f"tar-split: unexpected data around the header of {name!r}")
    if pax:
        tarread._merge_pax(hdr, pax)
    if long_name:
        hdr.name = long_name
    if long_link:
        hdr.linkname = long_link
    if hdr.typeflag == tarread.REGA:
        hdr.typeflag = tarread.DIR if hdr.name.endswith(b"/") else ord("0")
    if hdr.name != name:
        raise ChunkedError(f"tar-split: the header of {name!r} names {hdr.name!r}")
    return hdr, block


def _time_ns(value: str | None) -> int | None:
    """An RFC 3339 time of the TOC as nanoseconds since the epoch; the zero time and the epoch
    itself count as absent, as Go's ensureTimePointersMatch treats them."""
    import datetime
    import re

    if not value:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", value)
    if not m:
        raise ChunkedError(f"invalid time {value!r} in TOC")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        t = datetime.datetime.fromisoformat(m.group(1) + zone)
    except ValueError:
        raise ChunkedError(f"invalid time {value!r} in TOC") from None
    ns = int(t.timestamp()) * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))
    if ns == 0 or t.year == 1:
        return None
    return ns


def check_entry(pending: dict[str, _toc.TOCEntry], hdr: TarHeader, block: bytes) -> None:
    """The TOC's entry for the tar header ``hdr`` (taken out of ``pending``) says what the header
    says: Go's ensureFileMetadataAttributesMatch."""
    from .compressor import _TAR_TYPES, _entry_for  # (the writer's module: only this path needs it)

    name = hdr.name.decode("utf-8", "replace")
    e = pending.pop(name, None)
    if e is None:
        raise ChunkedError(f"tar-split and TOC data is inconsistent: tar-split contains an entry for "
                           f"{name!r} missing in TOC")
    # The common case, field by field without building the TOC entry the header makes: no
    # xattrs, no change time, the times as Go's writer formats them.
    if (not hdr.pax and not e.xattrs and not e.changetime and e.type == _TAR_TYPES.get(hdr.typeflag)
            and e.mode == hdr.mode and e.size == hdr.size and e.uid == hdr.uid and e.gid == hdr.gid
            and e.devmajor == hdr.devmajor and e.devminor == hdr.devminor
            and e.modtime == _cached_time(hdr.mtime_ns)
            and e.accesstime == (None if hdr.atime_ns is None else _cached_time(hdr.atime_ns))
            and e.linkname == (hdr.linkname.decode("utf-8", "replace") if hdr.linkname else "")
            and not (block[257:265] == b"ustar  \x00" and block[357])):
        return
    try:
        want = _entry_for(hdr, block)
    except ChunkedError as err:
        raise ChunkedError(f"tar-split and TOC data is inconsistent: {err}") from None
    if (e.type, e.linkname, e.mode, e.size, e.uid, e.gid, e.devmajor, e.devminor) != (
            want.type, want.linkname, want.mode, want.size, want.uid, want.gid, want.devmajor,
            want.devminor) or e.xattrs != want.xattrs:
        attr = next(a for a in ("type", "linkname", "mode", "size", "uid", "gid", "devmajor", "devminor",
                                "xattrs") if getattr(e, a) != getattr(want, a))
        raise ChunkedError(f"tar-split and TOC data is inconsistent: TOC and tar-split metadata "
                           f"doesn't match: mismatch of {attr} for {name!r}")
    for attr in ("modtime", "accesstime", "changetime"):
        mine, theirs = getattr(e, attr), getattr(want, attr)
        # The same string (Go's writer in UTC, as ours) is the same time; else compare times.
        if mine != theirs and _time_ns(mine) != _time_ns(theirs):
            raise ChunkedError(f"tar-split and TOC data is inconsistent: TOC and tar-split metadata "
                               f"doesn't match: mismatch of {attr} for {name!r}")


_TIMES: dict[int, str] = {}


def _cached_time(ns: int) -> str:
    """Go's JSON text of a time; the few times of a layer's files are formatted once each."""
    text = _TIMES.get(ns)
    if text is None:
        text = format_time_ns(ns)
        if len(_TIMES) < 4096:
            _TIMES[ns] = text
    return text


def check_none_pending(pending: dict[str, _toc.TOCEntry]) -> None:
    """Every TOC entry had its tar header."""
    if pending:
        some = sorted(pending)[:5]
        raise ChunkedError(f"tar-split and TOC data is inconsistent: TOC contains entries not present in "
                           f"tar-split, incl. {some!r}")


def check_toc_matches_tar_split(toc: _toc.TOC, ts: TarSplitFile) -> None:
    """Go's ensureTOCMatchesTarSplit: exactly the same entries, with the same attributes."""
    from ...errors import InvalidArchive

    pending = {e.name: e for e in toc.entries}
    total = 0
    files: list[tuple[bytes, int, bytes | None]] = []
    try:
        for typ, name, size, payload in checked_entries(ts, pending):
            if typ == 2:
                total += len(payload or b"")
                continue
            total += size
            if size:
                files.append((name, size, payload))
    except InvalidArchive as e:
        if isinstance(e, ChunkedError):
            raise
        raise ChunkedError(f"tar-split: {e}") from None
    ts.tar_size = total
    ts.files = files
    check_none_pending(pending)
    # Files with content, in the same order in both (the puller streams them in that order).
    toc_files = [(f.entry.name, f.entry.size) for f in toc.files]
    ts_files = [(n.decode("utf-8", "replace"), s) for n, s, _ in ts.files]
    if toc_files != ts_files:
        raise ChunkedError("tar-split and TOC data is inconsistent: files are in another order")


# -- eStargz ---------------------------------------------------------------------------------

def read_estargz_toc(source: BlobSource, blob_size: int, toc_digest: str) -> LayerTOC:
    """Fetch and check an eStargz TOC: the footer, then the TOC's gzip member (two requests, as
    Go makes).

    Raises:
        FallbackToFullPull: the TOC is too large, or the source has no ranges.
        ChunkedError: the footer or TOC is malformed, or the TOC does not match its digest.
    """
    from ...errors import InvalidArchive

    if blob_size <= _ESTARGZ_FOOTER:
        raise ChunkedError("blob too small")
    (footer,) = _fetch(source, [(blob_size - _ESTARGZ_FOOTER, _ESTARGZ_FOOTER)])
    try:
        toc_offset = int(footer[16:32].decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        raise ChunkedError("parse ToC offset: invalid footer") from None
    if footer[32:38] != b"STARGZ" or not 0 < toc_offset < blob_size - _ESTARGZ_FOOTER:
        raise ChunkedError("parse ToC offset: invalid footer")
    size = blob_size - _ESTARGZ_FOOTER - toc_offset
    if size > MAX_TOC_SIZE:
        raise FallbackToFullPull(f"estargz manifest too big to process in memory ({size} bytes)")
    (member,) = _fetch(source, [(toc_offset, size)])
    out = list(_decompressed(member, True, MAX_TOC_SIZE + (1 << 20), "manifest too big", "estargz TOC"))
    data = iter(out)
    reader = tarread.TarReader(lambda: next(data, b""))
    try:
        hdr = reader.next()
        if hdr is None or hdr.size > MAX_TOC_SIZE:
            raise ChunkedError("manifest not found" if hdr is None else "manifest too big")
        manifest = b"".join(bytes(p) for p in reader.content())
    except InvalidArchive as e:
        if isinstance(e, ChunkedError):
            raise
        raise ChunkedError(f"estargz TOC: {e}") from None
    if _sha256(manifest) != toc_digest:
        raise ChunkedError("invalid manifest checksum")
    toc = _toc.parse_toc(manifest, toc_offset, estargz=True)
    return LayerTOC(ESTARGZ, toc_digest, manifest, toc, None, toc_offset)
