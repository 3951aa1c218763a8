"""The Store facade on vfs: creation, names, deletion rules, big data, crash recovery."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from containers_storage import errors
from containers_storage.config import StoreOptions
from containers_storage.store import Store, get_store


def _reopen(store: Store) -> Store:
    store.close()
    return get_store(StoreOptions(graph_root=store.graph_root, run_root=store.run_root,
                                  driver_name="vfs"))


def test_layers_images_containers(store: Any) -> None:
    base = store.create_layer(names=["base"])
    top = store.create_layer(parent=base.id, names=["top"])
    image = store.create_image(top.id, names=["img"], metadata="meta")
    ctr = store.create_container("img", names=["ctr"], metadata="cmeta")
    assert ctr.image == image.id
    ctr_layer = store.layer(ctr.layer)
    assert ctr_layer.parent == top.id
    assert {l.id for l in store.layers()} == {base.id, top.id, ctr.layer}
    assert store.metadata("img") == "meta" and store.metadata("ctr") == "cmeta"
    assert store.lookup("top") == top.id
    assert store.layer(base.id[:10]).id == base.id  # unique prefix
    reopened = _reopen(store)
    assert reopened.image("img").top_layer == top.id
    assert reopened.container("ctr").layer == ctr.layer


def test_duplicate_names_are_refused(store: Any) -> None:
    store.create_layer(names=["same"])
    with pytest.raises(errors.DuplicateName):
        store.create_layer(names=["same"])
    assert len(store.layers()) == 1


def test_image_names_move_between_images(store: Any) -> None:
    layer = store.create_layer()
    a = store.create_image(layer.id, names=["a", "shared"])
    b = store.create_image(layer.id, names=["b"])
    store.add_names(b.id, ["shared"])
    assert store.names(a.id) == ["a"]
    assert store.names(b.id) == ["shared", "b"]
    assert store.image(b.id).names_history == ["b", "shared"]  # Go prepends each name in turn
    store.remove_names(b.id, ["b"])
    assert store.names(b.id) == ["shared"]


def test_delete_safety_checks(store: Any) -> None:
    base = store.create_layer()
    child = store.create_layer(parent=base.id)
    with pytest.raises(errors.LayerHasChildren):
        store.delete_layer(base.id)
    image = store.create_image(child.id, names=["i"])
    with pytest.raises(errors.LayerUsedByImage):
        store.delete_layer(child.id)
    ctr = store.create_container(image.id, names=["c"])
    with pytest.raises(errors.ImageUsedByContainer):
        store.delete_image(image.id)
    with pytest.raises(errors.NotALayer):
        store.delete_layer("nonexistent")
    store.delete_container(ctr.id)
    removed = store.delete_image(image.id)
    assert removed == [child.id, base.id]
    assert store.layers() == []


def test_big_data_sizes_and_digests(store: Any) -> None:
    layer = store.create_layer()
    image = store.create_image(layer.id, names=["i"])
    store.set_image_big_data(image.id, "manifest-sha256:x", b'{"schemaVersion":2}')
    store.set_image_big_data(image.id, "Config", b"cfg")
    assert store.image_big_data(image.id, "Config") == b"cfg"
    assert store.image_big_data_size(image.id, "Config") == 3
    digest = store.image_big_data_digest(image.id, "manifest-sha256:x")
    assert store.images_by_digest(digest)[0].id == image.id
    path = os.path.join(store.graph_root, "vfs-images", image.id, "=Q29uZmln")
    with open(path, "rb") as f:
        assert f.read() == b"cfg"


def test_mount_counts_persist(store: Any) -> None:
    layer = store.create_layer(writeable=True)
    path = store.mount(layer.id)
    store.mount(layer.id)
    assert os.path.isdir(path)
    with open(os.path.join(store.run_root, "vfs-layers", "mountpoints.json")) as f:
        assert json.load(f) == [{"id": layer.id, "path": path, "count": 2}]
    assert store.unmount(layer.id) is True
    assert store.unmount(layer.id) is False
    assert store.mounted(layer.id) == 0


def test_incomplete_layer_is_removed_on_next_load(store: Any) -> None:
    keep = store.create_layer(names=["keep"])
    doomed = store.create_layer(names=["doomed"])
    path = os.path.join(store.graph_root, "vfs-layers", "layers.json")
    with open(path) as f:
        data = json.load(f)
    for obj in data:
        if obj["id"] == doomed.id:
            obj["flags"] = {"incomplete": True}
    with open(path, "w") as f:
        json.dump(data, f)
    reopened = _reopen(store)
    assert [l.id for l in reopened.layers()] == [keep.id]
    assert not os.path.exists(os.path.join(store.graph_root, "vfs", "dir", doomed.id))


def test_corrupt_layers_json_is_an_error_and_untouched(store: Any) -> None:
    store.create_layer(names=["x"])
    path = os.path.join(store.graph_root, "vfs-layers", "layers.json")
    with open(path, "wb") as f:
        f.write(b"[{not json")
    reopened = _reopen(store)
    with pytest.raises(Exception) as info:
        reopened.layers()
    assert "layers.json" in str(info.value)
    with open(path, "rb") as f:
        assert f.read() == b"[{not json"


def test_reload_after_foreign_write(store: Any, store_dirs: tuple[str, str]) -> None:
    """A long-lived Store sees writes made through another process's lock."""
    import subprocess
    import sys

    store.create_layer(names=["first"])
    root, run = store_dirs
    code = ("from containers_storage.config import StoreOptions;"
            "from containers_storage.store import get_store;"
            f"s=get_store(StoreOptions(graph_root={root!r}, run_root={run!r}, driver_name='vfs'));"
            "s.create_layer(names=['second'])")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert sorted(n for l in store.layers() for n in l.names) == ["first", "second"]


