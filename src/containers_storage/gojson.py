"""Go's encoding/json: its byte conventions that Python's encoders do not follow by themselves, and the
record structs' field order and ``omitempty`` rules (the records module writes files with them,
the CLI prints with them).

Kept free of imports so the CLI's fast listing path can use it without loading the records layer.
"""

from __future__ import annotations

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def go_escape(data: bytes) -> bytes:
    """Go escapes <, >, & and U+2028/U+2029 inside strings; match its bytes.

    Safe on whole JSON documents: those characters can only occur inside strings.
    """
    if b"<" in data:
        data = data.replace(b"<", b"\\u003c")
    if b">" in data:
        data = data.replace(b">", b"\\u003e")
    if b"&" in data:
        data = data.replace(b"&", b"\\u0026")
    if b"\xe2\x80\xa8" in data:
        data = data.replace(b"\xe2\x80\xa8", b"\\u2028")
    if b"\xe2\x80\xa9" in data:
        data = data.replace(b"\xe2\x80\xa9", b"\\u2029")
    return data



def go_form(data: bytes) -> str:
    """How a records file's bytes relate to Go's json.Marshal output of the records they hold.

    "go": already exactly Go's bytes (compact, Go's escapes, nothing left to escape); "escape":
    compact, but ``go_escape`` must still run over it; "other": re-encode.  That the records
    themselves have Go's key order and omitted fields is checked on the parsed values.
    """
    data = data.strip()
    if not data.startswith(b"[") or b" " in data or b"\\/" in data:
        return "other"
    if b"\\u" in data:
        import re

        for escape in re.findall(rb"\\u(.{4})", data):
            if escape not in _GO_ESCAPES:
                return "other"
    return "go" if go_escape(data) is data else "escape"


# What Go writes as \uXXXX: HTML-sensitive characters, line/paragraph separators and the control
# characters without a short escape (Go 1.22+ writes \b \t \n \f \r short).
_GO_ESCAPES = frozenset({b"003c", b"003e", b"0026", b"2028", b"2029"} | {
    f"{c:04x}".encode() for c in range(0x20) if c not in (0x08, 0x09, 0x0A, 0x0C, 0x0D)})

# A JSON codec with no imports beyond the C accelerator module: the stdlib ``json`` package pulls
# in ``re`` and ``enum`` and orjson pulls in ``uuid``, ``platform`` and ``dataclasses``, together
# 10-15 ms of a CLI call that otherwise takes ~30 ms.  Big documents are still parsed by orjson,
# whose parser more than pays for its import above ``ORJSON_THRESHOLD`` bytes.
ORJSON_THRESHOLD = 1 << 20  # measured: below this the import costs more than it saves

_scanner = None
_encoder = None


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, object] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"invalid JSON constant {name}")


def _light_loads(text: str) -> object:
    global _scanner
    import _json

    if _scanner is None:
        _scanner = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
    i, end = 0, len(text)
    while i < end and text[i] in " \t\n\r":
        i += 1
    try:
        value, pos = _scanner(text, i)
    except ValueError:
        raise  # NaN/Infinity, which Go's and orjson's parsers refuse too
    except (StopIteration, SystemError):
        # The C scanner reports errors through json.decoder (SystemError when that is not
        # loaded); malformed input is rare, so let the full module word the error.
        import json

        return json.loads(text)
    while pos < end and text[pos] in " \t\n\r":
        pos += 1
    if pos != end:
        import json

        return json.loads(text)
    return value


def loads(data: bytes) -> object:
    """Parse a JSON document (raises ValueError on malformed input, as orjson does)."""
    if len(data) >= ORJSON_THRESHOLD or "orjson" in _modules():
        import orjson

        return orjson.loads(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"invalid UTF-8 in JSON: {e}") from None
    return _light_loads(text)


def dumps(value: object) -> bytes:
    """Compact JSON in the given key order, then Go's escaping (callers order keys as Go does).

    Always the standard library's C encoder: orjson's ``dumps`` is no faster on records (within
    a few percent from 800 to 40,000 layers), and importing it costs a CLI call ~20 ms.
    """
    global _encoder
    import _json

    if _encoder is None:
        _encoder = _json.make_encoder(
            None, _no_default, _json.encode_basestring, None, ":", ",", False, False, True)
    return go_escape("".join(_encoder(value, 0)).encode("utf-8"))


def _no_default(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _modules() -> Mapping[str, object]:
    import sys

    return sys.modules


# -- Go's record structs -------------------------------------------------------------------------
# (json key, always emitted) in Go struct order.  "Always emitted" fields lack omitempty in Go
# (or are structs, which omitempty never drops, like time.Time).
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
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's time.Time{} as RFC 3339
_MAPS = frozenset({"flags", "big-data-sizes", "big-data-digests"})  # Go sorts map keys


def go_struct(raw: dict[str, Any], fields: tuple[tuple[str, bool], ...], *, keep_unknown: bool,
              check_sorted: bool = True) -> dict[str, Any]:
    """The object Go's encoding/json writes for a record decoded into its struct: the struct's
    field order, ``omitempty`` applied, map keys sorted.  ``raw`` itself when it already is
    that (records read from Go's or our files are), else a rebuilt copy.

    ``keep_unknown`` appends keys the struct lacks (a store's round trip keeps what a newer Go
    wrote); the CLI, which prints Go's struct, drops them.  Without ``check_sorted`` the maps of
    a record already in order are trusted to be sorted (every writer sorts them).
    """
    optional = go_order_optional(fields, tuple(raw))
    if optional is not None and all([raw[key] for key in optional]) and (not check_sorted or all(
            [list(raw[key]) == sorted(raw[key]) for key in optional
             if key in _MAPS and isinstance(raw[key], dict)])):
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
    if keep_unknown:
        known = _known_keys(fields)
        for key, value in raw.items():
            if key not in known:
                out[key] = value
    return out


def _empty(value: Any) -> bool:
    """Go's omitempty: false, 0, "", and empty arrays and maps (and nil)."""
    return value is None or value == "" or value == 0 or value is False or value == [] or value == {}


def _sorted_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_deep(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_deep(v) for v in value]
    return value


_known: dict[int, frozenset[str]] = {}


def _known_keys(fields: tuple[tuple[str, bool], ...]) -> frozenset[str]:
    known = _known.get(id(fields))
    if known is None:
        known = _known[id(fields)] = frozenset(key for key, _ in fields)
    return known


# (struct fields, key sequence) -> the optional keys to test for emptiness, or None when the
# sequence is not in Go's struct order (or lacks a field Go always writes).
_go_order: dict[tuple[int, tuple[str, ...]], tuple[str, ...] | None] = {}


def go_order_optional(fields: tuple[tuple[str, bool], ...], keys: tuple[str, ...]) -> tuple[str, ...] | None:
    """Whether ``keys`` is a struct's JSON key sequence as Go writes it; then its omitempty keys.

    Records loaded from a Go-written (or our) file are already in this shape, so serializing
    them needs no rebuilt dict.  Cached: a store's records share a handful of key sequences.
    """
    cache_key = (id(fields), keys)
    try:
        return _go_order[cache_key]
    except KeyError:
        pass
    rank = {key: i for i, (key, _) in enumerate(fields)}
    last = -1
    result: tuple[str, ...] | None = None
    for key in keys:
        r = rank.get(key)
        if r is None or r <= last:
            break
        last = r
    else:
        present = set(keys)
        if all(key in present for key, always in fields if always):
            required = {key for key, always in fields if always}
            result = tuple(key for key in keys if key not in required)
    _go_order[cache_key] = result
    return result
