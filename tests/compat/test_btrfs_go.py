"""btrfs stores shared with Debian's Go CLI (1.43) on a loop-mounted btrfs: each side lists,
mounts, exports (byte-identical tar-split diffs) and deletes what the other made; the layout,
the status lines and the quota bookkeeping (``btrfs/quotas/<id>``) are Go's."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator

import pytest

from containers_storage.drivers.btrfs import is_subvolume
from gocli import GO_CLI
from loopfs import loop_fs, remove_dir

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed"),
]

SCRIPT = shutil.which("containers-storage", path=os.path.dirname(sys.executable)) or "containers-storage"
BTRFS = shutil.which("btrfs")


class Side:
    """One CLI (ours or Go's) on the shared store."""

    def __init__(self, binary: str, base: str, options: tuple[str, ...] = ()) -> None:
        self.binary, self.base, self.options = binary, base, options

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        root, run = os.path.join(self.base, "root"), os.path.join(self.base, "run")
        cmd = [self.binary, "--graph", root, "--run", run, "--storage-driver", "btrfs",
               *[f"--storage-opt={o}" for o in self.options], *args]
        proc = subprocess.run(cmd, capture_output=True, env={**os.environ, "STORAGE_OPTS": ""})
        if check:
            assert proc.returncode == 0, f"{cmd}: {proc.stderr.decode()}{proc.stdout.decode()}"
        return proc

    def __call__(self, *args: str) -> str:
        """The first word of the output (an ID or a path)."""
        words = self.run(*args).stdout.decode().split()
        return words[0] if words else ""


@pytest.fixture
def sides(on_loop_fs: Callable[[str], str]) -> Iterator[tuple[Side, Side]]:
    base = on_loop_fs("btrfs_mount")
    ours, go = Side(SCRIPT, base), Side(GO_CLI or "", base)
    yield ours, go
    ours.run("shutdown", check=False)
    go.run("shutdown", check=False)


def _tar(path: str, entries: list[tuple[str, bytes | None]]) -> str:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tf.addfile(info, io.BytesIO(content))
    return path


BASE = [("etc", None), ("etc/a", b"A"), ("etc/gone", b"G"), ("dir", None), ("dir/old", b"O")]
TOP = [("etc", None), ("etc/.wh.gone", b""), ("etc/a", b"A2"), ("dir", None), ("dir/.wh..wh..opq", b""),
       ("dir/new", b"N")]
EXPECTED_TOP = {"etc": None, "etc/a": b"A2", "dir": None, "dir/new": b"N"}


def _files(root: str) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    out[rel] = f.read()
            else:
                out[rel] = None
    return out


def _build(side: Side, tmp: str) -> tuple[str, str, str, str]:
    base = side("create-layer")
    side("applydiff", "-f", _tar(os.path.join(tmp, "base.tar"), BASE), base)
    top = side("create-layer", base)
    side("applydiff", "-f", _tar(os.path.join(tmp, "top.tar"), TOP), top)
    image = side("create-image", top)
    ctr = side("create-container", image)
    mp = side("mount", ctr)
    with open(os.path.join(mp, "written"), "wb") as f:
        f.write(b"in the container")
    side("unmount", ctr)
    return base, top, image, ctr


@pytest.mark.parametrize("maker", ["ours", "go"])
def test_the_other_side_reads_mounts_exports_and_deletes(sides: tuple[Side, Side], tmp_path: str,
                                                         maker: str) -> None:
    ours, go = sides
    made_by, used_by = (ours, go) if maker == "ours" else (go, ours)
    base, top, image, ctr = _build(made_by, str(tmp_path))
    subvolumes = os.path.join(made_by.base, "root", "btrfs", "subvolumes")
    for id in (base, top):
        assert is_subvolume(os.path.join(subvolumes, id))
    assert {x["id"] for x in json.loads(used_by.run("layers", "--json").stdout)} >= {base, top}
    assert [x["id"] for x in json.loads(used_by.run("images", "--json").stdout)] == [image]
    (record,) = json.loads(used_by.run("containers", "--json").stdout)
    assert record["id"] == ctr
    mp = used_by("mount", top)
    try:
        assert mp == os.path.join(subvolumes, top)
        assert _files(mp) == EXPECTED_TOP
    finally:
        used_by("unmount", top)
    mp = used_by("mount", ctr)
    try:
        with open(os.path.join(mp, "written"), "rb") as f:
            assert f.read() == b"in the container"
    finally:
        used_by("unmount", ctr)
    assert used_by.run("diff", "-u", top).stdout == made_by.run("diff", "-u", top).stdout
    changes = used_by.run("changes", record["layer"]).stdout
    assert changes == made_by.run("changes", record["layer"]).stdout and b"written" in changes
    used_by.run("delete-container", ctr)
    used_by.run("delete-image", image)  # and with it the layers nothing else uses
    assert not json.loads(used_by.run("layers", "--json").stdout)  # [] from Go 1.43, null from newer
    assert os.listdir(subvolumes) == []
    if BTRFS is not None:
        listed = subprocess.run([BTRFS, "subvolume", "list", "-o", subvolumes], capture_output=True,
                                text=True)
        assert listed.returncode == 0 and listed.stdout == ""


def test_status_is_gos(sides: tuple[Side, Side]) -> None:
    ours, go = sides
    if not os.path.exists("/usr/include/btrfs/version.h"):
        pytest.skip("without libbtrfs-dev's version.h we print no build lines (Go prints its own)")
    assert ours.run("status").stderr == go.run("status").stderr


def test_refusals_are_gos(sides: tuple[Side, Side], tmp_path: str) -> None:
    ours, go = sides
    # (Unknown options: each Go version words them its own way; we follow the current one.)
    for args in (["--storage-opt=btrfs.mountopt=nodev", "layers"], ["mount", "nonexistent"]):
        g, o = go.run(*args, check=False), ours.run(*args, check=False)
        assert (o.returncode, o.stdout) == (g.returncode, g.stdout), args
    outside = Side(SCRIPT, str(tmp_path)).run("layers", check=False)
    go_outside = Side(GO_CLI or "", str(tmp_path)).run("layers", check=False)
    assert (outside.returncode, outside.stdout) == (go_outside.returncode, go_outside.stdout)
    assert b"is not on a btrfs filesystem" in outside.stdout


# -- quota bookkeeping: a file system of its own, since quotas are file-system wide ------------
@pytest.fixture(scope="module")
def quota_fs() -> Iterator[str]:
    with loop_fs("btrfs", 256 << 20) as mountpoint:
        yield mountpoint


def test_go_applies_the_limit_we_recorded(quota_fs: str) -> None:
    if BTRFS is None:
        pytest.skip("btrfs-progs not installed")
    base = os.path.join(quota_fs, "t")
    ours = Side(SCRIPT, base, ("btrfs.size=8M",))
    go = Side(GO_CLI or "", base)
    try:
        layer = ours("create-layer", "--readonly")  # btrfs.size is for writable layers
        ctr = ours("create-container", ours("create-image", layer))
        quotas = os.path.join(base, "root", "btrfs", "quotas")
        assert os.listdir(quotas) != [] and layer not in os.listdir(quotas)
        (ctr_layer,) = os.listdir(quotas)
        with open(os.path.join(quotas, ctr_layer)) as f:
            assert f.read() == str(8 << 20)
        path = os.path.join(base, "root", "btrfs", "subvolumes", ctr_layer)
        subprocess.run([BTRFS, "qgroup", "limit", "none", path], check=True, capture_output=True)
        mp = go("mount", ctr)  # Go's Get reads quotas/<id> and sets the limit again
        try:
            assert mp == path
            with pytest.raises(OSError) as e, open(os.path.join(mp, "big"), "wb") as f:
                for _ in range(32):
                    f.write(b"\x00" * (1 << 20))
                    f.flush()
                    os.fsync(f.fileno())
            assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
        finally:
            go("unmount", ctr)
        go.run("delete-container", ctr)
        assert ctr_layer not in os.listdir(quotas)  # Go removes our bookkeeping with the layer
    finally:
        ours.run("shutdown", check=False)
        go.run("shutdown", check=False)
        assert not remove_dir(base), "leaked mounts"
