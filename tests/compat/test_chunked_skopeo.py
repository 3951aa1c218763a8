"""Partial pulls beside skopeo: the same registry, the same blobs, the same layers on disk.

Debian's skopeo 1.9.3 (containers/storage 1.43) writes zstd:chunked layers and, with
``pull_options = {enable_partial_images = "true"}``, pulls them partially; Debian's
``docker-registry`` serves the ranges and logs the bytes it wrote for each request.  Go 1.43 is a
generation older than the Go (1.60/1.63) we follow, and the records show it: it names the TOC
annotations without "github.", records the compressed blob digest as the layer's diff digest (a
c/image 5.23 shortcut), keeps no tar-split and knows no ``toc-digest``.  The tests compare
everything else record for record and the layers file for file, and check those differences
exactly, so that a change on either side shows.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkedtools import changed_files, file_contents, pull_image_layers, rootfs_tar, tree
from containers_storage.archive.chunked import ChunkedBlob, compress, toc_digest
from containers_storage.config import StoreOptions
from containers_storage.errors import DigestMismatch
from containers_storage.store import Store, get_store
from registrytools import REGISTRY, ZSTD_LAYER, Registry, env_with, sha, skopeo_storage_conf
from storetools import close_store

SKOPEO = shutil.which("skopeo")
GO_CLI = shutil.which("containers-storage")  # Debian's 1.43, CI's reference
# Current Go, built from source where it is (not in CI): for ``check``, which 1.43 lacks.
GO_NEW = next((p for p in ("/usr/local/bin/go-cs-1.63", "/usr/local/bin/go-cs-1.60") if Path(p).exists()),
              None)

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed"),
    pytest.mark.skipif(REGISTRY is None, reason="docker-registry is not installed (scripts/setup.sh)"),
]

MANIFEST_KEY = "zstd-chunked-manifest"
_MANIFEST_FILE = "=enN0ZC1jaHVua2VkLW1hbmlmZXN0"  # the big data item's file name (= + base64)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    try:
        yield reg
    finally:
        reg.stop()


def _store(base: Path, **pull: str) -> Store:
    return get_store(StoreOptions(graph_root=str(base / "root"), run_root=str(base / "run"),
                                  driver_name="overlay", pull_options=dict(pull)))


def _skopeo_pull(registry: Registry, ref: str, base: Path, extra: str = "") -> None:
    conf = skopeo_storage_conf(base / "storage.conf", base / "root", base / "run", extra=extra)
    proc = subprocess.run([SKOPEO or "skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                           f"docker://{registry.host}/{ref}", f"containers-storage:example.com/{ref}"],
                          capture_output=True, env=env_with(conf))
    assert proc.returncode == 0, proc.stderr.decode()


def _skopeo_layers(base: Path) -> list[dict[str, object]]:
    return json.loads((base / "root/overlay-layers/layers.json").read_text())  # type: ignore[no-any-return]


def _our_blob(tar: bytes) -> tuple[bytes, ChunkedBlob]:
    out = io.BytesIO()
    result = compress(io.BytesIO(tar), out)
    return out.getvalue(), result


def _unmount(base: Path) -> None:
    subprocess.run(["umount", "-R", str(base / "root/overlay")], capture_output=True)


def test_skopeo_and_we_pull_our_zstd_chunked_blob_alike(registry: Registry, tmp_path: Path) -> None:
    """Our writer's blob, pushed as is: skopeo 1.9.3 pulls it partially (through the Go 1.43
    annotation names we also write), and so do we; the layers are the same file for file."""
    tar = rootfs_tar(file_contents(1))
    blob, written = _our_blob(tar)
    registry.push_image("ours", "v1", [(blob, ZSTD_LAYER, written.annotations)],
                        [sha(tar)])
    digest = sha(blob)

    mark = registry.mark()
    skopeo_base = tmp_path / "skopeo"
    _skopeo_pull(registry, "ours:v1", skopeo_base)
    # Partial: ranges (206), not the blob in one piece.
    gets = registry.blob_gets(digest, mark)
    assert gets and all(g["http.response.status"] == "206" for g in gets), gets
    (sk_layer,) = _skopeo_layers(skopeo_base)

    ours_base = tmp_path / "ours"
    store = _store(ours_base, enable_partial_images="true")
    try:
        mark = registry.mark()
        (result,) = pull_image_layers(store, registry.url, "ours", "v1", ids=[str(sk_layer["id"])])
        assert result.partial
        # Go's requests: the TOC and tar-split in one, the file data in one.
        assert registry.blob_requests(digest, mark) == 2
        layer = store.layer(result.layer.id)
        ours = layer.raw
        # Record for record, what both generations record the same way.
        for key in ("id", "parent", "names", "metadata", "mountlabel"):
            assert ours.get(key) == sk_layer.get(key), key
        assert store.layer_big_data(layer.id, MANIFEST_KEY) == (
            skopeo_base / "root/overlay-layers" / layer.id / _MANIFEST_FILE).read_bytes()
        # Where Go 1.43 (c/image 5.23) differs from current Go, which we follow:
        assert sk_layer["diff-digest"] == digest  # the blob's own digest, not the tar's
        assert "toc-digest" not in sk_layer and "diff-size" not in sk_layer
        assert sk_layer["big-data-names"] == [MANIFEST_KEY]
        assert ours["diff-digest"] == sha(tar) and ours["diff-size"] == len(tar)
        assert ours["toc-digest"] == toc_digest(written.annotations)
        assert ours["big-data-names"] == [MANIFEST_KEY, "zstd-chunked-layer-data"]
        assert not (skopeo_base / f"root/overlay-layers/{layer.id}.tar-split.gz").exists()
        # File for file: the same files, contents, modes, links and xattrs.  Go 1.43 leaves
        # owners and modification times alone (its TOC reader looks for "UID", "GID" and
        # "ModTime" where the writers put "uid", "gid" and "modtime"), so those are compared with
        # what a full pull makes instead.
        ours_tree = ours_base / "root/overlay" / layer.id / "diff"
        skopeo_tree = skopeo_base / "root/overlay" / layer.id / "diff"
        assert tree(ours_tree, mtimes=False, owners=False) == tree(skopeo_tree, mtimes=False, owners=False)
        assert tree(ours_tree) == _full_pull_tree(tmp_path / "full", tar)
        assert tree(skopeo_tree)["etc/owned"][1:3] == (0, 0)  # Go 1.43's: the tar says 1000:1001
        # And the tarball comes back from ours (Go 1.43 has no tar-split to give it).
        out = io.BytesIO()
        store.diff(layer.id, out)
        assert out.getvalue() == tar
    finally:
        close_store(store)
        _unmount(skopeo_base)


def test_skopeo_written_layer_we_pull_partially_with_insecure_option(registry: Registry,
                                                                     tmp_path: Path) -> None:
    """A layer skopeo 1.9.3 compressed (Go 1.43's zstd:chunked: old annotation names, no
    tar-split): current Go falls back to a full pull unless
    ``insecure_allow_unpredictable_image_contents`` is set, and so do we; with it, both pull it
    partially and the trees match."""
    files = file_contents(2, 24)
    tar = rootfs_tar(files)
    layout = tmp_path / "oci"
    _oci_layout(layout, tar)
    proc = subprocess.run([SKOPEO or "skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                           "--dest-compress-format", "zstd:chunked", "--dest-compress", f"oci:{layout}:v1",
                           f"docker://{registry.host}/skopeo-written:v1"], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    desc = registry.manifest("skopeo-written", "v1")["layers"][0]  # type: ignore[index]
    assert "io.containers.zstd-chunked.manifest-checksum" in desc["annotations"]
    assert not any(k.startswith("io.github.containers") for k in desc["annotations"])

    skopeo_base = tmp_path / "skopeo"
    _skopeo_pull(registry, "skopeo-written:v1", skopeo_base)
    (sk_layer,) = _skopeo_layers(skopeo_base)

    plain = _store(tmp_path / "plain", enable_partial_images="true")
    try:
        # Without the option: a full pull.  It is refused, and rightly: Go 1.43's writer drops
        # what follows the tarball's end-of-archive blocks (tarfile pads to 10 KiB records), so
        # the blob's tar is not the diff ID skopeo left in the config.  Nothing stays behind.
        with pytest.raises(DigestMismatch, match="config claims"):
            pull_image_layers(plain, registry.url, "skopeo-written", "v1")
        assert plain.layers() == []
        (full,) = pull_image_layers(plain, registry.url, "skopeo-written", "v1", diff_ids=False)
        assert not full.partial and "without tar-split" in full.fallback_reason
        assert tar.startswith(_diff(plain, full.layer.id))
    finally:
        close_store(plain)

    ours_base = tmp_path / "ours"
    store = _store(ours_base, enable_partial_images="true",
                   insecure_allow_unpredictable_image_contents="true")
    try:
        (result,) = pull_image_layers(store, registry.url, "skopeo-written", "v1", ids=[str(sk_layer["id"])])
        assert result.partial
        ours = store.layer(result.layer.id).raw
        assert ours["id"] == sk_layer["id"]
        assert ours["toc-digest"] == desc["annotations"]["io.containers.zstd-chunked.manifest-checksum"]
        assert not ours.get("diff-digest") and ours["diff-size"] == -1  # as Go records a TOC-only layer
        assert ours["flags"] == {"expected-layer-diffid": sha(tar)}  # c/image's flag for it
        assert store.layer_big_data(result.layer.id, MANIFEST_KEY) == (
            skopeo_base / "root/overlay-layers" / result.layer.id / _MANIFEST_FILE).read_bytes()
        ours_tree = ours_base / "root/overlay" / result.layer.id / "diff"
        assert tree(ours_tree, mtimes=False, owners=False) == tree(
            skopeo_base / "root/overlay" / result.layer.id / "diff", mtimes=False, owners=False)
        assert tree(ours_tree) == _full_pull_tree(tmp_path / "full", tar)
    finally:
        close_store(store)
        _unmount(skopeo_base)


def test_second_image_fetches_only_what_changed(registry: Registry, tmp_path: Path) -> None:
    """An image that shares most files with one in the store: at most 15% of its blob's bytes
    leave the registry, and the layer is the one a full pull makes."""
    files = file_contents(3, 80)
    tar1 = rootfs_tar(files)
    tar2 = rootfs_tar(changed_files(files, changed=3))
    blob1, w1 = _our_blob(tar1)
    blob2, w2 = _our_blob(tar2)
    registry.push_image("shared", "one", [(blob1, ZSTD_LAYER, w1.annotations)], [sha(tar1)])
    registry.push_image("shared", "two", [(blob2, ZSTD_LAYER, w2.annotations)], [sha(tar2)])

    store = _store(tmp_path / "ours", enable_partial_images="true")
    try:
        (first,) = pull_image_layers(store, registry.url, "shared", "one")
        assert first.partial
        mark = registry.mark()
        (second,) = pull_image_layers(store, registry.url, "shared", "two")
        assert second.partial
        served = registry.blob_bytes(sha(blob2), mark)
        assert registry.blob_requests(sha(blob2), mark) == 2
        assert served <= 0.15 * len(blob2), (served, len(blob2))
        out = io.BytesIO()
        store.diff(second.layer.id, out)
        assert out.getvalue() == tar2
        assert store.layer(second.layer.id).uncompressed_digest == sha(tar2)
        assert [layer.id for layer in store.layers_by_toc_digest(toc_digest(w2.annotations) or "")] == [
            second.layer.id]
    finally:
        close_store(store)


def test_go_reads_our_partial_layer(registry: Registry, tmp_path: Path) -> None:
    """Debian's Go CLI lists, exports and mounts a layer we pulled partially; a current Go's
    ``check`` finds nothing wrong (when one is installed)."""
    if GO_CLI is None:
        pytest.skip("Debian's containers-storage is not installed")
    # No whiteout: Go 1.63's own check fails on any overlay layer that has one ("scanning
    # contents of layer ...: archive/tar: FileInfo is nil", its import-layer's too).
    tar = rootfs_tar(file_contents(4, 20), whiteout=False)
    blob, written = _our_blob(tar)
    registry.push_image("readable", "v1", [(blob, ZSTD_LAYER, written.annotations)], [sha(tar)])
    base = tmp_path / "ours"
    store = _store(base, enable_partial_images="true")
    try:
        (result,) = pull_image_layers(store, registry.url, "readable", "v1")
        assert result.partial
    finally:
        close_store(store)
    flags = ["--graph", str(base / "root"), "--run", str(base / "run"), "--storage-driver", "overlay"]
    env = {"CONTAINERS_STORAGE_CONF": "/dev/null", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    listed = subprocess.run([GO_CLI, *flags, "layers", "--json"], capture_output=True, env=env, check=True)
    (layer,) = json.loads(listed.stdout)
    # (1.43 has no toc-digest field to print; current Go's does.)
    assert (layer["id"], layer["diff-digest"], layer["diff-size"]) == (result.layer.id, sha(tar), len(tar))
    exported = subprocess.run([GO_CLI, *flags, "diff", "-u", result.layer.id], capture_output=True, env=env,
                              check=True)
    assert exported.stdout == tar
    if GO_NEW is not None:
        checked = subprocess.run([GO_NEW, *flags, "check"], capture_output=True, env=env)
        assert checked.returncode == 0, checked.stderr.decode()
    subprocess.run([GO_CLI, *flags, "shutdown"], capture_output=True, env=env)
    _unmount(base)


def _diff(store: Store, layer: str) -> bytes:
    out = io.BytesIO()
    store.diff(layer, out, compression=0)
    return out.getvalue()


def _full_pull_tree(base: Path, tar: bytes) -> dict[str, tuple[object, ...]]:
    """The layer a plain tarball import makes (the truth a partial pull must equal)."""
    store = _store(base)
    try:
        layer = store.put_layer(io.BytesIO(tar)).layer
        return tree(base / "root/overlay" / layer.id / "diff")
    finally:
        close_store(store)


def _oci_layout(path: Path, tar: bytes) -> None:
    from imagetools import make_image, write_oci_layout

    write_oci_layout(path, make_image(tar), "v1")
