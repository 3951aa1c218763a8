"""The vfs driver: every layer is a full copy of its parent in ``vfs/dir/<id>``.

Slow on disk space but works everywhere, and it is the driver the Go test suite defaults to.
"""

from __future__ import annotations

import os

from .. import TYPE_CHECKING
from ..errors import DriverError
from ..fsutil import copy_tree, remove_tree, rmtree
from ..idtools import to_host
from .base import (
    ApplyDiffOpts,
    CreateOpts,
    DriverOptions,
    MountOpts,
    NaiveDiff,
    NaiveIDMapUpdater,
)

if TYPE_CHECKING:
    from typing import BinaryIO

    from ..archive.apply import ApplyResult
    from ..dedup import DedupResult
    from .base import Mappings

DEFAULT_PERMS = 0o555


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "t", "true"):
        return True
    if v in ("0", "f", "false"):
        return False
    raise DriverError(f'strconv.ParseBool: parsing "{value}": invalid syntax')


class VfsDriver(NaiveDiff, NaiveIDMapUpdater):
    name = "vfs"

    def __init__(self, options: DriverOptions) -> None:
        self.home = os.path.join(options.root, "vfs")
        self.image_store = options.image_store
        self.additional_homes: list[str] = []
        self.ignore_chown_errors = False
        for opt in options.options:
            key, sep, val = opt.partition("=")
            if not sep:
                raise DriverError(f"unable to parse key/value option: {opt}")
            key = key.strip().lower()
            if key in ("vfs.imagestore", ".imagestore"):
                self.additional_homes.extend(v for v in val.split(",") if v)
            elif key == "vfs.mountopt":
                raise DriverError("vfs driver does not support mount options")
            elif key in (".ignore_chown_errors", "vfs.ignore_chown_errors"):
                self.ignore_chown_errors = _parse_bool(val)
            else:
                raise DriverError(f"vfs driver does not support {key} options")
        os.makedirs(os.path.join(self.home, "dir"), mode=0o700, exist_ok=True)

    # -- locations ---------------------------------------------------------------------------
    def _dir(self, id: str, use_image_store: bool = False) -> str:
        base = os.path.basename(id)
        if use_image_store and self.image_store:
            home = os.path.join(self.image_store, "vfs", "dir", base)
        else:
            home = os.path.join(self.home, "dir", base)
        if not os.path.lexists(home):
            candidates = list(self.additional_homes)
            if self.image_store:
                candidates.append(self.image_store)
            for extra in candidates:
                candidate = os.path.join(extra, "vfs", "dir", base)
                if os.path.isdir(candidate):
                    return candidate
        return home

    def diff_root(self, id: str) -> str:
        return self._dir(id)

    def diff_lowers(self, id: str) -> list[str]:
        return []  # a vfs layer directory holds its parents' files already

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self, id: str, parent: str, opts: CreateOpts | None, read_write: bool) -> None:
        if opts is not None and opts.storage_opt:
            raise DriverError("--storage-opt is not supported for vfs")
        uid_map = opts.uid_map if opts else []
        gid_map = opts.gid_map if opts else []
        root_uid, root_gid = to_host(0, uid_map), to_host(0, gid_map)
        path = self._dir(id, use_image_store=not read_write)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        perms = DEFAULT_PERMS
        if parent:
            st = os.stat(self._dir(parent))
            perms = st.st_mode & 0o7777
            root_uid, root_gid = st.st_uid, st.st_gid
        try:
            os.mkdir(path, 0o700)
            os.chown(path, root_uid, root_gid)
            os.chmod(path, perms)
            if parent:
                copy_tree(self.get(parent, MountOpts()), path)
        except BaseException:
            rmtree(path, ignore_errors=True)
            raise

    def create_from_template(self, id: str, template: str, parent: str, opts: CreateOpts | None,
                             read_write: bool) -> None:
        """A copy of the template's directory, as Go's vfs does (its parent's files are in it)."""
        self.create(id, template, opts, read_write)

    def update_layer_id_map(self, id: str, old: Mappings, new: Mappings, mount_label: str = "") -> None:
        """Re-own the copied files, then the layer's root: it is the new mapping's root now."""
        super().update_layer_id_map(id, old, new, mount_label)
        os.chown(self._dir(id), to_host(0, new[0]), to_host(0, new[1]))

    def remove(self, id: str) -> None:
        # Threaded, fd-relative RemoveAll: a cold-cache delete of a big layer waits on inode
        # reads, and several in flight finish sooner; read-only dirs are made writable on demand.
        remove_tree(self._dir(id))

    def get(self, id: str, opts: MountOpts) -> str:
        for opt in opts.options:
            if opt != "ro":
                raise DriverError("vfs driver does not support mount options")
        path = self._dir(id)
        if not os.path.isdir(path):
            if os.path.lexists(path):
                raise DriverError(f"{path}: not a directory")
            raise FileNotFoundError(2, "no such file or directory", path)
        return path

    def put(self, id: str) -> None:
        return None

    def exists(self, id: str) -> bool:
        return os.path.lexists(self._dir(id))

    def status(self) -> list[tuple[str, str]]:
        return []

    def metadata(self, id: str) -> dict[str, str]:
        return {}

    def cleanup(self) -> None:
        return None

    def additional_image_stores(self) -> list[str]:
        return list(self.additional_homes)

    def list_layers(self) -> list[str]:
        base = os.path.join(self.home, "dir")
        try:
            with os.scandir(base) as it:
                return [e.name for e in it if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []

    def dedup(self, layers: list[str], hash_method: str) -> DedupResult:
        """Share the extents of identical files across the layers' directories (Go's Dedup).

        Unlike Go, layers found in read-only additional image stores are left alone.
        """
        from ..dedup import dedup_dirs

        own = {os.path.join(self.home, "dir")}
        if self.image_store:
            own.add(os.path.join(self.image_store, "vfs", "dir"))
        dirs = [p for p in map(self._dir, layers) if os.path.dirname(p) in own and os.path.isdir(p)]
        return dedup_dirs(dirs, hash_method)

    def apply_diff(self, id: str, parent: str, src: BinaryIO, opts: ApplyDiffOpts) -> ApplyResult:
        # Go's vfs ApplyDiff: the driver's ignore_chown_errors option adds to the caller's.
        return self._apply_plain(id, src, opts, opts.ignore_chown_errors or self.ignore_chown_errors)

