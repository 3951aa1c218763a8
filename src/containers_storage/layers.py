"""The layer store: ``<driver>-layers/layers.json`` plus mount counts in the run root.

``ROLayerStore`` reads (additional image stores); ``LayerStore`` adds every write.  Both are
record stores (recordstore.py): they reload from disk whenever another process (Go or Python)
recorded a write in ``layers.lock``, or changed a records file.
"""

from __future__ import annotations

import os

from . import TYPE_CHECKING, errors
from .drivers.base import ApplyDiffOpts, CreateOpts, Driver, MountOpts, StagedDiff, can_stage
from .fsutil import atomic_write, move_file, read_optional, rmtree
from .idtools import IDMap, maps_to_json, same_maps
from .layout import IMAGE_STORE, STABLE, VOLATILE, Files, Layout
from .lockfile import LockFile, get_lock_file
from .records import INCOMPLETE_FLAG, Layer, now_rfc3339
from .recordstore import ALL_LOCATIONS, RecordStore, RWRecordStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    from .archive.apply import ApplyResult
    from .archive.changes import Change


class LayerTree:
    """A layer's files, mounted read-only to be looked at (``Store.layer_tree``).

    Attributes:
        path: the directory that shows the layer's files.
        uid_map: with ``gid_map``, the maps that turn the owners seen under ``path`` back into
            the layer's own IDs; empty when they already are (a layer without maps, or a
            driver that shifts IDs when it mounts).
        gid_map: see ``uid_map``.
    """

    __slots__ = ("gid_map", "path", "uid_map")

    def __init__(self, path: str, uid_map: list[IDMap], gid_map: list[IDMap]) -> None:
        self.path = path
        self.uid_map = uid_map
        self.gid_map = gid_map

    def __repr__(self) -> str:
        return f"LayerTree({self.path!r})"


class ROLayerStore(RecordStore[Layer]):
    """Layers of one store, read-only; the base of the read-write store."""

    unknown_error = errors.LayerUnknown
    duplicate_names_error = errors.DuplicateLayerNames
    kind = "layer"

    def __init__(self, files: Files, rundir: str, driver: Callable[[], Driver], lock: LockFile) -> None:
        super().__init__(files, lock)
        self.layerdir = files.directory
        self.rundir = rundir
        self._driver_factory = driver
        self._json_mtimes: dict[int, int] = {}

    @property
    def driver(self) -> Driver:
        """The graph driver, created on first use: listing layers never needs it."""
        return self._driver_factory()

    @property
    def layers(self) -> list[Layer]:
        return self.records

    # -- loading -----------------------------------------------------------------------------
    def _make(self, obj: dict[str, Any], location: int) -> Layer:
        layer = Layer(obj)
        layer.location = location
        layer.read_only = not self.read_write
        return layer

    def _modified(self) -> tuple[bytes, bool]:
        """Go also reloads when a records file changed without a new lock token (its mtime)."""
        current, changed = super()._modified()
        return current, changed or any(_mtime(path) != self._json_mtimes.get(loc, 0)
                                       for loc, path in self.files.json)

    def _load(self, locked_for_writing: bool) -> None:
        for loc, path in self.files.json:
            self._json_mtimes[loc] = _mtime(path)
        super()._load(locked_for_writing)

    def _unknown(self, ref: str, purpose: str = "") -> errors.StorageError:
        if purpose == "names":  # sic: Go's layer store says "image not known" here
            return errors.ImageUnknown.after(
                f'locating layer with ID "{ref}" to retrieve bigdata names', ref=ref)
        if purpose:
            suffix = " to write bigdata" if purpose == "write" else ""
            return errors.LayerUnknown.after(f'locating layer with ID "{ref}"{suffix}', ref=ref)
        return errors.LayerUnknown(ref=ref)

    # -- lookups -----------------------------------------------------------------------------
    def size(self, ref: str) -> int:
        layer = self.get(ref)
        if layer.uncompressed_digest or layer.toc_digest:
            return layer.uncompressed_size
        return -1

    def by_compressed_digest(self, digest: str) -> list[Layer]:
        return [l for l in self.records if l.compressed_digest == digest]

    def by_uncompressed_digest(self, digest: str) -> list[Layer]:
        return [l for l in self.records if l.uncompressed_digest == digest]

    def by_toc_digest(self, digest: str) -> list[Layer]:
        return [l for l in self.records if l.toc_digest == digest]

    def tar_split_path(self, id: str) -> str:
        return self.files.tar_split_path(id)

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


