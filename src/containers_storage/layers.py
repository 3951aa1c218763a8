"""The layer store: ``<driver>-layers/layers.json`` plus mount counts in the run root.

``ROLayerStore`` reads (additional image stores); ``LayerStore`` adds every write.  Both reload
from disk whenever another process (Go or Python) recorded a write in ``layers.lock``.
"""

from __future__ import annotations

import _thread
import os

from . import errors
from .ctx import contextmanager
from .drivers.base import ApplyDiffOpts, CreateOpts, Driver, MountOpts, StagedDiff, can_stage
from .fsutil import atomic_write, read_optional, rmtree
from .ids import PrefixIndex, unused_id
from .idtools import IDMap, maps_to_json, same_maps
from .lockfile import LockFile, get_lock_file
from .records import (
    INCOMPLETE_FLAG,
    Layer,
    apply_name_operation,
    big_data_file_name,
    dedupe,
    dumps_records,
    loads_array,
    now_rfc3339,
    reassign_names,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, BinaryIO

    from .archive.changes import Change

TAR_SPLIT_SUFFIX = ".tar-split.gz"

# Where a layer's record lives (Go's layerLocations bits).
STABLE = 1
IMAGE_STORE = 2
VOLATILE = 4
_LOCATIONS = (STABLE, IMAGE_STORE, VOLATILE)


class _NeedsWriteLock(Exception):
    """A load found damage (incomplete layers, duplicate names) that only a writer may repair."""


class ROLayerStore:
    """Layers of one store, read-only; the base of the read-write store."""

    def __init__(self, layerdir: str, rundir: str, driver: Callable[[], Driver], lock: LockFile,
                 json_paths: dict[int, str]) -> None:
        self.layerdir = layerdir
        self.rundir = rundir
        self._driver_factory = driver
        self.lock = lock
        self.json_paths = json_paths
        self._last_write: bytes | None = None
        self._json_mtimes: dict[int, int] = {}
        self._reload_mutex = _thread.allocate_lock()
        self.layers: list[Layer] = []
        self.by_id: dict[str, Layer] = {}
        self.by_name: dict[str, Layer] = {}
        self._prefix = PrefixIndex()

    @property
    def read_write(self) -> bool:
        return False

    @property
    def driver(self) -> Driver:
        """The graph driver, created on first use: listing layers never needs it."""
        return self._driver_factory()

    # -- loading -----------------------------------------------------------------------------
    def _modified(self) -> tuple[bytes, bool]:
        current, changed = self.lock.modified_since(self._last_write or b"")
        if changed or self._last_write is None:
            return current, True
        for loc, path in self.json_paths.items():
            try:
                mtime = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                mtime = 0
            if mtime != self._json_mtimes.get(loc, 0):
                return current, True
        return current, False

    def _load(self, locked_for_writing: bool) -> None:
        layers: list[Layer] = []
        ids: dict[str, Layer] = {}
        for loc in _LOCATIONS:
            path = self.json_paths.get(loc)
            if not path:
                continue
            try:
                self._json_mtimes[loc] = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                self._json_mtimes[loc] = 0
            data = read_optional(path)
            try:
                objs = loads_array(data, path)
            except ValueError as e:
                raise errors.LoadError(f'loading "{path}": {e}') from None
            read_only = not self.read_write
            for obj in objs:
                id = str(obj.get("id") or "")
                if id in ids:
                    continue
                layer = Layer(obj)
                layer.location = loc
                layer.read_only = read_only
                layers.append(layer)
                ids[id] = layer
        names: dict[str, Layer] = {}
        damaged = False
        for layer in layers:
            raw = layer.raw
            layer_names = raw.get("names")
            if layer_names:
                for name in layer_names:
                    conflict = names.get(name)
                    if conflict is not None:
                        conflict.names = [n for n in conflict.names if n != name]
                        damaged = True
                    names[name] = layer
            if self.read_write and raw.get("flags") and layer.incomplete:
                damaged = True
        if damaged:
            if not self.read_write:
                if any(l.incomplete for l in layers):
                    pass  # Go keeps using other layers of a read-only store
                else:
                    raise errors.DuplicateLayerNames()
            elif not locked_for_writing:
                raise _NeedsWriteLock()
        self.layers = layers
        self.by_id = ids
        self.by_name = names
        self._prefix = PrefixIndex(ids)
        self._load_mounts()
        if damaged and self.read_write:
            self._repair()

    def _load_mounts(self) -> None:
        """Read-only stores have no mount records."""

    def _repair(self) -> None:
        raise NotImplementedError

    def _reload_if_changed(self, locked_for_writing: bool) -> None:
        with self._reload_mutex:
            current, changed = self._modified()
            if changed:
                self._load(locked_for_writing)
                self._last_write = current

    @contextmanager
    def reading(self) -> Iterator[ROLayerStore]:
        """Hold the store's shared lock with fresh data (a writer may repair it first)."""
        self.lock.rlock()
        try:
            for _ in range(4):
                try:
                    self._reload_if_changed(self.lock.locked_for_writing)
                    break
                except _NeedsWriteLock:
                    if not isinstance(self, LayerStore):
                        raise
                    self.lock.unlock()
                    try:
                        self.driver  # noqa: B018 - storage.lock comes before layers.lock
                        with self.lock.writing():
                            self._reload_if_changed(True)
                    finally:
                        self.lock.rlock()
            yield self
        finally:
            self.lock.unlock()

    # -- lookups -----------------------------------------------------------------------------
    def lookup(self, ref: str) -> Layer | None:
        layer = self.by_id.get(ref) or self.by_name.get(ref)
        if layer is None:
            full = self._prefix.get(ref)
            if full is not None:
                layer = self.by_id.get(full)
        return layer

    def get(self, ref: str) -> Layer:
        layer = self.lookup(ref)
        if layer is None:
            raise errors.LayerUnknown()
        return layer

    def exists(self, ref: str) -> bool:
        return self.lookup(ref) is not None

    def size(self, ref: str) -> int:
        layer = self.get(ref)
        if layer.uncompressed_digest or layer.toc_digest:
            return layer.uncompressed_size
        return -1

    def by_compressed_digest(self, digest: str) -> list[Layer]:
        return [l for l in self.layers if l.compressed_digest == digest]

    def by_uncompressed_digest(self, digest: str) -> list[Layer]:
        return [l for l in self.layers if l.uncompressed_digest == digest]

    def by_toc_digest(self, digest: str) -> list[Layer]:
        return [l for l in self.layers if l.toc_digest == digest]

    def tar_split_path(self, id: str) -> str:
        return os.path.join(self.layerdir, id + TAR_SPLIT_SUFFIX)

    def data_dir(self, id: str) -> str:
        return os.path.join(self.layerdir, id)

    def big_data_path(self, id: str, key: str) -> str:
        return os.path.join(self.data_dir(id), big_data_file_name(key))

    def big_data(self, ref: str, key: str) -> bytes:
        if not key:
            raise errors.InvalidBigDataName.after("can't retrieve layer big data value for empty name")
        layer = self.lookup(ref)
        if layer is None:
            raise errors.LayerUnknown.after(f'locating layer with ID "{ref}"')
        with open(self.big_data_path(layer.id, key), "rb") as f:
            return f.read()

    def big_data_names(self, ref: str) -> list[str]:
        layer = self.lookup(ref)
        if layer is None:
            raise errors.ImageUnknown.after(f'locating layer with ID "{ref}" to retrieve bigdata names')
        return layer.big_data_names

    def metadata(self, ref: str) -> str:
        return self.get(ref).metadata

    # -- diffs ---------------------------------------------------------------------------------
    def _find_parent_and_layer(self, from_ref: str, to_ref: str) -> tuple[str, Layer, Layer | None]:
        to_layer = self.lookup(to_ref)
        if to_layer is None:
            raise errors.LayerUnknown()
        from_id = from_ref or to_layer.parent
        from_layer: Layer | None = None
        if from_id:
            from_layer = self.lookup(from_id)
            if from_layer is None:
                from_layer = self.lookup(to_layer.parent)
            from_id = from_layer.id if from_layer is not None else from_id
        return from_id, to_layer, from_layer

    def changes(self, from_ref: str, to_ref: str) -> list[Change]:
        from_id, to_layer, from_layer = self._find_parent_and_layer(from_ref, to_ref)
        return self.driver.changes(to_layer.id, from_id, _maps(to_layer), _maps(from_layer))

    def diff_size(self, from_ref: str, to_ref: str) -> int:
        from_id, to_layer, from_layer = self._find_parent_and_layer(from_ref, to_ref)
        return self.driver.diff_size(to_layer.id, from_id, _maps(to_layer), _maps(from_layer))

    def diff(self, from_ref: str, to_ref: str, out: BinaryIO, compression: int | None = None) -> None:
        """Write the layer's diff to ``out``: the original tar when tar-split has it, else generated.

        ``compression`` None means "as the layer was applied" (Go's default).
        """
        from .archive.compression import Compression, open_compressed

        from_id, to_layer, from_layer = self._find_parent_and_layer(from_ref, to_ref)
        comp = Compression(to_layer.compression if compression is None else compression)
        sink: BinaryIO = out
        if comp != Compression.UNCOMPRESSED:
            sink = open_compressed(out, comp)
        try:
            ts_path = self.tar_split_path(to_layer.id)
            if from_id == to_layer.parent and os.path.exists(ts_path):
                from .archive.tarsplit import reassemble

                with open(ts_path, "rb") as ts:
                    driver = self.driver
                    reassemble(ts, driver.diff_root(to_layer.id), sink,
                               lowers=driver.diff_lowers(to_layer.id))
            else:
                self.driver.diff(to_layer.id, from_id, sink, to_layer.uid_map, to_layer.gid_map,
                                 _maps(from_layer))
        finally:
            if sink is not out:
                sink.close()


class LayerStore(ROLayerStore):
    """The primary, read-write layer store."""

    def __init__(self, layerdir: str, rundir: str, driver: Callable[[], Driver], lock: LockFile,
                 json_paths: dict[int, str], mounts_lock: LockFile) -> None:
        super().__init__(layerdir, rundir, driver, lock, json_paths)
        self.mounts_lock = mounts_lock
        self._mounts_last_write: bytes | None = None
        self.by_mount: dict[str, Layer] = {}

    @property
    def read_write(self) -> bool:
        return True

    @contextmanager
    def writing(self) -> Iterator[LayerStore]:
        # Creating the driver takes storage.lock, which Go orders before layers.lock: do it first.
        self.driver  # noqa: B018
        with self.lock.writing():
            self._reload_if_changed(True)
            yield self

    # -- mounts --------------------------------------------------------------------------------
    @property
    def mounts_path(self) -> str:
        return os.path.join(self.rundir, "mountpoints.json")

    def _load_mounts(self) -> None:
        with self.mounts_lock.reading():
            self._mounts_last_write = self.mounts_lock.get_last_write()
            self._read_mounts()

    def _read_mounts(self) -> None:
        data = read_optional(self.mounts_path)
        try:
            entries = loads_array(data, self.mounts_path)
        except ValueError as e:
            raise errors.LoadError(f'loading "{self.mounts_path}": {e}') from None
        for layer in self.layers:
            layer.mount_point = ""
            layer.mount_count = 0
        by_mount: dict[str, Layer] = {}
        for entry in entries:
            path = entry.get("path") or ""
            mounted = self.lookup(str(entry.get("id", "")))
            if path and mounted is not None:
                by_mount[path] = mounted
                mounted.mount_point = path
                mounted.mount_count = int(entry.get("count") or 0)
        self.by_mount = by_mount

    def _reload_mounts_if_changed(self) -> None:
        current, changed = self.mounts_lock.modified_since(self._mounts_last_write or b"")
        if changed:
            self._read_mounts()
            self._mounts_last_write = current

    def _save_mounts(self) -> None:
        mounts = [
            {"id": l.id, "path": l.mount_point, "count": l.mount_count}
            for l in self.layers
            if l.mount_point and l.mount_count > 0
        ]
        from . import gojson

        self._mounts_last_write = self.mounts_lock.record_write()
        os.makedirs(self.rundir, mode=0o700, exist_ok=True)
        atomic_write(self.mounts_path, gojson.dumps(mounts))

    # -- saving --------------------------------------------------------------------------------
    def _save_layers(self, locations: int) -> None:
        self._last_write = self.lock.record_write()
        for loc in _LOCATIONS:
            if not locations & loc:
                continue
            path = self.json_paths.get(loc)
            if not path:
                raise errors.StorageError(f"internal error: no path for location {loc}")
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            data = dumps_records(l for l in self.layers if l.location == loc)
            atomic_write(path, data, sync=loc != VOLATILE)
            self._json_mtimes[loc] = os.stat(path).st_mtime_ns

    def _save(self, locations: int) -> None:
        with self.mounts_lock.writing():
            self._save_layers(locations)
            self._save_mounts()

    def _save_for(self, layer: Layer) -> None:
        self._save(layer.location)

    def _repair(self) -> None:
        """Finish deleting layers a crashed writer left incomplete (Go's load, read-write case)."""
        locations = 0
        for layer in [l for l in self.layers if l.incomplete]:
            self._internal_delete(layer)
            locations |= layer.location
        for layer in self.layers:
            locations |= layer.location
        self._save_layers(locations or STABLE)

    # -- creating ------------------------------------------------------------------------------
    def create(
        self,
        id: str,
        parent: Layer | None,
        names: list[str],
        mount_label: str,
        options: dict[str, str] | None,
        writeable: bool,
        *,
        uid_map: list[IDMap] | None = None,
        gid_map: list[IDMap] | None = None,
        flags: dict[str, Any] | None = None,
        volatile: bool = False,
        diff: BinaryIO | None = None,
        template: str = "",
        staged: StagedDiff | None = None,
    ) -> tuple[Layer, int]:
        """Create a layer (and apply ``diff`` into it); returns the layer and the diff size or -1.

        With ``template``, the layer starts as a copy of that layer (its contents, digests and
        tar-split), as the ID-mapped copies of an image's top layer do.  Files that come from
        a layer with other ID mappings (the parent, or the template) are re-owned for ours.
        """
        os.makedirs(self.rundir, mode=0o700, exist_ok=True)
        os.makedirs(self.layerdir, mode=0o700, exist_ok=True)
        if not id:
            id = unused_id(self.by_id)
        if id in self.by_id:
            raise errors.DuplicateID()
        names = dedupe(names)
        for name in names:
            if name in self.by_name:
                raise errors.DuplicateName()
        template_layer: Layer | None = None
        template_ts = b""
        if template:
            template_layer = self.lookup(template)
            if template_layer is None:
                raise errors.LayerUnknown()
            template_ts = read_optional(self.tar_split_path(template_layer.id))
        data: dict[str, Any] = {"id": id}
        if names:
            data["names"] = names
        if parent is not None:
            data["parent"] = parent.id
        if template_layer is not None:
            traw = template_layer.raw
            if traw.get("metadata"):
                data["metadata"] = traw["metadata"]
        if mount_label:
            data["mountlabel"] = mount_label
        data["created"] = now_rfc3339()
        if template_layer is not None:
            for key in _TEMPLATE_FIELDS:
                value = template_layer.raw.get(key)
                if value:
                    data[key] = list(value) if isinstance(value, list) else value
        layer_flags = dict(flags or {})
        layer_flags[INCOMPLETE_FLAG] = True
        data["flags"] = layer_flags
        if uid_map:
            data["uidmap"] = maps_to_json(uid_map)
        if gid_map:
            data["gidmap"] = maps_to_json(gid_map)
        layer = Layer(data)
        layer.location = VOLATILE if volatile else (
            IMAGE_STORE if not writeable and self.json_paths.get(IMAGE_STORE) else STABLE)
        self.layers.append(layer)
        self.by_id[id] = layer
        self._prefix.add(id)
        for name in names:
            self.by_name[name] = layer
        try:
            self._save_for(layer)
            opts = CreateOpts(mount_label=mount_label, storage_opt=dict(options or {}),
                              uid_map=list(uid_map or []), gid_map=list(gid_map or []))
            parent_id = parent.id if parent else ""
            old_maps: tuple[list[IDMap], list[IDMap]] | None = None
            if template_layer is not None:
                try:
                    self.driver.create_from_template(id, template_layer.id, parent_id, opts, writeable)
                except errors.StorageError as e:
                    raise type(e)(f'creating copy of template layer "{template_layer.id}" with ID '
                                  f'"{id}": {e}') from e
                old_maps = (template_layer.uid_map, template_layer.gid_map)
            else:
                try:
                    self.driver.create(id, parent_id, opts, writeable)
                except errors.StorageError as e:
                    kind = "read-write" if writeable else "read-only"
                    raise type(e)(f'creating {kind} layer with ID "{id}": {e}') from e
                if parent is not None:
                    old_maps = (parent.uid_map, parent.gid_map)
            new_maps = (list(uid_map or []), list(gid_map or []))
            if old_maps is not None and (not same_maps(old_maps[0], new_maps[0])
                                         or not same_maps(old_maps[1], new_maps[1])):
                self.driver.update_layer_id_map(id, old_maps, new_maps, mount_label)
            if template_ts:
                atomic_write(self.tar_split_path(id), template_ts)
            size = -1
            if diff is not None:
                size = self._apply_diff(layer, diff)
            elif staged is not None:  # committed while the layer is still marked incomplete
                size = self._commit_staged(layer, staged)
            layer.flags.pop(INCOMPLETE_FLAG, None)
            self._save_for(layer)
        except BaseException:
            try:
                self._delete(layer)
            except Exception:
                pass
            raise
        return layer, size

    def _apply_diff(self, layer: Layer, diff: BinaryIO) -> int:
        from .archive.tarsplit import TarSplitWriter

        ts_path = self.tar_split_path(layer.id)
        tmp_path = ts_path + ".tmp"
        with open(tmp_path, "wb") as ts_file:
            writer = TarSplitWriter(ts_file)
            try:
                result = self.driver.apply_diff(
                    layer.id, layer.parent, diff,
                    ApplyDiffOpts(uid_map=layer.uid_map, gid_map=layer.gid_map,
                                  mount_label=layer.mount_label, tar_split=writer))
                writer.close()
            except BaseException:
                ts_file.close()
                os.unlink(tmp_path)
                raise
        os.chmod(tmp_path, 0o600)
        os.rename(tmp_path, ts_path)
        d = layer.raw
        d["compressed-diff-digest"] = result.compressed_digest
        d["compressed-size"] = result.compressed_size
        d["diff-digest"] = result.uncompressed_digest
        d["diff-size"] = result.uncompressed_size
        d["compression"] = int(result.compression)
        d["uidset"] = sorted(result.uids)
        d["gidset"] = sorted(result.gids)
        return result.uncompressed_size

    def apply_diff(self, ref: str, diff: BinaryIO) -> int:
        layer = self.get(ref)
        size = self._apply_diff(layer, diff)
        self._save_for(layer)
        return size

    def apply_staged(self, ref: str, staged: StagedDiff) -> int:
        """Commit a diff the driver staged without locks (Go's applyDiffFromStagingDirectory)."""
        layer = self.get(ref)
        size = self._commit_staged(layer, staged)
        self._save_for(layer)
        return size

    def _commit_staged(self, layer: Layer, staged: StagedDiff) -> int:
        """Move the staged files and tar-split into ``layer`` and record its digests (unsaved)."""
        driver = self.driver
        if not can_stage(driver):
            raise errors.NotSupported()
        try:
            driver.commit_staged(layer.id, layer.parent, staged)
            if staged.tar_split:
                ts_path = self.tar_split_path(layer.id)
                os.chmod(staged.tar_split, 0o600)
                import shutil  # the staging area may be on another file system

                shutil.move(staged.tar_split, ts_path)
        finally:
            driver.cleanup_staged(staged)
        result = staged.result
        d = layer.raw
        d["compressed-diff-digest"] = result.compressed_digest
        d["compressed-size"] = result.compressed_size
        d["diff-digest"] = result.uncompressed_digest
        d["diff-size"] = result.uncompressed_size
        d["compression"] = int(result.compression)
        d["uidset"] = sorted(result.uids)
        d["gidset"] = sorted(result.gids)
        return result.uncompressed_size

    # -- names, metadata, flags, big data -----------------------------------------------------
    def update_names(self, ref: str, names: list[str], op: str) -> None:
        layer = self.get(ref)
        reassign_names(layer, apply_name_operation(layer.names, names, op), self.by_name)
        self._save_for(layer)

    def set_metadata(self, ref: str, metadata: str) -> None:
        layer = self.get(ref)
        layer.metadata = metadata
        self._save_for(layer)

    def set_flag(self, ref: str, flag: str, value: Any) -> None:
        layer = self.get(ref)
        layer.flags[flag] = value
        self._save_for(layer)

    def clear_flag(self, ref: str, flag: str) -> None:
        layer = self.get(ref)
        layer.flags.pop(flag, None)
        self._save_for(layer)

    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        layer = self.lookup(ref)
        if layer is None:
            raise errors.LayerUnknown.after(f'locating layer with ID "{ref}" to write bigdata')
        if not key:
            raise errors.InvalidBigDataName.after("can't set empty name for layer big data item")
        os.makedirs(self.data_dir(layer.id), mode=0o700, exist_ok=True)
        atomic_write(self.big_data_path(layer.id, key), data)
        if layer.add_big_data_name(key):
            self._save_for(layer)

    # -- mounting ------------------------------------------------------------------------------
    def mount(self, ref: str, opts: MountOpts) -> str:
        with self.mounts_lock.writing():
            self._reload_mounts_if_changed()
            layer = self.get(ref)
            if layer.mount_count > 0 and _is_mounted_or_dir(layer.mount_point, self.driver):
                layer.mount_count += 1
                self._save_mounts()
                return layer.mount_point
            if not opts.mount_label:
                opts.mount_label = layer.mount_label
            same = same_maps(opts.uid_map, layer.uid_map) and same_maps(opts.gid_map, layer.gid_map)
            if (opts.uid_map or opts.gid_map) and not same and not self.driver.supports_shifting(
                    opts.uid_map, opts.gid_map):
                # The files carry the layer's host IDs; without shifting no mount can show others.
                raise errors.StorageError(f"cannot mount layer {layer.id}: shifting not enabled")
            if same and (layer.uid_map or layer.gid_map):
                # The files already carry these host IDs: shifting them again would map twice
                # (Go would, for a layer re-owned before its driver could shift).
                opts.disable_shifting = True
            path = self.driver.get(layer.id, opts)
            if path:
                if layer.mount_point:
                    self.by_mount.pop(layer.mount_point, None)
                layer.mount_point = os.path.normpath(path)
                layer.mount_count += 1
                self.by_mount[layer.mount_point] = layer
                self._save_mounts()
            return path

    def unmount(self, ref: str, force: bool = False, conditional: bool = False) -> bool:
        """Drop one mount reference (all with ``force``); True while still mounted."""
        with self.mounts_lock.writing():
            self._reload_mounts_if_changed()
            layer = self.lookup(ref)
            if layer is None:
                layer = self.by_mount.get(os.path.normpath(ref))
                if layer is None:
                    raise errors.LayerUnknown()
            if conditional and layer.mount_count == 0:
                raise errors.LayerNotMounted()
            if force:
                layer.mount_count = 1
            if layer.mount_count > 1:
                layer.mount_count -= 1
                self._save_mounts()
                return True
            try:
                self.driver.put(layer.id)
            except FileNotFoundError:
                pass
            if layer.mount_point:
                self.by_mount.pop(layer.mount_point, None)
            layer.mount_count = max(0, layer.mount_count - 1)
            layer.mount_point = ""
            self._save_mounts()
            return False

    def mounted(self, ref: str) -> int:
        """The mount count, re-read if another process (Go or ours) mounted since we looked."""
        with self.mounts_lock.reading():
            self._reload_mounts_if_changed()
            return self.get(ref).mount_count

    def parent_owners(self, ref: str) -> tuple[list[int], list[int]]:
        """Host IDs owning the mount point's parent directories that the layer cannot map.

        Go's ParentOwners: a container in that user namespace sees those directories owned by
        the overflow IDs.  A layer without mappings maps everything; one must be mounted.
        """
        from .idtools import root_pair, to_container

        with self.mounts_lock.reading():
            layer = self.get(ref)
            if not layer.uid_map and not layer.gid_map:
                return [], []
            if not layer.mount_point or not os.path.lexists(layer.mount_point):
                raise errors.LayerNotMounted()
            try:
                root_uid, root_gid = root_pair(layer.uid_map, layer.gid_map)
            except errors.StorageError as e:
                raise errors.StorageError(f'reading root ID values for layer "{layer.id}": {e}') from None

            def unmapped(uid: int, gid: int) -> bool:
                try:
                    to_container(uid, layer.uid_map)
                    to_container(gid, layer.gid_map)
                except errors.StorageError:
                    return True
                return False

            uids: set[int] = set()
            gids: set[int] = set()
            directory = os.path.dirname(layer.mount_point)
            while directory and directory != "/":
                try:
                    st = os.stat(directory)
                except OSError as e:
                    raise errors.StorageError(f"read directory ownership: {_os_error_text(e)}") from None
                lst = os.lstat(directory)
                for s in (st, lst):
                    if unmapped(s.st_uid, root_gid):
                        uids.add(s.st_uid)
                    if unmapped(root_uid, s.st_gid):
                        gids.add(s.st_gid)
                directory = os.path.dirname(directory)
            return sorted(uids), sorted(gids)

    # -- deleting ------------------------------------------------------------------------------
    def _internal_delete(self, layer: Layer) -> None:
        if not layer.incomplete:
            layer.flags[INCOMPLETE_FLAG] = True
            self._save_for(layer)
        try:
            self.driver.remove(layer.id)
        except FileNotFoundError:
            pass
        for path in (self.tar_split_path(layer.id), self.tar_split_path(layer.id) + ".tmp"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        rmtree(self.data_dir(layer.id), ignore_errors=True)
        self.by_id.pop(layer.id, None)
        self._prefix.discard(layer.id)
        for name in layer.names:
            if self.by_name.get(name) is layer:
                del self.by_name[name]
        if layer.mount_point:
            self.by_mount.pop(layer.mount_point, None)
        self.layers = [l for l in self.layers if l is not layer]

    def _delete(self, layer: Layer) -> None:
        while True:
            try:
                self.unmount(layer.id, force=False, conditional=True)
            except errors.LayerNotMounted:
                break
        self._internal_delete(layer)
        self._save_for(layer)

    def delete(self, ref: str) -> None:
        self._delete(self.get(ref))

    def wipe(self) -> None:
        for layer in sorted(self.layers, key=lambda l: l.created, reverse=True):
            self._delete(layer)
        for id in self.driver.list_layers():
            self.driver.remove(id)


# What a layer made from a template copies from it: its contents are the template's.
_TEMPLATE_FIELDS = ("compressed-diff-digest", "compressed-size", "diff-digest", "toc-digest", "diff-size",
                    "compression", "uidset", "gidset")


def _os_error_text(e: OSError) -> str:
    """Go's *PathError text: "stat /path: no such file or directory"."""
    text = e.strerror or str(e)
    return f"stat {e.filename}: {text[:1].lower()}{text[1:]}" if e.filename else text


def _maps(layer: Layer | None) -> tuple[list[IDMap], list[IDMap]]:
    """A layer's (uid, gid) maps; none for no layer (Go's layerMappings)."""
    if layer is None:
        return [], []
    return layer.uid_map, layer.gid_map


def _is_mounted_or_dir(path: str, driver: Driver) -> bool:
    """Go asks mount.Mounted(); for drivers that never mount (vfs) the directory is the mount."""
    if not path:
        return False
    if driver.name == "vfs":
        return os.path.isdir(path)
    from .mountinfo import is_mountpoint

    return is_mountpoint(path)


def new_layer_store(layerdir: str, rundir: str, driver: Callable[[], Driver], imagedir: str = "",
                    transient: bool = False) -> LayerStore:
    os.makedirs(rundir, mode=0o700, exist_ok=True)
    os.makedirs(layerdir, mode=0o700, exist_ok=True)
    if imagedir:
        os.makedirs(imagedir, mode=0o700, exist_ok=True)
    lock = get_lock_file(os.path.join(layerdir, "layers.lock"))
    mounts_lock = get_lock_file(os.path.join(rundir, "mountpoints.lock"))
    paths = {
        STABLE: os.path.join(layerdir, "layers.json"),
        VOLATILE: os.path.join(rundir if transient else layerdir, "volatile-layers.json"),
    }
    if imagedir:
        paths[IMAGE_STORE] = os.path.join(imagedir, "layers.json")
    return LayerStore(layerdir, rundir, driver, lock, paths, mounts_lock)


def new_ro_layer_store(layerdir: str, rundir: str, driver: Callable[[], Driver]) -> ROLayerStore:
    lock = get_lock_file(os.path.join(layerdir, "layers.lock"), read_only=True)
    paths = {
        STABLE: os.path.join(layerdir, "layers.json"),
        VOLATILE: os.path.join(layerdir, "volatile-layers.json"),
    }
    return ROLayerStore(layerdir, rundir, driver, lock, paths)
