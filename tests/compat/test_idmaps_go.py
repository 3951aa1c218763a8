"""ID-mapped layers shared with the Go CLI: Go reads (and mounts, diffs, deletes) the mapped layers
and mapped image top layers we make, we reuse the ones Go makes, and both re-own a child's files
the same way."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator

import pytest

from containers_storage.config import StoreOptions
from containers_storage.idtools import IDMap
from containers_storage.store import Store, get_store
from gocli import GO_CLI, go_cli

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="re-owning files needs root"),
]

HOST = 600000
MAP = f"0:{HOST}:65536"
M = [IDMap(0, HOST, 65536)]


def _tar() -> bytes:
    """Owners across the map, a hard link, a setuid file, a symlink pointing out of the layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, uid, mode, extra in (
            ("etc", "d", 0, 0o755, ""), ("etc/conf", "f", 2, 0o640, "conf"),
            ("bin", "d", 0, 0o755, ""), ("bin/su", "f", 0, 0o4755, "su"),
            ("home", "d", 1000, 0o2750, ""), ("home/a", "f", 1000, 0o600, "aaa"),
            ("home/b", "h", 1000, 0o600, "home/a"), ("out", "l", 5, 0o777, "/etc/passwd"),
        ):
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mode, info.mtime = uid, uid + 1 if uid else 0, mode, 1_000_000
            data = b""
            if kind == "f":
                data = extra.encode()
                info.size = len(data)
            elif kind == "d":
                info.type = tarfile.DIRTYPE
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            else:
                info.type, info.linkname = tarfile.SYMTYPE, extra
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _tree(root: str) -> dict[str, tuple[int, int, int, int, str]]:
    """path -> (uid, gid, mode, links, symlink target) for everything below ``root``."""
    paths = sorted(os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files)
    out: dict[str, tuple[int, int, int, int, str]] = {}
    inodes: dict[int, str] = {}
    for path in paths:
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            target = "=" + inodes.setdefault(st.st_ino, rel)  # which names share an inode
        out[rel] = (st.st_uid, st.st_gid, st.st_mode, st.st_nlink, target)
    return out


def _ids(out: bytes) -> str:
    return out.decode().split()[0]


@pytest.fixture
def dirs(tmp_path: str) -> Iterator[tuple[str, str]]:
    root, run = os.path.join(tmp_path, "root"), os.path.join(tmp_path, "run")
    yield root, run
    for driver in ("vfs", "overlay"):
        if os.path.isdir(os.path.join(root, driver)):
            go_cli(root, run, "shutdown", "-f", driver=driver, check=False)


def _open(root: str, run: str, driver: str) -> Store:
    return get_store(StoreOptions(graph_root=root, run_root=run, driver_name=driver))


def test_go_and_we_reown_a_child_alike(tmp_path: str) -> None:
    trees = []
    records = []
    for who in ("go", "ours"):
        root, run = os.path.join(tmp_path, who, "root"), os.path.join(tmp_path, who, "run")
        if who == "go":
            base = _ids(go_cli(root, run, "import-layer", input=_tar()).stdout)
            child = _ids(go_cli(root, run, "create-layer", "--uidmap", MAP, "--gidmap", MAP, base).stdout)
        else:
            s = _open(root, run, "vfs")
            try:
                base = s.put_layer(io.BytesIO(_tar())).layer.id
                child = s.create_layer(parent=base, uid_map=M, gid_map=M).id
            finally:
                s.close()
        trees.append(_tree(os.path.join(root, "vfs", "dir", child)))
        with open(os.path.join(root, "vfs-layers", "layers.json")) as f:
            rec = next(r for r in json.load(f) if r["id"] == child)
        records.append({k: v for k, v in rec.items() if k not in ("id", "parent", "created")})
        go_cli(root, run, "shutdown", "-f", check=False)
    assert trees[0] == trees[1]
    assert trees[1]["home/a"][:2] == (HOST + 1000, HOST + 1001)
    assert trees[1]["bin/su"][2] & 0o7777 == 0o4755
    assert records[0] == records[1]


def test_we_reuse_the_mapped_top_layer_go_made(dirs: tuple[str, str]) -> None:
    root, run = dirs
    top = _ids(go_cli(root, run, "import-layer", input=_tar()).stdout)
    go_cli(root, run, "create-image", "-n", "img", top)
    go_ctr = _ids(go_cli(root, run, "create-container", "--uidmap", MAP, "--gidmap", MAP, "img").stdout)
    s = _open(root, run, "vfs")
    try:
        (mapped,) = s.image("img").mapped_top_layers
        assert s.layer(s.container(go_ctr).layer).parent == mapped
        ours = s.create_container("img", uid_map=M, gid_map=M)
        assert s.image("img").mapped_top_layers == [mapped]
        assert s.layer(ours.layer).parent == mapped
        mnt = s.mount(ours.id)
        try:
            st = os.lstat(os.path.join(mnt, "home", "b"))
            assert (st.st_uid, st.st_gid, st.st_nlink) == (HOST + 1000, HOST + 1001, 2)
        finally:
            s.unmount(ours.id)
    finally:
        s.close()


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_go_uses_our_mapped_layers(dirs: tuple[str, str], driver: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Our overlay re-owns copies only when it cannot shift (test_overlay_idmapped_go.py has the
    # shifting case); Go 1.43 does not know this switch, so it still reads the copies we made.
    monkeypatch.setenv("_CONTAINERS_OVERLAY_DISABLE_IDMAP", "yes")
    root, run = dirs
    s = _open(root, run, driver)
    try:
        top = s.put_layer(io.BytesIO(_tar())).layer
        image = s.create_image(top.id, names=["img"])
        ctr = s.create_container(image.id, names=["c"], uid_map=M, gid_map=M)
        (mapped,) = s.image(image.id).mapped_top_layers
        ours = {l.id: l.raw for l in s.layers()}
        our_diff = io.BytesIO()
        s.diff(mapped, our_diff)
    finally:
        s.close()

    layers = {l["id"]: l for l in json.loads(go_cli(root, run, "layers", "--json", driver=driver).stdout)}
    for lid in (mapped, ctr.layer):
        assert layers[lid]["uidmap"] == layers[lid]["gidmap"] == ours[lid]["uidmap"]
    assert layers[mapped]["diff-digest"] == top.uncompressed_digest
    (img,) = json.loads(go_cli(root, run, "image", "--json", "img", driver=driver).stdout)
    assert img["mapped-layers"] == [mapped]
    containers = json.loads(go_cli(root, run, "containers", "--json", driver=driver).stdout)
    assert containers[0]["uidmap"] == ours[ctr.layer]["uidmap"]

    mnt = go_cli(root, run, "mount", mapped, driver=driver).stdout.decode().strip()
    try:
        tree = _tree(mnt)
        assert tree["home/a"][:2] == (HOST + 1000, HOST + 1001) and tree["home/b"][4] == "=home/a"
        assert tree["etc/conf"][:2] == (HOST + 2, HOST + 3)
    finally:
        go_cli(root, run, "unmount", mapped, driver=driver)
    go_diff = go_cli(root, run, "diff", "-u", mapped, driver=driver).stdout
    assert go_diff == our_diff.getvalue()

    go_cli(root, run, "delete-container", "c", driver=driver)
    go_cli(root, run, "delete-image", "img", driver=driver)
    assert go_cli(root, run, "layers", driver=driver).stdout == b""
