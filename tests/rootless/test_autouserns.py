"""Automatic user namespaces for an unprivileged user: IDs 1..N of the user's own namespace.

The user's program enters its namespace (its own ID as 0, its /etc/subuid range as 1..65536),
and the store hands out ranges from 1..65536 there, around those rootless podman took.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from rootlesstools import User, kill_processes_under

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:3000:3001::/:/bin/sh\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\napp:x:3001:\n"

# Runs as the user: enter the namespace, open the store, create what argv[1] (JSON) asks for.
PROGRAM = r"""
import io, json, sys
from containers_storage.userns import enter_user_namespace
enter_user_namespace()
from containers_storage import errors
from containers_storage.autouserns import AutoUserNsOptions
from containers_storage.config import StoreOptions
from containers_storage.store import get_store

job = json.loads(sys.argv[1])
s = get_store(StoreOptions(graph_root=job["graph"], run_root=job["run"],
                           driver_name=job.get("driver", "vfs")))
out = {}
if job.get("layer_tar"):
    with open(job["layer_tar"], "rb") as f:
        layer = s.put_layer(f).layer
    s.create_image(layer.id, names=["localhost/bb:latest"])
for name, size in job["containers"]:
    try:
        c = s.create_container("localhost/bb:latest", names=[name],
                               auto_userns=AutoUserNsOptions(size=size))
        out[name] = {"uid": [list(m) for m in c.uid_map], "gid": [list(m) for m in c.gid_map],
                     "layer": c.layer}
    except errors.StorageError as e:
        out[name] = {"error": type(e).__name__ + ": " + str(e)}
s.close()
print(json.dumps(out))
"""


def _tar(with_busybox: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        if with_busybox:
            tar.add("/bin/busybox", arcname="bin/busybox")
        for name, data in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _give(user: User, path: Path, data: bytes) -> str:
    path.write_bytes(data)
    os.chown(path, user.uid, user.gid)
    return str(path)


def _ours(user: User, graph: Path, run: Path, containers: list[tuple[str, int]],
          layer_tar: str = "", driver: str = "vfs") -> dict[str, dict[str, object]]:
    job = {"graph": str(graph), "run": str(run), "containers": containers, "layer_tar": layer_tar,
           "driver": driver}
    result = user.run([_python(), "-c", PROGRAM, json.dumps(job)])
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _python() -> str:
    from rootlesstools import VENV_PYTHON

    return VENV_PYTHON


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_ranges_come_from_the_users_namespace(user: User, driver: str) -> None:
    assert user.subuid is not None and user.subuid[1] == 65536, "the test expects useradd's 65536"
    graph, run = user.home / "store", user.runtime_dir / "store"
    tar = _give(user, user.home / "layer.tar", _tar(with_busybox=False))
    # (Sizing reads /etc/passwd through a temporary mount: overlay mounts in the namespace too.)
    out = _ours(user, graph, run, [("c1", 0), ("c2", 10), ("rest", 65536 - 3002 - 10),
                                   ("one-more", 1)], layer_tar=tar, driver=driver)
    # Sized from the image's passwd/group (user 3000, group 3001), starting at ID 1: 0 is the
    # user itself, which no container gets.
    assert out["c1"]["uid"] == [[0, 1, 3002]] and out["c1"]["gid"] == [[0, 1, 3002]]
    assert out["c2"]["uid"] == [[0, 3003, 10]]
    # The rest of 1..65536, exactly, and then nothing.
    assert out["rest"]["uid"] == [[0, 3013, 65536 - 3012]]
    assert out["one-more"] == {"error": "NoAvailableIDs: not enough unused IDs in user namespace"}
    if driver == "vfs":
        # On the host the files sit at the subordinate IDs: namespace ID n is subuid start + n - 1.
        etc = graph / "vfs" / "dir" / str(out["c2"]["layer"]) / "etc" / "passwd"
        st = etc.stat()
        assert (st.st_uid, st.st_gid) == (user.host_id(3003), user.host_id(3003, "gid"))
    with open(graph / f"{driver}-containers" / "containers.json") as f:
        records = {c["names"][0]: c for c in json.load(f)}
    assert records["c2"]["uidmap"] == [{"container_id": 0, "host_id": 3003, "size": 10}]
    assert "one-more" not in records


@pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                    reason="podman and runc are not installed")
@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed")
def test_rootless_podman_and_we_share_the_namespace_ids(user: User) -> None:
    short = Path(tempfile.mkdtemp(prefix="pm"))  # podman refuses run roots over 50 characters
    try:
        os.chown(short, user.uid, user.gid)
        _with_podman(user, user.home / "store", short / "run")
    finally:
        # podman's pause process (started with this test's HOME): by PID, nothing else.
        kill_processes_under(user.home.parent)
        subprocess.run(["rm", "-rf", "--one-file-system", str(short)], check=False)


def _with_podman(user: User, graph: Path, run: Path) -> None:
    store_args = ["--root", str(graph), "--runroot", str(run), "--storage-driver", "vfs",
                  "--cgroup-manager", "cgroupfs"]
    tar = _give(user, user.home / "bb.tar", _tar(with_busybox=True))
    user.podman(*store_args, "import", tar, "localhost/bb:latest")

    def podman_auto(name: str) -> list[int]:
        user.podman(*store_args, "create", "--network=none", "--userns=auto", "--name", name,
                    "localhost/bb:latest", "/bin/busybox", "true")
        with open(graph / "vfs-containers" / "containers.json") as f:
            record = next(c for c in json.load(f) if c["names"] == [name])
        assert record["uidmap"] == record["gidmap"]
        (m,) = record["uidmap"]
        return [m["container_id"], m["host_id"], m["size"]]

    p1 = podman_auto("p1")
    assert p1[:2] == [0, 1]  # rootless podman counts inside the namespace too
    ours = _ours(user, graph, run, [("ours", 0)])["ours"]
    assert ours["uid"] == [[0, 1 + p1[2], 3002]]
    p2 = podman_auto("p2")
    assert p2[1] == 1 + p1[2] + 3002  # podman saw ours and went after it
