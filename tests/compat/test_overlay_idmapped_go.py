"""Overlay containers with ID maps shared with the Go CLI where the kernel can ID-map overlay's
lower dirs: neither side makes a re-owned copy of the image, each mounts the other's container
with the lower layers ID-mapped (same ``mapped/<n>`` paths), and both share the cached probe."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator

import pytest

from containers_storage.config import StoreOptions
from containers_storage.drivers.overlay import OverlayDriver
from containers_storage.idtools import IDMap
from containers_storage.store import get_store
from gocli import GO_CLI, go_cli

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="overlay and ID-mapped mounts need root"),
]

OURS = shutil.which("containers-storage", path=os.path.dirname(sys.executable))
HOST = 100000
MAP = f"0:{HOST}:65536"
M = [IDMap(0, HOST, 65536)]



@pytest.fixture(autouse=True)
def _no_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the off switch nor the test-only force switch from the caller's environment."""
    monkeypatch.delenv("_CONTAINERS_OVERLAY_DISABLE_IDMAP", raising=False)
    monkeypatch.delenv("_TEST_FORCE_SUPPORT_SHIFTING", raising=False)

def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, uid in (("etc", 0), ("etc/rootfile", 0), ("home", 1000), ("home/user", 1000)):
            info = tarfile.TarInfo(name)
            info.uid = info.gid = uid
            info.mtime = 1_000_000
            if name in ("etc", "home"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = 1, 0o644
                tf.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


def _ours(root: str, run: str, *args: str) -> str:
    assert OURS is not None
    proc = subprocess.run([OURS, "--graph", root, "--run", run, "--storage-driver", "overlay", *args],
                          capture_output=True, env={**os.environ, "STORAGE_OPTS": ""})
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    return proc.stdout.decode().strip()


def _go(root: str, run: str, *args: str) -> str:
    return go_cli(root, run, *args, driver="overlay").stdout.decode().strip()


def _assert_shifted(mount: Callable[..., str], unmount: Callable[..., str], root: str, run: str,
                    ctr: str) -> None:
    """Mounted by one CLI, the container shows the shifted owners; the other may unmount it."""
    mnt = mount(root, run, "mount", ctr)
    try:
        assert _owners(mnt) == SHIFTED
    finally:
        unmount(root, run, "unmount", ctr)


def _owners(mnt: str) -> dict[str, tuple[int, int]]:
    out = {}
    for name in ("etc/rootfile", "home/user"):
        st = os.lstat(os.path.join(mnt, name))
        out[name] = (st.st_uid, st.st_gid)
    return out


SHIFTED = {"etc/rootfile": (HOST, HOST), "home/user": (HOST + 1000, HOST + 1000)}


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if path in line]


@pytest.fixture
def dirs(tmp_path: str) -> Iterator[tuple[str, str]]:
    root, run = os.path.join(tmp_path, "root"), os.path.join(tmp_path, "run")
    s = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="overlay"))
    try:
        driver = s.driver
        assert isinstance(driver, OverlayDriver)
        supported = driver.supports_idmapped_mounts()
    finally:
        s.shutdown(force=True)
        s.close()
    if not supported:
        pytest.skip("the kernel or the backing file system cannot mount overlay over ID-mapped lower dirs")
    yield root, run
    go_cli(root, run, "shutdown", "-f", driver="overlay", check=False)


def _image(root: str, run: str, cli: str) -> str:
    run_cli = _go if cli == "go" else _ours
    path = os.path.join(root, "..", "layer.tar")
    with open(path, "wb") as f:
        f.write(_tar())
    top = run_cli(root, run, "import-layer", "-f", path).split()[0]
    run_cli(root, run, "create-image", "-n", "img", top)
    return top


def test_probe_record_is_shared(dirs: tuple[str, str]) -> None:
    root, run = dirs
    cache = os.path.join(run, "overlay")
    assert "idmapped-lower-dir-true" in os.listdir(cache)  # our probe, under Go's record name
    # Go trusts the record: told "no", it re-owns a copy of the image instead of shifting.
    os.rename(os.path.join(cache, "idmapped-lower-dir-true"), os.path.join(cache, "idmapped-lower-dir-false"))
    _image(root, run, "ours")
    _go(root, run, "create-container", "--uidmap", MAP, "--gidmap", MAP, "img")
    (img,) = json.loads(_go(root, run, "image", "--json", "img"))
    assert len(img["mapped-layers"]) == 1
    assert "idmapped-lower-dir-true" not in os.listdir(cache)


def test_we_mount_a_container_go_made_with_maps(dirs: tuple[str, str]) -> None:
    root, run = dirs
    top = _image(root, run, "go")
    ctr = _go(root, run, "create-container", "--uidmap", MAP, "--gidmap", MAP, "img").split()[0]
    layers = {l["id"]: l for l in json.loads(_go(root, run, "layers", "--json"))}
    assert len(layers) == 2  # no re-owned copy of the image's layer
    (ctr_layer,) = [lid for lid in layers if lid != top]
    assert "uidmap" not in layers[ctr_layer] and "uidmap" not in layers[top]

    mnt = _ours(root, run, "mount", ctr)
    try:
        assert _owners(mnt) == SHIFTED
        assert f"{root}/overlay/{ctr_layer}/mapped/0/l/" in "".join(_mounts_under(mnt))
    finally:
        _ours(root, run, "unmount", ctr)
    assert _mounts_under(os.path.join(root, "overlay", ctr_layer)) == []
    unshifted = {"etc/rootfile": (0, 0), "home/user": (1000, 1000)}
    assert _owners(os.path.join(root, "overlay", top, "diff")) == unshifted
    # And Go still mounts it after us.
    _assert_shifted(_go, _go, root, run, ctr)
    _ours(root, run, "delete-container", ctr)
    assert not os.path.exists(os.path.join(root, "overlay", ctr_layer))


def test_go_mounts_a_container_we_made_with_maps(dirs: tuple[str, str]) -> None:
    root, run = dirs
    top = _image(root, run, "ours")
    ctr = _ours(root, run, "create-container", "--uidmap", MAP, "--gidmap", MAP, "img").split()[0]
    layers = {l["id"]: l for l in json.loads(_go(root, run, "layers", "--json"))}
    assert len(layers) == 2
    (img,) = json.loads(_go(root, run, "image", "--json", "img"))
    assert not img.get("mapped-layers")
    (ctr_layer,) = [lid for lid in layers if lid != top]

    _assert_shifted(_go, _ours, root, run, ctr)  # what Go mounted, we take down
    assert _mounts_under(os.path.join(root, "overlay", ctr_layer)) == []
    _assert_shifted(_ours, _ours, root, run, ctr)
    _go(root, run, "delete-container", ctr)
    assert not os.path.exists(os.path.join(root, "overlay", ctr_layer))
