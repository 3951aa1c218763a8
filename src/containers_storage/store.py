"""The Store facade: one graph root + run root, its driver, and its layer/image/container stores.

Open one with :func:`open_store` (the store podman and our CLI would use, or explicit roots) or
:func:`get_store` (a :class:`~containers_storage.config.StoreOptions` you filled in).  A
reference (``ref``) is an ID, a unique prefix of one, or a name; lookups search the primary
stores first and then the additional read-only ones.  Every method takes the locks it needs in
Go's order (storage.lock -> layer stores -> image stores -> container store), so Go's tools can
use the same store at the same time.
"""

from __future__ import annotations

import _thread
import os

from . import TYPE_CHECKING, errors
from .config import StoreOptions
from .containers import VOLATILE_FLAG, ContainerStore, new_container_store
from .ctx import ExitStack, contextmanager
from .drivers import new_driver
from .drivers.base import (
    ApplyDiffOpts,
    Driver,
    DriverOptions,
    MountOpts,
    StagedDiff,
    can_stage,
    can_stage_differ,
)
from .fsutil import atomic_write, rmtree
from .idmapped import MappingOptions, image_top_layer_for_mapping, layer_maps
from .idtools import IDMap
from .images import ImageStore, ROImageStore, new_image_store, new_ro_image_store
from .layers import LayerStore, LayerTree, ROLayerStore, new_layer_store, new_ro_layer_store
from .layout import STORAGE_LOCK, USERNS_LOCK, Layout, additional_image_store_dirs
from .lockfile import LockFile, get_lock_file
from .quoting import go_quote as _go_quote
from .recordindex import layer_chain
from .records import Container, Image, Layer, dedupe

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager as ContextManager
    from typing import Any, BinaryIO, Protocol, TypeVar

    from .archive.changes import Change
    from .archive.chunked.compressor import ChunkedBlob
    from .archive.chunked.differ import ChunkedDiffer
    from .autouserns import AutoUserNsOptions
    from .check import CheckOptions, CheckReport, RepairOptions
    from .dedup import DedupResult
    from .nameops import NameOperation

    T = TypeVar("T")

    class _Readable(Protocol):
        def reading(self) -> ContextManager[object]: ...

    S = TypeVar("S", bound=_Readable)

    class _BigDataSource(_Readable, Protocol):
        def exists(self, ref: str) -> bool: ...
        def big_data(self, ref: str, key: str) -> bytes: ...

_stores: dict[tuple[str, str], Store] = {}
_stores_lock = _thread.allocate_lock()


def open_store(
    *,
    graph_root: str | os.PathLike[str] | None = None,
    run_root: str | os.PathLike[str] | None = None,
    driver: str | None = None,
    driver_options: Sequence[str] | None = None,
    image_store: str | os.PathLike[str] | None = None,
    additional_image_stores: Sequence[str | os.PathLike[str]] | None = None,
    transient: bool | None = None,
    uid_map: Sequence[IDMap] | None = None,
    gid_map: Sequence[IDMap] | None = None,
    use_config: bool = True,
    enter_user_namespace: bool = False,
) -> Store:
    """Open the store podman and our CLI would open, or the one the arguments describe.

    With no arguments this is the store of the calling user, found as Go's tools find it:
    ``storage.conf`` (``$CONTAINERS_STORAGE_CONF``, the user's own file when rootless, then
    ``/etc/containers`` and ``/usr/share/containers``), ``$STORAGE_DRIVER`` and
    ``$STORAGE_OPTS``, and the rootless defaults (``~/.local/share/containers/storage``).  Each
    argument given overrides one setting; as with podman's ``--root``, ``--runroot`` and
    ``--storage-driver``, giving ``graph_root``, ``run_root`` or ``driver`` drops the
    configuration's driver options (pass ``driver_options`` to keep some).

    The store is also a context manager that closes it::

        with open_store(graph_root="/tmp/s/root", run_root="/tmp/s/run", driver="vfs") as store:
            print(store.images())

    Args:
        graph_root: where layers, images and containers are kept (Go's ``GraphRoot``).
        run_root: where mount records, locks of running containers and other state that a
            reboot clears are kept (Go's ``RunRoot``).
        driver: the graph driver, e.g. ``"overlay"`` or ``"vfs"``; probed when neither this
            nor the configuration names one.
        driver_options: driver options as in ``storage.conf`` or ``--storage-opt``, e.g.
            ``["overlay.mount_program=/usr/bin/fuse-overlayfs"]``.
        image_store: a separate directory for images and their layers (Go's ``ImageStore``).
        additional_image_stores: read-only stores whose images this store also lists and can
            start containers from (storage.conf's ``additionalimagestores``).
        transient: keep container records and container layers in the run root, so that a
            reboot forgets them (Go's ``TransientStore``).
        uid_map: the default UID mapping of new layers and containers.
        gid_map: the default GID mapping of new layers and containers.
        use_config: read ``storage.conf`` and the environment for what is not given; with
            False, only the arguments count and ``graph_root`` and ``run_root`` are required.
        enter_user_namespace: for a rootless caller outside a user namespace, enter one
            first (:func:`containers_storage.userns.enter_user_namespace`: the process becomes
            uid 0 of a new namespace, as under ``podman unshare``).  Call it before the
            program starts threads.  Without it such a caller can read the store, but
            mounting or applying layers raises
            :class:`~containers_storage.userns.UserNamespaceRequired`.

    Returns:
        The store, shared with any other :func:`open_store` or :func:`get_store` call of this
        process for the same roots until it is closed.

    Raises:
        IncompleteOptions: neither root is known.
        ~containers_storage.config.ConfigError: a configuration file Go refuses too.
        ~containers_storage.userns.UserNamespaceError: entering the user namespace failed.
        DriverError: the driver cannot be set up here.
    """
    from . import userns

    if enter_user_namespace and userns.needs_user_namespace():
        userns.enter_user_namespace()
    overridden = graph_root is not None or run_root is not None or driver is not None
    if use_config:
        from .config import default_store_options

        options = default_store_options()
        if overridden:
            options.driver_options = []
    else:
        options = StoreOptions()
    if graph_root is not None:
        options.graph_root = os.fspath(graph_root)
    if run_root is not None:
        options.run_root = os.fspath(run_root)
    if driver is not None:
        options.driver_name = driver
    if driver_options is not None:
        options.driver_options = list(driver_options)
    if image_store is not None:
        options.image_store = os.fspath(image_store)
    if additional_image_stores:
        # Go's spelling of additionalimagestores in the driver options; every driver reads it.
        dirs = ",".join(os.path.abspath(os.fspath(d)) for d in additional_image_stores)
        options.driver_options.append(f".imagestore={dirs}")
    if transient is not None:
        options.transient_store = transient
    if uid_map is not None:
        options.uid_map = list(uid_map)
    if gid_map is not None:
        options.gid_map = list(gid_map)
    if not use_config and not (options.graph_root and options.run_root):
        raise errors.IncompleteOptions("open_store(use_config=False) needs graph_root and run_root: "
                                       + errors.IncompleteOptions.text)
    return get_store(options)


def get_store(options: StoreOptions) -> Store:
    """Open (or reuse, within this process) the store ``options`` describe (Go's ``GetStore``).

    The lower-level form of :func:`open_store`: nothing is read from ``storage.conf`` except a
    missing root, which comes from :func:`~containers_storage.config.default_store_options`.

    Args:
        options: the roots, driver and its options; ``graph_root`` or ``run_root`` at least.

    Returns:
        The store; an open one of this process when one has the same roots (and driver).

    Raises:
        IncompleteOptions: neither ``graph_root`` nor ``run_root`` is set.
        DriverError: the driver had to be probed and none works here.
    """
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


class PutLayerResult:
    """What :meth:`Store.put_layer` made: the layer, and how much diff went into it.

    Attributes:
        layer: the new layer's record.
        size: bytes of uncompressed tar stream applied (Go's ``PutLayer`` size), or None when
            the layer was made without a diff (Go's -1).
    """

    __slots__ = ("layer", "size")

    def __init__(self, layer: Layer, size: int | None) -> None:
        """Pair ``layer`` with the ``size`` of the diff applied into it (None: no diff)."""
        self.layer = layer
        self.size = size

    def __repr__(self) -> str:
        """``PutLayerResult(layer=<Layer ...>, size=...)``."""
        return f"PutLayerResult(layer={self.layer!r}, size={self.size!r})"