class LayerStore(ROLayerStore, RWRecordStore[Layer]):
    """The primary, read-write layer store."""

    def __init__(self, files: Files, rundir: str, driver: Callable[[], Driver], lock: LockFile,
                 mounts_path: str, mounts_lock: LockFile) -> None:
        super().__init__(files, rundir, driver, lock)
        self.mounts_path = mounts_path
        self.mounts_lock = mounts_lock
        self._mounts_last_write: bytes | None = None
        self.by_mount: dict[str, Layer] = {}

    def _before_write_lock(self) -> None:
        # Creating the driver takes storage.lock, which Go orders before layers.lock: do it first.
        self.driver  # noqa: B018

    # -- loading -------------------------------------------------------------------------------
    def _needs_repair(self, records: list[Layer]) -> bool:
        return any([layer.incomplete for layer in records if "flags" in layer.raw])

    def _loaded(self) -> None:
        with self.mounts_lock.reading():
            self._mounts_last_write = self.mounts_lock.get_last_write()
            self._read_mounts()

    def _repair(self) -> None:
        """Finish deleting layers a crashed writer left incomplete (Go's load, read-write case)."""
        locations = 0
        for layer in [l for l in self.records if l.incomplete]:
            self._internal_delete(layer)
            locations |= layer.location
        for layer in self.records:
            locations |= layer.location
        self._write_records(locations or STABLE)

    # -- mounts --------------------------------------------------------------------------------
    def _read_mounts(self) -> None:
        from .gojson import loads
        from .recordindex import records_of

        data = read_optional(self.mounts_path)
        try:
            entries = records_of(loads(data)) if data.strip() else []
            for layer in self.records:
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
        except (ValueError, AttributeError, TypeError) as e:
            raise errors.LoadError(f'loading "{self.mounts_path}": {e}') from None
        self.by_mount = by_mount

    def _reload_mounts_if_changed(self) -> None:
        current, changed = self.mounts_lock.modified_since(self._mounts_last_write or b"")
        if changed:
            self._read_mounts()
            self._mounts_last_write = current

    def _save_mounts(self) -> None:
        mounts = [
            {"id": l.id, "path": l.mount_point, "count": l.mount_count}
            for l in self.records
            if l.mount_point and l.mount_count > 0
        ]
        from . import gojson

        data = gojson.dumps(mounts)
        if read_optional(self.mounts_path) == data:
            # The same bytes already (every save of a layer that is not being mounted or
            # unmounted): nothing to write, sync or tell readers (Go writes and syncs them again).
            return
        self._mounts_last_write = self.mounts_lock.record_write()
        os.makedirs(os.path.dirname(self.mounts_path), mode=0o700, exist_ok=True)
        atomic_write(self.mounts_path, data)

    # -- saving --------------------------------------------------------------------------------
    def _location_of(self, rec: Layer) -> int:
        return rec.location

    def save(self, locations: int = ALL_LOCATIONS) -> None:
        with self.mounts_lock.writing():
            self._write_records(locations)
            self._save_mounts()

    def _saved(self, location: int, path: str) -> None:
        self._json_mtimes[location] = _mtime(path)

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
        digests: DiffDigests | None = None,
        big_data: list[tuple[str, bytes]] | None = None,
    ) -> tuple[Layer, int]:
        """Create a layer (and apply ``diff`` into it); returns the layer and the diff size or -1.

        With ``template``, the layer starts as a copy of that layer (its contents, digests and
        tar-split), as the ID-mapped copies of an image's top layer do.  Files that come from
        a layer with other ID mappings (the parent, or the template) are re-owned for ours.
        ``digests`` are what the caller knows of ``diff`` (Go's OriginalDigest, OriginalSize and
        UncompressedDigest); ``big_data`` items are stored before the diff is applied, as Go does.
        """
        os.makedirs(self.rundir, mode=0o700, exist_ok=True)
        os.makedirs(self.layerdir, mode=0o700, exist_ok=True)
        id, names = self._check_new(id, names)
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
        split = any(loc == IMAGE_STORE for loc, _ in self.files.json)
        layer.location = VOLATILE if volatile else IMAGE_STORE if not writeable and split else STABLE
        self._add(layer)
        try:
            self.save_for(layer)
            for key, value in big_data or ():
                self._write_big_data(layer, key, value)
                if layer.add_big_data_name(key):
                    self.save_for(layer)
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
                size = self._apply_diff(layer, diff, digests)
            elif staged is not None:  # committed while the layer is still marked incomplete
                if digests is not None:
                    digests.check(staged.result)
                size = self._commit_staged(layer, staged, digests)
            layer.flags.pop(INCOMPLETE_FLAG, None)
            self.save_for(layer)
        except BaseException:
            try:
                self._delete(layer)
            except Exception:
                pass
            raise
        return layer, size

    def _apply_diff(self, layer: Layer, diff: BinaryIO, digests: DiffDigests | None = None) -> int:
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
        if digests is not None:
            try:
                digests.check(result)
            except BaseException:
                os.unlink(tmp_path)
                raise
        os.chmod(tmp_path, 0o600)
        os.rename(tmp_path, ts_path)
        return _record_diff(layer, result, digests)

    def apply_diff(self, ref: str, diff: BinaryIO) -> int:
        layer = self.get(ref)
        size = self._apply_diff(layer, diff)
        self.save_for(layer)
        return size

    def apply_staged(self, ref: str, staged: StagedDiff) -> int:
        """Commit a diff the driver staged without locks (Go's applyDiffFromStagingDirectory)."""
        layer = self.get(ref)
        size = self._commit_staged(layer, staged)
        self.save_for(layer)
        return size

    def _commit_staged(self, layer: Layer, staged: StagedDiff, digests: DiffDigests | None = None) -> int:
        """Move the staged files and tar-split into ``layer`` and record its digests (unsaved)."""
        driver = self.driver
        if not can_stage(driver):
            raise errors.NotSupported()
        try:
            try:
                driver.commit_staged(layer.id, layer.parent, staged)
                if staged.tar_split:
                    ts_path = self.tar_split_path(layer.id)
                    os.chmod(staged.tar_split, 0o600)
                    move_file(staged.tar_split, ts_path)
            finally:
                driver.cleanup_staged(staged)
            size = _record_diff(layer, staged.result, digests)
            # A partial pull (Go's applyDiffFromStagingDirectory): its TOC digest and big data.
            if staged.toc_digest or layer.raw.get("toc-digest"):
                layer.raw["toc-digest"] = staged.toc_digest
            for key, path in staged.big_data_files.items():  # written and synced already
                self._move_in_big_data(layer, key, path)
                layer.add_big_data_name(key)
            for key, data in staged.big_data.items():
                self._write_big_data(layer, key, data)
                layer.add_big_data_name(key)
        finally:
            staged.drop_big_data_files()  # (none left after the moves above)
        return size

    # -- big data ------------------------------------------------------------------------------
    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        layer = self._find(ref, "write")
        self._write_big_data(layer, key, data)
        if layer.add_big_data_name(key):
            self.save_for(layer)

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
            self.save_for(layer)
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
        self._remove(layer)
        if layer.mount_point:
            self.by_mount.pop(layer.mount_point, None)

    def _delete(self, layer: Layer) -> None:
        while True:
            try:
                self.unmount(layer.id, force=False, conditional=True)
            except errors.LayerNotMounted:
                break
        self._internal_delete(layer)
        self.save_for(layer)

    def delete(self, ref: str) -> None:
        self._delete(self.get(ref))

    def wipe(self) -> None:
        for layer in sorted(self.records, key=lambda l: l.created, reverse=True):
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


