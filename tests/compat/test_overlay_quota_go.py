"""Overlay project quotas shared with Debian's Go CLI on loop-mounted XFS: the same refusal
(naming the same project ID, derived from the home's inode) where the file system has no
project quotas, and with them (a kernel with CONFIG_XFS_QUOTA) one sequence of project IDs:
each side's container layers take IDs above the other's, and limits hold whoever mounts."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from gocli import GO_CLI

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed"),
]

SCRIPT = shutil.which("containers-storage", path=os.path.dirname(sys.executable)) or "containers-storage"
XFS_IO = shutil.which("xfs_io")


def run(binary: str, base: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "--graph", os.path.join(base, "root"), "--run", os.path.join(base, "run"),
           "--storage-driver", "overlay", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "STORAGE_OPTS": ""})
    if check:
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}{proc.stdout}"
    return proc


def lsproj(path: str) -> int:
    if XFS_IO is None:
        pytest.skip("xfs_io (xfsprogs) not installed")
    out = subprocess.run([XFS_IO, "-c", "lsproj", path], capture_output=True, text=True, check=True).stdout
    return int(out.split("=")[1])


def test_same_refusal_without_project_quotas(on_loop_fs: Callable[[str], str]) -> None:
    base = on_loop_fs("xfs_mount")
    go = run(GO_CLI or "", base, "--storage-opt", "overlay.size=10M", "layers", check=False)
    ours = run(SCRIPT, base, "--storage-opt", "overlay.size=10M", "layers", check=False)
    assert go.returncode == ours.returncode == 1
    assert "Filesystem does not support Project Quota: failed to set quota limit for projid" in go.stdout
    assert ours.stdout == go.stdout
    for binary in (GO_CLI or "", SCRIPT):
        run(binary, base, "shutdown", check=False)


def test_one_sequence_of_project_ids_with_go(on_loop_fs: Callable[[str], str]) -> None:
    base = on_loop_fs("xfs_pquota_mount")
    home = os.path.join(base, "root", "overlay")
    size = ["--storage-opt", "overlay.size=8M"]
    layer = run(SCRIPT, base, *size, "create-layer").stdout.split()[0]
    image = run(SCRIPT, base, *size, "create-image", layer).stdout.split()[0]
    ours1 = run(SCRIPT, base, *size, "create-container", image).stdout.split()[0]
    go1 = run(GO_CLI or "", base, *size, "create-container", image).stdout.split()[0]
    ours2 = run(SCRIPT, base, *size, "create-container", image).stdout.split()[0]

    def projid(ctr: str) -> int:
        mp = run(SCRIPT, base, "mount", ctr).stdout.strip()
        run(SCRIPT, base, "unmount", ctr)
        return lsproj(os.path.dirname(mp))  # the layer dir: overlay/<id>/merged's parent

    ids = [projid(c) for c in (ours1, go1, ours2)]
    assert ids[0] > 0 and ids == [ids[0], ids[0] + 1, ids[0] + 2]
    assert lsproj(os.path.join(home, layer)) == 0
    # Go's container is limited under our mount, ours under Go's.
    for binary, ctr in ((SCRIPT, go1), (GO_CLI or "", ours1)):
        mp = run(binary, base, *size, "mount", ctr).stdout.strip()
        try:
            with pytest.raises(OSError) as e, open(os.path.join(mp, "big"), "wb") as f:
                for _ in range(32):
                    f.write(b"\x00" * (1 << 20))
                    f.flush()
                    os.fsync(f.fileno())
            assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
        finally:
            run(binary, base, "unmount", ctr)
    run(SCRIPT, base, "wipe")
    run(SCRIPT, base, "shutdown")
