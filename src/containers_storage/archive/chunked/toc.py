"""Tables of contents of zstd:chunked and eStargz layers: the entries, their checks, the digests.

A zstd:chunked blob is a zstd stream of a layer tarball in which every regular file's content
(and every chunk of a large one) starts a new zstd frame; a JSON table of contents (TOC) after
the last frame says where each file's frames are and what their content digests are, so that a
puller can fetch only what it lacks, by range requests.  eStargz does the same with gzip members.
The TOC is authenticated by a digest in the image manifest's layer annotations; every other
number in it is hostile input until checked here: offsets must lie inside the blob's data and
follow each other, chunks must add up to their file, digests must be digests.
"""

from __future__ import annotations

import re

from ... import TYPE_CHECKING
from ...errors import InvalidArchive, StorageError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "ESTARGZ_TOC_DIGEST",
    "LEGACY_MANIFEST_CHECKSUM",
    "LEGACY_MANIFEST_POSITION",
    "MANIFEST_CHECKSUM",
    "MANIFEST_POSITION",
    "MAX_TOC_SIZE",
    "TARSPLIT_POSITION",
    "BadRangeRequest",
    "ChunkedError",
    "FallbackToFullPull",
    "TOCEntry",
    "parse_toc",
    "toc_digest",
]

# Layer annotations (Go's pkg/chunked/internal/minimal and estargz).  Go 1.43 (Debian's skopeo
# 1.9.3) named the zstd:chunked ones without "github."; current Go reads only the new names.
MANIFEST_CHECKSUM = "io.github.containers.zstd-chunked.manifest-checksum"
MANIFEST_POSITION = "io.github.containers.zstd-chunked.manifest-position"
TARSPLIT_POSITION = "io.github.containers.zstd-chunked.tarsplit-position"
LEGACY_MANIFEST_CHECKSUM = "io.containers.zstd-chunked.manifest-checksum"
LEGACY_MANIFEST_POSITION = "io.containers.zstd-chunked.manifest-position"
ESTARGZ_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"

# Go's maxTocSize: a TOC (compressed or not) larger than this is not read into memory.
MAX_TOC_SIZE = 150 << 20

TYPE_REG = "reg"
TYPE_CHUNK = "chunk"
TYPE_LINK = "hardlink"
TYPE_SYMLINK = "symlink"
TYPE_DIR = "dir"
TYPE_CHAR = "char"
TYPE_BLOCK = "block"
TYPE_FIFO = "fifo"
TYPES = frozenset({TYPE_REG, TYPE_CHUNK, TYPE_LINK, TYPE_SYMLINK, TYPE_DIR, TYPE_CHAR, TYPE_BLOCK,
                   TYPE_FIFO})
CHUNK_DATA = ""
CHUNK_ZEROS = "zeros"

# Go's digestSha256Empty: unmarshalToc gives empty regular files this digest.
EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


class ChunkedError(InvalidArchive):
    """A zstd:chunked or eStargz layer that is malformed or lies (its TOC, offsets, contents)."""

    text = "invalid chunked layer"


class FallbackToFullPull(StorageError):
    """The layer cannot be applied partially; pull the whole blob instead (Go's
    ``ErrFallbackToOrdinaryLayerDownload``).

    Attributes:
        can_convert: Go's ``errFallbackCanConvert``: the environment (a registry without
            ranges, a layer without a TOC) rather than the content is why, so ``convert_images``
            could still help.
    """

    text = "partial pull not possible"

    def __init__(self, message: str | None = None, *, can_convert: bool = False) -> None:
        super().__init__(message)
        self.can_convert = can_convert


class BadRangeRequest(StorageError):
    """The blob source refused the ranges asked for (HTTP 400): ask for fewer (Go's
    ``ErrBadRequest``)."""

    text = "bad request"


