"""Automatic user namespaces shared with podman (`--userns=auto`) on one store, as root.

Both take their IDs from the ranges the real /etc/subuid and /etc/subgid grant the user
"containers" (scripts/setup-rootless.sh adds podman's documented entry), and each must leave the
ranges of the other's containers alone.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers_storage.autouserns import AutoUserNsOptions
from containers_storage.config import StoreOptions
from containers_storage.idset import IDSet
from containers_storage.idtools import IDMap
from containers_storage.store import Store, get_store
from rootlesstools import subid_range
from storetools import close_store

PODMAN = shutil.which("podman")
RUNC = shutil.which("runc")
BUSYBOX = "/bin/busybox"


def _containers_ranges() -> tuple[tuple[int, int], tuple[int, int]] | None:
    try:
        return subid_range("/etc/subuid", "containers"), subid_range("/etc/subgid", "containers")
    except (LookupError, OSError):
        return None


RANGES = _containers_ranges()
pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(os.geteuid() != 0, reason="podman --userns=auto as root"),
    pytest.mark.skipif(PODMAN is None or RUNC is None, reason="podman and runc are not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed"),
    pytest.mark.skipif(RANGES is None, reason="/etc/subuid or /etc/subgid has no 'containers' entry: "
                       "run scripts/setup-rootless.sh as root"),
]

# The image's largest IDs: user 3000, group 3001 (Go sizes this 3001, we 3002; see autouserns).
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:3000:3001::/:/bin/sh\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\napp:x:3001:\n"


class Podman:
    def __init__(self, root: str, run: str, driver: str) -> None:
        self.args = [PODMAN or "podman", "--root", root, "--runroot", run, "--storage-driver", driver,
                     "--runtime", RUNC or "runc", "--cgroup-manager", "cgroupfs",
                     "--tmpdir", os.path.join(run, "libpod")]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.args, *args], capture_output=True, text=True, timeout=180)
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def create_auto(self, name: str, *extra: str) -> None:
        # The sandbox caps rlimits below podman's defaults, hence the explicit ulimits.
        self("create", "--network=none", f"--userns=auto{''.join(extra)}", "--name", name,
             "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
             "localhost/bb:latest", "/bin/busybox", "cat", "/proc/self/uid_map", "/proc/self/gid_map")


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for name, data in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(params=["vfs", "overlay"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Podman, Store]]:
    driver = request.param
    root = str(tmp_path / "root")
    short = tempfile.mkdtemp(prefix="pm")  # podman refuses run roots over 50 characters
    run = os.path.join(short, "run")
    podman = Podman(root, run, driver)
    tar = tmp_path / "bb.tar"
    tar.write_bytes(_rootfs_tar())
    podman("import", str(tar), "localhost/bb:latest")
    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name=driver))
    try:
        yield podman, store
    finally:
        close_store(store)
        podman("rm", "-af", check=False)
        podman("unmount", "--all", check=False)
        subprocess.run(["umount", "-R", os.path.join(root, "overlay")], capture_output=True)
        shutil.rmtree(short, ignore_errors=True)


def _records(store: Store) -> dict[str, dict[str, object]]:
    path = os.path.join(store.graph_root, f"{store.driver_name}-containers", "containers.json")
    with open(path) as f:
        return {c["names"][0]: c for c in json.load(f)}


def _hosts(maps: list[IDMap]) -> IDSet:
    return IDSet.of_host_ids(maps)


def test_podman_and_we_take_turns_without_overlap(setup: tuple[Podman, Store]) -> None:
    podman, store = setup
    assert RANGES is not None
    (uid_start, uid_len), (gid_start, gid_len) = RANGES

    podman.create_auto("p1")
    # What podman writes: container 0 at the start of the 'containers' range, sized from the
    # image's /etc/passwd and /etc/group; we read it as is.
    raw = _records(store)["p1"]
    p1 = store.container("p1")
    assert raw["uidmap"] == [m.to_json() for m in p1.uid_map]
    assert raw["gidmap"] == [m.to_json() for m in p1.gid_map]
    assert p1.uid_map[0][:2] == (0, uid_start) and p1.gid_map[0][:2] == (0, gid_start)
    assert sum(m.size for m in p1.uid_map) >= 3001

    ours = store.create_container("localhost/bb:latest", names=["ours"], auto_userns=AutoUserNsOptions())
    assert _hosts(ours.uid_map).isdisjoint(_hosts(p1.uid_map))
    assert _hosts(ours.gid_map).isdisjoint(_hosts(p1.gid_map))
    # First fit: right after podman's.
    p1_uid_end = max(m.host_id + m.size for m in p1.uid_map)
    p1_gid_end = max(m.host_id + m.size for m in p1.gid_map)
    assert ours.uid_map == [IDMap(0, p1_uid_end, 3002)]
    assert ours.gid_map == [IDMap(0, p1_gid_end, 3002)]
    assert _records(store)["ours"]["uidmap"] == [{"container_id": 0, "host_id": p1_uid_end,
                                                   "size": 3002}]

    # podman's next one sees ours and goes after it; so does one with an explicit size.
    podman.create_auto("p2")
    podman.create_auto("p3", ":size=500")
    p2, p3 = store.container("p2"), store.container("p3")
    assert p2.uid_map[0][:2] == (0, p1_uid_end + 3002)
    assert p3.uid_map == [IDMap(0, p2.uid_map[0].host_id + p2.uid_map[0].size, 500)]
    everyone = [p1, ours, p2, p3]
    for kind in ("uid_map", "gid_map"):
        sets = [_hosts(getattr(c, kind)) for c in everyone]
        union = IDSet()
        for s in sets:
            assert s.isdisjoint(union)
            union = union | s
        limit = (uid_start + uid_len) if kind == "uid_map" else (gid_start + gid_len)
        assert all(start >= (uid_start if kind == "uid_map" else gid_start) and end <= limit
                   for start, end in union)

    # podman runs its container with the maps it recorded, after ours.
    out = podman("start", "-a", "p2").stdout.split()
    assert out[:3] == ["0", str(p2.uid_map[0].host_id), str(p2.uid_map[0].size)]
    assert out[3:6] == ["0", str(p2.gid_map[0].host_id), str(p2.gid_map[0].size)]


def test_a_range_we_free_is_reused_by_podman(setup: tuple[Podman, Store]) -> None:
    podman, store = setup
    assert RANGES is not None
    uid_start = RANGES[0][0]
    ours = store.create_container("localhost/bb:latest", names=["ours"],
                                  auto_userns=AutoUserNsOptions(size=4000))
    podman.create_auto("p1")
    assert store.container("p1").uid_map[0].host_id == uid_start + 4000
    store.delete_container(ours.id)
    podman.create_auto("p2")
    p2 = store.container("p2")
    # podman's 3001 (or so) IDs fit where ours were.
    assert p2.uid_map[0].host_id == uid_start
    assert _hosts(p2.uid_map).isdisjoint(_hosts(store.container("p1").uid_map))
