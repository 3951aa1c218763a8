"""Compression of layer streams: detection by magic bytes and streaming (de)compression.

Decompression is incremental with a bound on each output chunk, so neither a large layer nor a
decompression bomb is ever held in memory.  All codecs are C libraries that release the GIL
(ISA-L for gzip, libzstd, libbz2, liblzma), which lets apply run them in a reader thread while the
main thread writes files.  Concatenated members/streams are accepted, as Go's readers do.
"""

from __future__ import annotations

import io

from .. import TYPE_CHECKING
from ..errors import InvalidArchive

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, BinaryIO, ClassVar, Protocol, cast
else:
    def cast(_type: object, value: object) -> object:  # typing.cast: the identity at run time
        return value

    Protocol = object

__all__ = [
    "CHUNK_OUT",
    "Compression",
    "Decompressor",
    "detect",
    "open_compressed",
    "open_decompressed",
]

# Largest piece of output one decompress call may return; keeps memory bounded for any input.
CHUNK_OUT = 4 << 20
# Input given to a member at first, doubled up to the last while it wants more (see feed()).
_FIRST_SLICE = 8 << 10
_MAX_SLICE = 1 << 20
# Outputs smaller than this are joined before they are handed on.
_JOIN = 1 << 20


class _CompressionType(type):
    """Gives ``Compression`` the parts of Enum's class interface the code uses: iteration over
    the members and lookup by value, ``Compression(2)``."""

    _members: tuple[Compression, ...]

    def __iter__(cls) -> Iterator[Compression]:
        return iter(cls._members)

    def __len__(cls) -> int:
        return len(cls._members)


class Compression(int, metaclass=_CompressionType):
    """Go's ``archive.Compression`` values, which layers.json stores as ``"compression"``.

    An ``int`` with five named singleton members that behaves like the ``IntEnum`` it replaces
    (``Compression(2) is Compression.GZIP``, ``.name``, ``.value``, iteration), without importing
    ``enum``, which with its functools and collections cost a cold CLI call ~9 ms.
    """

    __slots__ = ()

    UNCOMPRESSED: ClassVar[Compression]
    BZIP2: ClassVar[Compression]
    GZIP: ClassVar[Compression]
    XZ: ClassVar[Compression]
    ZSTD: ClassVar[Compression]

    def __new__(cls, value: int) -> Compression:
        members = cls._members
        if isinstance(value, int) and 0 <= value < len(members):
            return members[value]
        raise ValueError(f"{value!r} is not a valid Compression")

    @property
    def name(self) -> str:
        return _NAMES[self]

    @property
    def value(self) -> int:
        return int(self)

    @property
    def extension(self) -> str:
        """Go's ``Compression.Extension()``."""
        return _EXTENSIONS[self]

    @property
    def name_go(self) -> str:
        """Go's ``Compression.String()``, as printed by the CLI."""
        return _GO_NAMES[self]

    def __repr__(self) -> str:
        return f"<Compression.{self.name}: {int(self)}>"

    __str__ = int.__repr__  # as IntEnum's: the number


_NAMES = ("UNCOMPRESSED", "BZIP2", "GZIP", "XZ", "ZSTD")
Compression._members = tuple(int.__new__(Compression, i) for i in range(len(_NAMES)))
for _member in Compression._members:
    setattr(Compression, _NAMES[_member], _member)
del _member

_EXTENSIONS = ("tar", "tar.bz2", "tar.gz", "tar.xz", "tar.zst")
_GO_NAMES = ("Uncompressed", "Bzip2", "Gzip", "Xz", "Zstd")
_MAGIC = {
    Compression.BZIP2: b"BZh",
    Compression.GZIP: b"\x1f\x8b\x08",
    Compression.XZ: b"\xfd7zXZ\x00",
    Compression.ZSTD: b"\x28\xb5\x2f\xfd",
}
# Enough leading bytes to tell every format apart.
MAGIC_LEN = max(len(m) for m in _MAGIC.values())


def detect(head: bytes | bytearray | memoryview) -> Compression:
    """The compression of a stream from its first bytes (Go's ``DetectCompression``)."""
    head = bytes(head[:MAGIC_LEN])
    for compression, magic in _MAGIC.items():
        if head.startswith(magic):
            return compression
    return Compression.UNCOMPRESSED


