"""Store.check/Store.repair on vfs (no root needed): references between records, layers nothing
uses, read-only stores, the order repair deletes in, and the tree comparison behind
``layer content modified``."""

from __future__ import annotations

import io
import os
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers_storage import errors
from containers_storage.check import (
    CheckOptions,
    CheckReport,
    LayerMissing,
    LayerUnaccounted,
    LayerUnreferenced,
    RepairOptions,
    check_everything,
    repair,
)
from containers_storage.checktree import (
    Hdr,
    Ignore,
    Tree,
    apply_headers,
    compare_trees,
    go_stable_sort,
    new_tree,
    scan_tree,
)
from containers_storage.config import StoreOptions
from containers_storage.idtools import IDMap
from containers_storage.records import Image, Layer
from containers_storage.store import Store, get_store

Entry = tuple[str, str, bytes | str]  # name, kind (f d l h), content or link target


def _tar(entries: list[Entry], mtime: int = 1_000_000) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = mtime, 0o644
            data = content if isinstance(content, bytes) else b""
            if kind == "f":
                info.size = len(data)
            elif kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "l":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(content), 0o777
            else:
                info.type, info.linkname = tarfile.LNKTYPE, str(content)
            tf.addfile(info, io.BytesIO(data) if kind == "f" else None)
    buf.seek(0)
    return buf


def _open(root: Path, *driver_options: str) -> Store:
    return get_store(StoreOptions(graph_root=str(root / "root"), run_root=str(root / "run"),
                                  driver_name="vfs", driver_options=list(driver_options)))


@pytest.fixture
def vstore(tmp_path: Path) -> Iterator[Store]:
    s = _open(tmp_path)
    yield s
    s.close()


def _image(store: Store, entries: list[Entry] | None = None) -> tuple[Layer, Image]:
    layer = store.put_layer(_tar(entries or [("a", "f", b"hello\n")])).layer
    return layer, store.create_image(layer.id)


def _everything(report: CheckReport) -> dict[str, dict[str, list[str]]]:
    return {heading: {id: [str(e) for e in errs] for id, errs in section.items()}
            for heading, section in report.sections() if section}


def _set_created(store: Store, layer_id: str, created: str) -> None:
    with store.layer_store.writing() as rl:
        layer = rl.get(layer_id)
        layer.raw["created"] = created
        rl.save_for(layer)


# -- records that point at nothing --------------------------------------------------------------
def test_container_over_a_missing_layer(vstore: Store) -> None:
    """The image's layer deleted without safety checks: the container's layer has no parent."""
    layer, image = _image(vstore)
    ctr = vstore.create_container(image.id)
    vstore.delete(layer.id)
    report = vstore.check(check_everything())
    image_damage = [f"image {image.id}: layer {layer.id}: image layer is missing"]
    assert _everything(report) == {"layer": {ctr.layer: [f"layer {layer.id}: layer is missing"]},
                                   "image": {image.id: image_damage},
                                   "container": {ctr.id: image_damage}}
    assert [str(e) for e in vstore.repair(report, RepairOptions())] == [
        f"deleting image {image.id}: image used by {ctr.id}: image is in use by a container",
        f"deleting layer {ctr.layer}: layer {ctr.layer} used by container {ctr.id}: "
        "layer is in use by a container"]
    assert vstore.repair(report, RepairOptions(remove_containers=True)) == []
    assert vstore.layers() == [] and vstore.images() == [] and vstore.containers() == []


def test_container_whose_own_layer_is_gone_is_not_reported(vstore: Store) -> None:
    """Go's check only counts a container's layer as used; it never looks it up."""
    _, image = _image(vstore)
    ctr = vstore.create_container(image.id)
    with vstore.layer_store.writing() as rl:
        rl.delete(ctr.layer)
    assert _everything(vstore.check(check_everything())) == {}


