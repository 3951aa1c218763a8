"""ID-mapped layers through the store, on vfs and overlay: inherited files re-owned for a child
with other mappings (hard links kept, symlinks never followed), diffs that only hold a layer's own
changes, and the image's mapped top layers shared by containers with the same mappings."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator

import pytest

from containers_storage import errors
from containers_storage.config import StoreOptions
from containers_storage.idtools import IDMap
from containers_storage.store import Store, get_store
from drivertools import IS_ROOT
from storetools import close_store

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="re-owning files and overlay mounts need root")

BASE = 300000
M = [IDMap(0, BASE, 65536)]
M2 = [IDMap(0, BASE + 65536, 65536)]


@pytest.fixture(params=["vfs", "overlay"])
def store(request: pytest.FixtureRequest, no_leaked_mounts: str,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    # Overlay re-owns copies only where it cannot shift at mount time (a kernel without ID-mapped
    # mounts); test_overlay_idmapped.py covers the shifting mounts.
    monkeypatch.setenv("_CONTAINERS_OVERLAY_DISABLE_IDMAP", "yes")
    s = get_store(StoreOptions(graph_root=os.path.join(no_leaked_mounts, "root"),
                               run_root=os.path.join(no_leaked_mounts, "run"), driver_name=request.param))
    try:
        yield s
    finally:
        close_store(s)


def _tar(entries: list[tuple[str, str, int, int, str]]) -> io.BytesIO:
    """(name, kind f/d/l/h, uid, gid, content or link target) -> an uncompressed layer tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, uid, gid, content in entries:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mtime = uid, gid, 1_000_000
            data = b""
            if kind == "f":
                data = content.encode()
                info.size, info.mode = len(data), 0o644
            elif kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "l":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content, 0o777
            else:
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, content, 0o644
            tf.addfile(info, io.BytesIO(data) if data else None)
    buf.seek(0)
    return buf


def _json(path: str) -> list[dict[str, object]]:
    with open(path) as f:
        return json.load(f)  # type: ignore[no-any-return]


