"""A one-shot, read-only look at a store's record files, for callers that list and exit.

Building a ``Store`` costs imports and objects a listing never uses; a command-line ``layers`` on
a big store must beat the Go binary, so this reads ``layers.json``, ``images.json`` and
``containers.json`` (with their volatile and additional-store companions: ``layout``) under the
same read locks and through the same records engine (``recordindex``) as the stores do, and
hands back the raw JSON objects.

What it reads is kept in the run root's records cache (``recordcache``) with what is derived
from it, so that a later call on the same bytes skips the work: the parse, whether the records
are plain (nothing for a writer to repair), a packed index that a lookup reads one record
through (``recordindex.PackedIndex``), and the products a listing asks for (``product``).
Records are made into Python objects only when a caller asks for them.

It gives up (returns None) whenever the full store might behave differently: a store that does
not exist yet (the store creates it), records a writer must repair (incomplete layers, duplicate
names), or unreadable or malformed files (the store reports those).  Callers then take the
ordinary path.
"""

from __future__ import annotations

import os

from . import TYPE_CHECKING
from .layout import Files, Layout, additional_image_store_dirs
from .recordcache import MISSING, Entry, cache_file
from .recordindex import PackedIndex, RecordIndex, image_digests, plain_ids, read_files, records_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    Raw = dict[str, Any]  # a record's JSON object
    Source = tuple[bytes, str | None]  # a file's bytes and their gojson.go_form, when known
    Index = RecordIndex[Raw] | PackedIndex


class _GiveUp(Exception):
    pass


class _Group:
    """One store's records files, read under its lock: the non-empty files' cache entries, the
    records and their indexes made from them on first use."""

    __slots__ = ("_index", "_records", "entries", "lookups")

    def __init__(self, entries: list[Entry], lookups: bool) -> None:
        self.entries = entries
        self.lookups = lookups  # a packed index serves lookups when the entry keeps one
        self._records: list[Raw] | None = None
        self._index: Index | None = None

    @property
    def single(self) -> Entry | None:
        """The one file's entry when the store's records are that file's, plain."""
        if len(self.entries) == 1 and _facts(self.entries[0])["plain"]:
            return self.entries[0]
        return None

    def check(self, layers: bool) -> None:
        """Give up where the store would differ: damage it repairs or refuses, incomplete layers."""
        single = self.single
        if single is not None:
            if layers and _facts(single)["incomplete"]:
                raise _GiveUp()  # a writer finishes deleting it first
            return
        index = self.full_index()
        if index.damaged or index.irregular:
            raise _GiveUp()  # the store drops the older claim (and saves, if it may)
        if layers and any([isinstance(rec["flags"], dict) and rec["flags"].get("incomplete") is True
                           for rec in index.records if "flags" in rec]):
            raise _GiveUp()

    def full_index(self) -> RecordIndex[Raw]:
        if not isinstance(self._index, RecordIndex):
            try:
                self._index = RecordIndex.load([records_of(_value(e)) for e in self.entries])
            except ValueError:
                raise _GiveUp() from None
        return self._index

    @property
    def records(self) -> list[Raw]:
        if self._records is None:
            single = self.single
            self._records = records_of(_value(single)) if single is not None else self.full_index().records
        return self._records

    @property
    def index(self) -> Index:
        """Lookups by the store's rules: packed for a big file that keeps one, else in memory."""
        if self._index is None:
            single = self.single
            if single is not None and self.lookups and single.path is not None:
                self._index = _packed(single)
        if self._index is None:
            self._index = self.full_index()
        return self._index

    @property
    def sources(self) -> list[Source]:
        return [(e.data, e.go_form) for e in self.entries]


def _value(entry: Entry) -> object:
    try:
        value = entry.value()
    except ValueError:
        raise _GiveUp() from None
    entry.save()
    return value


