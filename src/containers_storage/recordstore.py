"""What the layer, image and container stores share: records files under one lock, big data.

A store is its records files (``layout.Files``) guarded by one lock file, reloaded through the
records engine (``recordindex``) whenever another process recorded a write, with unique names and
per-record data directories holding big data files.  ``RecordStore`` reads (the read-only stores
are exactly this); ``RWRecordStore`` adds saving, names, metadata, flags, big data and deletion.
"""

from __future__ import annotations

import _thread
import os

from . import TYPE_CHECKING, errors
from .ctx import contextmanager
from .fsutil import atomic_write, move_file, rmtree
from .layout import STABLE, VOLATILE, Files
from .lockfile import LockFile
from .recordindex import RecordIndex, read_records
from .records import Record, apply_name_operation, dedupe, dumps_records, reassign_names

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any, Generic, Self, TypeVar

    R = TypeVar("R", bound=Record)
else:
    from .recordindex import Generic

    R = Record

ALL_LOCATIONS = -1  # every records file of the store


def sha256_digest(data: bytes) -> str:
    import hashlib  # only big data writes need it; OpenSSL's import is slow

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _parse(data: bytes, path: str) -> object:
    from .gojson import loads

    return loads(data)


class NeedsWriteLock(Exception):
    """A load found damage (lost names, incomplete layers) that only a writer may repair."""