def _names(data: bytes) -> dict[str, tuple[int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: (m.uid, m.gid) for m in tf}


def _owner(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _base(store: Store, victim: str) -> str:
    """A host-mapped layer whose files have assorted owners, a hard link and hostile symlinks."""
    layer = store.put_layer(_tar([
        ("d", "d", 1, 1, ""),
        ("d/f", "f", 2, 3, "file"),
        ("h1", "f", 4, 4, "linked"),
        ("h2", "h", 4, 4, "h1"),
        ("evil", "l", 6, 6, victim),
        ("evil-dir", "l", 6, 6, os.path.dirname(victim)),
        ("up", "l", 6, 6, "../../../../../../../../" + victim.lstrip("/")),
    ])).layer
    return layer.id


def _victim(store: Store) -> str:
    outside = os.path.join(os.path.dirname(store.graph_root), "outside")
    os.makedirs(outside, exist_ok=True)
    victim = os.path.join(outside, "victim")
    with open(victim, "w") as f:
        f.write("keep me")
    os.chown(victim, 7, 7)
    os.chown(outside, 7, 7)
    return victim


def test_child_with_other_maps_reowns_what_it_inherits(store: Store) -> None:
    victim = _victim(store)
    base = _base(store, victim)
    child = store.create_layer(parent=base, uid_map=M, gid_map=M)
    mnt = store.mount(child.id)
    try:
        assert _owner(os.path.join(mnt, "d")) == (BASE + 1, BASE + 1)
        assert _owner(os.path.join(mnt, "d", "f")) == (BASE + 2, BASE + 3)
        h1, h2 = os.lstat(os.path.join(mnt, "h1")), os.lstat(os.path.join(mnt, "h2"))
        assert h1.st_ino == h2.st_ino and (h2.st_uid, h2.st_gid) == (BASE + 4, BASE + 4)
        for link in ("evil", "evil-dir", "up"):
            assert _owner(os.path.join(mnt, link)) == (BASE + 6, BASE + 6)
        with open(os.path.join(mnt, "d", "f")) as f:
            assert f.read() == "file"
    finally:
        store.unmount(child.id)
    assert _owner(victim) == (7, 7) and _owner(os.path.dirname(victim)) == (7, 7)
    # The parent is untouched, and the child's own changes are none: owners compare as
    # container IDs, each layer through its own mappings.
    base_mnt = store.mount(base)
    try:
        assert _owner(os.path.join(base_mnt, "d", "f")) == (2, 3)
    finally:
        store.unmount(base)
    assert store.changes(child.id) == []
    out = io.BytesIO()
    store.diff(child.id, out)
    assert _names(out.getvalue()) == {}

    records = _json(os.path.join(store.graph_root, f"{store.driver_name}-layers", "layers.json"))
    rec = next(r for r in records if r["id"] == child.id)
    assert rec["uidmap"] == rec["gidmap"] == [{"container_id": 0, "host_id": BASE, "size": 65536}]
    assert "uidmap" not in next(r for r in records if r["id"] == base)


def test_overlay_keeps_the_copied_up_files_below_its_own_diff(store: Store) -> None:
    if store.driver_name != "overlay":
        pytest.skip("overlay's diff rotation")
    base = _base(store, _victim(store))
    child = store.create_layer(parent=base, uid_map=M, gid_map=M)
    layer_dir = os.path.join(store.graph_root, "overlay", child.id)
    assert os.listdir(os.path.join(layer_dir, "diff")) == []
    assert _owner(os.path.join(layer_dir, "diff")) == (BASE, BASE)
    assert _owner(os.path.join(layer_dir, "diff1", "d", "f")) == (BASE + 2, BASE + 3)
    # A grandchild with yet other maps rotates again: diff1 -> diff2.
    grandchild = store.create_layer(parent=child.id, uid_map=M2, gid_map=M2)
    gdir = os.path.join(store.graph_root, "overlay", grandchild.id)
    assert sorted(n for n in os.listdir(gdir) if n.startswith("diff")) == ["diff", "diff1"]
    mnt = store.mount(grandchild.id)
    try:
        assert _owner(os.path.join(mnt, "d", "f")) == (BASE + 65536 + 2, BASE + 65536 + 3)
    finally:
        store.unmount(grandchild.id)


def test_applying_into_a_mapped_layer_maps_the_tar_ids(store: Store) -> None:
    layer = store.put_layer(_tar([("a", "d", 0, 0, ""), ("a/f", "f", 5, 6, "x")]), uid_map=M, gid_map=M).layer
    mnt = store.mount(layer.id)
    try:
        assert _owner(os.path.join(mnt, "a", "f")) == (BASE + 5, BASE + 6)
        assert _owner(os.path.join(mnt, "a")) == (BASE, BASE)
    finally:
        store.unmount(layer.id)
    assert layer.uids == [0, 5] and layer.gids == [0, 6]  # the tar's IDs, as Go records them
    out = io.BytesIO()
    store.diff(layer.id, out)
    assert _names(out.getvalue())["a/f"] == (5, 6)


def test_containers_with_the_same_maps_share_one_mapped_top_layer(store: Store) -> None:
    top = store.put_layer(_tar([("f", "f", 3, 3, "data")])).layer
    image = store.create_image(top.id, names=["img"])

    c1 = store.create_container(image.id, uid_map=M, gid_map=M)
    c2 = store.create_container(image.id, uid_map=M, gid_map=M)
    mapped = store.image(image.id).mapped_top_layers
    assert len(mapped) == 1
    assert store.layer(c1.layer).parent == store.layer(c2.layer).parent == mapped[0]
    copy = store.layer(mapped[0])
    assert copy.parent == "" and copy.uid_map == M
    assert copy.uncompressed_digest == top.uncompressed_digest  # a copy of the template's contents
    assert store.container(c1.id).uid_map == M

    host = store.create_container(image.id, host_uid_mapping=True, host_gid_mapping=True)
    assert store.layer(host.layer).parent == top.id
    assert store.container(host.id).uid_map == []
    other = store.create_container(image.id, uid_map=M2, gid_map=M2)
    mapped = store.image(image.id).mapped_top_layers
    assert len(mapped) == 2 and store.layer(other.layer).parent == mapped[1]

    for ctr, expected in ((c1, BASE + 3), (host, 3), (other, BASE + 65536 + 3)):
        mnt = store.mount(ctr.id)
        try:
            assert _owner(os.path.join(mnt, "f")) == (expected, expected)
        finally:
            store.unmount(ctr.id)

    images = _json(os.path.join(store.graph_root, f"{store.driver_name}-images", "images.json"))
    assert images[0]["mapped-layers"] == mapped
    # The copies' diffs are the template's tar, rebuilt byte for byte from their tar-split.
    for layer_id in mapped:
        out = io.BytesIO()
        store.diff(layer_id, out)
        assert "sha256:" + hashlib.sha256(out.getvalue()).hexdigest() == top.uncompressed_digest

    for ctr in (c1, c2, host, other):
        store.delete_container(ctr.id)
    store.delete_image(image.id)
    assert store.layers() == []


def test_image_mount_gets_a_host_mapped_copy(store: Store) -> None:
    top = store.put_layer(_tar([("f", "f", 0, 0, "data")]), uid_map=M, gid_map=M).layer
    image = store.create_image(top.id, names=["img"])
    mnt = store.mount_image(image.id)
    try:
        assert _owner(os.path.join(mnt, "f")) == (0, 0)
    finally:
        assert store.unmount_image(image.id) is False
    (copy,) = store.image(image.id).mapped_top_layers
    assert store.layer(copy).uid_map == []
    # A container with no maps of its own starts from that host copy, as in Go.
    ctr = store.create_container(image.id)
    assert store.layer(ctr.layer).parent == copy
    assert store.container_parent_owners(ctr.id) == ([], [])


def test_parent_owners_of_a_mapped_layer(store: Store) -> None:
    layer = store.create_layer(uid_map=M, gid_map=M)
    with pytest.raises(errors.LayerNotMounted):
        store.layer_parent_owners(layer.id)
    store.mount(layer.id)
    try:
        uids, gids = store.layer_parent_owners(layer.id)
    finally:
        store.unmount(layer.id)
    # The directories above the mount point are root's, which the mapping leaves out.
    assert uids == [0] and gids == [0]
    plain = store.create_layer()
    assert store.layer_parent_owners(plain.id) == ([], [])


def test_container_on_a_read_only_image_store_reowns_its_own_layer(store: Store) -> None:
    """The top layer is not ours to copy: the container's own layer is re-owned instead."""
    top = store.put_layer(_tar([("f", "f", 3, 3, "data")])).layer
    image = store.create_image(top.id, names=["img"])
    ro_root = store.graph_root
    store.shutdown(force=True)
    base = os.path.dirname(ro_root)
    driver = store.driver_name
    other = get_store(StoreOptions(graph_root=os.path.join(base, "root2"),
                                   run_root=os.path.join(base, "run2"), driver_name=driver,
                                   driver_options=[f"{driver}.imagestore={ro_root}"]))
    try:
        ctr = other.create_container(image.id, uid_map=M, gid_map=M)
        assert other.image(image.id).mapped_top_layers == []
        assert other.layer(ctr.layer).parent == top.id
        mnt = other.mount(ctr.id)
        try:
            assert _owner(mnt) == (BASE, BASE)
            assert _owner(os.path.join(mnt, "f")) == (BASE + 3, BASE + 3)
        finally:
            other.unmount(ctr.id)
        assert other.changes(ctr.layer) == []
        other.delete_container(ctr.id)
    finally:
        other.shutdown(force=True)
        other.close()


def test_mounting_with_other_maps_needs_shifting(store: Store) -> None:
    from containers_storage.drivers.base import MountOpts

    layer = store.create_layer(writeable=True)
    with store.layer_store.writing() as rl, pytest.raises(errors.StorageError) as info:
        rl.mount(layer.id, MountOpts(uid_map=M, gid_map=M))
    assert str(info.value) == f"cannot mount layer {layer.id}: shifting not enabled"


def test_reowning_keeps_directory_times(store: Store) -> None:
    """Copy-ups in parallel and hard links joined again must not leave directories looking
    modified: their times are the parent layer's, as its tar-split says (what check compares)."""
    entries: list[tuple[str, str, int, int, str]] = [("many", "d", 0, 0, ""), ("many/sub", "d", 1, 1, "")]
    entries += [(f"many/f{i}", "f", i % 7, i % 5, "x" * i) for i in range(60)]
    entries += [(f"many/sub/l{i}", "h", i % 7, i % 5, f"many/f{i}") for i in range(0, 60, 6)]
    base = store.put_layer(_tar(entries)).layer
    child = store.create_layer(parent=base.id, uid_map=M, gid_map=M)

    def dir_times(layer_id: str) -> dict[str, int]:
        mnt = store.mount(layer_id)
        try:
            return {d: os.lstat(os.path.join(mnt, d)).st_mtime_ns for d in ("many", "many/sub")}
        finally:
            store.unmount(layer_id)

    assert dir_times(child.id) == dir_times(base.id)
    mnt = store.mount(child.id)
    try:
        for i in range(0, 60, 6):
            st = os.lstat(os.path.join(mnt, "many", "sub", f"l{i}"))
            assert st.st_ino == os.lstat(os.path.join(mnt, "many", f"f{i}")).st_ino
            assert (st.st_uid, st.st_gid) == (BASE + i % 7, BASE + i % 5)
    finally:
        store.unmount(child.id)
