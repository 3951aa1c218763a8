"""The container store: ``<driver>-containers/containers.json`` (+ volatile-containers.json)."""

from __future__ import annotations

import os

from . import errors
from .idtools import IDMap, maps_to_json
from .lockfile import get_lock_file
from .records import Container, apply_name_operation, dedupe, now_rfc3339, reassign_names
from .recordstore import RWRecordStore, sha256_digest

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
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
        c.volatile = location == 1
        return c

    def _location_of(self, rec: Container) -> int:
        return 1 if rec.volatile else 0

    def _index(self) -> bool:
        damaged = super()._index()
        self.by_layer = {c.layer: c for c in self.records}
        return damaged

    def _add(self, rec: Container) -> None:
        super()._add(rec)
        self.by_layer[rec.layer] = rec

    def _remove(self, rec: Container) -> None:
        super()._remove(rec)
        if self.by_layer.get(rec.layer) is rec:
            del self.by_layer[rec.layer]

    def _on_damage(self, locked_for_writing: bool) -> None:
        if not locked_for_writing:
            raise errors.StorageError(
                "container store is inconsistent and the current caller does not hold a write lock")
        self.save()

    def create(self, id: str, names: list[str], image: str, layer: str, *, metadata: str = "",
               uid_map: list[IDMap] | None = None, gid_map: list[IDMap] | None = None,
               flags: dict[str, Any] | None = None, volatile: bool = False,
               mount_opts: list[str] | None = None,
               big_data: list[tuple[str, bytes]] | None = None) -> Container:
        from .ids import unused_id

        if not id:
            id = unused_id(self.by_id)
        if id in self.by_id:
            raise errors.DuplicateID()
        names = dedupe(names)
        for name in names:
            other = self.by_name.get(name)
            if other is not None:
                raise errors.DuplicateName(
                    f'the container name "{name}" is already in use by {other.id}. You have to remove '
                    f"that container to be able to reuse that name: {errors.DuplicateName.text}")
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
        self._add(container)
        try:
            self.save_for(container)
            for key, value in big_data or ():
                self._set_big_data(container, key, value)
        except BaseException:
            try:
                self.delete(id)
            except Exception:
                pass
            raise
        return container

    def update_names(self, ref: str, names: list[str], op: str) -> None:
        c = self.get(ref)
        reassign_names(c, apply_name_operation(c.names, names, op), self.by_name)
        self.save()

    def set_big_data(self, ref: str, key: str, data: bytes) -> None:
        self._set_big_data(self.get(ref), key, data)

    def _set_big_data(self, c: Container, key: str, data: bytes) -> None:
        self._write_big_data(c, key, data)
        if c.set_big_data_info(key, len(data), sha256_digest(data)):
            self.save_for(c)


def new_container_store(directory: str, run_dir: str, transient: bool) -> ContainerStore:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    volatile_dir = directory
    if transient:
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        volatile_dir = run_dir
    lock = get_lock_file(os.path.join(volatile_dir, "containers.lock"))
    return ContainerStore(directory, lock, [
        os.path.join(directory, "containers.json"),
        os.path.join(volatile_dir, "volatile-containers.json"),
    ])