class DiffDigests:
    """What a caller of ``put_layer`` knows about the diff it hands over (Go's LayerOptions
    OriginalDigest, OriginalSize and UncompressedDigest), and whether it must be checked.

    Go records given sha256 values instead of computing them; they may describe another
    representation of the same diff (a compressed blob's digest for its uncompressed stream).
    With ``verify`` they must be the stream's own: the layer is refused otherwise.
    """

    __slots__ = ("original_digest", "original_size", "uncompressed_digest", "verify")

    def __init__(self, original_digest: str = "", original_size: int | None = None,
                 uncompressed_digest: str = "", verify: bool = False) -> None:
        self.original_digest = original_digest
        self.original_size = original_size
        self.uncompressed_digest = uncompressed_digest
        self.verify = verify

    def check(self, result: ApplyResult) -> None:
        """Raise DigestMismatch when ``verify`` is set and the stream is not what was said."""
        if not self.verify:
            return
        wrong = []
        if self.original_digest and self.original_digest != result.compressed_digest:
            wrong.append(f"blob digest {result.compressed_digest}, expected {self.original_digest}")
        if self.original_size is not None and self.original_size != result.compressed_size:
            wrong.append(f"blob size {result.compressed_size}, expected {self.original_size}")
        if self.uncompressed_digest and self.uncompressed_digest != result.uncompressed_digest:
            wrong.append(f"uncompressed digest {result.uncompressed_digest}, "
                         f"expected {self.uncompressed_digest}")
        if wrong:
            raise errors.DigestMismatch("layer content does not match: " + "; ".join(wrong))


