"""fsutil.remove_tree (threaded RemoveAll) and copy_tree (the vfs driver's child copy)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from containers_storage import fsutil


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _make_tree(root: Path, dirs: int = 40, files: int = 8) -> None:
    for i in range(dirs):
        d = root / f"d{i % 5}" / f"sub{i}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(files):
            (d / f"f{j}").write_bytes(b"x" * j)
        os.symlink("f0", d / "link")
        os.symlink("/", d / "abs-root-link")
    os.mkfifo(root / "fifo")
    os.link(root / "d0" / "sub0" / "f1", root / "hardlink")


def test_remove_tree_removes_everything(tmp_path: Path) -> None:
    top = tmp_path / "layer"
    _make_tree(top)
    before = _open_fds()
    fsutil.remove_tree(str(top))
    assert not top.exists()
    assert _open_fds() == before
    assert list(tmp_path.iterdir()) == []


def test_remove_tree_never_follows_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    top = tmp_path / "layer"
    (top / "a").mkdir(parents=True)
    os.symlink(outside, top / "a" / "dirlink")
    os.symlink(outside / "keep", top / "filelink")
    fsutil.remove_tree(str(top))
    assert not top.exists()
    assert (outside / "keep").read_text() == "precious"


def test_remove_tree_top_symlink_is_unlinked_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    os.symlink(target, tmp_path / "link")
    fsutil.remove_tree(str(tmp_path / "link"))
    assert not os.path.lexists(tmp_path / "link")
    assert (target / "keep").exists()


def test_remove_tree_missing_and_plain_file(tmp_path: Path) -> None:
    fsutil.remove_tree(str(tmp_path / "nothing"))
    f = tmp_path / "file"
    f.write_text("x")
    fsutil.remove_tree(str(f))
    assert not f.exists()


def test_remove_tree_read_only_dirs(tmp_path: Path) -> None:
    top = tmp_path / "layer"
    _make_tree(top, dirs=12)
    for d in top.rglob("*"):
        if d.is_dir() and not d.is_symlink():
            d.chmod(0o555)
    (top / "d1").chmod(0)
    top.chmod(0o555)
    fsutil.remove_tree(str(top))
    assert not top.exists()


def test_remove_tree_deep(tmp_path: Path) -> None:
    top = tmp_path / "layer"
    d = top
    for i in range(300):  # deeper than any sane fd budget per level would allow if leaked
        d = d / f"n{i}"
    d.mkdir(parents=True)
    (d / "leaf").write_text("x")
    before = _open_fds()
    fsutil.remove_tree(str(top))
    assert not top.exists()
    assert _open_fds() == before


def test_remove_tree_error_closes_fds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "layer"
    _make_tree(top, dirs=30)
    real_unlink = os.unlink
    calls = {"n": 0}

    def failing_unlink(path: object, *, dir_fd: int | None = None) -> None:
        calls["n"] += 1
        if calls["n"] == 50:
            raise OSError(5, "Input/output error")
        real_unlink(path, dir_fd=dir_fd)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", failing_unlink)
    monkeypatch.setattr(fsutil, "_removetree", None)  # the Python loop (the C one is below)
    monkeypatch.setattr(fsutil, "_removetree_looked_up", True)
    before = _open_fds()
    with pytest.raises(OSError, match="Input/output error"):
        fsutil.remove_tree(str(top))
    assert _open_fds() == before
    monkeypatch.undo()
    fsutil.remove_tree(str(top))  # what is left can still be removed
    assert not top.exists()


def _removetree() -> Any:
    fast = fsutil._c_removetree()
    if fast is None:
        pytest.skip("the _removetree extension is not built (or CONTAINERS_STORAGE_PURE_PYTHON=1)")
    return fast


def _unlink_entries() -> Callable[[int], tuple[list[str], int] | None]:
    return _removetree().unlink_entries  # type: ignore[no-any-return]


def test_c_unlink_entries_unlinks_all_but_directories(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "keep").write_text("precious")
    top = tmp_path / "dir"
    for name in ("a", "b", ".hidden-dir"):
        (top / name / "x").mkdir(parents=True)
    (top / "file").write_text("x")
    (top / "..dots").write_text("x")
    os.symlink(outside, top / "dirlink")
    os.symlink(outside / "keep", top / "filelink")
    os.symlink("nowhere", top / "dangling")
    os.mkfifo(top / "fifo")
    os.link(top / "file", top / "hardlink")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = _unlink_entries()(fd)
    finally:
        os.close(fd)
    assert got is not None
    names, count = got
    assert sorted(names) == [".hidden-dir", "a", "b"]
    assert count == 10
    assert sorted(p.name for p in top.iterdir()) == [".hidden-dir", "a", "b"]
    assert (outside / "keep").read_text() == "precious" and (outside / "inner").is_dir()


def test_c_unlink_entries_declines_an_error_and_rewinds(tmp_path: Path) -> None:
    """An entry it cannot unlink (immutable) makes it return None with the directory read again
    from its start, so that the Python loop sees what is left and reports the error."""
    top = tmp_path / "dir"
    top.mkdir()
    for i in range(5):
        (top / f"f{i}").write_text("x")
    if subprocess.run(["chattr", "+i", str(top / "f3")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here")
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert _unlink_entries()(fd) is None
            with os.scandir(fd) as it:
                assert "f3" in {e.name for e in it}
        finally:
            os.close(fd)
    finally:
        subprocess.run(["chattr", "-i", str(top / "f3")], check=True)


@pytest.mark.parametrize("mode", ["c-trees", "c-loop", "python"])
def test_remove_tree_big_tree_in_c_or_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             mode: str) -> None:
    """Past the threshold the queued subtrees go to C whole (``remove_trees``); when that stops
    (here: at once, "c-loop") the Python helpers start and use the C loop per directory; without
    the extension, the Python loop: the same result every way."""
    if mode == "c-loop":
        real = _removetree()
        calls = []

        def refuse(items: list[tuple[int, str]], threads: int) -> int:
            calls.append(len(items))
            return errno.EIO

        monkeypatch.setattr(fsutil, "_removetree", SimpleNamespace(unlink_entries=real.unlink_entries,
                                                                   remove_trees=refuse))
    elif mode == "c-trees":
        _removetree()
    else:
        monkeypatch.setattr(fsutil, "_removetree", None)
        monkeypatch.setattr(fsutil, "_removetree_looked_up", True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    top = tmp_path / "layer"
    _make_tree(top, dirs=60, files=20)
    os.symlink(outside, top / "d1" / "out")
    before = _open_fds()
    fsutil.remove_tree(str(top))
    assert not top.exists()
    assert _open_fds() == before
    assert (outside / "keep").read_text() == "precious"
    if mode == "c-loop":
        assert calls and calls[0] > 0


def test_c_remove_trees_removes_whole_subtrees_never_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "keep").write_text("precious")
    _make_tree(tmp_path / "b", dirs=3)  # not asked for: stays
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    before = _open_fds()
    try:
        for threads in (4, 1):
            _make_tree(tmp_path / "a", dirs=30, files=5)
            os.symlink(outside, tmp_path / "a" / "d2" / "out")
            (tmp_path / "c").mkdir()  # empty
            assert _removetree().remove_trees([(fd, "a"), (fd, "c")], threads) == 0
            assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "outside"]
            assert _open_fds() == before
        assert _removetree().remove_trees([(fd, "gone")], 4) == errno.ENOENT
    finally:
        os.close(fd)
    assert (outside / "keep").read_text() == "precious" and (outside / "inner").is_dir()
    assert (tmp_path / "b" / "d0" / "sub0" / "f1").read_bytes() == b"x"


def test_remove_tree_c_error_is_reported(tmp_path: Path) -> None:
    """What stops remove_trees (an immutable file) is left to the Python loop, which reports
    it; the subtrees C removed whole before are skipped."""
    _removetree()
    top = tmp_path / "layer"
    _make_tree(top, dirs=40, files=10)
    stuck = top / "d4" / "sub39" / "f3"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here")
    before = _open_fds()
    try:
        with pytest.raises(PermissionError):
            fsutil.remove_tree(str(top))
        assert _open_fds() == before
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    fsutil.remove_tree(str(top))
    assert not top.exists()


def test_copy_tree_exact(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src, dirs=6)
    (src / "d0" / "setuid").write_bytes(b"#!")
    os.chmod(src / "d0" / "setuid", 0o4755)
    os.utime(src / "d0", ns=(1_000_000_000, 2_000_000_123))
    (src / "d1").chmod(0o555)  # a read-only directory still gets its children
    os.utime(src / "d1", ns=(3_000_000_000, 4_000_000_000))
    dst = tmp_path / "dst"
    dst.mkdir()
    fsutil.copy_tree(str(src), str(dst))

    def snapshot(root: Path) -> dict[str, tuple[int, int, int, int, bytes | str | None]]:
        out: dict[str, tuple[int, int, int, int, bytes | str | None]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                rel = str(p.relative_to(root))
                content: bytes | str | None = None
                if stat.S_ISREG(st.st_mode):
                    content = p.read_bytes()
                elif stat.S_ISLNK(st.st_mode):
                    content = os.readlink(p)
                mtime = 0 if stat.S_ISLNK(st.st_mode) else st.st_mtime_ns
                out[rel] = (st.st_mode, st.st_uid, st.st_gid, mtime, content)
        return out

    assert snapshot(dst) == snapshot(src)
    assert os.stat(dst / "hardlink").st_ino == os.stat(dst / "d0" / "sub0" / "f1").st_ino
    assert os.stat(dst / "d0").st_mtime_ns == 2_000_000_123
    assert os.stat(dst / "d1").st_mtime_ns == 4_000_000_000


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_remove_tree_rootless_read_only_dirs() -> None:
    """Without CAP_DAC_OVERRIDE a 0555 (or 0000) directory refuses unlink/open until chmodded."""
    import shutil
    import tempfile

    area = Path(tempfile.mkdtemp(prefix="rmtree-rootless-"))
    try:
        top = area / "layer"
        _make_tree(top, dirs=12)
        for p in [area, *area.rglob("*")]:
            os.chown(p, 65534, 65534, follow_symlinks=False)
        for d in top.rglob("*"):
            if d.is_dir() and not d.is_symlink():
                d.chmod(0o555)
        (top / "d1").chmod(0)
        top.chmod(0o555)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                fsutil.remove_tree(str(top))
                code = 0 if not top.exists() else 2
            except BaseException as e:
                os.write(2, f"remove_tree as nobody: {e!r}\n".encode())
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not top.exists()
    finally:
        shutil.rmtree(area, ignore_errors=True)


@pytest.mark.parametrize("sync", [True, False], ids=["durable", "volatile"])
def test_atomic_write_syncs_the_data_as_go_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                sync: bool) -> None:
    """Go's AtomicFileWriter fdatasyncs the temporary file before the rename (not for volatile
    files), and a failure leaves the old file and no temporary behind."""
    target = tmp_path / "layers.json"
    target.write_bytes(b"old")
    synced: list[bytes] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        synced.append(os.fsencode(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)
    monkeypatch.setattr(os, "fdatasync", recording)
    fsutil.atomic_write(str(target), b"new", mode=0o640, sync=sync)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert len(synced) == (1 if sync else 0)
    if sync:
        assert os.path.dirname(synced[0]) == os.fsencode(tmp_path) and synced[0] != os.fsencode(target)

    def failing(fd: int) -> None:
        raise OSError(5, "EIO")
    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        fsutil.atomic_write(str(target), b"newer")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.json"]


def test_remove_tree_helpers_do_not_import_threading(tmp_path: Path) -> None:
    """A big tree starts helper threads through _thread alone: a CLI delete does not pay for
    importing threading (functools, collections, ...)."""
    top = tmp_path / "big"
    _make_tree(top, dirs=60, files=10)
    code = (
        "import sys, containers_storage.fsutil as f\n"
        "f.remove_tree(sys.argv[1])\n"
        "print(sorted(m for m in ('threading', 'functools', 'collections') if m in sys.modules))\n"
        "print(f._removetree_looked_up)\n"
    )
    src = str(Path(fsutil.__file__).parent.parent)
    out = subprocess.run([sys.executable, "-S", "-c", code, str(top)],
                         env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert not top.exists()
    assert out[0] == "[]", out
    assert out[1] == "True", "the tree was too small to start the helper threads"


def test_directory_size_counts_files_and_hard_links_once(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"x" * 1000)
    os.link(root / "a" / "b" / "f", root / "a" / "hard")
    (root / "g").write_bytes(b"y" * 24)
    (root / "link").symlink_to("a/b/f")  # counts its own length, not its target's
    expected = 1000 + 24 + len("a/b/f")
    assert fsutil.directory_size(str(root)) == expected
    assert fsutil.directory_size(str(root / "g")) == 24
    with pytest.raises(FileNotFoundError):
        fsutil.directory_size(str(tmp_path / "missing"))


def test_make_temp_dir_is_new_private_and_empty(tmp_path: Path) -> None:
    made = {fsutil.make_temp_dir(str(tmp_path)) for _ in range(20)}
    assert len(made) == 20
    for path in made:
        assert os.path.dirname(path) == str(tmp_path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700 & ~_umask()
        assert os.listdir(path) == []
    with pytest.raises(FileNotFoundError):
        fsutil.make_temp_dir(str(tmp_path / "missing"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
