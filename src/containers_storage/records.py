"""Layer, Image and Container records, stored as Go stores them.

A record wraps the JSON object it was loaded from, so loading thousands of them costs one
JSON parse and no per-field conversion, unknown keys written by a newer Go version survive a
round trip, and timestamps keep their exact nanosecond text.  ``to_json`` emits Go's field order
and ``omitempty`` rules; ``dumps`` adds Go's HTML-safe escaping so our files match Go's bytes.
"""

from __future__ import annotations

import time

from . import TYPE_CHECKING, gojson
from .idtools import IDMap, maps_from_json, maps_to_json
from .layout import big_data_file_name
from .recordindex import image_digests

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, ClassVar

INCOMPLETE_FLAG = "incomplete"

ZERO_TIME = gojson.ZERO_TIME


def now_rfc3339() -> str:
    """The current UTC time as Go's RFC3339Nano text (nanoseconds, trailing zeros trimmed)."""
    return format_time_ns(time.time_ns())


def format_time_ns(ns: int) -> str:
    secs, nanos = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if nanos:
        base += "." + f"{nanos:09d}".rstrip("0")
    return base + "Z"


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch for an RFC 3339 timestamp (any offset, any fraction)."""
    import datetime

    frac = 0
    main = text
    tz = ""
    if text.endswith("Z"):
        main, tz = text[:-1], "+00:00"
    else:
        for sign in ("+", "-"):
            idx = text.rfind(sign, 19)
            if idx != -1:
                main, tz = text[:idx], text[idx:]
                break
    if "." in main:
        main, digits = main.split(".", 1)
        frac = int((digits + "000000000")[:9])
    dt = datetime.datetime.fromisoformat(main + (tz or "+00:00"))
    return int(dt.timestamp()) * 1_000_000_000 + frac


class Record:
    """Common behaviour of the three record kinds: the backing dict and Go-order serialization."""

    FIELDS: ClassVar[tuple[tuple[str, bool], ...]] = ()  # Go's struct (gojson's tables)
    __slots__ = ("_d",)

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        """Wrap ``data``, a record's JSON object (kept, not copied)."""
        self._d: dict[str, Any] = data if data is not None else {}

    def __repr__(self) -> str:
        """``<Layer 0123456789ab names=['base']>``: the kind, the short ID and the names."""
        names = self._d.get("names")
        return f"<{type(self).__name__} {self.id[:12]}{f' names={names!r}' if names else ''}>"

    @property
    def raw(self) -> dict[str, Any]:
        """The record's JSON object, with Go's field names, unknown fields included."""
        return self._d

    def to_json(self) -> dict[str, Any]:
        """The object Go's encoding/json would write for this record (the backing dict itself
        when it already is that: every save serializes every record, under the store's lock)."""
        return gojson.go_struct(self._d, self.FIELDS, keep_unknown=True)

    # -- fields shared by all kinds --------------------------------------------------------
    @property
    def id(self) -> str:
        """The record's ID (64 hex digits)."""
        return str(self._d.get("id", ""))

    @property
    def names(self) -> list[str]:
        """The record's names (e.g. ``registry.example.com/app:1.0``), unique per kind."""
        return list(self._d.get("names") or ())

    @names.setter
    def names(self, value: list[str]) -> None:
        self._d["names"] = list(value)

    @property
    def metadata(self) -> str:
        """Free text its creator stored with the record."""
        return str(self._d.get("metadata") or "")

    @metadata.setter
    def metadata(self, value: str) -> None:
        self._d["metadata"] = value

    @property
    def created(self) -> str:
        """RFC 3339 text exactly as stored."""
        return str(self._d.get("created") or ZERO_TIME)

    @property
    def flags(self) -> dict[str, Any]:
        """Extra flags (Go's ``Flags`` map), e.g. ``incomplete`` on a layer being made."""
        flags: dict[str, Any] | None = self._d.get("flags")
        if flags is None:
            flags = self._d["flags"] = {}
        return flags

    @property
    def big_data_names(self) -> list[str]:
        """The keys of the record's big data items."""
        return list(self._d.get("big-data-names") or ())

    def add_big_data_name(self, key: str) -> bool:
        """Add ``key`` to :attr:`big_data_names`; False when it is there already."""
        names = self._d.setdefault("big-data-names", [])
        if names is None:
            names = self._d["big-data-names"] = []
        if key in names:
            return False
        names.append(key)
        return True


