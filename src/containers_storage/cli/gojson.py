"""Records as the Go CLI prints them in --json mode.

Go decodes each record into its struct and encodes it again, so the output has the struct's
field order, ``omitempty`` applied, map keys sorted and unknown keys dropped.  Records written by
Go (or by our store, which writes the same bytes) already look like that, which a cached check of
their key sequence recognises; only the others are rebuilt.
"""

from __future__ import annotations

from ..gojson import go_order_optional

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any


ZERO_TIME = "0001-01-01T00:00:00Z"

# (json key, emitted even when empty) in Go struct order; kept equal to records.py's tables.
LAYER_FIELDS: tuple[tuple[str, bool], ...] = (
    ("id", True), ("names", False), ("parent", False), ("metadata", False), ("mountlabel", False),
    ("created", True), ("compressed-diff-digest", False), ("compressed-size", False),
    ("diff-digest", False), ("toc-digest", False), ("diff-size", False), ("compression", False),
    ("uidset", False), ("gidset", False), ("flags", False), ("uidmap", False), ("gidmap", False),
    ("big-data-names", False),
)
IMAGE_FIELDS: tuple[tuple[str, bool], ...] = (
    ("id", True), ("digest", False), ("names", False), ("names-history", False), ("layer", False),
    ("mapped-layers", False), ("metadata", False), ("big-data-names", False),
    ("big-data-sizes", False), ("big-data-digests", False), ("created", True), ("flags", False),
)
CONTAINER_FIELDS: tuple[tuple[str, bool], ...] = (
    ("id", True), ("names", False), ("image", True), ("layer", True), ("metadata", False),
    ("big-data-names", False), ("big-data-sizes", False), ("big-data-digests", False),
    ("created", True), ("uidmap", False), ("gidmap", False), ("flags", False),
)
_MAPS = frozenset({"flags", "big-data-sizes", "big-data-digests"})


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == 0 or value is False or value == [] or value == {}


def _sorted_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_deep(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_deep(v) for v in value]
    return value


def go_view(raw: dict[str, Any], fields: tuple[tuple[str, bool], ...]) -> dict[str, Any]:
    """``raw`` itself when it is already in Go's form, else a rebuilt copy."""
    optional = go_order_optional(fields, tuple(raw))
    # Go's order, and no empty value that omitempty would drop (maps are sorted by every writer).
    if optional is not None and all([raw[key] for key in optional]):
        return raw
    out: dict[str, Any] = {}
    for key, always in fields:
        value = raw.get(key)
        if value is None or (not always and _empty(value)):
            if always:
                out[key] = ZERO_TIME if key == "created" else ""
            continue
        if key in _MAPS and isinstance(value, dict):
            value = _sorted_deep(value)
        out[key] = value
    return out


def layers_view(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [go_view(r, LAYER_FIELDS) for r in raws]


def images_view(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [go_view(r, IMAGE_FIELDS) for r in raws]


def containers_view(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [go_view(r, CONTAINER_FIELDS) for r in raws]
