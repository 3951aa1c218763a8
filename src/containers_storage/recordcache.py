"""Parsed records files kept in the run root, so listing a big store does not re-parse its JSON.

A one-shot ``layers --json`` on 1,000 layers spends more time in the JSON scanner (~4-5 ms) than
anywhere else but interpreter start-up; ``marshal`` reads the same objects back in about half
that.  Each cache file holds the exact bytes it was parsed from and is used only when they equal
the file just read under the store's lock: no clock, inode or checksum heuristics, so a stale,
torn or foreign cache file can cost time but never change an answer.

Besides the parse, an entry keeps *products*: values derived from those bytes alone, each stored
in its own section and read only when asked for (``Entry.get``), so that a command reads what it
needs of a big file's entry and nothing else.  The fast path (``snapshot``) keeps there whether the
bytes are already Go's encoding (``gojson.go_form``), whether the records are plain (unique IDs
and names, nothing incomplete), the packed index its one-shot lookups read one record through,
and what a listing prints.  A product is a pure function of the bytes, which is what makes
keeping it next to them safe.

Only the read-only fast path uses it; the stores parse their files themselves.  Go's tools ignore
the directory, and deleting it at any time is harmless.
"""

from __future__ import annotations

import marshal
import os

from .layout import RECORDS_CACHE

CACHE_DIR = RECORDS_CACHE

MIN_SIZE = 64 * 1024  # below this the scanner is faster than reading a second file
_MAGIC = b"containers-storage-py parsed records 2\n"
_HEADER = len(_MAGIC) + 8
_FORMS = ("go", "escape", "other")


class _Missing:
    """The value of a product an entry does not hold."""


MISSING = _Missing()


