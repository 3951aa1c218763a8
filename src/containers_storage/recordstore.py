"""What the image and container stores share: one JSON file of records, names, big data items.

Both are a list of records guarded by one lock file, reloaded when another process recorded a
write, with unique names and per-record data directories holding big data files.
"""

from __future__ import annotations

import _thread
import os

from . import errors
from .ctx import contextmanager
from .fsutil import atomic_write, read_optional, rmtree
from .ids import PrefixIndex
from .lockfile import LockFile
from .records import Record, big_data_file_name, dumps_records, loads_array

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Generic, TypeVar

    R = TypeVar("R", bound=Record)
else:
    class Generic:
        """typing.Generic's run-time part: ``RecordStore[Image]`` is ``RecordStore``."""

        def __class_getitem__(cls, item: object) -> type:
            return cls

    R = Record


def sha256_digest(data: bytes) -> str:
    import hashlib  # only big data writes need it; OpenSSL's import is slow

    return "sha256:" + hashlib.sha256(data).hexdigest()


class RecordStore(Generic[R]):
    """A read-only view of one records file; subclasses add kind-specific behaviour."""

    unknown_error: type[errors.NotKnown] = errors.NotKnown
    kind = "record"

    def __init__(self, directory: str, lock: LockFile, json_paths: list[str]) -> None:
        self.dir = directory
        self.lock = lock
        self.json_paths = json_paths
        self._last_write: bytes | None = None
        self._reload_mutex = _thread.allocate_lock()
        self.records: list[R] = []
        self.by_id: dict[str, R] = {}
        self.by_name: dict[str, R] = {}
        self._prefix = PrefixIndex()

    @property
    def read_write(self) -> bool:
        return False

    def _make(self, obj: dict[str, object], location: int) -> R:
        raise NotImplementedError

    def _index(self) -> bool:
        """Rebuild indexes; True when duplicate names had to be dropped (a save is due)."""
        names: dict[str, R] = {}
        damaged = False
        for rec in self.records:
            rec_names = rec.raw.get("names")
            if not rec_names:
                continue
            for name in rec_names:
                conflict = names.get(name)
                if conflict is not None and conflict is not rec:
                    conflict.names = [n for n in conflict.names if n != name]
                    damaged = True
                names[name] = rec
        self.by_id = {r.raw["id"]: r for r in self.records}
        self.by_name = names
        self._prefix = PrefixIndex(self.by_id)
        return damaged

    def _load(self, locked_for_writing: bool) -> bool:
        records: list[R] = []
        seen: set[str] = set()
        for location, path in enumerate(self.json_paths):
            data = read_optional(path)
            try:
                objs = loads_array(data, path)
            except ValueError as e:
                raise errors.LoadError(f'loading "{path}": {e}') from None
            make = self._make
            for obj in objs:
                id = str(obj.get("id") or "")
                if id in seen:
                    continue
                seen.add(id)
                records.append(make(obj, location))
        self.records = records
        return self._index()

    def _reload_if_changed(self, locked_for_writing: bool) -> None:
        with self._reload_mutex:
            current, changed = self.lock.modified_since(self._last_write or b"")
            if changed or self._last_write is None:
                damaged = self._load(locked_for_writing)
                self._last_write = current
                if damaged:
                    self._on_damage(locked_for_writing)

    def _on_damage(self, locked_for_writing: bool) -> None:
        if not self.read_write:
            raise errors.DuplicateImageNames()

    @contextmanager
    def reading(self) -> Iterator[RecordStore[R]]:
        with self.lock.reading():
            self._reload_if_changed(self.lock.locked_for_writing)
            yield self

    def lookup(self, ref: str) -> R | None:
        rec = self.by_id.get(ref) or self.by_name.get(ref)
        if rec is None:
            full = self._prefix.get(ref)
            if full is not None:
                rec = self.by_id.get(full)
        return rec

    def get(self, ref: str) -> R:
        rec = self.lookup(ref)
        if rec is None:
            raise self._unknown(ref)
        return rec

    def _unknown(self, ref: str) -> errors.StorageError:
        return self.unknown_error(ref=ref)

    def exists(self, ref: str) -> bool:
        return self.lookup(ref) is not None

    def data_dir(self, id: str) -> str:
        return os.path.join(self.dir, id)

    def big_data_path(self, id: str, key: str) -> str:
        return os.path.join(self.data_dir(id), big_data_file_name(key))

    def big_data(self, ref: str, key: str) -> bytes:
        if not key:
            raise errors.InvalidBigDataName.after(
                f"can't retrieve {self.kind} big data value for empty name")
        rec = self.get(ref)
        with open(self.big_data_path(rec.id, key), "rb") as f:
            return f.read()

    def big_data_size(self, ref: str, key: str) -> int:
        if not key:
            raise errors.InvalidBigDataName.after(
                f"can't retrieve size of {self.kind} big data with empty name")
        rec = self.get(ref)
        sizes = rec.raw.get("big-data-sizes") or {}
        if key in sizes:
            return int(sizes[key])
        try:
            return len(self.big_data(rec.id, key))
        except OSError:
            raise errors.SizeUnknown() from None

    def big_data_digest(self, ref: str, key: str) -> str:
        if not key:
            raise errors.InvalidBigDataName.after(
                f"can't retrieve digest of {self.kind} big data value with empty name")
        rec = self.get(ref)
        digests = rec.raw.get("big-data-digests") or {}
        if key in digests:
            return str(digests[key])
        raise errors.DigestUnknown()

    def big_data_names(self, ref: str) -> list[str]:
        return self.get(ref).big_data_names

    def metadata(self, ref: str) -> str:
        return self.get(ref).metadata


class RWRecordStore(RecordStore[R]):
    """The writable flavour: saving, names, metadata, big data, deletion."""

    @property
    def read_write(self) -> bool:
        return True

    def _on_damage(self, locked_for_writing: bool) -> None:
        if locked_for_writing:
            self.save()

    @contextmanager
    def writing(self) -> Iterator[RWRecordStore[R]]:
        with self.lock.writing():
            self._reload_if_changed(True)
            yield self

    def _location_of(self, rec: R) -> int:
        return 0

    def save(self, locations: set[int] | None = None) -> None:
        self._last_write = self.lock.record_write()
        for location, path in enumerate(self.json_paths):
            if locations is not None and location not in locations:
                continue
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            data = dumps_records(r for r in self.records if self._location_of(r) == location)
            atomic_write(path, data, sync=location == 0)

    def save_for(self, rec: R) -> None:
        self.save({self._location_of(rec)})

    def _add(self, rec: R) -> None:
        self.records.append(rec)
        self.by_id[rec.id] = rec
        self._prefix.add(rec.id)
        for name in rec.names:
            self.by_name[name] = rec

    def _remove(self, rec: R) -> None:
        self.records = [r for r in self.records if r is not rec]
        self.by_id.pop(rec.id, None)
        self._prefix.discard(rec.id)
        for name in rec.names:
            if self.by_name.get(name) is rec:
                del self.by_name[name]

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
        if not key:
            raise errors.InvalidBigDataName.after(f"can't set empty name for {self.kind} big data item")
        os.makedirs(self.data_dir(rec.id), mode=0o700, exist_ok=True)
        atomic_write(self.big_data_path(rec.id, key), data)

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
