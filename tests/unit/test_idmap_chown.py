"""chown_by_maps: a layer's inherited files re-owned from one ID mapping to another (Go's
ChownPathByMaps), confined to the layer: symlinks are re-owned themselves, never followed."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from containers_storage.drivers.chown import ChownError, chown_by_maps
from containers_storage.idtools import (
    IDMap,
    overflow_id,
    root_pair,
    to_host_overflow,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")

OLD = [IDMap(0, 100000, 1000)]
NEW = [IDMap(0, 200000, 1000)]


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


@pytest.mark.parametrize("parallel", [False, True])
def test_owners_move_from_old_to_new_mapping(tmp_path: Path, parallel: bool) -> None:
    root = tmp_path / "layer"
    (root / "d" / "e").mkdir(parents=True)
    (root / "f").write_bytes(b"x")
    (root / "d" / "e" / "g").write_bytes(b"y")
    os.chown(root, 100000, 100000)
    os.chown(root / "d", 100001, 100002)
    os.chown(root / "d" / "e", 100003, 100003)
    os.chown(root / "f", 100005, 100006)
    os.chown(root / "d" / "e" / "g", 100007, 100007)

    chown_by_maps(str(root), OLD, OLD, NEW, NEW, parallel=parallel)

    assert owner(root / "d") == (200001, 200002)
    assert owner(root / "d" / "e") == (200003, 200003)
    assert owner(root / "f") == (200005, 200006)
    assert owner(root / "d" / "e" / "g") == (200007, 200007)
    assert owner(root) == (100000, 100000)  # the root itself is the driver's business, as in Go


def test_host_to_mapped_and_back(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    root.mkdir()
    (root / "f").write_bytes(b"x")
    os.chown(root / "f", 3, 4)
    chown_by_maps(str(root), [], [], NEW, NEW)  # from the host's IDs
    assert owner(root / "f") == (200003, 200004)
    chown_by_maps(str(root), NEW, NEW, [], [])  # and back to them
    assert owner(root / "f") == (3, 4)


def test_setid_bits_and_capabilities_survive(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    root.mkdir()
    prog = root / "prog"
    prog.write_bytes(b"#!/bin/sh\n")
    os.chown(prog, 100000, 100000)
    os.chmod(prog, 0o6755)
    # VFS_CAP_REVISION_2 with CAP_NET_RAW (13) permitted and effective.
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    os.setxattr(prog, "security.capability", cap)
    sgid_dir = root / "shared"
    sgid_dir.mkdir()
    os.chown(sgid_dir, 100000, 100000)
    os.chmod(sgid_dir, 0o2775)

    chown_by_maps(str(root), OLD, OLD, NEW, NEW)

    st = os.lstat(prog)
    assert (st.st_uid, st.st_gid) == (200000, 200000)
    assert stat.S_IMODE(st.st_mode) == 0o6755
    assert os.getxattr(prog, "security.capability") == cap
    assert stat.S_IMODE(os.lstat(sgid_dir).st_mode) == 0o2775
    assert owner(sgid_dir) == (200000, 200000)


def test_hard_links_stay_one_inode(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one").write_bytes(b"data")
    os.link(root / "a" / "one", root / "two")
    os.chown(root / "two", 100001, 100001)
    before = os.stat(root / "two").st_mtime_ns, os.stat(root).st_mtime_ns

    chown_by_maps(str(root), OLD, OLD, NEW, NEW)

    one, two = os.lstat(root / "a" / "one"), os.lstat(root / "two")
    assert one.st_ino == two.st_ino and one.st_nlink == 2
    assert (two.st_uid, two.st_gid) == (200001, 200001)
    # Still one inode: nothing was unlinked and linked again, so no directory changed.
    assert (os.stat(root / "two").st_mtime_ns, os.stat(root).st_mtime_ns) == before


@pytest.mark.parametrize("parallel", [False, True])
def test_split_hard_links_are_joined_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           parallel: bool) -> None:
    """What overlay does on copy-up: the first name gets a new inode; later names are linked to it."""
    import containers_storage.drivers.chown as chown_mod

    root = tmp_path / "layer"
    root.mkdir()
    (root / "a").write_bytes(b"data")
    os.link(root / "a", root / "b")
    os.chown(root / "a", 100001, 100001)
    real = chown_mod._chown_file

    def copy_up_then_chown(dfd: int, name: str, path: str, st: os.stat_result, uid: int, gid: int) -> None:
        data = os.open(name, os.O_RDONLY, dir_fd=dfd)
        try:
            content = os.read(data, 1 << 16)
        finally:
            os.close(data)
        os.unlink(name, dir_fd=dfd)  # the name now refers to a fresh copy, as after copy-up
        fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd)
        try:
            os.write(fd, content)
            os.fchown(fd, st.st_uid, st.st_gid)
        finally:
            os.close(fd)
        real(dfd, name, path, os.stat(name, dir_fd=dfd, follow_symlinks=False), uid, gid)

    monkeypatch.setattr(chown_mod, "_chown_file", copy_up_then_chown)
    chown_by_maps(str(root), OLD, OLD, NEW, NEW, parallel=parallel)

    a, b = os.lstat(root / "a"), os.lstat(root / "b")
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert (b.st_uid, b.st_gid) == (200001, 200001)


def test_symlinks_are_reowned_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"secret")
    os.chown(victim, 100002, 100002)
    os.chown(outside, 100002, 100002)
    root = tmp_path / "layer"
    root.mkdir()
    (root / "to-file").symlink_to(victim)
    (root / "to-dir").symlink_to(outside)
    (root / "relative").symlink_to("../outside/victim")
    for name in ("to-file", "to-dir", "relative"):
        os.lchown(root / name, 100003, 100003)

    chown_by_maps(str(root), OLD, OLD, NEW, NEW)

    for name in ("to-file", "to-dir", "relative"):
        assert owner(root / name) == (200003, 200003)
    assert owner(victim) == (100002, 100002)
    assert owner(outside) == (100002, 100002)


def test_root_owned_files_pass_unmapped(tmp_path: Path) -> None:
    """0:0 outside the old mapping is taken as the container's root (Go's leniency)."""
    root = tmp_path / "layer"
    root.mkdir()
    (root / "f").write_bytes(b"x")
    os.chown(root / "f", 0, 0)
    chown_by_maps(str(root), OLD, OLD, NEW, NEW)
    assert owner(root / "f") == (200000, 200000)


@pytest.mark.parametrize("parallel", [False, True])
def test_unmappable_owner_is_an_error(tmp_path: Path, parallel: bool) -> None:
    root = tmp_path / "layer"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_bytes(b"x")
    os.chown(root / "sub" / "f", 5, 5)
    with pytest.raises(ChownError) as info:
        chown_by_maps(str(root), OLD, OLD, NEW, NEW, parallel=parallel)
    assert str(info.value) == (
        'error during chown: mapping host ID pair idtools.IDPair{UID:5, GID:5} for "sub/f" to container: '
        "host ID 5 cannot be mapped to a container ID: exit status 1")


def test_ids_beyond_the_new_mapping_overflow(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    root.mkdir()
    (root / "f").write_bytes(b"x")
    os.chown(root / "f", 100999, 100999)
    chown_by_maps(str(root), OLD, OLD, [IDMap(0, 300000, 10)], [IDMap(0, 300000, 10)])
    assert owner(root / "f") == (overflow_id("uid"), overflow_id("gid"))


def test_root_pair_and_overflow_helpers() -> None:
    assert root_pair([], []) == (0, 0)
    assert root_pair(NEW, NEW) == (200000, 200000)
    assert root_pair([IDMap(5, 1234, 1)], [IDMap(0, 99, 2)]) == (1234, 99)  # a lone size-1 map
    assert to_host_overflow(7, 7, NEW, NEW) == (200007, 200007)
    assert to_host_overflow(5000, 1, NEW, NEW) == (overflow_id("uid"), 200001)