class _BigDataSized(Record):
    __slots__ = ()

    @property
    def big_data_sizes(self) -> dict[str, int]:
        """The size in bytes of each big data item, by key."""
        return dict(self._d.get("big-data-sizes") or {})

    @property
    def big_data_digests(self) -> dict[str, str]:
        """The digest (``sha256:...``) of each big data item, by key."""
        return dict(self._d.get("big-data-digests") or {})

    def set_big_data_info(self, key: str, size: int, digest: str) -> bool:
        """Record size and digest of one item; True when anything changed (a save is due)."""
        sizes = self._d.get("big-data-sizes") or {}
        digests = self._d.get("big-data-digests") or {}
        changed = sizes.get(key) != size or digests.get(key) != digest
        sizes[key] = size
        digests[key] = digest
        self._d["big-data-sizes"] = sizes
        self._d["big-data-digests"] = digests
        return self.add_big_data_name(key) or changed


class _IDMapped(Record):
    """Layers and containers: records whose files are owned for an ID mapping."""

    __slots__ = ()

    @property
    def uid_map(self) -> list[IDMap]:
        """The UID mapping the record's files are owned for (empty: the host's IDs)."""
        return maps_from_json(self._d.get("uidmap"))

    @property
    def gid_map(self) -> list[IDMap]:
        """The GID mapping the record's files are owned for (empty: the host's IDs)."""
        return maps_from_json(self._d.get("gidmap"))


class Layer(_IDMapped):
    """One layer: a filesystem diff applied over its parent.

    Attributes:
        mount_point: where the layer is mounted (from the run root's mount records), or ``""``.
        mount_count: how many mounts of it are recorded.
        read_only: whether it belongs to a read-only (additional) store.
        location: where its record is kept (layers.json, volatile-layers.json, ...).
    """

    FIELDS = gojson.LAYER_FIELDS
    __slots__ = ("location", "mount_count", "mount_point", "read_only")

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        """Wrap ``data``, the record's JSON object as Go stores it (kept, not copied)."""
        super().__init__(data)
        self.mount_point = ""
        self.mount_count = 0
        self.read_only = False
        self.location = 1  # stable (layers.json)

    @property
    def parent(self) -> str:
        """The parent layer's ID, or ``""`` for a base layer."""
        return str(self._d.get("parent") or "")

    @property
    def mount_label(self) -> str:
        """The SELinux label the layer is mounted with, or ``""``."""
        return str(self._d.get("mountlabel") or "")

    @property
    def compressed_digest(self) -> str:
        """The digest of the compressed tarball the layer came from, or ``""``."""
        return str(self._d.get("compressed-diff-digest") or "")

    @property
    def compressed_size(self) -> int:
        """The size of that compressed tarball, or 0."""
        return int(self._d.get("compressed-size") or 0)

    @property
    def uncompressed_digest(self) -> str:
        """The digest of the uncompressed tar stream (the diff ID), or ``""``."""
        return str(self._d.get("diff-digest") or "")

    @property
    def uncompressed_size(self) -> int:
        """The size of the uncompressed tar stream, or 0 when not recorded."""
        return int(self._d.get("diff-size") or 0)

    @property
    def toc_digest(self) -> str:
        """The digest of a partially pulled layer's table of contents, or ``""``."""
        return str(self._d.get("toc-digest") or "")

    @property
    def compression(self) -> int:
        """How the tarball was compressed (0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd)."""
        return int(self._d.get("compression") or 0)

    @property
    def uids(self) -> list[int]:
        """The UIDs that own files in the layer."""
        return list(self._d.get("uidset") or ())

    @property
    def gids(self) -> list[int]:
        """The GIDs that own files in the layer."""
        return list(self._d.get("gidset") or ())

    @property
    def incomplete(self) -> bool:
        """Whether the layer is being made or deleted (or a crash stopped either)."""
        flags = self._d.get("flags")
        return isinstance(flags, dict) and flags.get(INCOMPLETE_FLAG) is True


