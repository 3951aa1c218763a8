"""The shared tar output: fd shortcuts only where the bytes land unchanged."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

from containers_storage.archive.compression import Compression, open_compressed
from containers_storage.archive.sink import INLINE_MAX, BlockSink, plain_fd


def _big_file(tmp_path: Path) -> tuple[int, bytes]:
    data = os.urandom(INLINE_MAX * 3)
    path = tmp_path / "big"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY), data


def test_plain_files_use_their_fd(tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as f:
        assert plain_fd(f) == f.fileno()
    assert plain_fd(io.BytesIO()) == -1


def test_compressors_are_never_written_around(tmp_path: Path) -> None:
    fd, data = _big_file(tmp_path)
    try:
        with open(tmp_path / "out.gz", "wb") as f:
            codec = open_compressed(f, Compression.GZIP)
            assert plain_fd(codec) == -1  # its fileno() is the compressed file's
            sink = BlockSink(codec)
            sink.write(b"head")
            sink.copy_fd(fd, len(data), lambda: AssertionError("short"))
            sink.close()
            codec.close()
        assert gzip.decompress((tmp_path / "out.gz").read_bytes()) == b"head" + data
    finally:
        os.close(fd)


def test_short_file_raises_the_callers_error(tmp_path: Path) -> None:
    fd, data = _big_file(tmp_path)
    try:
        sink = BlockSink(io.BytesIO())
        try:
            sink.copy_fd(fd, len(data) + 1, lambda: ValueError("shrank"))
        except ValueError as e:
            assert str(e) == "shrank"
        else:
            raise AssertionError("a short file must fail")
    finally:
        os.close(fd)
