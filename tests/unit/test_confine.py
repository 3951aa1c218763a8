"""Confined path resolution: openat2(RESOLVE_IN_ROOT) and the O_NOFOLLOW walk agree."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers_storage.archive import confine


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