class RecordStore(Generic[R]):
    """A read-only view of one store's records files; subclasses add kind-specific behaviour."""

    unknown_error: type[errors.NotKnown] = errors.NotKnown
    duplicate_names_error: type[errors.StorageError] = errors.DuplicateImageNames
    kind = "record"

    def __init__(self, files: Files, lock: LockFile) -> None:
        self.files = files
        self.dir = files.directory
        self.lock = lock
        self._last_write: bytes | None = None
        self._reload_mutex = _thread.allocate_lock()
        self._index: RecordIndex[R] = RecordIndex()

    @property
    def read_write(self) -> bool:
        return False

    # -- the index -----------------------------------------------------------------------------
    @property
    def records(self) -> list[R]:
        return self._index.records

    @property
    def by_id(self) -> dict[str, R]:
        return self._index.by_id

    @property
    def by_name(self) -> dict[str, R]:
        return self._index.by_name

    # -- loading -------------------------------------------------------------------------------
    def _make(self, obj: dict[str, Any], location: int) -> R:
        raise NotImplementedError

    def _load(self, locked_for_writing: bool) -> None:
        """Read every records file and index them; damage is repaired by a writer only."""
        try:
            files = read_records(self.files.paths, _parse)
            index: RecordIndex[R] = RecordIndex.load(files, self._make, [loc for loc, _ in self.files.json])
        except ValueError as e:
            raise errors.LoadError(str(e)) from None
        damaged = index.damaged or self._needs_repair(index.records)
        if damaged:
            if not self.read_write:
                raise self.duplicate_names_error()
            if not locked_for_writing:
                raise NeedsWriteLock()
        self._index = index
        self._loaded()
        if damaged:
            self._repair()

    def _needs_repair(self, records: list[R]) -> bool:
        """Whether records other than lost names need a writer (layers: incomplete ones)."""
        return False

    def _loaded(self) -> None:
        """Rebuild whatever a kind derives from its records."""

    def _repair(self) -> None:
        raise NotImplementedError

    def _modified(self) -> tuple[bytes, bool]:
        current, changed = self.lock.modified_since(self._last_write or b"")
        return current, changed or self._last_write is None

    def _reload_if_changed(self, locked_for_writing: bool) -> None:
        with self._reload_mutex:
            current, changed = self._modified()
            if changed:
                self._load(locked_for_writing)
                self._last_write = current

    def _before_write_lock(self) -> None:
        """What must be held before this store's write lock (layers: the driver, storage.lock)."""

    @contextmanager
    def reading(self) -> Iterator[Self]:
        """Hold the store's shared lock with fresh records (a writer may repair them first)."""
        self.lock.rlock()
        try:
            for _ in range(4):
                try:
                    self._reload_if_changed(self.lock.locked_for_writing)
                    break
                except NeedsWriteLock:
                    self.lock.unlock()
                    try:
                        self._before_write_lock()
                        with self.lock.writing():
                            self._reload_if_changed(True)
                    finally:
                        self.lock.rlock()
            yield self
        finally:
            self.lock.unlock()

    # -- lookups -------------------------------------------------------------------------------
    def lookup(self, ref: str) -> R | None:
        return self._index.lookup(ref)

    def get(self, ref: str) -> R:
        rec = self._index.lookup(ref)
        if rec is None:
            raise self._unknown(ref)
        return rec

    def _find(self, ref: str, purpose: str) -> R:
        """``get`` for big data operations, whose errors Go words per kind and purpose."""
        rec = self._index.lookup(ref)
        if rec is None:
            raise self._unknown(ref, purpose)
        return rec

    def _unknown(self, ref: str, purpose: str = "") -> errors.StorageError:
        """The error for an unknown ``ref``; ``purpose`` is "" (get), or "read", "write" or
        "names" for big data."""
        return self.unknown_error(ref=ref)

    def exists(self, ref: str) -> bool:
        return self._index.lookup(ref) is not None

    def metadata(self, ref: str) -> str:
        return self.get(ref).metadata

    # -- big data ------------------------------------------------------------------------------
    def data_dir(self, id: str) -> str:
        return self.files.data_dir(id)

    def big_data_path(self, id: str, key: str) -> str:
        return self.files.big_data_path(id, key)

    def big_data(self, ref: str, key: str) -> bytes:
        if not key:
            raise errors.InvalidBigDataName.after(
                f"can't retrieve {self.kind} big data value for empty name")
        rec = self._find(ref, "read")
        with open(self.big_data_path(rec.id, key), "rb") as f:
            return f.read()

    def big_data_size(self, ref: str, key: str) -> int:
        rec, size = self._recorded(ref, key, "big-data-sizes",
                                   f"can't retrieve size of {self.kind} big data with empty name")
        if size is not None:
            return int(size)
        try:  # not recorded: Go measures the item
            return len(self.big_data(rec.id, key))
        except OSError:
            raise errors.SizeUnknown() from None

    def big_data_digest(self, ref: str, key: str) -> str:
        _, digest = self._recorded(ref, key, "big-data-digests",
                                   f"can't retrieve digest of {self.kind} big data value with empty name")
        if digest is None:
            raise errors.DigestUnknown()
        return str(digest)

    def _recorded(self, ref: str, key: str, field: str, empty_key: str) -> tuple[R, Any]:
        """The record and what its ``field`` map records for ``key`` (None if nothing)."""
        if not key:
            raise errors.InvalidBigDataName.after(empty_key)
        rec = self.get(ref)
        return rec, (rec.raw.get(field) or {}).get(key)

    def big_data_names(self, ref: str) -> list[str]:
        return self._find(ref, "names").big_data_names


