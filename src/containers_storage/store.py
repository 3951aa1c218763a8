"""The Store facade: one graph root + run root, its driver, and its layer/image/container stores.

Lock order is Go's: storage.lock -> layer stores -> image stores -> container store.  Lookups
search the primary stores first and then the additional read-only image stores.
"""

from __future__ import annotations

import _thread
import os

from . import errors
from .config import StoreOptions
from .containers import VOLATILE_FLAG, ContainerStore, new_container_store
from .ctx import ExitStack, contextmanager
from .drivers import new_driver
from .drivers.base import ApplyDiffOpts, Driver, DriverOptions, MountOpts, StagedDiff, can_stage
from .fsutil import atomic_write, rmtree
from .idmapped import MappingOptions, image_top_layer_for_mapping, layer_maps
from .idtools import IDMap
from .images import ImageStore, ROImageStore, new_image_store, new_ro_image_store
from .layers import LayerStore, ROLayerStore, new_layer_store, new_ro_layer_store
from .lockfile import LockFile, get_lock_file
from .records import Container, Image, Layer, dedupe
from .snapshot import additional_image_store_dirs

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from contextlib import AbstractContextManager as ContextManager
    from typing import Any, BinaryIO, Protocol, TypeVar

    from .autouserns import AutoUserNsOptions
    from .check import CheckOptions, CheckReport, RepairOptions
    from .dedup import DedupResult

    T = TypeVar("T")

    class _BigDataSource(Protocol):
        def reading(self) -> ContextManager[object]: ...
        def exists(self, ref: str) -> bool: ...
        def big_data(self, ref: str, key: str) -> bytes: ...

_stores: dict[tuple[str, str], Store] = {}
_stores_lock = _thread.allocate_lock()


