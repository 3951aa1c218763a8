"""Where a store keeps its files: every path of the on-disk layout, named once.

Go's containers/storage fixes these names (store.go, layers.go, images.go, containers.go); the Go
tools open the same files, so each must be spelled exactly as there.  The stores, the ``Store``
facade and the CLI's listing fast path all take their paths from here.

A graph root holds ``storage.lock``, ``userns.lock``, the driver's home ``<driver>/`` and one
directory per kind of record::

    <driver>-layers/      layers.json  volatile-layers.json  layers.lock  <id>.tar-split.gz  <id>/
    <driver>-images/      images.json  images.lock  <id>/<big data file>  <id>/userdata/
    <driver>-containers/  containers.json  containers.lock  <id>/<big data file>  <id>/userdata/

and the run root holds ``<driver>-layers/mountpoints.{json,lock}``, ``<driver>-containers/<id>/
userdata/`` and, for a transient store, the volatile records and the containers' lock.

Imports nothing but ``os``: the listing fast path uses it before anything else is loaded.
"""

from __future__ import annotations

import os

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

STORAGE_LOCK: Final = "storage.lock"
USERNS_LOCK: Final = "userns.lock"
LAYERS_JSON: Final = "layers.json"
VOLATILE_LAYERS_JSON: Final = "volatile-layers.json"
LAYERS_LOCK: Final = "layers.lock"
MOUNTPOINTS_JSON: Final = "mountpoints.json"
MOUNTPOINTS_LOCK: Final = "mountpoints.lock"
IMAGES_JSON: Final = "images.json"
IMAGES_LOCK: Final = "images.lock"
CONTAINERS_JSON: Final = "containers.json"
VOLATILE_CONTAINERS_JSON: Final = "volatile-containers.json"
CONTAINERS_LOCK: Final = "containers.lock"
TAR_SPLIT_SUFFIX: Final = ".tar-split.gz"
USERDATA: Final = "userdata"
RECORDS_CACHE: Final = "py-records-cache"  # ours alone (recordcache.py); Go's tools never look at it

# Which file a record lives in (Go's layerLocations bits; containers use STABLE and VOLATILE).
STABLE: Final = 1
IMAGE_STORE: Final = 2
VOLATILE: Final = 4


def layers_dir(root: str, driver: str) -> str:
    return os.path.join(root, driver + "-layers")


def images_dir(root: str, driver: str) -> str:
    return os.path.join(root, driver + "-images")


def containers_dir(root: str, driver: str) -> str:
    return os.path.join(root, driver + "-containers")


def driver_of_images_dir(name: str) -> str | None:
    """The driver whose images a directory named ``name`` holds (``vfs-images`` -> ``vfs``)."""
    return name[: -len("-images")] or None if name.endswith("-images") else None


def additional_image_store_dirs(driver_options: Iterable[str]) -> list[str]:
    """``<driver>.imagestore=a,b`` options name read-only stores (Go's AdditionalImageStores)."""
    dirs: list[str] = []
    for opt in driver_options:
        key, sep, value = opt.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        if key.endswith(".imagestore") or key.endswith(".additionalimagestore") or key == "imagestore":
            dirs.extend(v for v in value.split(",") if v)
    return dirs


def big_data_file_name(key: str) -> str:
    """Go's makeBigDataBaseName: the key itself if all of it is in [.0-9a-z], else '=' + base64."""
    if key and all(c == "." or "0" <= c <= "9" or "a" <= c <= "z" for c in key):
        return key
    import base64  # rare: keys outside [.0-9a-z]

    return "=" + base64.b64encode(key.encode("utf-8", "surrogateescape")).decode()


class Files:
    """What one records store keeps: its directory, lock file and records files.

    ``json`` lists the records files in the order they are loaded, each with the location its
    records carry; ``read_only`` stores take their lock read-only and are never written.
    """

    __slots__ = ("directory", "json", "lock", "read_only")

    def __init__(self, directory: str, lock: str, json: tuple[tuple[int, str], ...],
                 read_only: bool = False) -> None:
        self.directory = directory
        self.lock = lock
        self.json = json
        self.read_only = read_only

    @property
    def paths(self) -> list[str]:
        return [path for _, path in self.json]

    def data_dir(self, id: str) -> str:
        """A record's own directory (big data items, and a container's or image's userdata)."""
        return os.path.join(self.directory, id)

    def big_data_path(self, id: str, key: str) -> str:
        return os.path.join(self.directory, id, big_data_file_name(key))

    def tar_split_path(self, id: str) -> str:
        """A layer's tar-split (layer stores only)."""
        return os.path.join(self.directory, id + TAR_SPLIT_SUFFIX)


