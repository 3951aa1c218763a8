"""A one-shot, read-only look at a store's record files, for callers that list and exit.

Building a ``Store`` costs imports and objects a listing never uses; a command-line ``layers`` on
a big store must beat the Go binary, so this reads ``layers.json``, ``images.json`` and
``containers.json`` (with their volatile and additional-store companions: ``layout``) under the
same read locks and through the same records engine (``recordindex``) as the stores do, and
hands back the raw JSON objects.

It gives up (returns None) whenever the full store might behave differently: a store that does
not exist yet (the store creates it), records a writer must repair (incomplete layers, duplicate
names), or unreadable or malformed files (the store reports those).  Callers then take the
ordinary path.
"""

from __future__ import annotations

import os

from .layout import Files, Layout, additional_image_store_dirs
from .recordindex import RecordIndex, image_digests, read_records

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    Raw = dict[str, Any]  # a record's JSON object
    Source = tuple[bytes, str | None]  # a file's bytes and their gojson.go_form, when known


class _GiveUp(Exception):
    pass


class Snapshot:
    """Raw records as the store would list them; ``ro_layers`` marks layers of read-only stores.

    The ``*_index`` attributes index the primary stores' records (None for kinds not read), as
    the stores index theirs: lookups resolve references by the same rules.
    """

    __slots__ = ("additional_stores", "container_index", "container_sources", "containers",
                 "image_digests", "image_index", "image_sources", "images", "layer_index",
                 "layer_sources", "layers", "ro_layers")

    def __init__(self) -> None:
        # The non-empty files each list came from, so callers can tell when the records are
        # exactly one file's contents (and reuse its bytes).
        self.layer_sources: list[Source] = []
        self.image_sources: list[Source] = []
        self.container_sources: list[Source] = []
        self.layers: list[Raw] = []
        self.ro_layers: set[str] = set()
        self.additional_stores = False  # read-only stores were merged in (lookups differ per store)
        self.images: list[Raw] = []
        self.image_digests: list[list[str]] = []  # Go's Image.Digests, one list per image
        self.containers: list[Raw] = []
        self.layer_index: RecordIndex[Raw] | None = None
        self.image_index: RecordIndex[Raw] | None = None
        self.container_index: RecordIndex[Raw] | None = None


def take(graph_root: str, run_root: str, driver: str, *, image_store: str = "", transient: bool = False,
         driver_options: Iterable[str] = (), layers: bool = True, images: bool = True,
         containers: bool = True) -> Snapshot | None:
    """Read the requested kinds of records, or None when the full store must be used instead."""
    if not (graph_root and run_root and driver) or driver == "overlay2":
        return None
    layout = Layout(os.path.abspath(graph_root), os.path.abspath(run_root), driver,
                    image_store=os.path.abspath(image_store) if image_store else "", transient=transient,
                    additional_image_stores=additional_image_store_dirs(driver_options))
    if not all(os.path.exists(p) for p in (layout.driver_home, layout.storage_lock, layout.mountpoints_lock)):
        return None  # the store creates these
    snap = Snapshot()
    snap.additional_stores = bool(layout.additional_image_stores or layout.image_store)
    try:
        if layers:
            _take_layers(snap, layout)
        if images:
            _take_images(snap, layout)
        if containers:
            snap.container_index = _read(layout, layout.containers(), snap.container_sources)
            snap.containers = snap.container_index.records
    except _GiveUp:
        return None
    return snap


def _read(layout: Layout, files: Files, sources: list[Source]) -> RecordIndex[Raw]:
    """One store's records, read under its lock as the store reads them, and indexed; gives up
    where the store would differ (damage it repairs or refuses, files it reports)."""
    from .lockfile import get_lock_file
    from .recordcache import cache_file, parse

    def parse_cached(data: bytes, path: str) -> object:
        parsed = parse(data, cache_file(layout.run_root, path))
        sources.append((data, parsed.go_form))
        return parsed.value

    try:
        # The process-wide lock (one fd per lock file); never created here: the store does that.
        with get_lock_file(files.lock, files.read_only, create=False).reading():
            index: RecordIndex[Raw] = RecordIndex.load(read_records(files.paths, parse_cached))
    except (OSError, ValueError):
        raise _GiveUp() from None
    if index.damaged or index.irregular:
        raise _GiveUp()  # the store drops the older claim (and saves, if it may)
    return index


def _take_layers(snap: Snapshot, layout: Layout) -> None:
    primary = _read(layout, layout.layers(), snap.layer_sources)
    if any([isinstance(rec["flags"], dict) and rec["flags"].get("incomplete") is True
            for rec in primary.records if "flags" in rec]):
        raise _GiveUp()  # a writer finishes deleting it first
    snap.layer_index = primary
    snap.layers = list(primary.records)
    for files in layout.additional_layers():
        index = _read(layout, files, snap.layer_sources)
        snap.layers += index.records
        snap.ro_layers.update(index.by_id)


def _take_images(snap: Snapshot, layout: Layout) -> None:
    out: list[Raw] = []
    for files in [layout.images(), *layout.additional_images()]:
        if files.read_only and not os.path.exists(files.lock):
            continue  # nothing to read (the store skips it too, or creates an empty one)
        index = _read(layout, files, snap.image_sources)
        if snap.image_index is None:
            snap.image_index = index
        out += index.records
    snap.images = out
    snap.image_digests = [image_digests(image) for image in out]
