"""Images moved by skopeo (Go's containers/image) into and out of a store we share with it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from containers_storage.config import StoreOptions
from containers_storage.store import get_store

SKOPEO = shutil.which("skopeo")
pytestmark = [pytest.mark.compat, pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("etc/greeting", b"hello from skopeo\n"), ("bin/tool", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin") else 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _oci_layout(path: Path, layer_tar: bytes) -> tuple[bytes, bytes, bytes]:
    """An OCI image layout with one gzip layer; returns (layer blob, config, manifest)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    blob = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [_sha(layer_tar)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(blob),
                    "size": len(blob)}],
    }).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return blob, config, manifest


def _skopeo(*args: str) -> None:
    proc = subprocess.run([SKOPEO or "skopeo", "--insecure-policy", *args], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def test_we_read_an_image_skopeo_stored(tmp_path: Path) -> None:
    root, run = str(tmp_path / "root"), str(tmp_path / "run")
    layer_tar = _layer_tar()
    blob, config, manifest = _oci_layout(tmp_path / "oci", layer_tar)
    _skopeo("copy", f"oci:{tmp_path / 'oci'}:v1", f"containers-storage:[vfs@{root}+{run}]example.com/demo:v1")

    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    try:
        image = store.image("example.com/demo:v1")
        assert image.id == _sha(config).split(":")[1]
        assert store.image_big_data(image.id, "manifest") == manifest
        assert store.image_big_data(image.id, _sha(config)) == config
        assert image.digest == _sha(manifest)
        layer = store.layer(image.top_layer)
        assert layer.uncompressed_digest == _sha(layer_tar)
        assert layer.compressed_digest == _sha(blob)
        out = io.BytesIO()
        store.diff("", layer.id, out, compression=0)
        assert out.getvalue() == layer_tar
        ctr = store.create_container("", ["c"], image.id)
        mnt = store.mount(ctr.id)
        with open(os.path.join(mnt, "etc", "greeting"), "rb") as f:
            assert f.read() == b"hello from skopeo\n"
        store.unmount(ctr.id)
    finally:
        store.free()


def test_skopeo_reads_an_image_we_stored(tmp_path: Path) -> None:
    root, run = str(tmp_path / "root"), str(tmp_path / "run")
    layer_tar = _layer_tar()
    blob, config, manifest = _oci_layout(tmp_path / "src", layer_tar)
    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    try:
        layer, _ = store.put_layer("", "", None, diff=io.BytesIO(blob))
        store.create_image(
            _sha(config).split(":")[1], ["example.com/ours:v1"], layer.id,
            big_data=[(_sha(config), config, ""), ("manifest-" + _sha(manifest), manifest, _sha(manifest)),
                      ("manifest", manifest, _sha(manifest))])
    finally:
        store.free()

    out = tmp_path / "out"
    _skopeo("copy", f"containers-storage:[vfs@{root}+{run}]example.com/ours:v1", f"oci:{out}:v1")
    index = json.loads((out / "index.json").read_text())
    man_digest = index["manifests"][0]["digest"].split(":")[1]
    got_manifest = json.loads((out / "blobs" / "sha256" / man_digest).read_bytes())
    layer_digest = got_manifest["layers"][0]["digest"].split(":")[1]
    layer_blob = (out / "blobs" / "sha256" / layer_digest).read_bytes()
    if layer_blob[:2] == b"\x1f\x8b":
        layer_blob = gzip.decompress(layer_blob)
    assert layer_blob == layer_tar
    cfg_digest = got_manifest["config"]["digest"].split(":")[1]
    assert (out / "blobs" / "sha256" / cfg_digest).read_bytes() == config