def _canonical(digest: str) -> bool:
    return digest.startswith("sha256:")


def _record_diff(layer: Layer, result: ApplyResult, digests: DiffDigests | None = None) -> int:
    """Record what applying a diff found (digests, sizes, owners); returns its size.

    Digests the caller gave are recorded instead of the computed ones, as Go records them
    (only sha256 ones; the size only with the digest it belongs to).
    """
    d = layer.raw
    compressed, uncompressed = result.compressed_digest, result.uncompressed_digest
    compressed_size = result.compressed_size
    if digests is not None:
        if _canonical(digests.original_digest):
            compressed = digests.original_digest
            if digests.original_size is not None:
                compressed_size = digests.original_size
        if _canonical(digests.uncompressed_digest):
            uncompressed = digests.uncompressed_digest
        elif int(result.compression) == 0:
            uncompressed = compressed  # Go: an uncompressed stream's digest is the "original" one
    d["compressed-diff-digest"] = compressed
    d["compressed-size"] = compressed_size
    d["diff-digest"] = uncompressed
    d["diff-size"] = result.uncompressed_size
    d["compression"] = int(result.compression)
    d["uidset"] = sorted(result.uids)
    d["gidset"] = sorted(result.gids)
    return result.uncompressed_size


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


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


def new_layer_store(layout: Layout, driver: Callable[[], Driver]) -> LayerStore:
    files = layout.layers()
    for directory in (layout.layers_run_dir, files.directory, layout.split_layers_dir):
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
    return LayerStore(files, layout.layers_run_dir, driver, get_lock_file(files.lock),
                      layout.mountpoints_json, get_lock_file(layout.mountpoints_lock))


def new_ro_layer_store(files: Files, rundir: str, driver: Callable[[], Driver]) -> ROLayerStore:
    return ROLayerStore(files, rundir, driver, get_lock_file(files.lock, read_only=True))