def test_additional_read_only_image_store(tmp_path: Any) -> None:
    ro_root, rw_root = str(tmp_path / "ro"), str(tmp_path / "rw")
    ro = get_store(StoreOptions(graph_root=ro_root, run_root=str(tmp_path / "ro-run"), driver_name="vfs"))
    base = ro.create_layer(names=["shared-base"])
    image = ro.create_image(base.id, names=["shared/image"], metadata="ro-meta")
    ro.set_image_big_data(image.id, "manifest", b"{}")
    ro.close()
    ro_files = {p: open(p, "rb").read() for p in (  # noqa: SIM115
        os.path.join(ro_root, "vfs-layers", "layers.json"),
        os.path.join(ro_root, "vfs-images", "images.json"))}

    rw = get_store(StoreOptions(graph_root=rw_root, run_root=str(tmp_path / "rw-run"), driver_name="vfs",
                                driver_options=[f"vfs.imagestore={ro_root}"]))
    try:
        assert rw.image("shared/image").id == image.id
        assert rw.layer("shared-base").read_only
        assert rw.metadata(image.id) == "ro-meta"
        assert rw.image_big_data(image.id, "manifest") == b"{}"
        ctr = rw.create_container("shared/image", names=["c"])
        assert rw.layer(ctr.layer).parent == base.id
        with pytest.raises(errors.NotAnImage):
            rw.delete_image(image.id)
        with pytest.raises(errors.NotALayer):
            rw.delete_layer(base.id)
        # Naming a read-only image copies its record into the writable store, as Go does.
        rw.add_names(image.id, ["local-name"])
        assert set(rw.names(image.id)) == {"local-name", "shared/image"}
        assert rw.image_big_data(image.id, "manifest") == b"{}"
    finally:
        rw.close()
    for path, data in ro_files.items():
        with open(path, "rb") as f:
            assert f.read() == data, f"{path} changed"


def test_graph_root_images_stay_deletable_with_a_separate_image_store(tmp_path: Any) -> None:
    """With --image-store, images made earlier in the graph root are still found and, as in
    Go, deleted from there (with the layers only they used); true read-only stores stay so."""
    graph, run, images = str(tmp_path / "graph"), str(tmp_path / "run"), str(tmp_path / "images")
    plain = get_store(StoreOptions(graph_root=graph, run_root=run, driver_name="vfs"))
    base = plain.create_layer()
    old = plain.create_image(base.id, names=["old"])
    plain.close()
    split = get_store(StoreOptions(graph_root=graph, run_root=run, driver_name="vfs", image_store=images))
    try:
        assert split.image("old").id == old.id
        new = split.create_image(base.id, names=["new"])
        # base is still new's top layer (Go, looking only at the graph root's images, would
        # delete it from under "new").
        assert split.delete_image("old") == []
        with pytest.raises(errors.ImageUnknown):
            split.image("old")
        assert split.image("new").id == new.id
        with pytest.raises(errors.NotAnImage):
            split.delete_image("old")
    finally:
        split.close()
    plain = get_store(StoreOptions(graph_root=graph, run_root=run, driver_name="vfs"))
    try:
        with pytest.raises(errors.ImageUnknown):
            plain.image(old.id)
        assert plain.layer(base.id).id == base.id
    finally:
        plain.close()
