"""ID-mapped copies of image top layers, shared by the containers that use the same mappings.

A container whose ID mappings differ from its image's top layer needs that layer's files
owned by other host IDs.  Go's store makes one re-owned copy of the top layer per mapping and
lists it in the image's ``mapped-layers``; later containers (and read-only image mounts, which
want the host's IDs) with the same mappings start from that copy instead of re-owning again.
"""

from __future__ import annotations

from . import TYPE_CHECKING, errors
from .idtools import same_maps

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .drivers.base import Driver
    from .idtools import IDMap
    from .images import ImageStore, ROImageStore
    from .layers import LayerStore, ROLayerStore
    from .records import Image, Layer


class MappingOptions:
    """What mappings a new layer or container asks for (Go's IDMappingOptions)."""

    __slots__ = ("gid_map", "host_gid", "host_uid", "uid_map")

    def __init__(self, uid_map: Sequence[IDMap] | None = None, gid_map: Sequence[IDMap] | None = None,
                 host_uid: bool = False, host_gid: bool = False) -> None:
        self.host_uid = host_uid
        self.host_gid = host_gid
        # Asking for the host's IDs drops any map given with it, as Go does.
        self.uid_map: list[IDMap] = [] if host_uid else list(uid_map or ())
        self.gid_map: list[IDMap] = [] if host_gid else list(gid_map or ())

    def or_defaults(self, uid_map: Sequence[IDMap], gid_map: Sequence[IDMap]
                    ) -> tuple[list[IDMap], list[IDMap]]:
        """The maps to use: ours, else (unless the host's IDs were asked for) the defaults."""
        umap = self.uid_map if (self.host_uid or self.uid_map) else list(uid_map)
        gmap = self.gid_map if (self.host_gid or self.gid_map) else list(gid_map)
        return umap, gmap


def layer_maps(driver: Driver, uid_map: list[IDMap], gid_map: list[IDMap]
               ) -> tuple[list[IDMap], list[IDMap]]:
    """The maps a new layer records: none when mounts can shift IDs (Go's canUseShifting)."""
    if (uid_map or gid_map) and driver.supports_shifting(uid_map, gid_map):
        return [], []
    return uid_map, gid_map


def _matches(driver: Driver, layer: Layer, want: MappingOptions) -> bool:
    """Go's layerMatchesMappingOptions."""
    if not layer.uid_map and not layer.gid_map and driver.supports_shifting(want.uid_map, want.gid_map):
        return True
    if want.host_uid and layer.uid_map:
        return False
    if want.host_gid and layer.gid_map:
        return False
    return same_maps(layer.uid_map, want.uid_map) and same_maps(layer.gid_map, want.gid_map)


def image_top_layer_for_mapping(driver: Driver, image: Image, home: ROImageStore, image_store: ImageStore,
                                rl: LayerStore, ro_layer_stores: Sequence[ROLayerStore],
                                want: MappingOptions) -> Layer:
    """The layer to put a container with ``want``'s mappings on (Go's imageTopLayerForMapping).

    The image's top layer or one of its mapped copies when one matches; else a new re-owned copy
    registered in the image, when the image and its top layer are ours to change; else the top
    layer itself, and the container's own layer is re-owned instead.  Callers hold ``rl`` and
    ``image_store`` for writing and the other stores for reading.
    """
    stores: list[ROLayerStore] = [rl, *ro_layer_stores]
    found: Layer | None = None
    found_parent: Layer | None = None
    create_mapped = home is image_store
    for store in stores:
        for candidate in (image.top_layer, *image.mapped_top_layers):
            layer = store.lookup(candidate)
            if layer is None:
                continue
            parent: Layer | None = None
            if layer.parent:
                for ps in stores:
                    parent = ps.lookup(layer.parent)
                    if parent is not None:
                        break
                if parent is None:
                    continue
            if _matches(driver, layer, want):
                return layer
            if found is None:
                found, found_parent = layer, parent
                if store is not rl:
                    create_mapped = False  # a read-only store's layer cannot be a template
    if found is None:
        raise errors.LayerUnknown(ref=image.top_layer)
    if not create_mapped:
        return found
    umap, gmap = layer_maps(driver, want.uid_map, want.gid_map)
    try:
        mapped, _ = rl.create("", found_parent, [], found.mount_label, None, False,
                              uid_map=umap, gid_map=gmap, template=found.id)
    except errors.StorageError as e:
        raise type(e)(f'creating an ID-mapped copy of layer "{found.id}": {e}') from e
    try:
        image_store.add_mapped_top_layer(image.id, mapped.id)
    except Exception as e:
        try:
            rl.delete(mapped.id)
        except Exception as e2:
            raise errors.StorageError(f'registering ID-mapped layer with image "{image.id}": deleting '
                                      f'layer "{mapped.id}": {e2}: {e}') from e
        raise errors.StorageError(f'registering ID-mapped layer with image "{image.id}": {e}') from e
    return mapped
