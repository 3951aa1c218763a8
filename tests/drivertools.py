"""Helpers for the driver tests: tarballs, mount checks (kept out of conftest.py so tests can
import them by a name no other test directory uses)."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable

from containers_storage.drivers.base import Driver
from containers_storage.mountinfo import mount_points

TYPE_CHECKING = False
if TYPE_CHECKING:
    from containers_storage.drivers.overlay import OverlayDriver

FUSE_OVERLAYFS = shutil.which("fuse-overlayfs")
IS_ROOT = os.geteuid() == 0
DriverFactory = Callable[..., Driver]


def mounts_under(path: str) -> list[str]:
    prefix = os.path.realpath(path).rstrip("/") + "/"
    return [m for m in mount_points() if m.startswith(prefix) or m + "/" == prefix]



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


def deep_chain(d: OverlayDriver, depth: int) -> str:
    """``depth`` layers on top of each other, layer i adding a file named "i"; the top's ID."""
    parent = ""
    for i in range(depth):
        id = f"{i:064d}"
        d.create(id, parent, None, False)
        with open(os.path.join(d.diff_root(id), str(i)), "w"):
            pass
        parent = id
    return parent