def test_invalid_recorded_digest(vstore: Store) -> None:
    layer, image = _image(vstore)
    with vstore.layer_store.writing() as rl:
        record = rl.get(layer.id)
        record.raw["diff-digest"] = "sha256:abc"
        rl.save_for(record)
    damage = [f"layer {layer.id}: invalid checksum digest length"]
    assert _everything(vstore.check()) == {"layer": {layer.id: damage}, "image": {image.id: damage}}


# -- layers nothing uses --------------------------------------------------------------------------
def test_unreferenced_layers_young_and_old(vstore: Store) -> None:
    parent = vstore.create_layer()
    child = vstore.create_layer(parent=parent.id)
    _, image = _image(vstore)
    assert _everything(vstore.check()) == {}  # created just now: maybe an image is coming
    unused = "layer not referenced by any images or containers"
    now = CheckOptions(layer_unreferenced_maximum_age=0)
    assert _everything(vstore.check(now)) == {"layer": {
        parent.id: [f"layer {parent.id}: {unused}"], child.id: [f"layer {child.id}: {unused}"]}}
    _set_created(vstore, parent.id, "2000-01-01T00:00:00Z")
    _set_created(vstore, child.id, "0001-01-01T00:00:00Z")  # Go's zero time: age unknown
    report = vstore.check()
    assert _everything(report) == {"layer": {
        parent.id: [f"layer {parent.id}: {unused}"], child.id: [f"layer {child.id}: {unused}"]}}
    assert vstore.repair(report) == []  # the child goes first, so its parent can follow
    assert [l.id for l in vstore.layers()] == [image.top_layer]
    assert not vstore.check(now)


def test_repair_order_children_first_then_strays_in_listing_order() -> None:
    """Known layers deepest first, driver-only directories last in the order the driver listed."""
    calls: list[tuple[str, str]] = []

    class FakeStore:
        def remove_unaccounted_layer(self, id: str) -> bool:
            calls.append(("remove", id))
            return True

        def delete_container(self, id: str) -> None:
            calls.append(("container", id))

        def delete_image(self, id: str, *, commit: bool = True) -> list[str]:
            calls.append(("image", id))
            return ["imagelayer"]

        def unmount(self, id: str, *, force: bool = False) -> bool:
            return False

        def delete_layer(self, id: str) -> None:
            calls.append(("layer", id))

    report = CheckReport()
    report.layer_parents = {"base": "", "mid": "base", "top": "mid", "imagelayer": ""}
    report.layer_order = {"stray2": 1, "stray1": 2, "base": 3}
    for id in ("stray1", "base", "stray2", "top", "mid", "imagelayer"):
        kind = LayerUnaccounted if id.startswith("stray") else LayerUnreferenced
        report.layers[id] = [kind.after(f"layer {id}")]
    report.layers["top"].append(LayerMissing.after("layer x"))  # one attempt per problem
    report.images["img"] = []
    report.containers["ctr"] = []
    assert repair(FakeStore(), report, RepairOptions()) == []  # type: ignore[arg-type]
    assert calls == [("image", "img"), ("layer", "top"), ("layer", "top"), ("layer", "mid"),
                     ("layer", "base"), ("remove", "stray2"), ("remove", "stray1")]
    calls.clear()
    repair(FakeStore(), report)  # type: ignore[arg-type]
    assert calls[0] == ("container", "ctr")


# -- read-only stores -----------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".lock"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    found[os.path.join(dirpath, name)] = f.read()
    return found