class Store:
    """A containers/storage store on disk, shared with podman, buildah, skopeo and CRI-O.

    Open one with :func:`open_store` or :func:`get_store`, not with the constructor.  A store
    is a context manager: ``with open_store() as store: ...`` closes it on the way out.

    Methods take references (``ref``): a full ID, a unique prefix of one, or a name.  Records
    (:class:`~containers_storage.records.Layer`, :class:`~containers_storage.records.Image`,
    :class:`~containers_storage.records.Container`) are snapshots taken under the store's lock;
    ask again for fresh ones.  Lookups of things that do not exist raise the
    :class:`~containers_storage.errors.NotKnown` family (also :class:`LookupError`).

    Attributes:
        options: the options the store was opened with.
        graph_root: the absolute graph root (layers, images, containers).
        run_root: the absolute run root (mount records and other state a reboot clears).
        driver_name: the graph driver's name (``"overlay"``, ``"vfs"``, ...).
        image_store_dir: the separate image store, or ``""``.
        transient: whether container records live in the run root.
        uid_map: the default UID mapping of new layers and containers.
        gid_map: the default GID mapping of new layers and containers.
        graph_lock: ``storage.lock``, which Go's tools take around driver set-up and shutdown.
    """

    def __init__(self, options: StoreOptions, graph_root: str, run_root: str) -> None:
        """Open the store at ``graph_root`` and ``run_root`` (absolute); prefer :func:`get_store`,
        which also reuses an open store of this process."""
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
        self.graph_lock: LockFile = get_lock_file(os.path.join(graph_root, STORAGE_LOCK))
        get_lock_file(os.path.join(graph_root, USERNS_LOCK))
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
        self._layout = Layout(graph_root, run_root, self.driver_name, image_store=self.image_store_dir,
                              transient=self.transient, additional_image_stores=self._extra_stores)

    # -- components, created on first use ----------------------------------------------------
    @property
    def driver(self) -> Driver:
        """The graph driver, set up on first use (Go's ``GraphDriver``).

        Raises:
            DriverError: the driver cannot work here (its options, the kernel, the file system).
            ~containers_storage.userns.UserNamespaceRequired: a rootless caller outside a user
                namespace.
        """
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
        """The read-write layer store (lower level: lock it yourself, see ``reading()``)."""
        if self._layer_store is None:
            self._layer_store = new_layer_store(self._layout, self._get_driver)
        return self._layer_store

    @property
    def ro_layer_stores(self) -> list[ROLayerStore]:
        """The layer stores of the additional image stores (read-only), in configured order."""
        if self._ro_layer_stores is None:
            self._ro_layer_stores = [
                new_ro_layer_store(files, self._layout.layers_run_dir, self._get_driver)
                for files in self._layout.additional_layers()
            ]
        return self._ro_layer_stores

    def all_layer_stores(self) -> list[ROLayerStore]:
        """The read-write layer store, then the read-only ones: the order lookups search."""
        return [self.layer_store, *self.ro_layer_stores]

    @property
    def image_store(self) -> ImageStore:
        """The read-write image store (in the image store directory when there is one)."""
        if self._image_store is None:
            self._image_store = new_image_store(self._layout.images())
        return self._image_store

    @property
    def ro_image_stores(self) -> list[ROImageStore]:
        """The other image stores: the graph root's when images live in a separate image store
        (writable), then the additional image stores (read-only)."""
        if self._ro_image_stores is None:
            stores: list[ROImageStore] = []
            for files in self._layout.additional_images():
                if not files.read_only:  # the graph root's own, when images live elsewhere
                    stores.append(new_image_store(files))
                    continue
                try:
                    stores.append(new_ro_image_store(files))
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
        """The primary image store, then :attr:`ro_image_stores`: the order lookups search."""
        return [self.image_store, *self.ro_image_stores]

    @property
    def container_store(self) -> ContainerStore:
        """The container store (lower level: lock it yourself, see ``reading()``)."""
        if self._container_store is None:
            self._container_store = new_container_store(self._layout)
        return self._container_store

    # -- lock helpers ------------------------------------------------------------------------
    @contextmanager
    def _writing_all(self) -> Iterator[LayerStore]:
        """Write locks on layers, images and containers, in Go's order."""
        with self.layer_store.writing() as ls, self.image_store.writing(), \
                self.container_store.writing():
            yield ls

    def _first_layer_store(self, fn: Callable[[ROLayerStore], T | None]) -> T | None:
        return _first(self.all_layer_stores(), fn)

    def _first_image_store(self, fn: Callable[[ROImageStore], T | None]) -> T | None:
        return _first(self.all_image_stores(), fn)

    # -- listing and lookups -------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        """Every layer: the store's own, then those of the additional image stores.

        Returns:
            Layer records in store order (``read_only`` is set on those of read-only stores).
        """
        return _gather(self.all_layer_stores(), lambda s: s.layers)

    def images(self) -> list[Image]:
        """Every image: the store's own, then those of the other image stores.

        Returns:
            Image records in store order (``read_only`` is set on those of read-only stores).
        """
        return _gather(self.all_image_stores(), lambda s: s.records)

    def containers(self) -> list[Container]:
        """Every container of the store.

        Returns:
            Container records in store order.
        """
        with self.container_store.reading():
            return list(self.container_store.records)

    def layer(self, ref: str) -> Layer:
        """The layer ``ref`` names (an ID, a unique ID prefix or a name).

        Raises:
            LayerUnknown: no layer of any layer store matches.
        """
        found = self._first_layer_store(lambda s: s.lookup(ref))
        if found is None:
            raise errors.LayerUnknown(ref=ref)
        return found

    def image(self, ref: str) -> Image:
        """The image ``ref`` names (an ID, a unique ID prefix or a name).

        An image of a read-only store that the primary store also has is the primary's.

        Raises:
            ImageUnknown: no image store has it.
        """
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
        raise errors.ImageUnknown.after(f'locating image with ID "{ref}"', ref=ref)

    def container(self, ref: str) -> Container:
        """The container ``ref`` names (an ID, a unique ID prefix or a name).

        Raises:
            ContainerUnknown: there is no such container.
        """
        with self.container_store.reading():
            return self.container_store.get(ref)

    def exists(self, ref: str) -> bool:
        """Whether ``ref`` names a layer, an image or a container (Go's ``Exists``).

        Returns:
            True when any store knows it; False also when a store cannot be read.
        """
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
            raise errors.LayerUnknown(ref=ref)
        return found

    def lookup(self, ref: str) -> str:
        """The ID of the layer, image or container ``ref`` names, in that order (Go's ``Lookup``).

        Raises:
            LayerUnknown: nothing has that ID or name (Go's error for all three kinds).
        """
        return self._any_record(ref).id

    def images_by_digest(self, digest: str) -> list[Image]:
        """The images whose digests (the fixed one or a manifest's) include ``digest``.

        Args:
            digest: ``"sha256:..."``.
        """
        return _gather(self.all_image_stores(), lambda s: s.images_by_digest(digest))

    def images_by_top_layer(self, ref: str) -> list[Image]:
        """The images whose top layer (or a mapped copy of it) is the layer ``ref`` names.

        Raises:
            LayerUnknown: there is no such layer.
        """
        layer_id = self.layer(ref).id
        return _gather(self.all_image_stores(), lambda s: s.images_by_top_layer(layer_id))

    def layers_by_compressed_digest(self, digest: str) -> list[Layer]:
        """The layers applied from a compressed blob with this digest (``"sha256:..."``)."""
        return _gather(self.all_layer_stores(), lambda s: s.by_compressed_digest(digest))

    def layers_by_uncompressed_digest(self, digest: str) -> list[Layer]:
        """The layers whose uncompressed tar stream had this digest (a diff ID)."""
        return _gather(self.all_layer_stores(), lambda s: s.by_uncompressed_digest(digest))

    def layers_by_toc_digest(self, digest: str) -> list[Layer]:
        """The layers pulled partially from a zstd:chunked or eStargz blob whose table of
        contents has this digest (Go's ``LayersByTOCDigest``)."""
        return _gather(self.all_layer_stores(), lambda s: s.by_toc_digest(digest))

    def layer_size(self, ref: str) -> int:
        """The recorded size of the layer's diff, or -1 when none is recorded (Go's ``LayerSize``).

        Raises:
            LayerUnknown: there is no such layer.
        """
        found = self._first_layer_store(lambda s: s.size(ref) if s.exists(ref) else None)
        if found is None:
            raise errors.LayerUnknown(ref=ref)
        return found

    def container_by_layer(self, ref: str) -> Container:
        """The container whose read-write layer is the layer ``ref`` names.

        Raises:
            LayerUnknown: there is no such layer.
            ContainerUnknown: no container uses it.
        """
        layer = self.layer(ref)
        with self.container_store.reading():
            c = self.container_store.by_layer.get(layer.id)
        if c is None:
            raise errors.ContainerUnknown(ref=ref)
        return c

    # -- creating ------------------------------------------------------------------------------
    def put_layer(
        self,
        diff: BinaryIO | None = None,
        *,
        id: str | None = None,
        parent: str | None = None,
        names: Sequence[str] | None = None,
        mount_label: str | None = None,
        writeable: bool = False,
        uid_map: Sequence[IDMap] | None = None,
        gid_map: Sequence[IDMap] | None = None,
        host_uid_mapping: bool = False,
        host_gid_mapping: bool = False,
        flags: Mapping[str, Any] | None = None,
        volatile: bool = False,
        staged: StagedDiff | None = None,
        original_digest: str | None = None,
        original_size: int | None = None,
        uncompressed_digest: str | None = None,
        verify_digests: bool = False,
        big_data: Sequence[tuple[str, bytes]] | None = None,
        template: str | None = None,
    ) -> PutLayerResult:
        """Create a layer over ``parent`` and apply a layer tarball into it (Go's ``PutLayer``).

        The tarball is streamed once: decompressed (gzip, zstd or none, detected), hashed
        (compressed and uncompressed digests are recorded) and written, with tar-split data
        kept so that :meth:`diff` can give the same bytes back.  Until it is complete the layer
        is flagged incomplete, so a crash or an error leaves nothing a later writer keeps.

        Args:
            diff: the layer tarball, a readable binary stream; None for an empty layer.
            id: the new layer's ID; a random one when None.
            parent: the layer to build on (a reference); None for a base layer.
            names: names for the layer (taken away from any layer that had them).
            mount_label: the SELinux label to mount it with.
            writeable: ignored, as in Go (kept for the vocabulary of ``CreateLayer``).
            uid_map: ID mapping of the layer's files; by default the parent's, or the store's.
            gid_map: as ``uid_map``, for groups.
            host_uid_mapping: use no UID mapping at all, whatever the defaults.
            host_gid_mapping: use no GID mapping at all, whatever the defaults.
            flags: extra flags to record with the layer.
            volatile: keep the record in ``volatile-layers.json`` (not synced, lost on a
                crash), as containers' layers in transient stores are.
            staged: a diff already applied by :meth:`prepare_staged_layer`, moved in instead of
                applying ``diff``.
            original_digest: the digest of ``diff`` as the caller knows it (Go's
                ``OriginalDigest``): recorded as the layer's compressed digest instead of the
                computed one, e.g. a compressed blob's digest when ``diff`` is its
                decompressed stream.
            original_size: the size belonging to ``original_digest`` (Go's ``OriginalSize``).
            uncompressed_digest: the diff ID as the caller knows it (Go's
                ``UncompressedDigest``), recorded instead of the computed one.
            verify_digests: the three values above must be ``diff``'s own, checked while it
                streams: otherwise the layer is refused
                (:class:`~containers_storage.errors.DigestMismatch`) and nothing
                of it is kept.  Go trusts them; its callers verify blobs first.
            big_data: items to store with the layer before its diff, as ``(key, data)``.
            template: a layer whose contents, digests and tar-split the new layer starts from
                (Go's ``TemplateLayer``; it should be a child of ``parent``).

        Returns:
            The new layer, and the size of the uncompressed diff applied (None without one).

        Raises:
            LayerUnknown: ``parent`` (or ``template``) names no layer.
            ParentIsContainer: ``parent`` is a container's layer.
            DuplicateID: the ID is taken.
            InvalidArchive: the tarball is malformed or tries to write outside the layer.
            DigestMismatch: with ``verify_digests``, the diff is not what the digests say.
        """
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
                    raise errors.LayerUnknown(ref=parent)
            with self.container_store.writing():
                if parent_layer is not None:
                    if any(c.layer == parent_layer.id for c in self.container_store.records):
                        raise errors.ParentIsContainer()
                    default_uid, default_gid = parent_layer.uid_map, parent_layer.gid_map
                else:
                    default_uid, default_gid = self.uid_map, self.gid_map
                umap = [] if host_uid_mapping else (uid_map or default_uid)
                gmap = [] if host_gid_mapping else (gid_map or default_gid)
                umap, gmap = layer_maps(self.driver, list(umap), list(gmap))
                digests = None
                if original_digest or uncompressed_digest or verify_digests:
                    from .layers import DiffDigests

                    digests = DiffDigests(original_digest or "", original_size,
                                          uncompressed_digest or "", verify_digests)
                layer, size = rl.create(id or "", parent_layer, list(names or []), mount_label or "",
                                        None, writeable, uid_map=umap, gid_map=gmap,
                                        flags=dict(flags) if flags is not None else None,
                                        volatile=volatile, diff=diff, staged=staged,
                                        template=template or "", digests=digests,
                                        big_data=list(big_data) if big_data is not None else None)
                return PutLayerResult(layer, None if size < 0 else size)

    def create_layer(
        self,
        *,
        id: str | None = None,
        parent: str | None = None,
        names: Sequence[str] | None = None,
        mount_label: str | None = None,
        writeable: bool = False,
        uid_map: Sequence[IDMap] | None = None,
        gid_map: Sequence[IDMap] | None = None,
        host_uid_mapping: bool = False,
        host_gid_mapping: bool = False,
        flags: Mapping[str, Any] | None = None,
        volatile: bool = False,
    ) -> Layer:
        """Create an empty layer over ``parent`` (Go's ``CreateLayer``): :meth:`put_layer`
        without a diff, with the same keyword arguments.

        Returns:
            The new layer.

        Raises:
            LayerUnknown: ``parent`` names no layer.
            ParentIsContainer: ``parent`` is a container's layer.
            DuplicateID: the ID is taken.
        """
        return self.put_layer(
            id=id, parent=parent, names=names, mount_label=mount_label, writeable=writeable,
            uid_map=uid_map, gid_map=gid_map, host_uid_mapping=host_uid_mapping,
            host_gid_mapping=host_gid_mapping, flags=flags, volatile=volatile).layer

    def create_image(
        self,
        layer: str | None = None,
        *,
        id: str | None = None,
        names: Sequence[str] | None = None,
        metadata: str | None = None,
        created: str | None = None,
        digest: str | None = None,
        names_history: Sequence[str] | None = None,
        flags: Mapping[str, Any] | None = None,
        big_data: Sequence[tuple[str, bytes, str]] | None = None,
    ) -> Image:
        """Create an image record whose top layer is ``layer`` (Go's ``CreateImage``).

        An image is bookkeeping around a layer: names, a digest, metadata and big data items
        such as the manifest and config.  With the ID of an image in a read-only store, the
        new image copies that one's metadata, digest, names and big data.

        Args:
            layer: the top layer (a reference); None for an image without layers.
            id: the image's ID (podman uses the config's digest without ``sha256:``); a
                random one when None.
            names: names such as ``"registry.example.com/app:1.0"`` (taken away from any
                image that had them).
            metadata: free text stored with the image.
            created: the creation time as RFC 3339 text; now when None.
            digest: the manifest digest to record as the image's fixed digest.
            names_history: earlier names, newest first.
            flags: extra flags to record with the image.
            big_data: items to store with it, as ``(key, data, digest)``; ``digest`` may be
                ``""`` to record the data's sha256 digest.

        Returns:
            The new image.

        Raises:
            LayerUnknown: ``layer`` names no layer.
            DuplicateID: the ID is taken.
        """
        if layer:
            top_ref = layer
            found = self._first_layer_store(lambda s: s.lookup(top_ref))
            if found is None:
                raise errors.LayerUnknown(ref=layer)
            layer = found.id
        id = id or ""
        metadata = metadata or ""
        created = created or ""
        digest = digest or ""
        names = list(names or [])
        names_history = list(names_history) if names_history is not None else None
        flags = dict(flags) if flags is not None else None
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
                id, names, layer or "", metadata=metadata, created=created, digest=digest,
                names_history=names_history, flags=flags, big_data=items)
            if add_after:
                ims.update_names(image.id, add_after, "add")
            return image

    def create_container(
        self,
        image: str | None = None,
        *,
        id: str | None = None,
        names: Sequence[str] | None = None,
        layer: str | None = None,
        metadata: str | None = None,
        uid_map: Sequence[IDMap] | None = None,
        gid_map: Sequence[IDMap] | None = None,
        host_uid_mapping: bool = False,
        host_gid_mapping: bool = False,
        flags: Mapping[str, Any] | None = None,
        volatile: bool = False,
        mount_opts: Sequence[str] | None = None,
        big_data: Sequence[tuple[str, bytes]] | None = None,
        auto_userns: AutoUserNsOptions | None = None,
    ) -> Container:
        """Create a container: a new read-write layer over the image's top layer, and its record
        (Go's ``CreateContainer``).

        With ID mappings other than the top layer's, the container starts from a copy of that
        layer re-owned for them, made once per mapping and kept with the image.

        Args:
            image: the image to start from (a reference); None for a container over no image.
            id: the container's ID; a random one when None.
            names: names for the container (unique among containers).
            layer: the ID to give the container's new layer; a random one when None.
            metadata: free text stored with the container.
            uid_map: the container's UID mapping; by default the image's top layer's, or the
                store's.
            gid_map: as ``uid_map``, for groups.
            host_uid_mapping: use no UID mapping at all, whatever the defaults.
            host_gid_mapping: use no GID mapping at all, whatever the defaults.
            flags: extra flags; ``"MountLabel"`` and ``"ProcessLabel"`` (SELinux) go together.
            volatile: keep the container's records out of the synced files (lost on a crash),
                as in transient stores.
            mount_opts: mount options :meth:`mount` uses for this container.
            big_data: items to store with it, as ``(key, data)``.
            auto_userns: have the store choose the maps (Go's ``AutoUserNs``, podman's
                ``--userns=auto``): ranges no other container of this store uses, replacing
                ``uid_map``, ``gid_map`` and the ``host_*`` flags (see
                :mod:`containers_storage.autouserns`).

        Returns:
            The new container.

        Raises:
            ImageUnknown: ``image`` names no image.
            DuplicateID: the ID (of the container or its layer) is taken.
            DuplicateName: a name belongs to another container.
            InvalidMappings: the maps map an ID twice.
            NoAvailableIDs: ``auto_userns`` found too few unused IDs.
        """
        id = id or ""
        layer = layer or ""
        metadata = metadata or ""
        image = image or ""
        want = MappingOptions(uid_map, gid_map, host_uid_mapping, host_gid_mapping)
        rl = self.layer_store
        with ExitStack() as stack:
            if auto_userns is not None or want.uid_map or want.gid_map:
                # As Go: one process at a time picks ranges, so two automatic namespaces never
                # get the same IDs (explicit maps are not checked against them, only serialized).
                stack.enter_context(get_lock_file(self._layout.userns_lock).writing())
            stack.enter_context(rl.writing())
            image_id = ""
            top: Layer | None = None
            found: Image | None = None
            home: ROImageStore | None = None
            if image:
                found, home = self._locked_image(stack, image)
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
                    return cs.create(
                        id, list(names or []), image_id, clayer.id, metadata=metadata,
                        uid_map=want.uid_map, gid_map=want.gid_map, flags=cflags,
                        volatile=volatile or self.transient,
                        mount_opts=list(mount_opts) if mount_opts is not None else None,
                        big_data=list(big_data) if big_data is not None else None)
            except BaseException:
                rl.delete(clayer.id)
                raise

    def _locked_image(self, stack: ExitStack, ref: str) -> tuple[Image, ROImageStore]:
        """The image ``ref`` names and the image store holding it, with the read-only layer
        stores read-locked, the primary image store write-locked and the read-only image stores
        read-locked as far as the search went (locks held until ``stack`` closes).

        Raises:
            ImageUnknown: no image store has it.
        """
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
            raise errors.ImageUnknown.after(f'locating image with ID "{ref}"', ref=ref)
        return image, home

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
        """The free-text metadata of the layer, image or container ``ref`` names, in that order.

        Raises:
            NotAnID: nothing has that ID or name.
        """
        found = self._first_layer_store(lambda s: s.metadata(ref) if s.exists(ref) else None)
        if found is not None:
            return found
        found = self._first_image_store(lambda s: s.metadata(ref) if s.exists(ref) else None)
        if found is not None:
            return found
        with self.container_store.reading():
            if self.container_store.exists(ref):
                return self.container_store.metadata(ref)
        raise errors.NotAnID(ref=ref)

    def set_metadata(self, ref: str, metadata: str) -> None:
        """Replace the metadata of the layer, image or container ``ref`` names.

        Raises:
            NotAnID: nothing of this store's own has that ID or name (read-only stores cannot
                be changed).
        """
        with self._writing_all() as rl:
            if rl.exists(ref):
                return rl.set_metadata(ref, metadata)
            if self.image_store.exists(ref):
                return self.image_store.set_metadata(ref, metadata)
            if self.container_store.exists(ref):
                return self.container_store.set_metadata(ref, metadata)
            raise errors.NotAnID(ref=ref)

    def names(self, ref: str) -> list[str]:
        """The names of the layer, image or container ``ref`` names, in that order.

        Raises:
            LayerUnknown: nothing has that ID or name (Go's error for all three kinds).
        """
        return self._any_record(ref).names

    def update_names(self, ref: str, names: Sequence[str], operation: NameOperation | str) -> None:
        """Change the names of the layer, image or container ``ref`` names, in that order.

        Names are unique per kind: a name given here is taken away from any other record of
        the same kind that had it.  Duplicates in ``names`` are dropped.  Changing the names of
        an image of a read-only store copies the image into this store first.

        Args:
            ref: an ID, a unique ID prefix or a name.
            names: the names to set, add or remove.
            operation: a :class:`~containers_storage.nameops.NameOperation` (or its string).

        Raises:
            LayerUnknown: nothing has that ID or name (Go's error for all three kinds).
            ValueError: not an operation.
        """
        op = str(operation)  # a NameOperation is its string: no enum import on the CLI's path
        if op not in ("set", "add", "remove"):
            raise ValueError(f"invalid update name operation {operation!r}")
        self._update_names(ref, list(names), op)

    def set_names(self, ref: str, names: Sequence[str]) -> None:
        """Replace the names of what ``ref`` names (:meth:`update_names` with ``SET``; Go's
        ``SetNames``, which Go deprecates as racy: prefer :meth:`add_names` and
        :meth:`remove_names`)."""
        self._update_names(ref, list(names), "set")

    def add_names(self, ref: str, names: Sequence[str]) -> None:
        """Add names to what ``ref`` names, before its others (:meth:`update_names` with ``ADD``)."""
        self._update_names(ref, list(names), "add")

    def remove_names(self, ref: str, names: Sequence[str]) -> None:
        """Remove names from what ``ref`` names (:meth:`update_names` with ``REMOVE``)."""
        self._update_names(ref, list(names), "remove")

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
        raise errors.LayerUnknown(ref=ref)

    # -- big data ------------------------------------------------------------------------------
    # Big data items are named blobs kept beside a record (an image's manifest and config, a
    # container's spec): one file each, with size and digest in the record for images and
    # containers.

    def list_image_big_data(self, ref: str) -> list[str]:
        """The keys of the image's big data items (e.g. ``"manifest"``, ``"sha256:<config>"``).

        Raises:
            ImageUnknown: no image store has it.
        """
        found = self._first_image_store(lambda s: s.big_data_names(ref) if s.exists(ref) else None)
        if found is None:
            raise errors.ImageUnknown.after(f'locating image with ID "{ref}"', ref=ref)
        return found

    def image_big_data(self, ref: str, key: str) -> bytes:
        """The image's big data item ``key``, e.g. its manifest or config.

        Raises:
            ImageUnknown: no image store has the image.
            BigDataUnknown: the image has no such item.
            InvalidBigDataName: ``key`` is empty.
        """
        known, data = _first_big_data(self.all_image_stores(), ref, key)
        if data is None and known:
            raise errors.BigDataUnknown(
                f"locating item named {_go_quote(key)} for image with ID {_go_quote(ref)} "
                "(consider removing the image to resolve the issue): file does not exist",
                ref=ref, key=key)
        if data is None:
            raise errors.ImageUnknown.after(f'locating image with ID "{ref}"', ref=ref)
        return data

    def image_big_data_size(self, ref: str, key: str) -> int:
        """The size in bytes of the image's big data item ``key``.

        Raises:
            SizeUnknown: no image has that reference, or it has no such item.
        """
        found = self._first_image_store(lambda s: s.big_data_size(ref, key) if s.exists(ref) else None)
        if found is None:
            raise errors.SizeUnknown(ref=ref)
        return found

    def image_big_data_digest(self, ref: str, key: str) -> str:
        """The recorded digest (``"sha256:..."``) of the image's big data item ``key``.

        Raises:
            DigestUnknown: no image has that reference, or no digest is recorded for the item.
        """
        found = self._first_image_store(
            lambda s: s.big_data_digest(ref, key) if s.exists(ref) else None)
        if found is None:
            raise errors.DigestUnknown(ref=ref)
        return found

    def set_image_big_data(self, ref: str, key: str, data: bytes, *,
                           manifest_digest: str | None = None) -> None:
        """Store ``data`` as the image's big data item ``key`` (replacing one of that key).

        Items whose key starts with ``manifest`` add their digest to the image's digests, so
        that :meth:`images_by_digest` finds the image by it.

        Args:
            ref: the image (of this store's own images).
            key: the item's name.
            data: its content.
            manifest_digest: the digest to record for a ``manifest*`` item, when it is not
                the sha256 of ``data`` (Go's ``digestManifest``); computed when None.

        Raises:
            ImageUnknown: this store has no such image.
            InvalidBigDataName: ``key`` is empty.
        """
        with self.image_store.writing():
            self.image_store.set_big_data(ref, key, data, manifest_digest)

    def list_layer_big_data(self, ref: str) -> list[str]:
        """The keys of the layer's big data items.

        Raises:
            LayerUnknown: no layer store has it.
        """
        found = self._first_layer_store(lambda s: s.big_data_names(ref) if s.exists(ref) else None)
        if found is None:
            raise errors.LayerUnknown.after(f'locating layer with ID "{ref}"', ref=ref)
        return found

    def layer_big_data(self, ref: str, key: str) -> bytes:
        """The layer's big data item ``key``.

        Raises:
            LayerUnknown: no layer store has the layer.
            BigDataUnknown: the layer has no such item.
        """
        known, data = _first_big_data(self.all_layer_stores(), ref, key)
        if data is None and known:  # Go: fmt.Errorf("locating item named %q for layer with ID %q: %w", ...)
            raise errors.BigDataUnknown(f"locating item named {_go_quote(key)} for layer with ID "
                                        f"{_go_quote(ref)}: file does not exist", ref=ref, key=key)
        if data is None:
            raise errors.LayerUnknown.after(f'locating layer with ID "{ref}"', ref=ref)
        return data

    def set_layer_big_data(self, ref: str, key: str, data: bytes) -> None:
        """Store ``data`` as the layer's big data item ``key`` (replacing one of that key).

        Raises:
            LayerUnknown: this store has no such layer.
            InvalidBigDataName: ``key`` is empty.
        """
        with self.layer_store.writing() as rl:
            rl.set_big_data(ref, key, data)

    def list_container_big_data(self, ref: str) -> list[str]:
        """The keys of the container's big data items.

        Raises:
            ContainerUnknown: there is no such container.
        """
        with self.container_store.reading():
            return self.container_store.big_data_names(ref)

    def container_big_data(self, ref: str, key: str) -> bytes:
        """The container's big data item ``key``.

        Raises:
            ContainerUnknown: there is no such container.
            FileNotFoundError: it has no such item.
        """
        with self.container_store.reading():
            return self.container_store.big_data(ref, key)

    def container_big_data_size(self, ref: str, key: str) -> int:
        """The size in bytes of the container's big data item ``key``.

        Raises:
            ContainerUnknown: there is no such container.
            SizeUnknown: it has no such item.
        """
        with self.container_store.reading():
            return self.container_store.big_data_size(ref, key)

    def container_big_data_digest(self, ref: str, key: str) -> str:
        """The recorded digest (``"sha256:..."``) of the container's big data item ``key``.

        Raises:
            ContainerUnknown: there is no such container.
            DigestUnknown: it has no such item.
        """
        with self.container_store.reading():
            return self.container_store.big_data_digest(ref, key)

    def set_container_big_data(self, ref: str, key: str, data: bytes) -> None:
        """Store ``data`` as the container's big data item ``key`` (replacing one of that key).

        Raises:
            ContainerUnknown: there is no such container.
            InvalidBigDataName: ``key`` is empty.
        """
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
                path = self._layout.image_userdata(root, image.id)
                os.makedirs(path, mode=0o700, exist_ok=True)
                return path
        if found:
            raise errors.StorageError(f'locating image with ID "{ref}" (consider removing the image '
                                      "to resolve the issue): file does not exist")
        raise errors.ImageUnknown.after(f'locating image with ID "{ref}"', ref=ref)

    def image_directory(self, ref: str) -> str:
        """A directory for the caller's own files about the image, deleted with the image.

        Returns:
            ``<graph root>/<driver>-images/<id>/userdata``, created if need be.

        Raises:
            ImageUnknown: no image store has it.
        """
        return self._image_dir(ref, self.graph_root)

    def image_run_directory(self, ref: str) -> str:
        """As :meth:`image_directory`, in the run root: its files are gone after a reboot."""
        return self._image_dir(ref, self.run_root)

    def _container_dir(self, ref: str, root: str) -> str:
        with self.container_store.reading():
            c = self.container_store.get(ref)
        path = self._layout.container_userdata(root, c.id)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def container_directory(self, ref: str) -> str:
        """A directory for the caller's own files about the container, deleted with it.

        Returns:
            ``<graph root>/<driver>-containers/<id>/userdata``, created if need be.

        Raises:
            ContainerUnknown: there is no such container.
        """
        return self._container_dir(ref, self.graph_root)

    def container_run_directory(self, ref: str) -> str:
        """As :meth:`container_directory`, in the run root: its files are gone after a reboot."""
        return self._container_dir(ref, self.run_root)

    def set_container_directory_file(self, ref: str, name: str, data: bytes) -> None:
        """Write ``data`` to ``name`` (a relative path) in the container's directory, atomically.

        Raises:
            ContainerUnknown: there is no such container.
        """
        path = os.path.join(self.container_directory(ref), name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, data)

    def from_container_directory(self, ref: str, name: str) -> bytes:
        """Read ``name`` (a relative path) from the container's directory.

        Raises:
            ContainerUnknown: there is no such container.
            FileNotFoundError: there is no such file.
        """
        with open(os.path.join(self.container_directory(ref), name), "rb") as f:
            return f.read()

    # -- deleting ------------------------------------------------------------------------------
    def delete_layer(self, ref: str) -> None:
        """Delete a layer no other layer, image or container uses (Go's ``DeleteLayer``).

        Raises:
            NotALayer: this store has no such layer.
            LayerHasChildren: another layer builds on it.
            LayerUsedByImage: it is an image's top layer.
            LayerUsedByContainer: it is a container's layer.
        """
        with self._writing_all() as rl:
            layer = rl.lookup(ref)
            if layer is None:
                raise errors.NotALayer(ref=ref)
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

    def delete_image(self, ref: str, *, commit: bool = True) -> list[str]:
        """Delete an image and the layers only it used (Go's ``DeleteImage``).

        Walking down from the top layer, each layer that no other image, layer or container
        uses goes too, until one that is still used (or the base layer) is reached.

        Args:
            ref: the image.
            commit: with False, delete nothing and only say what would go.

        Returns:
            The IDs of the layers deleted (or that would be), top first.

        Raises:
            NotAnImage: no writable image store has it.
            ImageUsedByContainer: a container uses it.
        """
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
                raise errors.NotAnImage(ref=ref)
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
        """Delete a container, its layer and its directories (Go's ``DeleteContainer``).

        Raises:
            NotAContainer: there is no such container.
        """
        with self._writing_all() as rl:
            cs = self.container_store
            c = cs.lookup(ref)
            if c is None:
                raise errors.NotAContainer(ref=ref)
            if rl.exists(c.layer):
                rl.delete(c.layer)
            for directory in self._layout.container_dirs(c.id):
                rmtree(directory, ignore_errors=True)
            cs.delete(c.id)

    def delete(self, ref: str) -> None:
        """Delete the container, else image, else layer ``ref`` names, without the safety
        checks of :meth:`delete_container`, :meth:`delete_image` and :meth:`delete_layer`
        (Go's ``Delete``): images may be left with missing layers, layers with missing parents.

        Raises:
            NotALayer: the container's layer is already gone.
            LayerUnknown: nothing of this store's own has that ID or name.
        """
        with self._writing_all() as rl:
            cs = self.container_store
            c = cs.lookup(ref)
            if c is not None:
                if not rl.exists(c.layer):
                    raise errors.NotALayer()
                rl.delete(c.layer)
                cs.delete(c.id)
                for root in (self.graph_root, self.run_root):
                    rmtree(self._layout.container_userdata(root, c.id), ignore_errors=True)
                return
            if self.image_store.exists(ref):
                self.image_store.delete(ref)
                return
            if rl.exists(ref):
                rl.delete(ref)
                return
            raise errors.LayerUnknown(ref=ref)

    def wipe(self) -> None:
        """Delete every container, image and layer of the store (Go's ``Wipe``)."""
        with self._writing_all() as rl:
            self.container_store.wipe()
            self.image_store.wipe()
            rl.wipe()

    # -- mounting ------------------------------------------------------------------------------
    def mount(self, ref: str, *, mount_label: str | None = None) -> str:
        """Mount a container's or a layer's file system and return where (Go's ``Mount``).

        A container is mounted with its ID mappings and mount options.  Mounts are counted:
        each :meth:`mount` needs an :meth:`unmount`.  A rootless caller's mount lives in its
        user namespace.

        Args:
            ref: a container or a layer of this store's own.
            mount_label: the SELinux label; the layer's own when None.

        Returns:
            The mount point (a directory for vfs).

        Raises:
            LayerUnknown: nothing of that ID or name.
            StoreIsReadOnly: the layer is in a read-only store (use :meth:`mount_image`).
        """
        opts = MountOpts(mount_label=mount_label or "")
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
        raise errors.LayerUnknown(ref=ref)

    def mount_image(self, ref: str, *, mount_options: Sequence[str] | None = None,
                    mount_label: str | None = None) -> str:
        """Mount an image's top layer read-only and return where (Go's ``MountImage``).

        Files show the host's IDs (a re-owned copy of the layer is made and kept with the
        image when its layers are ID-mapped).  Undo with :meth:`unmount_image`.

        Args:
            ref: the image (of any image store).
            mount_options: extra mount options; ``"ro"`` is always added.
            mount_label: the SELinux label to mount with.

        Returns:
            The mount point.

        Raises:
            ImageUnknown: no image store has it.
        """
        with ExitStack() as stack:
            rl = stack.enter_context(self.layer_store.writing())
            image, home = self._locked_image(stack, ref)
            host = MappingOptions(host_uid=True, host_gid=True)
            layer = image_top_layer_for_mapping(self.driver, image, home, self.image_store, rl,
                                                self.ro_layer_stores, host)
            if layer.uid_map or layer.gid_map:
                raise errors.StorageError(
                    "cannot create an image with canonical UID/GID mappings in a read-only store")
            opts = MountOpts(mount_label=mount_label or "", options=[*(mount_options or []), "ro"])
            return rl.mount(layer.id, opts)

    def _container_layer(self, ref: str) -> str:
        try:
            return self.container(ref).layer
        except errors.ContainerUnknown:
            return ref

    def unmount(self, ref: str, *, force: bool = False) -> bool:
        """Undo one :meth:`mount` of a container or layer (Go's ``Unmount``).

        Args:
            ref: a container or a layer of this store's own.
            force: unmount whatever the count, as if every mount were undone.

        Returns:
            Whether it is still mounted (by other users of the count); only a hint, as
            another process may mount or unmount it at any time.

        Raises:
            LayerUnknown: nothing of that ID or name.
            LayerNotMounted: it was not mounted.
        """
        ref = self._container_layer(ref)
        with self.layer_store.writing() as rl:
            if rl.exists(ref):
                return rl.unmount(ref, force)
        raise errors.LayerUnknown(ref=ref)

    def layer_parent_owners(self, ref: str) -> tuple[list[int], list[int]]:
        """Host UIDs and GIDs owning the parents of the layer's mount point that its ID
        mappings do not map (Go's ``LayerParentOwners``): who a container's root user could
        not reach.

        Returns:
            ``(uids, gids)``, each sorted; empty without mappings.

        Raises:
            LayerUnknown: this store has no such layer.
        """
        with self.layer_store.reading() as rl:
            if not rl.exists(ref):
                raise errors.LayerUnknown(ref=ref)
            return self.layer_store.parent_owners(ref)

    def container_parent_owners(self, ref: str) -> tuple[list[int], list[int]]:
        """:meth:`layer_parent_owners` of the container's layer.

        Raises:
            ContainerUnknown: there is no such container.
            LayerUnknown: its layer is gone.
        """
        with self.layer_store.reading() as rl, self.container_store.reading():
            layer = self.container_store.get(ref).layer
            if not rl.exists(layer):
                raise errors.LayerUnknown(ref=layer)
            return self.layer_store.parent_owners(layer)

    def unmount_image(self, ref: str, *, force: bool = False) -> bool:
        """Undo one :meth:`mount_image` (Go's ``UnmountImage``).

        Returns:
            Whether the image's layer is still mounted (only a hint, as for :meth:`unmount`).

        Raises:
            ImageUnknown: no image store has it.
            LayerNotMounted: it was not mounted.
        """
        image = self.image(ref)
        with self.layer_store.writing() as rl:
            for mapped in image.mapped_top_layers:
                layer = rl.lookup(mapped)
                if layer is not None and not layer.uid_map and not layer.gid_map:
                    return rl.unmount(layer.id, force)
            return rl.unmount(image.top_layer, force)

    def mounted(self, ref: str) -> int:
        """How many times the container's or layer's file system is mounted (Go's ``Mounted``).

        Only a hint: another process may mount or unmount it at any time.

        Raises:
            LayerUnknown: nothing of that ID or name.
        """
        ref = self._container_layer(ref)
        with self.layer_store.reading():
            return self.layer_store.mounted(ref)

    # -- diffs ---------------------------------------------------------------------------------
    def changes(self, ref: str, *, from_ref: str | None = None) -> list[Change]:
        """What changed in a layer's file system against its parent (Go's ``Changes``).

        Args:
            ref: the layer.
            from_ref: the layer to compare with instead of the parent.

        Returns:
            The changed paths, each with its kind (added, modified, deleted), sorted.

        Raises:
            LayerUnknown: no layer store has it (or ``from_ref``).
        """
        base = from_ref or ""
        return self._in_layer_store(ref, lambda s: s.changes(base, ref))

    def _in_layer_store(self, ref: str, fn: Callable[[ROLayerStore], T]) -> T:
        """``fn`` on the layer store that has ``ref``: the primary one under its write lock, as
        Go's Changes and Diff take it, else the first read-only one that has it.

        Raises:
            LayerUnknown: no layer store has it.
        """
        with self.layer_store.writing() as rl:
            if rl.exists(ref):
                return fn(rl)
        for store in self.ro_layer_stores:
            with store.reading():
                if store.exists(ref):
                    return fn(store)
        raise errors.LayerUnknown(ref=ref)

    def diff_size(self, ref: str, *, from_ref: str | None = None) -> int:
        """The size of the uncompressed tar stream :meth:`diff` would write (Go's ``DiffSize``).

        Recorded sizes are used when there are; otherwise the diff is computed.

        Raises:
            LayerUnknown: no layer store has it (or ``from_ref``).
        """
        for store in self.all_layer_stores():
            with store.reading():
                if store.exists(ref):
                    return store.diff_size(from_ref or "", ref)
        raise errors.LayerUnknown(ref=ref)

    def diff(self, ref: str, out: BinaryIO, *, from_ref: str | None = None,
             compression: int | None = None) -> None:
        """Write a layer's changes against its parent as a tar stream (Go's ``Diff``).

        A layer applied from a tarball gives back that tarball's exact bytes (from its
        tar-split data); other layers' diffs are generated from their files.

        Args:
            ref: the layer.
            out: a writable binary stream.
            from_ref: the layer to compare with instead of the parent.
            compression: a :class:`~containers_storage.archive.compression.Compression`
                value (0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd); as the layer was applied when
                None.

        Raises:
            LayerUnknown: no layer store has it (or ``from_ref``).
        """
        base = from_ref or ""
        self._in_layer_store(ref, lambda s: s.diff(base, ref, out, compression))

    def diff_zstd_chunked(self, ref: str, out: BinaryIO, *, from_ref: str | None = None,
                          level: int | None = None, legacy_annotations: bool = True) -> ChunkedBlob:
        """Write a layer's diff as a zstd:chunked blob, pullable in part (what ``podman push
        --compression-format zstd:chunked`` publishes).

        The same tar stream as :meth:`diff` without compression, through
        :func:`containers_storage.archive.chunked.compress`; put the returned annotations on the
        layer's descriptor in the image manifest.

        Args:
            ref: the layer.
            out: a writable binary stream (written sequentially).
            from_ref: the layer to compare with instead of the parent.
            level: the zstd level (default :data:`~containers_storage.archive.chunked.DEFAULT_LEVEL`).
            legacy_annotations: also give the annotation names Go 1.43 reads.

        Returns:
            The blob's digest and size, the diff ID, the TOC digest and the annotations.

        Raises:
            LayerUnknown: no layer store has it (or ``from_ref``).
        """
        import threading

        from .archive.chunked.compressor import DEFAULT_LEVEL, compress

        rfd, wfd = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with open(wfd, "wb") as w:
                    self.diff(ref, w, from_ref=from_ref, compression=0)
            except BaseException as e:
                failure.append(e)

        producer = threading.Thread(target=produce, name="diff-zstd-chunked", daemon=True)
        producer.start()
        try:
            with open(rfd, "rb") as r:
                try:
                    result = compress(r, out, level=DEFAULT_LEVEL if level is None else level,
                                      legacy_annotations=legacy_annotations)
                finally:
                    while r.read(1 << 20):  # let the producer finish whatever happened here
                        pass
        finally:
            producer.join()
        if failure:
            raise failure[0]
        return result

    def apply_diff(self, ref: str, diff: BinaryIO) -> int:
        """Apply a layer tarball over what the layer already holds (Go's ``ApplyDiff``).

        A layer is meant to be filled once: use :meth:`put_layer` to create and fill one.

        Args:
            ref: a layer of this store's own.
            diff: the tarball (gzip, zstd or uncompressed), a readable binary stream.

        Returns:
            The size of the uncompressed tar stream applied.

        Raises:
            LayerUnknown: this store has no such layer.
            InvalidArchive: the tarball is malformed or tries to write outside the layer.
        """
        with self.layer_store.writing() as rl:
            return rl.apply_diff(ref, diff)

    # -- staged layers (Go's PrepareStagedLayer / ApplyStagedLayer / CleanupStagedLayer) ----------
    def prepare_staged_layer(self, diff: BinaryIO | None = None, *, differ: ChunkedDiffer | None = None,
                             uid_map: Sequence[IDMap] | None = None,
                             gid_map: Sequence[IDMap] | None = None) -> StagedDiff:
        """Apply a layer into a staging directory, outside any lock (Go's ``PrepareStagedLayer``).

        Either a tarball (``diff``), or a partial pull: a ``differ`` from
        :func:`containers_storage.archive.chunked.new_differ`, which writes the files of a
        zstd:chunked or eStargz layer, reusing what other layers of the store hold and fetching
        the rest from its blob source.  Follow with :meth:`apply_staged_layer`, or
        :meth:`cleanup_staged_layer` to give up.

        Args:
            diff: the tarball, a readable binary stream.
            differ: a partial pull to apply instead of ``diff``.
            uid_map: the ID mapping the files are written for.
            gid_map: as ``uid_map``, for groups.

        Returns:
            The staged diff: its directory, digests and sizes (and for a partial pull its TOC
            digest and big data).

        Raises:
            NotSupported: the driver cannot stage layers, or cannot take partial pulls (vfs).
            ~containers_storage.archive.chunked.ChunkedError: a partial pull whose content does
                not match its TOC, or whose TOC (read late, see ``new_differ``) is malformed;
                nothing is left behind.
            ~containers_storage.archive.chunked.FallbackToFullPull: a TOC read late names no
                tar-split: pull the whole blob instead (``pull_layer`` does).
        """
        driver = self.driver
        opts = ApplyDiffOpts(uid_map=list(uid_map or []), gid_map=list(gid_map or []))
        if differ is not None:
            if not can_stage_differ(driver):
                raise errors.NotSupported.after(f"driver {driver.name} cannot apply partial layers")
            return driver.prepare_staged_differ(differ, opts)
        if diff is None:
            raise ValueError("prepare_staged_layer needs a diff or a differ")
        if not can_stage(driver):
            raise errors.NotSupported.after(f"driver {driver.name} cannot stage layers")
        return driver.prepare_staged(diff, opts)

    def apply_staged_layer(self, staged: StagedDiff, *, id: str | None = None,
                           parent: str | None = None, names: Sequence[str] | None = None,
                           mount_label: str | None = None, writeable: bool = False,
                           flags: Mapping[str, Any] | None = None) -> Layer:
        """Move a staged diff into a layer (Go's ``ApplyStagedLayer``).

        Into layer ``id`` when it exists; otherwise a new layer is made as :meth:`put_layer`
        makes one, flagged incomplete until the files are in.

        Args:
            staged: what :meth:`prepare_staged_layer` returned.
            id: the layer to fill or create; a new random ID when None.
            parent: the new layer's parent.
            names: the new layer's names.
            mount_label: the new layer's SELinux label.
            writeable: ignored, as in Go.
            flags: flags to record with the layer (Go's ``ApplyDiffWithDifferOpts.Flags``).

        Returns:
            The layer.

        Raises:
            LayerUnknown: ``parent`` names no layer.
        """
        rl = self.layer_store
        with rl.writing():
            existing = rl.lookup(id) if id else None
            if existing is not None:
                if flags:
                    existing.flags.update(flags)
                rl.apply_staged(existing.id, staged)
                return existing
        # One locked create, still flagged incomplete while the staged files move in: a crash
        # leaves a layer the next writer removes, never an empty one that looks complete.
        return self.put_layer(id=id, parent=parent, names=names, mount_label=mount_label,
                              writeable=writeable, staged=staged, flags=flags).layer

    def cleanup_staged_layer(self, staged: StagedDiff) -> None:
        """Remove what :meth:`prepare_staged_layer` staged, when it will not be applied."""
        driver = self.driver
        try:
            if can_stage(driver):
                with self.layer_store.writing():
                    driver.cleanup_staged(staged)
        finally:
            staged.drop_big_data_files()

    # -- per-digest locks ----------------------------------------------------------------------
    def digest_lock(self, digest: str) -> LockFile:
        """The lock of one digest, shared with Go's tools (Go's ``GetDigestLock``).

        ``<run root>/<driver>-locks/<digest>``, a POSIX record lock like the store's own: take
        it with ``with store.digest_lock(d).writing(): ...`` to keep other processes (ours or
        Go's) from doing the same work on the same content at the same time.  Image loads
        (:mod:`containers_storage.transport`) hold the lock of each layer they make.

        Args:
            digest: ``"sha256:<hex>"``.

        Raises:
            ~containers_storage.digest.DigestError: not a valid digest.
        """
        from .digest import validate

        validate(digest)
        return get_lock_file(os.path.join(self.run_root, f"{self.driver_name}-locks", digest))

    # -- sizes ---------------------------------------------------------------------------------
    def image_size(self, ref: str) -> int:
        """The bytes an image takes: each layer it uses, counted once, plus its big data items
        (Go's ``ImageSize``).

        Raises:
            ImageUnknown: no image store has it.
            LayerUnknown: one of its layers is gone.
        """
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
                raise errors.ImageUnknown.after(f"locating image with ID {_go_quote(ref)}", ref=ref)
            size = 0
            tops = [image.top_layer, *image.mapped_top_layers]
            for layer_id in layer_chain(tops, lambda id: self._layer_in(layer_stores, id)[1].parent):
                ls, layer = self._layer_in(layer_stores, layer_id)
                n = layer.uncompressed_size
                if not layer.uncompressed_digest or n == -1:  # the size is only valid with a digest
                    try:
                        n = ls.diff_size("", layer.id)
                    except errors.StorageError as e:
                        raise type(e)(f"size/digest of layer with ID {_go_quote(layer_id)} could not be "
                                      f"calculated: {e}") from e
                size += n
            for name in image.big_data_names:
                size += home.big_data_size(image.id, name)
            return size

    def container_size(self, ref: str) -> int:
        """The bytes a container takes: its layer's diff, its big data and both of its
        directories (Go's ``ContainerSize``; it walks the layer, which can be slow).

        Raises:
            ContainerUnknown: there is no such container.
            LayerUnknown: its layer is gone.
        """
        from .fsutil import directory_size

        layer_stores = self.all_layer_stores()
        with ExitStack() as stack:
            for ls in layer_stores:
                stack.enter_context(ls.reading())
            cdir = self.container_directory(ref)
            rdir = self.container_run_directory(ref)
            with self.container_store.writing() as cs:
                c = cs.get(ref)
                ls, layer = self._layer_in(layer_stores, c.layer)
                try:
                    size = ls.diff_size("", layer.id)
                except errors.StorageError as e:
                    raise type(e)(f"determining size of layer with ID {_go_quote(layer.id)}: {e}") from e
                for name in c.big_data_names:
                    size += cs.big_data_size(c.id, name)
                return size + directory_size(cdir) + directory_size(rdir)

    def garbage_collect(self) -> None:
        """Remove data directories and driver layers no record refers to, left by crashes or
        by a transient store's reboot (Go's ``GarbageCollect``).

        Raises:
            OSError: the first directory that could not be read or removed (the others were).
        """
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
        """What is damaged, per layer, image and container (Go's ``Check``).

        Args:
            options: what to check; by default everything, content digests included (which
                reads every layer and can be slow).

        Returns:
            The report, for :meth:`repair`.
        """
        from .check import check

        return check(self, options)

    def repair(self, report: CheckReport, options: RepairOptions | None = None
               ) -> list[errors.StorageError]:
        """Delete what :meth:`check` found damaged (Go's ``Repair``).

        Args:
            report: what :meth:`check` returned.
            options: whether damaged containers go too (by default they stay).

        Returns:
            The deletions that failed (empty when all went).
        """
        from .check import repair

        return repair(self, report, options)

    @contextmanager
    def layer_tree(self, ref: str) -> Iterator[LayerTree]:
        """Mount a layer of the read-write store read-only to look at its files; unmounted on
        exit.  As Go's ``Check`` does, straight through the driver: no mount is recorded, so
        :meth:`mounted` and :meth:`unmount` do not see it.

        Args:
            ref: the layer.

        Yields:
            Where its files are, and the ID maps that turn their owners back into the layer's.

        Raises:
            LayerUnknown: the read-write layer store has no such layer.
            DriverError: the driver could not mount it (or, on exit, unmount it).
        """
        driver = self.driver  # storage.lock comes before layers.lock
        with self.layer_store.writing() as rl:
            layer = rl.get(ref)
            path = driver.get(layer.id, MountOpts(mount_label=layer.mount_label, options=["ro"]))
        try:
            shifted = driver.supports_shifting(layer.uid_map, layer.gid_map)
            yield LayerTree(path, [] if shifted else layer.uid_map, [] if shifted else layer.gid_map)
        finally:
            with self.layer_store.writing():
                driver.put(layer.id)

    def unaccounted_layers(self) -> list[str]:
        """The layers the driver holds that no layer record claims (Go's ``Check`` calls them
        "not accounted for"): left by crashes, or by tools that wrote no record.

        Returns:
            Their IDs, in the driver's order.

        Raises:
            NotSupported: the driver cannot list its layers.
        """
        driver = self.driver
        with self.layer_store.reading() as rl:
            return [id for id in driver.list_layers() if id not in rl.by_id]

    def remove_unaccounted_layer(self, id: str) -> bool:
        """Remove a layer the driver holds without a record (see :meth:`unaccounted_layers`),
        unless a record claims it by now: what :meth:`repair` does with those.

        Args:
            id: the layer's full ID.

        Returns:
            Whether it was removed (False when a record claims it).
        """
        driver = self.driver
        with self.layer_store.writing() as rl:
            if id in rl.by_id:
                return False
            driver.remove(id)
            return True

    # -- whole store ---------------------------------------------------------------------------
    def dedup(self, hash_method: str = "crc") -> DedupResult:
        """Go's Dedup: identical files of the images' layers share extents (reflink file systems)."""
        from .dedup import dedup_store

        return dedup_store(self, hash_method)

    def status(self) -> list[tuple[str, str]]:
        """The driver's status report as ``(key, value)`` pairs (Go's ``Status``), e.g.
        ``("Backing Filesystem", "extfs")``; the keys vary from driver to driver."""
        return self.driver.status()

    def version(self) -> list[tuple[str, str]]:
        """This library's version as ``(key, value)`` pairs (Go's ``Version``)."""
        from . import __version__

        return [("Version", __version__)]

    def shutdown(self, *, force: bool = False) -> list[str]:
        """Release the driver's kernel resources (Go's ``Shutdown``).

        Args:
            force: unmount every mounted layer first.

        Returns:
            The layers that were mounted (only when nothing was, as otherwise this raises).

        Raises:
            LayerUsedByContainer: layers are (or were, with ``force``) mounted.
        """
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

    def close(self) -> None:
        """Forget this process's shared handle, so the next :func:`open_store` or
        :func:`get_store` starts afresh (Go's ``Free``).

        Nothing on disk changes and mounts stay (see :meth:`shutdown`).  Other holders of
        this same object can go on using it; it is simply no longer handed out.
        """
        with _stores_lock:
            if _stores.get((self.graph_root, self.run_root)) is self:
                del _stores[(self.graph_root, self.run_root)]

    def free(self) -> None:
        """:meth:`close` under Go's name."""
        self.close()

    def __enter__(self) -> Store:
        """The store itself: ``with open_store() as store:`` closes it on the way out."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """:meth:`close` the store."""
        self.close()

    def __repr__(self) -> str:
        """``Store(graph_root=..., run_root=..., driver=...)``."""
        return (f"Store(graph_root={self.graph_root!r}, run_root={self.run_root!r}, "
                f"driver={self.driver_name!r})")

    def _layer_in(self, stores: Sequence[ROLayerStore], id: str) -> tuple[ROLayerStore, Layer]:
        """The first of ``stores`` (all read-locked) with layer ``id``, and the layer."""
        for ls in stores:
            layer = ls.lookup(id)
            if layer is not None:
                return ls, layer
        raise errors.LayerUnknown.after(f"locating layer with ID {_go_quote(id)}", ref=id)


def _first(stores: Iterable[S], fn: Callable[[S], T | None]) -> T | None:
    """``fn``'s first answer that is not None, asking each store in turn under its read lock."""
    for store in stores:
        with store.reading():
            result = fn(store)
            if result is not None:
                return result
    return None


def _gather(stores: Iterable[S], fn: Callable[[S], list[T]]) -> list[T]:
    """``fn``'s answers for all the stores in turn (each under its read lock), joined."""
    out: list[T] = []
    for store in stores:
        with store.reading():
            out.extend(fn(store))
    return out


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


__all__ = ["PutLayerResult", "Store", "get_store", "open_store"]
