"""Byte-level tar writer for tests: builds the hostile forms Python's tarfile refuses to write.

Every header is laid out by hand (ustar by default), so tests control names, types, sizes,
checksums and base-256 fields exactly.  Nothing here knows about the code under test.
"""

from __future__ import annotations

BLOCK = 512


def _octal(value: int, width: int) -> bytes:
    """NUL-terminated, zero-padded octal as tar writers produce."""
    return b"%0*o\x00" % (width - 1, value)


def base256(value: int, width: int) -> bytes:
    """GNU base-256 numeric field (high bit set, two's complement for negatives)."""
    if value < 0:
        raw = (value + (1 << (8 * width))).to_bytes(width, "big")
        return bytes([raw[0] | 0x80]) + raw[1:]
    raw = value.to_bytes(width, "big")
    return bytes([raw[0] | 0x80]) + raw[1:]


def header(
    name: bytes,
    *,
    typeflag: bytes = b"0",
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1_600_000_000,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    prefix: bytes = b"",
    magic: bytes = b"ustar\x0000",
    raw_fields: dict[str, bytes] | None = None,
    checksum: int | None = None,
) -> bytes:
    """One 512-byte header; ``raw_fields`` replaces encoded fields (e.g. base-256 sizes)."""
    raw = raw_fields or {}
    fields = {
        "name": name[:100].ljust(100, b"\0"),
        "mode": raw.get("mode", _octal(mode, 8)),
        "uid": raw.get("uid", _octal(uid, 8)),
        "gid": raw.get("gid", _octal(gid, 8)),
        "size": raw.get("size", _octal(size, 12)),
        "mtime": raw.get("mtime", _octal(mtime, 12)),
        "chksum": b" " * 8,
        "typeflag": typeflag,
        "linkname": linkname[:100].ljust(100, b"\0"),
        "magic": magic,
        "uname": b"root".ljust(32, b"\0"),
        "gname": b"root".ljust(32, b"\0"),
        "devmajor": _octal(devmajor, 8),
        "devminor": _octal(devminor, 8),
        "prefix": prefix[:155].ljust(155, b"\0"),
    }
    block = b"".join(fields.values()).ljust(BLOCK, b"\0")
    assert len(block) == BLOCK
    total = sum(block) if checksum is None else checksum
    return block[:148] + b"%06o\x00 " % total + block[156:]


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def pax_records(records: dict[bytes, bytes]) -> bytes:
    """``"%d key=value\\n"`` records, each length prefix counting itself."""
    out = b""
    for key, value in records.items():
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(b"%d" % n) + len(body) != n:
            n += 1
        out += b"%d" % n + body
    return out


class TarBuilder:
    """Accumulates members; ``build()`` gives the archive with its end-of-archive blocks."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def raw(self, data: bytes) -> TarBuilder:
        self.parts.append(data)
        return self

    def member(self, name: bytes, data: bytes = b"", **kw: object) -> TarBuilder:
        kw.setdefault("size", len(data))
        self.parts.append(header(name, **kw))  # type: ignore[arg-type]
        self.parts.append(pad(data))
        return self

    def file(self, name: bytes, data: bytes = b"", **kw: object) -> TarBuilder:
        return self.member(name, data, typeflag=b"0", **kw)

    def dir(self, name: bytes, **kw: object) -> TarBuilder:
        kw.setdefault("mode", 0o755)
        return self.member(name, b"", typeflag=b"5", **kw)

    def symlink(self, name: bytes, target: bytes, **kw: object) -> TarBuilder:
        kw.setdefault("mode", 0o777)
        return self.member(name, b"", typeflag=b"2", linkname=target, **kw)

    def hardlink(self, name: bytes, target: bytes, **kw: object) -> TarBuilder:
        return self.member(name, b"", typeflag=b"1", linkname=target, **kw)

    def pax(self, records: dict[bytes, bytes], typeflag: bytes = b"x") -> TarBuilder:
        body = pax_records(records)
        return self.member(b"PaxHeaders/x", body, typeflag=typeflag)

    def gnu_long(self, value: bytes, typeflag: bytes = b"L") -> TarBuilder:
        return self.member(b"././@LongLink", value + b"\0", typeflag=typeflag,
                           magic=b"ustar  \x00")

    def build(self, end: bool = True) -> bytes:
        data = b"".join(self.parts)
        return data + b"\0" * (2 * BLOCK) if end else data
