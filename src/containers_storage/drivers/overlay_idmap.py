"""Kernel ID-mapped mounts, for overlay layers shifted to a container's IDs without re-owning files.

A lower directory is cloned with ``open_tree(OPEN_TREE_CLONE)``, the clone gets
``MOUNT_ATTR_IDMAP`` with a user namespace holding the container's maps, and is attached with
``move_mount``; overlay then reads the layer through that mount and shows host ID 0 as the map's
first host ID.  The user namespace comes from a forked child that unshares ``CLONE_NEWUSER`` and
whose ``uid_map``/``gid_map`` we write, as Go's ``createUsernsProcess`` does with clone(2).

Everything here loads ctypes, so it is imported only when a mapped mount is really made.
"""

from __future__ import annotations

import ctypes
import os
import signal

from .. import TYPE_CHECKING
from . import overlay_mount as om

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from ..idtools import IDMap

# The new mount API has the same syscall numbers on every architecture.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442

_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _libc() -> ctypes.CDLL:
    libc: ctypes.CDLL = om._lib()
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(rc: int, what: str, path: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} {path}: {os.strerror(err)}", path)
    return rc


def _format(maps: Sequence[IDMap]) -> bytes:
    return "".join(f"{m[0]} {m[1]} {m[2]}\n" for m in maps).encode()


class UserNamespace:
    """A user namespace with the given maps, held open by a child process until ``close``.

    ``fd`` is an open ``/proc/<pid>/ns/user``; the child is killed and reaped on close.
    """

    def __init__(self, uid_map: Sequence[IDMap], gid_map: Sequence[IDMap]) -> None:
        libc = _libc()
        ready_r, ready_w = os.pipe()
        hold_r, hold_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: a few system calls, then _exit; it never returns from here
            status = b"1"
            try:
                os.close(ready_r)
                os.close(hold_w)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if libc.unshare(_CLONE_NEWUSER) == 0:
                    status = b"0"
                os.write(ready_w, status)
                os.read(hold_r, 1)  # returns when the parent closes its end (or dies)
            finally:
                os._exit(0)
        self.fd = -1
        self._hold = hold_w
        os.close(ready_w)
        os.close(hold_r)
        try:
            try:
                status = os.read(ready_r, 1)
            finally:
                os.close(ready_r)
            if status != b"0":
                raise OSError(f"creating a user namespace for ID-mapped mounts failed ({status!r})")
            for name, maps in (("uid_map", uid_map), ("gid_map", gid_map)):
                with open(f"/proc/{self.pid}/{name}", "wb", buffering=0) as f:
                    f.write(_format(maps))
            self.fd = os.open(f"/proc/{self.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._hold >= 0:
            os.close(self._hold)  # the child's read returns and it exits
            self._hold = -1
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)

    def __enter__(self) -> UserNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_idmapped_mount(source: str, target: str, userns_fd: int) -> None:
    """Attach an ID-mapped clone of the mount at ``source`` on ``target`` (created 0700 if missing)."""
    libc = _libc()
    long = ctypes.c_long
    fd = _check(libc.syscall(long(_SYS_OPEN_TREE), long(_AT_FDCWD), os.fsencode(source),
                             long(_OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC)), "open_tree", source)
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(libc.syscall(long(_SYS_MOUNT_SETATTR), long(fd), b"", long(_AT_EMPTY_PATH | _AT_RECURSIVE),
                            ctypes.byref(attr), long(ctypes.sizeof(attr))), "mount_setattr", source)
        try:
            os.mkdir(target, 0o700)
        except FileExistsError:
            pass
        _check(libc.syscall(long(_SYS_MOVE_MOUNT), long(fd), b"", long(_AT_FDCWD), os.fsencode(target),
                            long(_MOVE_MOUNT_F_EMPTY_PATH)), "move_mount", target)
    finally:
        os.close(fd)


def mapped_mount_root(path: str, link_dir: str) -> str:
    """Which directory to clone for a lower (Go's getMappedMountRoot): the driver home for the
    ``l/<short>`` links, so one mapped mount serves every lower; else the lower's parent."""
    parent = os.path.dirname(path)
    if os.path.basename(parent) == link_dir:
        return os.path.dirname(parent)
    return parent


class MappedLowers:
    """ID-mapped mounts under ``<layer>/mapped/<n>`` standing in for a mount's lower dirs.

    ``lowers`` holds the rewritten paths; ``close`` detaches the mapped mounts, which the overlay
    mount made meanwhile keeps alive for as long as it exists (as Go does right after mounting).
    """

    def __init__(self, mapped_root: str, lowers: Sequence[str], link_dir: str,
                 uid_map: Sequence[IDMap], gid_map: Sequence[IDMap]) -> None:
        self.mounts: list[str] = []
        self.lowers: list[str] = []
        os.makedirs(mapped_root, mode=0o700, exist_ok=True)
        roots: dict[str, str] = {}
        try:
            with UserNamespace(uid_map, gid_map) as ns:
                for lower in lowers:
                    source = mapped_mount_root(lower, link_dir)
                    root = roots.get(source)
                    if root is None:
                        root = os.path.join(mapped_root, str(len(roots)))
                        try:
                            create_idmapped_mount(source, root, ns.fd)
                        except OSError as e:
                            raise OSError(e.errno, f'create mapped mount for "{source}" on "{root}": '
                                                   f"{e.strerror}") from e
                        roots[source] = root
                        self.mounts.append(root)
                    self.lowers.append(os.path.join(root, os.path.relpath(lower, source)))
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[str]:
        return iter(self.lowers)

    def close(self) -> None:
        for root in self.mounts:
            try:
                om.umount(root, om.MNT_DETACH)
            except OSError:
                pass
        self.mounts = []


def supports_idmapped_lower_layers(home: str) -> bool:
    """Whether overlay mounts over an ID-mapped lower dir here (Go's supportsIdmappedLowerLayers).

    Raises OSError with the reason when it does not.
    """
    import tempfile  # probes run once per run root

    from ..fsutil import rmtree

    td = tempfile.mkdtemp(prefix="compat", dir=home)
    lower, mapped = os.path.join(td, "lower"), os.path.join(td, "lower-mapped")
    merged = os.path.join(td, "merged")
    try:
        for d in ("merged", "lower", "lower-mapped", "upper", "work"):
            os.makedirs(os.path.join(td, d), mode=0o700, exist_ok=True)
        from ..idtools import IDMap

        identity = [IDMap(0, 0, 1)]
        with UserNamespace(identity, identity) as ns:
            create_idmapped_mount(lower, mapped, ns.fd)
        try:
            upper, work = os.path.join(td, "upper"), os.path.join(td, "work")
            data = f"lowerdir={mapped},upperdir={upper},workdir={work}"
            om.mount("overlay", merged, "overlay", 0, data)
            om.umount(merged, om.MNT_DETACH)
        finally:
            om.umount(mapped, om.MNT_DETACH)
        return True
    finally:
        rmtree(td, ignore_errors=True)
