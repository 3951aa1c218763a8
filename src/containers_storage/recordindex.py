"""The records engine: how a store's records files become records, and how a reference resolves.

One set of rules, used by the read-write stores, the read-only stores and the CLI's listing fast
path alike (Go's load() and lookup() of layers.go, images.go and containers.go):

- a store's records files are read in order (a missing or empty file holds no records), and
  when two records share an ID the first one wins;
- names are unique per store: when two records claim a name, the later claim wins and the
  earlier record loses the name (the store is then "damaged": a writer saves the repaired
  records, a reader of a read-only store refuses it, the fast path steps aside);
- a reference is an ID, else a name, else a unique prefix of an ID.

Records are whatever the caller makes of each JSON object (``Record`` wrappers in the stores, the
objects themselves on the fast path), so the indexes never copy a record.  Imports nothing at
module level, for the fast path's start-up.
"""

from __future__ import annotations

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Any, Generic, TypeVar

    from .ids import PrefixIndex

    Raw = dict[str, Any]  # one record's JSON object
    T = TypeVar("T")
else:
    class Generic:
        """typing.Generic's run-time part: ``RecordIndex[Layer]`` is ``RecordIndex``."""

        def __class_getitem__(cls, item: object) -> type:
            return cls

    T = object


def read_files(paths: Iterable[str]) -> list[bytes]:
    """Each records file's bytes, in order (b"" for a missing one: Go reads it as an empty file);
    the caller holds the store's lock."""
    out: list[bytes] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                out.append(f.read())
        except FileNotFoundError:
            out.append(b"")
    return out


def read_records(paths: Iterable[str], parse: Callable[[bytes, str], object]) -> list[list[Raw]]:
    """Each records file's JSON objects, in order; the caller holds the store's lock.

    ``parse(data, path)`` turns a non-empty file's bytes into its JSON value.  A ValueError says
    which file could not be used and why.
    """
    paths = list(paths)
    out: list[list[Raw]] = []
    for path, data in zip(paths, read_files(paths), strict=True):
        if not data.strip():
            out.append([])
            continue
        try:
            out.append(records_of(parse(data, path)))
        except ValueError as e:
            raise ValueError(f'loading "{path}": {e}') from None
    return out


def records_of(value: object) -> list[Raw]:
    """The records a parsed file holds: ``null`` is none, anything but an array is damage.

    That every element is an object is checked as the index reads their IDs.
    """
    if value is None:
        return []
    if type(value) is not list:
        raise ValueError("expected a JSON array of objects")
    return value


def image_digests(raw: Raw) -> list[str]:
    """Go's Image.Digests: the fixed digest, then the digests of ``manifest*`` big data items.

    An image without a fixed digest takes the first of them as its ``digest`` (Go's
    recomputeDigests), which is why this may add that field to ``raw``.
    """
    fixed = raw.get("digest") or ""
    seen: list[str] = [fixed] if fixed else []
    for key, value in (raw.get("big-data-digests") or {}).items():
        if key.startswith("manifest") and value and value not in seen:
            seen.append(value)
    if not fixed and seen:
        raw["digest"] = seen[0]
    return seen


def plain_ids(raws: Sequence[Raw]) -> list[str] | None:
    """The records' IDs when they are plain (string IDs and names, each used once: the usual
    case, checked in a few C loops), else None.  Changes nothing."""
    try:
        ids = [raw["id"] for raw in raws]
        names = [name for raw in raws if "names" in raw for name in raw["names"] or ()]
        if len(set(ids)) == len(ids) and set(map(type, ids)) <= {str} and len(set(names)) == len(names):
            return ids
    except (KeyError, TypeError):
        pass
    return None


def layer_chain(tops: Iterable[str], parent_of: Callable[[str], str]) -> Iterator[str]:
    """Go's ImageSize walk: an image's top layers and their ancestors, each once, breadth first.

    ``parent_of(id)`` is asked once per layer, after the caller has handled the layer.
    """
    queue = [id for id in tops if id]
    seen: set[str] = set()
    while queue:
        id = queue.pop(0)
        if id in seen:
            continue
        seen.add(id)
        yield id
        parent = parent_of(id)
        if parent:
            queue.append(parent)