class Image(_BigDataSized):
    """One image: a top layer plus names, digests and big data items (manifest, config).

    Attributes:
        read_only: whether it belongs to a read-only (additional) store.
    """

    FIELDS = gojson.IMAGE_FIELDS
    __slots__ = ("_digests", "read_only")

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        """Wrap ``data``, the record's JSON object as Go stores it (kept, not copied)."""
        super().__init__(data)
        self._digests: list[str] | None = None
        self.read_only = False

    @property
    def digests(self) -> list[str]:
        """Go's Image.Digests, computed when first asked for (loading stays one dict per image)."""
        if self._digests is None:
            self.recompute_digests()
        return self._digests or []

    @property
    def digest(self) -> str:
        """The image's digest: the one fixed at creation, else its first manifest's."""
        value = self._d.get("digest")
        if not value and self._digests is None:
            self.recompute_digests()
            value = self._d.get("digest")
        return str(value or "")

    @property
    def top_layer(self) -> str:
        """The top layer's ID, or ``""`` for an image without layers."""
        return str(self._d.get("layer") or "")

    @property
    def mapped_top_layers(self) -> list[str]:
        """IDs of copies of the top layer re-owned for other ID mappings."""
        return list(self._d.get("mapped-layers") or ())

    @property
    def names_history(self) -> list[str]:
        """Names the image had, newest first."""
        return list(self._d.get("names-history") or ())

    def recompute_digests(self) -> None:
        """Image.Digests: the fixed digest first, then digests of ``manifest*`` big data."""
        self._digests = image_digests(self._d)


class Container(_BigDataSized, _IDMapped):
    """One container: a read-write layer over an image's top layer.

    Attributes:
        volatile: whether its record is kept in the volatile (unsynced) file.
    """

    FIELDS = gojson.CONTAINER_FIELDS
    __slots__ = ("volatile",)

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        """Wrap ``data``, the record's JSON object as Go stores it (kept, not copied)."""
        super().__init__(data)
        self.volatile = False

    @property
    def image(self) -> str:
        """The ID of the image the container was made from, or ``""``."""
        return str(self._d.get("image") or "")

    @property
    def layer(self) -> str:
        """The ID of the container's read-write layer."""
        return str(self._d.get("layer") or "")


def dumps_records(records: Iterable[Record]) -> bytes:
    """A JSON array of records, byte-compatible with Go's json.Marshal of the slice."""
    objs = [r.to_json() for r in records]
    return gojson.dumps(objs)


def apply_name_operation(old: list[str], params: list[str], op: str) -> list[str]:
    """Go's applyNameOperation: set replaces, add puts new names first, remove filters."""
    if op == "set":
        result = list(params)
    elif op == "remove":
        result = [n for n in old if n not in params]
    elif op == "add":
        result = list(params) + list(old)
    else:
        raise ValueError(f"invalid update name operation {op!r}")
    return dedupe(result)


def reassign_names(rec: Record, new_names: list[str], by_name: dict[str, Any]) -> list[Any]:
    """Give ``rec`` exactly ``new_names``, taking any of them away from the record holding it;
    returns the records that lost a name (their files need saving too).

    Names are unique per kind: a name moves rather than being refused (Go's updateNames).
    """
    losers: list[Any] = []
    for name in rec.names:
        by_name.pop(name, None)
    for name in new_names:
        other = by_name.get(name)
        if other is not None and other is not rec:
            other.names = [n for n in other.names if n != name]
            losers.append(other)
        by_name[name] = rec
    rec.names = new_names
    return losers


def dedupe(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


__all__ = [
    "INCOMPLETE_FLAG",
    "Container",
    "IDMap",
    "Image",
    "Layer",
    "Record",
    "apply_name_operation",
    "big_data_file_name",
    "dedupe",
    "dumps_records",
    "format_time_ns",
    "maps_to_json",
    "now_rfc3339",
    "parse_time_ns",
    "reassign_names",
]
