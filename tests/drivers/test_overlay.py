"""Overlay specifics: Go's on-disk layout, options, probes, deep images, repairs, staged apply.

All on real kernel mounts; the ``make_driver`` fixture fails a test that leaks one.
"""

from __future__ import annotations

import os
import re
import stat

import pytest

from containers_storage.drivers.base import ApplyDiffOpts, MountOpts
from containers_storage.drivers.overlay import OverlayDriver
from containers_storage.errors import DriverError
from containers_storage.mountinfo import is_mountpoint
from drivertools import FUSE_OVERLAYFS, DriverFactory, deep_chain, make_tar, mounts_under

RO = MountOpts(options=["ro"])


def _overlay(make_driver: DriverFactory, options: list[str] | None = None,
             image_store: str = "", root: str = "root") -> OverlayDriver:
    d = make_driver("overlay", options, root=root, image_store=image_store)
    assert isinstance(d, OverlayDriver)
    return d


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _mode(path: str) -> str:
    return stat.filemode(os.lstat(path).st_mode)


def _mount_line(path: str) -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split(" ")[4] == path:
                return line
    return ""


# -- layout ----------------------------------------------------------------------------------
def test_layout_matches_go(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    d.create("mid", "base", None, False)
    d.create("ctr", "mid", None, True)
    home = d.home
    assert _mode(os.path.join(home, "l")) == "drwxr-xr-x"
    umask = os.umask(0)
    os.umask(umask)
    file_mode = stat.filemode(stat.S_IFREG | (0o644 & ~umask))
    for id in ("base", "mid", "ctr"):
        layer = os.path.join(home, id)
        assert _mode(layer) == "drwx------"
        assert _mode(os.path.join(layer, "diff")) == "dr-xr-xr-x"
        assert _mode(os.path.join(layer, "work")) == "drwx------"
        assert _mode(os.path.join(layer, "merged")) == "drwx------"
        assert _mode(os.path.join(layer, "link")) == file_mode
        link = _read(os.path.join(layer, "link"))
        assert re.fullmatch(r"[A-Z2-7]{26}", link)
        assert os.readlink(os.path.join(home, "l", link)) == f"../{id}/diff"
    assert _mode(os.path.join(home, "base", "empty")) == "drwx------"
    assert not os.path.exists(os.path.join(home, "base", "lower"))
    assert not os.path.exists(os.path.join(home, "mid", "empty"))
    base_link = _read(os.path.join(home, "base", "link"))
    mid_link = _read(os.path.join(home, "mid", "link"))
    assert _read(os.path.join(home, "mid", "lower")) == f"l/{base_link}"
    assert _read(os.path.join(home, "ctr", "lower")) == f"l/{mid_link}:l/{base_link}"
    assert stat.S_IMODE(os.stat(os.path.join(home, "ctr", "lower")).st_mode) == 0o666 & ~umask
    assert sorted(d.list_layers()) == ["base", "ctr", "mid"]
    d.remove("mid")
    assert not os.path.lexists(os.path.join(home, "l", mid_link))


def test_child_inherits_parent_root_mode(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    d.apply_diff("base", "", make_tar([(".", "d", "")]), ApplyDiffOpts())
    os.chmod(d.diff_root("base"), 0o751)
    d.create("child", "base", None, False)
    assert stat.S_IMODE(os.stat(d.diff_root("child")).st_mode) == 0o751


# -- options -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("option", "message"), [
    ("overlay.bogus=1", "overlay: unknown option overlay.bogus"),
    ("nokeyvalue", "unable to parse key/value option: nokeyvalue"),
    ("overlay.size=10G", "only supported for backingFS XFS"),
    ("overlay.mount_program=/nonexistent/prog", "can't stat program"),
    ("overlay.skip_mount_home=maybe", "invalid syntax"),
    ("overlay.use_composefs=true", "composefs"),
])
def test_bad_options(make_driver: DriverFactory, option: str, message: str) -> None:
    with pytest.raises(DriverError, match=re.escape(message)):
        make_driver("overlay", [option])


def test_force_mask_needs_mount_program_for_writable_layers(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver, ["overlay.force_mask=shared"])
    d.create("base", "", None, False)
    with pytest.raises(DriverError, match="force_mask"):
        d.create("ctr", "base", None, True)


