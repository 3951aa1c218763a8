"""Overlay shifting through kernel ID-mapped lower dirs, as Go 1.43 does: the probe and its cached
record, mounts that show a layer's files under a container's maps while nothing on disk is
re-owned, no mapped copies of image layers, and no ID-mapped mount left behind.

Real kernel mounts, as root; skipped where the kernel or the backing file system cannot ID-map.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from containers_storage.config import StoreOptions
from containers_storage.drivers.base import ApplyDiffOpts, MountOpts
from containers_storage.drivers.overlay import OverlayDriver
from containers_storage.idtools import IDMap
from containers_storage.store import Store, get_store
from drivertools import IS_ROOT, DriverFactory, deep_chain, make_tar, mounts_under
from storetools import close_store

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="overlay and ID-mapped mounts need root")

HOST = 100000
M = [IDMap(0, HOST, 65536)]
NO_IDMAP = "the kernel or the backing file system cannot mount overlay over ID-mapped lower dirs"



@pytest.fixture(autouse=True)
def _no_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the off switch nor the test-only force switch from the caller's environment."""
    monkeypatch.delenv("_CONTAINERS_OVERLAY_DISABLE_IDMAP", raising=False)
    monkeypatch.delenv("_TEST_FORCE_SUPPORT_SHIFTING", raising=False)

