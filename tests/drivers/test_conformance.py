"""One conformance suite for every graph driver: what the layer store relies on.

Runs against vfs, kernel overlay, overlay through fuse-overlayfs and btrfs (on a loop-mounted
btrfs), on real mounts.  vfs and btrfs hand out the layer's directory itself: no mount.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from containers_storage.drivers.base import ApplyDiffOpts, Driver, MountOpts
from containers_storage.drivers.overlay import OverlayDriver
from drivertools import Entry, make_tar, mounts_under, read_tar

RO = MountOpts(options=["ro"])
NO_MOUNTS = ("vfs", "btrfs")  # drivers whose get() returns the layer's directory


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _changes(driver: Driver, id: str, parent: str) -> dict[str, str]:
    return {c.path: c.kind.name for c in driver.changes(id, parent)}


def _diff_bytes(driver: Driver, id: str, parent: str) -> bytes:
    out = io.BytesIO()
    driver.diff(id, parent, out)
    return out.getvalue()


def _diff(driver: Driver, id: str, parent: str) -> dict[str, tarfile.TarInfo | bytes]:
    return read_tar(_diff_bytes(driver, id, parent))


def _is_mounted(driver: Driver, path: str) -> bool:
    return driver.name not in NO_MOUNTS and path in mounts_under(os.path.dirname(path))


# -- lifecycle -----------------------------------------------------------------------------------
def test_create_exists_remove(driver: Driver) -> None:
    assert not driver.exists("base")
    driver.create("base", "", None, False)
    driver.create("child", "base", None, True)
    assert driver.exists("base") and driver.exists("child")
    assert sorted(driver.list_layers()) == ["base", "child"]
    driver.remove("child")
    driver.remove("base")
    assert not driver.exists("base") and not driver.exists("child")
    assert driver.list_layers() == []


def test_get_unknown_layer_fails(driver: Driver) -> None:
    with pytest.raises(OSError):
        driver.get("missing", MountOpts())


def test_parent_content_visible_in_child(driver: Driver) -> None:
    driver.create("base", "", None, False)
    path = driver.get("base", MountOpts())
    try:
        os.mkdir(os.path.join(path, "etc"))
        with open(os.path.join(path, "etc", "hostname"), "w") as f:
            f.write("base")
    finally:
        driver.put("base")
    driver.create("child", "base", None, False)
    driver.create("grandchild", "child", None, True)
    path = driver.get("grandchild", MountOpts())
    try:
        with open(os.path.join(path, "etc", "hostname")) as f:
            assert f.read() == "base"
        # Writes to a child never reach its parent.
        with open(os.path.join(path, "etc", "hostname"), "w") as f:
            f.write("child")
    finally:
        driver.put("grandchild")
    path = driver.get("base", RO)
    try:
        with open(os.path.join(path, "etc", "hostname")) as f:
            assert f.read() == "base"
    finally:
        driver.put("base")


def test_mount_counts_and_no_leaks(driver: Driver) -> None:
    driver.create("base", "", None, False)
    first = driver.get("base", MountOpts())
    second = driver.get("base", MountOpts())
    assert first == second and os.path.isdir(first)
    driver.put("base")
    if driver.name not in NO_MOUNTS:
        assert _is_mounted(driver, first), "one reference left: still mounted"
    driver.put("base")
    assert not _is_mounted(driver, first)
    # A put too many is harmless, as in Go.
    driver.put("base")


def test_read_only_mount_refuses_writes(driver: Driver) -> None:
    if driver.name in NO_MOUNTS:
        pytest.skip(f"{driver.name} has no read-only mounts (Go's driver ignores \"ro\" too)")
    driver.create("base", "", None, False)
    path = driver.get("base", RO)
    try:
        with pytest.raises(OSError):
            open(os.path.join(path, "x"), "w").close()
    finally:
        driver.put("base")


# -- applying and exporting ---------------------------------------------------------------------
BASE_ENTRIES: list[Entry] = [
    ("etc", "d", ""),
    ("etc/hostname", "f", b"base\n"),
    ("etc/gone", "f", b"to be deleted"),
    ("etc/keep", "f", b"keep"),
    ("opaque", "d", ""),
    ("opaque/old1", "f", b"old"),
    ("opaque/sub", "d", ""),
    ("opaque/sub/old2", "f", b"old"),
    ("bin", "d", ""),
    ("bin/sh", "f", b"#!shell"),
    ("bin/link", "l", "sh"),
    ("bin/hard", "h", "bin/sh"),
]

CHILD_ENTRIES: list[Entry] = [
    ("etc", "d", ""),
    ("etc/.wh.gone", "f", b""),
    ("etc/hostname", "f", b"child\n"),
    ("opaque", "d", ""),
    ("opaque/.wh..wh..opq", "f", b""),
    ("opaque/new", "f", b"new"),
    ("added", "d", ""),
    ("added/file", "f", b"added"),
]


def _apply(driver: Driver, id: str, parent: str, entries: list[Entry]) -> int:
    tar = make_tar(entries)
    size = len(tar.getvalue())
    result = driver.apply_diff(id, parent, tar, ApplyDiffOpts())
    assert result.uncompressed_size == size
    return size


def _two_layers(driver: Driver) -> None:
    driver.create("base", "", None, False)
    _apply(driver, "base", "", BASE_ENTRIES)
    driver.create("child", "base", None, False)
    _apply(driver, "child", "base", CHILD_ENTRIES)


def test_apply_diff_content(driver: Driver) -> None:
    _two_layers(driver)
    path = driver.get("child", RO)
    try:
        assert _read(os.path.join(path, "etc/hostname")) == b"child\n"
        assert _read(os.path.join(path, "etc/keep")) == b"keep"
        assert not os.path.lexists(os.path.join(path, "etc/gone"))
        assert sorted(os.listdir(os.path.join(path, "opaque"))) == ["new"]
        assert os.readlink(os.path.join(path, "bin/link")) == "sh"
        assert os.stat(os.path.join(path, "bin/hard")).st_ino == os.stat(os.path.join(path, "bin/sh")).st_ino
        assert _read(os.path.join(path, "added/file")) == b"added"
        assert not any(n.startswith(".wh.") for _, dirs, files in os.walk(path) for n in dirs + files)
    finally:
        driver.put("child")


def test_overlay_whiteouts_on_disk(driver: Driver) -> None:
    if driver.name != "overlay":
        pytest.skip("overlay layout only")
    _two_layers(driver)
    diff = driver.diff_root("child")
    assert isinstance(driver, OverlayDriver)
    if driver.options.mount_program:
        # Go's AUFS whiteout format under a mount program: the tar's whiteout files as they are,
        # which fuse-overlayfs hides and honours (test_apply_diff_content checks the view).
        for name in ("etc/.wh.gone", "opaque/.wh..wh..opq"):
            st = os.lstat(os.path.join(diff, name))
            assert stat.S_ISREG(st.st_mode) and st.st_size == 0, name
        assert not os.path.lexists(os.path.join(diff, "etc", "gone"))
        assert sorted(os.listdir(os.path.join(diff, "opaque"))) == [".wh..wh..opq", "new"]
    else:
        st = os.lstat(os.path.join(diff, "etc", "gone"))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert os.getxattr(os.path.join(diff, "opaque"), "trusted.overlay.opaque") == b"y"
        assert sorted(os.listdir(os.path.join(diff, "opaque"))) == ["new"]
    assert sorted(os.listdir(diff)) == ["added", "etc", "opaque"]


def test_diff_round_trip(driver: Driver) -> None:
    _two_layers(driver)
    base = _diff(driver, "base", "")
    for name, kind, content in BASE_ENTRIES:
        assert name in base, name
        if kind == "f" and name + "#data" in base:
            assert base[name + "#data"] == content
        elif kind == "f":
            member = base[name]
            assert isinstance(member, tarfile.TarInfo) and member.islnk()  # the other of a pair
        elif kind == "h":
            # Whichever of the pair comes first carries the data, the other links to it.
            first, second = base[name], base[str(content)]
            assert isinstance(first, tarfile.TarInfo) and isinstance(second, tarfile.TarInfo)
            assert first.islnk() or second.islnk()
    member = base["bin/link"]
    assert isinstance(member, tarfile.TarInfo) and member.issym() and member.linkname == "sh"

    child = _diff(driver, "child", "base")
    assert "etc/.wh.gone" in child
    assert "opaque/.wh..wh..opq" in child or ("opaque/.wh.old1" in child and "opaque/.wh.sub" in child)
    assert child["etc/hostname#data"] == b"child\n"
    assert child["added/file#data"] == b"added"
    assert "etc/keep" not in child and "bin/sh" not in child

    # Re-applying the exported diffs rebuilds the same tree.
    for id, parent, src, src_parent in (("base2", "", "base", ""), ("child2", "base2", "child", "base")):
        driver.create(id, parent, None, False)
        data = _diff_bytes(driver, src, src_parent)
        driver.apply_diff(id, parent, io.BytesIO(data), ApplyDiffOpts())
    a, b = driver.get("child", RO), driver.get("child2", RO)
    try:
        assert _tree(a) == _tree(b)
    finally:
        driver.put("child")
        driver.put("child2")


def _tree(root: str) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            data = b""
            if stat.S_ISREG(st.st_mode):
                data = _read(full)
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(full).encode()
            out[os.path.relpath(full, root)] = (st.st_mode, data)
    return out


def test_changes_after_apply(driver: Driver) -> None:
    _two_layers(driver)
    changes = _changes(driver, "child", "base")
    assert changes["/etc/gone"] == "DELETE"
    assert changes["/etc/hostname"] == "MODIFY"
    assert changes["/added"] == "ADD"
    assert changes["/added/file"] == "ADD"
    assert changes["/opaque/new"] == "ADD"
    # Naive diff names what the opaque dir hides; Go's native overlay diff names the dir itself.
    assert changes.get("/opaque/old1") == "DELETE" or changes.get("/opaque") == "DELETE"
    assert "/etc/keep" not in changes and "/bin/sh" not in changes
    base = _changes(driver, "base", "")
    assert base["/etc/hostname"] == "ADD" and base["/bin/link"] == "ADD"


def test_changes_from_mounted_writes(driver: Driver) -> None:
    driver.create("base", "", None, False)
    _apply(driver, "base", "", BASE_ENTRIES)
    driver.create("ctr", "base", None, True)
    path = driver.get("ctr", MountOpts())
    try:
        os.unlink(os.path.join(path, "etc/keep"))
        with open(os.path.join(path, "etc/new"), "w") as f:
            f.write("x")
        with open(os.path.join(path, "bin/sh"), "a") as f:
            f.write("more")
    finally:
        driver.put("ctr")
    changes = _changes(driver, "ctr", "base")
    assert changes["/etc/keep"] == "DELETE"
    assert changes["/etc/new"] == "ADD"
    assert changes["/bin/sh"] == "MODIFY"


def test_diff_size(driver: Driver) -> None:
    _two_layers(driver)
    # Files of the child: hostname (6) + new (3) + added/file (5), whiteouts count 0.
    assert driver.diff_size("child", "base") == 14
    # hard link counted once: hostname 5 + gone 13 + keep 4 + old 3 + old 3 + sh 7 + link 2
    assert driver.diff_size("base", "") == 37


def test_apply_refuses_junk_and_stays_usable(driver: Driver) -> None:
    from containers_storage.errors import InvalidArchive

    driver.create("base", "", None, False)
    with pytest.raises(InvalidArchive):
        driver.apply_diff("base", "", io.BytesIO(b"\x1f\x8b" + b"junk" * 100), ApplyDiffOpts())
    _apply(driver, "base", "", BASE_ENTRIES)
    assert driver.diff_size("base", "") == 37
