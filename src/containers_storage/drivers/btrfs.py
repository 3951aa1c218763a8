"""The btrfs driver: every layer is a subvolume, a child layer a snapshot of its parent.

The layout is Go's, so the Go tools and we share such a store::

    btrfs/subvolumes/<id>   the layer's files: a subvolume (base layer) or a snapshot (child)
    btrfs/quotas/<id>       the layer's size limit in bytes (decimal text), when it has one

Subvolumes, snapshots and quota groups are made with the kernel's ioctls on directory fds (no
btrfs-progs at run time).  Like Go's driver it has no native diff: diffs, changes and sizes
compare the layer with its parent (NaiveDiff), and applying a diff writes into the subvolume.
Quotas (``btrfs.min_space``, ``btrfs.size``, a layer's ``size`` storage option) are btrfs
qgroup limits on the layer's subvolume, re-applied whenever the layer is got, as Go does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from .. import TYPE_CHECKING
from ..errors import DriverError
from ..fsutil import remove_tree
from .base import (
    CreateOpts,
    DriverOptions,
    DriverUnsupported,
    MountOpts,
    NaiveDiff,
    NaiveIDMapUpdater,
)

if TYPE_CHECKING:
    from ..dedup import DedupResult

DEFAULT_PERMS = 0o555
BTRFS_SUPER_MAGIC = 0x9123683E
FIRST_FREE_OBJECTID = 256  # the inode number of every subvolume's root directory

# ioctl request numbers and argument sizes from linux/btrfs.h (checked against the C headers).
_IOC_SUBVOL_CREATE = 0x5000940E  # _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
_IOC_SNAP_DESTROY = 0x5000940F  # _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
_IOC_SNAP_CREATE_V2 = 0x50009417  # _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
_IOC_TREE_SEARCH = 0xD0009411  # _IOWR(0x94, 17, struct btrfs_ioctl_search_args)
_IOC_INO_LOOKUP = 0xD0009412  # _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)
_IOC_QUOTA_CTL = 0xC0109428  # _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)
_IOC_QGROUP_CREATE = 0x4010942A  # _IOW(0x94, 42, struct btrfs_ioctl_qgroup_create_args)
_IOC_QGROUP_LIMIT = 0x8030942B  # _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)
_IOC_QUOTA_RESCAN_WAIT = 0x942E  # _IO(0x94, 46)
_VOL_ARGS_SIZE = 4096  # both vol_args structs; the name starts at 8 (v1) or 56 (v2)
_VOL_NAME_MAX = 4087  # BTRFS_PATH_NAME_MAX
_VOL_V2_NAME_OFFSET = 56
_VOL_V2_NAME_MAX = 4039  # BTRFS_SUBVOL_NAME_MAX
_SEARCH_KEY_SIZE = 104
_QUOTA_CTL_ENABLE = 1
_QGROUP_LIMIT_MAX_RFER = 1
_QUOTA_TREE_OBJECTID = 8
_QGROUP_STATUS_KEY = 240
_U64_MAX = (1 << 64) - 1


def _errno_text(err: int) -> str:
    """Go's syscall.Errno text: the C message with a lower-case first letter."""
    text = os.strerror(err)
    return text[:1].lower() + text[1:]