def _facts(entry: Entry) -> dict[str, bool]:
    """Whether the file's records are plain (unique string IDs and names) and whether one is an
    incomplete layer: kept with the entry, as a pure function of its bytes."""
    facts = entry.get("snapshot.facts")
    if type(facts) is dict and facts.keys() == {"plain", "incomplete"}:
        return facts
    try:
        records = records_of(_value(entry))
        plain = plain_ids(records) is not None
        incomplete = any([isinstance(rec["flags"], dict) and rec["flags"].get("incomplete") is True
                          for rec in records if "flags" in rec])
    except (ValueError, AttributeError, KeyError, TypeError):
        raise _GiveUp() from None
    facts = {"plain": plain, "incomplete": incomplete}
    entry.put("snapshot.facts", facts)
    entry.save()
    return facts


def _packed(entry: Entry) -> PackedIndex | None:
    ids, names = entry.get(PackedIndex.IDS), entry.get(PackedIndex.NAMES)
    if not (type(ids) is bytes and type(names) is bytes and entry.holds_bytes(PackedIndex.OFFSETS)
            and entry.holds_bytes(PackedIndex.RECORDS)):
        products = PackedIndex.pack(records_of(_value(entry)))
        if products is None:
            return None
        for name, value in products.items():
            entry.put(name, value)
        entry.save()
        ids, names = products[PackedIndex.IDS], products[PackedIndex.NAMES]
    return PackedIndex(ids, names, entry.read)


class Snapshot:
    """Raw records as the store would list them; ``ro_layers`` marks layers of read-only stores.

    The ``*_index`` attributes index the primary stores' records (None for kinds not read), as
    the stores index theirs: lookups resolve references by the same rules.  Records are made on
    first use of ``layers``, ``images`` (with ``image_digests``) and ``containers``.
    """

    __slots__ = ("_groups", "_images", "_layers", "additional_stores", "layout", "ro_layers")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # kind -> the primary store's group, then the additional (read-only) stores' groups
        self._groups: dict[str, list[_Group]] = {}
        self._layers: list[Raw] | None = None
        self._images: tuple[list[Raw], list[list[str]]] | None = None
        self.ro_layers: set[str] = set()
        self.additional_stores = False  # read-only stores were merged in (lookups differ per store)

    # -- records ---------------------------------------------------------------------------------
    def _all(self, kind: str) -> list[Raw]:
        out: list[Raw] = []
        for group in self._groups.get(kind, ()):
            out += group.records
        return out

    @property
    def layers(self) -> list[Raw]:
        if self._layers is None:
            self._layers = self._all("layers")
        return self._layers

    @property
    def images(self) -> list[Raw]:
        return self._image_records()[0]

    @property
    def image_users(self) -> list[Raw]:
        """The images as far as the layers listing needs them (which layers they use, their IDs
        and names): without Go's digest fill-in, which only ``images`` and lookups print."""
        return self._images[0] if self._images is not None else self._all("images")

    @property
    def image_digests(self) -> list[list[str]]:
        """Go's Image.Digests, one list per image (which may fill in an image's ``digest``)."""
        return self._image_records()[1]

    def _image_records(self) -> tuple[list[Raw], list[list[str]]]:
        if self._images is None:
            images = self._all("images")
            self._images = (images, [image_digests(image) for image in images])
        return self._images

    @property
    def containers(self) -> list[Raw]:
        return self._all("containers")

    # -- sources, indexes, products ----------------------------------------------------------------
    def _sources(self, kind: str) -> list[Source]:
        return [s for group in self._groups.get(kind, ()) for s in group.sources]

    @property
    def layer_sources(self) -> list[Source]:
        return self._sources("layers")

    @property
    def image_sources(self) -> list[Source]:
        return self._sources("images")

    @property
    def container_sources(self) -> list[Source]:
        return self._sources("containers")

    def _index(self, kind: str) -> Index | None:
        groups = self._groups.get(kind)
        return groups[0].index if groups else None

    @property
    def layer_index(self) -> Index | None:
        return self._index("layers")

    @property
    def image_index(self) -> Index | None:
        return self._index("images")

    @property
    def container_index(self) -> Index | None:
        return self._index("containers")

    def product(self, kind: str, name: str, compute: Callable[[], object]) -> object:
        """``compute()``, kept with the records file when this kind's records are that one file's
        alone (the product must then depend on nothing else: ``compute`` reads them through this
        snapshot)."""
        groups = self._groups.get(kind, [])
        entry = groups[0].single if len(groups) == 1 else None
        if entry is None or entry.path is None:
            return compute()
        value = entry.get("product." + name)
        if value is MISSING:
            value = compute()
            entry.put("product." + name, value)
            entry.save()
        return value

    def layer_dir_empty(self, id: str) -> bool:
        """Whether the layer's directory (vfs: its tree; overlay: its diff) exists and holds
        nothing, so that its diff adds nothing to an image's size (Go computes the size of a
        layer without a recorded one, and an empty one measures 0 with either driver)."""
        layout = self.layout
        if layout.image_store or layout.additional_image_stores:
            return False
        if layout.driver == "vfs":
            path = os.path.join(layout.driver_home, "dir", id)
        elif layout.driver == "overlay":
            path = os.path.join(layout.driver_home, id, "diff")
        else:
            return False
        if "/" in id or id in ("", ".", ".."):
            return False
        try:
            with os.scandir(path) as it:
                return next(it, None) is None
        except OSError:
            return False