class RecordIndex(Generic[T]):
    """One store's records in load order, by ID and by name, with unique-prefix lookups.

    ``damaged`` tells that loading took names away from records that had lost them to later
    claims; ``irregular`` that some ID was not a string (stored under its text).
    """

    __slots__ = ("_by_id", "_by_name", "_ids", "_prefix", "_prefix_scans", "_raws", "damaged", "irregular",
                 "plain", "records")

    def __init__(self) -> None:
        self.records: list[T] = []
        self.damaged = False
        self.irregular = False
        self.plain = False  # string IDs and names, each used once: the records are the files' objects
        # Built on first use (a listing needs neither), from the IDs and objects of the records.
        self._by_id: dict[str, T] | None = {}
        self._by_name: dict[str, T] | None = {}
        self._ids: list[str] = []
        self._raws: list[Raw] = []
        self._prefix: PrefixIndex | None = None
        self._prefix_scans = 0

    @classmethod
    def load(cls, files: Sequence[list[Raw]], make: Callable[[Raw, int], T] | None = None,
             locations: Sequence[int] = ()) -> RecordIndex[T]:
        """Index the objects of a store's files (in load order); ``make(raw, location)`` makes
        each object's record (the object itself without it), ``locations`` names the files'
        locations (their positions without it).  ValueError for objects that are not records."""
        index: RecordIndex[T] = cls()
        raws: list[Raw] = []
        items: list[Any] = []
        for position, file_raws in enumerate(files):
            if make is not None and file_raws:
                location = locations[position] if locations else position
                try:
                    items += [make(raw, location) for raw in file_raws]
                except (AttributeError, TypeError):
                    raise ValueError("expected a JSON array of objects") from None
            raws += file_raws
        if make is None:
            items = raws
        ids = plain_ids(raws)
        if ids is not None:
            index.records = items
            index._ids = ids
            index._raws = raws
            index._by_id = index._by_name = None
            index.plain = True
            return index
        try:
            index._load_carefully(raws, items)
        except (AttributeError, TypeError):
            raise ValueError("expected a JSON array of objects") from None
        return index

    def _load_carefully(self, raws: list[Raw], items: list[T]) -> None:
        """Go's rules one record at a time: the first of an ID wins, a later name claim wins."""
        by_id: dict[str, T] = {}
        kept: list[tuple[T, Raw]] = []
        for item, raw in zip(items, raws, strict=True):
            id = raw.get("id")
            if type(id) is not str:
                self.irregular = True
                id = str(id or "")
            if id not in by_id:
                by_id[id] = item
                kept.append((item, raw))
        by_name: dict[str, T] = {}
        owners: dict[str, Raw] = {}
        for item, raw in kept:
            for name in raw.get("names") or ():
                loser = owners.get(name)
                if loser is not None and loser is not raw:  # a name listed twice by one record is no conflict
                    loser["names"] = [n for n in loser["names"] if n != name]
                    self.damaged = True
                by_name[name] = item
                owners[name] = raw
        self.records = [item for item, _ in kept]
        self._by_id = by_id
        self._by_name = by_name

    @property
    def by_id(self) -> dict[str, T]:
        if self._by_id is None:
            self._by_id = dict(zip(self._ids, self.records, strict=True))
            self._ids = []
        return self._by_id

    @property
    def by_name(self) -> dict[str, T]:
        if self._by_name is None:
            self._by_name = {name: item for item, raw in zip(self.records, self._raws, strict=True)
                             if "names" in raw for name in raw["names"] or ()}
            self._raws = []
        return self._by_name

    # -- lookups -------------------------------------------------------------------------------
    def get(self, id: str) -> T | None:
        """The record with this exact ID."""
        return self.by_id.get(id)

    def lookup(self, ref: str) -> T | None:
        """The record ``ref`` names: an ID, else a name, else a unique ID prefix."""
        rec = self.by_id.get(ref)
        if rec is None:
            rec = self.by_name.get(ref)
            if rec is None:
                full = self._full_id(ref)
                if full is not None:
                    rec = self.by_id.get(full)
        return rec

    def _full_id(self, prefix: str) -> str | None:
        """The one ID starting with ``prefix`` (Go's truncindex).  The first lookups scan the IDs;
        a caller that keeps asking gets a sorted index (a one-shot CLI call never pays for it)."""
        if self._prefix is None and self._prefix_scans < 2:
            self._prefix_scans += 1
            if not prefix or " " in prefix:
                return None
            found = [id for id in self.by_id if id.startswith(prefix)]
            return found[0] if len(found) == 1 else None
        if self._prefix is None:
            from .ids import PrefixIndex

            self._prefix = PrefixIndex(self.by_id)
        return self._prefix.get(prefix)

    # -- changes by a writer -------------------------------------------------------------------
    def add(self, item: T, id: str, names: Iterable[str]) -> None:
        by_id, by_name = self.by_id, self.by_name  # built before the records change
        self.records.append(item)
        by_id[id] = item
        if self._prefix is not None:
            self._prefix.add(id)
        for name in names:
            by_name[name] = item

    def remove(self, item: T, id: str, names: Iterable[str]) -> None:
        by_id, by_name = self.by_id, self.by_name
        self.records = [r for r in self.records if r is not item]
        if by_id.get(id) is item:
            del by_id[id]
            if self._prefix is not None:
                self._prefix.discard(id)
        for name in names:
            if by_name.get(name) is item:
                del by_name[name]


