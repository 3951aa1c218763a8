"""transport: loading OCI layouts, OCI archives and docker archives, and saving them back."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers_storage import errors, open_store
from containers_storage.store import Store
from containers_storage.transport import (
    Platform,
    TransportError,
    chain_ids,
    find_image,
    load,
    normalize_name,
    save,
)
from containers_storage.transport.common import go_time
from imagetools import (
    busybox_tar,
    five_layer_tars,
    layer_tar,
    make_layered_image,
    sha,
    store_state,
    tar_directory,
    write_docker_archive,
    write_layout,
)
from storetools import close_store

DRIVERS = ["vfs", "overlay"] if os.geteuid() == 0 else ["vfs"]


@pytest.fixture(params=DRIVERS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(graph_root=tmp_path / "root", run_root=tmp_path / "run", driver=request.param,
                   use_config=False)
    yield s
    close_store(s)


@pytest.fixture
def vfs_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(graph_root=tmp_path / "vroot", run_root=tmp_path / "vrun", driver="vfs", use_config=False)
    yield s
    close_store(s)


# -- names, platforms, IDs ------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "normalized"), [
    ("busybox", "localhost/busybox:latest"),
    ("busybox:1.36", "localhost/busybox:1.36"),
    ("library/busybox", "localhost/library/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("quay.io/a/b:1", "quay.io/a/b:1"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("localhost/x:y", "localhost/x:y"),
    ("quay.io/a/b:1@sha256:" + "a" * 64, "quay.io/a/b@sha256:" + "a" * 64),
])
def test_names_are_completed_as_podman_completes_them(name: str, normalized: str) -> None:
    assert normalize_name(name) == normalized


@pytest.mark.parametrize("bad", ["", "UPPER", "a b", "x:", "/abs"])
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(TransportError):
        normalize_name(bad)


def test_chain_ids_are_c_image_layer_ids() -> None:
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    ids = chain_ids([d1, d2])
    assert ids[0] == "1" * 64
    assert ids[1] == hashlib.sha256(("1" * 64 + "+" + "2" * 64).encode()).hexdigest()


def test_config_times_are_written_as_go_writes_them() -> None:
    assert go_time("2024-01-02T03:04:05.120000000Z") == "2024-01-02T03:04:05.12Z"
    assert go_time("2024-01-02T03:04:05+00:00") == "2024-01-02T03:04:05Z"
    assert go_time("2024-01-02T03:04:05.5+02:00") == "2024-01-02T03:04:05.5+02:00"
    assert go_time("yesterday") == ""


def test_platforms() -> None:
    assert str(Platform.parse("linux/arm64/v8")) == "linux/arm64/v8"
    assert Platform.parse("linux/arm64/v8").matches(Platform("linux", "arm64", "v8"))
    assert not Platform.parse("linux/arm64/v8").matches(Platform("linux", "arm64", "v7"))
    assert Platform.parse("linux/amd64").matches(Platform("linux", "amd64", "v3"))
    with pytest.raises(ValueError):
        Platform.parse("linux")


# -- put_layer's options (Go's LayerOptions) ------------------------------------------------------

def test_put_layer_records_given_digests_as_go_does(vfs_store: Store) -> None:
    tar = busybox_tar()
    blob = gzip.compress(tar, mtime=0)
    other = "sha256:" + "c" * 64
    # The stream is the uncompressed diff; the blob digest given is recorded with its size.
    layer = vfs_store.put_layer(io.BytesIO(tar), original_digest=other, original_size=123,
                                uncompressed_digest=sha(tar)).layer
    assert layer.compressed_digest == other
    assert layer.compressed_size == 123
    assert layer.uncompressed_digest == sha(tar)
    assert layer.uncompressed_size == len(tar)
    # Without an uncompressed digest, an uncompressed stream's is the "original" one (Go).
    layer2 = vfs_store.put_layer(io.BytesIO(tar), original_digest=other).layer
    assert layer2.uncompressed_digest == other
    assert layer2.compressed_size == len(tar)
    layer3 = vfs_store.put_layer(io.BytesIO(blob), original_digest=sha(blob), uncompressed_digest=sha(tar),
                                 verify_digests=True).layer
    assert (layer3.compressed_digest, layer3.compressed_size) == (sha(blob), len(blob))
    assert layer3.compression == 2


def test_put_layer_refuses_a_diff_that_is_not_what_its_digests_say(vfs_store: Store, tmp_path: Path) -> None:
    blob = gzip.compress(busybox_tar(), mtime=0)
    before = store_state(str(tmp_path / "vroot"))
    for kwargs in ({"original_digest": "sha256:" + "0" * 64}, {"uncompressed_digest": "sha256:" + "0" * 64},
                   {"original_digest": sha(blob), "original_size": len(blob) + 1}):
        with pytest.raises(errors.DigestMismatch, match="does not match"):
            vfs_store.put_layer(io.BytesIO(blob), verify_digests=True, **kwargs)
    assert vfs_store.layers() == []
    assert store_state(str(tmp_path / "vroot")) == before


def test_put_layer_big_data_and_template(vfs_store: Store) -> None:
    tar = busybox_tar()
    base = vfs_store.put_layer(io.BytesIO(tar), big_data=[("k1", b"one"), ("k2", b"two")]).layer
    assert vfs_store.list_layer_big_data(base.id) == ["k1", "k2"]
    assert vfs_store.layer_big_data(base.id, "k2") == b"two"
    copy = vfs_store.put_layer(template=base.id).layer
    assert copy.uncompressed_digest == base.uncompressed_digest
    assert copy.compressed_digest == base.compressed_digest
    out = io.BytesIO()
    vfs_store.diff(copy.id, out, compression=0)
    assert out.getvalue() == tar
    with pytest.raises(errors.LayerUnknown):
        vfs_store.put_layer(template="nonesuch")


def test_digest_locks_are_where_go_keeps_them(vfs_store: Store, tmp_path: Path) -> None:
    d = "sha256:" + "ab" * 32
    lock = vfs_store.digest_lock(d)
    assert lock.path == str(tmp_path / "vrun" / "vfs-locks" / d)
    with lock.writing():
        assert os.path.exists(lock.path)
    with pytest.raises(errors.StorageError):
        vfs_store.digest_lock("../../etc/passwd")


# -- loading ------------------------------------------------------------------------------------

def _expected_layer_ids(image_tars: list[bytes]) -> list[str]:
    return chain_ids([sha(t) for t in image_tars])


def test_load_a_five_layer_oci_layout(store: Store, tmp_path: Path) -> None:
    tars = five_layer_tars()
    image = make_layered_image(tars, created="2024-05-06T07:08:09.100Z")
    write_layout(tmp_path / "oci", [(image, "five")])
    [loaded] = load(store, tmp_path / "oci")
    assert loaded.id == image.id
    assert loaded.names == ["localhost/five:latest"]
    assert loaded.reference == "localhost/five:latest"
    rec = store.image(image.id)
    ids = _expected_layer_ids(tars)
    assert rec.top_layer == ids[-1]
    assert rec.created == "2024-05-06T07:08:09.1Z"
    assert rec.digest == image.manifest_digest
    assert rec.names == ["localhost/five:latest"]
    assert rec.names_history == ["localhost/five:latest"]
    assert rec.big_data_names == [sha(image.config), "manifest-" + image.manifest_digest, "manifest",
                                  "signature-" + image.manifest_digest[7:]]
    assert store.image_big_data(image.id, "manifest") == image.manifest
    assert store.image_big_data(image.id, sha(image.config)) == image.config
    assert store.image_big_data(image.id, "signature-" + image.manifest_digest[7:]) == b""
    assert json.loads(rec.metadata) == {"signatures-sizes": {image.manifest_digest: []}}
    for i, (tar, blob) in enumerate(zip(tars, image.blobs, strict=True)):
        layer = store.layer(ids[i])
        assert layer.parent == (ids[i - 1] if i else "")
        assert (layer.compressed_digest, layer.compressed_size) == (sha(blob), len(blob))
        assert (layer.uncompressed_digest, layer.uncompressed_size) == (sha(tar), len(tar))
        out = io.BytesIO()
        store.diff(layer.id, out, compression=0)
        assert out.getvalue() == tar
    ctr = store.create_container(image.id)
    root = store.mount(ctr.id)
    try:
        assert Path(root, "etc/greeting").read_bytes() == b"hello from layer three\n"
        assert os.path.exists(os.path.join(root, "usr/share/doc/a.txt"))
        assert not os.path.exists(os.path.join(root, "usr/share/doc/b.txt"))  # whited out
        assert os.path.exists(os.path.join(root, "bin/busybox"))
    finally:
        store.unmount(ctr.id)
        store.delete_container(ctr.id)


def test_loading_again_reuses_every_layer(store: Store, tmp_path: Path) -> None:
    image = make_layered_image(five_layer_tars())
    write_layout(tmp_path / "oci", [(image, "quay.io/x/five:1")])
    load(store, tmp_path / "oci")
    layers = {l.id: l.created for l in store.layers()}
    [again] = load(store, tmp_path / "oci", names=["quay.io/x/five:2"])
    assert {l.id: l.created for l in store.layers()} == layers  # nothing applied again
    assert store.image(again.id).names == ["quay.io/x/five:2", "quay.io/x/five:1"]


def test_a_diff_stored_under_another_parent_is_copied_not_applied(store: Store, tmp_path: Path) -> None:
    tars = five_layer_tars()
    first = make_layered_image(tars[:2])
    write_layout(tmp_path / "a", [(first, "a")])
    load(store, tmp_path / "a")
    # The same second diff on another base: a new layer (another chain ID) made from the
    # stored layer's diff; its records name the same blob.
    second = make_layered_image([tars[2], tars[1]])
    os.remove(tmp_path / "a" / "index.json")
    write_layout(tmp_path / "b", [(second, "b")])
    blob_path = tmp_path / "b" / "blobs" / "sha256" / sha(second.blobs[1])[7:]
    blob_path.write_bytes(b"x" * len(second.blobs[1]))  # would fail if it were read
    [loaded] = load(store, tmp_path / "b")
    top = store.layer(store.image(loaded.id).top_layer)
    assert top.uncompressed_digest == sha(tars[1])
    assert top.compressed_digest == sha(second.blobs[1])
    assert top.id == chain_ids([sha(tars[2]), sha(tars[1])])[1]


def test_load_an_oci_archive_and_a_zstd_layout(store: Store, tmp_path: Path) -> None:
    image = make_layered_image(five_layer_tars()[:3], compression="zstd")
    write_layout(tmp_path / "oci", [(image, "zst:1")])
    tar_directory(tmp_path / "oci", tmp_path / "oci.tar")
    [loaded] = load(store, tmp_path / "oci.tar")
    assert loaded.names == ["localhost/zst:1"]
    assert store.layer(store.image(loaded.id).top_layer).compression == 4


def test_load_a_docker_archive_with_several_images_and_tags(store: Store, tmp_path: Path) -> None:
    tars = five_layer_tars()
    one, two = make_layered_image(tars[:2]), make_layered_image(tars[:3])
    write_docker_archive(tmp_path / "d.tar", [(one, ["busybox:1", "docker.io/busybox:2"]), (two, [])])
    loaded = load(store, tmp_path / "d.tar")
    assert [l.id for l in loaded] == [one.id, two.id]
    assert loaded[0].names == ["localhost/busybox:1", "docker.io/library/busybox:2"]
    assert loaded[1].names == [] and loaded[1].reference == "sha256:" + two.id
    rec = store.image(one.id)
    assert rec.names == ["docker.io/library/busybox:2", "localhost/busybox:1"]  # each added first
    manifest = json.loads(store.image_big_data(one.id, "manifest"))
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert [l["digest"] for l in manifest["layers"]] == [sha(t) for t in tars[:2]]
    base = store.layer(rec.top_layer)
    assert base.compression == 0 and base.compressed_digest == sha(tars[1])
    # the gzip-compressed docker archive is read too (podman load accepts it)
    with open(tmp_path / "d.tar", "rb") as f:
        (tmp_path / "d.tar.gz").write_bytes(gzip.compress(f.read()))
    assert [l.id for l in load(store, tmp_path / "d.tar.gz")] == [one.id, two.id]


def test_an_index_is_resolved_to_the_platform(store: Store, tmp_path: Path) -> None:
    amd = make_layered_image([layer_tar({"arch": b"amd64"})])
    arm = make_layered_image([layer_tar({"arch": b"arm64"})], {"Env": ["ARM=1"]})
    write_layout(tmp_path / "oci", [(amd, None), (arm, None)])
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.manifest_digest,
         "size": len(img.manifest), "platform": {"os": "linux", "architecture": arch, **extra}}
        for img, arch, extra in ((amd, "amd64", {}), (arm, "arm64", {"variant": "v8"}))]}
    index_bytes = json.dumps(index).encode()
    (tmp_path / "oci" / "blobs" / "sha256" / sha(index_bytes)[7:]).write_bytes(index_bytes)
    (tmp_path / "oci" / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(index_bytes),
        "size": len(index_bytes), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    [loaded] = load(store, tmp_path / "oci", platform="linux/arm64")
    assert loaded.id == arm.id
    # the index is stored too, and the image can be found by its digest
    assert store.image_big_data(arm.id, "manifest-" + sha(index_bytes)) == index_bytes
    assert store.image(arm.id).digest == sha(index_bytes)  # c/image 5.23: the first manifest key
    assert [i.id for i in store.images_by_digest(arm.manifest_digest)] == [arm.id]
    [host] = load(store, tmp_path / "oci", image="multi", platform=Platform("linux", "amd64"))
    assert host.id == amd.id
    with pytest.raises(TransportError, match="no image found in image index for architecture s390x"):
        load(store, tmp_path / "oci", platform="linux/s390x")


def test_a_tag_is_chosen_and_an_unknown_tag_refused(store: Store, tmp_path: Path) -> None:
    a = make_layered_image([layer_tar({"a": b"a"})])
    b = make_layered_image([layer_tar({"b": b"b"})])
    write_layout(tmp_path / "oci", [(a, "a"), (b, "b")])
    [loaded] = load(store, tmp_path / "oci", image="b")
    assert loaded.id == b.id
    assert [i.id for i in load(store, tmp_path / "oci")] == [a.id, b.id]
    with pytest.raises(TransportError, match="no descriptor found for reference 'c'"):
        load(store, tmp_path / "oci", image="c")


# -- saving -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["oci-dir", "oci-archive", "docker-archive"])
def test_save_and_load_back(store: Store, vfs_store: Store, tmp_path: Path, fmt: str) -> None:
    tars = five_layer_tars()
    image = make_layered_image(tars, {"Cmd": ["/bin/sh"]})
    write_layout(tmp_path / "oci", [(image, "example.com/five:1")])
    load(store, tmp_path / "oci")
    out = tmp_path / ("out" if fmt == "oci-dir" else "out.tar")
    save(store, ["example.com/five:1"], out, format=fmt)
    [back] = load(vfs_store, out)
    assert back.id == image.id  # the same config, so the same image ID
    assert back.names == ["example.com/five:1"]
    rec = vfs_store.image(back.id)
    assert [vfs_store.layer(i).uncompressed_digest for i in _expected_layer_ids(tars)] == image.diff_ids
    assert rec.top_layer == _expected_layer_ids(tars)[-1]
    if fmt != "docker-archive":
        manifest = json.loads(vfs_store.image_big_data(back.id, "manifest"))
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert {l["mediaType"] for l in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}


def test_save_zstd_uncompressed_and_by_short_name(store: Store, vfs_store: Store, tmp_path: Path) -> None:
    image = make_layered_image(five_layer_tars()[:2])
    write_layout(tmp_path / "oci", [(image, "short")])
    load(store, tmp_path / "oci")
    found, name = find_image(store, "short")
    assert (found.id, name) == (image.id, "localhost/short:latest")
    assert find_image(store, image.id[:12]) == (found, None) or find_image(store, image.id[:12])[1] is None
    for compression, media in (("zstd", "+zstd"), ("none", "")):
        out = tmp_path / compression
        save(store, ["short"], out, compression=compression)
        index = json.loads((out / "index.json").read_text())
        assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name":
                                                        "localhost/short:latest"}
        manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
        assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar" + media
        assert load(vfs_store, out)[0].id == image.id
    with pytest.raises(errors.ImageUnknown):
        save(store, ["nonesuch"], tmp_path / "x")


def test_a_docker_archive_holds_several_images(store: Store, vfs_store: Store, tmp_path: Path) -> None:
    tars = five_layer_tars()
    one, two = make_layered_image(tars[:2]), make_layered_image(tars[:4])
    write_layout(tmp_path / "oci", [(one, "one"), (two, "two")])
    load(store, tmp_path / "oci")
    save(store, ["one", two.id], tmp_path / "d.tar", format="docker-archive")
    with tarfile.open(tmp_path / "d.tar") as tar:
        items = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer_members = [n for n in tar.getnames() if n.endswith(".tar")]
    assert [i["RepoTags"] for i in items] == [["localhost/one:latest"], []]
    assert len(layer_members) == 4  # shared layers written once
    assert [l.id for l in load(vfs_store, tmp_path / "d.tar")] == [one.id, two.id]
    with pytest.raises(TransportError, match="only docker-archive"):
        save(store, ["one", "two"], tmp_path / "x", format="oci-archive")


def test_save_refuses_a_damaged_layer_and_writes_nothing(vfs_store: Store, tmp_path: Path) -> None:
    image = make_layered_image([busybox_tar()])
    write_layout(tmp_path / "oci", [(image, "dmg")])
    [loaded] = load(vfs_store, tmp_path / "oci")
    layer = vfs_store.layer(vfs_store.image(loaded.id).top_layer)
    with open(tmp_path / "vroot" / "vfs" / "dir" / layer.id / "etc" / "greeting", "r+b") as f:
        f.write(b"HELLO")
    with pytest.raises(errors.StorageError):
        save(vfs_store, ["dmg"], tmp_path / "out.tar", format="docker-archive")
    assert not (tmp_path / "out.tar").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
