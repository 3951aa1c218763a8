"""Overlay's XFS project quotas (``size``/``inodes``): Go's project IDs, backingFsBlockDev and
texts, on loop-mounted XFS.

- With ``prjquota`` (xfs_pquota_mount): writing past a container's limit fails with EDQUOT or
  ENOSPC.  A kernel without CONFIG_XFS_QUOTA cannot mount that file system: those tests skip.
- Without quotas (xfs_mount): the refusal is Go's, naming the project ID Go derives from the
  home's inode; and with quotactl(2) answered by a stand-in, the project IDs our layers get (and
  that Go's findNextProjectID would read back) are checked with xfs_io, independently of us.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable

import pytest

from containers_storage.drivers import new_driver
from containers_storage.drivers import quota as quota_mod
from containers_storage.drivers.base import CreateOpts, DriverOptions, MountOpts
from containers_storage.drivers.overlay import OverlayDriver
from containers_storage.errors import DriverError

XFS_IO = shutil.which("xfs_io")
GO_FLOOR = 10000  # Go's projectIDsAllocatedPerQuotaHome


def _overlay(base: str, options: list[str] | None = None) -> OverlayDriver:
    d = new_driver("overlay", DriverOptions(root=os.path.join(base, "root"),
                                            run_root=os.path.join(base, "run"), options=list(options or [])))
    assert isinstance(d, OverlayDriver)
    return d


def go_floor_id(home: str) -> int:
    """The first project ID Go uses for a home without one of its own (generateUniqueProjectID)."""
    ino = os.stat(home).st_ino
    return GO_FLOOR + ((ino * GO_FLOOR) % 2**64) % (2**32 - 1 - GO_FLOOR)


def lsproj(path: str) -> int:
    """The project ID as xfs_io reads it."""
    if XFS_IO is None:
        pytest.skip("xfs_io (xfsprogs) not installed")
    out = subprocess.run([XFS_IO, "-c", "lsproj", path], capture_output=True, text=True, check=True).stdout
    return int(out.split("=")[1])


def xflags(path: str) -> str:
    if XFS_IO is None:
        pytest.skip("xfs_io (xfsprogs) not installed")
    out = subprocess.run([XFS_IO, "-c", "lsattr", path], capture_output=True, text=True, check=True).stdout
    return out.split()[0]


@pytest.fixture
def xfs_dir(on_loop_fs: Callable[[str], str]) -> str:
    return on_loop_fs("xfs_mount")


def test_without_project_quotas_a_size_is_refused_as_go_does(xfs_dir: str) -> None:
    home = os.path.join(xfs_dir, "root", "overlay")
    os.makedirs(home)
    with pytest.raises(DriverError) as e:
        _overlay(xfs_dir, ["overlay.size=10M"])
    dev = os.path.join(home, "backingFsBlockDev")
    assert str(e.value) == (
        "storage options overlay.size and overlay.inodes not supported. Filesystem does not support "
        f"Project Quota: failed to set quota limit for projid {go_floor_id(home)} on {dev}: "
        "function not implemented")
    # Go's device node of the home's file system, for quotactl(2).
    st = os.lstat(dev)
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.stat(home).st_dev and st.st_mode & 0o777 == 0o600


def test_without_project_quotas_the_driver_works_and_refuses_per_layer_sizes(xfs_dir: str) -> None:
    d = _overlay(xfs_dir)
    try:
        assert d.quota_ctl is None
        assert dict(d.status())["Backing Filesystem"] == "xfs"
        with pytest.raises(DriverError) as e:
            d.create("ctr", "", CreateOpts(storage_opt={"size": "10M"}), True)
        assert str(e.value) == ("--storage-opt is supported only for overlay over xfs with 'pquota' "
                                "mount option")
        d.create("ctr", "", None, True)
        assert lsproj(os.path.join(d.home, "ctr")) == 0
    finally:
        d.cleanup()


class FakeQuotactl:
    """quotactl(2) that succeeds and records (command, project ID, blocks, inodes)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, int]] = []

    def __call__(self, cmd: int, special: str, id: int, buf: bytearray) -> int:
        assert stat.S_ISBLK(os.stat(special).st_mode)
        projid, bhard, bsoft, ihard, isoft = struct.unpack_from("=bbHIQQQQ", buf)[3:]
        assert projid == id and bhard == bsoft and ihard == isoft
        self.calls.append((cmd, id, bhard, ihard))
        return 0


