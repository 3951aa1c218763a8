"""The dedup command where the file system cannot share extents (ext4, tmpfs): Go's output and
exit code (nothing saved, success) and a warning that says why.  tests/drivers/test_dedup.py
covers file systems that can (btrfs)."""

from __future__ import annotations

import fcntl
import io
import os
import tarfile
from pathlib import Path

import pytest

from clitools import CLI

FICLONE = 0x40049409


def _reflinks_work(directory: str) -> bool:
    src, dst = os.path.join(directory, "probe-src"), os.path.join(directory, "probe-dst")
    with open(src, "wb") as f:
        f.write(b"x" * 4096)
    try:
        with open(src, "rb") as s, open(dst, "wb") as d:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        return True
    except OSError:
        return False
    finally:
        for p in (src, dst):
            if os.path.exists(p):
                os.unlink(p)


def _twins_tar(path: Path) -> str:
    data = os.urandom(10000)
    with tarfile.open(path, "w") as tf:
        for name in ("a", "b"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return str(path)


def test_dedup_without_reflinks_saves_nothing_and_says_why(cli: CLI, tmp_path: Path) -> None:
    if _reflinks_work(str(tmp_path)):
        pytest.skip("the test directory is on a file system with reflinks")
    layer = cli.new_layer()
    cli.ok("applydiff", "-f", _twins_tar(tmp_path / "twins.tar"), layer)
    cli.ok("create-image", layer)
    result = cli.ok("dedup")
    assert result.out == "Deduplicated 0 bytes\n"
    assert "level=warning" in result.err
    assert "reflinks are not supported on this platform" in result.err
    assert cli.ok("dedup", "-j", "--hash-method", "sha256").out == '{"Deduped":0}\n'


def test_dedup_with_nothing_to_share_says_nothing(cli: CLI) -> None:
    cli.ok("create-image", cli.new_layer())
    result = cli.ok("dedup", "--hash-method=size")
    assert (result.out, result.err) == ("Deduplicated 0 bytes\n", "")


def test_dedup_refuses_an_unknown_hash_method(cli: CLI) -> None:
    assert cli.fails("dedup", "--hash-method", "md5").err == "invalid hash method: md5\n"
    assert cli.fails("dedup", "--json", "--hash-method", "md5").err == "invalid hash method: md5\n"