def toc_digest(annotations: Mapping[str, str]) -> str | None:
    """The TOC digest a layer's annotations record, or None (Go's ``toc.GetTOCDigest``).

    The legacy zstd:chunked key (Go 1.43) counts too, after the current one.

    Raises:
        ChunkedError: both a zstd:chunked and an eStargz TOC are announced, or the value is
            not a sha256 digest.
    """
    estargz = annotations.get(ESTARGZ_TOC_DIGEST)
    zstd = annotations.get(MANIFEST_CHECKSUM) or annotations.get(LEGACY_MANIFEST_CHECKSUM)
    if estargz is not None and zstd is not None:
        raise ChunkedError("both zstd:chunked and eStargz TOC found")
    value = estargz if estargz is not None else zstd
    if value is None:
        return None
    check_digest(value, "TOC digest")
    return value


def check_digest(value: object, what: str) -> str:
    """``value`` when it is a ``sha256:<64 hex>`` digest, else ChunkedError."""
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise ChunkedError(f"invalid {what} {value!r}")
    return value


class TOCEntry:
    """One TOC entry as Go's ``minimal.FileMetadata`` (JSON names in the comments).

    Times are kept as the RFC 3339 strings of the JSON; xattr values stay base64, as stored.
    """

    __slots__ = ("accesstime", "changetime", "chunk_digest", "chunk_offset", "chunk_size",
                 "chunk_type", "devmajor", "devminor", "digest", "end_offset", "gid", "linkname",
                 "mode", "modtime", "name", "offset", "size", "type", "uid", "xattrs")

    def __init__(self, type: str, name: str) -> None:
        self.type = type  # "type"
        self.name = name  # "name"
        self.linkname = ""  # "linkName"
        self.mode = 0  # "mode"
        self.size = 0  # "size"
        self.uid = 0  # "uid"
        self.gid = 0  # "gid"
        self.modtime: str | None = None  # "modtime"
        self.accesstime: str | None = None  # "accesstime"
        self.changetime: str | None = None  # "changetime"
        self.devmajor = 0  # "devMajor"
        self.devminor = 0  # "devMinor"
        self.xattrs: dict[str, str] = {}  # "xattrs"
        self.digest = ""  # "digest"
        self.offset = 0  # "offset"
        self.end_offset = 0  # "endOffset"
        self.chunk_size = 0  # "chunkSize"
        self.chunk_offset = 0  # "chunkOffset"
        self.chunk_digest = ""  # "chunkDigest"
        self.chunk_type = ""  # "chunkType"

    def __repr__(self) -> str:
        """A short description for debugging."""
        return f"TOCEntry({self.type!r}, {self.name!r}, size={self.size}, offset={self.offset})"

    def to_json(self) -> dict[str, Any]:
        """The entry as Go's ``json.Marshal`` orders it, empty fields left out (``omitempty``)."""
        d: dict[str, Any] = {"type": self.type, "name": self.name}
        for key, value in (("linkName", self.linkname), ("mode", self.mode), ("size", self.size),
                           ("uid", self.uid), ("gid", self.gid), ("modtime", self.modtime),
                           ("accesstime", self.accesstime), ("changetime", self.changetime),
                           ("devMajor", self.devmajor), ("devMinor", self.devminor),
                           ("xattrs", dict(sorted(self.xattrs.items())) if self.xattrs else None),
                           ("digest", self.digest), ("offset", self.offset),
                           ("endOffset", self.end_offset), ("chunkSize", self.chunk_size),
                           ("chunkOffset", self.chunk_offset), ("chunkDigest", self.chunk_digest),
                           ("chunkType", self.chunk_type)):
            if value:
                d[key] = value
        return d


class File:
    """A regular file of the layer with its chunks: ``(offset, end, size, digest, type)`` each.

    Offsets are of the compressed blob; a file without chunk entries is one chunk.
    """

    __slots__ = ("chunks", "entry")

    def __init__(self, entry: TOCEntry, chunks: list[tuple[int, int, int, str, str]]) -> None:
        self.entry = entry
        self.chunks = chunks


# JSON name -> attribute, for the integer and the string fields.
_INT_FIELDS = {"mode": "mode", "size": "size", "uid": "uid", "gid": "gid", "devMajor": "devmajor",
               "devMinor": "devminor", "offset": "offset", "endOffset": "end_offset",
               "chunkSize": "chunk_size", "chunkOffset": "chunk_offset"}
_STR_FIELDS = {"linkName": "linkname", "digest": "digest", "chunkDigest": "chunk_digest",
               "chunkType": "chunk_type", "modtime": "modtime", "accesstime": "accesstime",
               "changetime": "changetime"}
