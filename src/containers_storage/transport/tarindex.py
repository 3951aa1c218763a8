"""Random access to the members of an (uncompressed) tar archive: OCI and docker archives.

The archive is scanned once, header by header, seeking over contents; each blob is then read
straight from the file with ``pread`` (several at once, from several threads), never extracted.
Input is hostile: a member named absolutely or with ``..`` is refused (c/image would extract such
an OCI archive, confined, or look for it by name in a docker archive; naming what cannot be a
blob of the archive is a sign of a crafted input), PAX and GNU long-name records are bounded,
and a member that ends past the end of the file is a truncated archive.
"""

from __future__ import annotations

import os

from .. import TYPE_CHECKING
from .common import TransportError

if TYPE_CHECKING:
    from collections.abc import Iterator

BLOCK = 512
MAX_EXTENDED = 1 << 20  # bytes of PAX/GNU long-name data one member may carry
MAX_MEMBERS = 100_000

REGULAR, LINK, SYMLINK, DIRECTORY, OTHER = "file", "link", "symlink", "dir", "other"


class Member:
    """One archive member: where its data is, how big it is, what kind it is."""

    __slots__ = ("kind", "linkname", "name", "offset", "size")

    def __init__(self, name: str, offset: int, size: int, kind: str, linkname: str) -> None:
        self.name = name
        self.offset = offset
        self.size = size
        self.kind = kind
        self.linkname = linkname


def clean_name(name: str, what: str = "archive member") -> str:
    """A member name as a relative path (``./a//b`` → ``a/b``); refused when absolute or when
    it climbs out with ``..``."""
    if name.startswith("/"):
        raise TransportError(f"{what} {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TransportError(f"{what} {name!r} points outside the archive")
    return "/".join(parts)


def _octal(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
        return value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TransportError(f"invalid tar header: bad {what} field {field!r}") from None


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp == -1:
            break
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise TransportError("invalid tar header: bad PAX record") from None
        if length <= 0 or pos + length > len(data):
            raise TransportError("invalid tar header: bad PAX record length")
        record = data[sp + 1:pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class TarIndex:
    """The members of the tar archive at ``path``, by cleaned name (the last of a name wins, as
    extraction would leave it).  ``open()`` hands out readers of member contents."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.file_size = os.fstat(self.fd).st_size
            self.members: dict[str, Member] = {}
            for member in self._scan():
                self.members[member.name] = member
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        """Close the archive (readers handed out stop working)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TarIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise TransportError(f"truncated archive {self.path!r}: it ends within a member")
        return data

    def _scan(self) -> Iterator[Member]:
        offset = 0
        long_name: str | None = None
        long_link: str | None = None
        pax: dict[str, str] = {}
        count = 0
        zero = bytes(BLOCK)
        while True:
            if offset + BLOCK > self.file_size:
                if offset == self.file_size and count:
                    return  # no end-of-archive blocks: tolerated, as Go's reader does
                raise TransportError(f"truncated archive {self.path!r}: it ends within a header")
            header = self._read(offset, BLOCK)
            if header == zero:
                return
            stored = _octal(header[148:156], "checksum")
            computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
            if stored != computed:
                raise TransportError(f"invalid tar header at offset {offset} of {self.path!r}")
            count += 1
            if count > MAX_MEMBERS:
                raise TransportError(f"archive {self.path!r} has more than {MAX_MEMBERS} members")
            size = _octal(header[124:136], "size")
            typeflag = header[156:157]
            data_offset = offset + BLOCK
            if size < 0 or data_offset + size > self.file_size:
                raise TransportError(f"truncated archive {self.path!r}: a member ends past its end")
            offset = data_offset + (size + BLOCK - 1) // BLOCK * BLOCK
            if typeflag in (b"x", b"g", b"L", b"K"):
                if size > MAX_EXTENDED:
                    raise TransportError(f"archive {self.path!r}: a header record of {size} bytes")
                data = self._read(data_offset, size)
                if typeflag == b"x":
                    pax = _pax_records(data)
                elif typeflag == b"L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                elif typeflag == b"K":
                    long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if header[257:263] == b"ustar\x00":  # POSIX ustar: a name prefix (GNU puts times there)
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if prefix:
                    name = prefix + "/" + name
            linkname = header[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            name = pax.get("path", long_name if long_name is not None else name)
            linkname = pax.get("linkpath", long_link if long_link is not None else linkname)
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise TransportError("invalid tar header: bad PAX size") from None
                if data_offset + size > self.file_size:
                    raise TransportError(f"truncated archive {self.path!r}: a member ends past its end")
                offset = data_offset + (size + BLOCK - 1) // BLOCK * BLOCK
            pax, long_name, long_link = {}, None, None
            kind = {b"0": REGULAR, b"\0": REGULAR, b"7": REGULAR, b"1": LINK, b"2": SYMLINK,
                    b"5": DIRECTORY}.get(typeflag, OTHER)
            cleaned = clean_name(name)
            if not cleaned:
                continue  # the archive's root directory
            yield Member(cleaned, data_offset, size if kind == REGULAR else 0, kind, linkname)

    def find(self, name: str) -> Member | None:
        """The regular member ``name`` (cleaned), following one symlink or hard link as c/image
        does for docker archives; None when there is none."""
        member = self.members.get(clean_name(name))
        if member is not None and member.kind in (SYMLINK, LINK):
            base = os.path.dirname(member.name) if member.kind == SYMLINK else ""
            target = os.path.normpath(os.path.join(base, member.linkname)) if member.linkname else ""
            member = self.members.get(clean_name(target, "link target")) if target else None
        if member is None or member.kind != REGULAR:
            return None
        return member

    def open(self, member: Member) -> MemberReader:
        """A reader of ``member``'s contents."""
        return MemberReader(self.fd, member.offset, member.size)


class MemberReader:
    """A read-only file object over ``size`` bytes at ``offset`` of ``fd`` (``pread``: many
    readers can share one fd, from many threads)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd = fd
        self._start = offset
        self._pos = 0
        self.size = size

    def read(self, n: int = -1) -> bytes:
        left = self.size - self._pos
        if n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._start + self._pos)
        if not data:
            raise TransportError("truncated archive: a member ends past its end")
        self._pos += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> MemberReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
