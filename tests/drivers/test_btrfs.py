"""The btrfs driver on loop-mounted btrfs: Go's layout (subvolumes and snapshots the kernel and
btrfs-progs see as such), removal of subvolumes a container made inside its layer, qgroup
limits that stop writes, and Go's texts for what it refuses.  The conformance suite
(test_conformance.py) runs on it too."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from containers_storage.drivers import new_driver
from containers_storage.drivers.base import CreateOpts, Driver, DriverOptions, DriverUnsupported, MountOpts
from containers_storage.drivers.btrfs import BtrfsDriver, human_size, is_subvolume
from containers_storage.errors import DriverError
from loopfs import loop_fs, remove_dir

BTRFS = shutil.which("btrfs")
QuotaFactory = Callable[..., BtrfsDriver]
DriverFactory = Callable[..., Driver]  # conftest's make_driver


def _btrfs(d: DriverFactory, options: list[str] | None = None) -> BtrfsDriver:
    driver = d("btrfs", options)
    assert isinstance(driver, BtrfsDriver)
    return driver


def _is_subvolume_to_progs(path: str) -> bool:
    """btrfs-progs' view, independent of our ioctl code."""
    if BTRFS is None:
        pytest.skip("btrfs-progs not installed")
    return subprocess.run([BTRFS, "subvolume", "show", path], capture_output=True).returncode == 0


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_layers_are_subvolumes_and_children_snapshots(make_driver: DriverFactory) -> None:
    d = _btrfs(make_driver)
    d.create("base", "", None, False)
    base = d.get("base", MountOpts())
    assert base == os.path.join(d.home, "subvolumes", "base")
    assert os.stat(base).st_mode & 0o7777 == 0o555  # Go's defaultPerms
    _write(os.path.join(base, "file"), b"from base")
    d.create("child", "base", None, True)
    child = d.get("child", MountOpts())
    assert is_subvolume(base) and is_subvolume(child)
    assert _is_subvolume_to_progs(base) and _is_subvolume_to_progs(child)
    with open(os.path.join(child, "file"), "rb") as f:
        assert f.read() == b"from base"
    _write(os.path.join(child, "file"), b"changed in child")
    with open(os.path.join(base, "file"), "rb") as f:
        assert f.read() == b"from base"  # a snapshot, not a shared tree
    assert sorted(d.list_layers()) == ["base", "child"]
    assert d.metadata("child") == {}


def test_remove_deletes_subvolumes_made_inside_a_layer(make_driver: DriverFactory) -> None:
    d = _btrfs(make_driver)
    d.create("ctr", "", None, True)
    path = d.get("ctr", MountOpts())
    from containers_storage.drivers.btrfs import subvol_create

    os.mkdir(os.path.join(path, "deep"))
    subvol_create(os.path.join(path, "deep"), "nested")
    _write(os.path.join(path, "deep", "nested", "f"), b"x")
    assert _is_subvolume_to_progs(os.path.join(path, "deep", "nested"))
    d.remove("ctr")
    assert not os.path.lexists(path)
    assert d.list_layers() == []
    with pytest.raises(FileNotFoundError):
        d.remove("ctr")


def test_get_refuses_mount_options_but_not_ro(make_driver: DriverFactory) -> None:
    d = _btrfs(make_driver)
    d.create("base", "", None, False)
    assert d.get("base", MountOpts(options=["ro"])) == d.diff_root("base")
    with pytest.raises(DriverError, match=r"^btrfs driver does not support mount options$"):
        d.get("base", MountOpts(options=["nodev"]))
    with pytest.raises(FileNotFoundError):
        d.get("missing", MountOpts())


@pytest.mark.parametrize(("option", "text"), [
    ("btrfs.mountopt=nodev", "btrfs driver does not support mount options"),
    ("btrfs.bogus=1", 'unknown option "bogus" ("btrfs.bogus=1")'),
    ("devicemapper.size=1", 'unknown driver "devicemapper" in option "devicemapper.size=1"'),
    ("btrfs.min_space=ten", "invalid size: 'ten'"),
])
def test_options_refused_with_go_texts(make_driver: DriverFactory, option: str, text: str) -> None:
    with pytest.raises(DriverError) as e:
        make_driver("btrfs", [option])
    assert str(e.value) == text