class _Member(Protocol):
    """The bz2/lzma-style one-shot-stream decompressor interface all four codecs share."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes | memoryview, max_length: int = ...) -> bytes: ...


def _new_member(compression: Compression) -> _Member:
    if compression is Compression.GZIP:
        from isal import igzip_lib

        return cast("_Member", igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP))
    if compression is Compression.ZSTD:
        return cast("_Member", _zstd().ZstdDecompressor())
    if compression is Compression.BZIP2:
        import bz2

        return cast("_Member", bz2.BZ2Decompressor())
    if compression is Compression.XZ:
        import lzma

        return cast("_Member", lzma.LZMADecompressor(format=lzma.FORMAT_XZ))
    raise ValueError(f"no decompressor for {compression!r}")


_zstd_module: Any = None


def _zstd() -> Any:
    """The zstd module, found once: a stream of many frames (zstd:chunked blobs have one per file)
    starts a decompressor per frame, and a failed ``import compression`` is not cached."""
    global _zstd_module
    if _zstd_module is None:
        try:
            from compression import zstd  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            from backports import zstd
        _zstd_module = zstd
    return _zstd_module


def _codec_errors(compression: Compression) -> tuple[type[BaseException], ...]:
    """The exceptions ``compression``'s codec raises on bad input; only its module is imported
    (lzma for gzip input, say, would be start-up time for nothing)."""
    errs: list[type[BaseException]] = [OSError, EOFError, ValueError]
    if compression is Compression.GZIP:
        from isal import igzip_lib

        errs.append(cast("type[BaseException]", igzip_lib.IsalError))
    elif compression is Compression.XZ:
        import lzma

        errs.append(lzma.LZMAError)
    elif compression is Compression.ZSTD:
        errs.append(_zstd().ZstdError)
    return tuple(errs)


class Decompressor:
    """Push-style decompressor for a whole stream of possibly concatenated members.

    ``feed(data)`` yields output pieces of at most ``CHUNK_OUT`` bytes; ``finish()`` checks that the
    input did not stop inside a member.  Errors are raised as ``InvalidArchive`` with Go-like texts.
    """

    def __init__(self, compression: Compression) -> None:
        if compression is Compression.UNCOMPRESSED:
            raise ValueError("an uncompressed stream needs no decompressor")
        self.compression = compression
        self._label = compression.name_go.lower()
        self._member: _Member | None = _new_member(compression)
        self._between = b""  # bytes seen after a member ended, before the next one is known
        self._errors = _codec_errors(compression)
        self._slice = _FIRST_SLICE  # input handed to the current member at a time
        self._zstd = compression is Compression.ZSTD

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decompress ``data`` (the next bytes of the stream); yields what it decodes to.

        A member is given its input in slices that start small and double while it asks for
        more: what it leaves unused when it ends (and the codec copies) stays small, so a stream
        of many tiny members (a zstd:chunked blob has a frame per file) costs no more than one
        member.  Small outputs are joined into pieces of about ``_JOIN`` bytes.
        """
        if self._zstd and not self._between:
            yield from self._feed_zstd(data)
            return
        view = memoryview(data)
        pos, end = 0, len(view)
        held: bytes = b""  # what an ended member left unused, to go before view[pos:]
        drain = False  # the member hit the output limit and holds input: call it with b""
        pieces: list[bytes] = []
        size = 0
        try:
            while True:
                if drain:
                    chunk: bytes | memoryview = b""
                elif held:
                    chunk, held = held, b""
                    if len(chunk) < 16 and pos < end:  # enough to see the next member's magic
                        more = view[pos : pos + self._slice]
                        pos += len(more)
                        chunk = chunk + more.tobytes()
                elif pos < end:
                    chunk = view[pos : pos + self._slice]
                    pos += len(chunk)
                else:
                    break
                member = self._member
                if member is None:
                    if self._zstd and not self._between and len(chunk) >= 4:
                        # zstd frames need no magic check here (skippable frames are frames too)
                        member = self._member = _zstd().ZstdDecompressor()
                    else:
                        chunk = self._start_next_member(bytes(chunk))
                        member = self._member
                    self._slice = _FIRST_SLICE
                    if member is None:
                        continue  # kept until the next member's magic is whole, or padding
                out = member.decompress(chunk, CHUNK_OUT)
                drain = False
                if out:
                    if size + len(out) > CHUNK_OUT and pieces:
                        yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
                        pieces, size = [], 0
                    pieces.append(out)
                    size += len(out)
                    if size >= _JOIN:
                        yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
                        pieces, size = [], 0
                if member.eof:
                    held = member.unused_data
                    self._member = None
                elif member.needs_input:
                    self._slice = min(self._slice * 2, _MAX_SLICE)
                else:
                    drain = True
            if pieces:
                yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
        except self._errors as e:
            raise InvalidArchive(f"{self._label}: {_describe(e)}") from e

    def _feed_zstd(self, data: bytes) -> Iterator[bytes]:
        """``feed`` for zstd, where a frame needs no magic check (a skippable frame is a frame
        too): the same slices and joins, with everything in locals, since a zstd:chunked blob
        runs this loop once per frame of the layer (one per file and one between files)."""
        new_member = _zstd().ZstdDecompressor
        member = self._member
        sl = self._slice
        view = memoryview(data)
        pos, end = 0, len(view)
        held: bytes = b""
        drain = False
        pieces: list[bytes] = []
        size = 0
        try:
            while True:
                if drain:
                    chunk: bytes | memoryview = b""
                elif held:
                    chunk, held = held, b""
                elif pos < end:
                    chunk = view[pos : pos + sl]
                    pos += len(chunk)
                else:
                    break
                if member is None:
                    member = new_member()
                    sl = _FIRST_SLICE
                out = member.decompress(chunk, CHUNK_OUT)
                drain = False
                if out:
                    if size + len(out) > CHUNK_OUT and pieces:
                        yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
                        pieces, size = [], 0
                    pieces.append(out)
                    size += len(out)
                    if size >= _JOIN:
                        yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
                        pieces, size = [], 0
                if member.eof:
                    held = member.unused_data
                    member = None
                elif member.needs_input:
                    if sl < _MAX_SLICE:
                        sl += sl
                else:
                    drain = True
            if pieces:
                yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
        except self._errors as e:
            raise InvalidArchive(f"{self._label}: {_describe(e)}") from e
        finally:
            self._member = member
            self._slice = sl

    def _start_next_member(self, data: bytes) -> bytes:
        """Check the start of a following member (Go errors on trailing junk) and open it."""
        data = self._between + data
        self._between = b""
        if self.compression is Compression.XZ:
            # Stream padding: NUL bytes between/after xz streams (in groups of four).
            stripped = data.lstrip(b"\0")
            if not stripped:
                self._between = data[-3:] if len(data) % 4 else b""
                return b""
            data = stripped
        magic = _MAGIC[self.compression]
        if len(data) < len(magic):
            if not magic.startswith(data):
                raise InvalidArchive(f"{self._label}: invalid header")
            self._between = data
            return b""
        if self.compression is not Compression.ZSTD and not data.startswith(magic):
            raise InvalidArchive(f"{self._label}: invalid header")
        self._member = _new_member(self.compression)
        return data

    def finish(self) -> None:
        """Raise if the input ended inside a member (Go: ``unexpected EOF``)."""
        if self._member is not None or self._between:
            if self.compression is Compression.XZ and self._member is None:
                return  # partial padding; liblzma would complain, Go's xz reader does not care
            raise InvalidArchive(f"{self._label}: unexpected EOF")


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    low = text.lower()
    if "checksum" in low:
        return "invalid checksum"
    return text