class Layout:
    """Every path of one store: graph root, run root, driver, and the options that move files.

    ``image_store`` is Go's split image store (images and their read-only layers elsewhere);
    ``additional_image_stores`` are read-only stores whose layers and images are listed too.
    """

    __slots__ = ("additional_image_stores", "driver", "driver_home", "graph_root", "image_store",
                 "layers_run_dir", "mountpoints_json", "mountpoints_lock", "run_root",
                 "split_layers_dir", "storage_lock", "transient", "userns_lock")

    def __init__(self, graph_root: str, run_root: str, driver: str, *, image_store: str = "",
                 transient: bool = False, additional_image_stores: Iterable[str] = ()) -> None:
        self.graph_root = graph_root
        self.run_root = run_root
        self.driver = driver
        self.image_store = image_store
        self.transient = transient
        self.additional_image_stores = list(additional_image_stores)
        # The graph root's own files, and the layers' mount records in the run root.
        self.storage_lock = os.path.join(graph_root, STORAGE_LOCK)
        self.userns_lock = os.path.join(graph_root, USERNS_LOCK)
        self.driver_home = os.path.join(graph_root, driver)
        self.layers_run_dir = layers_dir(run_root, driver)
        self.mountpoints_json = os.path.join(self.layers_run_dir, MOUNTPOINTS_JSON)
        self.mountpoints_lock = os.path.join(self.layers_run_dir, MOUNTPOINTS_LOCK)
        # Where a split image store keeps its layers' records ("" without one).
        self.split_layers_dir = layers_dir(image_store, driver) if image_store else ""

    # -- layers --------------------------------------------------------------------------------
    def layers(self) -> Files:
        """The read-write layer store: stable, split-image-store and volatile records."""
        directory = layers_dir(self.graph_root, self.driver)
        json = [(STABLE, os.path.join(directory, LAYERS_JSON))]
        if self.image_store:
            json.append((IMAGE_STORE, os.path.join(self.split_layers_dir, LAYERS_JSON)))
        volatile_dir = self.layers_run_dir if self.transient else directory
        json.append((VOLATILE, os.path.join(volatile_dir, VOLATILE_LAYERS_JSON)))
        return Files(directory, os.path.join(directory, LAYERS_LOCK), tuple(json))

    def additional_layers(self) -> list[Files]:
        """The layer stores of the additional image stores (read-only)."""
        out = []
        for root in self.additional_image_stores:
            directory = layers_dir(root, self.driver)
            out.append(Files(directory, os.path.join(directory, LAYERS_LOCK), (
                (STABLE, os.path.join(directory, LAYERS_JSON)),
                (VOLATILE, os.path.join(directory, VOLATILE_LAYERS_JSON))), read_only=True))
        return out

    # -- images --------------------------------------------------------------------------------
    def images(self) -> Files:
        """The read-write image store (in the split image store when there is one)."""
        return self._images(self.image_store or self.graph_root, False)

    def additional_images(self) -> list[Files]:
        """The other image stores, in lookup order: the graph root's own when images live in a
        split store (writable, as Go opens it: what was made there stays deletable), then the
        additional stores (read-only)."""
        roots = ([self.graph_root] if self.image_store else []) + self.additional_image_stores
        return [self._images(root, not (self.image_store and root in (self.graph_root, self.image_store)))
                for root in roots]

    def _images(self, root: str, read_only: bool) -> Files:
        directory = images_dir(root, self.driver)
        return Files(directory, os.path.join(directory, IMAGES_LOCK),
                     ((STABLE, os.path.join(directory, IMAGES_JSON)),), read_only)

    def image_userdata(self, root: str, id: str) -> str:
        """An image's userdata directory under ``root`` (the graph root or the run root)."""
        return os.path.join(images_dir(root, self.driver), id, USERDATA)

    # -- containers ----------------------------------------------------------------------------
    def containers(self) -> Files:
        """The container store; a transient store keeps its lock and volatile records in the
        run root."""
        directory = containers_dir(self.graph_root, self.driver)
        volatile_dir = containers_dir(self.run_root, self.driver) if self.transient else directory
        return Files(directory, os.path.join(volatile_dir, CONTAINERS_LOCK), (
            (STABLE, os.path.join(directory, CONTAINERS_JSON)),
            (VOLATILE, os.path.join(volatile_dir, VOLATILE_CONTAINERS_JSON))))

    def container_dirs(self, id: str) -> tuple[str, str]:
        """A container's directories in the graph root and in the run root."""
        return (os.path.join(containers_dir(self.graph_root, self.driver), id),
                os.path.join(containers_dir(self.run_root, self.driver), id))

    def container_userdata(self, root: str, id: str) -> str:
        return os.path.join(containers_dir(root, self.driver), id, USERDATA)