@pytest.fixture
def fake_quotactl(monkeypatch: pytest.MonkeyPatch) -> FakeQuotactl:
    fake = FakeQuotactl()
    monkeypatch.setattr(quota_mod, "_quotactl", fake)
    return fake


def test_container_layers_get_project_ids_as_go_assigns_them(xfs_dir: str,
                                                             fake_quotactl: FakeQuotactl) -> None:
    d = _overlay(xfs_dir, ["overlay.size=64M"])
    try:
        floor = go_floor_id(d.home)
        assert fake_quotactl.calls == [(quota_mod.Q_XSETPQLIM, floor, 0, 0)]  # Go's probe: no limits
        d.create("image-layer", "", None, False)
        d.create("ctr1", "image-layer", None, True)  # the driver's size
        d.create("ctr2", "image-layer", CreateOpts(storage_opt={"size": "1M", "inodes": "100"}), True)
        assert lsproj(os.path.join(d.home, "image-layer")) == 0  # read-only layers get none
        ctr1, ctr2 = os.path.join(d.home, "ctr1"), os.path.join(d.home, "ctr2")
        assert (lsproj(ctr1), lsproj(ctr2)) == (floor + 1, floor + 2)
        # Inherited by everything made inside the layer, so it is all charged to the project.
        assert "P" in xflags(ctr1) and lsproj(os.path.join(ctr1, "diff")) == floor + 1
        path = d.get("ctr1", MountOpts())
        try:
            with open(os.path.join(path, "written"), "w") as f:
                f.write("x")
        finally:
            d.put("ctr1")
        assert lsproj(os.path.join(ctr1, "diff", "written")) == floor + 1
        assert fake_quotactl.calls[1:] == [
            (quota_mod.Q_XSETPQLIM, floor + 1, (64 << 20) // 512, 0),
            (quota_mod.Q_XSETPQLIM, floor + 2, (1 << 20) // 512, 100),
        ]
        assert "P" not in xflags(d.home)  # Go strips the flag from the home itself
    finally:
        d.cleanup()
    # Another process (or Go's findNextProjectID) reads the IDs in use back from the layer dirs.
    d2 = _overlay(xfs_dir)
    try:
        assert d2.quota_ctl is not None
        d2.create("ctr3", "image-layer", None, True)
        assert lsproj(os.path.join(d2.home, "ctr3")) == floor + 3
        d2.remove("ctr2")
        assert d2.quota_ctl.project_id(ctr2) is None
    finally:
        d2.cleanup()


def test_storage_options_of_a_layer_are_checked(xfs_dir: str, fake_quotactl: FakeQuotactl) -> None:
    d = _overlay(xfs_dir)
    try:
        with pytest.raises(DriverError, match=r"^unknown option bogus$"):
            d.create("ctr", "", CreateOpts(storage_opt={"bogus": "1"}), True)
        with pytest.raises(DriverError, match=r"^--storage-opt size is only supported for ReadWrite Layers$"):
            d.create("ro", "", CreateOpts(storage_opt={"size": "1M"}), False)
    finally:
        d.cleanup()


# -- for real, where the kernel has XFS quotas ------------------------------------------------
@pytest.fixture
def pquota_dir(on_loop_fs: Callable[[str], str]) -> str:
    return on_loop_fs("xfs_pquota_mount")


def _fill(path: str, total: int) -> None:
    chunk = b"\x5a" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(total // len(chunk)):
            os.write(fd, chunk)
            os.fsync(fd)
    finally:
        os.close(fd)


def test_writing_past_the_limit_fails(pquota_dir: str) -> None:
    d = _overlay(pquota_dir, ["overlay.size=8M"])
    try:
        assert d.quota_ctl is not None
        d.create("image-layer", "", None, False)
        d.create("ctr", "image-layer", None, True)
        d.create("small", "image-layer", CreateOpts(storage_opt={"inodes": "5"}), True)
        path = d.get("ctr", MountOpts())
        try:
            with pytest.raises(OSError) as e:
                _fill(os.path.join(path, "big"), 32 << 20)
            assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
        finally:
            d.put("ctr")
        assert d.quota_ctl.get_quota(os.path.join(d.home, "ctr")).size == 8 << 20
        path = d.get("small", MountOpts())
        try:
            with pytest.raises(OSError) as e:
                for i in range(20):
                    open(os.path.join(path, f"f{i}"), "w").close()
            assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
        finally:
            d.put("small")
    finally:
        d.cleanup()
