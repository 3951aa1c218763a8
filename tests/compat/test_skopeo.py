"""Images moved by skopeo (Go's containers/image) into and out of a store we share with it."""

from __future__ import annotations

import gzip
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
from imagetools import make_image, sha, write_oci_layout

SKOPEO = shutil.which("skopeo")
pytestmark = [pytest.mark.compat, pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")]


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
    image = make_image(layer_tar)
    write_oci_layout(path, image, "v1")
    return image.blob, image.config, image.manifest


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
        assert image.id == sha(config).split(":")[1]
        assert store.image_big_data(image.id, "manifest") == manifest
        assert store.image_big_data(image.id, sha(config)) == config
        assert image.digest == sha(manifest)
        layer = store.layer(image.top_layer)
        assert layer.uncompressed_digest == sha(layer_tar)
        assert layer.compressed_digest == sha(blob)
        out = io.BytesIO()
        store.diff(layer.id, out, compression=0)
        assert out.getvalue() == layer_tar
        ctr = store.create_container(image.id, names=["c"])
        mnt = store.mount(ctr.id)
        with open(os.path.join(mnt, "etc", "greeting"), "rb") as f:
            assert f.read() == b"hello from skopeo\n"
        store.unmount(ctr.id)
    finally:
        store.close()


def test_skopeo_reads_an_image_we_stored(tmp_path: Path) -> None:
    root, run = str(tmp_path / "root"), str(tmp_path / "run")
    layer_tar = _layer_tar()
    blob, config, manifest = _oci_layout(tmp_path / "src", layer_tar)
    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    try:
        layer = store.put_layer(io.BytesIO(blob)).layer
        store.create_image(
            layer.id, id=sha(config).split(":")[1], names=["example.com/ours:v1"],
            big_data=[(sha(config), config, ""), ("manifest-" + sha(manifest), manifest, sha(manifest)),
                      ("manifest", manifest, sha(manifest))])
    finally:
        store.close()

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
