"""A one-shot, read-only look at a store's record files, for callers that list and exit.

Building a ``Store`` costs imports and objects a listing never uses; a command-line ``layers`` on
a big store must beat the Go binary, so this reads ``layers.json``, ``images.json`` and
``containers.json`` (with their volatile and additional-store companions) under the same read
locks, in the same order and with the same de-duplication as the stores do, and hands back the
raw JSON objects.

It gives up (returns None) whenever the full store might behave differently: a store that does
not exist yet (the store creates it), records a writer must repair (incomplete layers, duplicate
names), unreadable or malformed files (the store reports those), or lock files this process
already holds through a ``Store``.  Callers then take the ordinary path.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    Raw = dict[str, Any]  # a record's JSON object
    Source = tuple[bytes, str | None]  # a file's bytes and their gojson.go_form, when known



def additional_image_store_dirs(driver_options: Iterable[str]) -> list[str]:
    """``<driver>.imagestore=a,b`` options name read-only stores (Go's AdditionalImageStores)."""
    dirs: list[str] = []
    for opt in driver_options:
        key, sep, value = opt.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        if key.endswith(".imagestore") or key.endswith(".additionalimagestore") or key == "imagestore":
            dirs.extend(v for v in value.split(",") if v)
    return dirs


class _GiveUp(Exception):
    pass


class Snapshot:
    """Raw records as the store would list them; ``ro_layers`` marks layers of read-only stores."""

    __slots__ = ("additional_stores", "container_sources", "containers", "image_digests", "image_sources",
                 "images", "layer_sources", "layers", "ro_layers")

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


def _loads(run_root: str, paths: list[str], chunks: list[bytes], sources: list[Source]) -> list[list[Raw]]:
    """Each file's records (through the run root's parse cache); non-empty files join ``sources``."""
    from .recordcache import cache_file, parse

    out: list[list[Raw]] = []
    for path, data in zip(paths, chunks, strict=True):
        if not data.strip():
            out.append([])
            continue
        try:
            parsed = parse(data, cache_file(run_root, path))
        except ValueError:
            raise _GiveUp() from None
        value = parsed.value
        if value is None:
            value = []
        if not isinstance(value, list):
            raise _GiveUp()
        out.append(value)
        sources.append((data, parsed.go_form))
    return out


def _held_in_process(path: str) -> bool:
    lockfile = sys.modules.get("containers_storage.lockfile")
    registry = getattr(lockfile, "_registry", None)
    return bool(registry) and os.path.abspath(path) in registry  # type: ignore[operator]


def _read_locked(lock_path: str, paths: list[str], read_only: bool) -> list[bytes]:
    """The files' bytes, read while holding a shared POSIX lock on ``lock_path``."""
    import fcntl

    if _held_in_process(lock_path):
        raise _GiveUp()
    try:
        fd = os.open(lock_path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    except OSError:
        raise _GiveUp() from None
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH, 0, 0, os.SEEK_SET)
                break
            except InterruptedError:
                continue
        out: list[bytes] = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    out.append(f.read())
            except FileNotFoundError:
                out.append(b"")
            except OSError:
                raise _GiveUp() from None
        return out
    finally:
        os.close(fd)  # closing our only fd of the file drops the lock


def _merge(lists: list[list[Raw]]) -> list[Raw]:
    """Records of all files in order, the first of duplicated IDs winning; names must be unique."""
    try:
        if len(lists) == 1 or all(not records for records in lists[1:]):
            out = lists[0]
            ids = [rec["id"] for rec in out]
            if len(set(ids)) != len(ids):
                raise _GiveUp()  # duplicates inside one file: leave the subtleties to the store
        else:
            seen: set[str] = set()
            out = []
            for records in lists:
                for rec in records:
                    rid = rec["id"]
                    if rid not in seen:
                        seen.add(rid)
                        out.append(rec)
            ids = list(seen)
        if not all(isinstance(rid, str) for rid in ids):
            raise _GiveUp()
        names = [name for rec in out if "names" in rec for name in rec["names"] or ()]
    except (KeyError, TypeError, AttributeError):
        raise _GiveUp() from None
    if len(set(names)) != len(names):
        raise _GiveUp()  # the store drops the older claim (and saves, if it may)
    return out


def take(graph_root: str, run_root: str, driver: str, *, image_store: str = "", transient: bool = False,
         driver_options: Iterable[str] = (), layers: bool = True, images: bool = True,
         containers: bool = True) -> Snapshot | None:
    """Read the requested kinds of records, or None when the full store must be used instead."""
    if not (graph_root and run_root and driver) or driver == "overlay2":
        return None
    graph_root = os.path.abspath(graph_root)
    run_root = os.path.abspath(run_root)
    image_store = os.path.abspath(image_store) if image_store else ""
    needed = [os.path.join(graph_root, driver), os.path.join(graph_root, "storage.lock"),
              os.path.join(run_root, driver + "-layers", "mountpoints.lock")]
    if not all(os.path.exists(p) for p in needed):
        return None  # the store creates these
    extra = additional_image_store_dirs(driver_options)
    snap = Snapshot()
    snap.additional_stores = bool(extra or image_store)
    try:
        if layers:
            _take_layers(snap, graph_root, run_root, driver, image_store, transient, extra)
        if images:
            _take_images(snap, graph_root, run_root, driver, image_store, extra)
        if containers:
            _take_containers(snap, graph_root, run_root, driver, transient)
    except _GiveUp:
        return None
    return snap


def _take_layers(snap: Snapshot, graph_root: str, run_root: str, driver: str, image_store: str,
                 transient: bool, extra: list[str]) -> None:
    layerdir = os.path.join(graph_root, driver + "-layers")
    paths = [os.path.join(layerdir, "layers.json")]
    if image_store:
        paths.append(os.path.join(image_store, driver + "-layers", "layers.json"))
    volatile_dir = os.path.join(run_root, driver + "-layers") if transient else layerdir
    paths.append(os.path.join(volatile_dir, "volatile-layers.json"))
    chunks = _read_locked(os.path.join(layerdir, "layers.lock"), paths, False)
    primary = _merge(_loads(run_root, paths, chunks, snap.layer_sources))
    if any(isinstance(rec["flags"], dict) and rec["flags"].get("incomplete") is True
           for rec in primary if "flags" in rec):
        raise _GiveUp()  # a writer finishes deleting it first
    snap.layers = primary
    for directory in extra:
        ro_dir = os.path.join(directory, driver + "-layers")
        ro_paths = [os.path.join(ro_dir, "layers.json"), os.path.join(ro_dir, "volatile-layers.json")]
        chunks = _read_locked(os.path.join(ro_dir, "layers.lock"), ro_paths, True)
        records = _merge(_loads(run_root, ro_paths, chunks, snap.layer_sources))
        snap.layers.extend(records)
        snap.ro_layers.update(r["id"] for r in records)


def _take_images(snap: Snapshot, graph_root: str, run_root: str, driver: str, image_store: str,
                 extra: list[str]) -> None:
    stores = [(os.path.join(image_store or graph_root, driver + "-images"), False)]
    ro_dirs = ([graph_root] if image_store else []) + extra
    stores += [(os.path.join(d, driver + "-images"), True) for d in ro_dirs]
    out: list[Raw] = []
    for directory, read_only in stores:
        lock = os.path.join(directory, "images.lock")
        if read_only and not os.path.exists(lock):
            continue
        paths = [os.path.join(directory, "images.json")]
        data = _read_locked(lock, paths, read_only)
        out.extend(_merge(_loads(run_root, paths, data, snap.image_sources)))
    snap.images = out
    snap.image_digests = [image_digests(image) for image in out]


def image_digests(image: Raw) -> list[str]:
    """Go's Image.Digests: the fixed digest, then manifest digests; sets "digest" when empty."""
    seen: list[str] = []
    fixed = image.get("digest") or ""
    if fixed:
        seen.append(fixed)
    for key, value in (image.get("big-data-digests") or {}).items():
        if key.startswith("manifest") and value and value not in seen:
            seen.append(value)
    if not fixed and seen:
        image["digest"] = seen[0]
    return seen


def _take_containers(snap: Snapshot, graph_root: str, run_root: str, driver: str, transient: bool) -> None:
    directory = os.path.join(graph_root, driver + "-containers")
    volatile_dir = os.path.join(run_root, driver + "-containers") if transient else directory
    paths = [os.path.join(directory, "containers.json"),
             os.path.join(volatile_dir, "volatile-containers.json")]
    data = _read_locked(os.path.join(volatile_dir, "containers.lock"), paths, False)
    snap.containers = _merge(_loads(run_root, paths, data, snap.container_sources))


def lookup(records: list[Raw], ref: str) -> Raw | None:
    """A record of one store by ID, then name, then unique ID prefix (the stores' lookup order)."""
    for rec in records:
        if rec["id"] == ref:
            return rec
    for rec in records:
        if ref in (rec.get("names") or ()):
            return rec
    if not ref or " " in ref:
        return None
    found = [rec for rec in records if rec["id"].startswith(ref)]
    return found[0] if len(found) == 1 else None
