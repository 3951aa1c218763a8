"""mount(2), umount2(2) and statfs(2) through ctypes, and the overlay mount-data size dance.

The kernel copies at most one page of mount data, so a deep image (hundreds of lower layers)
cannot be mounted with absolute paths.  Like Go we first shorten the data to paths relative to the
driver home (``l/<26 chars>``) and, when even that is too long, to numbers of open directory fds
resolved from ``/proc/self/fd``.  Go re-executes itself to get a private working directory; we do
the same in a short-lived thread that calls ``unshare(CLONE_FS)``, so the chdir never touches the
rest of the process.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from .. import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..mountinfo import MountEntry

# mount(2) flags (linux/mount.h)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

MNT_DETACH = 0x2
CLONE_FS = 0x200

FS_MAGIC_OVERLAY = 0x794C7630
FS_MAGIC_FUSE = 0x65735546

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Go's pkg/mount flag table: option -> (clears, flag); everything else is file system data.
_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, MS_RDONLY), "rw": (True, MS_RDONLY),
    "suid": (True, MS_NOSUID), "nosuid": (False, MS_NOSUID),
    "dev": (True, MS_NODEV), "nodev": (False, MS_NODEV),
    "exec": (True, MS_NOEXEC), "noexec": (False, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS), "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC), "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK), "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME), "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME), "nodiratime": (False, MS_NODIRATIME),
    "bind": (False, MS_BIND), "rbind": (False, MS_BIND | MS_REC),
    "unbindable": (False, MS_UNBINDABLE), "runbindable": (False, MS_UNBINDABLE | MS_REC),
    "private": (False, MS_PRIVATE), "rprivate": (False, MS_PRIVATE | MS_REC),
    "shared": (False, MS_SHARED), "rshared": (False, MS_SHARED | MS_REC),
    "slave": (False, MS_SLAVE), "rslave": (False, MS_SLAVE | MS_REC),
    "relatime": (False, MS_RELATIME), "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME), "nostrictatime": (True, MS_STRICTATIME),
}

_LIBC: Any = None


def _lib() -> Any:
    """libc through ctypes, loaded on first use: ctypes costs ~4 ms, and most calls never mount."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        # libc is already loaded into the interpreter; find_library() would spawn ldconfig (~60 ms).
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                               ctypes.c_char_p]
        libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.unshare.argtypes = [ctypes.c_int]
        libc.syncfs.argtypes = [ctypes.c_int]
        libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        _LIBC = libc
    return _LIBC


def _raise(what: str, path: str) -> None:
    import ctypes

    err = ctypes.get_errno()
    raise OSError(err, f"{what} {path}: {os.strerror(err)}", path)


def parse_options(options: str) -> tuple[int, str]:
    """Split a comma list into mount flags and data, as Go's mount.ParseOptions."""
    flags = 0
    data: list[str] = []
    for opt in options.split(","):
        known = _FLAGS.get(opt)
        if known is not None:
            clears, flag = known
            flags = flags & ~flag if clears else flags | flag
        else:
            data.append(opt)
    return flags, ",".join(data)


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    rc = _lib().mount(os.fsencode(source), os.fsencode(target), os.fsencode(fstype) if fstype else None,
                     flags, os.fsencode(data) if data else None)
    if rc != 0:
        _raise("mount", target)


def umount(target: str, flags: int = 0) -> None:
    if _lib().umount2(os.fsencode(target), flags) != 0:
        _raise("umount", target)


def unmount(target: str) -> None:
    """Lazy unmount that retries while busy and ignores "not mounted" (Go's mount.Unmount)."""
    for _ in range(50):
        try:
            umount(target, MNT_DETACH)
            return
        except OSError as e:
            if e.errno == errno.EINVAL:
                return
            if e.errno != errno.EBUSY:
                raise
        time.sleep(0.05)
    umount(target, MNT_DETACH)


def fs_magic(path: str) -> int:
    import ctypes

    # struct statfs on 64-bit Linux starts with a long f_type; 520 bytes cover the rest.
    buf = ctypes.create_string_buffer(520)
    if _lib().statfs(os.fsencode(path), buf) != 0:
        _raise("statfs", path)
    return int.from_bytes(buf.raw[:8], sys.byteorder) & 0xFFFFFFFF


# Kernel file system type names (mountinfo) -> statfs magic, for the types whose magic is fixed.
_TYPE_MAGIC: dict[str, int] = {
    "ext2": 0xEF53, "ext3": 0xEF53, "ext4": 0xEF53, "xfs": 0x58465342, "btrfs": 0x9123683E,
    "tmpfs": 0x01021994, "overlay": FS_MAGIC_OVERLAY, "zfs": 0x2FC12FC1, "f2fs": 0xF2F52010,
    "ramfs": 0x858458F6, "squashfs": 0x73717368, "erofs": 0xE0F5E1E2, "ecryptfs": 0xF15F,
    "aufs": 0x61756673, "nfs": 0x6969, "nfs4": 0x6969, "fuse": FS_MAGIC_FUSE,
}