_CANONICAL = frozenset({"type", "name", "xattrs", *_INT_FIELDS, *_STR_FIELDS})
_BY_LOWER = {k.lower(): k for k in _CANONICAL}
_INT_MAX = 1 << 63


def _canonical(obj: dict[str, object]) -> dict[str, object]:
    """Go's unmarshalToc matches field names case-insensitively and skips unknown ones."""
    out: dict[str, object] = {}
    for k, v in obj.items():
        key = _BY_LOWER.get(str(k).lower())
        if key is not None:
            out[key] = v
    return out


def _entry(obj: object, index: int) -> TOCEntry:
    """One checked entry.  Called for every entry of a TOC (tens of thousands): the fields are
    read straight from the dict, and checked in a few bulk tests."""
    if type(obj) is not dict:
        raise ChunkedError(f"TOC entry {index} is not an object")
    if not _CANONICAL.issuperset(obj):
        obj = _canonical(obj)
    get = obj.get
    typ, name = get("type", ""), get("name", "")
    if typ not in TYPES or type(typ) is not str:
        raise ChunkedError(f"TOC entry {index}: unknown type {typ!r}")
    if type(name) is not str or not name or "\x00" in name:
        raise ChunkedError(f"TOC entry {index}: invalid name {name!r}")
    e = TOCEntry.__new__(TOCEntry)
    e.type = typ
    e.name = name
    ints = (get("mode", 0), get("size", 0), get("uid", 0), get("gid", 0), get("devMajor", 0),
            get("devMinor", 0), get("offset", 0), get("endOffset", 0), get("chunkSize", 0),
            get("chunkOffset", 0))
    for value in ints:
        if type(value) is not int or not 0 <= value < _INT_MAX:
            key = next(k for k, a in _INT_FIELDS.items() if get(k, 0) is value)
            raise ChunkedError(f"TOC entry {name!r}: invalid {key} {value!r}")
    (e.mode, e.size, e.uid, e.gid, e.devmajor, e.devminor, e.offset, e.end_offset, e.chunk_size,
     e.chunk_offset) = ints  # type: ignore[assignment]  # (each checked to be an int just above)
    strs = (get("linkName", ""), get("digest", ""), get("chunkDigest", ""), get("chunkType", ""))
    times = (get("modtime"), get("accesstime"), get("changetime"))
    for value in (*strs, *times):
        if value is not None and (type(value) is not str or "\x00" in value):
            key = next(k for k in _STR_FIELDS if get(k) is value)
            raise ChunkedError(f"TOC entry {name!r}: invalid {key} {value!r}")
    e.linkname, e.digest, e.chunk_digest, e.chunk_type = strs  # type: ignore[assignment]
    e.modtime, e.accesstime, e.changetime = times  # type: ignore[assignment]
    if e.uid > 0xFFFFFFFF or e.gid > 0xFFFFFFFF:
        raise ChunkedError(f"TOC entry {name!r}: invalid owner {e.uid}:{e.gid}")
    xattrs = get("xattrs")
    e.xattrs = {}
    if xattrs is not None:
        if type(xattrs) is not dict or not all(
                type(k) is str and type(v) is str for k, v in xattrs.items()):
            raise ChunkedError(f"TOC entry {name!r}: invalid xattrs")
        e.xattrs = dict(xattrs)
    if e.digest and not _DIGEST.match(e.digest):
        check_digest(e.digest, f"digest of {name!r}")
    if e.chunk_digest and not _DIGEST.match(e.chunk_digest):
        check_digest(e.chunk_digest, f"chunk digest of {name!r}")
    if e.chunk_type and e.chunk_type != CHUNK_ZEROS:
        raise ChunkedError(f"TOC entry {name!r}: unknown chunk type {e.chunk_type!r}")
    if typ == TYPE_REG and e.size == 0 and not e.digest:
        e.digest = EMPTY_DIGEST  # as Go's unmarshalToc
    return e


class _Made(list):  # type: ignore[type-arg]
    """Entries :func:`load_toc` made already (TOCEntry objects, not raw ones)."""