def _owner(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _mount_lines(base: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if base in line]


def _overlay(make_driver: DriverFactory) -> OverlayDriver:
    d = make_driver("overlay")
    assert isinstance(d, OverlayDriver)
    if not d.supports_idmapped_mounts():
        pytest.skip(NO_IDMAP)
    return d


def _base(d: OverlayDriver, id: str = "base") -> None:
    d.create(id, "", None, False)
    tar = make_tar([("etc", "d", ""), ("etc/rootfile", "f", "root's"), ("link", "l", "etc/rootfile")])
    d.apply_diff(id, "", tar, ApplyDiffOpts())


def test_probe_is_recorded_as_go_does(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    assert "idmapped-lower-dir-true" in os.listdir(d.runhome)
    assert d.supports_shifting(M, M)
    assert dict(d.status())["Supports shifting"] == "true"
    # fuse-overlayfs and Go 1.43's store shift contiguous maps only; so do we, for both ways.
    assert not d.supports_shifting([IDMap(0, HOST, 1), IDMap(2, HOST + 5, 10)], M)


def test_cached_answers_are_trusted(make_driver: DriverFactory, no_leaked_mounts: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run = os.path.join(no_leaked_mounts, "run-root", "overlay")
    os.makedirs(run)
    open(os.path.join(run, "idmapped-lower-dir-false"), "w").close()
    d = make_driver("overlay")
    assert isinstance(d, OverlayDriver)
    assert not d.supports_idmapped_mounts() and not d.supports_shifting(M, M)
    monkeypatch.setenv("_TEST_FORCE_SUPPORT_SHIFTING", "yes-please")
    assert d.supports_shifting(M, M)
    monkeypatch.setenv("_CONTAINERS_OVERLAY_DISABLE_IDMAP", "yes")
    assert not d.supports_shifting(M, M)


def test_mount_shows_shifted_owners_and_leaves_disk_alone(make_driver: DriverFactory,
                                                          no_leaked_mounts: str) -> None:
    d = _overlay(make_driver)
    _base(d)
    d.create("ctr", "base", None, True)
    path = d.get("ctr", MountOpts(uid_map=M, gid_map=M))
    try:
        assert _owner(os.path.join(path, "etc", "rootfile")) == (HOST, HOST)
        assert _owner(os.path.join(path, "etc")) == (HOST, HOST)
        assert _owner(os.path.join(path, "link")) == (HOST, HOST)
        with open(os.path.join(path, "etc", "rootfile")) as f:
            assert f.read() == "root's"
        (line,) = [l for l in _mount_lines(no_leaked_mounts) if f" {path} " in l]
        assert os.path.join(d.home, "ctr", "mapped", "0", "l") in line
        # The ID-mapped clones were detached once overlay held them: only overlay is mounted.
        assert mounts_under(os.path.join(d.home, "ctr", "mapped")) == []
        # Writes through the mount land in the upper dir with the writer's (host) IDs.
        with open(os.path.join(path, "new"), "w") as f:
            f.write("x")
        os.chown(os.path.join(path, "new"), HOST + 7, HOST + 8)
    finally:
        d.put("ctr")
    assert [l for l in _mount_lines(no_leaked_mounts) if "/mapped/" in l or "/merged " in l] == []
    # Nothing was re-owned on disk: not the image layer, not the container's upper dir.
    assert _owner(os.path.join(d.diff_root("base"), "etc", "rootfile")) == (0, 0)
    assert _owner(d.diff_root("ctr")) == (0, 0)
    assert _owner(os.path.join(d.diff_root("ctr"), "new")) == (HOST + 7, HOST + 8)
    assert sorted(os.listdir(d.diff_root("ctr"))) == ["new"]
    # Without maps the same layer shows the host's IDs.
    path = d.get("ctr", MountOpts())
    try:
        assert _owner(os.path.join(path, "etc", "rootfile")) == (0, 0)
    finally:
        d.put("ctr")


def test_read_only_mount_and_remove_while_mounted(make_driver: DriverFactory, no_leaked_mounts: str) -> None:
    d = _overlay(make_driver)
    _base(d)
    d.create("top", "base", None, False)
    path = d.get("top", MountOpts(options=["ro"], uid_map=M, gid_map=M))
    assert _owner(os.path.join(path, "etc", "rootfile")) == (HOST, HOST)
    d.remove("top")  # removing a mounted layer takes its mounts down with it
    assert _mount_lines(os.path.join(d.home, "top")) == []
    assert not os.path.exists(os.path.join(d.home, "top"))


def test_deep_image_beyond_a_page_of_mount_data(make_driver: DriverFactory) -> None:
    d = _overlay(make_driver)
    depth = 60  # mapped lower paths are longer: this needs the relative and fd fallbacks
    parent = deep_chain(d, depth)
    d.create("ctr", parent, None, True)
    path = d.get("ctr", MountOpts(uid_map=M, gid_map=M))
    try:
        assert len(os.listdir(path)) == depth
        assert _owner(os.path.join(path, "0")) == (HOST, HOST)
        assert _owner(os.path.join(path, str(depth - 1))) == (HOST, HOST)
    finally:
        d.put("ctr")


# -- through the store ---------------------------------------------------------------------------
@pytest.fixture
def store(no_leaked_mounts: str) -> Iterator[Store]:
    s = get_store(StoreOptions(graph_root=os.path.join(no_leaked_mounts, "root"),
                               run_root=os.path.join(no_leaked_mounts, "run"), driver_name="overlay"))
    try:
        driver = s.driver
        assert isinstance(driver, OverlayDriver)
        if not driver.supports_idmapped_mounts():
            pytest.skip(NO_IDMAP)
        yield s
    finally:
        close_store(s)


def test_container_with_maps_needs_no_mapped_copy(store: Store, no_leaked_mounts: str) -> None:
    top = store.put_layer(make_tar([("rootfile", "f", "x")])).layer
    image = store.create_image(top.id, names=["img"])
    ctr = store.create_container(image.id, names=["c"], uid_map=M, gid_map=M)
    assert store.image(image.id).mapped_top_layers == []
    layer = store.layer(ctr.layer)
    assert layer.parent == top.id and not layer.uid_map and not layer.gid_map
    path = store.mount(ctr.id)
    try:
        assert _owner(os.path.join(path, "rootfile")) == (HOST, HOST)
    finally:
        store.unmount(ctr.id)
    assert _mount_lines(os.path.join(no_leaked_mounts, "root", "overlay", ctr.layer)) == []
    store.delete_container(ctr.id)
    assert not os.path.exists(os.path.join(no_leaked_mounts, "root", "overlay", ctr.layer))


def test_a_reowned_layer_is_not_shifted_twice(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    top = store.put_layer(make_tar([("rootfile", "f", "x")])).layer
    image = store.create_image(top.id, names=["img"])
    monkeypatch.setenv("_CONTAINERS_OVERLAY_DISABLE_IDMAP", "yes")
    ctr = store.create_container(image.id, names=["c"], uid_map=M, gid_map=M)
    monkeypatch.delenv("_CONTAINERS_OVERLAY_DISABLE_IDMAP")
    assert store.layer(ctr.layer).uid_map == M  # re-owned: its files already carry HOST
    path = store.mount(ctr.id)
    try:
        assert _owner(os.path.join(path, "rootfile")) == (HOST, HOST)
    finally:
        store.unmount(ctr.id)


def test_diff_of_a_shifted_container_is_unshifted(store: Store) -> None:
    top = store.put_layer(make_tar([("rootfile", "f", "x")])).layer
    image = store.create_image(top.id, names=["img"])
    ctr = store.create_container(image.id, names=["c"], uid_map=M, gid_map=M)
    path = store.mount(ctr.id)
    try:
        with open(os.path.join(path, "added"), "w") as f:
            f.write("y")
        os.chown(os.path.join(path, "added"), HOST + 3, HOST + 4)
    finally:
        store.unmount(ctr.id)
    out = io.BytesIO()
    store.diff(ctr.layer, out)
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        owners = {m.name: (m.uid, m.gid) for m in tf}
    # The layer records no maps, so its diff carries the host IDs, as Go's does.
    assert owners == {"added": (HOST + 3, HOST + 4)}