class PackedIndex:
    """A plain store's lookups without its records in memory (``RecordIndex``'s rules).

    Packed once per records file and kept with its cache entry (``recordcache``): the IDs and the
    names, each line ``<key>\t<record number>``, in two byte strings that ``bytes.find`` searches
    (an exact key, or an ID prefix at the start of a line), and each record's ``marshal`` apart,
    so that looking one name up among 10,000 images reads that image and nothing else.
    """

    IDS, NAMES, OFFSETS, RECORDS = "index.ids", "index.names", "index.offsets", "index.records"

    __slots__ = ("_ids", "_names", "_read")

    def __init__(self, ids: bytes, names: bytes, read: Callable[[str, int, int], bytes]) -> None:
        """``read(product, start, end)`` returns part of the OFFSETS or RECORDS product."""
        self._ids = ids
        self._names = names
        self._read = read

    @staticmethod
    def pack(raws: Sequence[Raw]) -> dict[str, bytes] | None:
        """The products of plain records (unique string IDs and names); None when a key holds a
        tab or a newline, which the lines could not tell apart."""
        import marshal

        ids: list[bytes] = [b"\n"]
        names: list[bytes] = [b"\n"]
        records: list[bytes] = []
        offsets = [0]
        try:
            for n, raw in enumerate(raws):
                number = b"\t%d\n" % n
                ids += (_key(raw["id"]), number)
                names += [part for name in raw.get("names") or () for part in (_key(name), number)]
                records.append(marshal.dumps(raw))
                offsets.append(offsets[-1] + len(records[-1]))
        except (AttributeError, KeyError, TypeError, ValueError):
            return None  # not plain after all
        packed_ids, packed_names = b"".join(ids), b"".join(names)
        if (packed_ids.count(b"\n") != len(raws) + 1 or packed_names.count(b"\n") != len(names) // 2 + 1
                or packed_ids.count(b"\t") != len(raws) or packed_names.count(b"\t") != len(names) // 2):
            return None
        return {PackedIndex.IDS: packed_ids, PackedIndex.NAMES: packed_names,
                PackedIndex.OFFSETS: b"".join(o.to_bytes(8, "little") for o in offsets),
                PackedIndex.RECORDS: b"".join(records)}

    def record(self, n: int) -> Raw:
        import marshal

        span = self._read(self.OFFSETS, 8 * n, 8 * n + 16)
        start, end = int.from_bytes(span[:8], "little"), int.from_bytes(span[8:], "little")
        value: Raw = marshal.loads(self._read(self.RECORDS, start, end))
        return value

    def number(self, ref: str) -> int | None:
        """The number of the record ``ref`` names: an ID, else a name, else a unique ID prefix."""
        key = _key(ref)
        if b"\n" in key or b"\t" in key:
            return None  # no key holds one (pack made sure)
        for lines in (self._ids, self._names):
            at = lines.find(b"\n" + key + b"\t")
            if at >= 0:
                return _number(lines, at + len(key) + 2)
        if not ref or " " in ref:
            return None  # Go's truncindex refuses these prefixes
        at = self._ids.find(b"\n" + key)
        if at < 0 or self._ids.find(b"\n" + key, at + 1) >= 0:
            return None  # none, or ambiguous
        return _number(self._ids, self._ids.index(b"\t", at) + 1)

    def lookup(self, ref: str) -> Raw | None:
        n = self.number(ref)
        return None if n is None else self.record(n)

    def get(self, id: str) -> Raw | None:
        """The record with this exact ID."""
        key = _key(id)
        if b"\n" in key or b"\t" in key:
            return None
        at = self._ids.find(b"\n" + key + b"\t")
        return None if at < 0 else self.record(_number(self._ids, at + len(key) + 2))


def _key(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # one-to-one, as the dicts' str keys are


def _number(lines: bytes, start: int) -> int:
    return int(lines[start:lines.index(b"\n", start)])