def test_read_only_store_damage_is_reported_and_left_alone(tmp_path: Path) -> None:
    ro = _open(tmp_path / "ro")
    layer, image = _image(ro, [("a", "f", b"hello\n")])
    ro.set_image_big_data(image.id, "cfg", b"{}")
    ro.set_layer_big_data(layer.id, "blob", b"1")
    ro.close()
    os.unlink(os.path.join(ro.graph_root, "vfs-images", image.id, "cfg"))
    os.unlink(os.path.join(ro.graph_root, "vfs-layers", layer.id, "blob"))
    with open(os.path.join(ro.graph_root, "vfs", "dir", layer.id, "a"), "wb") as f:
        f.write(b"HELLO\n")
    before = _snapshot(tmp_path / "ro")

    rw = _open(tmp_path / "rw", f"vfs.imagestore={ro.graph_root}")
    try:
        ctr = rw.create_container(image.id)  # its layer's parent is in the read-only store
        report = rw.check(check_everything())
        layer_damage = [
            f'read-only layer {layer.id}: data item "blob": layer data item is missing',
            # Go writes this one without the "read-only " prefix.
            f"layer {layer.id}: consume any trailer after the EOF marker: "
            'file integrity checksum failed for "a"',
            f'read-only layer {layer.id}: file integrity checksum failed for "a"']
        image_damage = [f'read-only image {image.id}: data item "cfg": image data item is missing',
                        *layer_damage]
        assert _everything(report) == {"read-only layer": {layer.id: layer_damage},
                                       "read-only image": {image.id: image_damage},
                                       "container": {ctr.id: image_damage}}
        assert rw.repair(report) == []
        assert _snapshot(tmp_path / "ro") == before
        assert rw.containers() == []
        again = rw.check(check_everything())
        assert set(again.ro_layers) == {layer.id} and set(again.ro_images) == {image.id}
        assert not again.layers and not again.images and not again.containers
    finally:
        rw.close()


def test_container_over_a_read_only_image_is_not_damaged(tmp_path: Path) -> None:
    """Go would call the container layer's parent missing (it checks parents before visiting the
    read-only stores); we check once every store has been seen."""
    ro = _open(tmp_path / "ro")
    _, image = _image(ro)
    ro.close()
    rw = _open(tmp_path / "rw", f"vfs.imagestore={ro.graph_root}")
    try:
        rw.create_container(image.id)
        assert _everything(rw.check(check_everything())) == {}
        assert _everything(rw.check(CheckOptions(layer_unreferenced_maximum_age=0))) == {}
    finally:
        rw.close()


def test_id_mapped_layer_checks_clean(vstore: Store) -> None:
    """Files chowned into the layer's ID map are compared after mapping them back."""
    maps = [IDMap(0, 100_000, 65_536)]
    layer = vstore.put_layer(_tar([("d", "d", b""), ("d/f", "f", b"x")]), uid_map=maps, gid_map=maps).layer
    vstore.create_image(layer.id)
    assert os.stat(os.path.join(vstore.driver.diff_root(layer.id), "d", "f")).st_uid == 100_000
    assert _everything(vstore.check(check_everything())) == {}


def test_links_whiteouts_and_opaque_directories_check_clean(vstore: Store) -> None:
    base = vstore.put_layer(_tar([
        ("d", "d", b""), ("d/x", "f", b"x"), ("d/y", "f", b"yy"), ("o", "d", b""), ("o/old", "f", b"1"),
        ("hard", "h", "d/y"), ("sym", "l", "d/x")])).layer
    top = vstore.put_layer(_tar([
        ("d", "d", b""), ("d/.wh.x", "f", b""), ("o", "d", b""), ("o/.wh..wh..opq", "f", b""),
        ("o/new", "f", b"2")]), parent=base.id).layer
    vstore.create_image(top.id)
    assert _everything(vstore.check(check_everything())) == {}


# -- the expected tree and the comparison ------------------------------------------------------
def _hdr(name: str, kind: str = "f", size: int = 0, mode: int = 0o644, mtime: int = 100,
         link: str = "", uid: int = 0) -> Hdr:
    flag = {"f": 48, "h": 49, "l": 50, "d": 53}[kind]
    return Hdr(name.encode(), flag, uid, 0, size, mode, mtime, link.encode())


