"""A streaming tar parser that keeps every byte: headers for the caller, raw bytes for tar-split.

It reads the formats Go's ``archive/tar`` (as forked by tar-split) reads — V7, ustar, PAX (with
``SCHILY.xattr.*``), GNU long names/link names, base-256 numbers — and follows its rules where they
matter for compatibility: header-only types carry no data whatever their size field says, input that
ends cleanly at an entry boundary is a complete archive, and extension records are capped at 1 MiB.
Names are bytes throughout, so non-UTF-8 names survive.

GNU sparse files (PAX formats 0.0, 0.1 and 1.0, and the old GNU ``S`` type) are read as Go reads
them: the header carries the sparse name and the real size, ``sparse`` holds the validated map,
and ``fragments()`` yields the packed data with the offset each piece belongs at, so the caller
can leave the holes as holes.  As in Go's tar-split, a 1.0 map and the packed data are content,
not raw bytes.

Bytes that are not file content (headers, extension records, padding, the end-of-archive blocks,
anything after them) accumulate in a raw buffer that ``take_raw()`` hands out, in stream order;
content is yielded as zero-copy memoryviews of the input chunks.
"""

from __future__ import annotations

from zlib import adler32 as _adler32

from .. import TYPE_CHECKING
from ..errors import InvalidArchive

if TYPE_CHECKING:
    from array import array
    from collections.abc import Callable, Iterator

__all__ = [
    "BLOCK",
    "ERR_HEADER",
    "ERR_TOO_LONG",
    "ERR_UNEXPECTED_EOF",
    "MAX_SPECIAL_FILE",
    "Sparse",
    "TarHeader",
    "TarReader",
]

BLOCK = 512
MAX_SPECIAL_FILE = 1 << 20  # Go's maxSpecialFileSize: cap on a PAX record set or a GNU long name
# Raw bytes kept before they are flushed as a segment anyway (only hostile input gets near this).
RAW_FLUSH = 8 << 20

# Go's error texts, so messages read the same as the Go tools'.
ERR_HEADER = "archive/tar: invalid tar header"
ERR_TOO_LONG = "archive/tar: header field too long"
ERR_UNEXPECTED_EOF = "unexpected EOF"
ERR_MISS_DATA = "archive/tar: sparse file references non-existent data"
ERR_UNREF_DATA = "archive/tar: sparse file contains unreferenced data"
ERR_SPARSE_TOO_LONG = "archive/tar: sparse map too long"

# Type flags (as ints: block[156]).
REG, REGA, LINK, SYMLINK, CHAR, BLOCKDEV, DIR, FIFO, CONT = 48, 0, 49, 50, 51, 52, 53, 54, 55
XHEADER, XGLOBAL, GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE = 120, 103, 76, 75, 83
_HEADER_ONLY = frozenset((LINK, SYMLINK, CHAR, BLOCKDEV, DIR, FIFO))

_ZERO_BLOCK = bytes(BLOCK)
_OCTAL_DIGITS = b"01234567"
_DEC_DIGITS = b"0123456789"
_MAGIC_USTAR = b"ustar\x00"
_MAGIC_GNU = b"ustar "
_VERSION_GNU = b" \x00"
_TRAILER_STAR = b"tar\x00"


class TarHeader:
    """One archive member after extension headers were merged into it (Go's ``tar.Header``)."""

    __slots__ = (
        "atime_ns",
        "devmajor",
        "devminor",
        "gid",
        "linkname",
        "mode",
        "mtime_ns",
        "name",
        "pax",
        "size",
        "typeflag",
        "uid",
    )

    def __init__(self) -> None:
        self.name = b""
        self.linkname = b""
        self.typeflag = REG
        self.size = 0
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.mtime_ns = 0
        self.atime_ns: int | None = None
        self.devmajor = 0
        self.devminor = 0
        self.pax: dict[bytes, bytes] | None = None

    def xattrs(self) -> Iterator[tuple[bytes, bytes]]:
        """``SCHILY.xattr.<name>`` PAX records as (name, value), empty values included (as Go)."""
        if self.pax:
            for key, value in self.pax.items():
                if key.startswith(b"SCHILY.xattr."):
                    yield key[13:], value

    def data_size(self) -> int:
        """Bytes of content that follow in the stream: none for header-only types."""
        return 0 if self.typeflag in _HEADER_ONLY else self.size


