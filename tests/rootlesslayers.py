"""Layer tarballs and on-disk views for the rootless driver tests (test_drivers_*.py).

The tarballs are built here as root and handed to the unprivileged user in its home; the views
read a layer's directory as root, so they show the owners on the host.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

from rootlesstools import User

GO160 = shutil.which("go-cs-1.60") or ""
GO160_MISSING = "go-cs-1.60 (a Go 1.60 containers-storage CLI for local checks) is not installed"
DRIVERS = ("overlay", "vfs")

# (name, type, uid, gid, extra): files carry "hello\n"; devices take (major, minor) as extra.
Entry = tuple[str, str, int, int, object]


def tar_bytes(entries: Iterable[Entry], pax: dict[str, str] | None = None) -> bytes:
    """A PAX tar of ``entries`` (``pax`` records go on every regular file, which makes our
    apply take its Python path for them rather than the C loop's)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, uid, gid, extra in entries:
            ti = tarfile.TarInfo(name)
            ti.uid, ti.gid, ti.mtime = uid, gid, 1700000000
            data = None
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "file":
                content = extra if isinstance(extra, bytes) else b"hello\n"
                ti.mode, ti.size, data = 0o644, len(content), io.BytesIO(content)
                if pax:
                    ti.pax_headers = dict(pax)
            elif kind in ("chr", "blk"):
                ti.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
                assert isinstance(extra, tuple)
                ti.devmajor, ti.devminor = extra
                ti.mode = 0o666
            elif kind == "fifo":
                ti.type, ti.mode = tarfile.FIFOTYPE, 0o644
            elif kind == "whiteout":  # an AUFS-style whiteout: an empty file named .wh.<name>
                ti.mode = 0
            else:
                raise ValueError(kind)
            tf.addfile(ti, data)
    return buf.getvalue()


OWNERS = [("etc", "dir", 0, 0, None), ("etc/root-file", "file", 0, 0, None),
          ("home", "dir", 0, 0, None), ("home/user", "dir", 1000, 1000, None),
          ("home/user/file", "file", 1000, 1000, None), ("nobody", "file", 65534, 65534, None)]
BASE = [("a", "dir", 0, 0, None), ("a/x", "file", 0, 0, None), ("b", "file", 0, 0, None),
        ("c", "dir", 0, 0, None), ("c/y", "file", 0, 0, None)]
WHITEOUTS = [("a", "dir", 0, 0, None), ("a/.wh..wh..opq", "whiteout", 0, 0, None),
             ("a/new", "file", 0, 0, None), (".wh.b", "whiteout", 0, 0, None),
             ("c/.wh.y", "whiteout", 0, 0, None)]
DEVICES = [("dev", "dir", 0, 0, None), ("dev/null", "chr", 0, 0, (1, 3)),
           ("dev/sda", "blk", 0, 6, (8, 0)), ("dev/fifo", "fifo", 0, 0, None),
           ("dev/file", "file", 0, 0, None)]
TOO_BIG = [("ok", "file", 0, 0, None), ("toobig", "file", 70000, 70000, None)]


def give(user: User, name: str, data: bytes) -> str:
    """Write ``data`` to ``name`` in the user's home, owned by the user; its path."""
    path = user.home / name
    path.write_bytes(data)
    os.chown(path, user.uid, user.gid)
    return str(path)


def write_storage_conf(user: User, driver: str, *extra: str) -> None:
    """The user's ~/.config/containers/storage.conf: the driver and extra TOML lines (both tools'
    default paths stay in force, unlike with -s, which makes Go 1.60 forget them)."""
    conf = user.home / ".config" / "containers"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "storage.conf").write_text(
        "\n".join(['[storage]', f'driver = "{driver}"', *extra]) + "\n")
    for path in (user.home / ".config", conf, conf / "storage.conf"):
        os.chown(path, user.uid, user.gid)


def go160(user: User, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Go 1.60's CLI as the user (it enters the user namespace itself)."""
    return user.run([GO160, *args], **kw)  # type: ignore[arg-type]


def layer_path(user: User, driver: str, layer: str) -> Path:
    """Where the layer's own files are: overlay's diff/, vfs's directory."""
    if driver == "vfs":
        return user.graph_root / "vfs" / "dir" / layer
    return user.graph_root / "overlay" / layer / "diff"


def tree(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """path -> (kind, uid, gid, permission bits) of everything below ``root``, as the host sees
    it (kinds: d, f, l, c, b, p; a device's permission bits are its major:minor instead)."""
    out: dict[str, tuple[str, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            mode = st.st_mode
            kind = ("d" if stat.S_ISDIR(mode) else "l" if stat.S_ISLNK(mode) else
                    "c" if stat.S_ISCHR(mode) else "b" if stat.S_ISBLK(mode) else
                    "p" if stat.S_ISFIFO(mode) else "f")
            bits = (os.major(st.st_rdev) << 8 | os.minor(st.st_rdev) if kind in "cb"
                    else stat.S_IMODE(mode))
            out[os.path.relpath(full, root)] = (kind, st.st_uid, st.st_gid, bits)
    return out


def tar_members(data: bytes) -> list[tuple[str, int, int]]:
    """(name, uid, gid) of each member of an uncompressed tar."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return [(m.name, m.uid, m.gid) for m in tf.getmembers()]


def stdout_bytes(result: subprocess.CompletedProcess[str]) -> bytes:
    """The bytes a command wrote (User.run decodes them with surrogateescape: lossless)."""
    return result.stdout.encode("utf-8", "surrogateescape")


def strip_log_time(text: str) -> str:
    """logrus lines with their time field removed, to compare two runs' stderr."""
    import re

    return re.sub(r'^time="[^"]*" ', "", text, flags=re.M)


__all__ = ["BASE", "DEVICES", "DRIVERS", "GO160", "GO160_MISSING", "OWNERS", "TOO_BIG", "WHITEOUTS",
           "give", "go160", "layer_path", "stdout_bytes", "strip_log_time", "tar_bytes", "tar_members",
           "tree", "write_storage_conf"]