def _entries(raw_entries: list[object]) -> list[TOCEntry]:
    """:func:`_entry` of each raw entry; with the C extension, the entries in the usual shape
    are made in C (a fifth of the time) and only the others here."""
    if type(raw_entries) is _Made:
        return raw_entries
    accel = accelerator()
    if accel is None:
        return [_entry(obj, i) for i, obj in enumerate(raw_entries)]
    return accel.entries(raw_entries, TOCEntry, _entry)  # type: ignore[no-any-return]


def accelerator() -> Any:
    """The ``_tocmatch`` extension (TOC entries and the tar-split's check in C), or None: see
    :mod:`containers_storage.native`."""
    from ...native import load

    return load("containers_storage.archive.chunked._tocmatch")


class TOC:
    """A parsed, checked table of contents.

    Attributes:
        version: the TOC's ``version``.
        entries: every entry but the chunk continuations, in order.
        files: the regular files with content, in order, with their chunks.
        tar_split_digest: the digest of the compressed tar-split (``tarSplitDigest``), or "".
    """

    __slots__ = ("entries", "files", "tar_split_digest", "version")

    def __init__(self, version: int, entries: list[TOCEntry], files: list[File],
                 tar_split_digest: str) -> None:
        self.version = version
        self.entries = entries
        self.files = files
        self.tar_split_digest = tar_split_digest


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def json_document(data: bytes) -> object:
    """A TOC-sized JSON document (megabytes), parsed by the standard library's C scanner.

    Raises ValueError: not UTF-8 or not JSON (NaN and Infinity are not JSON).  orjson is barely
    faster on such documents (18 against 22 ms for a 4 MB TOC) and costs ~20 ms to import (it
    loads dataclasses, uuid and inspect), which a pull in a fresh process would pay."""
    import json

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    doc = json.loads(data.decode("utf-8"), parse_constant=refuse)
    if b"\\u" in data and _SURROGATE_ESCAPE.search(data):
        _refuse_lone_surrogates(doc)  # "\ud800" alone decodes, but names no file
    return doc


def _refuse_lone_surrogates(value: object) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone UTF-16 surrogate") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_lone_surrogates(k)
            _refuse_lone_surrogates(v)
    elif isinstance(value, list):
        for v in value:
            _refuse_lone_surrogates(v)