def _bad(text: str = ERR_HEADER) -> InvalidArchive:
    return InvalidArchive(text)


def parse_octal(field: bytes) -> int:
    """Go's ``parseOctal``: NUL/space padded octal; anything else is an invalid header."""
    digits = field.strip(b" \x00")
    # isdigit() admits only ASCII 0-9 (no sign, space or "_" that int() would take); an 8 or 9
    # makes int() raise ValueError, which parse_header_block turns into an invalid header.
    if digits.isdigit():
        return int(digits, 8)
    if digits:
        raise _bad()
    return 0


def parse_numeric(field: bytes) -> int:
    """Go's ``parseNumeric``: octal, or base-256 (two's complement) when the high bit is set."""
    if field and field[0] & 0x80:
        inv = 0xFF if field[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(field):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise _bad()
            x = (x << 8) | c
        if x >> 63:
            raise _bad()
        return ~x if inv else x
    try:
        return parse_octal(field)
    except ValueError:
        raise _bad() from None


def _cstring(field: bytes) -> bytes:
    """Go's ``parseString``: the bytes up to the first NUL."""
    end = field.find(b"\x00")
    return field if end < 0 else field[:end]


def _parse_dec(value: bytes) -> int:
    """``strconv.ParseInt(v, 10, 64)``: optional sign, decimal digits, within int64."""
    digits = value[1:] if value[:1] in (b"-", b"+") else value
    if not digits or digits.translate(None, _DEC_DIGITS):
        raise _bad()
    n = int(value)
    if not -(1 << 63) <= n < (1 << 63):
        raise _bad()
    return n


def parse_pax_time(value: bytes) -> int:
    """Go's ``parsePAXTime`` into integer nanoseconds since the epoch."""
    secs_s, _, frac = value.partition(b".")
    secs = _parse_dec(secs_s)
    if not frac:
        return secs * 1_000_000_000
    if frac.translate(None, _DEC_DIGITS):
        raise _bad()
    nsecs = int((frac + b"000000000")[:9])
    if secs_s.startswith(b"-"):
        nsecs = -nsecs
    return secs * 1_000_000_000 + nsecs


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Parse ``"%d %s=%s\\n"`` records (Go's ``parsePAX``/``parsePAXRecord``) into a dict."""
    records: dict[bytes, bytes] = {}
    sparse_00: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        sp = data.find(b" ", pos, min(end, pos + 20))
        if sp < 0:
            raise _bad()
        length_s = data[pos:sp]
        if not length_s or length_s.translate(None, _DEC_DIGITS):
            raise _bad()
        length = int(length_s)
        if length < 5 or pos + length > end or length <= len(length_s) + 1:
            raise _bad()
        rec_end = pos + length
        if data[rec_end - 1] != 0x0A:
            raise _bad()
        key, eq, value = data[sp + 1 : rec_end - 1].partition(b"=")
        if not eq or not key:
            raise _bad()
        if key in (b"path", b"linkpath", b"uname", b"gname"):
            if b"\x00" in value:
                raise _bad()
        elif b"\x00" in key:
            raise _bad()
        pos = rec_end
        if key in _SPARSE_00_KEYS:
            # Format 0.0 repeats these two keys once per map entry; like Go, gather them (offset
            # first, no commas) into a 0.1-style GNU.sparse.map.
            if key != _SPARSE_00_KEYS[len(sparse_00) % 2] or b"," in value:
                raise _bad()
            sparse_00.append(value)
            continue
        records[key] = value
    if sparse_00:
        records[SPARSE_MAP] = b",".join(sparse_00)
    return records


SPARSE_MAP = b"GNU.sparse.map"
_SPARSE_00_KEYS = (b"GNU.sparse.offset", b"GNU.sparse.numbytes")
_SPARSE_MAJOR = b"GNU.sparse.major"
_SPARSE_MINOR = b"GNU.sparse.minor"
_MAX_INT64 = (1 << 63) - 1


class Sparse:
    """A sparse member's real size and its data fragments (Go's ``sparseDatas`` minus the empty
    ones) as a flat ``array('q')`` of offset, length pairs: 16 bytes an entry, however many."""

    __slots__ = ("fragments", "size")

    def __init__(self, size: int, fragments: array[int]) -> None:
        self.size = size
        self.fragments = fragments

    def data_size(self) -> int:
        """How many bytes of packed data the map references."""
        return sum(self.fragments[1::2])


def _int64s(tokens: Iterator[bytes] | list[bytes]) -> array[int]:
    """Go's ``strconv.ParseInt(tok, 10, 64)`` over map tokens; anything else is an invalid header."""
    from array import array  # sparse files only: array imports collections (start-up time)

    out: array[int] = array("q")
    try:
        for tok in tokens:
            # An optional sign, then ASCII digits only (int() would also take spaces and "_").
            digits = tok[1:] if tok[:1] in (b"-", b"+") else tok
            if not digits.isdigit():
                raise _bad()
            out.append(int(tok))
    except OverflowError:
        raise _bad() from None
    return out


def _count(value: bytes) -> int:
    """A map's entry count (``ParseInt(v, 10, 0)``); negative counts are invalid headers."""
    n = _parse_dec(value)
    if n < 0:
        raise _bad()
    return n


def _checked(entries: array[int], size: int) -> Sparse:
    """Go's ``validateSparseEntries``: non-negative, in order, non-overlapping, within ``size``;
    then the empty fragments are dropped (``invertSparseEntries`` skips them too)."""
    if size < 0:
        raise _bad()
    from array import array

    pre_end = 0
    data: array[int] = array("q")
    for i in range(0, len(entries), 2):
        off, length = entries[i], entries[i + 1]
        if off < 0 or length < 0 or off > _MAX_INT64 - length or off < pre_end:
            raise _bad()
        pre_end = off + length
        if pre_end > size:
            raise _bad()
        if length:
            data.append(off)
            data.append(length)
    return Sparse(size, data)


def _sparse_pax_version(pax: dict[bytes, bytes]) -> str | None:
    """Go's ``readGNUSparsePAXHeaders`` format detection: "0.x", "1.0" or None (not sparse;
    an unknown version is read as a plain file, as Go does)."""
    major, minor = pax.get(_SPARSE_MAJOR, b""), pax.get(_SPARSE_MINOR, b"")
    if major == b"0" and minor in (b"0", b"1"):
        return "0.x"
    if major == b"1" and minor == b"0":
        return "1.0"
    if major or minor or not pax.get(SPARSE_MAP):
        return None
    return "0.x"


def _sparse_map_0x(pax: dict[bytes, bytes]) -> array[int]:
    """Go's ``readGNUSparseMap0x1``: ``numblocks`` pairs in the comma-separated PAX map."""
    n = _count(pax.get(b"GNU.sparse.numblocks", b""))
    text = pax.get(SPARSE_MAP, b"")
    # The count is checked before splitting, so a bad map costs no list of its tokens.
    if (text.count(b",") + 1 if text else 0) != 2 * n:
        raise _bad()
    return _int64s(text.split(b",") if text else [])


def _merge_pax(hdr: TarHeader, pax: dict[bytes, bytes]) -> None:
    """Go's ``mergePAX``: known keys override the ustar fields; empty values are ignored."""
    for key, value in pax.items():
        if not value:
            continue
        if key == b"path":
            hdr.name = value
        elif key == b"linkpath":
            hdr.linkname = value
        elif key == b"uid":
            hdr.uid = _parse_dec(value)
        elif key == b"gid":
            hdr.gid = _parse_dec(value)
        elif key == b"mtime":
            hdr.mtime_ns = parse_pax_time(value)
        elif key == b"atime":
            hdr.atime_ns = parse_pax_time(value)
        elif key == b"ctime":
            parse_pax_time(value)
        elif key == b"size":
            hdr.size = _parse_dec(value)
    hdr.pax = pax


def _byte_sum(block: bytes) -> int:
    """``sum(block)`` of a 512-byte block, ~6x quicker: Adler-32's first half started at 0 is the
    byte sum modulo 65521, and neither 256-byte half can reach that (256 * 255 = 65280)."""
    return (_adler32(block[:256], 0) & 0xFFFF) + (_adler32(block[256:], 0) & 0xFFFF)


def _checksum_ok(block: bytes) -> bool:
    field = block[148:156]
    try:
        want = parse_numeric(field)
    except InvalidArchive:
        return False
    unsigned = (_byte_sum(block) if len(block) == BLOCK else sum(block)) - sum(field) + 8 * 0x20
    if want == unsigned:
        return True
    # Some old writers summed signed chars; Go accepts either.
    signed = unsigned - 256 * (sum(1 for b in block if b > 127) - sum(1 for b in field if b > 127))
    return want == signed


# Headers of one layer repeat the same mode/uid/gid, mtime and device fields over and over, so
# their decoded values are memoised by raw bytes (bounded: hostile input cannot grow it).
_FIELD_CACHE: dict[bytes, tuple[int, ...]] = {}
_FIELD_CACHE_MAX = 4096


def _fields(raw: bytes, *spans: tuple[int, int]) -> tuple[int, ...]:
    values = _FIELD_CACHE.get(raw)
    if values is None:
        values = tuple(parse_numeric(raw[a:b]) for a, b in spans)
        if len(_FIELD_CACHE) < _FIELD_CACHE_MAX:
            _FIELD_CACHE[raw] = values
    return values


_MODE_UID_GID = ((0, 8), (8, 16), (16, 24))
_MTIME = ((0, 12),)
_DEVS = ((0, 8), (8, 16))


def parse_header_block(block: bytes) -> TarHeader:
    """Decode one 512-byte header (Go's ``readHeader`` after the zero-block checks)."""
    if not _checksum_ok(block):
        raise _bad()
    hdr = TarHeader()
    hdr.typeflag = block[156]
    hdr.mode, hdr.uid, hdr.gid = _fields(block[100:124], *_MODE_UID_GID)
    hdr.mtime_ns = _fields(block[136:148], *_MTIME)[0] * 1_000_000_000
    hdr.size = parse_numeric(block[124:136])
    end = block.find(b"\x00", 0, 100)
    name = block[:end] if end >= 0 else block[:100]
    end = block.find(b"\x00", 157, 257)
    hdr.linkname = block[157:end] if end >= 0 else block[157:257]
    magic = block[257:263]
    prefix = b""
    if magic == _MAGIC_USTAR:
        hdr.devmajor, hdr.devminor = _fields(block[329:345], *_DEVS)
        if block[508:512] == _TRAILER_STAR:
            prefix = _cstring(block[345:476])
            atime = parse_numeric(block[476:488])
            if atime:
                hdr.atime_ns = atime * 1_000_000_000
        elif block[345]:
            prefix = _cstring(block[345:500])
    elif magic == _MAGIC_GNU and block[263:265] == _VERSION_GNU:
        hdr.devmajor, hdr.devminor = _fields(block[329:345], *_DEVS)
        if block[345]:
            try:
                hdr.atime_ns = parse_numeric(block[345:357]) * 1_000_000_000
                if block[357]:
                    parse_numeric(block[357:369])
            except InvalidArchive:
                # Pre-Go-1.8 writers put a ustar prefix here; Go reads it back as one.
                hdr.atime_ns = None
                candidate = _cstring(block[345:500])
                if candidate.isascii():
                    prefix = candidate
    hdr.name = prefix + b"/" + name if prefix else name
    return hdr


class TarReader:
    """Pull-based tar parser over a source of byte chunks (``b""`` means end of input).

    Use ``next()`` for each header, ``content()`` (or ``skip_content()``) for its data, and
    ``take_raw()`` for the non-content bytes read since the last call; after ``next()`` returned
    None, ``trailing()`` yields whatever follows the end-of-archive marker.
    """

    def __init__(self, read_chunk: Callable[[], bytes]) -> None:
        self._read_chunk = read_chunk
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._eof = False
        self._raw: list[bytes] = []
        self._raw_len = 0
        self._remaining = 0  # content bytes of the current entry not read yet
        self._pad = 0  # padding that follows the current entry's content
        self.flushed_raw: list[bytes] = []  # raw pieces forced out early (hostile input only)
        self.sparse: Sparse | None = None  # the current entry's map when it is a sparse file

    # -- low level -------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Make the next chunk current; False at end of input."""
        while not self._eof:
            chunk = self._read_chunk()
            if not chunk:
                self._eof = True
                break
            self._buf = chunk
            self._view = memoryview(chunk)
            self._pos = 0
            return True
        return False

    def _take(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at end of input)."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        parts = [self._buf[pos:]]
        got = len(parts[0])
        self._pos = len(self._buf)
        while got < n and self._fill():
            take = min(n - got, len(self._buf))
            parts.append(self._buf[:take])
            self._pos = take
            got += take
        return b"".join(parts)

    def _keep(self, data: bytes) -> None:
        if data:
            self._raw.append(data)
            self._raw_len += len(data)
            if self._raw_len > RAW_FLUSH:
                self.flushed_raw.append(self.take_raw())

    def take_raw(self) -> bytes:
        """The non-content bytes read since the previous call, in stream order."""
        raw = self._raw[0] if len(self._raw) == 1 else b"".join(self._raw)
        self._raw = []
        self._raw_len = 0
        return raw

    def window(self) -> tuple[bytes, int, int]:
        """(chunk, offset, padding) at an entry boundary: the next entry's header starts at
        ``chunk[offset + padding:]`` (if the chunk holds it).  For an accelerator that applies
        entries straight from the chunk and then calls ``advance``."""
        assert not self._remaining and not self._raw, "not at an entry boundary"
        return self._buf, self._pos, self._pad

    def advance(self, pos: int, pad: int) -> None:
        """Continue at ``pos`` of the current chunk, ``pad`` bytes of padding ahead."""
        self._pos = pos
        self._pad = pad

    # -- entries -----------------------------------------------------------------------------
    def content(self) -> Iterator[memoryview]:
        """The current entry's data as memoryviews of the input chunks (valid until next read)."""
        n = self._remaining
        while n:
            avail = len(self._buf) - self._pos
            if avail <= 0:
                if not self._fill():
                    raise InvalidArchive(ERR_UNEXPECTED_EOF)
                avail = len(self._buf)
            take = n if n < avail else avail
            pos = self._pos
            self._pos = pos + take
            n -= take
            self._remaining = n
            yield self._view[pos : pos + take]

    def skip_content(self) -> None:
        for _ in self.content():
            pass

    def fragments(self) -> Iterator[tuple[int, memoryview]]:
        """The current sparse entry's packed data as (offset in the file, piece) pairs, in order.

        ``next()`` checked that the map references exactly the data there is, so the pieces
        cover every fragment; the holes between them are the caller's to leave (or count) as
        zeros.
        """
        assert self.sparse is not None
        frags = self.sparse.fragments
        pieces = self.content()
        piece = memoryview(b"")
        for i in range(0, len(frags), 2):
            off, left = frags[i], frags[i + 1]
            while left:
                if not piece:
                    got = next(pieces, None)
                    if got is None:
                        raise InvalidArchive(ERR_MISS_DATA)
                    piece = got
                if len(piece) <= left:
                    yield off, piece
                    off += len(piece)
                    left -= len(piece)
                    piece = memoryview(b"")
                else:
                    yield off, piece[:left]
                    piece = piece[left:]
                    left = 0

    def _content_block(self) -> bytes:
        """One block of the entry's data (Go's ``mustReadFull`` on the file reader)."""
        if self._remaining < BLOCK:
            raise InvalidArchive(ERR_UNEXPECTED_EOF)
        data = self._take(BLOCK)
        if len(data) < BLOCK:
            raise InvalidArchive(ERR_UNEXPECTED_EOF)
        self._remaining -= BLOCK
        return data

    def _sparse_map_1x0(self) -> array[int]:
        """Go's ``readGNUSparseMap1x0``: a count and that many offset/length pairs, one decimal
        per line, in whole blocks at the start of the data.  The blocks are content, as in Go's
        tar-split, and held to 1 MiB as Go now does (CVE-2025-58183)."""
        buf = bytearray()
        newlines = 0

        def feed(n: int) -> None:
            nonlocal newlines
            while newlines < n:
                if len(buf) + BLOCK > MAX_SPECIAL_FILE:
                    raise InvalidArchive(ERR_SPARSE_TOO_LONG)
                block = self._content_block()
                buf.extend(block)
                newlines += block.count(b"\n")

        feed(1)
        n = _count(bytes(buf[: buf.index(b"\n")]))
        if 2 * n > _MAX_INT64:
            raise _bad()
        feed(1 + 2 * n)
        return _int64s(bytes(buf).split(b"\n", 2 * n + 1)[1 : 2 * n + 1])

    def _old_gnu_sparse(self, hdr: TarHeader, block: bytes) -> Sparse:
        """Go's ``readOldGNUSparseMap``: four entries in the header, 21 in each extension block
        that follows it (raw bytes, as tar-split records them), the real size at offset 483."""
        if block[257:263] != _MAGIC_GNU or block[263:265] != _VERSION_GNU:
            raise _bad()  # STAR uses the same type flag with another layout
        hdr.size = parse_numeric(block[483:495])
        from array import array

        entries: array[int] = array("q")
        start, count, flag_at = 386, 4, 482
        extension = 0
        while True:
            for i in range(start, start + 24 * count, 24):
                if block[i] == 0:
                    break
                entries.append(parse_numeric(block[i : i + 12]))
                entries.append(parse_numeric(block[i + 12 : i + 24]))
            if not block[flag_at]:
                return self._sparse_data(_checked(entries, hdr.size))
            # Go has no cap here; each block is input, but the map is held to 1 MiB anyway.
            extension += BLOCK
            if extension > MAX_SPECIAL_FILE:
                raise InvalidArchive(ERR_SPARSE_TOO_LONG)
            block = self._take(BLOCK)
            self._keep(block)
            if len(block) < BLOCK:
                raise InvalidArchive(ERR_UNEXPECTED_EOF)
            start, count, flag_at = 0, 21, 504

    def _pax_sparse(self, hdr: TarHeader, pax: dict[bytes, bytes]) -> Sparse | None:
        """PAX formats 0.0/0.1/1.0: the sparse name and real size replace the header's."""
        version = _sparse_pax_version(pax)
        if version is None:
            return None
        name = pax.get(b"GNU.sparse.name")
        if name:
            hdr.name = name
        size = pax.get(b"GNU.sparse.size") or pax.get(b"GNU.sparse.realsize")
        if size:
            hdr.size = _parse_dec(size)
        entries = self._sparse_map_1x0() if version == "1.0" else _sparse_map_0x(pax)
        if hdr.typeflag in _HEADER_ONLY:
            raise _bad()
        return self._sparse_data(_checked(entries, hdr.size))

    def _sparse_data(self, sparse: Sparse) -> Sparse:
        """The map must reference exactly the packed data there is (Go finds out while copying:
        errMissData / errUnrefData); checking first means nothing is written for a bad one."""
        need = sparse.data_size()
        if need > self._remaining:
            raise InvalidArchive(ERR_MISS_DATA)
        if need < self._remaining:
            raise InvalidArchive(ERR_UNREF_DATA)
        return sparse

    def _special_file(self, size: int) -> bytes:
        """Read a PAX record set or GNU long name whole (bounded) into raw; returns it, and the
        padding after it is the next thing to skip."""
        if size < 0:
            raise _bad()
        if size > MAX_SPECIAL_FILE:
            raise InvalidArchive(ERR_TOO_LONG)
        data = self._take(size)
        if len(data) < size:
            raise InvalidArchive(ERR_UNEXPECTED_EOF)
        self._keep(data)
        self._remaining = 0
        self._pad = -size % BLOCK
        return data

    def next(self) -> TarHeader | None:
        """The next member, or None at the end of the archive (Go's ``Reader.Next``)."""
        if self._remaining:
            self.skip_content()
        self.sparse = None
        pax: dict[bytes, bytes] | None = None
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            pad = self._pad
            self._pad = 0
            raw = self._take(pad + BLOCK)
            self._keep(raw)
            if len(raw) < pad + BLOCK:
                # Go's tryReadFull: EOF inside the padding, or right after it, ends the archive.
                if len(raw) <= pad:
                    return None
                raise InvalidArchive(ERR_UNEXPECTED_EOF)
            block = raw[pad:] if pad else raw
            if block == _ZERO_BLOCK:
                block = self._take(BLOCK)
                self._keep(block)
                if len(block) < BLOCK:
                    if not block:
                        return None
                    raise InvalidArchive(ERR_UNEXPECTED_EOF)
                if block == _ZERO_BLOCK:
                    return None
                raise _bad()
            hdr = parse_header_block(block)
            flag = hdr.typeflag
            if flag in (XHEADER, XGLOBAL):
                records = parse_pax(self._special_file(hdr.size))
                if flag == XGLOBAL:
                    glob = TarHeader()
                    glob.name = hdr.name
                    glob.typeflag = XGLOBAL
                    glob.pax = records
                    return glob
                pax = records
                continue
            if flag in (GNU_LONGNAME, GNU_LONGLINK):
                value = _cstring(self._special_file(hdr.size))
                if flag == GNU_LONGNAME:
                    long_name = value
                else:
                    long_link = value
                continue
            if pax:
                _merge_pax(hdr, pax)
            if long_name:
                hdr.name = long_name
            if long_link:
                hdr.linkname = long_link
            if flag == REGA:
                hdr.typeflag = DIR if hdr.name.endswith(b"/") else REG
            size = hdr.data_size()
            if size < 0:
                raise _bad()
            self._remaining = size
            self._pad = -size % BLOCK
            # Sparse maps come after the data size is fixed: it is the packed size, hdr.size
            # becomes the real one (Go's handleRegularFile, then handleSparseFile).
            if flag == GNU_SPARSE:
                self.sparse = self._old_gnu_sparse(hdr, block)
            elif pax and (SPARSE_MAP in pax or _SPARSE_MAJOR in pax or _SPARSE_MINOR in pax):
                self.sparse = self._pax_sparse(hdr, pax)
            return hdr

    def trailing(self, piece: int = 1 << 20) -> Iterator[bytes]:
        """Everything after the end-of-archive marker, in pieces of at most ``piece`` bytes."""
        while True:
            if self._pos >= len(self._buf) and not self._fill():
                return
            end = min(len(self._buf), self._pos + piece)
            data = self._buf[self._pos : end]
            self._pos = end
            yield data
