"""podman (through Go's containers/storage) runs an image that our library stored."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from containers_storage.config import StoreOptions
from containers_storage.store import get_store
from imagetools import BUSYBOX, busybox_tar, make_image

PODMAN = shutil.which("podman")
RUNC = shutil.which("runc")
pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(PODMAN is None or RUNC is None, reason="podman and runc are not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed"),
]


def _podman(root: str, run: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [PODMAN or "podman", "--root", root, "--runroot", run, "--storage-driver", "vfs",
           "--runtime", RUNC or "runc", "--cgroup-manager", "cgroupfs",
           "--tmpdir", os.path.join(run, "libpod"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_podman_runs_an_image_we_stored(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    short = tempfile.mkdtemp(prefix="pm")  # podman refuses run roots over 50 characters
    run = os.path.join(short, "run")
    image = make_image(busybox_tar(), {"Cmd": ["/bin/busybox", "echo", "hello from our store"]})
    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    try:
        layer = store.put_layer(io.BytesIO(image.blob)).layer
        store.create_image(layer.id, id=image.id, names=["localhost/ours:v1"], big_data=image.big_data())
    finally:
        store.close()

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
        store.close()
    assert _podman(root, run, "rm", "from-podman").returncode == 0
    shutil.rmtree(short, ignore_errors=True)
