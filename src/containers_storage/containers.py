"""The container store: ``<driver>-containers/containers.json`` (+ volatile-containers.json)."""

from __future__ import annotations

import os

from . import TYPE_CHECKING, errors
from .idtools import IDMap, maps_to_json
from .layout import STABLE, VOLATILE, Layout
from .lockfile import get_lock_file
from .records import Container, now_rfc3339
from .recordstore import RWRecordStore, sha256_digest

if TYPE_CHECKING:
    from typing import Any

VOLATILE_FLAG = "Volatile"
MOUNT_OPTS_FLAG = "MountOpts"


class ContainerStore(RWRecordStore[Container]):
    """Containers are always read-write; there are no additional container stores."""

    unknown_error = errors.ContainerUnknown
    kind = "container"

    def _make(self, obj: dict[str, Any], location: int) -> Container:
        c = Container(obj)
        c.volatile = location == VOLATILE
        return c

    def _location_of(self, rec: Container) -> int:
        return VOLATILE if rec.volatile else STABLE

    def _loaded(self) -> None:
        self.by_layer = {c.layer: c for c in self.records}

    def _add(self, rec: Container) -> None:
        super()._add(rec)
        self.by_layer[rec.layer] = rec

    def _remove(self, rec: Container) -> None:
        super()._remove(rec)
        if self.by_layer.get(rec.layer) is rec:
            del self.by_layer[rec.layer]

    def create(self, id: str, names: list[str], image: str, layer: str, *, metadata: str = "",
               uid_map: list[IDMap] | None = None, gid_map: list[IDMap] | None = None,
               flags: dict[str, Any] | None = None, volatile: bool = False,
               mount_opts: list[str] | None = None,
               big_data: list[tuple[str, bytes]] | None = None) -> Container:
        id, names = self._check_new(id, names)
        if uid_map or gid_map:  # as Go: a container's mapping must not map any ID twice
            from .idset import check_no_overlaps

            check_no_overlaps(uid_map or [])
            check_no_overlaps(gid_map or [])
        data: dict[str, Any] = {"id": id}
        if names:
            data["names"] = names
        data["image"] = image
        data["layer"] = layer
        if metadata:
            data["metadata"] = metadata
        data["created"] = now_rfc3339()
        if uid_map:
            data["uidmap"] = maps_to_json(uid_map)
        if gid_map:
            data["gidmap"] = maps_to_json(gid_map)
        cflags = dict(flags or {})
        if mount_opts:
            cflags[MOUNT_OPTS_FLAG] = list(mount_opts)
        if volatile:
            cflags[VOLATILE_FLAG] = True
        if cflags:
            data["flags"] = cflags
        container = Container(data)
        container.volatile = volatile
        self._add_new(container, ((key, value, sha256_digest(value)) for key, value in big_data or ()))
        return container

    def _duplicate_name(self, name: str, holder: Container) -> errors.StorageError:
        return errors.DuplicateName(
            f'the container name "{name}" is already in use by {holder.id}. You have to remove '
            f"that container to be able to reuse that name: {errors.DuplicateName.text}")

    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        self._set_big_data(self.get(ref), key, data, sha256_digest(data))

    def _set_big_data(self, rec: Container, key: str, data: bytes, digest: str) -> None:
        self._write_big_data(rec, key, data)
        if rec.set_big_data_info(key, len(data), digest):
            self.save_for(rec)


def new_container_store(layout: Layout) -> ContainerStore:
    files = layout.containers()
    for _, path in files.json:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return ContainerStore(files, get_lock_file(files.lock))
