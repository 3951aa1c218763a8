"""Sets of integer IDs kept as sorted, disjoint, half-open intervals.

Automatic user namespaces reason about ID *ranges*: the IDs ``/etc/subuid`` grants, minus those
existing containers map, of which the first N are taken.  A set of a few intervals stands for
millions of IDs, so every operation works on the intervals and never on single IDs.

An :class:`IDSet` is immutable; operations return new sets.  Intervals are ``(start, end)`` with
``end`` exclusive; empty ones are dropped and touching or overlapping ones merged, so two sets
holding the same IDs compare equal whatever intervals built them.
"""

from __future__ import annotations

from . import TYPE_CHECKING, errors
from .idtools import IDMap

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence


def _normalize(intervals: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in intervals if e > s):
        if out and start <= out[-1][1]:  # overlaps or touches the previous one: merge
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return tuple(out)


class IDSet:
    """An immutable set of integer IDs, stored as sorted disjoint ``[start, end)`` intervals."""

    __slots__ = ("_iv",)

    _iv: tuple[tuple[int, int], ...]

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        self._iv = _normalize(intervals)

    @classmethod
    def _raw(cls, intervals: tuple[tuple[int, int], ...]) -> IDSet:
        # For results already sorted, disjoint and non-touching: skip normalizing again.
        s = cls.__new__(cls)
        s._iv = intervals
        return s

    @classmethod
    def of_host_ids(cls, maps: Sequence[IDMap]) -> IDSet:
        """The host IDs a mapping uses (each map's ``[host_id, host_id + size)``)."""
        return cls((m.host_id, m.host_id + m.size) for m in maps)

    @classmethod
    def of_container_ids(cls, maps: Sequence[IDMap]) -> IDSet:
        """The container IDs a mapping covers (each map's ``[container_id, container_id + size)``)."""
        return cls((m.container_id, m.container_id + m.size) for m in maps)

    # -- inspecting ----------------------------------------------------------------------------
    @property
    def intervals(self) -> tuple[tuple[int, int], ...]:
        """The ``(start, end)`` intervals, sorted, disjoint and not touching."""
        return self._iv

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._iv)

    def size(self) -> int:
        """How many IDs the set holds."""
        return sum(end - start for start, end in self._iv)

    def __len__(self) -> int:
        return self.size()

    def __bool__(self) -> bool:
        return bool(self._iv)

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, int):
            return False
        import bisect

        i = bisect.bisect_right(self._iv, id, key=lambda iv: iv[0]) - 1
        return i >= 0 and self._iv[i][0] <= id < self._iv[i][1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IDSet) and self._iv == other._iv

    def __hash__(self) -> int:
        return hash(self._iv)

    def __repr__(self) -> str:
        return f"IDSet({list(self._iv)!r})"

    # -- combining -----------------------------------------------------------------------------
    def union(self, other: IDSet) -> IDSet:
        return IDSet(self._iv + other._iv)

    __or__ = union

    def subtract(self, other: IDSet) -> IDSet:
        """The IDs of this set that ``other`` does not hold (a merge walk over both lists)."""
        out: list[tuple[int, int]] = []
        theirs = other._iv
        j = 0
        for start, end in self._iv:
            # Skip the intervals of `other` that end before this one starts.
            while j < len(theirs) and theirs[j][1] <= start:
                j += 1
            k = j
            while k < len(theirs) and theirs[k][0] < end:
                cut_start, cut_end = theirs[k]
                if cut_start > start:
                    out.append((start, cut_start))
                start = max(start, cut_end)
                if start >= end:
                    break
                k += 1
            if start < end:
                out.append((start, end))
        return IDSet._raw(tuple(out))

    __sub__ = subtract

    def intersection(self, other: IDSet) -> IDSet:
        return self.subtract(self.subtract(other))

    __and__ = intersection

    def isdisjoint(self, other: IDSet) -> bool:
        return not self.intersection(other)

    # -- allocating ----------------------------------------------------------------------------
    def first(self, n: int) -> IDSet:
        """The ``n`` lowest IDs of the set (possibly from several intervals): first fit.

        Raises :class:`~containers_storage.errors.NoAvailableIDs` (Go's ``ErrNoAvailableIDs``)
        when the set holds fewer than ``n``.
        """
        out: list[tuple[int, int]] = []
        for start, end in self._iv:
            if n <= 0:
                break
            take = min(end - start, n)
            out.append((start, start + take))
            n -= take
        if n > 0:
            raise errors.NoAvailableIDs()
        return IDSet._raw(tuple(out))

    def zip(self, container_ids: IDSet) -> list[IDMap]:
        """Pair this set's IDs (host side) with ``container_ids`` in order, as ID maps.

        Both sets are walked from their lowest IDs; a map ends wherever either side's interval
        does, and the walk stops when either set runs out.
        """
        maps: list[IDMap] = []
        hosts = list(self._iv)
        ctrs = list(container_ids._iv)
        h = c = 0
        while h < len(hosts) and c < len(ctrs):
            (hs, he), (cs, ce) = hosts[h], ctrs[c]
            n = min(he - hs, ce - cs)
            maps.append(IDMap(cs, hs, n))
            hosts[h] = (hs + n, he)
            ctrs[c] = (cs + n, ce)
            if hs + n == he:
                h += 1
            if cs + n == ce:
                c += 1
        return maps


def overlapping_maps(maps: Sequence[IDMap]) -> list[IDMap]:
    """The maps whose container IDs or host IDs overlap those of an earlier map in ``maps``.

    A mapping must be a bijection: no container ID may map twice and no host ID be the target
    of two container IDs.  Go's container store refuses such mappings (hasOverlappingRanges).
    """
    seen_ctr = IDSet()
    seen_host = IDSet()
    conflicts: list[IDMap] = []
    for m in maps:
        ctr = IDSet([(m.container_id, m.container_id + m.size)])
        host = IDSet([(m.host_id, m.host_id + m.size)])
        if not ctr.isdisjoint(seen_ctr) or not host.isdisjoint(seen_host):
            conflicts.append(m)
        seen_ctr = seen_ctr | ctr
        seen_host = seen_host | host
    return conflicts


def check_no_overlaps(maps: Sequence[IDMap]) -> None:
    """Raise :class:`~containers_storage.errors.InvalidMappings` (Go's text) when ranges of
    ``maps`` overlap (see :func:`overlapping_maps`)."""
    conflicts = [f"{m.container_id}:{m.host_id}:{m.size}" for m in overlapping_maps(maps)]
    if len(conflicts) == 1:
        raise errors.InvalidMappings(f"the specified UID and/or GID mapping {conflicts[0]} conflicts "
                                     f"with other mappings: {errors.InvalidMappings.text}")
    if conflicts:
        raise errors.InvalidMappings(f"the specified UID and/or GID mappings {', '.join(conflicts)} "
                                     f"conflict with other mappings: {errors.InvalidMappings.text}")


__all__ = ["IDSet", "check_no_overlaps", "overlapping_maps"]