def take(graph_root: str, run_root: str, driver: str, *, image_store: str = "", transient: bool = False,
         driver_options: Iterable[str] = (), layers: bool = True, images: bool = True,
         containers: bool = True, lookups: bool = False) -> Snapshot | None:
    """Read the requested kinds of records, or None when the full store must be used instead.

    ``lookups``: the caller looks a few records up, so big files are read through their packed
    indexes instead of being made into records.
    """
    if not (graph_root and run_root and driver) or driver == "overlay2":
        return None
    layout = Layout(os.path.abspath(graph_root), os.path.abspath(run_root), driver,
                    image_store=os.path.abspath(image_store) if image_store else "", transient=transient,
                    additional_image_stores=additional_image_store_dirs(driver_options))
    if not all(os.path.exists(p) for p in (layout.driver_home, layout.storage_lock, layout.mountpoints_lock)):
        return None  # the store creates these
    snap = Snapshot(layout)
    snap.additional_stores = bool(layout.additional_image_stores or layout.image_store)
    try:
        if layers:
            primary = _read(layout, layout.layers(), lookups)
            primary.check(layers=True)
            snap._groups["layers"] = [primary]
            for files in layout.additional_layers():
                group = _read(layout, files, lookups)
                group.check(layers=False)
                snap._groups["layers"].append(group)
                snap.ro_layers.update(rec["id"] for rec in group.records)
        if images:
            groups = []
            for files in [layout.images(), *layout.additional_images()]:
                if files.read_only and not os.path.exists(files.lock):
                    continue  # nothing to read (the store skips it too, or creates an empty one)
                group = _read(layout, files, lookups)
                group.check(layers=False)
                groups.append(group)
            snap._groups["images"] = groups
        if containers:
            group = _read(layout, layout.containers(), lookups)
            group.check(layers=False)
            snap._groups["containers"] = [group]
    except _GiveUp:
        return None
    return snap


def _read(layout: Layout, files: Files, lookups: bool) -> _Group:
    """One store's files, read under its lock as the store reads them (never created here: the
    store does that)."""
    import sys

    paths = files.paths
    try:
        if "containers_storage.lockfile" in sys.modules:
            # A process with lock files open holds one fd per lock file, and closing any other
            # would drop its locks: go through the process's own.
            from .lockfile import get_lock_file

            with get_lock_file(files.lock, files.read_only, create=False).reading():
                datas = read_files(paths)
        else:
            # None open (a one-shot CLI call): a read lock on an fd of our own, closed after,
            # the same fcntl lock without the lock module's import.
            datas = _read_locked(files.lock, paths, files.read_only)
    except OSError:
        raise _GiveUp() from None
    return _Group([Entry(data, cache_file(layout.run_root, path))
                   for path, data in zip(paths, datas, strict=True) if data.strip()], lookups)


def _read_locked(lock: str, paths: list[str], read_only: bool) -> list[bytes]:
    import fcntl

    fd = os.open(lock, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH)  # F_SETLKW, F_RDLCK, the whole file: Go's RLock
                break
            except InterruptedError:
                continue
        return read_files(paths)
    finally:
        os.close(fd)  # drops the lock