class RWRecordStore(RecordStore[R]):
    """The writable flavour: saving, names, metadata, flags, big data, deletion."""

    @property
    def read_write(self) -> bool:
        return True

    @contextmanager
    def writing(self) -> Iterator[Self]:
        self._before_write_lock()
        with self.lock.writing():
            self._reload_if_changed(True)
            yield self

    def _repair(self) -> None:
        self.save()

    # -- saving --------------------------------------------------------------------------------
    def _location_of(self, rec: R) -> int:
        return STABLE

    def save(self, locations: int = ALL_LOCATIONS) -> None:
        """Write the records files of ``locations`` (bits; all of them by default)."""
        self._write_records(locations)

    def _write_records(self, locations: int) -> None:
        self._last_write = self.lock.record_write()
        for location, path in self.files.json:
            if not locations & location:
                continue
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            data = dumps_records(r for r in self.records if self._location_of(r) == location)
            atomic_write(path, data, sync=location != VOLATILE)
            self._saved(location, path)

    def _saved(self, location: int, path: str) -> None:
        """A records file was just written."""

    def save_for(self, *recs: R) -> None:
        """Save the files holding ``recs``."""
        locations = 0
        for rec in recs:
            locations |= self._location_of(rec)
        self.save(locations)

    # -- records -------------------------------------------------------------------------------
    def _check_new(self, id: str, names: list[str]) -> tuple[str, list[str]]:
        """The new record's ID (a fresh one for "") and de-duplicated names, or Go's refusal."""
        from .ids import unused_id

        if not id:
            id = unused_id(self.by_id)
        if id in self.by_id:
            raise self._duplicate_id(id)
        names = dedupe(names)
        for name in names:
            other = self.by_name.get(name)
            if other is not None:
                raise self._duplicate_name(name, other)
        return id, names

    def _duplicate_id(self, id: str) -> errors.StorageError:
        return errors.DuplicateID()

    def _duplicate_name(self, name: str, holder: R) -> errors.StorageError:
        return errors.DuplicateName()

    def _add_new(self, rec: R, big_data: Iterable[tuple[str, bytes, str]]) -> None:
        """Add a new record and save it, then store its big data items (key, data, digest);
        a failure on the way deletes it again."""
        self._add(rec)
        try:
            self.save_for(rec)
            for key, value, digest in big_data:
                self._set_big_data(rec, key, value, digest)
        except BaseException:
            try:
                self.delete(rec.id)
            except Exception:
                pass
            raise

    def _set_big_data(self, rec: R, key: str, data: bytes, digest: str) -> None:
        raise NotImplementedError

    def _add(self, rec: R) -> None:
        self._index.add(rec, rec.id, rec.names)

    def _remove(self, rec: R) -> None:
        self._index.remove(rec, rec.id, rec.names)

    def update_names(self, ref: str, names: list[str], op: str) -> None:
        rec = self.get(ref)
        new_names = apply_name_operation(rec.names, names, op)
        self._names_changing(rec, new_names)
        losers = reassign_names(rec, new_names, self.by_name)
        self.save_for(rec, *losers)

    def _names_changing(self, rec: R, new_names: list[str]) -> None:
        """Before ``rec`` gets ``new_names`` (images keep a history of them)."""

    def set_metadata(self, ref: str, metadata: str) -> None:
        rec = self.get(ref)
        rec.metadata = metadata
        self.save_for(rec)

    def set_flag(self, ref: str, flag: str, value: object) -> None:
        rec = self.get(ref)
        rec.flags[flag] = value
        self.save_for(rec)

    def clear_flag(self, ref: str, flag: str) -> None:
        rec = self.get(ref)
        rec.flags.pop(flag, None)
        self.save_for(rec)

    def _write_big_data(self, rec: R, key: str, data: bytes) -> None:
        atomic_write(self._big_data_target(rec, key), data)

    def _move_in_big_data(self, rec: R, key: str, path: str) -> None:
        """Make the file ``path`` (written and synced already) big data item ``key`` of ``rec``."""
        move_file(path, self._big_data_target(rec, key))

    def _big_data_target(self, rec: R, key: str) -> str:
        """Where ``rec``'s item ``key`` goes, its directory made."""
        if not key:
            raise errors.InvalidBigDataName.after(f"can't set empty name for {self.kind} big data item")
        os.makedirs(self.data_dir(rec.id), mode=0o700, exist_ok=True)
        return self.big_data_path(rec.id, key)

    def delete(self, ref: str) -> None:
        rec = self.get(ref)
        self._remove(rec)
        self.save_for(rec)
        rmtree(self.data_dir(rec.id), ignore_errors=True)

    def wipe(self) -> None:
        """Delete every record with one save (Go saves once per record; the result is the same)."""
        doomed = list(self.records)
        for rec in doomed:
            self._remove(rec)
        self.save()
        for rec in doomed:
            rmtree(self.data_dir(rec.id), ignore_errors=True)
