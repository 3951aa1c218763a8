"""What this kernel and file system can do for overlay, probed with real test mounts.

Probing costs several mounts, so, as Go does, each answer is cached in the driver's run home as an
empty file named ``<feature>-true`` or ``<feature>-false`` (the false file may hold the reason).
The names are Go's (``overlay``, ``native-diff(<mountopt>)``, ``metacopy(<mountopt>)``,
``volatile``), so a cache written by the Go tools is honoured by us and the reverse.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import TYPE_CHECKING
from ..errors import DriverError
from ..fsutil import rmtree
from . import overlay_mount as m

if TYPE_CHECKING:
    from ..mountinfo import MountEntry

MOUNT_PROGRAM_FLAG_FILE = ".has-mount-program"
WHITEOUT_PREFIX = ".wh."

# Go's graphdriver.FsNames: statfs magic -> the name "status" prints.
FS_NAMES: dict[int, str] = {
    0x61756673: "aufs", 0x9123683E: "btrfs", 0x28CD3D45: "cramfs", 0xF15F: "ecryptfs",
    0xE0F5E1E2: "erofs", 0xEF53: "extfs", 0xF2F52010: "f2fs", 0x47504653: "gpfs",
    0x72B6: "jffs2", 0x3153464A: "jfs", 0x6969: "nfs", 0x794C7630: "overlayfs",
    0x858458F6: "ramfs", 0x52654973: "reiserfs", 0x517B: "smb", 0x73717368: "squashfs",
    0x01021994: "tmpfs", 0xA501FCF5: "vxfs", 0x58465342: "xfs", 0x2FC12FC1: "zfs",
}
# Go's isNetworkFileSystem: where a rootless user's overlay needs a mount program (and force_mask).
NETWORK_FS_MAGICS = frozenset((
    0x6969, 0x517B, 0x61636673, 0x5346414F, 0x00C36400, 0xFF534D42, 0x47504653, 0x013111A8,
    0x6B414653, 0x0BD00BD0, 0x564C, 0x6E667364, 0x7461636F, 0xAAD7AAEA, 0x7C7C6673, 0xFE534D42,
    0xBEEFDEAD, 0x786F4256, 0xA501FCF5,
))  # nfs smb acfs afs ceph cifs gpfs ibrix kafs lustre ncp nfsd ocfs2 panfs prl_fs smb2 snfs vboxsf vxfs
FS_MAGIC_AUFS = 0x61756673
FS_MAGIC_ECRYPTFS = 0xF15F
FS_MAGIC_XFS = 0x58465342


def rootless() -> bool:
    """Go's ``unshare.IsRootless``: also true as uid 0 of a rootless user's namespace, where
    overlay can use only ``user.*`` xattrs (``userxattr``), never ``trusted.*``."""
    from ..userns import is_rootless

    return is_rootless()


def overlay_xattr(name: str) -> str:
    """Overlay keeps its metadata in trusted.* as root and user.* (userxattr) when rootless."""
    return ("user.overlay." if rootless() else "trusted.overlay.") + name


def backing_fs(home: str, mounts: list[MountEntry] | None = None) -> tuple[int, str]:
    """The file system holding the driver home (statfs of its parent, as Go's GetFSMagic).

    Read from mountinfo when the type's magic is known: statfs needs ctypes, whose import is a
    tenth of an overlay CLI call.  ``mounts``: mountinfo's entries, when the caller has read them.
    """
    from ..mountinfo import containing, entries

    parent = os.path.dirname(home.rstrip("/")) or "/"
    magic = None
    try:
        entry = containing(mounts if mounts is not None else entries(), os.path.realpath(parent))
    except OSError:
        entry = None
    if entry is not None:
        magic = m.type_magic(entry.fstype)
    if magic is None:
        magic = m.fs_magic(parent)
    return magic, FS_NAMES.get(magic, "<unknown>")


# -- the cache ---------------------------------------------------------------------------------
def _feature_file(runhome: str, feature: str, value: bool) -> str:
    return os.path.join(runhome, f"{feature}-{'true' if value else 'false'}")


def cached_feature(runhome: str, feature: str) -> tuple[bool, str] | None:
    """The cached answer and its text, or None when nobody probed yet."""
    for value in (True, False):
        try:
            with open(_feature_file(runhome, feature, value), encoding="utf-8",
                      errors="replace") as f:
                return value, f.read()
        except FileNotFoundError:
            continue
    return None


def record_feature(runhome: str, feature: str, value: bool, text: str = "") -> None:
    with open(_feature_file(runhome, feature, value), "w", encoding="utf-8") as f:
        if text:
            f.write(text)


# -- d_type ------------------------------------------------------------------------------------
_SYS_GETDENTS64 = 217 if os.uname().machine == "x86_64" else 61
_DT_UNKNOWN = 0


def supports_dtype(path: str) -> bool:
    """Whether readdir fills in d_type here; overlay silently misbehaves without it."""
    import tempfile  # probes run once per run root: keep it off the CLI's start-up

    dummy = ""
    if not os.listdir(path):
        fd, dummy = tempfile.mkstemp(prefix="dtype-check", dir=path)
        os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        import ctypes

        buf = ctypes.create_string_buffer(32768)
        while True:
            n = m._lib().syscall(_SYS_GETDENTS64, fd, buf, len(buf))
            if n < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), path)
            if n == 0:
                return True
            raw = buf.raw[:n]
            pos = 0
            while pos < n:
                reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
                if raw[pos + 18] == _DT_UNKNOWN:
                    return False
                pos += reclen
    finally:
        os.close(fd)
        if dummy:
            os.unlink(dummy)


# -- can we mount at all -----------------------------------------------------------------------
def _mkdirs(base: str, *names: str) -> None:
    for name in names:
        os.makedirs(os.path.join(base, name), mode=0o700, exist_ok=True)


def supports_overlay(home: str, fs_name: str) -> bool:
    """Test-mount overlay with two lowers and a kernel whiteout in ``home``; True means d_type.

    Raises DriverError with Go's wording when overlay cannot be used here.
    """
    import tempfile  # probes run once per run root: keep it off the CLI's start-up

    try:
        layer_dir = tempfile.mkdtemp(prefix="compat", dir=home)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        raise DriverError("'overlay' not found as a supported filesystem on this host. Please "
                          "ensure kernel is new enough and has overlay support loaded.") from e
    merged = os.path.join(layer_dir, "merged")
    try:
        if not supports_dtype(layer_dir):
            msg = (f"overlay: the backing {fs_name} filesystem is formatted without d_type support, "
                   "which leads to incorrect behavior.")
            if fs_name == "xfs":
                msg += " Reformat the filesystem with ftype=1 to enable d_type support."
            raise DriverError(msg + " Running without d_type is not supported.")
        _mkdirs(layer_dir, "merged", "lower1", "lower2", "lower2/subdir", "upper", "work")
        open(os.path.join(layer_dir, "lower2", "subdir", "file"), "wb").close()
        try:
            os.mknod(os.path.join(layer_dir, "upper", "whiteout"), stat.S_IFCHR | 0o600, 0)
        except OSError as e:
            raise DriverError(f"unable to create kernel-style whiteout: {e}") from e
        lower1, lower2 = os.path.join(layer_dir, "lower1"), os.path.join(layer_dir, "lower2")
        upper, work = os.path.join(layer_dir, "upper"), os.path.join(layer_dir, "work")
        data = f"lowerdir={lower1}:{lower2},upperdir={upper},workdir={work}"
        if rootless():
            data += ",userxattr"
        if len(data) < m.PAGE_SIZE:
            try:
                m.mount("overlay", merged, "overlay", 0, data)
            except OSError:
                pass
            else:
                try:
                    rmtree(os.path.join(merged, "subdir"))
                except OSError as e:
                    raise DriverError(f"kernel returned {e} when we tried to delete an item in the "
                                      "merged directory: driver not supported") from e
                return True
        data = f"lowerdir={lower1},upperdir={upper},workdir={work}"
        try:
            m.mount("overlay", merged, "overlay", 0, data)
        except OSError:
            raise DriverError(f"'overlay' is not supported over {fs_name} at \"{home}\": backing "
                              "file system is unsupported for this graph driver") from None
        raise DriverError("kernel too old to provide multiple lowers feature for overlay: "
                          "driver not supported")
    finally:
        try:
            m.umount(merged, m.MNT_DETACH)
        except OSError:
            pass
        rmtree(layer_dir, ignore_errors=True)


def check_overlay_support(home: str, runhome: str, fs_name: str) -> bool:
    """Cached ``supports_overlay``: Go's checkAndRecordOverlaySupport."""
    # Go asks the effective UID here, not IsRootless: uid 0 of a user namespace probes too.
    if os.geteuid() != 0:
        return False
    cached = cached_feature(runhome, "overlay")
    if cached is not None:
        if not cached[0]:
            raise DriverError(cached[1] or "kernel does not support overlay fs")
        return True
    try:
        dtype = supports_overlay(home, fs_name)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        raise DriverError(f"kernel does not support overlay fs: {e}") from e
    except DriverError as e:
        text = f"kernel does not support overlay fs: {e}"
        record_feature(runhome, "overlay", False, text)
        raise DriverError(text) from e
    record_feature(runhome, "overlay", dtype)
    return dtype


def scan_for_mount_program_indicators(home: str) -> bool:
    """Layers written through fuse-overlayfs (``.wh.`` files, its xattrs) need it to be read."""
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            if name.startswith(WHITEOUT_PREFIX):
                return True
        try:
            names = os.listxattr(dirpath, follow_symlinks=False)
        except OSError:
            names = []
        if any(n.startswith(("user.fuseoverlayfs.", "user.containers.")) for n in names):
            return True
    return False


def supports_native_overlay(home: str, runhome: str, backing: str | None = None) -> bool:
    """Whether the kernel can mount this home; False means a mount program is needed.

    ``backing``: the home's file system name (``backing_fs``), when the caller has it already
    (each look costs a read of /proc/self/mountinfo)."""
    # As Go: the effective UID (an unprivileged user outside a namespace cannot mount at all).
    if os.geteuid() != 0 or not home or not runhome:
        return False
    flag_file = os.path.join(home, MOUNT_PROGRAM_FLAG_FILE)
    try:
        with open(flag_file, encoding="utf-8") as f:
            contents = f.read().strip()
    except OSError:
        contents = ""
    if contents == "true":
        return False
    if contents != "false":
        needs = scan_for_mount_program_indicators(home)
        try:
            fd = os.open(flag_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"true" if needs else b"false")
            finally:
                os.close(fd)
        except FileNotFoundError:
            pass
        if needs:
            return False
    for d in (home, runhome):
        os.makedirs(d, mode=0o700, exist_ok=True)
    try:
        return check_overlay_support(home, runhome, backing if backing is not None else backing_fs(home)[1])
    except DriverError:
        return False


def _lgetxattr(path: str, name: str) -> bytes | None:
    """An xattr's value, None when it is not set (Go's system.Lgetxattr)."""
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


# -- optional features ---------------------------------------------------------------------------
def _mount_probe(merged: str, data: str, mount_opts: str) -> None:
    """Mount a probe's overlay on ``merged`` with ``data``, ``userxattr`` when rootless, and the
    flags and data of the driver's ``mount_opts``; the mount's OSError when it fails."""
    if rootless():
        data += ",userxattr"
    flags, extra = m.parse_options(mount_opts)
    if extra:
        data += "," + extra
    m.mount("overlay", merged, "overlay", flags, data)


def native_diff_problem(home: str, mount_opts: str) -> str:
    """Why exporting straight from diff/ would be wrong on this kernel; "" when it is safe.

    Old kernels copy the opaque xattr up, and redirect_dir renames leave the upper dir without
    the renamed content; either way the diff dir no longer tells the whole story.
    """
    import tempfile  # probes run once per run root: keep it off the CLI's start-up

    td = tempfile.mkdtemp(prefix="opaque-bug-check", dir=home)
    merged = os.path.join(td, "merged")
    try:
        for d in ("l1/d", "l1/d1", "l2/d", "l3", "work", "merged"):
            os.makedirs(os.path.join(td, d), mode=0o755)
        opaque = overlay_xattr("opaque")
        try:
            os.setxattr(os.path.join(td, "l2", "d"), opaque, b"y", follow_symlinks=False)
        except OSError as e:
            return f"failed to set opaque flag on middle layer: {e}"
        data = (f"lowerdir={os.path.join(td, 'l2')}:{os.path.join(td, 'l1')},"
                f"upperdir={os.path.join(td, 'l3')},workdir={os.path.join(td, 'work')}")
        try:
            _mount_probe(merged, data, mount_opts)
        except OSError as e:
            return f"failed to mount overlay: {e}"
        try:
            try:
                open(os.path.join(merged, "d", "f"), "wb").close()
            except OSError as e:
                return f"failed to write to merged directory: {e}"
            try:
                value = _lgetxattr(os.path.join(td, "l3", "d"), opaque)
            except OSError as e:
                return f"failed to read opaque flag on upper layer: {e}"
            if value == b"y":
                return ("opaque flag erroneously copied up, consider update to kernel 4.8 or "
                        "later to fix")
            try:
                os.rename(os.path.join(merged, "d1"), os.path.join(merged, "d2"))
            except OSError as e:
                if e.errno == errno.EXDEV:
                    return ""
                return f"failed to rename dir in merged directory: {e}"
            try:
                redirect = _lgetxattr(os.path.join(td, "l3", "d2"), overlay_xattr("redirect"))
            except OSError as e:
                return f"failed to read redirect flag on upper layer: {e}"
            if redirect == b"d1":
                return "kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled"
            return ""
        finally:
            m.umount(merged)
    finally:
        rmtree(td, ignore_errors=True)


def does_metacopy(home: str, mount_opts: str) -> bool:
    """Whether a chmod in the merged dir copies up only metadata with these mount options."""
    import tempfile  # probes run once per run root: keep it off the CLI's start-up

    td = tempfile.mkdtemp(prefix="metacopy-check", dir=home)
    merged = os.path.join(td, "merged")
    try:
        for d in ("l1", "l2", "work", "merged"):
            os.makedirs(os.path.join(td, d), mode=0o755)
        with open(os.path.join(td, "l1", "f"), "wb") as f:
            f.write(b"\xff")
        os.chmod(os.path.join(td, "l1", "f"), 0o700)
        data = (f"lowerdir={os.path.join(td, 'l1')},upperdir={os.path.join(td, 'l2')},"
                f"workdir={os.path.join(td, 'work')}")
        try:
            _mount_probe(merged, data, mount_opts)
        except OSError as e:
            if e.errno == errno.EINVAL:
                return False
            raise DriverError(f"failed to mount overlay for metacopy check with {mount_opts!r} "
                              f"options: {e}") from e
        try:
            os.chmod(os.path.join(merged, "f"), 0o600)
            try:
                os.getxattr(os.path.join(td, "l2", "f"), overlay_xattr("metacopy"),
                            follow_symlinks=False)
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.ENODATA):
                    return False
                raise
            return True
        finally:
            m.umount(merged)
    finally:
        rmtree(td, ignore_errors=True)


def does_volatile(home: str) -> bool:
    """Whether overlay accepts the ``volatile`` option (no syncs for throwaway containers)."""
    import tempfile  # probes run once per run root: keep it off the CLI's start-up

    td = tempfile.mkdtemp(prefix="volatile-check", dir=home)
    merged = os.path.join(td, "merged")
    try:
        for d in ("lower", "upper", "work", "merged"):
            os.makedirs(os.path.join(td, d), mode=0o755)
        data = (f"volatile,lowerdir={os.path.join(td, 'lower')},upperdir={os.path.join(td, 'upper')},"
                f"workdir={os.path.join(td, 'work')}")
        try:
            _mount_probe(merged, data, "")
        except OSError:
            return False
        m.umount(merged)
        return True
    finally:
        rmtree(td, ignore_errors=True)
