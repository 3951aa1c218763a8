"""Loop-mounted file systems for the tests that need one (btrfs, XFS): made once per session
(per xdist worker) from a sparse file, removed at the end even when tests fail.

Each fixture skips, saying why, where it cannot work: not root, the mkfs tool missing, no loop
devices, the kernel lacking the file system or the mount options (a kernel built without
CONFIG_XFS_QUOTA refuses ``prjquota``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator

import pytest

from containers_storage.mountinfo import mount_points

MNT_DETACH = 2


def _kernel_has(fstype: str) -> bool:
    try:
        with open("/proc/filesystems", encoding="utf-8") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return False


def _unmount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    prefix = path.rstrip("/") + "/"
    for mp in sorted((m for m in mount_points() if m.startswith(prefix)), key=len, reverse=True):
        libc.umount2(os.fsencode(mp), MNT_DETACH)
    for _ in range(10):  # stacked mounts: one at a time
        if path not in mount_points():
            break
        if libc.umount2(os.fsencode(path), 0) != 0:
            libc.umount2(os.fsencode(path), MNT_DETACH)


def why_no_loop_fs(fstype: str) -> str:
    """Why a loop file system of this type cannot be made here ("" when it can)."""
    if os.geteuid() != 0:
        return "loop mounts need root"
    if shutil.which(f"mkfs.{fstype}") is None:
        package = {"btrfs": "btrfs-progs", "xfs": "xfsprogs"}.get(fstype, fstype)
        return f"mkfs.{fstype} not installed (Debian package {package}; scripts/setup.sh installs it)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control is missing)"
    if not _kernel_has(fstype):
        return f"the kernel has no {fstype} file system"
    return ""


@contextlib.contextmanager
def loop_fs(fstype: str, size: int, mount_options: str = "",
            mkfs_args: tuple[str, ...] = ()) -> Iterator[str]:
    """A fresh ``fstype`` file system of ``size`` bytes mounted on a new directory; skips when
    it cannot be made or mounted."""
    reason = why_no_loop_fs(fstype)
    if reason:
        pytest.skip(reason)
    work = tempfile.mkdtemp(prefix=f"cs-{fstype}-")
    image = os.path.join(work, "fs.img")
    mountpoint = os.path.join(work, "mnt")
    os.mkdir(mountpoint)
    try:
        with open(image, "wb") as f:
            f.truncate(size)
        mkfs = subprocess.run([f"mkfs.{fstype}", "-q", *mkfs_args, image], capture_output=True, text=True)
        if mkfs.returncode != 0:
            pytest.skip(f"mkfs.{fstype} failed: {mkfs.stderr.strip()}")
        options = ",".join(o for o in ("loop", mount_options) if o)
        mount = subprocess.run(["mount", "-t", fstype, "-o", options, image, mountpoint],
                               capture_output=True, text=True)
        if mount.returncode != 0:
            hint = ""
            if "quota" in mount_options:
                hint = " (a kernel without quota support for it, e.g. no CONFIG_XFS_QUOTA, refuses this)"
            first = (mount.stderr.strip().splitlines() or [""])[0]
            pytest.skip(f"cannot mount {fstype} with -o {options}{hint}: {first}")
        try:
            yield mountpoint
        finally:
            _unmount(mountpoint)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fresh_dir(mountpoint: str) -> str:
    return tempfile.mkdtemp(dir=mountpoint, prefix="t-")


def remove_dir(path: str) -> list[str]:
    """Remove a test's directory on a loop file system; the mounts that were left under it."""
    prefix = os.path.realpath(path).rstrip("/") + "/"
    leaked = [m for m in mount_points() if m.startswith(prefix)]
    if leaked:
        _unmount(path)
    shutil.rmtree(path, ignore_errors=True)
    return leaked


@pytest.fixture(scope="session")
def btrfs_mount() -> Iterator[str]:
    """A btrfs file system for the session (subvolumes, snapshots, qgroups, reflinks)."""
    with loop_fs("btrfs", 512 << 20) as mountpoint:
        yield mountpoint


@pytest.fixture(scope="session")
def xfs_mount() -> Iterator[str]:
    """An XFS file system without quotas (reflinks, project IDs)."""
    with loop_fs("xfs", 320 << 20) as mountpoint:
        yield mountpoint


@pytest.fixture(scope="session")
def xfs_pquota_mount() -> Iterator[str]:
    """An XFS file system mounted with project quotas (what overlay's size/inodes need)."""
    with loop_fs("xfs", 320 << 20, "prjquota") as mountpoint:
        yield mountpoint


@pytest.fixture
def on_loop_fs(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """``get(fixture_name)``: a fresh directory on that session file system, removed after the
    test; a mount left under it fails the test."""
    made: list[str] = []

    def get(name: str) -> str:
        made.append(fresh_dir(request.getfixturevalue(name)))
        return made[-1]

    yield get
    leaked: list[str] = []
    for path in made:
        leaked += remove_dir(path)
    if leaked:
        pytest.fail(f"leaked mounts: {leaked}")