def _names(tree: Tree, prefix: str = "") -> list[str]:
    out = [prefix + n.decode() for n in tree.files]
    for name, sub in tree.dirs.items():
        out.append(f"{prefix}{name.decode()}/")
        out.extend(_names(sub, f"{prefix}{name.decode()}/"))
    return sorted(out)


@pytest.mark.parametrize(("headers", "names"), [
    ([_hdr("a", "d")], ["a/"]),
    ([_hdr("a", "d"), _hdr("a/b", "d"), _hdr("a/b/c"), _hdr("a/b/d"), _hdr("a/b/.wh.c")],
     ["a/", "a/b/", "a/b/d"]),
    ([_hdr("a", "d"), _hdr("a/b", "d"), _hdr("a/b/c"), _hdr("a/b/d"), _hdr("a/b/.wh..wh..opq")],
     ["a/", "a/b/"]),
    ([_hdr("./x/y/z"), _hdr("x/.wh.y")], ["x/"]),  # implicit parents, then a whole subtree whited out
])
def test_tree_from_headers(headers: list[Hdr], names: list[str]) -> None:
    tree = new_tree()
    for hdr in headers:
        apply_headers(tree, [hdr])
    assert _names(tree) == names


def test_tree_rules_go_keeps() -> None:
    tree = new_tree()
    apply_headers(tree, [
        _hdr("p/q/file", size=5, mode=0o600, mtime=7),  # p and q take the file's attributes
        _hdr("link", "h", link="p/q/file", mtime=1),  # a hard link becomes its target
        _hdr("dangling", "h", link="nowhere"),
        _hdr("o/", "d", mode=0o711, mtime=9), _hdr("o/.wh..wh..opq", mode=0o600, mtime=3),
    ])
    assert tree.dirs[b"p"].info == (53, 0, 0, 5, 0o600, 7)
    assert tree.files[b"link"] == (48, 0, 0, 5, 0o600, 7)
    assert tree.files[b"dangling"][0] == 49
    assert tree.dirs[b"o"].info == (53, 0, 0, 0, 0o711, 9)  # whiteouts sort first in their dir


def test_compare_trees_notation() -> None:
    expected = new_tree()
    apply_headers(expected, [_hdr("gone", size=1), _hdr("dir", "d"), _hdr("dir/in", size=2),
                             _hdr("same", size=3), _hdr("attrs", size=4, mode=0o644, mtime=0x10)])
    actual = new_tree()
    apply_headers(actual, [_hdr("new", "d"), _hdr("new/f", size=1), _hdr("same", size=3),
                           _hdr("attrs", "l", size=4, mode=0o4755, mtime=0x20, uid=5)])
    # Sorted by path (the text after the first byte); an entry in both trees with other
    # attributes is listed twice, as Go lists it.
    assert compare_trees(expected, actual, None, None, Ignore()) == [
        "+/attrs(filetype:48￫50,uid:0￫5,size:4￫0,mode:0644￫4755,mtime:0x10￫0x20)",
        "-/dir/", "-/dir/in", "-/gone", "+/new/", "+/new/f",
        "/attrs(filetype:48￫50,uid:0￫5,size:4￫0,mode:0644￫4755,mtime:0x10￫0x20)"]
    assert compare_trees(expected, actual, None, None, Ignore(
        ["vfs.force_mask=0700"], {"use_hard_links": "true"})) == [
        "+/attrs(size:4￫0)", "-/dir/", "-/dir/in", "-/gone", "+/new/", "+/new/f", "/attrs(size:4￫0)"]


def test_compare_maps_ids_back_into_the_container() -> None:
    expected, actual = new_tree(), new_tree()
    apply_headers(expected, [_hdr("f", uid=1)])
    apply_headers(actual, [_hdr("f", uid=1001)])
    maps = [IDMap(0, 1000, 10)]
    # Go returns the mapping error in place of the attribute list.
    assert compare_trees(expected, actual, maps, maps, Ignore()) == [
        "+/f(host ID 0 cannot be mapped to a container ID)",
        "/f(host ID 0 cannot be mapped to a container ID)"]
    apply_headers(actual, [Hdr(b"f", 48, 1001, 1000, 0, 0o644, 100)])
    assert compare_trees(expected, actual, maps, maps, Ignore()) == []


