"""Fixtures for the driver conformance suite: real drivers on real mounts, and a leak check.

Every test gets a fresh graph root under ``tmp_path``; afterwards the driver is cleaned up and
``/proc/self/mountinfo`` must show nothing under ``tmp_path`` — a leaked mount fails the test
(and is then removed, so one failure does not cascade).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from containers_storage.drivers import new_driver
from containers_storage.drivers.base import Driver, DriverOptions
from drivertools import FUSE_OVERLAYFS, IS_ROOT, DriverFactory, mounts_under


def _force_unmount(paths: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for p in sorted(paths, key=len, reverse=True):
        libc.umount2(os.fsencode(p), 2)  # MNT_DETACH


@pytest.fixture
def no_leaked_mounts(tmp_path: Path) -> Iterator[str]:
    """Fail the test if anything stays mounted under its directory."""
    base = str(tmp_path)
    yield base
    leaked = mounts_under(base)
    if leaked:
        _force_unmount(leaked)
        pytest.fail(f"leaked mounts: {leaked}")




@pytest.fixture
def driver_base(no_leaked_mounts: str, on_loop_fs: Callable[[str], str]) -> Callable[[str], str]:
    """Where a driver's roots go: the test's directory, or for btrfs a fresh directory on the
    session's loop-mounted btrfs (checked for leaked mounts and removed after the test)."""
    made: dict[str, str] = {}

    def get(name: str) -> str:
        if name != "btrfs":
            return no_leaked_mounts
        if name not in made:
            made[name] = on_loop_fs("btrfs_mount")
        return made[name]

    return get


@pytest.fixture
def make_driver(request: pytest.FixtureRequest, driver_base: Callable[[str], str]) -> Iterator[DriverFactory]:
    """Build drivers on the test's directory; each one is cleaned up after the test."""
    made: list[Driver] = []

    def factory(name: str, options: list[str] | None = None, root: str = "root",
                image_store: str = "") -> Driver:
        if name != "vfs" and not IS_ROOT:
            pytest.skip(f"{name} needs root (mounts, subvolumes)")
        base = driver_base(name)
        d = new_driver(name, DriverOptions(root=os.path.join(base, root),
                                           run_root=os.path.join(base, "run-" + root),
                                           image_store=image_store, options=list(options or [])))
        made.append(d)
        return d

    yield factory
    for d in made:
        d.cleanup()


DRIVER_PARAMS = [
    pytest.param(("vfs", []), id="vfs"),
    pytest.param(("overlay", []), id="overlay"),
    pytest.param(("overlay", [f"overlay.mount_program={FUSE_OVERLAYFS}"]), id="overlay-fuse",
                 marks=pytest.mark.skipif(FUSE_OVERLAYFS is None, reason="fuse-overlayfs not installed")),
    pytest.param(("btrfs", []), id="btrfs"),  # on a loop-mounted btrfs; skips where none can be made
]


@pytest.fixture(params=DRIVER_PARAMS)
def driver(request: pytest.FixtureRequest, make_driver: DriverFactory) -> Driver:
    name, options = request.param
    return make_driver(name, options)
