"""Confined path resolution: openat2(RESOLVE_IN_ROOT) and the O_NOFOLLOW walk agree."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers_storage.archive import accel, confine


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "openat2":
        confine.set_openat2_enabled(None)
        if not confine.have_openat2():
            pytest.skip("kernel has no openat2")
    else:
        confine.set_openat2_enabled(False)
    yield request.param
    confine.set_openat2_enabled(None)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f").write_text("inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("OUTSIDE")
    os.symlink(str(tmp_path / "outside"), root / "abs")
    os.symlink("../outside", root / "rel")
    os.symlink("abs", root / "chain")
    os.symlink("d", root / "dl")
    os.symlink("/", root / "slash")
    os.symlink("loop", root / "loop")
    return root


def _target(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _read(root_fd: int, rel: str) -> bytes:
    fd = confine.open_beneath(root_fd, rel, os.O_RDONLY)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


@pytest.mark.parametrize("rel", ["abs/f", "rel/f", "chain/f", "../outside/f", "/../outside/f",
                                 "slash/../outside/f", "d/../../outside/f"])
def test_escapes_resolve_inside_or_fail(resolver: str, tree: Path, rel: str) -> None:
    root = confine.open_root(str(tree))
    try:
        with pytest.raises(FileNotFoundError):
            _read(root, rel)
    finally:
        os.close(root)


def test_inside_paths_resolve(resolver: str, tree: Path) -> None:
    root = confine.open_root(str(tree))
    try:
        assert _read(root, "dl/f") == b"inside"
        assert _read(root, "slash/d/f") == b"inside"
        assert _read(root, "d/e/../f") == b"inside"
        assert _read(root, "/d/f") == b"inside"
        fd = confine.open_beneath(root, "slash", os.O_PATH | os.O_DIRECTORY)
        assert _target(fd) == str(tree)
        os.close(fd)
        fd = confine.open_beneath(root, "abs", os.O_PATH | os.O_NOFOLLOW)
        assert _target(fd) == str(tree / "abs")  # the link itself, not its target
        os.close(fd)
    finally:
        os.close(root)


def test_create_through_dangling_link_lands_inside(resolver: str, tree: Path) -> None:
    root = confine.open_root(str(tree))
    try:
        os.symlink("/d/new", tree / "dangling")
        fd = confine.open_beneath(root, "dangling", os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        assert (tree / "d" / "new").exists()
        assert not (tree.parent / "outside" / "new").exists()
    finally:
        os.close(root)


def test_loops_are_eloop(resolver: str, tree: Path) -> None:
    root = confine.open_root(str(tree))
    try:
        with pytest.raises(OSError) as info:
            _read(root, "loop/x")
        assert info.value.errno == errno.ELOOP
    finally:
        os.close(root)


def test_parent_beneath(resolver: str, tree: Path) -> None:
    root = confine.open_root(str(tree))
    try:
        fd, name = confine.parent_beneath(root, "dl/../../../d/x")
        assert name == b"x" and _target(fd) == str(tree / "d")  # ".." stops at the root
        os.close(fd)
        fd, name = confine.parent_beneath(root, "dl/e/y")
        assert name == b"y" and _target(fd) == str(tree / "d" / "e")
        os.close(fd)
        with pytest.raises(OSError):
            confine.parent_beneath(root, "..")
    finally:
        os.close(root)


@pytest.fixture(params=["c", "python-openat2", "python-walk"])
def copies_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """open_copies through the C batch (openat2 and the extension) or file by file in Python,
    with either resolver."""
    confine.set_openat2_enabled(request.param != "python-walk")
    if request.param != "python-walk" and not confine.have_openat2():
        pytest.skip("kernel has no openat2")
    if request.param == "c" and accel.fastapply is None:
        pytest.skip("the C accelerator is not built or is disabled")
    if request.param != "c":
        monkeypatch.setattr(confine, "fastapply", None)
    yield str(request.param)
    confine.set_openat2_enabled(None)


def test_open_copies_keeps_only_regular_files_of_the_size(copies_path: str, tree: Path) -> None:
    (tree / "d" / "big").write_bytes(b"x" * 70000)
    os.mkfifo(tree / "d" / "fifo")
    root = confine.open_root(str(tree))
    try:
        items: list[tuple[int, str | bytes, int]] = [
            (root, "d/f", 6),              # a regular file of its size: kept
            (root, b"d/big", 70000),       # bytes names too
            (root, "d/f", 7),              # another size: not used
            (root, "d/missing", 0),
            (root, "d/e", 4096),           # a directory
            (root, "d/fifo", 0),           # never opened for reading (O_NONBLOCK), not regular
            (root, "dl/f", 6),             # a symlink on the way is followed inside the root
            (root, "chain", 0),            # a symlink as the last component: O_NOFOLLOW
            (root, "../outside/f", 7),     # ".." stops at the root: root/outside/f, missing
            (root, "abs/f", 7),            # an absolute link resolves inside the root
            (-1, "d/f", 6),                # a layer that could not be opened
        ]
        fds = confine.open_copies(items)
        assert len(fds) == len(items)
        kept = [i for i, fd in enumerate(fds) if fd >= 0]
        assert kept == [0, 1, 6]
        try:
            assert os.read(fds[0], 100) == b"inside"
            assert os.fstat(fds[1]).st_size == 70000
            assert os.read(fds[6], 100) == b"inside"
            for fd in (fds[0], fds[1], fds[6]):
                assert os.get_inheritable(fd) is False  # O_CLOEXEC
        finally:
            for i in kept:
                os.close(fds[i])
        assert confine.open_copies([]) == []
    finally:
        os.close(root)


def test_open_copies_cleans_paths_as_open_beneath_does(copies_path: str, tree: Path) -> None:
    # Empty and "." components are dropped, a trailing slash too; a name that is not UTF-8
    # comes as a str with surrogate escapes (os.fsdecode) or as bytes.
    odd = os.fsdecode(b"d/caf\xe9")
    (tree / "d" / os.fsdecode(b"caf\xe9")).write_bytes(b"latin-1")
    root = confine.open_root(str(tree))
    try:
        items: list[tuple[int, str | bytes, int]] = [
            (root, "./d//./f", 6), (root, "/d/f", 6), (root, "d/f/", 6), (root, b".//d/./f", 6),
            (root, odd, 7), (root, os.fsencode(odd), 7),
            (root, "", 4096), (root, "./", 4096),  # the root itself: a directory, not used
            (root, "d/./g", 6),
        ]
        fds = confine.open_copies(items)
        kept = [i for i, fd in enumerate(fds) if fd >= 0]
        try:
            assert kept == [0, 1, 2, 3, 4, 5]
            assert {os.read(fds[i], 100) for i in (0, 1, 2, 3)} == {b"inside"}
            assert {os.read(fds[i], 100) for i in (4, 5)} == {b"latin-1"}
        finally:
            for i in kept:
                os.close(fds[i])
    finally:
        os.close(root)


def test_open_copies_checks_its_items(tree: Path) -> None:
    if accel.fastapply is None or not confine.have_openat2():
        pytest.skip("the C batch needs openat2 and the extension")
    root = confine.open_root(str(tree))
    try:
        with pytest.raises(ValueError, match="NUL"):
            accel.fastapply.open_copies([(root, b"d/f\0x", 6)], os.O_RDONLY, 0)
        with pytest.raises(TypeError):
            accel.fastapply.open_copies([(root, b"d/f")], os.O_RDONLY, 0)
        with pytest.raises(OverflowError):
            accel.fastapply.open_copies([(1 << 40, b"d/f", 6)], os.O_RDONLY, 0)
        with pytest.raises(ValueError, match="NUL"):
            accel.fastapply.open_copies([(root, "d/f\0x", 6)], os.O_RDONLY, 0)
        with pytest.raises(TypeError):
            accel.fastapply.open_copies([(root, 5, 6)], os.O_RDONLY, 0)
    finally:
        os.close(root)