def type_magic(fstype: str) -> int | None:
    """The statfs magic of a mountinfo file system type, when it is one with a fixed magic."""
    return _TYPE_MAGIC.get("fuse" if fstype.startswith("fuse.") else fstype)


def is_mounted_as(path: str, magic: int) -> bool:
    """Whether ``path`` is the root of a mount of this file system type (Go's fsChecker).

    Answered from mountinfo where it can be (statfs needs ctypes, a tenth of a CLI call).
    """
    from ..mountinfo import mount_at

    try:
        entry = mount_at(path)
    except OSError:
        entry = None
    else:
        if entry is None:
            return False
        known = type_magic(entry.fstype)
        if known is not None:
            return known == magic
    try:
        return fs_magic(path) == magic
    except OSError:
        return False


def make_private(path: str, mounts: list[MountEntry] | None = None) -> None:
    """Bind-mount ``path`` on itself if needed and make it private (Go's mount.MakePrivate).

    A private home keeps layer mounts from propagating into other mount namespaces, where they
    would pin the layer's directories and make removing it fail with EBUSY.  ``mounts``:
    mountinfo's entries, when the caller has read them.
    """
    from ..mountinfo import entries, topmost

    entry = topmost(mounts if mounts is not None else entries(), os.path.realpath(path))
    if entry is not None and entry.private:
        return  # already what Go's (repeated) MS_PRIVATE would make it: skip loading ctypes
    if entry is None:
        mount(path, path, "none", MS_BIND)
    mount("", path, "none", MS_PRIVATE)


def _run_in_private_cwd(cwd: str, fn: Callable[[], None]) -> None:
    """Run ``fn`` in a thread with its own working directory set to ``cwd``."""
    error: list[BaseException] = []

    def body() -> None:
        try:
            if _lib().unshare(CLONE_FS) != 0:
                _raise("unshare(CLONE_FS)", cwd)
            os.chdir(cwd)
            fn()
        except BaseException as e:
            error.append(e)

    import threading

    t = threading.Thread(target=body, name="overlay-mount")
    t.start()
    t.join()
    if error:
        raise error[0]


def mount_relative(home: str, target: str, flags: int, data: str) -> None:
    """Mount overlay with ``data`` and ``target`` relative to ``home`` (Go's mountOverlayFrom).

    When even the relative data does not fit in a page, each lower directory is opened and named
    by its fd number under ``/proc/self/fd``.
    """

    def do_mount() -> None:
        if len(data) < PAGE_SIZE:
            mount("overlay", target, "overlay", flags, data)
            return
        abs_target = target if os.path.isabs(target) else os.path.join(home, target)
        fds: list[int] = []
        try:
            parts: list[str] = []
            for opt in data.split(","):
                key, sep, val = opt.partition("=")
                if key in ("upperdir", "workdir") and sep and not os.path.isabs(val):
                    parts.append(f"{key}={os.path.join(home, val)}")
                elif key == "lowerdir" and sep:
                    numbers: list[str] = []
                    data_only = False
                    for lower in val.split(":"):
                        if not lower:
                            data_only = True
                            continue
                        fd = os.open(lower, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                        fds.append(fd)
                        numbers.append((":" if data_only else "") + str(fd))
                        data_only = False
                    parts.append("lowerdir=" + ":".join(numbers))
                else:
                    parts.append(opt)
            fd_data = ",".join(p for p in parts if p)
            if len(fd_data) >= PAGE_SIZE:
                raise OSError(errno.E2BIG, f"cannot mount layer, mount data {fd_data!r} too large "
                                           f"{len(fd_data)} >= page size {PAGE_SIZE}")
            os.chdir("/proc/self/fd")
            mount("overlay", abs_target, "overlay", flags, fd_data)
        finally:
            for fd in fds:
                os.close(fd)

    _run_in_private_cwd(home, do_mount)


def mount_program(program: str, options: str, target: str, cwd: str) -> None:
    """Mount with a FUSE helper such as fuse-overlayfs."""
    import subprocess

    proc = subprocess.run([program, "-o", options, target], cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        output = proc.stderr.decode(errors="replace") or "<stderr empty>"
        raise OSError(errno.EIO, f"using mount program {program}: {output}: exit status {proc.returncode}")


def fuse_unmount(target: str) -> bool:
    """Unmount a FUSE mount with fusermount3/fusermount; False when neither managed it."""
    import subprocess

    for tool in ("fusermount3", "fusermount"):
        try:
            proc = subprocess.run([tool, "-u", target], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        except FileNotFoundError:
            continue
        if proc.returncode == 0:
            return True
    # Neither tool worked: flush what the FUSE server has so a plain unmount loses nothing.
    try:
        fd = os.open(target, os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        _lib().syncfs(fd)
    finally:
        os.close(fd)
    return False