def _open_dir(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise DriverError(f"can't open dir {path}") from e


def _ioctl(fd: int, request: int, buf: bytearray | int, what: str) -> None:
    try:
        fcntl.ioctl(fd, request, buf, True) if isinstance(buf, bytearray) else fcntl.ioctl(fd, request, buf)
    except OSError as e:
        raise DriverError(f"{what}: {_errno_text(e.errno or 0)}") from e


def _vol_args(name: str) -> bytearray:
    raw = os.fsencode(name)
    if len(raw) > _VOL_NAME_MAX:
        raise DriverError(f"subvolume name too long: {name}")
    buf = bytearray(_VOL_ARGS_SIZE)
    buf[8 : 8 + len(raw)] = raw
    return buf


def subvol_create(path: str, name: str) -> None:
    """A new, empty subvolume ``name`` in the directory ``path``."""
    fd = _open_dir(path)
    try:
        _ioctl(fd, _IOC_SUBVOL_CREATE, _vol_args(name), "failed to create btrfs subvolume")
    finally:
        os.close(fd)


def subvol_snapshot(src: str, dest: str, name: str) -> None:
    """A writable snapshot of the subvolume ``src``, as ``dest/name``."""
    src_fd = _open_dir(src)
    try:
        dest_fd = _open_dir(dest)
        try:
            raw = os.fsencode(name)[:_VOL_V2_NAME_MAX]  # Go's snprintf truncates it
            buf = bytearray(_VOL_ARGS_SIZE)
            struct.pack_into("=q", buf, 0, src_fd)
            buf[_VOL_V2_NAME_OFFSET : _VOL_V2_NAME_OFFSET + len(raw)] = raw
            _ioctl(dest_fd, _IOC_SNAP_CREATE_V2, buf, "failed to create btrfs snapshot")
        finally:
            os.close(dest_fd)
    finally:
        os.close(src_fd)


def is_subvolume(path: str) -> bool:
    return os.lstat(path).st_ino == FIRST_FREE_OBJECTID


def subvol_lookup_qgroup(path: str) -> int:
    """The qgroup (tree) ID of the subvolume holding ``path``."""
    fd = _open_dir(path)
    try:
        buf = bytearray(4096)
        struct.pack_into("=QQ", buf, 0, 0, FIRST_FREE_OBJECTID)
        _ioctl(fd, _IOC_INO_LOOKUP, buf, f"failed to lookup qgroup for {path}")
    finally:
        os.close(fd)
    tree_id: int = struct.unpack_from("=Q", buf, 0)[0]
    if tree_id == 0:
        raise DriverError(f"invalid qgroup id for {path}: 0")
    return tree_id


def subvol_delete(dirpath: str, name: str, quota_enabled: bool) -> None:
    """Delete the subvolume ``dirpath/name``: first the subvolumes nested in it, then its qgroup
    (when quotas are on), then itself."""
    full = os.path.join(dirpath, name)
    fd = _open_dir(dirpath)
    try:
        _delete_children(full, dirpath)
        if quota_enabled:
            from ..lazylog import LazyLogger

            try:
                qgroup = subvol_lookup_qgroup(full)
            except DriverError as e:
                LazyLogger(__name__).error("Failed to lookup btrfs qgroup for %s: %s", full, e)
            else:
                buf = bytearray(struct.pack("=QQ", 0, qgroup))  # create=0: destroy
                try:
                    fcntl.ioctl(fd, _IOC_QGROUP_CREATE, buf, True)
                except OSError as e:
                    LazyLogger(__name__).error("Failed to delete btrfs qgroup %d for %s: %s", qgroup, full,
                                               _errno_text(e.errno or 0))
        _ioctl(fd, _IOC_SNAP_DESTROY, _vol_args(name),
               f"failed to destroy btrfs snapshot {dirpath} for {name}")
    finally:
        os.close(fd)


def _delete_children(top: str, dirpath: str) -> None:
    """Delete every subvolume below ``top`` (a container may have made some), deepest last seen
    first, never following symlinks."""
    stack = [top]
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except FileNotFoundError:
            if current != top:
                continue  # a subvolume removed a moment ago
            raise
        with it:
            for entry in it:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    nested = is_subvolume(entry.path)
                except OSError as e:
                    raise DriverError(f"failed to test if {entry.path} is a btrfs subvolume: "
                                      f"{_errno_text(e.errno or 0)}") from e
                if nested:
                    try:
                        subvol_delete(current, entry.name, False)
                    except DriverError as e:
                        raise DriverError(f"failed to destroy btrfs child subvolume ({entry.path}) of "
                                          f"parent ({dirpath}): {e}") from e
                else:
                    stack.append(entry.path)


def subvol_limit_qgroup(path: str, size: int) -> None:
    """Limit the referenced bytes of the subvolume holding ``path`` (qgroup 0: its own)."""
    fd = _open_dir(path)
    try:
        buf = bytearray(48)
        struct.pack_into("=QQQ", buf, 0, 0, _QGROUP_LIMIT_MAX_RFER, size)
        _ioctl(fd, _IOC_QGROUP_LIMIT, buf, f"failed to limit qgroup for {path}")
    finally:
        os.close(fd)


def quota_enabled(path: str) -> bool:
    """Whether quotas are on for the file system of ``path``: its quota tree has a status item."""
    try:
        fd = _open_dir(path)
    except DriverError:
        return False
    try:
        buf = bytearray(4096)
        # tree, min/max objectid, min/max offset, min/max transid; min/max type, nr_items.
        struct.pack_into("=7Q4I", buf, 0, _QUOTA_TREE_OBJECTID, 0, _U64_MAX, 0, _U64_MAX, 0, _U64_MAX,
                         _QGROUP_STATUS_KEY, _QGROUP_STATUS_KEY, 4096, 0)
        try:
            fcntl.ioctl(fd, _IOC_TREE_SEARCH, buf, True)
        except OSError:
            return False  # ENOENT: no quota tree, quotas were never enabled
        nr_items = struct.unpack_from("=I", buf, 64)[0]
        if nr_items == 0:
            return False
        item_type = struct.unpack_from("=I", buf, _SEARCH_KEY_SIZE + 24)[0]
        return bool(item_type == _QGROUP_STATUS_KEY)
    finally:
        os.close(fd)


def human_size(size: float) -> str:
    """Go's units.HumanSize: decimal units, four significant digits ("10.49MB")."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000.0 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{units[i]}"


def _library_versions() -> list[tuple[str, str]]:
    """Go prints the libbtrfs versions it was built with; ours are those of the machine's headers
    (libbtrfs-dev), and no lines without them, as a Go build without the macros prints none."""
    try:
        with open("/usr/include/btrfs/version.h", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    defines: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] == "#define":
            defines[parts[1]] = parts[2].strip()
    out: list[tuple[str, str]] = []
    build = defines.get("BTRFS_BUILD_VERSION", "")
    if len(build) >= 2 and build[0] == build[-1] == '"':
        out.append(("Build Version", build[1:-1]))
    try:
        lib = (int(defines["BTRFS_LIB_MAJOR"]) * 10000 + int(defines["BTRFS_LIB_MINOR"]) * 100
               + int(defines["BTRFS_LIB_PATCHLEVEL"]))
    except (KeyError, ValueError):
        return out
    out.append(("Library Version", str(lib)))
    return out


def _go_map_text(values: dict[str, str]) -> str:
    """Go's %q of a map[string]string: ``map["a":"b" "c":"d"]``, keys sorted."""
    import json

    return "map[" + " ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(values.items())) + "]"


