"""Compression detection by magic and streaming decompression with Go-like errors."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os

import pytest

from containers_storage.archive.compression import (
    CHUNK_OUT,
    Compression,
    Decompressor,
    detect,
    open_compressed,
    open_decompressed,
)
from containers_storage.errors import InvalidArchive

try:
    from compression import zstd
except ImportError:
    from backports import zstd

CODECS = {
    Compression.GZIP: gzip.compress,
    Compression.BZIP2: bz2.compress,
    Compression.XZ: lzma.compress,
    Compression.ZSTD: zstd.compress,
}
PAYLOAD = os.urandom(200_000) + bytes(3 << 20)


def test_go_values_and_names() -> None:
    assert [int(c) for c in Compression] == [0, 1, 2, 3, 4]
    assert Compression.ZSTD.name_go == "Zstd" and Compression.ZSTD.extension == "tar.zst"
    assert Compression.UNCOMPRESSED.extension == "tar"


@pytest.mark.parametrize("kind", list(CODECS))
def test_detect_and_round_trip(kind: Compression) -> None:
    raw = CODECS[kind](PAYLOAD)
    assert detect(raw[:16]) == kind
    got, reader = open_decompressed(io.BytesIO(raw))
    assert got == kind and reader.read() == PAYLOAD


def test_detect_short_and_plain() -> None:
    assert detect(b"") == Compression.UNCOMPRESSED
    assert detect(b"\x1f\x8b") == Compression.UNCOMPRESSED  # Go needs the whole magic
    got, reader = open_decompressed(io.BytesIO(b"plain tar bytes"))
    assert got == Compression.UNCOMPRESSED and reader.read() == b"plain tar bytes"


@pytest.mark.parametrize("kind", list(CODECS))
def test_concatenated_members(kind: Compression) -> None:
    raw = CODECS[kind](b"one ") + CODECS[kind](b"two")
    assert open_decompressed(io.BytesIO(raw))[1].read() == b"one two"


@pytest.mark.parametrize("kind", list(CODECS))
def test_truncation_is_unexpected_eof(kind: Compression) -> None:
    raw = CODECS[kind](PAYLOAD)
    with pytest.raises(InvalidArchive, match="unexpected EOF"):
        open_decompressed(io.BytesIO(raw[: len(raw) // 2]))[1].read()


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.BZIP2, Compression.XZ])
def test_trailing_junk_is_an_invalid_header(kind: Compression) -> None:
    raw = CODECS[kind](b"data") + b"garbage!"
    with pytest.raises(InvalidArchive, match="invalid header"):
        open_decompressed(io.BytesIO(raw))[1].read()


def test_output_pieces_are_bounded() -> None:
    bomb = gzip.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    dec = Decompressor(Compression.GZIP)
    total = 0
    for piece in dec.feed(bomb):
        assert len(piece) <= CHUNK_OUT
        total += len(piece)
    dec.finish()
    assert total == 64 << 20


def test_gzip_checksum_error_text() -> None:
    raw = bytearray(gzip.compress(b"x" * 1000))
    raw[-6] ^= 1
    with pytest.raises(InvalidArchive, match="gzip: invalid checksum"):
        open_decompressed(io.BytesIO(bytes(raw)))[1].read()


@pytest.mark.parametrize("kind", list(Compression))
def test_open_compressed_leaves_destination_open(kind: Compression) -> None:
    out = io.BytesIO()
    w = open_compressed(out, kind)
    w.write(PAYLOAD)
    w.close()
    assert not out.closed
    got, reader = open_decompressed(io.BytesIO(out.getvalue()))
    assert got == kind and reader.read() == PAYLOAD
