"""TarSplitWriter.add_file's fast path (``_plain_key``) agrees with the general path on every name."""

from __future__ import annotations

import gzip
import io
import itertools
import random

import pytest
from pybase64 import b64encode

from containers_storage.archive import tarsplit as T

ALPHABET = [b"a", b"Z", b"0", b".", b"/", b'"', b"\\", b"<", b">", b"&", b"\x01", b"\x1f", b" ",
            b"\x7f", "é".encode(), b"\xff", "\u2028".encode()]


def _general(name: bytes, size: int, crc: bytes | None, pos: int) -> bytes:
    """The entry line as the general (slow) path writes it."""
    size_field = b'"size":%d,' % size if size else b""
    payload = b'"%b"' % b64encode(crc) if crc is not None else b"null"
    return b'{"type":1,%b%b"payload":%b,"position":%d}\n' % (T._name_field(name), size_field, payload, pos)


def _names() -> list[bytes]:
    rng = random.Random(5)
    names = [b"", b".", b"./", b"/", b"a", b"./a", b"a/", b"./a/", b"a//b", b"a/./b", b"a/../b", b"../a",
             b"/abs", b".hidden", b"d/.wh.x", b"d/.wh..wh..opq", b"usr/lib/x86_64-linux-gnu/libc.so.6",
             b"./etc/d0025/f02712.so", b"a b/c d", b"x\x7fy"]
    for length in range(1, 6):
        names += [b"".join(p) for p in itertools.product([b"a", b".", b"/"], repeat=length)]
    names += [b"".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    return names


@pytest.mark.parametrize("size", [0, 7])
def test_fast_path_bytes_match_general_path(size: int) -> None:
    crc = b"\x01\x02\x03\x04\x05\x06\x07\x08" if size else None
    for name in _names():
        out = io.BytesIO()
        w = T.TarSplitWriter(out)
        w.add_file(name, size, crc)
        w.close()
        assert gzip.decompress(out.getvalue()) == _general(name, size, crc, 0), name


def test_fast_path_duplicate_keys_are_clean_paths() -> None:
    names = _names()
    for name in names:
        plain = T._plain_key(name)
        if plain is not None:
            assert plain == T.clean_path(name), name
    # Spellings of one path are duplicates whichever path they take.
    for first, second in [(b"a/b", b"./a/b/"), (b"./a/b", b"a//b"), (b"a", b"./a/../a")]:
        w = T.TarSplitWriter(io.BytesIO())
        w.add_file(first, 0, None)
        with pytest.raises(T.DuplicatePath):
            w.add_file(second, 0, None)


def test_file_line_fast_parse_agrees_with_json() -> None:
    """The reader's hand-sliced file lines read as the JSON decoder reads them, or are left to it."""
    crc = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    lines = []
    for name in _names():
        for size in (0, 7):
            out = io.BytesIO()
            w = T.TarSplitWriter(out)
            w.add_file(name, size, crc if size else None)
            w.close()
            lines.append(gzip.decompress(out.getvalue()).rstrip(b"\n"))
    lines += [
        b'{"type":1,"name":"a","size":3,"payload":"AQIDBAUGBwg=","position":9}  \r',
        b'{"type":1,"name":"a","payload":null,"position":0}',
        b'{"type":1,"name":"a\\u0041","payload":null,"position":0}',
        b'{"type":1,"name":"a","payload":"AQ\\u0041=","position":0}',
        b'{"type":1,"name":"a","size":-3,"payload":null,"position":0}',
        b'{"type":1,"name":"a","size":3,"payload":"!!","position":0}',
        b'{"type":1,"name":"","payload":null,"position":0}',
        b'{"type":1,"name":"a","payload":null,"position":0,"x":1}',
        b'{"type":1,"name":"a","payload":null,"position":x}',
        b'{"type":1,"name":"a","payload":null}',
        b'{"type":1,"name":"a",',
    ]
    fast = 0
    for line in lines:
        parsed = T._parse_file_line(line)
        if parsed is None:
            continue
        fast += 1
        name, size, crc_text = parsed
        entry = T._decode_line(line)
        assert entry is not None and entry.type == T.FILE_TYPE, line
        crc_value = T._a2b(crc_text) if crc_text is not None else None
        assert (entry.name, entry.size, entry.payload) == (name, size, crc_value), line
    assert fast > 1000  # the usual shape does take the fast path