def _parse_options(options: list[str]) -> tuple[int, int, bool]:
    """(min_space, size, whether quotas are wanted) from the storage options, as current Go reads
    them: ``btrfs.``-prefixed or bare keys, options of other drivers skipped."""
    from .overlay_options import ram_in_bytes

    min_space = size = 0
    wanted = False
    for option in options:
        key, sep, val = option.partition("=")
        if not sep:
            raise DriverError(f"unable to parse key/value option: {option}")
        key = key.strip().lower()
        driver, dot, name = key.partition(".")
        if not dot:
            driver, name = "", key
        elif driver not in ("", "btrfs"):
            if driver not in ("overlay", "overlay2", "vfs", "zfs"):
                raise DriverError(f'unknown driver "{driver}" in option "{option}"')
            continue  # meant for another driver
        if name == "min_space":
            min_space, wanted = ram_in_bytes(val), True
        elif name == "size":
            size, wanted = ram_in_bytes(val), True
        elif name == "mountopt":
            raise DriverError("btrfs driver does not support mount options")
        else:
            raise DriverError(f'unknown option "{name}" ("{option}")')
    return min_space, size, wanted


class BtrfsDriver(NaiveDiff, NaiveIDMapUpdater):
    """Go's btrfs graph driver: subvolumes and snapshots, optional qgroup size limits."""

    name = "btrfs"

    def __init__(self, options: DriverOptions) -> None:
        self.home = os.path.join(options.root, "btrfs")
        probe = self.home
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if _fs_type(probe) != "btrfs":
            raise DriverUnsupported(f'"{self.home}" is not on a btrfs filesystem: '
                                    f"{DriverUnsupported.prerequisites}")
        # Options first: unlike Go, a refused option leaves no private mount of the home behind.
        self.min_space, self.size, wanted = _parse_options(options.options)
        self._quota_enabled: bool | None = None
        os.makedirs(self.subvolumes_dir, mode=0o700, exist_ok=True)
        from . import overlay_mount as om

        try:
            om.make_private(self.home)  # as Go's Init; Cleanup unmounts it again
        except OSError as e:
            raise DriverError(f"btrfs: failed to make mount private: {e.strerror}") from e
        if wanted:
            try:
                self._enable_quota()
            except BaseException:
                om.unmount(self.home)
                raise

    # -- locations ---------------------------------------------------------------------------
    @property
    def subvolumes_dir(self) -> str:
        return os.path.join(self.home, "subvolumes")

    @property
    def quotas_dir(self) -> str:
        return os.path.join(self.home, "quotas")

    def _dir(self, id: str) -> str:
        return os.path.join(self.subvolumes_dir, id)

    def diff_root(self, id: str) -> str:
        return self._dir(id)

    def diff_lowers(self, id: str) -> list[str]:
        return []  # a snapshot holds its parents' files already

    # -- quotas ------------------------------------------------------------------------------
    def quota_enabled(self) -> bool:
        """Whether the file system has quotas on (asked once, as Go's updateQuotaStatus)."""
        if self._quota_enabled is None:
            self._quota_enabled = quota_enabled(self.home)
        return self._quota_enabled

    def _enable_quota(self) -> None:
        if self.quota_enabled():
            return
        fd = _open_dir(self.home)
        try:
            buf = bytearray(struct.pack("=QQ", _QUOTA_CTL_ENABLE, 0))
            _ioctl(fd, _IOC_QUOTA_CTL, buf, f"failed to enable btrfs quota for {self.home}")
        finally:
            os.close(fd)
        self._quota_enabled = True

    def _rescan_quota(self) -> None:
        if not self.quota_enabled():
            return
        fd = _open_dir(self.home)
        try:
            _ioctl(fd, _IOC_QUOTA_RESCAN_WAIT, 0, f"failed to rescan btrfs quota for {self.home}")
        finally:
            os.close(fd)

    def _set_storage_size(self, path: str, size: int) -> None:
        if size <= 0:
            raise DriverError(f"btrfs: invalid storage size: {human_size(size)}")
        if self.min_space > 0 and size < self.min_space:
            raise DriverError(f"btrfs: storage size cannot be less than {human_size(self.min_space)}")
        self._enable_quota()
        subvol_limit_qgroup(path, size)

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self, id: str, parent: str, opts: CreateOpts | None, read_write: bool) -> None:
        subvolumes = self.subvolumes_dir
        os.makedirs(subvolumes, mode=0o700, exist_ok=True)
        path = self._dir(id)
        if not parent:
            subvol_create(subvolumes, id)
            os.chmod(path, DEFAULT_PERMS)
        else:
            parent_dir = self._dir(parent)
            if not os.path.isdir(parent_dir):
                os.stat(parent_dir)  # Go's error for a missing parent
                raise DriverError(f"{parent_dir}: not a directory")
            subvol_snapshot(parent_dir, subvolumes, id)
        try:
            self._apply_create_quota(id, path, opts, read_write)
        except BaseException:
            try:
                self.remove(id)
            except (OSError, DriverError):
                pass
            raise

    def _apply_create_quota(self, id: str, path: str, opts: CreateOpts | None, read_write: bool) -> None:
        from .overlay_options import ram_in_bytes

        storage_opt = opts.storage_opt if opts else {}
        size = 0
        if "size" in storage_opt:  # Go parses the options only when they name a size
            for key, val in storage_opt.items():
                if key.lower() != "size":
                    raise DriverError(f"unknown option {key.lower()} ({_go_map_text(storage_opt)})")
                size = ram_in_bytes(val)
        elif read_write and self.size > 0:
            size = self.size  # current Go: btrfs.size is the default for container layers
        else:
            return
        self._set_storage_size(path, size)
        os.makedirs(self.quotas_dir, mode=0o700, exist_ok=True)
        from .overlay_links import write_file

        write_file(os.path.join(self.quotas_dir, id), str(size).encode(), 0o644)

    def create_from_template(self, id: str, template: str, parent: str, opts: CreateOpts | None,
                             read_write: bool) -> None:
        """A snapshot of the template (its parents' files are in it), as Go's driver does."""
        self.create(id, template, opts, read_write)

    def remove(self, id: str) -> None:
        path = self._dir(id)
        if not os.path.lexists(path):
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
        try:
            os.unlink(os.path.join(self.quotas_dir, id))
        except FileNotFoundError:
            pass
        enabled = self.quota_enabled()
        try:
            subvol_delete(self.subvolumes_dir, id, enabled)
        except DriverError:
            if enabled:
                raise
            # Without quotas a plain recursive removal works too (rmdir of a subvolume is
            # allowed for its owner on kernels from 4.18 on), as Go falls back to.
        remove_tree(path)
        self._rescan_quota()

    def get(self, id: str, opts: MountOpts) -> str:
        path = self._dir(id)
        st = os.stat(path)
        for opt in opts.options:
            if opt != "ro":  # Go ignores "ro": there is no mount to make read-only
                raise DriverError("btrfs driver does not support mount options")
        import stat

        if not stat.S_ISDIR(st.st_mode):
            raise DriverError(f"{path}: not a directory")
        try:
            with open(os.path.join(self.quotas_dir, id), "rb") as f:
                text = f.read()
        except OSError:
            return path
        try:
            size = int(text.decode())
        except ValueError:
            return path
        if size >= 0 and size >= self.min_space:
            self._enable_quota()
            subvol_limit_qgroup(path, size)
        return path

    def put(self, id: str) -> None:
        return None  # get mounts nothing

    def exists(self, id: str) -> bool:
        return os.path.lexists(self._dir(id))

    def status(self) -> list[tuple[str, str]]:
        return _library_versions()

    def metadata(self, id: str) -> dict[str, str]:
        return {}

    def cleanup(self) -> None:
        from . import overlay_mount as om

        om.unmount(self.home)

    def additional_image_stores(self) -> list[str]:
        return []

    def list_layers(self) -> list[str]:
        with os.scandir(self.subvolumes_dir) as it:
            return [e.name for e in it if e.is_dir(follow_symlinks=False)]

    def dedup(self, layers: list[str], hash_method: str) -> DedupResult:
        """Go's btrfs driver deduplicates nothing (snapshots already share their extents)."""
        from ..dedup import DedupResult

        return DedupResult()


def _fs_type(path: str) -> str:
    """The file system type of ``path`` (Go's GetFSMagic), from mountinfo, else statfs."""
    from ..mountinfo import mount_containing

    entry = mount_containing(path)
    if entry is not None and entry.fstype:
        return entry.fstype
    from . import overlay_mount as om

    return "btrfs" if om.fs_magic(path) == BTRFS_SUPER_MAGIC else ""