def load_toc(manifest: bytes) -> tuple[int, list[object], str]:
    """The TOC's JSON: (version, raw entries, tarSplitDigest); the entries are checked by
    :func:`parse_toc`, which may run later (and elsewhere) than this.

    A TOC in the shape writers give is read by the C extension straight into its entries (20 ms
    for a 4 MB TOC, against ~45 for the json module and the entries made from its dicts); any
    other goes the long way, which decides and words the errors."""
    accel = accelerator()
    if accel is not None:
        fast = accel.toc_json(manifest, TOCEntry)
        if fast is not None:
            version, entries, ts_digest = fast
            if ts_digest:
                check_digest(ts_digest, "tarSplitDigest")
            return version, _Made(entries), ts_digest
    try:
        doc = json_document(manifest)
    except ValueError as err:
        raise ChunkedError(f"TOC is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ChunkedError("TOC is not a JSON object")
    fields = {str(k).lower(): v for k, v in doc.items()}
    version = fields.get("version", 0)
    raw_entries = fields.get("entries") or []
    ts_digest = fields.get("tarsplitdigest") or ""
    if type(version) is not int or not isinstance(raw_entries, list):
        raise ChunkedError("TOC has an invalid version or entry list")
    if ts_digest:
        check_digest(ts_digest, "tarSplitDigest")
    return version, raw_entries, ts_digest


def parse_toc(manifest: bytes | tuple[int, list[object], str], data_end: int, *, estargz: bool = False
              ) -> TOC:
    """Parse and check a TOC (its bytes, or what :func:`load_toc` made of them) whose file data
    must lie in ``[0, data_end)`` of the blob.

    Chunks of every file must follow each other and the files must follow each other in the
    blob, with no overlap: that is how Go's writers lay them out, and what lets a puller stream
    the ranges it fetched in order.  eStargz TOCs give no end offsets: as Go does, an entry ends
    where the next entry with an offset starts (the last one at ``data_end``).

    Raises:
        ChunkedError: the TOC is not what a writer can have produced.
    """
    loaded = load_toc(manifest) if isinstance(manifest, bytes | bytearray) else manifest
    version, raw_entries, ts_digest = loaded
    parsed = _entries(raw_entries)
    if estargz:
        # The eStargz landmark files and the TOC's own tar entry are not layer content.
        parsed = [e for e in parsed if e.name not in _ESTARGZ_SKIP]
    accel = accelerator()
    if accel is not None and 0 <= data_end < _INT_MAX:
        # The files and chunks in C when every check below passes; else here, which words why.
        laid = accel.layout(parsed, data_end, TOCEntry, File)
        if laid is not None:
            return TOC(version, laid[0], laid[1], ts_digest)
    groups: list[tuple[TOCEntry, list[TOCEntry]]] = []
    names: set[str] = set()
    for e in parsed:
        if e.type == TYPE_CHUNK:
            if not groups or groups[-1][0].type != TYPE_REG or groups[-1][0].name != e.name:
                raise ChunkedError(f"chunk of {e.name!r} without a regular file")
            groups[-1][1].append(e)
            continue
        if e.name in names:
            raise ChunkedError(f"TOC contains duplicate entries for path {e.name!r}")
        names.add(e.name)
        groups.append((e, [e]))
    # Go's mergeTocEntries: an entry without an end offset (eStargz gives none) ends where the
    # next entry with an offset starts, the last one where the data ends.
    last = data_end
    ends: list[int] = [0] * len(groups)
    for n in range(len(groups) - 1, -1, -1):
        main = groups[n][0]
        ends[n] = main.end_offset or last
        if main.offset:
            last = main.offset
    entries: list[TOCEntry] = []
    files: list[File] = []
    last_end = 0
    for (e, chunk_entries), end in zip(groups, ends, strict=True):
        entries.append(e)
        if e.type != TYPE_REG:
            continue
        if e.size == 0:
            if len(chunk_entries) > 1:
                raise ChunkedError(f"empty file {e.name!r} has chunks")
            continue
        if not e.digest:
            raise ChunkedError(f"missing digest for {e.name!r}")
        chunks = _file_chunks(e, chunk_entries, end, data_end)
        if chunks[0][0] < last_end:
            raise ChunkedError(f"content of {e.name!r} overlaps the previous file's")
        last_end = chunks[-1][1]
        files.append(File(e, chunks))
    return TOC(version, entries, files, ts_digest)


_ESTARGZ_SKIP = frozenset({".prefetch.landmark", ".no.prefetch.landmark", "stargz.index.json"})


def _file_chunks(e: TOCEntry, chunk_entries: list[TOCEntry], file_end: int,
                 data_end: int) -> list[tuple[int, int, int, str, str]]:
    """A file's chunks as (offset, end, uncompressed size, chunk digest, chunk type), checked."""
    chunks: list[tuple[int, int, int, str, str]] = []
    remaining = e.size
    prev_end = -1
    for n, c in enumerate(chunk_entries):
        start = c.offset
        # A chunk ends where the next one starts; the last where the file's entry says.
        end = chunk_entries[n + 1].offset if n + 1 < len(chunk_entries) else file_end
        size = c.chunk_size if c.chunk_size > 0 else remaining
        if len(chunk_entries) > 1 and c.chunk_size <= 0:
            raise ChunkedError(f"chunk of {e.name!r} has no size")
        if c.chunk_offset != e.size - remaining:
            raise ChunkedError(f"chunk of {e.name!r} at {c.chunk_offset} does not follow the "
                               "previous one")
        if size <= 0 or size > remaining:
            raise ChunkedError(f"chunks of {e.name!r} do not add up to its size")
        if not 0 < start < end <= data_end:
            raise ChunkedError(f"content of {e.name!r} at {start}..{end} is outside the blob's "
                               f"data (0..{data_end})")
        if start < prev_end:
            raise ChunkedError(f"chunks of {e.name!r} overlap")
        prev_end = end
        remaining -= size
        chunks.append((start, end, size, c.chunk_digest, c.chunk_type))
    if remaining:
        raise ChunkedError(f"chunks of {e.name!r} do not add up to its size")
    return chunks