def _go_quote(text: str) -> str:
    """Go's %q for the plain strings (names, IDs) that error messages quote."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    short = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = "".join(c if c.isprintable() else short.get(c, f"\\u{ord(c):04x}") for c in out)
    return f'"{out}"'


def get_store(options: StoreOptions) -> Store:
    """Open (or reuse, within this process) the store at ``options.graph_root``."""
    if not options.graph_root and not options.run_root:
        raise errors.IncompleteOptions("no storage runroot or graphroot specified: "
                                       + errors.IncompleteOptions.text)
    graph_root = os.path.abspath(options.graph_root) if options.graph_root else ""
    run_root = os.path.abspath(options.run_root) if options.run_root else ""
    if not graph_root or not run_root:
        from .config import default_store_options

        defaults = default_store_options()
        graph_root = graph_root or defaults.graph_root
        run_root = run_root or defaults.run_root
    with _stores_lock:
        existing = _stores.get((graph_root, run_root))
        if existing is not None and (not options.driver_name or existing.driver_name == options.driver_name):
            return existing
        store = Store(options, graph_root, run_root)
        _stores[(graph_root, run_root)] = store
        return store


class Store:
    """A containers/storage store on disk, shared with the Go tools."""

    def __init__(self, options: StoreOptions, graph_root: str, run_root: str) -> None:
        self.options = options
        self.graph_root = graph_root
        self.run_root = run_root
        self.image_store_dir = options.image_store
        self.transient = options.transient_store
        self.uid_map: list[IDMap] = list(options.uid_map)
        self.gid_map: list[IDMap] = list(options.gid_map)
        os.makedirs(run_root, mode=0o700, exist_ok=True)
        os.makedirs(graph_root, mode=0o700, exist_ok=True)
        if self.image_store_dir:
            os.makedirs(self.image_store_dir, mode=0o700, exist_ok=True)
        self.graph_lock: LockFile = get_lock_file(os.path.join(graph_root, "storage.lock"))
        get_lock_file(os.path.join(graph_root, "userns.lock"))
        self._driver: Driver | None = None
        self._driver_mutex = _thread.allocate_lock()
        self.driver_name = options.driver_name
        if self.driver_name == "overlay2":
            self.driver_name = "overlay"
        if not self.driver_name:
            # Choosing a driver means probing; do it now, as Go does, so paths are known.
            self.driver_name = self.driver.name
        else:
            os.makedirs(os.path.join(graph_root, self.driver_name), mode=0o700, exist_ok=True)
        self._layer_store: LayerStore | None = None
        self._ro_layer_stores: list[ROLayerStore] | None = None
        self._image_store: ImageStore | None = None
        self._ro_image_stores: list[ROImageStore] | None = None
        self._container_store: ContainerStore | None = None
        self._extra_stores = additional_image_store_dirs(options.driver_options)

    # -- components, created on first use ----------------------------------------------------
    @property
    def driver(self) -> Driver:
        with self._driver_mutex:
            if self._driver is None:
                with self.graph_lock.writing():
                    self._driver = new_driver(self.driver_name, DriverOptions(
                        root=self.graph_root, run_root=self.run_root,
                        image_store=self.image_store_dir, options=list(self.options.driver_options),
                        priority=list(self.options.driver_priority)))
            return self._driver

    def _get_driver(self) -> Driver:
        return self.driver

    @property
    def layer_store(self) -> LayerStore:
        if self._layer_store is None:
            prefix = self.driver_name + "-"
            self._layer_store = new_layer_store(
                os.path.join(self.graph_root, prefix + "layers"),
                os.path.join(self.run_root, prefix + "layers"),
                self._get_driver,
                os.path.join(self.image_store_dir, prefix + "layers") if self.image_store_dir else "",
                self.transient,
            )
        return self._layer_store

    @property
    def ro_layer_stores(self) -> list[ROLayerStore]:
        if self._ro_layer_stores is None:
            prefix = self.driver_name + "-"
            self._ro_layer_stores = [
                new_ro_layer_store(os.path.join(d, prefix + "layers"),
                                   os.path.join(self.run_root, prefix + "layers"), self._get_driver)
                for d in self._extra_stores
            ]
        return self._ro_layer_stores

    def all_layer_stores(self) -> list[ROLayerStore]:
        return [self.layer_store, *self.ro_layer_stores]

    @property
    def image_store(self) -> ImageStore:
        if self._image_store is None:
            root = self.image_store_dir or self.graph_root
            self._image_store = new_image_store(os.path.join(root, self.driver_name + "-images"))
        return self._image_store

    @property
    def ro_image_stores(self) -> list[ROImageStore]:
        if self._ro_image_stores is None:
            stores: list[ROImageStore] = []
            dirs = list(self._extra_stores)
            if self.image_store_dir:
                dirs.insert(0, self.graph_root)
            for d in dirs:
                path = os.path.join(d, self.driver_name + "-images")
                if self.image_store_dir and d in (self.graph_root, self.image_store_dir):
                    # Go opens the graph root's images read-write when images live elsewhere:
                    # what was made there before must stay deletable (split-store.bats).
                    stores.append(new_image_store(path))
                    continue
                try:
                    stores.append(new_ro_image_store(path))
                except OSError as e:
                    if e.errno == 30:  # EROFS: Go skips stores it cannot create lock files in
                        continue
                    raise
            self._ro_image_stores = stores
        return self._ro_image_stores

    @property
    def rw_image_stores(self) -> list[ImageStore]:
        """The primary image store, then writable additional ones (Go's rwImageStores)."""
        return [self.image_store, *(s for s in self.ro_image_stores if isinstance(s, ImageStore))]

    def all_image_stores(self) -> list[ROImageStore]:
        return [self.image_store, *self.ro_image_stores]

    @property
    def container_store(self) -> ContainerStore:
        if self._container_store is None:
            prefix = self.driver_name + "-"
            self._container_store = new_container_store(
                os.path.join(self.graph_root, prefix + "containers"),
                os.path.join(self.run_root, prefix + "containers"),
                self.transient,
            )
        return self._container_store

    # -- lock helpers ------------------------------------------------------------------------
    @contextmanager
    def _writing_all(self) -> Iterator[LayerStore]:
        """Write locks on layers, images and containers, in Go's order."""
        with self.layer_store.writing() as ls, self.image_store.writing(), \
                self.container_store.writing():
            yield ls

    def _first_layer_store(self, fn: Callable[[ROLayerStore], T | None]) -> T | None:
        for store in self.all_layer_stores():
            with store.reading():
                result = fn(store)
                if result is not None:
                    return result
        return None

    def _first_image_store(self, fn: Callable[[ROImageStore], T | None]) -> T | None:
        for store in self.all_image_stores():
            with store.reading():
                result = fn(store)
                if result is not None:
                    return result
        return None

    # -- listing and lookups -------------------------------------------------------------------
    def _all_layers(self, fn: Callable[[ROLayerStore], list[Layer]]) -> list[Layer]:
        out: list[Layer] = []
        for store in self.all_layer_stores():
            with store.reading():
                out.extend(fn(store))
        return out

    def _all_images(self, fn: Callable[[ROImageStore], list[Image]]) -> list[Image]:
        out: list[Image] = []
        for store in self.all_image_stores():
            with store.reading():
                out.extend(fn(store))
        return out

    def layers(self) -> list[Layer]:
        return self._all_layers(lambda s: s.layers)

    def images(self) -> list[Image]:
        return self._all_images(lambda s: s.records)

    def containers(self) -> list[Container]:
        with self.container_store.reading():
            return list(self.container_store.records)

    def layer(self, ref: str) -> Layer:
        found = self._first_layer_store(lambda s: s.lookup(ref))
        if found is None:
            raise errors.LayerUnknown()
        return found

    def image(self, ref: str) -> Image:
        primary = self.image_store
        for store in self.all_image_stores():
            with store.reading():
                image = store.lookup(ref)
            if image is None:
                continue
            if store is not primary:
                with primary.reading():
                    if primary.lookup(image.id) is not None:
                        continue
            return image
        raise errors.ImageUnknown.after(f'locating image with ID "{ref}"')

    def container(self, ref: str) -> Container:
        with self.container_store.reading():
            return self.container_store.get(ref)

    def exists(self, ref: str) -> bool:
        try:
            if self._first_layer_store(lambda s: True if s.exists(ref) else None):
                return True
            if self._first_image_store(lambda s: True if s.exists(ref) else None):
                return True
            with self.container_store.reading():
                return self.container_store.exists(ref)
        except errors.StorageError:
            return False

    def _any_record(self, ref: str) -> Layer | Image | Container:
        """The layer, else image, else container ``ref`` names (Go's order for IDs and names)."""
        found: Layer | Image | Container | None = self._first_layer_store(lambda s: s.lookup(ref))
        if found is None:
            found = self._first_image_store(lambda s: s.lookup(ref))
        if found is None:
            with self.container_store.reading():
                found = self.container_store.lookup(ref)
        if found is None:
            raise errors.LayerUnknown()
        return found

    def lookup(self, name: str) -> str:
        return self._any_record(name).id

    def images_by_digest(self, digest: str) -> list[Image]:
        return self._all_images(lambda s: s.images_by_digest(digest))

    def images_by_top_layer(self, ref: str) -> list[Image]:
        layer_id = self.layer(ref).id
        return self._all_images(lambda s: s.images_by_top_layer(layer_id))

    def layers_by_compressed_digest(self, digest: str) -> list[Layer]:
        return self._all_layers(lambda s: s.by_compressed_digest(digest))

    def layers_by_uncompressed_digest(self, digest: str) -> list[Layer]:
        return self._all_layers(lambda s: s.by_uncompressed_digest(digest))

    def layer_size(self, ref: str) -> int:
        found = self._first_layer_store(lambda s: s.size(ref) if s.exists(ref) else None)
        if found is None:
            raise errors.LayerUnknown()
        return found

    def container_by_layer(self, ref: str) -> Container:
        layer = self.layer(ref)
        with self.container_store.reading():
            c = self.container_store.by_layer.get(layer.id)
        if c is None:
            raise errors.ContainerUnknown()
        return c

    # -- creating ------------------------------------------------------------------------------
    def put_layer(
        self,
        id: str,
        parent: str,
        names: list[str] | None = None,
        mount_label: str = "",
        writeable: bool = False,
        diff: BinaryIO | None = None,
        *,
        uid_map: list[IDMap] | None = None,
        gid_map: list[IDMap] | None = None,
        host_uid_mapping: bool = False,
        host_gid_mapping: bool = False,
        flags: dict[str, Any] | None = None,
        volatile: bool = False,
        staged: StagedDiff | None = None,
    ) -> tuple[Layer, int]:
        """Create a layer over ``parent`` and apply ``diff`` (or commit ``staged``) into it
        (Go's PutLayer)."""
        rl = self.layer_store
        with rl.writing():
            parent_layer: Layer | None = None
            if parent:
                for store in self.all_layer_stores():
                    if store is rl:
                        parent_layer = rl.lookup(parent)
                    else:
                        with store.reading():
                            parent_layer = store.lookup(parent)
                    if parent_layer is not None:
                        break
                if parent_layer is None:
                    raise errors.LayerUnknown()
            with self.container_store.writing():
                if parent_layer is not None:
                    if any(c.layer == parent_layer.id for c in self.container_store.records):
                        raise errors.ParentIsContainer()
                    default_uid, default_gid = parent_layer.uid_map, parent_layer.gid_map
                else:
                    default_uid, default_gid = self.uid_map, self.gid_map
                umap = [] if host_uid_mapping else (uid_map or default_uid)
                gmap = [] if host_gid_mapping else (gid_map or default_gid)
                umap, gmap = layer_maps(self.driver, umap, gmap)
                return rl.create(id, parent_layer, list(names or []), mount_label, None, writeable,
                                 uid_map=umap, gid_map=gmap, flags=flags, volatile=volatile,
                                 diff=diff, staged=staged)

    def create_layer(self, id: str = "", parent: str = "", names: list[str] | None = None,
                     mount_label: str = "", writeable: bool = False, **kw: Any) -> Layer:
        return self.put_layer(id, parent, names, mount_label, writeable, None, **kw)[0]

    def create_image(
        self,
        id: str,
        names: list[str] | None,
        layer: str,
        metadata: str = "",
        *,
        created: str = "",
        digest: str = "",
        names_history: list[str] | None = None,
        flags: dict[str, Any] | None = None,
        big_data: list[tuple[str, bytes, str]] | None = None,
    ) -> Image:
        """Create an image whose top layer is ``layer`` (which may be empty for layerless images)."""
        if layer:
            found = self._first_layer_store(lambda s: s.lookup(layer))
            if found is None:
                raise errors.LayerUnknown()
            layer = found.id
        names = list(names or [])
        with self.image_store.writing() as ims:
            add_after: list[str] = []
            items = list(big_data or [])
            if id:
                for ro in self.ro_image_stores:
                    with ro.reading():
                        other = ro.lookup(id)
                        if other is None:
                            continue
                        metadata = metadata or other.metadata
                        created = created or other.created
                        digest = digest or other.digest
                        names_history = (names_history or []) + other.names_history
                        inherited = [(k, ro.big_data(id, k), ro.big_data_digest(id, k))
                                     for k in other.big_data_names]
                        items = inherited + items
                        add_after = dedupe(other.names + names)
                        break
            image = self.image_store.create(
                id, names, layer, metadata=metadata, created=created, digest=digest,
                names_history=names_history, flags=flags, big_data=items)
            if add_after:
                ims.update_names(image.id, add_after, "add")  # type: ignore[attr-defined]
            return image

    def create_container(
        self,
        id: str,
        names: list[str] | None,
        image: str,
        layer: str = "",
        metadata: str = "",
        *,
        uid_map: list[IDMap] | None = None,
        gid_map: list[IDMap] | None = None,
        host_uid_mapping: bool = False,
        host_gid_mapping: bool = False,
        flags: dict[str, Any] | None = None,
        volatile: bool = False,
        mount_opts: list[str] | None = None,
        big_data: list[tuple[str, bytes]] | None = None,
        auto_userns: AutoUserNsOptions | None = None,
    ) -> Container:
        """Create a container: a new read-write layer over the image's top layer, and its record.

        With ID mappings other than the top layer's, the container starts from a copy of that
        layer re-owned for them, made once per mapping and kept with the image.

        ``auto_userns`` (Go's AutoUserNs, podman's ``--userns=auto``) has the store choose the
        maps, replacing ``uid_map``/``gid_map`` and the ``host_*`` flags: ranges that no other
        container of this store uses (see :mod:`containers_storage.autouserns`).
        """
        want = MappingOptions(uid_map, gid_map, host_uid_mapping, host_gid_mapping)
        rl = self.layer_store
        with ExitStack() as stack:
            if auto_userns is not None or want.uid_map or want.gid_map:
                # As Go: one process at a time picks ranges, so two automatic namespaces never
                # get the same IDs (explicit maps are not checked against them, only serialized).
                stack.enter_context(get_lock_file(os.path.join(self.graph_root, "userns.lock")).writing())
            stack.enter_context(rl.writing())
            image_id = ""
            top: Layer | None = None
            found: Image | None = None
            home: ROImageStore | None = None
            if image:
                for ls in self.ro_layer_stores:
                    stack.enter_context(ls.reading())
                stack.enter_context(self.image_store.writing())
                found = self.image_store.lookup(image)
                home = self.image_store if found else None
                if found is None:
                    for ro in self.ro_image_stores:
                        stack.enter_context(ro.reading())
                        found = ro.lookup(image)
                        if found is not None:
                            home = ro
                            break
                if found is None or home is None:
                    raise errors.ImageUnknown.after(f'locating image with ID "{image}"')
                image_id = found.id
            if auto_userns is not None:
                want = self._auto_userns_maps(auto_userns, found, rl)
            if found is not None and home is not None and found.top_layer:
                top = image_top_layer_for_mapping(self.driver, found, home, self.image_store, rl,
                                                  self.ro_layer_stores, want)
            if top is not None:
                umap, gmap = want.or_defaults(top.uid_map, top.gid_map)
            elif image:  # a layerless image: Go takes no default maps then
                umap, gmap = want.uid_map, want.gid_map
            else:
                umap, gmap = want.or_defaults(self.uid_map, self.gid_map)
            umap, gmap = layer_maps(self.driver, umap, gmap)
            cflags = dict(flags or {})
            plabel = cflags.get("ProcessLabel", "")
            mlabel = cflags.get("MountLabel", "")
            if bool(plabel) != bool(mlabel):
                raise errors.StorageError(
                    "ProcessLabel and Mountlabel must either not be specified or both specified")
            if not plabel:
                cflags["ProcessLabel"] = ""
                cflags["MountLabel"] = ""
            clayer, _ = rl.create(layer, top, [], str(mlabel), None, True, uid_map=umap,
                                  gid_map=gmap, volatile=volatile or self.transient)
            try:
                with self.container_store.writing() as cs:
                    return cs.create(  # type: ignore[attr-defined, no-any-return]
                        id, list(names or []), image_id, clayer.id, metadata=metadata,
                        uid_map=want.uid_map, gid_map=want.gid_map, flags=cflags,
                        volatile=volatile or self.transient, mount_opts=mount_opts,
                        big_data=big_data)
            except BaseException:
                rl.delete(clayer.id)
                raise

    def _auto_userns_maps(self, options: AutoUserNsOptions, image: Image | None, rl: LayerStore
                          ) -> MappingOptions:
        """The maps of a new automatic user namespace (Go's getAutoUserNS); the caller holds
        userns.lock and ``rl`` for writing, and the image and read-only layer stores for reading."""
        from . import autouserns

        uids, gids = autouserns.available_ids(self.options.root_auto_ns_user)
        with self.container_store.reading():
            used_uids, used_gids = autouserns.used_maps(self.container_store.records)
        size = options.size
        if size <= 0:
            needs = 0
            if image is not None:
                needs = autouserns.image_size(image, rl, self.ro_layer_stores,
                                              options.passwd_file, options.group_file)
            size = autouserns.namespace_size(options, self.options.auto_ns_min_size,
                                             self.options.auto_ns_max_size, needs)
        umap, gmap = autouserns.allocate(size, uids, gids, used_uids, used_gids,
                                         options.additional_uid_maps, options.additional_gid_maps)
        return MappingOptions(umap, gmap)

    # -- metadata and names --------------------------------------------------------------------
    def metadata(self, ref: str) -> str:
        found = self._first_layer_store(lambda s: s.metadata(ref) if s.exists(ref) else None)
        if found is not None:
            return found
        found = self._first_image_store(lambda s: s.metadata(ref) if s.exists(ref) else None)
        if found is not None:
            return found
        with self.container_store.reading():
            if self.container_store.exists(ref):
                return self.container_store.metadata(ref)
        raise errors.NotAnID()

    def set_metadata(self, ref: str, metadata: str) -> None:
        with self._writing_all() as rl:
            if rl.exists(ref):
                return rl.set_metadata(ref, metadata)
            if self.image_store.exists(ref):
                return self.image_store.set_metadata(ref, metadata)
            if self.container_store.exists(ref):
                return self.container_store.set_metadata(ref, metadata)
            raise errors.NotAnID()

    def names(self, ref: str) -> list[str]:
        return self._any_record(ref).names

    def set_names(self, ref: str, names: list[str]) -> None:
        self._update_names(ref, names, "set")

    def add_names(self, ref: str, names: list[str]) -> None:
        self._update_names(ref, names, "add")

    def remove_names(self, ref: str, names: list[str]) -> None:
        self._update_names(ref, names, "remove")

    def _update_names(self, ref: str, names: list[str], op: str) -> None:
        names = dedupe(names)
        with self.layer_store.writing() as rl:
            if rl.exists(ref):
                rl.update_names(ref, names, op)
                return
        with self.image_store.writing():
            if self.image_store.exists(ref):
                self.image_store.update_names(ref, names, op)
                return
            for ro in self.ro_image_stores:
                with ro.reading():
                    other = ro.lookup(ref)
                    if other is None:
                        continue
                    items = [(k, ro.big_data(other.id, k), ro.big_data_digest(other.id, k))
                             for k in other.big_data_names]
                    flags = dict(other.raw.get("flags") or {})
                    self.image_store.create(
                        other.id, other.names, other.top_layer, metadata=other.metadata,
                        created=other.created, digest=other.digest,
                        names_history=other.names_history, flags=flags, big_data=items)
                    self.image_store.update_names(other.id, names, op)
                    return
        with self.container_store.writing():
            if self.container_store.exists(ref):
                self.container_store.update_names(ref, names, op)
                return
        raise errors.LayerUnknown()

    # -- big data ------------------------------------------------------------------------------
    def list_image_big_data(self, ref: str) -> list[str]:
        found = self._first_image_store(lambda s: s.big_data_names(ref) if s.exists(ref) else None)
        if found is None:
            raise errors.ImageUnknown.after(f'locating image with ID "{ref}"')
        return found

    def image_big_data(self, ref: str, key: str) -> bytes:
        known, data = _first_big_data(self.all_image_stores(), ref, key)
        if data is None and known:
            raise errors.StorageError(
                f"locating item named {_go_quote(key)} for image with ID {_go_quote(ref)} "
                "(consider removing the image to resolve the issue): file does not exist")
        if data is None:
            raise errors.ImageUnknown.after(f'locating image with ID "{ref}"')
        return data

    def image_big_data_size(self, ref: str, key: str) -> int:
        found = self._first_image_store(lambda s: s.big_data_size(ref, key) if s.exists(ref) else None)
        if found is None:
            raise errors.SizeUnknown()
        return found

    def image_big_data_digest(self, ref: str, key: str) -> str:
        found = self._first_image_store(
            lambda s: s.big_data_digest(ref, key) if s.exists(ref) else None)
        if found is None:
            raise errors.DigestUnknown()
        return found

    def set_image_big_data(self, ref: str, key: str, data: bytes, manifest_digest: str | None = None
                           ) -> None:
        with self.image_store.writing():
            self.image_store.set_big_data(ref, key, data, manifest_digest)

    def list_layer_big_data(self, ref: str) -> list[str]:
        found = self._first_layer_store(lambda s: s.big_data_names(ref) if s.exists(ref) else None)
        if found is None:
            raise errors.LayerUnknown.after(f'locating layer with ID "{ref}"')
        return found

    def layer_big_data(self, ref: str, key: str) -> bytes:
        known, data = _first_big_data(self.all_layer_stores(), ref, key)
        if data is None and known:  # Go: fmt.Errorf("locating item named %q for layer with ID %q: %w", ...)
            raise errors.StorageError(f"locating item named {_go_quote(key)} for layer with ID "
                                      f"{_go_quote(ref)}: file does not exist")
        if data is None:
            raise errors.LayerUnknown.after(f'locating layer with ID "{ref}"')
        return data

    def set_layer_big_data(self, ref: str, key: str, data: bytes) -> None:
        with self.layer_store.writing() as rl:
            rl.set_big_data(ref, key, data)

    def list_container_big_data(self, ref: str) -> list[str]:
        with self.container_store.reading():
            return self.container_store.big_data_names(ref)

    def container_big_data(self, ref: str, key: str) -> bytes:
        with self.container_store.reading():
            return self.container_store.big_data(ref, key)

    def container_big_data_size(self, ref: str, key: str) -> int:
        with self.container_store.reading():
            return self.container_store.big_data_size(ref, key)

    def container_big_data_digest(self, ref: str, key: str) -> str:
        with self.container_store.reading():
            return self.container_store.big_data_digest(ref, key)

    def set_container_big_data(self, ref: str, key: str, data: bytes) -> None:
        with self.container_store.writing():
            self.container_store.set_big_data(ref, key, data)

    # -- directories ---------------------------------------------------------------------------
    def _image_dir(self, ref: str, root: str) -> str:
        found = False
        for store in self.all_image_stores():
            with store.reading():
                image = store.lookup(ref)
            if image is not None:
                found = True
                path = os.path.join(root, self.driver_name + "-images", image.id, "userdata")
                os.makedirs(path, mode=0o700, exist_ok=True)
                return path
        if found:
            raise errors.StorageError(f'locating image with ID "{ref}" (consider removing the image '
                                      "to resolve the issue): file does not exist")
        raise errors.ImageUnknown.after(f'locating image with ID "{ref}"')

    def image_directory(self, ref: str) -> str:
        return self._image_dir(ref, self.graph_root)

    def image_run_directory(self, ref: str) -> str:
        return self._image_dir(ref, self.run_root)

    def _container_dir(self, ref: str, root: str) -> str:
        with self.container_store.reading():
            c = self.container_store.get(ref)
        path = os.path.join(root, self.driver_name + "-containers", c.id, "userdata")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def container_directory(self, ref: str) -> str:
        return self._container_dir(ref, self.graph_root)

    def container_run_directory(self, ref: str) -> str:
        return self._container_dir(ref, self.run_root)

    def set_container_directory_file(self, ref: str, name: str, data: bytes) -> None:
        path = os.path.join(self.container_directory(ref), name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, data)

    def from_container_directory(self, ref: str, name: str) -> bytes:
        with open(os.path.join(self.container_directory(ref), name), "rb") as f:
            return f.read()

    # -- deleting ------------------------------------------------------------------------------
    def delete_layer(self, ref: str) -> None:
        with self._writing_all() as rl:
            layer = rl.lookup(ref)
            if layer is None:
                raise errors.NotALayer()
            id = layer.id
            for other in rl.layers:
                if other.parent == id:
                    raise errors.LayerHasChildren(f"used by layer {other.id}: {errors.LayerHasChildren.text}")
            for image in self.image_store.records:
                if image.top_layer == id:
                    raise errors.LayerUsedByImage(
                        f"layer {id} used by image {image.id}: {errors.LayerUsedByImage.text}")
            for c in self.container_store.records:
                if c.layer == id:
                    raise errors.LayerUsedByContainer(
                        f"layer {id} used by container {c.id}: {errors.LayerUsedByContainer.text}")
            rl.delete(id)
            for image in list(self.image_store.records):
                if id in image.mapped_top_layers:
                    self.image_store.remove_mapped_top_layer(image.id, id)

    def delete_image(self, ref: str, commit: bool = True) -> list[str]:
        """Delete an image and the layers only it used; returns those layers' IDs."""
        with self._writing_all() as rl, ExitStack() as stack:
            to_remove: list[str] = []
            found = False
            # Every writable image store that has it, as Go does (the graph root's own images
            # are writable when images live in a separate image store).  The others are read
            # too: their images' layers must be kept.
            for other in self.ro_image_stores:
                stack.enter_context(other.writing() if isinstance(other, ImageStore) else other.reading())
            for ims in self.rw_image_stores:
                image = ims.lookup(ref)
                if image is None:
                    continue
                found = True
                to_remove += self._delete_image_from(rl, ims, image, commit)
            if not found:
                raise errors.NotAnImage()
            if commit:
                for lid in to_remove:
                    if rl.exists(lid):
                        rl.delete(lid)
            return to_remove

    def _delete_image_from(self, rl: LayerStore, ims: ImageStore, image: Image, commit: bool) -> list[str]:
        """Drop ``image`` from ``ims``; the layers that only it used, top down."""
        id = image.id
        for c in self.container_store.records:
            if c.image == id:
                raise errors.ImageUsedByContainer(
                    f"image used by {c.id}: {errors.ImageUsedByContainer.text}")
        children: dict[str, list[str]] = {}
        for l in rl.layers:
            children.setdefault(l.parent, []).append(l.id)
        # Layers that images of *any* store use are kept.  Go looks only at the store the image
        # is deleted from, which with a separate image store deletes layers images there use.
        others: set[str] = set()
        for store in self.all_image_stores():
            for img in store.records:
                if img.id != id:
                    others.add(img.top_layer)
                    others.update(img.mapped_top_layers)
        if commit:
            ims.delete(id)
        to_remove = list(image.mapped_top_layers)
        removing = set(to_remove)
        layer_id = image.top_layer
        while layer_id:
            if self.container_store.exists(layer_id) or layer_id in others:
                break
            current = rl.lookup(layer_id)
            parent = current.parent if current else ""
            check = [layer_id] + (image.mapped_top_layers if layer_id == image.top_layer else [])
            if any(child not in removing for l in check for child in children.get(l, ())):
                break
            to_remove.append(layer_id)
            removing.add(layer_id)
            layer_id = parent
        return to_remove

    def delete_container(self, ref: str) -> None:
        with self._writing_all() as rl:
            cs = self.container_store
            c = cs.lookup(ref)
            if c is None:
                raise errors.NotAContainer()
            if rl.exists(c.layer):
                rl.delete(c.layer)
            middle = self.driver_name + "-containers"
            for root in (self.graph_root, self.run_root):
                rmtree(os.path.join(root, middle, c.id), ignore_errors=True)
            cs.delete(c.id)

    def delete(self, ref: str) -> None:
        """Delete a layer, image or container without the safety checks."""
        with self._writing_all() as rl:
            cs = self.container_store
            c = cs.lookup(ref)
            if c is not None:
                if not rl.exists(c.layer):
                    raise errors.NotALayer()
                rl.delete(c.layer)
                cs.delete(c.id)
                middle = self.driver_name + "-containers"
                for root in (self.graph_root, self.run_root):
                    rmtree(os.path.join(root, middle, c.id, "userdata"), ignore_errors=True)
                return
            if self.image_store.exists(ref):
                self.image_store.delete(ref)
                return
            if rl.exists(ref):
                rl.delete(ref)
                return
            raise errors.LayerUnknown()

    def wipe(self) -> None:
        with self._writing_all() as rl:
            self.container_store.wipe()
            self.image_store.wipe()
            rl.wipe()

    # -- mounting ------------------------------------------------------------------------------
    def mount(self, ref: str, mount_label: str = "") -> str:
        opts = MountOpts(mount_label=mount_label)
        try:
            c = self.container(ref)
        except errors.ContainerUnknown:
            c = None
        if c is not None:
            ref = c.layer
            opts.uid_map = c.uid_map
            opts.gid_map = c.gid_map
            mount_opts = (c.raw.get("flags") or {}).get("MountOpts")
            if isinstance(mount_opts, list):
                opts.options = [str(o) for o in mount_opts]
            if not self.options.disable_volatile:
                opts.volatile = (c.raw.get("flags") or {}).get(VOLATILE_FLAG) is True
        with self.layer_store.writing() as rl:
            if rl.exists(ref):
                return rl.mount(ref, opts)
        for store in self.ro_layer_stores:
            with store.reading():
                if store.exists(ref):
                    raise errors.StoreIsReadOnly.after("mounting read/only store images is not allowed")
        raise errors.LayerUnknown()

    def mount_image(self, ref: str, mount_opts: list[str] | None = None, mount_label: str = "") -> str:
        """Mount an image's top layer read-only, with the host's IDs (a re-owned copy if need be)."""
        with ExitStack() as stack:
            rl = stack.enter_context(self.layer_store.writing())
            for ls in self.ro_layer_stores:
                stack.enter_context(ls.reading())
            stack.enter_context(self.image_store.writing())
            home: ROImageStore = self.image_store
            image = home.lookup(ref)
            if image is None:
                for ro in self.ro_image_stores:
                    stack.enter_context(ro.reading())
                    image = ro.lookup(ref)
                    if image is not None:
                        home = ro
                        break
            if image is None:
                raise errors.ImageUnknown.after(f'locating image with ID "{ref}"')
            host = MappingOptions(host_uid=True, host_gid=True)
            layer = image_top_layer_for_mapping(self.driver, image, home, self.image_store, rl,
                                                self.ro_layer_stores, host)
            if layer.uid_map or layer.gid_map:
                raise errors.StorageError(
                    "cannot create an image with canonical UID/GID mappings in a read-only store")
            opts = MountOpts(mount_label=mount_label, options=[*(mount_opts or []), "ro"])
            return rl.mount(layer.id, opts)

    def _container_layer(self, ref: str) -> str:
        try:
            return self.container(ref).layer
        except errors.ContainerUnknown:
            return ref

    def unmount(self, ref: str, force: bool = False) -> bool:
        ref = self._container_layer(ref)
        with self.layer_store.writing() as rl:
            if rl.exists(ref):
                return rl.unmount(ref, force)
        raise errors.LayerUnknown()

    def layer_parent_owners(self, ref: str) -> tuple[list[int], list[int]]:
        """Host IDs owning the layer's mount point's parents that its mappings cannot map."""
        with self.layer_store.reading() as rl:
            if not rl.exists(ref):
                raise errors.LayerUnknown()
            return self.layer_store.parent_owners(ref)

    def container_parent_owners(self, ref: str) -> tuple[list[int], list[int]]:
        """``layer_parent_owners`` of the container's layer."""
        with self.layer_store.reading() as rl, self.container_store.reading():
            layer = self.container_store.get(ref).layer
            if not rl.exists(layer):
                raise errors.LayerUnknown()
            return self.layer_store.parent_owners(layer)

    def unmount_image(self, ref: str, force: bool = False) -> bool:
        image = self.image(ref)
        with self.layer_store.writing() as rl:
            for mapped in image.mapped_top_layers:
                layer = rl.lookup(mapped)
                if layer is not None and not layer.uid_map and not layer.gid_map:
                    return rl.unmount(layer.id, force)
            return rl.unmount(image.top_layer, force)

    def mounted(self, ref: str) -> int:
        ref = self._container_layer(ref)
        with self.layer_store.reading():
            return self.layer_store.mounted(ref)

    # -- diffs ---------------------------------------------------------------------------------
    def changes(self, from_ref: str, to_ref: str) -> list[Any]:
        with self.layer_store.writing() as rl:
            if rl.exists(to_ref):
                return rl.changes(from_ref, to_ref)
        for store in self.ro_layer_stores:
            with store.reading():
                if store.exists(to_ref):
                    return store.changes(from_ref, to_ref)
        raise errors.LayerUnknown()

    def diff_size(self, from_ref: str, to_ref: str) -> int:
        for store in self.all_layer_stores():
            with store.reading():
                if store.exists(to_ref):
                    return store.diff_size(from_ref, to_ref)
        raise errors.LayerUnknown()

    def diff(self, from_ref: str, to_ref: str, out: BinaryIO, compression: int | None = None) -> None:
        with self.layer_store.writing() as rl:
            if rl.exists(to_ref):
                rl.diff(from_ref, to_ref, out, compression)
                return
        for store in self.ro_layer_stores:
            with store.reading():
                if store.exists(to_ref):
                    store.diff(from_ref, to_ref, out, compression)
                    return
        raise errors.LayerUnknown()

    def apply_diff(self, ref: str, diff: BinaryIO) -> int:
        with self.layer_store.writing() as rl:
            return rl.apply_diff(ref, diff)

    # -- staged layers (Go's PrepareStagedLayer / ApplyStagedLayer / CleanupStagedLayer) ----------
    def prepare_staged_layer(self, diff: BinaryIO, uid_map: list[IDMap] | None = None,
                             gid_map: list[IDMap] | None = None) -> StagedDiff:
        """Apply ``diff`` into a staging directory; takes no store lock, as in Go."""
        driver = self.driver
        if not can_stage(driver):
            raise errors.NotSupported.after(f"driver {driver.name} cannot stage layers")
        return driver.prepare_staged(diff, ApplyDiffOpts(uid_map=list(uid_map or []),
                                                          gid_map=list(gid_map or [])))

    def apply_staged_layer(self, id: str, staged: StagedDiff, parent: str = "",
                           names: list[str] | None = None, mount_label: str = "",
                           writeable: bool = False) -> Layer:
        """Commit a staged diff into layer ``id``, creating the layer when it does not exist."""
        rl = self.layer_store
        with rl.writing():
            existing = rl.lookup(id) if id else None
            if existing is not None:
                rl.apply_staged(existing.id, staged)
                return existing
        # One locked create, still flagged incomplete while the staged files move in: a crash
        # leaves a layer the next writer removes, never an empty one that looks complete.
        return self.put_layer(id, parent, names, mount_label, writeable, staged=staged)[0]

    def cleanup_staged_layer(self, staged: StagedDiff) -> None:
        driver = self.driver
        if can_stage(driver):
            with self.layer_store.writing():
                driver.cleanup_staged(staged)

    # -- sizes ---------------------------------------------------------------------------------
    def image_size(self, ref: str) -> int:
        """Go's ImageSize: each layer the image uses, counted once, plus its big data items."""
        layer_stores = self.all_layer_stores()
        with ExitStack() as stack:
            for ls in layer_stores:
                stack.enter_context(ls.reading())
            image: Image | None = None
            home: ROImageStore | None = None
            for ims in self.all_image_stores():
                stack.enter_context(ims.reading())
                image = ims.lookup(ref)
                if image is not None:
                    home = ims
                    break
            if image is None or home is None:
                raise errors.ImageUnknown.after(f"locating image with ID {_go_quote(ref)}")
            queue = [lid for lid in [image.top_layer, *image.mapped_top_layers] if lid]
            visited: set[str] = set()
            size = 0
            while queue:
                layer_id = queue.pop(0)
                if layer_id in visited:
                    continue
                visited.add(layer_id)
                for ls in layer_stores:
                    layer = ls.lookup(layer_id)
                    if layer is not None:
                        break
                else:
                    raise errors.LayerUnknown.after(f"locating layer with ID {_go_quote(layer_id)}")
                n = layer.uncompressed_size
                if not layer.uncompressed_digest or n == -1:  # the size is only valid with a digest
                    try:
                        n = ls.diff_size("", layer.id)
                    except errors.StorageError as e:
                        raise type(e)(f"size/digest of layer with ID {_go_quote(layer_id)} could not be "
                                      f"calculated: {e}") from e
                size += n
                if layer.parent:
                    queue.append(layer.parent)
            for name in image.big_data_names:
                size += home.big_data_size(image.id, name)
            return size

    def container_size(self, ref: str) -> int:
        """Go's ContainerSize: the container layer's diff, big data and both of its directories."""
        from .fsutil import directory_size

        layer_stores = self.all_layer_stores()
        with ExitStack() as stack:
            for ls in layer_stores:
                stack.enter_context(ls.reading())
            cdir = self.container_directory(ref)
            rdir = self.container_run_directory(ref)
            with self.container_store.writing() as cs:
                c = cs.get(ref)
                for ls in layer_stores:
                    layer = ls.lookup(c.layer)
                    if layer is not None:
                        try:
                            size = ls.diff_size("", layer.id)
                        except errors.StorageError as e:
                            raise type(e)(f"determining size of layer with ID {_go_quote(layer.id)}: "
                                          f"{e}") from e
                        break
                else:
                    raise errors.LayerUnknown.after(f"locating layer with ID {_go_quote(c.layer)}")
                for name in c.big_data_names:
                    size += cs.big_data_size(c.id, name)
                return size + directory_size(cdir) + directory_size(rdir)

    def garbage_collect(self) -> None:
        """Go's GarbageCollect: remove data directories and driver layers no record refers to."""
        from .ids import is_full_id

        first: Exception | None = None
        stores: list[Any] = [self.container_store, self.image_store]
        for rs in stores:
            with rs.writing():
                try:
                    entries = list(os.scandir(rs.dir))
                except OSError as e:
                    first = first or e
                    continue
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False) or not is_full_id(entry.name):
                        continue
                    if entry.name in rs.by_id:
                        continue
                    try:
                        rmtree(entry.path)
                    except OSError as e:
                        first = first or e
        with self.layer_store.writing() as rl:
            try:
                for id in rl.driver.list_layers():
                    if id in rl.by_id:
                        continue
                    rl.driver.remove(id)
                    try:
                        os.unlink(rl.tar_split_path(id))
                    except FileNotFoundError:
                        pass
                    rmtree(rl.data_dir(id), ignore_errors=True)
            except errors.NotSupported:
                pass
        if first is not None:
            raise first

    # -- consistency (check.py) -----------------------------------------------------------------
    def check(self, options: CheckOptions | None = None) -> CheckReport:
        """Go's Store.Check: what is damaged, per layer, image and container (can be slow)."""
        from .check import check

        return check(self, options)

    def repair(self, report: CheckReport, options: RepairOptions | None = None
               ) -> list[errors.StorageError]:
        """Go's Store.Repair: delete what ``report`` found damaged; returns failed deletions."""
        from .check import repair

        return repair(self, report, options)

    # -- whole store ---------------------------------------------------------------------------
    def dedup(self, hash_method: str = "crc") -> DedupResult:
        """Go's Dedup: identical files of the images' layers share extents (reflink file systems)."""
        from .dedup import dedup_store

        return dedup_store(self, hash_method)

    def status(self) -> list[tuple[str, str]]:
        return self.driver.status()

    def version(self) -> list[tuple[str, str]]:
        from . import __version__

        return [("Version", __version__)]

    def shutdown(self, force: bool = False) -> list[str]:
        """Unmount everything (with ``force``); raises while layers stay mounted."""
        mounted: list[str] = []
        first_error: Exception | None = None
        with self.graph_lock.writing(), self.layer_store.writing() as rl:
            for layer in list(rl.layers):
                if layer.mount_count == 0:
                    continue
                mounted.append(layer.id)
                if force:
                    while True:
                        try:
                            rl.unmount(layer.id, force=True, conditional=True)
                        except errors.LayerNotMounted:
                            break
                        except Exception as e:
                            first_error = first_error or e
                            break
            if first_error is not None:
                raise first_error
            if mounted:  # Go reports this even after a forced unmount
                raise errors.LayerUsedByContainer.after("a layer is mounted")
            self.graph_lock.record_write()
            if self._driver is not None:
                self._driver.cleanup()
        return mounted

    def free(self) -> None:
        """Forget this process's cached handle so the next get_store re-reads everything."""
        with _stores_lock:
            _stores.pop((self.graph_root, self.run_root), None)


def _first_big_data(stores: Sequence[_BigDataSource], ref: str, key: str) -> tuple[bool, bytes | None]:
    """Whether any store knows ``ref``, and the item from the first store that has it.

    Callers word "unknown record" and "record without that item" differently, as Go does.
    """
    known = False
    for store in stores:
        with store.reading():
            if not store.exists(ref):
                continue
            known = True
            try:
                return True, store.big_data(ref, key)
            except (FileNotFoundError, errors.InvalidBigDataName):
                continue
    return known, None