class _DecompressedReader(io.RawIOBase):
    """A file-like view of ``Decompressor`` over a source, for callers that pull."""

    def __init__(self, src: BinaryIO, compression: Compression, head: bytes) -> None:
        self._src = src
        self._dec = Decompressor(compression)
        self._buf = b""
        self._pos = 0
        self._outputs: Iterator[bytes] = self._dec.feed(head)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while self._pos >= len(self._buf):
            if self._done:
                return 0
            nxt = next(self._outputs, None)
            if nxt is None:
                chunk = self._src.read(1 << 20)
                if not chunk:
                    self._dec.finish()
                    self._done = True
                    return 0
                self._outputs = self._dec.feed(chunk)
                continue
            self._buf, self._pos = nxt, 0
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


def _read_head(src: BinaryIO) -> bytes:
    head = b""
    while len(head) < MAGIC_LEN:
        chunk = src.read(MAGIC_LEN - len(head))
        if not chunk:
            break
        head += chunk
    return head


class _Prefixed(io.RawIOBase):
    """``head`` followed by the rest of ``src``: detection without needing a seekable input."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self._head = head
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._src.read(len(view))
        view[: len(data)] = data
        return len(data)


def open_decompressed(src: BinaryIO) -> tuple[Compression, BinaryIO]:
    """Detect the compression of ``src`` and return a streaming reader of its decompressed bytes."""
    head = _read_head(src)
    compression = detect(head)
    raw: io.RawIOBase
    if compression is Compression.UNCOMPRESSED:
        raw = _Prefixed(head, src)
    else:
        raw = _DecompressedReader(src, compression, head)
    return compression, cast("BinaryIO", io.BufferedReader(raw, 1 << 20))


def open_compressed(dst: BinaryIO, compression: Compression) -> BinaryIO:
    """A writer that compresses into ``dst``; closing it flushes the codec but leaves ``dst`` open."""
    if compression is Compression.UNCOMPRESSED:
        return cast("BinaryIO", _Unclosing(dst))
    if compression is Compression.GZIP:
        from isal import igzip

        return cast("BinaryIO", igzip.IGzipFile(fileobj=dst, mode="wb", compresslevel=2))  # type: ignore[no-untyped-call]
    if compression is Compression.ZSTD:
        try:
            from compression import zstd  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            from backports import zstd
        return cast("BinaryIO", zstd.ZstdFile(dst, "w"))
    if compression is Compression.BZIP2:
        import bz2

        return cast("BinaryIO", bz2.BZ2File(dst, "w"))
    import lzma

    return cast("BinaryIO", lzma.LZMAFile(dst, "w", format=lzma.FORMAT_XZ))


class _Unclosing(io.RawIOBase):
    """Pass-through writer whose close() leaves the underlying stream open, like the codecs."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._dst.write(b)
        return len(memoryview(b))

    def flush(self) -> None:
        self._dst.flush()
