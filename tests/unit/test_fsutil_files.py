"""fsutil's temporary files: nameless, so nothing is left behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from containers_storage import fsutil


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "unlinked"])
def test_anonymous_file_leaves_no_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       tmpfile: bool) -> None:
    if not tmpfile:  # a file system without O_TMPFILE
        real_open = os.open

        def no_tmpfile(path: str, flags: int, mode: int = 0o777) -> int:
            if flags & os.O_TMPFILE == os.O_TMPFILE:
                raise OSError(errno.EOPNOTSUPP, "not supported")
            return real_open(path, flags, mode)

        monkeypatch.setattr(os, "open", no_tmpfile)
    with fsutil.anonymous_file(str(tmp_path)) as f:
        f.write(b"tar-split")
        f.seek(0)
        assert f.read() == b"tar-split"
        assert os.fstat(f.fileno()).st_nlink == 0
        assert os.fstat(f.fileno()).st_mode & 0o777 == 0o600
        assert list(tmp_path.iterdir()) == []


def test_anonymous_file_in_a_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsutil.anonymous_file(str(tmp_path / "gone"))


@pytest.mark.parametrize("copy_file_range", [True, False], ids=["copy_file_range", "read-write"])
def test_move_file_across_mounts_copies_and_removes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      copy_file_range: bool) -> None:
    src, dst = tmp_path / "staged.gz", tmp_path / "layer.tar-split.gz"
    data = os.urandom(300_000)
    src.write_bytes(data)
    src.chmod(0o600)

    def exdev(a: str, b: str) -> None:
        if a == str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        os.replace(a, b)

    def no_copy_file_range(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", exdev)
    if not copy_file_range:
        monkeypatch.setattr(os, "copy_file_range", no_copy_file_range)
    fsutil.move_file(str(src), str(dst))
    assert dst.read_bytes() == data
    assert dst.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer.tar-split.gz"]


def test_move_file_says_what_else_went_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsutil.move_file(str(tmp_path / "gone"), str(tmp_path / "dst"))
    assert list(tmp_path.iterdir()) == []
