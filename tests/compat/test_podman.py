"""podman (through Go's containers/storage) runs an image that our library stored."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from containers_storage.config import StoreOptions
from containers_storage.store import get_store

PODMAN = shutil.which("podman")
RUNC = shutil.which("runc")
BUSYBOX = "/bin/busybox"
pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(PODMAN is None or RUNC is None, reason="podman and runc are not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed"),
]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _podman(root: str, run: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [PODMAN or "podman", "--root", root, "--runroot", run, "--storage-driver", "vfs",
           "--runtime", RUNC or "runc", "--cgroup-manager", "cgroupfs", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_podman_runs_an_image_we_stored(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    short = tempfile.mkdtemp(prefix="pm")  # podman refuses run roots over 50 characters
    run = os.path.join(short, "run")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
    layer_tar = buf.getvalue()
    blob = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "echo", "hello from our store"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer_tar)]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _sha(blob),
                    "size": len(blob)}],
    }).encode()
    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    try:
        layer, _ = store.put_layer("", "", None, diff=io.BytesIO(blob))
        image = store.create_image(
            _sha(config)[7:], ["localhost/ours:v1"], layer.id,
            big_data=[(_sha(config), config, ""), ("manifest-" + _sha(manifest), manifest, _sha(manifest)),
                      ("manifest", manifest, _sha(manifest))])
    finally:
        store.free()

    # The sandbox caps rlimits below podman's defaults, hence the explicit ulimits.
    proc = _podman(root, run, "run", "--name", "from-podman", "--net=none",
                   "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "localhost/ours:v1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello from our store"

    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    try:
        ctr = store.container("from-podman")
        assert ctr.image == image.id
        assert store.layer(ctr.layer).parent == layer.id
    finally:
        store.free()
    assert _podman(root, run, "rm", "from-podman").returncode == 0
    shutil.rmtree(short, ignore_errors=True)
