"""Parsed records files kept in the run root, so listing a big store does not re-parse its JSON.

A one-shot ``layers --json`` on 1,000 layers spends more time in the JSON scanner (~4-5 ms) than
anywhere else but interpreter start-up; ``marshal`` reads the same objects back in about half
that.  Each cache file holds the exact bytes it was parsed from and is used only when they equal
the file just read under the store's lock: no clock, inode or checksum heuristics, so a stale,
torn or foreign cache file can cost time but never change an answer.  It also keeps what the
listing would otherwise find out by scanning the bytes again (whether they are already Go's
encoding, see ``gojson.go_form``).

Only the read-only fast path (``snapshot``) uses it; the stores parse their files themselves.
Go's tools ignore the directory, and deleting it at any time is harmless.
"""

from __future__ import annotations

import marshal
import os

from .layout import RECORDS_CACHE

CACHE_DIR = RECORDS_CACHE

MIN_SIZE = 64 * 1024  # below this the scanner is faster than reading a second file
_MAGIC = b"containers-storage-py parsed records 1\n"
_HEADER = len(_MAGIC) + 8
_FORMS = ("go", "escape", "other")


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
    if cached is None or len(data) < MIN_SIZE:
        from .gojson import loads

        return Parsed(loads(data), None)
    hit = _load(cached, data)
    if hit is not None:
        return hit
    from .gojson import go_form, loads

    parsed = Parsed(loads(data), go_form(data))
    _store(cached, data, parsed)
    return parsed


def _load(path: str, data: bytes) -> Parsed | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_size <= _HEADER + len(data):
            return None
        with open(fd, "rb", closefd=False) as f:
            blob = f.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    if not blob.startswith(_MAGIC) or int.from_bytes(blob[len(_MAGIC):_HEADER], "big") != len(data):
        return None
    if not blob.startswith(data, _HEADER):  # a memcmp; comparing memoryviews goes item by item
        return None
    try:
        form, value = marshal.loads(memoryview(blob)[_HEADER + len(data):])
    except (EOFError, ValueError, TypeError):
        return None
    if form not in _FORMS:
        return None
    return Parsed(value, form)


def _store(path: str, data: bytes, parsed: Parsed) -> None:
    """Best effort: a read-only or full run root just means the next call parses again."""
    from .fsutil import atomic_write

    try:
        payload = marshal.dumps((parsed.go_form, parsed.value))  # type: ignore[arg-type]  # JSON values
    except ValueError:
        return
    blob = b"".join((_MAGIC, len(data).to_bytes(8, "big"), data, payload))
    try:
        try:
            atomic_write(path, blob, sync=False)
        except FileNotFoundError:
            os.mkdir(os.path.dirname(path), 0o700)
            atomic_write(path, blob, sync=False)
    except OSError:
        pass
