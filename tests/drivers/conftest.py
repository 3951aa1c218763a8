"""Fixtures for the driver conformance suite: real drivers on real mounts, and a leak check.

Every test gets a fresh graph root under ``tmp_path``; afterwards the driver is cleaned up and
``/proc/self/mountinfo`` must show nothing under ``tmp_path`` — a leaked mount fails the test
(and is then removed, so one failure does not cascade).
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from containers_storage.drivers import new_driver
from containers_storage.drivers.base import Driver, DriverOptions
from containers_storage.mountinfo import mount_points

FUSE_OVERLAYFS = shutil.which("fuse-overlayfs")
IS_ROOT = os.geteuid() == 0


def mounts_under(path: str) -> list[str]:
    prefix = os.path.realpath(path).rstrip("/") + "/"
    return [m for m in mount_points() if m.startswith(prefix) or m + "/" == prefix]


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


DriverFactory = Callable[..., Driver]


@pytest.fixture
def make_driver(request: pytest.FixtureRequest, no_leaked_mounts: str) -> Iterator[DriverFactory]:
    """Build drivers on the test's directory; each one is cleaned up after the test."""
    made: list[Driver] = []

    def factory(name: str, options: list[str] | None = None, root: str = "root",
                image_store: str = "") -> Driver:
        if name != "vfs" and not IS_ROOT:
            pytest.skip("overlay mounts need root")
        d = new_driver(name, DriverOptions(root=os.path.join(no_leaked_mounts, root),
                                           run_root=os.path.join(no_leaked_mounts, "run-" + root),
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
]


@pytest.fixture(params=DRIVER_PARAMS)
def driver(request: pytest.FixtureRequest, make_driver: DriverFactory) -> Driver:
    name, options = request.param
    return make_driver(name, options)


# -- tar helpers ---------------------------------------------------------------------------------
Entry = tuple[str, str, bytes | str]  # (name, kind, content or link target); kind: f d l h c


def make_tar(entries: list[Entry], mode: int = 0o644, mtime: int = 1_000_000) -> io.BytesIO:
    """A layer tarball: regular files, dirs, symlinks, hardlinks; names as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            data = b""
            if kind == "f":
                data = content if isinstance(content, bytes) else content.encode()
                info.size = len(data)
                info.mode = mode
            elif kind == "d":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "l":
                info.type = tarfile.SYMTYPE
                info.linkname = str(content)
                info.mode = 0o777
            elif kind == "h":
                info.type = tarfile.LNKTYPE
                info.linkname = str(content)
                info.mode = mode
            else:
                raise ValueError(kind)
            tf.addfile(info, io.BytesIO(data) if data else None)
    buf.seek(0)
    return buf


def read_tar(data: bytes) -> dict[str, tarfile.TarInfo | bytes]:
    """name (without ./ and trailing /) -> TarInfo, with file contents under "<name>#data"."""
    out: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        for member in tf:
            name = member.name.removeprefix("./").rstrip("/")
            out[name] = member
            if member.isreg():
                f = tf.extractfile(member)
                assert f is not None
                out[name + "#data"] = f.read()
    return out
