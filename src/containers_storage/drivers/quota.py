"""XFS project quotas for the overlay driver's container layers (Go's ``drivers/quota``).

Every read-write layer directory gets a project ID of its own (with the inherit flag, so all
it holds is charged to it) and a block/inode limit on that project; 0 means "track, do not
limit".  The IDs and the files are Go's, so both implementations share one home:

- the driver home's own project ID is the floor of the range; when it has none (0), the floor
  is derived from the home's inode number, as Go's generateUniqueProjectID does;
- IDs in use are found by reading the project ID of every directory in the home; a new layer
  takes one above the highest;
- ``<home>/backingFsBlockDev`` is a block device node of the file system, which quotactl(2)
  needs (re-created on every start, in case the home moved to another device).

Everything goes through ioctl(2) and quotactl(2): no xfs_quota at run time.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from ..errors import DriverError

BACKING_FS_BLOCK_DEV = "backingFsBlockDev"
PROJECT_IDS_PER_HOME = 10000
_UINT32_MAX = 0xFFFFFFFF

FS_IOC_FSGETXATTR = 0x801C581F  # _IOR('X', 31, struct fsxattr)
FS_IOC_FSSETXATTR = 0x401C5820  # _IOW('X', 32, struct fsxattr)
FS_XFLAG_PROJINHERIT = 0x200
_FSXATTR = "=IIII12x"  # xflags, extsize, nextents, projid, (cowextsize and padding)
_FSXATTR_SIZE = 28

Q_XSETPQLIM = 0x580402  # QCMD(Q_XSETQLIM, PRJQUOTA)
Q_XGETPQUOTA = 0x580302  # QCMD(Q_XGETQUOTA, PRJQUOTA)
FS_DQUOT_VERSION = 1
FS_PROJ_QUOTA = 2
FS_DQ_ISOFT, FS_DQ_IHARD, FS_DQ_BSOFT, FS_DQ_BHARD = 1, 2, 4, 8
# struct fs_disk_quota (112 bytes): version, flags, fieldmask, id, block hard/soft limits,
# inode hard/soft limits, block count, inode count, then timers, warnings and padding.
_DISK_QUOTA = "=bbHIQQQQQQ"
_DISK_QUOTA_SIZE = 112


class Quota:
    """Limits for one project: bytes (``size``) and inodes; 0 is no limit."""

    def __init__(self, size: int = 0, inodes: int = 0) -> None:
        self.size = size
        self.inodes = inodes

    def __repr__(self) -> str:
        return f"Quota(size={self.size}, inodes={self.inodes})"


def _errno_text(err: int) -> str:
    text = os.strerror(err)
    return text[:1].lower() + text[1:]


def _fsxattr(path: str, what: str) -> tuple[int, bytearray]:
    """An fd of the directory ``path`` and its fsxattr; failing as Go's "failed to <what> for"."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise _failed(what, path, e) from e
    buf = bytearray(_FSXATTR_SIZE)
    try:
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf, True)
    except OSError as e:
        os.close(fd)
        raise _failed(what, path, e) from e
    return fd, buf


def _set_fsxattr(fd: int, buf: bytearray, path: str, what: str) -> None:
    try:
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR, bytes(buf))
    except OSError as e:
        raise _failed(what, path, e) from e


def _failed(what: str, path: str, err: OSError) -> DriverError:
    return DriverError(f"failed to {what} for {path}: {_errno_text(err.errno or 0)}")


def get_project_id(path: str) -> int:
    """The project ID of the directory ``path``."""
    fd, buf = _fsxattr(path, "get projid")
    os.close(fd)
    projid: int = struct.unpack_from(_FSXATTR, buf)[3]
    return projid


def set_project_id(path: str, project_id: int) -> None:
    """Give ``path`` the project ID, inherited by everything made in it from now on."""
    fd, buf = _fsxattr(path, "get projid")
    try:
        xflags = struct.unpack_from(_FSXATTR, buf)[0] | FS_XFLAG_PROJINHERIT
        struct.pack_into("=I", buf, 0, xflags)
        struct.pack_into("=I", buf, 12, project_id)
        _set_fsxattr(fd, buf, path, "set projid")
    finally:
        os.close(fd)


def strip_project_inherit(path: str) -> None:
    """Clear the inherit flag of the home itself, so only the layer dirs pass their IDs on."""
    fd, buf = _fsxattr(path, "get xfs attrs")
    try:
        xflags = struct.unpack_from(_FSXATTR, buf)[0]
        if not xflags & FS_XFLAG_PROJINHERIT:
            return
        struct.pack_into("=I", buf, 0, xflags & ~FS_XFLAG_PROJINHERIT)
        _set_fsxattr(fd, buf, path, "clear PROJINHERIT")
    finally:
        os.close(fd)


def unique_project_id(path: str) -> int:
    """Go's generateUniqueProjectID: a range of 10000 IDs chosen by the home's inode."""
    ino = os.stat(path).st_ino
    product = (ino * PROJECT_IDS_PER_HOME) & 0xFFFFFFFFFFFFFFFF  # Go's uint64 arithmetic wraps
    return (PROJECT_IDS_PER_HOME + product % (_UINT32_MAX - PROJECT_IDS_PER_HOME)) & _UINT32_MAX


