"""Store.check and Store.repair on every driver: a store damaged in each way Go's check detects
gives exactly Go's report, repair removes what it names (and only that), and the store stays
usable afterwards.  Overlay mounts every layer read-only during the check; the leak check of
``no_leaked_mounts`` proves each mount is released."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator

import pytest

from containers_storage import errors
from containers_storage.check import CheckOptions, CheckReport, RepairOptions, check_everything, check_most
from containers_storage.config import StoreOptions
from containers_storage.records import Image, Layer
from containers_storage.store import Store, get_store
from drivertools import IS_ROOT
from storetools import close_store

FILES = {"a": b"hello\n", "b": b"world\n", "d/c": b"deep\n"}
TRAILER = "consume any trailer after the EOF marker"  # Go reports a broken stream twice


def _tar(files: dict[str, bytes], dirs: tuple[str, ...] = ("d",)) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_000_000
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_000_000
            tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


@pytest.fixture(params=["vfs", "overlay"])
def store(request: pytest.FixtureRequest, no_leaked_mounts: str) -> Iterator[Store]:
    if request.param != "vfs" and not IS_ROOT:
        pytest.skip("kernel overlay mounts need root")
    s = get_store(StoreOptions(graph_root=os.path.join(no_leaked_mounts, "root"),
                               run_root=os.path.join(no_leaked_mounts, "run"),
                               driver_name=request.param))
    try:
        yield s
    finally:
        close_store(s)


def _image(store: Store, files: dict[str, bytes] | None = None) -> tuple[Layer, Image]:
    layer = store.put_layer(_tar(FILES if files is None else files)).layer
    return layer, store.create_image(layer.id)


def _texts(errs: dict[str, list[errors.StorageError]]) -> dict[str, list[str]]:
    return {id: [str(e) for e in items] for id, items in errs.items()}


def _everything(report: CheckReport) -> dict[str, dict[str, list[str]]]:
    return {heading: _texts(section) for heading, section in report.sections() if section}


def _layer_file(store: Store, layer: Layer, name: str) -> str:
    return os.path.join(store.driver.diff_root(layer.id), name)


def _assert_usable(store: Store) -> None:
    """After a repair the store takes new work and checks clean."""
    _, image = _image(store)
    store.create_container(image.id)
    assert not store.check(check_everything())


@pytest.mark.parametrize("options", [check_everything(), check_most()], ids=["full", "quick"])
def test_clean_store_reports_nothing(store: Store, options: CheckOptions) -> None:
    layer, image = _image(store)
    top = store.put_layer(_tar({"d/.wh.c": b"", "e": b"new\n"}), parent=layer.id).layer
    image2 = store.create_image(top.id)
    store.set_image_big_data(image2.id, "cfg", b"{}")
    store.set_layer_big_data(top.id, "extra", b"data")
    ctr = store.create_container(image.id)
    store.set_container_big_data(ctr.id, "state", b"running")
    store.create_layer()  # young and unreferenced: not yet a problem
    report = store.check(options)
    assert _everything(report) == {}
    assert not report
    assert store.repair(report) == []
    assert len(store.layers()) == 4


@pytest.mark.parametrize("content", [b"HELLO\n", b"grown beyond\n", b"x"],
                         ids=["same-size", "grown", "shrunk"])
def test_changed_file_fails_its_checksum(store: Store, content: bytes) -> None:
    layer, image = _image(store)
    ctr = store.create_container(image.id)
    with open(_layer_file(store, layer, "a"), "wb") as f:
        f.write(content)
    report = store.check(check_everything())
    damage = [f'layer {layer.id}: {TRAILER}: file integrity checksum failed for "a"',
              f'layer {layer.id}: file integrity checksum failed for "a"']
    assert _everything(report) == {"layer": {layer.id: damage}, "image": {image.id: damage},
                                   "container": {ctr.id: damage}}
    # Without leave to remove containers, what the container uses cannot go either; Go tries the
    # layer once per problem reported for it.
    in_use = f"deleting layer {layer.id}: used by layer {ctr.layer}: layer has children"
    assert [str(e) for e in store.repair(report, RepairOptions())] == [
        f"deleting image {image.id}: image used by {ctr.id}: image is in use by a container",
        in_use, in_use]
    assert [c.id for c in store.containers()] == [ctr.id]
    assert _everything(store.check(check_everything())) == _everything(report)
    assert store.repair(report, RepairOptions(remove_containers=True)) == []
    assert store.layers() == [] and store.containers() == []
    _assert_usable(store)


def test_removed_file(store: Store) -> None:
    layer, image = _image(store)
    path = _layer_file(store, layer, "b")
    os.unlink(path)
    report = store.check(check_most())
    damage = [f"layer {layer.id}: {TRAILER}: open {path}: no such file or directory",
              f"layer {layer.id}: open {path}: no such file or directory"]
    assert _everything(report) == {"layer": {layer.id: damage}, "image": {image.id: damage}}
    assert store.repair(report) == []
    assert store.layers() == [] and store.images() == []
    _assert_usable(store)


def test_added_file_is_content_modified(store: Store) -> None:
    layer, image = _image(store)
    with open(_layer_file(store, layer, "d/new"), "wb") as f:
        f.write(b"not from the diff")
    os.utime(_layer_file(store, layer, "d"), (2_000_000, 2_000_000))  # adding "new" touched it
    os.chmod(_layer_file(store, layer, "b"), 0o600)
    quick = store.check(check_most())
    assert not quick  # tar-split reassembly never looks at files the diff did not have
    report = store.check(check_everything())
    damage = [f"layer {layer.id}: +/b(mode:0644￫0600), layer content modified",
              f"layer {layer.id}: +/d/new, layer content modified",
              f"layer {layer.id}: /b(mode:0644￫0600), layer content modified",
              f"layer {layer.id}: /d(mtime:0xf4240￫0x1e8480), layer content modified"]
    assert _everything(report) == {"layer": {layer.id: damage}, "image": {image.id: damage}}
    assert store.repair(report) == []
    assert not store.check(check_everything())
    assert store.layers() == []


def test_missing_tar_split(store: Store) -> None:
    layer, image = _image(store)
    os.unlink(store.layer_store.tar_split_path(layer.id))
    generated = io.BytesIO()
    store.diff(layer.id, generated, compression=0)  # what the check digests now: the driver's own diff
    report = store.check(check_everything())
    damage = [f"layer {layer.id}: layer content incorrect digest"]
    if len(generated.getvalue()) != layer.uncompressed_size:
        damage.append(f"layer {layer.id}: read {len(generated.getvalue())} bytes instead of "
                      f"{layer.uncompressed_size} bytes: layer content incorrect size")
    assert _everything(report) == {"layer": {layer.id: damage}, "image": {image.id: damage}}
    assert store.repair(report) == []
    assert store.layers() == []


def test_missing_layer_directory(store: Store) -> None:
    layer, image = _image(store)
    root = store.driver.diff_root(layer.id)  # vfs: the layer directory; overlay: <layer>/diff
    home = os.path.join(store.graph_root, store.driver_name,
                        *(["dir"] if store.driver_name == "vfs" else []), layer.id)
    shutil.rmtree(home)
    report = store.check(check_everything())
    damage = [f"layer {layer.id}: {TRAILER}: open {root}: no such file or directory",
              f"layer {layer.id}: open {root}: no such file or directory",
              f"layer {layer.id}: stat {home}: no such file or directory"]
    assert _everything(report) == {"layer": {layer.id: damage}, "image": {image.id: damage}}
    assert store.repair(report) == []
    assert store.layers() == [] and store.images() == []
    _assert_usable(store)


def test_image_with_missing_top_layer(store: Store) -> None:
    layer, image = _image(store)
    store.delete(layer.id)  # no safety checks: the image now points at nothing
    report = store.check()
    assert _everything(report) == {
        "image": {image.id: [f"image {image.id}: layer {layer.id}: image layer is missing"]}}
    assert store.repair(report) == []
    assert store.images() == []
    _assert_usable(store)


def test_image_big_data_missing_or_resized(store: Store) -> None:
    layer, gone = _image(store)
    store.set_image_big_data(gone.id, "manifest-x", b"{}")
    resized = store.create_image(layer.id)
    store.set_image_big_data(resized.id, "cfg", b"{}")
    os.unlink(store.image_store.big_data_path(gone.id, "manifest-x"))
    with open(store.image_store.big_data_path(resized.id, "cfg"), "ab") as f:
        f.write(b"\n")
    report = store.check()
    assert _everything(report) == {"image": {
        gone.id: [f'image {gone.id}: data item "manifest-x": image data item is missing'],
        resized.id: [f'image {resized.id}: data item "cfg": image data item has incorrect size']}}
    assert store.repair(report) == []
    assert store.images() == [] and store.layers() == []


def test_layer_big_data_missing(store: Store) -> None:
    layer, image = _image(store)
    store.set_layer_big_data(layer.id, "blob", b"123")
    os.unlink(store.layer_store.big_data_path(layer.id, "blob"))
    report = store.check()
    damage = [f'layer {layer.id}: data item "blob": layer data item is missing']
    assert _everything(report) == {"layer": {layer.id: damage}, "image": {image.id: damage}}
    assert store.repair(report) == []
    assert store.layers() == []


def test_container_big_data_missing_or_resized(store: Store) -> None:
    _, image = _image(store)
    gone = store.create_container(image.id)
    store.set_container_big_data(gone.id, "state", b"x")
    resized = store.create_container(image.id)
    store.set_container_big_data(resized.id, "state", b"x")
    os.unlink(store.container_store.big_data_path(gone.id, "state"))
    with open(store.container_store.big_data_path(resized.id, "state"), "ab") as f:
        f.write(b"y")
    report = store.check()
    assert _everything(report) == {"container": {
        gone.id: [f'container {gone.id}: data item "state": container data item is missing'],
        resized.id: [f'container {resized.id}: data item "state": container data item has incorrect size']}}
    assert store.repair(report, RepairOptions()) == []
    assert len(store.containers()) == 2  # containers are only removed when asked
    assert store.repair(report) == []
    assert store.containers() == []
    assert len(store.layers()) == 1  # the image's layer is still in use


def test_container_with_missing_image(store: Store) -> None:
    _, image = _image(store)
    ctr = store.create_container(image.id)
    store.delete(image.id)
    report = store.check()
    assert _everything(report) == {"container": {ctr.id: [f"image {image.id}: image missing"]}}
    assert store.repair(report, RepairOptions()) == []
    assert _everything(store.check()) == _everything(report)
    assert store.repair(report, RepairOptions(remove_containers=True)) == []
    assert store.containers() == []
    assert not store.check()


def test_unaccounted_driver_layers_are_removed_in_listing_order(store: Store) -> None:
    from containers_storage.drivers.base import CreateOpts

    layer, _ = _image(store)
    strays = ["c" * 64, "a" * 64, "b" * 64]
    with store.layer_store.writing():
        for stray in strays:
            store.driver.create(stray, "", CreateOpts(), False)
    listed = store.driver.list_layers()
    report = store.check()
    assert _everything(report) == {"layer": {
        s: [f"layer {s}: layer in lower level storage driver not accounted for"]
        for s in sorted(strays, key=listed.index)}}
    # Repair removes them in the driver's order (Go numbers every listed layer; we, the strays).
    assert sorted(report.layer_order, key=report.layer_order.__getitem__) == sorted(strays, key=listed.index)
    assert store.repair(report) == []
    assert store.driver.list_layers() == [layer.id]
    assert not store.check()