def test_home_is_private_bind_mount_until_cleanup(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    assert is_mountpoint(d.home)
    assert "shared:" not in _mount_line(d.home)
    d.cleanup()
    assert not is_mountpoint(d.home)


def test_home_through_a_symlink_is_bound_once_and_mounts_are_found(
        make_driver: DriverFactory, no_leaked_mounts: str) -> None:
    # mountinfo holds resolved paths; a store reached through a symlink must still see that its
    # home is already private (no bind stacked per open) and that a layer is mounted.
    os.mkdir(os.path.join(no_leaked_mounts, "real"))
    os.symlink("real", os.path.join(no_leaked_mounts, "link"))
    first = _overlay(make_driver, root="link")
    _overlay(make_driver, root="link")
    real_home = os.path.join(no_leaked_mounts, "real", "overlay")
    with open("/proc/self/mountinfo") as f:
        assert sum(line.split(" ")[4] == real_home for line in f) == 1
    first.create("base", "", None, False)
    merged = first.get("base", MountOpts())
    first.remove("base")  # unmounts the layer it finds mounted, then removes it
    assert not os.path.exists(merged)


def test_skip_mount_home(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver, ["overlay.skip_mount_home=true"])
    assert not is_mountpoint(d.home)
    d.create("base", "", None, False)
    path = d.get("base", MountOpts())
    assert is_mountpoint(path)
    d.put("base")


def test_mountopt_reaches_the_mount(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver, ["overlay.mountopt=nodev,noatime"])
    d.create("base", "", None, False)
    path = d.get("base", MountOpts())
    try:
        fields = _mount_line(path).split(" ")[5].split(",")
        assert "nodev" in fields and "noatime" in fields
    finally:
        d.put("base")


# -- probes and status -------------------------------------------------------------------------
def test_status_and_probe_cache(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    status = dict(d.status())
    assert list(status) == ["Backing Filesystem", "Supports d_type", "Native Overlay Diff",
                            "Using metacopy", "Supports shifting", "Supports volatile"]
    assert status["Supports d_type"] == "true"
    cached = sorted(os.listdir(d.runhome))
    assert "overlay-true" in cached
    assert any(n.startswith("native-diff()-") for n in cached)
    assert any(n.startswith("metacopy()-") for n in cached)
    assert any(n.startswith("volatile-") for n in cached)


def test_cached_probe_answer_is_trusted(make_driver: DriverFactory, no_leaked_mounts: str) -> None:
    run = os.path.join(no_leaked_mounts, "run-root", "overlay")
    os.makedirs(run)
    with open(os.path.join(run, "native-diff()-false"), "w") as f:
        f.write("Not using native diff: test")
    d = _overlay(make_driver)
    assert dict(d.status())["Native Overlay Diff"] == "false"


def test_mount_program_is_recorded(make_driver: DriverFactory) -> None:
    if FUSE_OVERLAYFS is None:
        pytest.skip("fuse-overlayfs not installed")
    d = _overlay(make_driver, [f"overlay.mount_program={FUSE_OVERLAYFS}"])
    assert _read(os.path.join(d.home, ".has-mount-program")) == "true"
    assert dict(d.status())["Native Overlay Diff"] == "false"
    d.create("base", "", None, False)
    path = d.get("base", MountOpts())
    try:
        assert " fuse" in _mount_line(path)
    finally:
        d.put("base")


# -- mounting ------------------------------------------------------------------------------------
def test_volatile_container_mount(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    d.create("ctr", "base", None, True)
    path = d.get("ctr", MountOpts(volatile=True))
    try:
        assert "volatile" in _mount_line(path)
    finally:
        d.put("ctr")
    # A second volatile mount of the same upper works (the incompat marker is cleared).
    path = d.get("ctr", MountOpts(volatile=True))
    d.put("ctr")


def test_image_mount_is_read_only_without_work_dir(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    path = d.get("base", RO)
    try:
        opts = _mount_line(path).split(" - ")[1]
        assert "upperdir" not in opts and " ro," in opts
    finally:
        d.put("base")


def test_put_unknown_layer_fails_but_put_unmounted_is_fine(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    with pytest.raises(FileNotFoundError):
        d.put("missing")
    d.create("base", "", None, False)
    d.put("base")
    assert os.path.isdir(os.path.join(d.home, "base", "merged"))


def test_existing_mount_from_another_process_is_counted(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    path = d.get("base", MountOpts())
    # A new driver instance (another process) sees the mount and takes a reference on it.
    d2 = OverlayDriver.__new__(OverlayDriver)
    d2.__dict__.update(d.__dict__)
    from containers_storage.drivers.overlay import _RefCounter

    d2._ctr = _RefCounter(d._ctr.magic)
    assert d2.get("base", MountOpts()) == path
    d2.put("base")
    assert is_mountpoint(path)
    d.put("base")
    assert not is_mountpoint(path)


@pytest.mark.parametrize("depth", [128, 300])
def test_deep_images_mount(make_driver: DriverFactory, depth: int) -> None:
    d = _overlay(make_driver)
    parent = deep_chain(d, depth)
    d.create("ctr", parent, None, True)
    for id, opts in ((parent, RO), ("ctr", MountOpts())):
        path = d.get(id, opts)
        try:
            assert len(os.listdir(path)) == depth
        finally:
            d.put(id)


def test_max_depth(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    links = _read(os.path.join(d.home, "base", "link"))
    d.create("deep", "base", None, False)
    with open(os.path.join(d.home, "deep", "lower"), "w") as f:
        f.write(":".join([f"l/{links}"] * 501))
    with pytest.raises(DriverError, match="max depth exceeded"):
        d.get("deep", MountOpts())


# -- repairs -------------------------------------------------------------------------------------
def _populate(d: OverlayDriver) -> list[str]:
    ids = ["lower", "mid", "upper"]
    parent = ""
    for id in ids:
        d.create(id, parent, None, False)
        path = d.get(id, MountOpts())
        with open(os.path.join(path, id), "w") as f:
            f.write(id)
        d.put(id)
        parent = id
    return ids


def _check_all(d: OverlayDriver, ids: list[str]) -> None:
    for n, id in enumerate(ids):
        path = d.get(id, MountOpts())
        try:
            assert sorted(os.listdir(path)) == sorted(ids[: n + 1])
        finally:
            d.put(id)


def test_recreates_missing_links(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    ids = _populate(d)
    link_dir = os.path.join(d.home, "l")
    for name in os.listdir(link_dir):
        os.unlink(os.path.join(link_dir, name))
    _check_all(d, ids)
    assert len(os.listdir(link_dir)) == 3
    for id in ids:
        os.unlink(os.path.join(d.home, id, "link"))
    _check_all(d, ids)
    # Mounting needs only l/; a new child needs its parent's link file, which Go repairs then.
    d.create("child", "upper", None, False)
    for id in ids:
        link = _read(os.path.join(d.home, id, "link"))
        assert os.readlink(os.path.join(link_dir, link)) == f"../{id}/diff"
    os.rmdir(os.path.join(d.home, "upper", "merged"))
    _check_all(d, ids)


def test_create_over_leftover_directory(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    old_link = _read(os.path.join(d.home, "base", "link"))
    d.create("base", "", None, False)  # a crash left it behind; Go removes and recreates
    assert not os.path.lexists(os.path.join(d.home, "l", old_link))
    assert len(os.listdir(os.path.join(d.home, "l"))) == 1


# -- staged apply --------------------------------------------------------------------------------
def test_staged_apply(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    os.chmod(d.diff_root("base"), 0o755)
    staged = d.prepare_staged(make_tar([("a", "f", b"A"), ("d", "d", ""), ("d/b", "f", b"B")]),
                              ApplyDiffOpts())
    assert staged.directory.startswith(os.path.join(d.home, "staging"))
    assert os.path.getsize(staged.tar_split) > 0
    d.create("layer", "base", None, False)
    d.commit_staged("layer", "base", staged)
    d.cleanup_staged(staged)
    assert os.listdir(os.path.join(d.home, "staging")) == []
    diff = d.diff_root("layer")
    assert stat.S_IMODE(os.stat(diff).st_mode) == 0o755
    assert _read(os.path.join(diff, "d", "b")) == "B"
    path = d.get("layer", RO)
    try:
        assert sorted(os.listdir(path)) == ["a", "d"]
    finally:
        d.put("layer")


def test_abandoned_staging_dirs_are_pruned(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.prepare_staged(make_tar([("a", "f", b"A")]), ApplyDiffOpts())
    staging = os.path.join(d.home, "staging")
    assert len(os.listdir(staging)) == 1
    d.cleanup()
    assert os.listdir(staging) == []
    assert not mounts_under(d.home)


def test_mount_program_chosen_when_home_needs_it(make_driver: DriverFactory, no_leaked_mounts: str) -> None:
    """A home written through fuse-overlayfs (flag file "true") keeps using it, as in Go."""
    if FUSE_OVERLAYFS is None:
        pytest.skip("fuse-overlayfs not installed")
    home = os.path.join(no_leaked_mounts, "root", "overlay")
    os.makedirs(home)
    with open(os.path.join(home, ".has-mount-program"), "w") as f:
        f.write("true")
    d = _overlay(make_driver)
    assert d.options.mount_program == FUSE_OVERLAYFS
    d.create("base", "", None, False)
    path = d.get("base", MountOpts())
    try:
        assert " fuse" in _mount_line(path)
    finally:
        d.put("base")


def test_whiteout_files_in_home_mean_mount_program(make_driver: DriverFactory, no_leaked_mounts: str) -> None:
    if FUSE_OVERLAYFS is None:
        pytest.skip("fuse-overlayfs not installed")
    diff = os.path.join(no_leaked_mounts, "root", "overlay", "x", "diff")
    os.makedirs(diff)
    open(os.path.join(diff, ".wh.gone"), "w").close()
    d = _overlay(make_driver)
    assert d.options.mount_program == FUSE_OVERLAYFS
    assert _read(os.path.join(d.home, ".has-mount-program")) == "true"


def test_split_image_store(make_driver: DriverFactory, no_leaked_mounts: str) -> None:
    """Read-only layers live in the image store; containers on top of them in the graph root."""
    image_store = os.path.join(no_leaked_mounts, "images")
    d = _overlay(make_driver, image_store=image_store)
    d.create("base", "", None, False)
    base_dir = os.path.join(image_store, "overlay", "base")
    assert os.path.isdir(os.path.join(base_dir, "diff"))
    link = _read(os.path.join(base_dir, "link"))
    assert os.readlink(os.path.join(image_store, "overlay", "l", link)) == "../base/diff"
    with open(os.path.join(base_dir, "diff", "f"), "w") as f:
        f.write("from image store")
    d.create("ctr", "base", None, True)
    assert os.path.isdir(os.path.join(d.home, "ctr", "diff"))
    path = d.get("ctr", MountOpts())
    try:
        assert _read(os.path.join(path, "f")) == "from image store"
    finally:
        d.put("ctr")
    path = d.get("base", MountOpts())
    try:
        assert path.startswith(d.runhome)  # never mount inside the image store
        assert _read(os.path.join(path, "f")) == "from image store"
    finally:
        d.put("base")
    d.remove("ctr")
    d.remove("base")
    assert not os.path.lexists(os.path.join(image_store, "overlay", "l", link))


def test_lost_lower_layer_is_a_clear_error(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    d.create("base", "", None, False)
    d.create("child", "base", None, True)
    import shutil

    shutil.rmtree(os.path.join(d.home, "base"))
    with pytest.raises(DriverError, match="can't stat lower layer"):
        d.get("child", MountOpts())
    assert not is_mountpoint(os.path.join(d.home, "child", "merged"))
    # The failed attempt holds no reference: once the layer is back, a mount works.
    d.create("base", "", None, False)
    link = _read(os.path.join(d.home, "base", "link"))
    with open(os.path.join(d.home, "child", "lower"), "w") as f:
        f.write(f"l/{link}")
    path = d.get("child", MountOpts())
    d.put("child")
    assert not is_mountpoint(path)


def test_native_diff_opaque_marker_only_over_lower_dirs(make_driver: DriverFactory) -> None:
    import io

    from drivertools import read_tar

    d = _overlay(make_driver)
    if dict(d.status())["Native Overlay Diff"] != "true":
        pytest.skip("kernel needs naive diff")
    d.create("base", "", None, False)
    d.apply_diff("base", "", make_tar([("old", "d", ""), ("old/f", "f", b"x")]), ApplyDiffOpts())
    d.create("child", "base", None, False)
    d.apply_diff("child", "base", make_tar([
        ("old", "d", ""), ("old/.wh..wh..opq", "f", b""),
        ("new", "d", ""), ("new/.wh..wh..opq", "f", b""), ("new/g", "f", b"g")]), ApplyDiffOpts())
    for name in ("old", "new"):
        assert os.getxattr(os.path.join(d.diff_root("child"), name), "trusted.overlay.opaque") == b"y"
    out = io.BytesIO()
    d.diff("child", "base", out)
    names = set(read_tar(out.getvalue()))
    assert "old/.wh..wh..opq" in names
    assert "new/.wh..wh..opq" not in names and "new/g" in names


def test_force_mask_with_mount_program(make_driver: DriverFactory) -> None:
    """force_mask stores files with the mask's mode and the real one in an xattr (Go's layout)."""
    if FUSE_OVERLAYFS is None:
        pytest.skip("fuse-overlayfs not installed")
    d = _overlay(make_driver, [f"overlay.mount_program={FUSE_OVERLAYFS}", "overlay.force_mask=700"])
    d.create("base", "", None, False)
    diff = d.diff_root("base")
    assert stat.S_IMODE(os.stat(diff).st_mode) == 0o700
    assert os.getxattr(diff, "user.containers.override_stat").startswith(b"0:0:0555")
    d.apply_diff("base", "", make_tar([("f", "f", b"x")], mode=0o4755), ApplyDiffOpts())
    assert stat.S_IMODE(os.stat(os.path.join(diff, "f")).st_mode) == 0o700
    d.create("ctr", "base", None, True)
    path = d.get("ctr", MountOpts())
    try:
        assert stat.S_IMODE(os.stat(os.path.join(path, "f")).st_mode) == 0o4755
    finally:
        d.put("ctr")
