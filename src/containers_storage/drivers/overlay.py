"""The overlay driver: each layer keeps only its own changes in ``overlay/<id>/diff``.

The layout is Go's, so the Go tools and we can share a store::

    overlay/<id>/diff     the layer's files (whiteouts as char 0/0, opaque dirs by xattr)
    overlay/<id>/link     the layer's 26-character short name
    overlay/<id>/lower    "l/<short>:l/<short>..." of every layer below, nearest first
    overlay/<id>/work     overlay's work dir;  overlay/<id>/merged  the mount point
    overlay/<id>/empty    the lower dir of a base layer (overlay needs at least one)
    overlay/l/<short>     symlink to ../<id>/diff, so mount data stays short

Mounting goes through mount(2) (or a FUSE mount program); when the data for a deep image does
not fit in a page, ``overlay_mount`` shortens it.  A container mounted with ID maps reads its
lower dirs through kernel ID-mapped mounts made under ``overlay/<id>/mapped/<n>`` (Go's paths;
see ``overlay_idmap``), so containers with any maps share the image layers unchanged.  Diffs are
exported straight from ``diff/`` when a probe says the kernel keeps that exact ("native diff"),
by mounting and comparing otherwise.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import os
import stat

from .. import TYPE_CHECKING
from ..errors import DriverError
from ..fsutil import directory_size, make_temp_dir, rmtree
from ..idtools import IDMap, root_pair, to_host
from . import overlay_mount as om
from . import overlay_probe as probe
from .base import (
    ApplyDiffOpts,
    CreateOpts,
    DriverOptions,
    MountOpts,
    NaiveDiff,
    StagedDiff,
    naive_apply_failure,
)
from .overlay_links import LINK_DIR, generate_link_id, recreate_symlinks, write_file
from .overlay_options import parse_options

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import BinaryIO, Literal

    from ..archive.apply import ApplyOptions, ApplyResult
    from ..archive.changes import Change
    from ..dedup import DedupResult
    from .base import Mappings, StagingDiffer
    from .quota import Control, Quota

DEFAULT_PERMS = 0o555
STAGING_DIR = "staging"
TEMP_DIR_NAME = "tempdirs"
LOWER_FILE = "lower"
MAX_DEPTH = 500
STAGING_LOCK_FILE = "staging.lock"
_NOT_LAYERS = {LINK_DIR, STAGING_DIR, TEMP_DIR_NAME, "backingFsBlockDev", probe.MOUNT_PROGRAM_FLAG_FILE}
_CONTAINERS_OVERRIDE_XATTR = "user.containers.override_stat"


def _format_override_xattr(uid: int, gid: int, mode: int) -> bytes:
    kind = "dir" if stat.S_ISDIR(mode) else "file"
    return f"{uid}:{gid}:{stat.S_IMODE(mode):04o}:{kind}".encode()


def _read_override_xattr(path: str) -> tuple[int, int, int] | None:
    """uid, gid and permission bits recorded by force_mask, if any."""
    try:
        raw = os.getxattr(path, _CONTAINERS_OVERRIDE_XATTR, follow_symlinks=False)
    except OSError:
        return None
    parts = raw.decode(errors="replace").split(":")
    if len(parts) < 3:
        return None
    try:
        return int(parts[0]), int(parts[1]), int(parts[2], 8) & 0o7777
    except ValueError:
        return None


def _mkdir_as(path: str, mode: int, uid: int, gid: int, exist_ok: bool = False) -> None:
    """mkdir (mode under the umask, as Go's os.Mkdir) and chown to the layer's root owner."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not exist_ok:
            raise
    os.chown(path, uid, gid)


def _maybe_mount_root(path: str, parent: str) -> bool:
    """False when ``path`` is missing or on ``parent``'s device, so cannot be the root of an
    overlay or FUSE mount (each has a device of its own); then mountinfo need not be read."""
    try:
        return os.lstat(path).st_dev != os.lstat(parent).st_dev
    except OSError:
        return False


def _remove_all(path: str) -> None:
    """Remove a layer directory even when mounts or read-only dirs are left inside it."""
    from ..fsutil import remove_tree  # threaded: a cold-cache delete of a big layer waits on I/O

    try:
        remove_tree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    from ..mountinfo import mount_points

    prefix = path.rstrip("/") + "/"
    for mp in sorted((p for p in mount_points() if p.startswith(prefix)), key=len, reverse=True):
        try:
            om.unmount(mp)
        except OSError:
            pass
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            try:
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
            except OSError:
                pass
    remove_tree(path)


class _RefCounter:
    """Per-process mount references, re-synced with the kernel (Go's graphdriver.RefCounter).

    The first look at a path counts an existing mount (left by another process), and a path
    found unmounted (someone else unmounted it) resets to zero.
    """

    def __init__(self, magic: int) -> None:
        self.magic = magic
        self._counts: dict[str, tuple[bool, int]] = {}
        self._lock = _thread.allocate_lock()

    def _step(self, path: str, delta: int) -> int:
        with self._lock:
            checked, count = self._counts.get(path, (False, 0))
            mounted = om.is_mounted_as(path, self.magic)
            if not checked:
                if mounted:
                    count += 1
            elif not mounted:
                count = 0
            count += delta
            if count <= 0:
                self._counts.pop(path, None)
            else:
                self._counts[path] = (True, count)
            return count

    def increment(self, path: str) -> int:
        return self._step(path, 1)

    def decrement(self, path: str) -> int:
        return self._step(path, -1)


class OverlayDriver(NaiveDiff):
    """Go's overlay graph driver, over kernel overlayfs or a FUSE mount program."""

    name = "overlay"

    def __init__(self, options: DriverOptions) -> None:
        opts = parse_options(options.options)
        if opts.layer_stores:
            # Go's read-only additional layer stores serve layers to image pulls through an API
            # (LookupAdditionalLayer) we do not have: refuse rather than ignore them.  Layers Go
            # already made from one (a diff symlinked into the store) are read as usual.
            raise DriverError("overlay: additional layer stores are not supported by this "
                              f'implementation (additionallayerstore "{opts.layer_stores[0][0]}")')
        self.options = opts
        self.home = os.path.join(options.root, "overlay")
        self.image_store = options.image_store
        self.runhome = os.path.join(options.run_root, os.path.basename(self.home))
        os.makedirs(os.path.join(self.home, LINK_DIR), mode=0o755, exist_ok=True)
        from ..mountinfo import MountEntry, entries

        mounts: list[MountEntry] | None
        try:
            mounts = entries()  # read once for the backing file system and make_private below
        except OSError:
            mounts = None  # each looks (and fails) for itself, as before
        magic, self.backing_fs = probe.backing_fs(self.home, mounts)
        if self.image_store:
            os.makedirs(os.path.join(self.image_store, "overlay", LINK_DIR), mode=0o755, exist_ok=True)
        os.makedirs(self.runhome, mode=0o700, exist_ok=True)

        if not opts.mount_program and not probe.supports_native_overlay(self.home, self.runhome,
                                                                         self.backing_fs):
            import shutil

            found = shutil.which("fuse-overlayfs")
            if found:
                opts.mount_program = found
        rootless = probe.rootless()
        if opts.mount_program:
            if rootless and magic in probe.NETWORK_FS_MAGICS and opts.force_mask is None:
                # A FUSE mount over a network file system cannot own files as the namespace's IDs.
                opts.force_mask = 0o700
                from ..lazylog import LazyLogger

                LazyLogger(__name__).warning(
                    "Network file system detected as backing store.  Enforcing overlay option "
                    '`force_mask="700"`.  Add it to storage.conf to silence this warning')
            fd = os.open(os.path.join(self.home, probe.MOUNT_PROGRAM_FLAG_FILE),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"true")
            finally:
                os.close(fd)
        elif magic in (probe.FS_MAGIC_AUFS, om.FS_MAGIC_OVERLAY, probe.FS_MAGIC_ECRYPTFS):
            raise DriverError(f"'overlay' is not supported over {self.backing_fs}, a mount_program is "
                              "required: backing file system is unsupported for this graph driver")
        elif rootless and magic in probe.NETWORK_FS_MAGICS:
            raise DriverError("a network file system with user namespaces is not supported.  Please "
                              "use a mount_program: backing file system is unsupported for this "
                              "graph driver")
        if opts.use_composefs:
            if rootless:
                raise DriverError("composefs is not supported in user namespaces")
            raise DriverError("composefs helper program not found: composefs is not supported by "
                              "this implementation")

        self.using_metacopy = False
        self._supports_volatile: bool | None = None
        self._supports_idmapped: bool | None = None
        if opts.mount_program:
            self.supports_dtype = True
            self._supports_volatile = True
        else:
            self.supports_dtype = probe.check_overlay_support(self.home, self.runhome, self.backing_fs)
            feature = f"metacopy({opts.mount_options})"
            cached = probe.cached_feature(self.runhome, feature)
            if cached is not None:
                self.using_metacopy = cached[0]
            else:
                self.using_metacopy = probe.does_metacopy(self.home, opts.mount_options)
                probe.record_feature(self.runhome, feature, self.using_metacopy)

        # XFS project quotas for container layers, as Go: tried on every XFS home (which makes
        # its backingFsBlockDev node), an error only when a limit was asked for.
        self.quota_ctl: Control | None = None
        if magic == probe.FS_MAGIC_XFS:
            from .quota import Control

            try:
                self.quota_ctl = Control(self.home)
            except (DriverError, OSError) as e:
                if opts.quota_size > 0 or opts.quota_inodes > 0:
                    text = str(e) if isinstance(e, DriverError) else (e.strerror or str(e))
                    raise DriverError("storage options overlay.size and overlay.inodes not supported. "
                                      f"Filesystem does not support Project Quota: {text}") from e
        elif opts.quota_size > 0 or opts.quota_inodes > 0:
            raise DriverError("storage option overlay.size and overlay.inodes only supported for "
                              f"backingFS XFS. Found {self.backing_fs}")

        if not opts.skip_mount_home:
            try:
                om.make_private(self.home, mounts)
            except OSError as e:
                raise DriverError(f"overlay: failed to make mount private: {e}") from e

        self._ctr = _RefCounter(om.FS_MAGIC_FUSE if opts.mount_program else om.FS_MAGIC_OVERLAY)
        self._naive_only: bool | None = None
        self._staging_locks: dict[str, int] = {}
        self._staging_mutex = _thread.allocate_lock()

    # -- probes ----------------------------------------------------------------------------------
    def use_naive_diff(self) -> bool:
        """Whether Diff/Changes must mount and compare (mount program, or a kernel that lies)."""
        if self._naive_only is None:
            if self.options.mount_program:
                self._naive_only = True
            else:
                feature = f"native-diff({self.options.mount_options})"
                cached = probe.cached_feature(self.runhome, feature)
                if cached is not None:
                    self._naive_only = not cached[0]
                else:
                    problem = probe.native_diff_problem(self.home, self.options.mount_options)
                    text = ""
                    if problem:
                        text = ("Not using native diff for overlay, this may cause degraded performance "
                                f"for building images: {problem}")
                    self._naive_only = bool(problem)
                    try:
                        probe.record_feature(self.runhome, feature, not problem, text)
                    except OSError:
                        pass
        return self._naive_only

    def supports_volatile(self) -> bool:
        if self._supports_volatile is None:
            cached = probe.cached_feature(self.runhome, "volatile")
            if cached is not None:
                self._supports_volatile = cached[0]
            else:
                try:
                    self._supports_volatile = probe.does_volatile(self.home)
                    probe.record_feature(self.runhome, "volatile", self._supports_volatile)
                except OSError:
                    self._supports_volatile = False
        return self._supports_volatile

    def supports_idmapped_mounts(self) -> bool:
        """Whether overlay works over kernel ID-mapped lower dirs here (Go's supportsIDmappedMounts),
        probed once per run root and cached as Go's ``idmapped-lower-dir-<bool>`` record."""
        if self._supports_idmapped is None:
            self._supports_idmapped = self._probe_idmapped()
        return self._supports_idmapped

    def _probe_idmapped(self) -> bool:
        if os.geteuid() != 0:  # Go's test too: uid 0 of a rootless namespace probes and records
            return False  # as Go: not probed, not recorded
        feature = "idmapped-lower-dir"
        cached = probe.cached_feature(self.runhome, feature)
        if cached is not None:
            return cached[0]
        from .overlay_idmap import supports_idmapped_lower_layers

        try:
            supported = supports_idmapped_lower_layers(self.home)
        except OSError:
            supported = False
        probe.record_feature(self.runhome, feature, supported)
        return supported

    def supports_shifting(self, uid_map: Sequence[IDMap] = (), gid_map: Sequence[IDMap] = ()) -> bool:
        """Whether a mount can show the layer with these maps applied (Go's SupportsShifting, with
        its store's canUseShifting): fuse-overlayfs mappings or kernel ID-mapped lower dirs.

        Both only for contiguous maps, as Go 1.43 (fuse-overlayfs maps the upper layer too).
        ``_CONTAINERS_OVERLAY_DISABLE_IDMAP=yes`` turns shifting off, as newer Go does;
        ``_TEST_FORCE_SUPPORT_SHIFTING=yes-please`` turns it on, as Go 1.43 does.
        """
        if os.environ.get("_CONTAINERS_OVERLAY_DISABLE_IDMAP") == "yes":
            return False
        if not (_contiguous(uid_map) and _contiguous(gid_map)):
            return False
        if os.environ.get("_TEST_FORCE_SUPPORT_SHIFTING") == "yes-please":
            return True
        if self.options.mount_program:
            return True
        return self.supports_idmapped_mounts()

    def _idmapped_lowers(self, opts: MountOpts) -> bool:
        """Whether this mount reads its lower dirs through kernel ID-mapped mounts."""
        return bool(opts.uid_map and opts.gid_map and not opts.disable_shifting
                    and not self.options.mount_program and self.supports_shifting(opts.uid_map, opts.gid_map)
                    and self.supports_idmapped_mounts())

    def status(self) -> list[tuple[str, str]]:
        def b(v: bool) -> str:
            return "true" if v else "false"

        return [
            ("Backing Filesystem", self.backing_fs),
            ("Supports d_type", b(self.supports_dtype)),
            ("Native Overlay Diff", b(not self.use_naive_diff())),
            ("Using metacopy", b(self.using_metacopy)),
            ("Supports shifting", b(self.supports_shifting())),
            ("Supports volatile", b(self.supports_volatile())),
        ]

    # -- locations -------------------------------------------------------------------------------
    def _home_for_image_store(self) -> str:
        return os.path.join(self.image_store, self.name) if self.image_store else self.home

    def _all_image_stores(self) -> list[str]:
        stores = list(self.options.image_stores)
        if self.image_store:
            stores.insert(0, self.image_store)
        return stores

    def _dir2(self, id: str, use_image_store: bool = False) -> tuple[str, str, bool]:
        """(layer dir, home it belongs to, whether it lives in a read-only additional store)."""
        homedir = self._home_for_image_store() if use_image_store else self.home
        path = os.path.normpath(os.path.join(homedir, id))
        if not os.path.exists(path):
            for store in self._all_image_stores():
                candidate = os.path.normpath(os.path.join(store, self.name, id))
                if os.path.exists(candidate):
                    return candidate, homedir, True
        return path, homedir, False

    def _dir(self, id: str) -> str:
        return self._dir2(id)[0]

    def diff_root(self, id: str) -> str:
        return self._diff_path(id)

    def diff_lowers(self, id: str) -> list[str]:
        """Lower diff dirs, nearest first: Go's overlay file getter falls back to them."""
        return self._lower_diff_paths(id)

    def _diff_path(self, id: str) -> str:
        diff = os.path.join(self._dir(id), "diff")
        try:
            target = os.readlink(diff)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return diff
            raise
        if not os.path.isabs(target):
            raise DriverError(f'linkpath must be absolute (got: "{target}")')
        return target  # an additional layer store's diff

    def _merged_dir(self, id: str, dir: str, in_additional_store: bool) -> str:
        # Mounting a layer of a read-only store must not write into that store.
        if in_additional_store:
            return os.path.join(self.runhome, id, "merged")
        return os.path.join(dir, "merged")

    def metadata(self, id: str) -> dict[str, str]:
        dir, _, in_additional = self._dir2(id)
        if not os.path.exists(dir):
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", dir)
        meta = {
            "WorkDir": os.path.join(dir, "work"),
            "MergedDir": self._merged_dir(id, dir, in_additional),
            "UpperDir": os.path.join(dir, "diff"),
        }
        lowers = self._lower_dirs(id)
        if lowers:
            meta["LowerDir"] = ":".join(lowers)
        return meta

    def exists(self, id: str) -> bool:
        return os.path.exists(self._dir(id))

    def list_layers(self) -> list[str]:
        out: list[str] = []
        with os.scandir(self.home) as it:
            for entry in it:
                if entry.name in _NOT_LAYERS or not entry.is_dir(follow_symlinks=False):
                    continue
                out.append(entry.name)
        return out

    def additional_image_stores(self) -> list[str]:
        return list(self.options.image_stores)

    # -- creating and removing ---------------------------------------------------------------------
    def create(self, id: str, parent: str, opts: CreateOpts | None, read_write: bool) -> None:
        storage_opt = dict(opts.storage_opt) if opts else {}
        quota = None
        if read_write:
            if storage_opt and self.quota_ctl is None:
                raise DriverError("--storage-opt is supported only for overlay over xfs with 'pquota' "
                                  "mount option")
            if self.options.force_mask is not None and not self.options.mount_program:
                raise DriverError("overlay: force_mask option for writeable layers is only supported "
                                  "with a mount_program")
            if self.quota_ctl is not None:
                quota = self._layer_quota(storage_opt)
        else:
            # Go checks only these two here; other options of a read-only layer go unread.
            if "size" in storage_opt:
                raise DriverError("--storage-opt size is only supported for ReadWrite Layers")
            if "inodes" in storage_opt:
                raise DriverError("--storage-opt inodes is only supported for ReadWrite Layers")
        self._create(id, parent, opts, read_only=not read_write, quota=quota)

    def _layer_quota(self, storage_opt: dict[str, str]) -> Quota:
        """A container layer's limits: its ``size``/``inodes`` options, else the driver's."""
        from .overlay_options import ram_in_bytes
        from .quota import Quota

        quota = Quota(self.options.quota_size, self.options.quota_inodes)
        for key, val in storage_opt.items():
            name = key.lower()
            if name == "size":
                quota.size = ram_in_bytes(val)
            elif name == "inodes":
                if not val.isdigit():
                    raise DriverError(f'strconv.ParseUint: parsing "{val}": invalid syntax')
                quota.inodes = int(val)
            else:
                raise DriverError(f"unknown option {name}")
        return quota

    def _create(self, id: str, parent: str, opts: CreateOpts | None, read_only: bool,
                quota: Quota | None = None) -> None:
        dir, homedir, _ = self._dir2(id, read_only)
        uid_map = opts.uid_map if opts else []
        gid_map = opts.gid_map if opts else []
        os.makedirs(os.path.join(homedir, LINK_DIR), mode=0o755, exist_ok=True)
        root_uid, root_gid = to_host(0, uid_map), to_host(0, gid_map)
        os.makedirs(os.path.dirname(dir), mode=0o755, exist_ok=True)

        st_uid, st_gid, st_mode = root_uid, root_gid, DEFAULT_PERMS
        if parent:
            parent_diff = os.path.join(self._dir(parent), "diff")
            override = _read_override_xattr(parent_diff)
            if override is not None:
                st_uid, st_gid, st_mode = override
            else:
                pst = os.stat(parent_diff)
                st_uid, st_gid, st_mode = pst.st_uid, pst.st_gid, stat.S_IMODE(pst.st_mode)

        if os.path.lexists(dir):
            # A leftover of a crash: remove it with its link so no two links name one layer.
            self.remove(id)

        _mkdir_as(dir, 0o700, root_uid, root_gid)
        try:
            if quota is not None and self.quota_ctl is not None:
                # Before anything is made in it: the project ID is inherited, not applied later.
                self.quota_ctl.set_quota(dir, quota)
            forced_uid, forced_gid, forced_mode = st_uid, st_gid, st_mode
            if self.options.force_mask is not None:
                forced_uid, forced_gid, forced_mode = root_uid, root_gid, self.options.force_mask
            diff = os.path.join(dir, "diff")
            _mkdir_as(diff, forced_mode, forced_uid, forced_gid)
            if self.options.force_mask is not None:
                os.setxattr(diff, _CONTAINERS_OVERRIDE_XATTR,
                            _format_override_xattr(st_uid, st_gid, stat.S_IFDIR | st_mode))
            lid = generate_link_id()
            os.symlink(os.path.join("..", id, "diff"), os.path.join(homedir, LINK_DIR, lid))
            write_file(os.path.join(dir, "link"), lid.encode(), 0o644)
            _mkdir_as(os.path.join(dir, "work"), 0o700, forced_uid, forced_gid)
            _mkdir_as(os.path.join(dir, "merged"), 0o700, forced_uid, forced_gid)
            if not parent:
                _mkdir_as(os.path.join(dir, "empty"), 0o700, forced_uid, forced_gid)
                return
            lower = self._get_lower(parent)
            if lower:
                write_file(os.path.join(dir, LOWER_FILE), lower.encode(), 0o666)
        except BaseException:
            try:
                lid_path = os.path.join(dir, "link")
                with open(lid_path, encoding="utf-8") as f:
                    os.unlink(os.path.join(homedir, LINK_DIR, f.read().strip()))
            except OSError:
                pass
            rmtree(dir, ignore_errors=True)
            raise

    def create_from_template(self, id: str, template: str, parent: str, opts: CreateOpts | None,
                             read_write: bool) -> None:
        """Go's overlay CreateFromTemplate: a child of the template itself (its files are in the
        lowers), whatever parent the layer's record names."""
        self.create(id, template, opts, read_write)

    def update_layer_id_map(self, id: str, old: Mappings, new: Mappings, mount_label: str = "") -> None:
        """Re-own the inherited files through a mount, so they are copied up (Go's way).

        The copies land in ``diff``, which then moves below the layer's own changes as
        ``diff1`` (older ``diffN`` move up one), and an empty ``diff`` takes its place: a diff of
        the layer against its parent still holds only what the layer itself changed.
        """
        from .chown import chown_by_maps

        dir = self._dir(id)
        diff_dir = os.path.join(dir, "diff")
        root_uid, root_gid = root_pair(new[0], new[1])
        options = [o for o in self.options.mount_options.split(",") if o]
        layer_fs = self.get(id, MountOpts(mount_label=mount_label, options=options))
        try:
            chown_by_maps(layer_fs, old[0], old[1], new[0], new[1], parallel=True)
        finally:
            self.put(id)
        perms = DEFAULT_PERMS
        if self.options.force_mask is not None:
            perms = self.options.force_mask
        else:
            try:
                perms = stat.S_IMODE(os.stat(diff_dir).st_mode)
            except FileNotFoundError:
                pass
        n = 0
        while os.path.lexists(_with_suffix(diff_dir, n)):
            n += 1
        for i in range(n, 0, -1):
            os.rename(_with_suffix(diff_dir, i - 1), _with_suffix(diff_dir, i))
        # The work dir may still point at the old upper dir in its index: start it afresh.
        work = os.path.join(dir, "work")
        try:
            _remove_all(work)
        except OSError:
            pass
        else:
            _mkdir_as(work, DEFAULT_PERMS, root_uid, root_gid)
        _mkdir_as(diff_dir, perms, root_uid, root_gid)

    def _get_lower(self, parent: str) -> str:
        """The "lower" file content of a child of ``parent``: its link, then its lowers."""
        parent_dir = self._dir(parent)
        if not os.path.lexists(parent_dir):
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", parent_dir)
        link_file = os.path.join(parent_dir, "link")
        try:
            with open(link_file, encoding="utf-8") as f:
                parent_link = f.read()
        except FileNotFoundError:
            self.recreate_symlinks()
            with open(link_file, encoding="utf-8") as f:
                parent_link = f.read()
        lowers = [os.path.join(LINK_DIR, parent_link)]
        try:
            with open(os.path.join(parent_dir, LOWER_FILE), encoding="utf-8") as f:
                lowers.extend(f.read().split(":"))
        except FileNotFoundError:
            pass
        return ":".join(lowers)

    def _lower_dirs(self, id: str) -> list[str]:
        """Absolute diff dirs of every layer below ``id``, nearest first."""
        try:
            with open(os.path.join(self._dir(id), LOWER_FILE), encoding="utf-8") as f:
                content = f.read()
        except FileNotFoundError:
            return []
        out: list[str] = []
        for s in content.split(":"):
            lower = self._dir(s)
            try:
                target = os.readlink(lower)
            except FileNotFoundError:
                self.recreate_symlinks()
                target = os.readlink(lower)
            out.append(os.path.normpath(self._dir(os.path.join("link", target))))
        return out

    def _lower_diff_paths(self, id: str) -> list[str]:
        out: list[str] = []
        for lower in self._lower_dirs(id):
            try:
                target = os.readlink(lower)
                out.append(target if os.path.isabs(target) else lower)
            except OSError:
                out.append(lower)
        return out

    def remove(self, id: str) -> None:
        dir = self._dir(id)
        try:
            with open(os.path.join(dir, "link"), encoding="utf-8") as f:
                lid = f.read()
            if lid:
                try:
                    # The link sits next to the layer (the image store's l/ for its layers).
                    os.unlink(os.path.join(os.path.dirname(dir), LINK_DIR, lid))
                except OSError:
                    pass
        except OSError:
            pass
        merged = os.path.join(dir, "merged")
        if _maybe_mount_root(merged, dir) and om.is_mounted_as(merged, self._ctr.magic):
            try:
                om.unmount(merged)
            except OSError:
                pass
        _remove_all(dir)
        if self.quota_ctl is not None:
            self.quota_ctl.clear_quota(dir)

    def recreate_symlinks(self) -> None:
        """Repair ``l/`` and the ``link`` files after a crash or a careless ``rm`` (Go's logic)."""
        recreate_symlinks(self.home, self._dir)

    # -- mounting --------------------------------------------------------------------------------
    def get(self, id: str, opts: MountOpts) -> str:
        dir, _, in_additional = self._dir2(id)
        if not os.path.exists(dir):
            raise FileNotFoundError(errno.ENOENT, f"stat {dir}: no such file or directory", dir)
        if self._idmapped_lowers(opts):
            root_uid = root_gid = 0  # the layer stays unshifted on disk; only its lowers are mapped
        else:
            root_uid, root_gid = to_host(0, opts.uid_map), to_host(0, opts.gid_map)
        merged = self._merged_dir(id, dir, in_additional)
        if not os.path.isdir(merged):
            os.makedirs(os.path.dirname(merged), mode=0o700, exist_ok=True)
            try:
                _mkdir_as(merged, 0o700, root_uid, root_gid)
            except FileExistsError:
                pass
        if self._ctr.increment(merged) > 1:
            return merged
        try:
            self._mount(id, dir, merged, in_additional, opts, root_uid, root_gid)
        except BaseException:
            if self._ctr.decrement(merged) <= 0:
                try:
                    om.umount(merged)
                except OSError:
                    pass
            raise
        return merged

    def _mount(self, id: str, dir: str, merged: str, in_additional: bool, opts: MountOpts,
               root_uid: int, root_gid: int) -> None:
        read_write = not in_additional
        disable_shifting = opts.disable_shifting or not self.supports_shifting(opts.uid_map, opts.gid_map)
        opts_list = list(opts.options)
        global_opts = [o for o in self.options.mount_options.split(",") if o]
        if not opts_list:
            opts_list = global_opts
        elif "metacopy=on" in global_opts and "metacopy=on" not in opts_list and self.using_metacopy:
            opts_list.append("metacopy=on")
        if not self.using_metacopy:
            opts_list = [o for o in opts_list if o != "metacopy=on"]
        if "ro" in opts_list:
            read_write = False

        try:
            with open(os.path.join(dir, LOWER_FILE), encoding="utf-8") as f:
                split_lowers = f.read().split(":")
        except FileNotFoundError:
            split_lowers = [""]
        if len(split_lowers) > MAX_DEPTH:
            raise DriverError("max depth exceeded")

        abs_lowers: list[str] = []
        rel_lowers: list[str] = []
        perms = DEFAULT_PERMS if self.options.force_mask is None else self.options.force_mask
        perms_known = False
        n = 1
        while os.path.exists(os.path.join(dir, f"diff{n}")):
            if not perms_known:
                perms, perms_known = stat.S_IMODE(os.stat(os.path.join(dir, "diff1")).st_mode), True
            abs_lowers.append(os.path.join(dir, f"diff{n}"))
            rel_lowers.append(os.path.join(id, f"diff{n}"))
            n += 1

        for l in split_lowers:
            if not l:
                continue
            newpath = os.path.join(self.home, l)
            lower = ""
            rel = l
            try:
                st = os.stat(newpath)
                lower = newpath
            except FileNotFoundError:
                for store in self._all_image_stores():
                    candidate = os.path.join(store, self.name, l)
                    try:
                        st = os.stat(candidate)
                    except OSError:
                        continue
                    lower = rel = candidate
                    break
                if not lower:
                    self.recreate_symlinks()
                    lower = newpath
                    try:
                        st = os.stat(newpath)
                    except OSError as e:
                        raise DriverError(f'can\'t stat lower layer "{newpath}": {e}') from e
            if not perms_known:
                perms, perms_known = stat.S_IMODE(st.st_mode), True
            os.readlink(lower)  # a lower must be one of our links; fail clearly otherwise
            abs_lowers.append(lower)
            rel_lowers.append(rel)
            n = 1
            while os.path.exists(f"{lower}/../diff{n}"):
                abs_lowers.append(f"{lower}/../diff{n}")
                rel_lowers.append(f"{rel}/../diff{n}")
                n += 1

        if not abs_lowers:
            abs_lowers.append(os.path.join(dir, "empty"))
            rel_lowers.append(os.path.join(id, "empty"))

        diff_dir = os.path.join(dir, "diff")
        if not os.path.isdir(diff_dir):
            os.makedirs(diff_dir, mode=perms, exist_ok=True)
        if not in_additional:
            os.chown(diff_dir, root_uid, root_gid)
        workdir = os.path.join(dir, "work")

        if not self.options.mount_program and probe.rootless():
            opts_list.append("userxattr")
        if opts.volatile and "volatile" not in opts_list and self.supports_volatile():
            opts_list.append("volatile")

        def build(lowers: list[str], upper: str, work: str) -> str:
            if read_write:
                data = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
            else:
                data = f"lowerdir={upper}:{':'.join(lowers)}"
            if opts_list:
                data += "," + ",".join(opts_list)
            return _format_mount_label(data, opts.mount_label)

        mapped = None
        if self._idmapped_lowers(opts):
            from .overlay_idmap import MappedLowers

            try:
                mapped = MappedLowers(os.path.join(self.home, id, "mapped"), abs_lowers, LINK_DIR,
                                      opts.uid_map, opts.gid_map)
            except OSError as e:
                raise DriverError(f"{e.strerror or e}") from e
            abs_lowers = mapped.lowers
            rel_lowers = [os.path.relpath(p, self.home) for p in mapped.lowers]

        mount_data = build(abs_lowers, diff_dir, workdir)

        # overlay refuses a second volatile mount of the same upper while this marker exists.
        rmtree(os.path.join(workdir, "work", "incompat", "volatile"), ignore_errors=True)

        try:
            if self.options.mount_program:
                data = mount_data
                if not disable_shifting:
                    data = _append_mappings(data, opts.uid_map, opts.gid_map)
                if self.options.force_mask is not None:
                    data += ",xattr_permissions=2"
                om.mount_program(self.options.mount_program, data, merged, self.home)
            elif len(mount_data) < om.PAGE_SIZE:
                flags, data = om.parse_options(mount_data)
                om.mount("overlay", merged, "overlay", flags, data)
            else:
                if read_write:
                    mount_data = build(rel_lowers, os.path.join(id, "diff"), os.path.join(id, "work"))
                else:
                    mount_data = build(rel_lowers, diff_dir, workdir)
                target = merged if in_additional else os.path.join(id, "merged")
                flags, data = om.parse_options(mount_data)
                om.mount_relative(self.home, target, flags, data)
        except OSError as e:
            raise DriverError(f"creating overlay mount to {merged}, mount_data={mount_data!r}: "
                              f"{e.strerror or e}") from e
        finally:
            if mapped is not None:
                mapped.close()  # the overlay mount holds its own references to them

    def put(self, id: str) -> None:
        dir, _, in_additional = self._dir2(id)
        if not os.path.exists(dir):
            raise FileNotFoundError(errno.ENOENT, f"stat {dir}: no such file or directory", dir)
        mountpoint = self._merged_dir(id, dir, in_additional)
        if self._ctr.decrement(mountpoint) > 0:
            return
        mapped = os.path.join(self.home, id, "mapped")
        if os.path.isdir(mapped):
            for name in os.listdir(mapped):
                try:
                    om.umount(os.path.join(mapped, name), om.MNT_DETACH)
                except OSError:
                    pass
        unmounted = False
        if self.options.mount_program:
            unmounted = om.fuse_unmount(mountpoint)
        if not unmounted:
            try:
                om.umount(mountpoint, om.MNT_DETACH)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOENT):
                    raise DriverError(f'unmounting "{mountpoint}": {e.strerror}') from e
        if in_additional:
            if mountpoint.startswith(self.runhome) and os.path.basename(mountpoint) == "merged":
                rmtree(os.path.dirname(mountpoint), ignore_errors=True)
            return
        # Swap in a fresh empty dir by rename so "merged" never goes missing, even for a moment.
        try:
            st = os.stat(mountpoint)
            uid, gid = st.st_uid, st.st_gid
        except FileNotFoundError:
            uid = gid = 0
        tmp = os.path.join(dir, "merged.1")
        try:
            _mkdir_as(tmp, 0o700, uid, gid)
        except FileExistsError:
            pass
        try:
            os.rename(tmp, mountpoint)
        except OSError as e:
            raise DriverError(f'replacing mount point "{mountpoint}": {e.strerror}') from e

    def cleanup(self) -> None:
        """Drop unused staging dirs and the private bind mount of the home (Go's Cleanup)."""
        if self._prune_staging():
            return
        if not self.options.skip_mount_home:
            om.unmount(self.home)

    # -- diffs -----------------------------------------------------------------------------------
    def _is_parent(self, id: str, parent: str) -> bool:
        try:
            lowers = self._lower_dirs(id)
        except OSError:
            return False
        if not parent:
            return not lowers
        if not lowers:
            return False
        return os.path.dirname(lowers[0]) == self._dir(parent)

    def _whiteouts(self) -> Literal["overlay", "aufs"]:
        """Go's getWhiteoutFormat: under a mount program whiteouts stay ``.wh.`` files (which
        fuse-overlayfs reads, and an unprivileged user can create), else the kernel's form."""
        return "aufs" if self.options.mount_program else "overlay"

    def _apply_options(self, opts: ApplyDiffOpts, whiteouts: Literal["plain", "overlay", "aufs"]
                       ) -> ApplyOptions:
        from ..archive.apply import ApplyOptions

        return ApplyOptions(
            whiteouts=whiteouts,
            uid_map=list(opts.uid_map) or None,
            gid_map=list(opts.gid_map) or None,
            ignore_chown_errors=opts.ignore_chown_errors or self.options.ignore_chown_errors,
            force_mask=self.options.force_mask,
            tar_split=opts.tar_split,
            overlay_xattr_prefix=probe.overlay_xattr(""),
        )

    def apply_diff(self, id: str, parent: str, src: BinaryIO, opts: ApplyDiffOpts) -> ApplyResult:
        from ..archive.apply import InsufficientIDs, apply_layer

        if not self._is_parent(id, parent):
            # Not our real parent: apply into the mounted union, deleting as a plain tree would.
            target = self.get(id, MountOpts(mount_label=opts.mount_label))
            try:
                return apply_layer(src, target, self._apply_options(opts, "plain"))
            except InsufficientIDs as e:
                raise naive_apply_failure(e) from e
            finally:
                self.put(id)
        try:
            return apply_layer(src, self._diff_path(id), self._apply_options(opts, self._whiteouts()))
        except InsufficientIDs as e:
            # Go unpacks in a chrooted child process; its failure reaches the caller so.
            raise e.wrapped("unpacking failed (error: exit status 1; output: {})") from e

    def diff(self, id: str, parent: str, out: BinaryIO, uid_map: Sequence[IDMap] = (),
             gid_map: Sequence[IDMap] = (), parent_maps: Mappings = ((), ())) -> int:
        if self.use_naive_diff() or not self._is_parent(id, parent):
            return super().diff(id, parent, out, uid_map, gid_map, parent_maps)
        from ..archive.export import export_overlay_diff

        return export_overlay_diff(self._diff_path(id), self._lower_diff_paths(id), out,
                                   list(uid_map) or None, list(gid_map) or None)

    def changes(self, id: str, parent: str, maps: Mappings = ((), ()),
                parent_maps: Mappings = ((), ())) -> list[Change]:
        if self.use_naive_diff() or not self._is_parent(id, parent):
            return super().changes(id, parent, maps, parent_maps)
        from ..archive.changes import changes_overlay

        return changes_overlay(self._diff_path(id), self._lower_diff_paths(id))

    def diff_size(self, id: str, parent: str, maps: Mappings = ((), ()),
                  parent_maps: Mappings = ((), ())) -> int:
        if not self._is_parent(id, parent):
            return super().diff_size(id, parent, maps, parent_maps)
        return directory_size(self._diff_path(id))

    def dedup(self, layers: list[str], hash_method: str) -> DedupResult:
        """Share the extents of identical files across the layers' diff dirs (Go's Dedup);
        layers of read-only additional stores are left alone, as in Go."""
        from ..dedup import dedup_dirs

        dirs: list[str] = []
        for id in layers:
            dir, _, in_additional = self._dir2(id)
            if not in_additional and os.path.exists(dir):
                dirs.append(os.path.join(dir, "diff"))
        return dedup_dirs(dirs, hash_method)

    # -- staged apply ----------------------------------------------------------------------------
    def prepare_staged(self, src: BinaryIO, opts: ApplyDiffOpts) -> StagedDiff:
        """Apply a diff into a fresh staging dir; needs no store lock (Go's ApplyDiffWithDiffer).

        The staging dir is locked while in use so ``cleanup`` of another process leaves it alone.
        """
        from ..archive.apply import apply_layer
        from ..archive.tarsplit import TarSplitWriter

        layer_dir, apply_dir, lock_fd = self._new_staging_dir()
        try:
            ts_path = os.path.join(layer_dir, "tar-split.gz")
            with open(ts_path, "wb") as ts_file:
                writer = TarSplitWriter(ts_file)
                options = self._apply_options(ApplyDiffOpts(
                    uid_map=opts.uid_map, gid_map=opts.gid_map,
                    ignore_chown_errors=opts.ignore_chown_errors, tar_split=writer), self._whiteouts())
                result = apply_layer(src, apply_dir, options)
                writer.close()
        except BaseException:
            self._release_staging(layer_dir)
            rmtree(layer_dir, ignore_errors=True)
            raise
        return StagedDiff(directory=apply_dir, result=result, tar_split=ts_path, lock_fd=lock_fd)

    def prepare_staged_differ(self, differ: StagingDiffer, opts: ApplyDiffOpts) -> StagedDiff:
        """Let a partial-pull differ write a layer into a fresh staging dir (Go's
        ApplyDiffWithDiffer with a chunked differ); no store lock is needed."""
        from ..archive.apply import ApplyResult
        from ..archive.compression import Compression

        layer_dir, apply_dir, lock_fd = self._new_staging_dir()
        try:
            options = self._apply_options(ApplyDiffOpts(
                uid_map=opts.uid_map, gid_map=opts.gid_map, ignore_chown_errors=opts.ignore_chown_errors),
                self._whiteouts())
            out = differ.apply(apply_dir, options)
        except BaseException:
            self._release_staging(layer_dir)
            rmtree(layer_dir, ignore_errors=True)
            raise
        result = ApplyResult(Compression.UNCOMPRESSED, out.compressed_digest, 0, out.uncompressed_digest,
                             out.size, out.uids, out.gids)
        staged = StagedDiff(directory=apply_dir, result=result, tar_split=out.tar_split, lock_fd=lock_fd)
        staged.toc_digest = out.toc_digest
        staged.big_data = dict(out.big_data)
        staged.big_data_files = dict(out.big_data_files)
        staged.root_dir_mode = out.root_dir_mode
        return staged

    def _new_staging_dir(self) -> tuple[str, str, int]:
        """A locked staging dir and the empty ``dir`` in it that becomes the layer's diff."""
        base_dir = os.path.join(self._home_for_image_store(), STAGING_DIR)
        os.makedirs(base_dir, mode=0o700, exist_ok=True)
        layer_dir = make_temp_dir(base_dir)
        lock_fd = os.open(os.path.join(layer_dir, STAGING_LOCK_FILE),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.lockf(lock_fd, fcntl.LOCK_EX)
        with self._staging_mutex:
            self._staging_locks[layer_dir] = lock_fd
        try:
            perms = DEFAULT_PERMS if self.options.force_mask is None else self.options.force_mask
            apply_dir = os.path.join(layer_dir, "dir")
            os.mkdir(apply_dir, perms)
        except BaseException:
            self._release_staging(layer_dir)
            rmtree(layer_dir, ignore_errors=True)
            raise
        return layer_dir, apply_dir, lock_fd

    def commit_staged(self, id: str, parent: str, staged: StagedDiff) -> None:
        """Make a staged dir the layer's diff/ by rename (Go's ApplyDiffFromStagingDirectory).

        The caller takes the tar-split and then calls ``cleanup_staged``.
        """
        diff_path = self._diff_path(id)
        if self.options.force_mask is None and parent and staged.root_dir_mode is None:
            parent_mode = stat.S_IMODE(os.stat(self._diff_path(parent)).st_mode)
            os.chmod(staged.directory, parent_mode)
        _remove_all(diff_path)
        os.rename(staged.directory, diff_path)

    def cleanup_staged(self, staged: StagedDiff) -> None:
        base = os.path.dirname(staged.directory)
        self._release_staging(base)
        rmtree(base, ignore_errors=True)

    def _release_staging(self, layer_dir: str) -> None:
        with self._staging_mutex:
            fd = self._staging_locks.pop(layer_dir, -1)
        if fd >= 0:
            try:
                os.unlink(os.path.join(layer_dir, STAGING_LOCK_FILE))
            except OSError:
                pass
            os.close(fd)

    def _prune_staging(self) -> bool:
        """Remove staging dirs nobody holds locked; True if some are still in use."""
        with self._staging_mutex:
            mine = list(self._staging_locks)
        for layer_dir in mine:
            self._release_staging(layer_dir)
        base_dir = os.path.join(self._home_for_image_store(), STAGING_DIR)
        try:
            names = os.listdir(base_dir)
        except OSError:
            return False
        busy = False
        for name in names:
            path = os.path.join(base_dir, name)
            try:
                fd = os.open(os.path.join(path, STAGING_LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
            except OSError:
                rmtree(path, ignore_errors=True)
                continue
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                busy = True
                os.close(fd)
                continue
            rmtree(path, ignore_errors=True)
            os.close(fd)
        return busy


def _with_suffix(name: str, number: int) -> str:
    """``diff``, ``diff1``, ``diff2``... (Go's nameWithSuffix)."""
    return f"{name}{number}" if number else name


def _contiguous(maps: Sequence[IDMap]) -> bool:
    """Go's idtools.IsContiguous: the ranges tile one block on both the host and container side."""
    if len(maps) < 2:
        return True
    by_host = sorted(maps, key=lambda m: m.host_id)
    by_container = sorted(maps, key=lambda m: m.container_id)
    return all(by_host[i].host_id == by_host[i - 1].host_id + by_host[i - 1].size
               and by_container[i].container_id == by_container[i - 1].container_id + by_container[i - 1].size
               for i in range(1, len(maps)))


def _selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def _format_mount_label(data: str, label: str) -> str:
    """Append the SELinux context option when SELinux is on (go-selinux FormatMountLabel)."""
    if not label or not _selinux_enabled():
        return data
    return f'{data},context="{label}"' if data else f'context="{label}"'


def _append_mappings(data: str, uid_map: Sequence[IDMap], gid_map: Sequence[IDMap]) -> str:
    """fuse-overlayfs options that shift IDs at mount time (Go's optsAppendMappings)."""
    if not uid_map:
        return data

    def render(maps: Sequence[IDMap], squash: str, mapping: str) -> str:
        if len(maps) == 1 and maps[0].size == 1:
            return f"{squash}={maps[0].host_id}"
        return mapping + "=" + ":".join(f"{m.container_id}:{m.host_id}:{m.size}" for m in maps)

    return (f"{data},{render(uid_map, 'squash_to_uid', 'uidmapping')},"
            f"{render(gid_map, 'squash_to_gid', 'gidmapping')}")