def test_options_of_other_drivers_are_skipped(make_driver: DriverFactory) -> None:
    d = _btrfs(make_driver, ["overlay.mountopt=nodev", "vfs.ignore_chown_errors=true"])
    assert d.min_space == 0 and d.size == 0


def test_not_on_btrfs_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(DriverUnsupported) as e:
        new_driver("btrfs", DriverOptions(root=os.path.join(tmp_path, "root"), run_root=str(tmp_path)))
    assert str(e.value) == (f'"{tmp_path}/root/btrfs" is not on a btrfs filesystem: '
                            "prerequisites for driver not satisfied (wrong filesystem?)")


def test_human_size_is_gos() -> None:
    assert human_size(0) == "0B"
    assert human_size(10 << 20) == "10.49MB"
    assert human_size(1000) == "1kB"
    assert human_size(123) == "123B"


# -- quotas: a file system of their own, since enabling them is file-system wide ---------------
@pytest.fixture(scope="module")
def quota_fs() -> Iterator[str]:
    with loop_fs("btrfs", 256 << 20) as mountpoint:
        yield mountpoint


@pytest.fixture
def quota_driver(quota_fs: str) -> Iterator[QuotaFactory]:
    base = os.path.join(quota_fs, "t")
    made: list[BtrfsDriver] = []

    def factory(options: list[str] | None = None) -> BtrfsDriver:
        roots = DriverOptions(root=os.path.join(base, "root"), run_root=os.path.join(base, "run"),
                              options=list(options or []))
        d = new_driver("btrfs", roots)
        assert isinstance(d, BtrfsDriver)
        made.append(d)
        return d

    yield factory
    for d in made:
        for id in d.list_layers():
            d.remove(id)
        d.cleanup()
    assert not remove_dir(base), "leaked mounts"


def _fill(path: str, total: int) -> None:
    """Write ``total`` bytes in 1 MiB chunks, flushing each to disk so the limit is checked."""
    chunk = b"\xa5" * (1 << 20)
    fd = os.open(os.path.join(path, "fill"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(total // len(chunk)):
            os.write(fd, chunk)
            os.fsync(fd)
    finally:
        os.close(fd)


def test_size_limits_a_container_layer(quota_driver: QuotaFactory) -> None:
    d = quota_driver()
    d.create("base", "", None, False)
    d.create("ctr", "base", CreateOpts(storage_opt={"size": "8M"}), True)
    with open(os.path.join(d.home, "quotas", "ctr")) as f:
        assert f.read() == str(8 << 20)  # Go's bookkeeping: the limit in bytes, decimal
    assert d.quota_enabled()
    path = d.get("ctr", MountOpts())
    with pytest.raises(OSError) as e:
        _fill(path, 32 << 20)
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
    # The image layer below has no limit.
    _fill(d.get("base", MountOpts()), 16 << 20)
    d.remove("ctr")
    assert not os.path.exists(os.path.join(d.home, "quotas", "ctr"))


def test_driver_size_is_the_default_for_container_layers_only(quota_driver: QuotaFactory) -> None:
    d = quota_driver(["btrfs.size=8M"])
    d.create("image-layer", "", None, False)
    d.create("ctr", "image-layer", None, True)
    assert not os.path.exists(os.path.join(d.home, "quotas", "image-layer"))
    with open(os.path.join(d.home, "quotas", "ctr")) as f:
        assert f.read() == str(8 << 20)
    with pytest.raises(OSError) as e:
        _fill(d.get("ctr", MountOpts()), 32 << 20)
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)


def test_min_space_refuses_smaller_limits(quota_driver: QuotaFactory) -> None:
    d = quota_driver(["btrfs.min_space=10M"])
    assert d.quota_enabled()  # Go enables quotas as soon as min_space is set
    with pytest.raises(DriverError) as e:
        d.create("ctr", "", CreateOpts(storage_opt={"size": "1M"}), True)
    assert str(e.value) == "btrfs: storage size cannot be less than 10.49MB"
    assert not d.exists("ctr")  # the refused layer's subvolume is gone again
    with pytest.raises(DriverError) as e:
        d.create("ctr", "", CreateOpts(storage_opt={"size": "8M", "foo": "bar"}), True)
    assert str(e.value) == 'unknown option foo (map["foo":"bar" "size":"8M"])'
