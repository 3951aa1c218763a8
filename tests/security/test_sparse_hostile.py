"""Hostile sparse members: the same confinement as plain files, and bounded work for absurd maps.

Sparse content goes through the same confined open as a regular file, then positioned writes and
a truncate on that fd only; the sparse name (GNU.sparse.name) is resolved like any other name.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from containers_storage.archive.apply import ApplyOptions, apply_layer
from containers_storage.errors import InvalidArchive
from sparsebuild import TarBuilder, end, old_gnu_sparse, pax_sparse

TARGETS = ["plain", "overlay"]
VERSIONS = ["0.0", "0.1", "1.0"]


def tree(top: Path) -> dict[str, tuple[int, int, str]]:
    """Mode, size and content hash of everything under ``top`` (symlinks not followed)."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p)] = (st.st_mode, st.st_size, digest)
    return out


class Arena:
    def __init__(self, tmp: Path) -> None:
        self.layer = tmp / "layer"
        self.outside = tmp / "outside"
        self.layer.mkdir()
        self.outside.mkdir()
        (self.outside / "victim").write_bytes(b"secret")
        self.before = tree(self.outside)

    def apply(self, data: bytes, target: str = "plain") -> bool:
        try:
            apply_layer(io.BytesIO(data), str(self.layer), ApplyOptions(whiteouts=target))  # type: ignore[arg-type]
        except InvalidArchive:
            return False
        return True

    def assert_untouched(self) -> None:
        assert tree(self.outside) == self.before


@pytest.fixture
def arena(tmp_path: Path, resolver: str) -> Arena:
    return Arena(tmp_path)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_sparse_file_through_planted_symlink(arena: Arena, target: str, version: str,
                                             link: str) -> None:
    dest = str(arena.outside).encode() if link == "absolute" else b"../outside"
    data = (TarBuilder().symlink(b"evil", dest).build(end=False)
            + pax_sparse(version, b"evil/victim", 1 << 20, [(0, b"pwned")])
            + pax_sparse(version, b"evil/new", 1 << 20, [(5, b"pwned")]) + end())
    arena.apply(data, target)
    arena.assert_untouched()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", ["0.1", "1.0"])
@pytest.mark.parametrize("name", [b"../outside/victim", b"/outside/victim", b"a/../../outside/victim"])
def test_sparse_name_stays_inside(arena: Arena, target: str, version: str, name: bytes) -> None:
    """GNU.sparse.name replaces the header's name after every check a string could dodge: it is
    resolved beneath the layer like any other (Go's chroot puts it below the root too)."""
    assert arena.apply(pax_sparse(version, name, 10, [(0, b"pwned")]) + end(), target)
    arena.assert_untouched()
    assert (arena.layer / "outside" / "victim").read_bytes() == b"pwned" + bytes(5)


@pytest.mark.parametrize("target", TARGETS)
def test_old_gnu_sparse_whiteout_through_symlink(arena: Arena, target: str) -> None:
    data = (TarBuilder().symlink(b"evil", str(arena.outside).encode()).build(end=False)
            + old_gnu_sparse(b"evil/.wh.victim", 100, [(0, b"x")]) + end())
    arena.apply(data, target)
    arena.assert_untouched()


def test_absurd_real_size_is_bounded_work(arena: Arena) -> None:
    """An 8 EiB "file" from a few hundred bytes: nothing is written or hashed byte by byte; the
    filesystem either keeps it as one hole or refuses the size."""
    data = pax_sparse("1.0", b"f", (1 << 63) - 1, [((1 << 63) - 2, b"x")]) + end()
    if arena.apply(data):
        st = os.stat(arena.layer / "f")
        assert st.st_size == (1 << 63) - 1 and st.st_blocks < 64
    arena.assert_untouched()


def test_endless_1_0_map_is_cut_at_one_mib(arena: Arena) -> None:
    """A map that never reaches its count stops at 1 MiB, however much data the member claims."""
    blob = b"9" * (4 << 20)  # no newline after the count: Go would buffer all of it
    data = pax_sparse("1.0", b"f", 10, [], sparse_map=blob) + end()
    with pytest.raises(InvalidArchive, match="sparse map too long"):
        apply_layer(io.BytesIO(data), str(arena.layer), ApplyOptions())
    arena.assert_untouched()
