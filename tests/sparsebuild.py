"""Hand-built GNU sparse tar members (PAX 0.0, 0.1, 1.0 and old GNU ``S``), well-formed or not.

GNU tar only writes what a real file looks like; these builders let tests choose every map entry,
size and name, including the malformed ones the reader has to refuse.  Fragments are given as
``(offset, data)``; ``sparse_map`` overrides the map text when a test wants a broken one.
"""

from __future__ import annotations

from tarbuild import BLOCK, TarBuilder, header, pad, pax_records

__all__ = ["BLOCK", "TarBuilder", "end", "expand", "header", "old_gnu_sparse", "pad", "pax_sparse"]

Fragments = list[tuple[int, bytes]]


def expand(fragments: Fragments, size: int) -> bytes:
    """The logical content: fragments at their offsets, zeros elsewhere."""
    out = bytearray(size)
    for off, data in fragments:
        out[off:off + len(data)] = data
    return bytes(out)


def _pax(records: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(pax_records({k: v}) for k, v in records)
    return header(b"PaxHeaders/sparse", typeflag=b"x", size=len(body)) + pad(body)


def _map_pairs(fragments: Fragments) -> list[bytes]:
    return [b"%d" % x for off, data in fragments for x in (off, len(data))]


def pax_sparse(version: str, name: bytes, size: int, fragments: Fragments, *,
               sparse_map: bytes | None = None, numblocks: bytes | None = None,
               data: bytes | None = None, extra: list[tuple[bytes, bytes]] | None = None,
               size_key: bytes | None = None, typeflag: bytes = b"0", mode: int = 0o644,
               uid: int = 0, gid: int = 0, mtime: int = 1_600_000_000) -> bytes:
    """One PAX sparse member as GNU tar writes it for ``--sparse-version=version``.

    ``data`` replaces the packed fragment bytes (to make them too short or too long);
    ``extra`` adds PAX records (xattrs, or contradictory sparse keys).
    """
    packed = b"".join(d for _, d in fragments) if data is None else data
    pairs = _map_pairs(fragments)
    blocks = numblocks if numblocks is not None else b"%d" % len(fragments)
    records: list[tuple[bytes, bytes]] = []
    ustar_name = b"GNUSparseFile.0/" + name.rsplit(b"/", 1)[-1]
    if version == "0.0":
        ustar_name = name
        records.append((size_key or b"GNU.sparse.size", b"%d" % size))
        records.append((b"GNU.sparse.numblocks", blocks))
        if sparse_map is None:
            for i, value in enumerate(pairs):
                key = b"GNU.sparse.offset" if i % 2 == 0 else b"GNU.sparse.numbytes"
                records.append((key, value))
        else:
            records.append((b"GNU.sparse.map", sparse_map))
    elif version == "0.1":
        records += [(size_key or b"GNU.sparse.size", b"%d" % size),
                    (b"GNU.sparse.numblocks", blocks), (b"GNU.sparse.name", name),
                    (b"GNU.sparse.map", b",".join(pairs) if sparse_map is None else sparse_map)]
    elif version == "1.0":
        records += [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
                    (b"GNU.sparse.name", name), (size_key or b"GNU.sparse.realsize", b"%d" % size)]
        text = (blocks + b"\n" + b"".join(p + b"\n" for p in pairs)
                if sparse_map is None else sparse_map)
        packed = pad(text) + packed
    else:
        raise ValueError(version)
    records += extra or []
    return (_pax(records)
            + header(ustar_name, typeflag=typeflag, size=len(packed), mode=mode, uid=uid,
                     gid=gid, mtime=mtime)
            + pad(packed))


def _gnu_num(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def _gnu_entries(entries: list[tuple[int, int]], count: int) -> bytes:
    out = b"".join(_gnu_num(off, 12) + _gnu_num(n, 12) for off, n in entries[:count])
    return out.ljust(24 * count, b"\0")


def old_gnu_sparse(name: bytes, size: int, fragments: Fragments, *,
                   magic: bytes = b"ustar  \x00", mode: int = 0o644) -> bytes:
    """An old GNU ``S`` member: 4 map entries in the header, 21 per extension block after it."""
    entries = [(off, len(d)) for off, d in fragments]
    packed = b"".join(d for _, d in fragments)
    blk = bytearray(header(name, typeflag=b"S", size=len(packed), mode=mode, magic=magic))
    blk[386:482] = _gnu_entries(entries, 4)
    rest = entries[4:]
    blk[482] = 1 if rest else 0
    blk[483:495] = _gnu_num(size, 12)
    blk[148:156] = b" " * 8
    blk[148:156] = b"%06o\x00 " % sum(blk)
    out = bytes(blk)
    while rest:
        ext = bytearray(BLOCK)
        ext[0:504] = _gnu_entries(rest, 21)
        rest = rest[21:]
        ext[504] = 1 if rest else 0
        out += bytes(ext)
    return out + pad(packed)


def end() -> bytes:
    return bytes(2 * BLOCK)