def make_backing_fs_dev(home: str) -> str:
    """``home/backingFsBlockDev``: a block device node of the home's file system, made anew."""
    dev = os.stat(home).st_dev
    path = os.path.join(home, BACKING_FS_BLOCK_DEV)
    tmp = path + ".tmp"
    try:
        os.mknod(tmp, stat.S_IFBLK | 0o600, dev)
    except FileExistsError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        try:
            os.mknod(tmp, stat.S_IFBLK | 0o600, dev)
        except OSError as e:
            raise DriverError(f"failed to mknod {tmp}: {_errno_text(e.errno or 0)}") from e
    except OSError as e:
        raise DriverError(f"failed to mknod {tmp}: {_errno_text(e.errno or 0)}") from e
    try:
        os.rename(tmp, path)
    except OSError as e:
        raise DriverError(f"failed to rename {tmp} to {path}: {_errno_text(e.errno or 0)}") from e
    return path


def _quotactl(cmd: int, special: str, id: int, buf: bytearray) -> int:
    """quotactl(2); the errno (0 on success)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    raw = (ctypes.c_char * len(buf)).from_buffer(buf)
    rc = libc.quotactl(ctypes.c_int(cmd), os.fsencode(special), ctypes.c_int(id), raw)
    return ctypes.get_errno() if rc != 0 else 0


class Control:
    """Project quotas under one driver home (Go's quota.Control)."""

    def __init__(self, base_path: str) -> None:
        """Check that quotas work here (raises ``DriverError`` otherwise) and find the IDs in use.

        As Go's NewControl: the floor ID is set with no limits on the backing device, which
        fails where the file system is not mounted with project quotas.
        """
        self.base_path = base_path
        min_id = get_project_id(base_path)
        if min_id == 0:
            min_id = unique_project_id(base_path)
        self.backing_fs_block_dev = make_backing_fs_dev(base_path)
        self.next_project_id = min_id + 1
        self.quotas: dict[str, int] = {}
        self._set_project_quota(min_id, Quota())
        strip_project_inherit(base_path)
        self._find_next_project_id()

    def _find_next_project_id(self) -> None:
        try:
            entries = list(os.scandir(self.base_path))
        except OSError as e:
            raise DriverError(f"read directory failed : {self.base_path}") from e
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            projid = get_project_id(entry.path)
            if projid > 0:
                self.quotas[entry.path] = projid
            if self.next_project_id <= projid:
                self.next_project_id = projid + 1

    def set_quota(self, target: str, quota: Quota) -> None:
        """Give the empty directory ``target`` a project of its own (once) and these limits."""
        projid = self.quotas.get(target)
        if projid is None:
            projid = self.next_project_id
            try:
                empty = not os.listdir(target)
            except OSError as e:
                raise DriverError(f"reading directory {target}: {_errno_text(e.errno or 0)}") from e
            if not empty:
                raise DriverError(f"can only set project ID on empty directories, {target} is not empty")
            set_project_id(target, projid)
            self.quotas[target] = projid
            self.next_project_id += 1
        self._set_project_quota(projid, quota)

    def clear_quota(self, target: str) -> None:
        """Forget ``target`` (its directory is gone)."""
        self.quotas.pop(target, None)

    def project_id(self, target: str) -> int | None:
        return self.quotas.get(target)

    def get_quota(self, target: str) -> Quota:
        """The limits set on ``target``'s project."""
        fields = self._get_disk_quota(target)
        return Quota(size=fields[4] * 512, inodes=fields[6])

    def disk_usage(self, target: str) -> tuple[int, int]:
        """(bytes, inodes) charged to ``target``'s project."""
        fields = self._get_disk_quota(target)
        return fields[8] * 512, fields[9]

    def _get_disk_quota(self, target: str) -> tuple[int, ...]:
        projid = self.quotas.get(target)
        if projid is None:
            raise DriverError(f"quota not found for path : {target}")
        buf = bytearray(_DISK_QUOTA_SIZE)
        err = _quotactl(Q_XGETPQUOTA, self.backing_fs_block_dev, projid, buf)
        if err:
            raise DriverError(f"failed to get quota limit for projid {projid} on "
                              f"{self.backing_fs_block_dev}: {_errno_text(err)}")
        return struct.unpack_from(_DISK_QUOTA, buf)

    def _set_project_quota(self, projid: int, quota: Quota) -> None:
        fieldmask = 0
        blocks = inodes = 0
        if quota.size > 0:
            fieldmask |= FS_DQ_BHARD | FS_DQ_BSOFT
            blocks = quota.size // 512
        if quota.inodes > 0:
            fieldmask |= FS_DQ_IHARD | FS_DQ_ISOFT
            inodes = quota.inodes
        buf = bytearray(_DISK_QUOTA_SIZE)
        struct.pack_into(_DISK_QUOTA, buf, 0, FS_DQUOT_VERSION, FS_PROJ_QUOTA, fieldmask, projid,
                         blocks, blocks, inodes, inodes, 0, 0)
        err = _quotactl(Q_XSETPQLIM, self.backing_fs_block_dev, projid, buf)
        if err == errno.ENOENT:
            # The device node went away (someone cleaned the home): make it again, once.
            try:
                make_backing_fs_dev(self.base_path)
            except DriverError as e:
                raise DriverError(f"failed to recreate missing backingFsBlockDev {self.backing_fs_block_dev} "
                                  f"for projid {projid}: {e}") from e
            err = _quotactl(Q_XSETPQLIM, self.backing_fs_block_dev, projid, buf)
            if err:
                raise DriverError(f"failed to set quota limit for projid {projid} on "
                                  f"{self.backing_fs_block_dev} after backingFsBlockDev recreation: "
                                  f"{_errno_text(err)}")
        elif err:
            raise DriverError(f"failed to set quota limit for projid {projid} on "
                              f"{self.backing_fs_block_dev}: {_errno_text(err)}")
