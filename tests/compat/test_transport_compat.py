"""Images in and out beside containers/image: what skopeo and podman load and save.

- our load of an OCI layout equals skopeo's copy into a store, record for record (Go's CLI lists
  both: ``images --json``, ``layers --json`` and every big data item, creation times apart);
- skopeo reads what we save (same config digest and diff IDs), podman runs what we load;
- podman's docker archive loads into ours, ours into podman;
- a concurrent skopeo copy of the same image and our load both succeed, and each layer is
  applied once; our load waits for a layer's digest lock held by another process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from containers_storage import open_store
from containers_storage.transport import load, save
from imagetools import BUSYBOX, five_layer_tars, make_layered_image, sha, write_layout
from storetools import close_store

SKOPEO = shutil.which("skopeo")
PODMAN = shutil.which("podman")
RUNC = shutil.which("runc")
GO_CLI = "/usr/bin/containers-storage"
pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed"),
    pytest.mark.skipif(not os.path.exists(GO_CLI), reason="Debian's containers-storage is not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed"),
]
DRIVERS = ["vfs", "overlay"] if os.geteuid() == 0 else ["vfs"]
NAME = "example.com/five:v1"


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([SKOPEO or "skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def _go(root: str, run: str, driver: str, *args: str) -> str:
    proc = subprocess.run([GO_CLI, "--graph", root, "--run", run, "--storage-driver", driver, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _records(root: str, run: str, driver: str) -> tuple[object, object, dict[str, str]]:
    """Go's view of a store: images, layers (creation times out) and every image's big data."""
    images = json.loads(_go(root, run, driver, "images", "--json"))
    layers = json.loads(_go(root, run, driver, "layers", "--json"))
    for layer in layers:
        layer.pop("created", None)
    big: dict[str, str] = {}
    for image in images:
        for key in image.get("big-data-names") or []:
            big[f"{image['id']}/{key}"] = _go(root, run, driver, "get-image-data", image["id"], key)
    return images, layers, big


def _image() -> object:
    return make_layered_image(five_layer_tars(), {"Cmd": ["/bin/busybox", "cat", "/etc/greeting"]},
                              created="2024-05-06T07:08:09.5Z")


@pytest.mark.parametrize("driver", DRIVERS)
def test_our_load_equals_skopeos_record_for_record(tmp_path: Path, driver: str) -> None:
    image = _image()
    write_layout(tmp_path / "oci", [(image, "v1")])  # type: ignore[list-item]
    theirs = (str(tmp_path / "s-root"), str(tmp_path / "s-run"))
    _skopeo("copy", f"oci:{tmp_path / 'oci'}:v1",
            f"containers-storage:[{driver}@{theirs[0]}+{theirs[1]}]{NAME}")
    store = open_store(graph_root=tmp_path / "o-root", run_root=tmp_path / "o-run", driver=driver,
                       use_config=False)
    try:
        [loaded] = load(store, tmp_path / "oci", names=[NAME])
    finally:
        close_store(store)
    ours = _records(str(tmp_path / "o-root"), str(tmp_path / "o-run"), driver)
    expected = _records(*theirs, driver)
    assert ours == expected
    assert ours[0][0]["id"] == loaded.id  # type: ignore[index]


@pytest.mark.parametrize("fmt", ["oci-dir", "oci-archive", "docker-archive"])
def test_skopeo_reads_what_we_save_from_a_skopeo_stored_image(tmp_path: Path, fmt: str) -> None:
    image = _image()
    write_layout(tmp_path / "oci", [(image, "v1")])  # type: ignore[list-item]
    root, run = str(tmp_path / "root"), str(tmp_path / "run")
    _skopeo("copy", f"oci:{tmp_path / 'oci'}:v1", f"containers-storage:[vfs@{root}+{run}]{NAME}")
    store = open_store(graph_root=root, run_root=run, driver="vfs", use_config=False)
    out = tmp_path / ("out" if fmt == "oci-dir" else "out.tar")
    try:
        save(store, [NAME], out, format=fmt)
    finally:
        close_store(store)
    ref = {"oci-dir": f"oci:{out}:{NAME}", "oci-archive": f"oci-archive:{out}",
           "docker-archive": f"docker-archive:{out}"}[fmt]
    config = json.loads(_skopeo("inspect", "--config", ref).stdout)
    raw = json.loads(_skopeo("inspect", "--raw", ref).stdout)
    assert raw["config"]["digest"] == sha(image.config)  # type: ignore[attr-defined]
    assert config["rootfs"]["diff_ids"] == image.diff_ids  # type: ignore[attr-defined]
    # skopeo copies it back into a store as the same image
    again = (str(tmp_path / "r2"), str(tmp_path / "n2"))
    _skopeo("copy", ref, f"containers-storage:[vfs@{again[0]}+{again[1]}]example.com/back:1")
    assert json.loads(_go(*again, "vfs", "images", "--json"))[0]["id"] == image.id  # type: ignore[attr-defined]


def _podman(root: str, run: str, driver: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [PODMAN or "podman", "--root", root, "--runroot", run, "--storage-driver", driver,
           "--runtime", RUNC or "runc", "--cgroup-manager", "cgroupfs",
           "--tmpdir", os.path.join(run, "libpod"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


needs_podman = pytest.mark.skipif(PODMAN is None or RUNC is None, reason="podman and runc are not installed")


@needs_podman
@pytest.mark.parametrize("driver", DRIVERS)
def test_podman_runs_what_we_load(tmp_path: Path, driver: str) -> None:
    image = _image()
    write_layout(tmp_path / "oci", [(image, "five")])  # type: ignore[list-item]
    root = str(tmp_path / "root")
    short = tempfile.mkdtemp(prefix="pm")  # podman refuses run roots over 50 characters
    run = os.path.join(short, "run")
    try:
        result = subprocess.run([sys.executable, "-m", "containers_storage", "--graph", root, "--run", run,
                                 "--storage-driver", driver, "load", "-i", str(tmp_path / "oci")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "Loaded image: localhost/five:latest\n"
        proc = _podman(root, run, driver, "run", "--rm", "--net=none", "--ulimit", "nofile=1024:1024",
                       "--ulimit", "nproc=1024:1024", "localhost/five:latest")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "hello from layer three\n"
    finally:
        _podman(root, run, driver, "system", "reset", "-f")
        shutil.rmtree(short, ignore_errors=True)


@needs_podman
def test_podman_save_loads_here_and_our_docker_archive_loads_in_podman(tmp_path: Path) -> None:
    image = _image()
    write_layout(tmp_path / "oci", [(image, "five")])  # type: ignore[list-item]
    short = tempfile.mkdtemp(prefix="pm")
    p_root, p_run = str(tmp_path / "p-root"), os.path.join(short, "run")
    try:
        assert _podman(p_root, p_run, "vfs", "load", "-i", str(tmp_path / "oci")).returncode == 0
        # podman 4.3 names an image loaded from an OCI directory after the directory's path
        names = _podman(p_root, p_run, "vfs", "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        proc = _podman(p_root, p_run, "vfs", "save", "-o", str(tmp_path / "podman.tar"), names[0])
        assert proc.returncode == 0, proc.stderr
        store = open_store(graph_root=tmp_path / "root", run_root=tmp_path / "run", driver="vfs",
                           use_config=False)
        try:
            [loaded] = load(store, tmp_path / "podman.tar")
            assert loaded.id == image.id  # type: ignore[attr-defined]
            store.add_names(loaded.id, ["localhost/ours:1"])
            save(store, ["localhost/ours:1"], tmp_path / "ours.tar", format="docker-archive")
        finally:
            close_store(store)
        _podman(p_root, p_run, "vfs", "system", "reset", "-f")
        proc = _podman(p_root, p_run, "vfs", "load", "-i", str(tmp_path / "ours.tar"))
        assert proc.returncode == 0, proc.stderr
        assert "Loaded image: localhost/ours:1" in proc.stdout
        proc = _podman(p_root, p_run, "vfs", "run", "--rm", "--net=none", "--ulimit", "nofile=1024:1024",
                       "--ulimit", "nproc=1024:1024", "localhost/ours:1")
        assert proc.stdout == "hello from layer three\n", proc.stderr
    finally:
        _podman(p_root, p_run, "vfs", "system", "reset", "-f")
        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_concurrent_skopeo_copy_and_our_load_share_the_layers(tmp_path: Path, driver: str) -> None:
    image = _image()
    write_layout(tmp_path / "oci", [(image, "v1")])  # type: ignore[list-item]
    root, run = str(tmp_path / "root"), str(tmp_path / "run")
    store = open_store(graph_root=root, run_root=run, driver=driver, use_config=False)
    try:
        proc = subprocess.Popen([SKOPEO or "skopeo", "--insecure-policy", "copy", "-q",
                                 f"oci:{tmp_path / 'oci'}:v1",
                                 f"containers-storage:[{driver}@{root}+{run}]{NAME}"],
                                stderr=subprocess.PIPE, text=True)
        [loaded] = load(store, tmp_path / "oci", names=["example.com/ours:v1"])
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        layers = store.layers()
        assert len(layers) == 5 and len({l.id for l in layers}) == 5
        assert sorted(store.image(loaded.id).names) == sorted(["example.com/ours:v1", NAME])
    finally:
        close_store(store)


_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def test_our_load_waits_for_a_layers_digest_lock(tmp_path: Path) -> None:
    image = _image()
    write_layout(tmp_path / "oci", [(image, "v1")])  # type: ignore[list-item]
    store = open_store(graph_root=tmp_path / "root", run_root=tmp_path / "run", driver="vfs",
                       use_config=False)
    try:
        base = image.diff_ids[0]  # type: ignore[attr-defined]
        path = store.digest_lock(base).path
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        done = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                load(store, tmp_path / "oci")
            except BaseException as e:
                errors.append(e)
            done.set()

        thread = threading.Thread(target=run)
        thread.start()
        assert not done.wait(1.0)  # held elsewhere: the load waits before making the layer
        assert store.layers() == []
        holder.stdin.write("\n")
        holder.stdin.flush()
        thread.join(120)
        holder.wait(10)
        assert done.is_set() and not errors
        assert len(store.layers()) == 5
    finally:
        close_store(store)
