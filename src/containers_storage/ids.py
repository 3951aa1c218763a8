"""IDs as Go makes them (64 hex chars) and lookup by unique prefix (Go's truncindex)."""

from __future__ import annotations

import os

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Container, Iterable



def generate_id() -> str:
    """A random 64-hex-char ID whose 12-char short form is not all digits (as Go's stringid)."""
    while True:
        value = os.urandom(32).hex()
        if not value[:12].isdigit():
            return value


def unused_id(taken: Container[str]) -> str:
    """A fresh random ID that ``taken`` does not hold (Go regenerates on the rare collision)."""
    value = generate_id()
    while value in taken:
        value = generate_id()
    return value


def is_full_id(value: str) -> bool:
    return len(value) == 64 and not value.strip("0123456789abcdef")


class PrefixIndex:
    """Resolves a unique ID prefix to the full ID; built lazily because most lookups are by ID."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._sorted: list[str] | None = None
        self._source: Iterable[str] | None = ids
        self._set: set[str] | None = None

    @property
    def _ids(self) -> set[str]:
        # Most processes look things up by full ID or name only; build the set on demand.
        if self._set is None:
            self._set = set(self._source or ())
            self._source = None
        return self._set

    def add(self, value: str) -> None:
        self._ids.add(value)
        self._sorted = None

    def discard(self, value: str) -> None:
        self._ids.discard(value)
        self._sorted = None

    def get(self, prefix: str) -> str | None:
        """The one ID starting with ``prefix``; None if there is none or more than one."""
        if not prefix or " " in prefix:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._ids)
        ids = self._sorted
        import bisect  # here: creating a layer (unused_id) needs no sorted index

        i = bisect.bisect_left(ids, prefix)
        if i >= len(ids) or not ids[i].startswith(prefix):
            return None
        if i + 1 < len(ids) and ids[i + 1].startswith(prefix):
            return None
        return ids[i]
