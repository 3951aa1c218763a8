"""Tar headers encoded byte-for-byte as Go's ``archive/tar`` ``Writer.WriteHeader`` encodes them.

Layer diffs are content-addressed: a diff we export should hash the same as the one the Go tools
export from the same files, so this mirrors Go's choices exactly: USTAR whenever the header fits
(long ASCII names split into prefix/name), else PAX (records sorted, ``PaxHeaders.0`` pseudo
entries, the main header's strings reduced to ASCII and cut to fit), else GNU (base-256 numbers,
``././@LongLink`` entries).  With no explicit format, as Go's ``ExportChanges`` and
``TarWithOptions`` write, the mtime is rounded to whole seconds and atime/ctime are dropped.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import struct
from dataclasses import dataclass, field
from zlib import adler32

from .gopath import go_clean

__all__ = [
    "BLOCK",
    "END_OF_ARCHIVE",
    "TYPE_BLOCK",
    "TYPE_CHAR",
    "TYPE_DIR",
    "TYPE_FIFO",
    "TYPE_LINK",
    "TYPE_REG",
    "TYPE_REGA",
    "TYPE_SYMLINK",
    "Format",
    "HeaderError",
    "TarHeader",
    "encode_header",
    "padding",
]

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)

TYPE_REG = b"0"
TYPE_REGA = b"\x00"
TYPE_LINK = b"1"
TYPE_SYMLINK = b"2"
TYPE_CHAR = b"3"
TYPE_BLOCK = b"4"
TYPE_DIR = b"5"
TYPE_FIFO = b"6"
_TYPE_XHEADER = b"x"
_TYPE_GNU_LONGNAME = b"L"
_TYPE_GNU_LONGLINK = b"K"
_HEADER_ONLY = frozenset((TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO))

_NAME_SIZE = 100
_PREFIX_SIZE = 155
_MAX_SPECIAL_FILE = 1 << 20

# PAX keys Go manages itself; user PAXRecords may not override them.
_PAX_PATH, _PAX_LINKPATH = b"path", b"linkpath"
_PAX_UNAME, _PAX_GNAME = b"uname", b"gname"
_PAX_UID, _PAX_GID, _PAX_SIZE = b"uid", b"gid", b"size"
_PAX_MTIME, _PAX_ATIME, _PAX_CTIME = b"mtime", b"atime", b"ctime"
_BASIC_KEYS = frozenset((_PAX_PATH, _PAX_LINKPATH, _PAX_UNAME, _PAX_GNAME, _PAX_UID, _PAX_GID,
                         _PAX_SIZE, _PAX_MTIME, _PAX_ATIME, _PAX_CTIME))
_NONE = b""  # a field PAX cannot carry


class Format(enum.IntFlag):
    """Go's ``tar.Format`` bits; UNKNOWN lets the writer pick, as Go's layer export does."""

    UNKNOWN = 0
    USTAR = 2
    PAX = 4
    GNU = 8


class HeaderError(ValueError):
    """The header cannot be encoded (Go's ``archive/tar: header field too long`` and kin)."""


@dataclass(slots=True)
class TarHeader:
    """The ``tar.Header`` fields layer export sets; strings are bytes, as Go's are."""

    name: bytes
    typeflag: bytes = TYPE_REG
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: bytes = b""
    uname: bytes = b""
    gname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    atime_ns: int | None = None  # None: Go's zero time, not written
    ctime_ns: int | None = None
    pax_records: dict[bytes, bytes] = field(default_factory=dict)
    format: Format = Format.UNKNOWN

    @property
    def data_size(self) -> int:
        """Bytes of content that follow the header (0 for links, directories and devices)."""
        return 0 if self.typeflag in _HEADER_ONLY else self.size


def padding(size: int) -> bytes:
    """The zero bytes that round ``size`` up to a whole block."""
    return bytes(-size % BLOCK)


# --- field formatting (Go's formatter) ----------------------------------------------------------


def _fits_octal(n: int, x: int) -> bool:
    return x >= 0 and (n >= 22 or x < 1 << ((n - 1) * 3))


def _fits_base256(n: int, x: int) -> bool:
    bits = (n - 1) * 8
    return n >= 9 or -(1 << bits) <= x < 1 << bits


def _to_ascii(s: bytes) -> bytes:
    """Go's toASCII: pure ASCII as is (NULs included), else drop non-ASCII bytes and NULs."""
    if s.isascii():
        return s
    return bytes(b for b in s if 0 < b < 0x80)


def _put_string(blk: bytearray, off: int, size: int, s: bytes) -> None:
    """Go's formatString: copy (truncating), NUL-terminate when shorter, no stray '/' at the cut."""
    blk[off:off + min(len(s), size)] = s[:size]
    if len(s) < size:
        blk[off + len(s)] = 0
    elif len(s) > size and blk[off + size - 1] == ord("/"):
        n = len(s[:size].rstrip(b"/"))
        blk[off + n] = 0


def _put_octal(blk: bytearray, off: int, size: int, x: int) -> None:
    if not _fits_octal(size, x):
        x = 0  # Go's last resort; the header was vetted before, so this is not reached
    _put_string(blk, off, size, b"%0*o" % (size - 1, x))


def _put_numeric(blk: bytearray, off: int, size: int, x: int) -> None:
    """Octal when it fits, else GNU base-256 (big-endian two's complement, top bit set)."""
    if _fits_octal(size, x):
        _put_octal(blk, off, size, x)
    elif _fits_base256(size, x):
        blk[off:off + size] = (x & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
        blk[off] |= 0x80
    else:
        _put_octal(blk, off, size, 0)


def _set_format(blk: bytearray, fmt: Format) -> None:
    """Magic, version and checksum (``%06o\\0 `` of the unsigned byte sum, checksum as spaces)."""
    if fmt & Format.GNU:
        blk[257:265] = b"ustar  \x00"
    else:
        blk[257:265] = b"ustar\x0000"
    blk[148:156] = b"        "
    _put_octal(blk, 148, 7, _byte_sum(blk))
    blk[155] = ord(" ")


def _byte_sum(blk: bytes | bytearray) -> int:
    """The unsigned byte sum of a 512-byte block, in C: Adler-32's low half is 1 + sum mod 65521,
    and a 256-byte half cannot exceed 65280, so two halves give the exact sum."""
    return (adler32(blk[:256]) & 0xFFFF) + (adler32(blk[256:]) & 0xFFFF) - 2


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``"%d %s=%s\\n"`` where the length counts itself."""
    size = len(key) + len(value) + 3
    size += len(str(size))
    record = b"%d %b=%b\n" % (size, key, value)
    if len(record) != size:
        size = len(record)
        record = b"%d %b=%b\n" % (size, key, value)
    return record


def _valid_pax_record(key: bytes, value: bytes) -> bool:
    if not key or b"=" in key:
        return False
    if key in (_PAX_PATH, _PAX_LINKPATH, _PAX_UNAME, _PAX_GNAME):
        return b"\x00" not in value
    return b"\x00" not in key


def _pax_time(ns: int) -> bytes:
    secs, nsecs = divmod(ns, 1_000_000_000)
    if nsecs == 0:
        return b"%d" % secs
    if secs < 0:
        return (b"-%d.%09d" % (-(secs + 1), 1_000_000_000 - nsecs)).rstrip(b"0")
    return (b"%d.%09d" % (secs, nsecs)).rstrip(b"0")


def _split_ustar_path(name: bytes) -> tuple[bytes, bytes] | None:
    length = len(name)
    if length <= _NAME_SIZE or not name.isascii():
        return None
    if length > _PREFIX_SIZE + 1:
        length = _PREFIX_SIZE + 1
    elif name[length - 1] == ord("/"):
        length -= 1
    i = name.rfind(b"/", 0, length)
    nlen = len(name) - i - 1
    if i <= 0 or nlen > _NAME_SIZE or nlen == 0 or i > _PREFIX_SIZE:
        return None
    return name[:i], name[i + 1:]


# --- format selection (Go's Header.allowedFormats) ----------------------------------------------


def _allowed_formats(h: TarHeader) -> tuple[Format, dict[bytes, bytes]]:
    fmt = Format.USTAR | Format.PAX | Format.GNU
    pax: dict[bytes, bytes] = {}
    prefer_pax = False
    why = ""

    def no(f: Format, reason: str) -> None:
        nonlocal fmt, why
        fmt &= ~f
        why = reason

    def check_string(s: bytes, size: int, label: str, key: bytes) -> None:
        too_long = len(s) > size
        long_gnu_ok = key in (_PAX_PATH, _PAX_LINKPATH)
        if b"\x00" in s or (too_long and not long_gnu_ok):
            no(Format.GNU, f"GNU cannot encode {label}={s!r}")
        if not s.isascii() or too_long:
            if key != _PAX_PATH or _split_ustar_path(s) is None:
                no(Format.USTAR, f"USTAR cannot encode {label}={s!r}")
            if key == _NONE:
                no(Format.PAX, f"PAX cannot encode {label}={s!r}")
            else:
                pax[key] = s
        if key and h.pax_records.get(key) == s:
            pax[key] = s

    def check_number(n: int, size: int, label: str, key: bytes) -> None:
        if not _fits_base256(size, n):
            no(Format.GNU, f"GNU cannot encode {label}={n}")
        if not _fits_octal(size, n):
            no(Format.USTAR, f"USTAR cannot encode {label}={n}")
            if key == _NONE:
                no(Format.PAX, f"PAX cannot encode {label}={n}")
            else:
                pax[key] = b"%d" % n
        if key and h.pax_records.get(key) == b"%d" % n:
            pax[key] = b"%d" % n

    def check_time(ns: int | None, size: int, label: str, key: bytes) -> None:
        nonlocal prefer_pax
        if ns is None:
            return
        secs = ns // 1_000_000_000
        if not _fits_base256(size, secs):
            no(Format.GNU, f"GNU cannot encode {label}")
        is_mtime = key == _PAX_MTIME
        fits = _fits_octal(size, secs)
        if not (is_mtime and fits):
            no(Format.USTAR, f"USTAR cannot encode {label}")
        if not is_mtime or not fits or ns % 1_000_000_000:
            prefer_pax = True
            pax[key] = _pax_time(ns)
        if h.pax_records.get(key) == _pax_time(ns):
            pax[key] = _pax_time(ns)

    check_string(h.name, 100, "Name", _PAX_PATH)
    check_string(h.linkname, 100, "Linkname", _PAX_LINKPATH)
    check_string(h.uname, 32, "Uname", _PAX_UNAME)
    check_string(h.gname, 32, "Gname", _PAX_GNAME)
    check_number(h.mode, 8, "Mode", _NONE)
    check_number(h.uid, 8, "Uid", _PAX_UID)
    check_number(h.gid, 8, "Gid", _PAX_GID)
    check_number(h.size, 12, "Size", _PAX_SIZE)
    check_number(h.devmajor, 8, "Devmajor", _NONE)
    check_number(h.devminor, 8, "Devminor", _NONE)
    check_time(h.mtime_ns, 12, "ModTime", _PAX_MTIME)
    check_time(h.atime_ns, 12, "AccessTime", _PAX_ATIME)
    check_time(h.ctime_ns, 12, "ChangeTime", _PAX_CTIME)

    if h.typeflag in (TYPE_REG, TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO) and h.name.endswith(b"/"):
        raise HeaderError("archive/tar: filename may not have trailing slash")
    if h.typeflag in (_TYPE_XHEADER, _TYPE_GNU_LONGNAME, _TYPE_GNU_LONGLINK):
        raise HeaderError("archive/tar: cannot manually encode TypeXHeader, TypeGNULongName, "
                          "or TypeGNULongLink headers")
    if h.typeflag not in _HEADER_ONLY and h.size < 0:
        raise HeaderError("archive/tar: negative size on header-only type")

    if h.pax_records:
        for k, v in h.pax_records.items():
            if k not in pax and k not in _BASIC_KEYS and not k.startswith(b"GNU.sparse."):
                pax[k] = v
        fmt &= Format.PAX
        why = "only PAX supports PAXRecords"
    for k, v in pax.items():
        if not _valid_pax_record(k, v):
            raise HeaderError(f"archive/tar: invalid PAX record: {k + b' = ' + v!r}")

    if h.format != Format.UNKNOWN:
        want = h.format
        if want & Format.PAX and not prefer_pax:
            want |= Format.USTAR
        fmt &= want
    if fmt == Format.UNKNOWN:
        raise HeaderError(f"archive/tar: cannot encode header: {why}")
    return fmt, pax


# --- writers ------------------------------------------------------------------------------------


def _template(h: TarHeader, name: bytes, linkname: bytes, uname: bytes, gname: bytes,
              numeric: bool) -> bytearray:
    """Go's templateV7Plus: the fields USTAR, PAX and GNU headers share."""
    put = _put_numeric if numeric else _put_octal
    blk = bytearray(BLOCK)
    blk[156] = h.typeflag[0]
    _put_string(blk, 0, 100, name)
    _put_string(blk, 157, 100, linkname)
    put(blk, 100, 8, h.mode)
    put(blk, 108, 8, h.uid)
    put(blk, 116, 8, h.gid)
    put(blk, 124, 12, h.size)
    put(blk, 136, 12, h.mtime_ns // 1_000_000_000)
    _put_string(blk, 265, 32, uname)
    _put_string(blk, 297, 32, gname)
    put(blk, 329, 8, h.devmajor)
    put(blk, 337, 8, h.devminor)
    return blk


def _raw_file(name: bytes, data: bytes, flag: bytes, fmt: Format) -> bytes:
    """Go's writeRawFile: a minimal pseudo entry (PAX records, GNU long names) and its data."""
    name = _to_ascii(name)[:_NAME_SIZE].rstrip(b"/")
    blk = bytearray(BLOCK)
    blk[156] = flag[0]
    _put_string(blk, 0, 100, name)
    _put_octal(blk, 100, 8, 0)
    _put_octal(blk, 108, 8, 0)
    _put_octal(blk, 116, 8, 0)
    _put_octal(blk, 124, 12, len(data))
    _put_octal(blk, 136, 12, 0)
    _set_format(blk, fmt)
    return bytes(blk) + data + padding(len(data))


_USTAR_BLOCK = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_OCT7 = 1 << 21  # 8**7: what fits a 7-digit octal field
_OCT11 = 1 << 33  # 8**11
_NOT_PLAIN = re.compile(rb"[^\x01-\x7f]")  # NUL or non-ASCII: not for the fast path


def _fast_ustar(h: TarHeader) -> bytes | None:
    """The common case in one pack: a plain USTAR header that needs no choices (or None).

    Equivalent to the general path for headers whose strings are short ASCII, whose numbers fit
    their octal fields and which carry no PAX records; everything else goes the long way.
    """
    if h.format != Format.UNKNOWN or h.pax_records:
        return None
    name, link, uname, gname = h.name, h.linkname, h.uname, h.gname
    if (len(name) > _NAME_SIZE or len(link) > _NAME_SIZE or len(uname) > 32 or len(gname) > 32
            or _NOT_PLAIN.search(name + link + uname + gname)):
        return None
    typeflag = h.typeflag
    if typeflag == TYPE_REGA:
        typeflag = TYPE_DIR if name.endswith(b"/") else TYPE_REG
    elif typeflag in (_TYPE_XHEADER, _TYPE_GNU_LONGNAME, _TYPE_GNU_LONGLINK):
        return None
    if typeflag in (TYPE_REG, TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO) and name.endswith(b"/"):
        return None
    mtime = (h.mtime_ns + 500_000_000) // 1_000_000_000
    if not (0 <= h.mode < _OCT7 and 0 <= h.uid < _OCT7 and 0 <= h.gid < _OCT7 and 0 <= h.size < _OCT11
            and 0 <= h.devmajor < _OCT7 and 0 <= h.devminor < _OCT7 and 0 <= mtime < _OCT11):
        return None
    blk = _USTAR_BLOCK.pack(name, b"%07o" % h.mode, b"%07o" % h.uid, b"%07o" % h.gid, b"%011o" % h.size,
                            b"%011o" % mtime, b"        ", typeflag, link, b"ustar\x0000", uname, gname,
                            b"%07o" % h.devmajor, b"%07o" % h.devminor, b"")
    return blk[:148] + b"%06o\x00 " % _byte_sum(blk) + blk[156:]


def encode_header(hdr: TarHeader) -> bytes:
    """Everything Go's ``WriteHeader`` emits for ``hdr``: pseudo entries, then the header block.

    The caller writes ``hdr.data_size`` bytes of content and ``padding(hdr.data_size)`` after it.
    """
    fast = _fast_ustar(hdr)
    return fast if fast is not None else _encode_general(hdr)


def _encode_general(hdr: TarHeader) -> bytes:
    """Go's WriteHeader step by step: format choice, then the USTAR, PAX or GNU writer."""
    h = dataclasses.replace(hdr)  # Go works on a copy too
    if h.typeflag == TYPE_REGA:
        h.typeflag = TYPE_DIR if h.name.endswith(b"/") else TYPE_REG
    if h.format == Format.UNKNOWN:
        # Round half up to whole seconds, and drop atime/ctime, so the header stays USTAR.
        h.mtime_ns = (h.mtime_ns + 500_000_000) // 1_000_000_000 * 1_000_000_000
        h.atime_ns = h.ctime_ns = None
    fmt, pax = _allowed_formats(h)
    if fmt & Format.USTAR:
        return _ustar(h)
    if fmt & Format.PAX:
        return _pax(h, pax)
    return _gnu(h)


def _ustar(h: TarHeader) -> bytes:
    prefix = b""
    name = h.name
    split = _split_ustar_path(name)
    if split is not None:
        prefix, name = split
    blk = _template(h, name, h.linkname, h.uname, h.gname, numeric=False)
    _put_string(blk, 345, 155, prefix)
    _set_format(blk, Format.USTAR)
    return bytes(blk)


def _pax(h: TarHeader, pax: dict[bytes, bytes]) -> bytes:
    out = b""
    if pax:
        data = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
        if len(data) > _MAX_SPECIAL_FILE:
            raise HeaderError("archive/tar: header field too long")
        cut = h.name.rfind(b"/") + 1
        pseudo = go_clean(h.name[:cut] + b"/PaxHeaders.0/" + h.name[cut:]) if h.name[:cut] else (
            go_clean(b"PaxHeaders.0/" + h.name[cut:]))
        out = _raw_file(pseudo, data, _TYPE_XHEADER, Format.PAX)
    blk = _template(h, _to_ascii(h.name), _to_ascii(h.linkname), _to_ascii(h.uname),
                    _to_ascii(h.gname), numeric=False)
    _set_format(blk, Format.PAX)
    return out + bytes(blk)


def _gnu(h: TarHeader) -> bytes:
    out = b""
    if len(h.name) > _NAME_SIZE:
        out += _raw_file(b"././@LongLink", h.name + b"\x00", _TYPE_GNU_LONGNAME, Format.GNU)
    if len(h.linkname) > _NAME_SIZE:
        out += _raw_file(b"././@LongLink", h.linkname + b"\x00", _TYPE_GNU_LONGLINK, Format.GNU)
    blk = _template(h, h.name, h.linkname, h.uname, h.gname, numeric=True)
    if h.atime_ns is not None:
        _put_numeric(blk, 345, 12, h.atime_ns // 1_000_000_000)
    if h.ctime_ns is not None:
        _put_numeric(blk, 357, 12, h.ctime_ns // 1_000_000_000)
    _set_format(blk, Format.GNU)
    return out + bytes(blk)