class Entry:
    """One records file's bytes, their parse and products: what the cache file holds is read on
    first use, what is computed is added with ``put`` and written back by ``save``.

    File layout: magic, the source's length (8 bytes), the source's bytes, where the table starts
    (8 bytes), each product's marshal (in name order), then the table (marshal: product name ->
    (offset, length)) up to the end of the file.
    """

    __slots__ = ("_fd", "_new", "_raw", "_table", "_values", "data", "path")

    def __init__(self, data: bytes, path: str | None) -> None:
        self.data = data
        self.path = path if path is not None and len(data) >= MIN_SIZE else None
        self._fd = -1
        self._table: dict[str, tuple[int, int]] = {}
        self._raw: dict[str, bytes] = {}  # sections as stored (read, or dumped for a new product)
        self._values: dict[str, object] = {}
        self._new = False
        if self.path is not None:
            self._open(self.path)

    # -- reading -----------------------------------------------------------------------------
    def _open(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            start = _HEADER + len(self.data)
            if st.st_uid != os.geteuid() or st.st_size < start + 8:
                raise ValueError
            head = os.pread(fd, start + 8, 0)
            if (not head.startswith(_MAGIC)
                    or int.from_bytes(head[len(_MAGIC):_HEADER], "big") != len(self.data)
                    or not head.startswith(self.data, _HEADER)):  # a memcmp, in C
                raise ValueError
            at = int.from_bytes(head[start:], "big")
            if not start + 8 <= at < st.st_size:
                raise ValueError
            table = marshal.loads(os.pread(fd, st.st_size - at, at))
            if type(table) is not dict:
                raise ValueError
            for name, (offset, length) in table.items():
                if type(name) is not str or not (start + 8 <= offset and offset + length <= at):
                    raise ValueError
        except (OSError, ValueError, EOFError, TypeError):
            os.close(fd)
            return
        self._fd = fd
        self._table = table

    def get(self, name: str) -> object:
        """The product ``name``, or MISSING."""
        try:
            return self._values[name]
        except KeyError:
            pass
        where = self._table.get(name)
        if where is None:
            return MISSING
        try:
            raw = os.pread(self._fd, where[1], where[0])
            value = marshal.loads(raw)
        except (OSError, ValueError, EOFError, TypeError):
            del self._table[name]
            return MISSING
        self._raw[name] = raw
        self._values[name] = value
        return value

    def read(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``start:end`` of the stored product ``name`` (a bytes value): a part of a big one
        without reading the rest.  ValueError when the entry does not hold it as stored."""
        if name in self._values:
            value = self._values[name]
            if type(value) is not bytes:
                raise ValueError(name)
            return value[start:end]
        where = self._table.get(name)
        if where is None:
            raise ValueError(name)
        # marshal's bytes: a type byte, a 4-byte length, then the bytes themselves.
        offset, length = where[0] + 5, where[1] - 5
        if not 0 <= start <= end <= length:
            raise ValueError(name)
        data = os.pread(self._fd, end - start, offset + start)
        if len(data) != end - start:
            raise ValueError(name)
        return data

    def holds_bytes(self, name: str) -> bool:
        """Whether the stored product ``name`` is a bytes value (then ``read`` can take parts)."""
        if name in self._values:
            return type(self._values[name]) is bytes
        where = self._table.get(name)
        if where is None or where[1] < 5:
            return False
        try:
            head = os.pread(self._fd, 5, where[0])
        except OSError:
            return False
        return (len(head) == 5 and head[0] & 0x7F == ord("s")
                and int.from_bytes(head[1:], "little") == where[1] - 5)

    @property
    def go_form(self) -> str | None:
        """``gojson.go_form`` of the bytes; None when not scanned (files too small to cache)."""
        form = self.get("form")
        return form if isinstance(form, str) and form in _FORMS else None

    def value(self) -> object:
        """The parsed file (ValueError when it is not JSON)."""
        value = self.get("value")
        if value is not MISSING and (self.path is None or self.get("form") in _FORMS):
            return value
        from .gojson import go_form, loads

        value = loads(self.data)
        self.put("value", value)
        if self.path is not None:
            self.put("form", go_form(self.data))
        return value

    # -- writing -----------------------------------------------------------------------------
    def put(self, name: str, value: object) -> None:
        """Add (or replace) a product; cacheable entries keep it at ``save``."""
        self._values[name] = value
        self._raw.pop(name, None)
        if self.path is not None:
            self._new = True

    def save(self) -> None:
        """Write the entry back if products were added.  Best effort: a read-only or full run root
        just means the next call computes them again."""
        if not self._new or self.path is None:
            return
        self._new = False
        sections: dict[str, bytes] = {}
        try:
            for name in sorted(set(self._table) | set(self._values)):
                raw = self._raw.get(name)
                if raw is None and name in self._values:
                    raw = self._raw[name] = marshal.dumps(self._values[name])  # type: ignore[arg-type]
                if raw is None:
                    offset, length = self._table[name]
                    raw = os.pread(self._fd, length, offset)
                sections[name] = raw
        except (OSError, ValueError):
            return
        offset = _HEADER + len(self.data) + 8
        table: dict[str, tuple[int, int]] = {}
        for name, raw in sections.items():
            table[name] = (offset, len(raw))
            offset += len(raw)
        blob = b"".join((_MAGIC, len(self.data).to_bytes(8, "big"), self.data, offset.to_bytes(8, "big"),
                         *sections.values(), marshal.dumps(table)))
        from .fsutil import atomic_write

        try:
            try:
                atomic_write(self.path, blob, sync=False)
            except FileNotFoundError:
                os.mkdir(os.path.dirname(self.path), 0o700)
                atomic_write(self.path, blob, sync=False)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


class Parsed:
    """A records file's parsed value, and how its bytes relate to Go's encoding of it."""

    __slots__ = ("go_form", "value")

    def __init__(self, value: object, go_form: str | None) -> None:
        self.value = value
        self.go_form = go_form  # gojson.go_form of the bytes; None when not scanned (small files)


def cache_file(run_root: str, source: str) -> str | None:
    """Where the parse of ``source`` is kept: one file per source, named after its whole path."""
    name = source.replace("%", "%25").replace("/", "%2F")
    if len(name) > 240:
        return None  # past NAME_MAX: such stores simply go uncached
    return os.path.join(run_root, CACHE_DIR, name)


def parse(data: bytes, cached: str | None) -> Parsed:
    """``data`` parsed (ValueError when it is not JSON), through the cache file when it matches."""
    entry = Entry(data, cached)
    try:
        value = entry.value()
        entry.save()
        return Parsed(value, entry.go_form)
    finally:
        entry.close()