def test_scan_tree_reads_what_is_on_disk(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"abc")
    os.symlink("d/f", tmp_path / "s")
    (tmp_path / ".wh.d").write_bytes(b"")  # a file that looks like a whiteout removes "d", as in Go
    (tmp_path / "e").mkdir()
    os.utime(tmp_path / "d" / "f", (0, 123))
    tree = scan_tree(str(tmp_path))
    assert _names(tree) == ["d/", "d/f", "e/", "s"]  # ".wh.d" sorts first, so "d" comes back
    typeflag, _, _, size, mode, mtime = tree.dirs[b"d"].files[b"f"]
    assert (typeflag, size, mode, mtime) == (48, 3, os.stat(tmp_path / "d" / "f").st_mode & 0o7777, 123)
    assert tree.files[b"s"][0] == 50


# -- Go's stable sort ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, 19, 20, 21, 40, 41, 97, 300])
def test_go_stable_sort_agrees_with_a_stable_sort_on_consistent_orders(n: int) -> None:
    rng = random.Random(n)
    data = [(rng.randrange(7), i) for i in range(n)]
    ordered = list(data)
    go_stable_sort(ordered, lambda a, b: a[0] < b[0])
    assert ordered == sorted(data, key=lambda item: item[0])


def test_layer_order_in_report_is_discovery_order(vstore: Store) -> None:
    first, _ = _image(vstore)
    second, _ = _image(vstore)
    report = vstore.check(CheckOptions(layer_unreferenced_maximum_age=-1))
    assert list(report.layer_parents) == [first.id, second.id]
    assert not report


def test_check_does_not_leave_locks_or_mounts(vstore: Store) -> None:
    _image(vstore)
    vstore.check(check_everything())
    with vstore.layer_store.writing(), vstore.image_store.writing(), vstore.container_store.writing():
        pass  # every lock the check took was released
    with pytest.raises(errors.LayerUnknown):
        vstore.layer("nosuch")


# -- what the check uses of the store: its public API ----------------------------------------------
def test_check_module_uses_the_store_api_only() -> None:
    """check.py imports nothing from store.py (no import cycle) and reaches into no store part."""
    import ast

    import containers_storage.check as check_module

    tree = ast.parse(Path(check_module.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {"store", "recordstore", "images", "containers"} & {m.split(".")[-1] for m in modules if m}
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not attributes & {"layer_store", "image_store", "container_store", "all_layer_stores",
                             "all_image_stores", "driver", "writing", "reading", "by_id"}


def test_layer_tree_is_a_read_only_mount_nobody_counts(vstore: Store) -> None:
    layer, _ = _image(vstore)
    with vstore.layer_tree(layer.id) as tree:
        assert (Path(tree.path) / "a").read_bytes() == b"hello\n"
        assert tree.uid_map == [] and tree.gid_map == []
        assert vstore.mounted(layer.id) == 0
    with pytest.raises(errors.LayerUnknown), vstore.layer_tree("nosuch"):
        pass


def test_unaccounted_layers_are_the_driver_layers_without_records(vstore: Store) -> None:
    from containers_storage.drivers.base import CreateOpts

    layer = vstore.create_layer()
    stray = "d" * 64
    vstore.driver.create(stray, "", CreateOpts(), False)
    assert vstore.unaccounted_layers() == [stray]
    assert vstore.remove_unaccounted_layer(layer.id) is False  # a record claims it: kept
    assert vstore.layer(layer.id).id == layer.id
    assert vstore.remove_unaccounted_layer(stray) is True
    assert vstore.unaccounted_layers() == []
    assert vstore.driver.list_layers() == [layer.id]
