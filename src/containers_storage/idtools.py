"""UID/GID mappings between a container's ID space and the host's, as Go's idtools.IDMap."""

from __future__ import annotations

from . import TYPE_CHECKING
from .errors import InvalidMappings

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


class IDMap(tuple[int, int, int]):
    """One contiguous range: container IDs [container_id, +size) are host IDs [host_id, +size).

    A plain tuple subclass rather than a NamedTuple: ``typing`` costs the CLI start-up time.
    """

    __slots__ = ()

    def __new__(cls, container_id: int, host_id: int, size: int) -> IDMap:
        return tuple.__new__(cls, (container_id, host_id, size))

    def __getnewargs__(self) -> tuple[int, int, int]:  # copy and pickle call __new__ with these
        return (self[0], self[1], self[2])

    def __repr__(self) -> str:
        """``IDMap(container_id=0, host_id=100000, size=65536)``."""
        return f"IDMap(container_id={self[0]!r}, host_id={self[1]!r}, size={self[2]!r})"

    @property
    def container_id(self) -> int:
        """The first ID of the range inside the container."""
        return self[0]

    @property
    def host_id(self) -> int:
        """The first ID of the range on the host."""
        return self[1]

    @property
    def size(self) -> int:
        """How many IDs the range holds."""
        return self[2]

    def to_json(self) -> dict[str, int]:
        """Go's JSON form: ``{"container_id": ..., "host_id": ..., "size": ...}``."""
        return {"container_id": self.container_id, "host_id": self.host_id, "size": self.size}

    @classmethod
    def from_json(cls, obj: dict[str, int]) -> IDMap:
        """The map Go's JSON form describes."""
        return cls(int(obj["container_id"]), int(obj["host_id"]), int(obj["size"]))


def maps_to_json(maps: Sequence[IDMap] | None) -> list[dict[str, int]]:
    return [m.to_json() for m in maps or ()]


def maps_from_json(objs: Iterable[dict[str, int]] | None) -> list[IDMap]:
    return [IDMap.from_json(o) for o in objs or ()]


def to_host(container_id: int, maps: Sequence[IDMap] | None) -> int:
    """Map a container ID to the host; identity when there are no maps (Go: ToHost)."""
    return _map_id(container_id, maps, True)


def to_container(host_id: int, maps: Sequence[IDMap] | None) -> int:
    """Map a host ID back into the container (Go: ToContainer)."""
    return _map_id(host_id, maps, False)


def _map_id(value: int, maps: Sequence[IDMap] | None, to_host: bool) -> int:
    if not maps:
        return value
    for m in maps:
        start, target = (m.container_id, m.host_id) if to_host else (m.host_id, m.container_id)
        if start <= value < start + m.size:
            return target + (value - start)
    raise InvalidMappings(f"container ID {value} cannot be mapped to a host ID" if to_host
                          else f"host ID {value} cannot be mapped to a container ID")


def root_pair(uid_maps: Sequence[IDMap] | None, gid_maps: Sequence[IDMap] | None) -> tuple[int, int]:
    """The host IDs of the container's root (Go's GetRootUIDGID).

    A single map of size 1 names root's host ID whatever container ID it maps; with no maps
    root is the host's root.
    """

    def one(maps: Sequence[IDMap] | None) -> int:
        if maps and len(maps) == 1 and maps[0].size == 1:
            return maps[0].host_id
        return to_host(0, maps)

    return one(uid_maps), one(gid_maps)


_overflow: dict[str, int] = {}


def overflow_id(kind: str) -> int:
    """The kernel's overflow UID or GID ("uid"/"gid"): where IDs a mapping lacks end up."""
    value = _overflow.get(kind)
    if value is None:
        value = 65534  # the value on kernels without /proc/sys/kernel/overflow{uid,gid}
        try:
            with open(f"/proc/sys/kernel/overflow{kind}", "rb") as f:
                value = int(f.read().strip())
        except (OSError, ValueError):
            pass
        _overflow[kind] = value
    return value


def to_host_overflow(uid: int, gid: int, uid_maps: Sequence[IDMap] | None,
                     gid_maps: Sequence[IDMap] | None) -> tuple[int, int]:
    """Map a container pair to the host, IDs without a mapping going to the overflow IDs.

    Go's IDMappings.ToHostOverflow, including its quirk: an ID equal to the *host* ID of root
    is taken to be root and not mapped again.
    """
    try:
        root_uid, root_gid = root_pair(uid_maps, gid_maps)
    except InvalidMappings:
        root_uid = root_gid = -1  # Go's RootPair() drops the error the same way
    host_uid, host_gid = root_uid, root_gid
    if uid != root_uid:
        try:
            host_uid = to_host(uid, uid_maps)
        except InvalidMappings:
            host_uid = overflow_id("uid")
    if gid != root_gid:
        try:
            host_gid = to_host(gid, gid_maps)
        except InvalidMappings:
            host_gid = overflow_id("gid")
    return host_uid, host_gid


def same_maps(a: Sequence[IDMap] | None, b: Sequence[IDMap] | None) -> bool:
    """Whether two mappings are the same list of ranges (no maps equal an empty list)."""
    return list(a or ()) == list(b or ())


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


__all__ = [
    "IDMap", "maps_from_json", "maps_to_json", "overflow_id", "parse_idmap", "root_pair", "same_maps",
    "to_container", "to_host", "to_host_overflow",
]
