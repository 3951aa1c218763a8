"""UID/GID mappings between a container's ID space and the host's, as Go's idtools.IDMap."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .errors import InvalidMappings


class IDMap(NamedTuple):
    """One contiguous range: container IDs [container_id, +size) are host IDs [host_id, +size)."""

    container_id: int
    host_id: int
    size: int

    def to_json(self) -> dict[str, int]:
        return {"container_id": self.container_id, "host_id": self.host_id, "size": self.size}

    @classmethod
    def from_json(cls, obj: dict[str, int]) -> IDMap:
        return cls(int(obj["container_id"]), int(obj["host_id"]), int(obj["size"]))


def maps_to_json(maps: Sequence[IDMap] | None) -> list[dict[str, int]]:
    return [m.to_json() for m in maps or ()]


def maps_from_json(objs: Iterable[dict[str, int]] | None) -> list[IDMap]:
    return [IDMap.from_json(o) for o in objs or ()]


def to_host(container_id: int, maps: Sequence[IDMap] | None) -> int:
    """Map a container ID to the host; identity when there are no maps (Go: ToHost)."""
    if not maps:
        return container_id
    for m in maps:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + (container_id - m.container_id)
    raise InvalidMappings(f"container ID {container_id} cannot be mapped to a host ID")


def to_container(host_id: int, maps: Sequence[IDMap] | None) -> int:
    """Map a host ID back into the container (Go: ToContainer)."""
    if not maps:
        return host_id
    for m in maps:
        if m.host_id <= host_id < m.host_id + m.size:
            return m.container_id + (host_id - m.host_id)
    raise InvalidMappings(f"host ID {host_id} cannot be mapped to a container ID")


def parse_idmap(spec: str, name: str = "ID") -> list[IDMap]:
    """Parse ``container:host:size[,container:host:size...]`` as the Go CLI's --uidmap/--gidmap."""
    maps: list[IDMap] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        fields = part.split(":")
        if len(fields) != 3:
            raise InvalidMappings(f"error parsing {name} map {part!r}: expected container:host:size")
        try:
            cid, hid, size = (int(f) for f in fields)
        except ValueError:
            raise InvalidMappings(f"error parsing {name} map {part!r}: not a number") from None
        if cid < 0 or hid < 0 or size <= 0:
            raise InvalidMappings(f"error parsing {name} map {part!r}: out of range")
        maps.append(IDMap(cid, hid, size))
    return maps
