"""Go's tar-split format: record a layer tarball's raw bytes minus file contents, rebuild it later.

A ``<id>.tar-split.gz`` is gzip of newline-delimited JSON entries, as written by tar-split's
``JSONPacker``: type 2 ("segment") carries raw tar bytes (headers, padding, the end-of-archive
blocks) base64-encoded in ``payload``; type 1 ("file") names a file whose content follows in the
tar, with its ``size`` and the CRC-64/ISO of that content in ``payload``.  ``diff`` against the
parent rebuilds the original tarball byte-for-byte from these entries and the layer's files, which
is why the JSON has to match Go's encoder (field order, HTML-safe escaping, ``name_raw`` for names
that are not UTF-8) and why reassembly has to be fast: it is what ``podman push`` waits for.
"""

from __future__ import annotations

import binascii
import errno
import os
import stat

# SIMD base64: with binascii, decoding segment payloads was a tenth of reassembly's CPU time.
from pybase64 import b64decode as _b64decode
from pybase64 import b64encode as _b64encode

from .. import TYPE_CHECKING
from ..errors import InvalidArchive, StorageError
from .confine import open_beneath, open_root
from .crc64 import crc64 as _crc64
from .gopath import go_clean
from .sink import BlockSink

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import IO, Protocol
else:
    Protocol = object  # the compressor interface below only matters to the type checker

__all__ = [
    "FILE_TYPE",
    "SEGMENT_TYPE",
    "DuplicatePath",
    "Entry",
    "ReassemblyError",
    "TarSplitWriter",
    "clean_path",
    "iter_entries",
    "reassemble",
]

FILE_TYPE = 1
SEGMENT_TYPE = 2

# Compressed tar-split bytes read at a time; each decompresses into pieces of at most 4 MB, so
# memory stays bounded however many entries the layer has.
_READ_SIZE = 1 << 20


class ReassemblyError(StorageError):
    """The layer's files no longer match its tar-split (missing, resized or corrupted)."""

    text = "reassembling layer tarball"
    # The file concerned, and how: "missing" (could not be opened) or "content" (not the
    # recorded bytes), and the layer directory it was looked for in; callers such as ``check``
    # word these as Go does.
    file_name: bytes | None = None
    problem = ""
    root: str | None = None


def _file_error(problem: str, name: bytes, message: str, prefixed: bool = True) -> ReassemblyError:
    err = ReassemblyError(f"{ReassemblyError.text}: {message}" if prefixed else message)
    err.file_name, err.problem = name, problem
    return err


class DuplicatePath(InvalidArchive):
    """tar-split refuses two file entries for one path (Go's ``ErrDuplicatePath``)."""

    text = "duplicates of file paths not supported"


class Entry:
    """One tar-split record; ``name`` is raw bytes whichever JSON field carried it.

    A plain slotted class rather than a dataclass: importing dataclasses costs CLI start-up time.
    """

    __slots__ = ("name", "payload", "position", "size", "type")

    def __init__(self, type: int, name: bytes = b"", size: int = 0, payload: bytes | None = None,
                 position: int = 0) -> None:
        self.type = type
        self.name = name
        self.size = size
        self.payload = payload
        self.position = position

    def __repr__(self) -> str:
        return (f"Entry(type={self.type}, name={self.name!r}, size={self.size}, "
                f"payload={self.payload!r}, position={self.position})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


# --- Go-compatible JSON -------------------------------------------------------------------------

# encoding/json (as built into the Go CLI) escapes quotes, backslashes, control characters, the
# HTML-sensitive <, > and &, and U+2028/U+2029; \n, \r and \t get their short forms, the other
# control characters \u00XX with lower-case hex.  Everything else, non-ASCII included, is raw.
_GO_ESCAPES: dict[int, str] = {c: f"\\u{c:04x}" for c in range(0x20)}
_GO_ESCAPES.update({
    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"', ord("\\"): "\\\\",
    ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
    0x2028: "\\u2028", 0x2029: "\\u2029",
})


def go_json_string(s: str) -> str:
    """``s`` as Go's ``json.Marshal`` writes a string, quotes included."""
    return '"' + s.translate(_GO_ESCAPES) + '"'


def clean_path(name: bytes) -> bytes:
    """Go's ``filepath.Clean`` on bytes: the key tar-split uses to spot duplicate paths."""
    # Fast path for the usual "./usr/bin/x" or "etc/" shape, which is clean once the leading
    # "./" and one trailing "/" are gone: no empty, "." or ".." component can hide in it.
    n = name[2:] if name.startswith(b"./") else name
    if n.endswith(b"/"):
        n = n[:-1]
    if n and b"//" not in n and b"/." not in n and not n.startswith(b".") and not n.endswith(b"/"):
        return n
    return go_clean(name)


# Bytes a "plain" name may consist of: printable ASCII that Go's JSON encoder writes unescaped.
_PLAIN_BYTES = bytes(c for c in range(0x20, 0x80) if c not in b'"\\<>&')


def _plain_key(name: bytes) -> bytes | None:
    """The ``clean_path()`` key of a name that needs no cleaning and no JSON escape, else None.

    Such a name is clean but for ``./`` in front and one ``/`` behind (no empty, ``.`` or ``..``
    component: no component starts with a dot) and consists of ``_PLAIN_BYTES``; then it is its
    own JSON text.  Plain string tests rather than a regex: importing ``re`` costs start-up time.
    """
    n = name[2:] if name.startswith(b"./") else name
    if n.endswith(b"/"):
        n = n[:-1]
    if (not n or n[0] in (0x2E, 0x2F) or n[-1] == 0x2F or b"//" in n or b"/." in n
            or n.translate(None, _PLAIN_BYTES)):
        return None
    return n


def _name_field(name: bytes) -> bytes:
    """The ``"name":...,`` (or ``"name_raw":...,``) JSON field of a file entry, any name."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return b'"name_raw":"%b",' % _b64encode(name)
    return b'"name":%b,' % go_json_string(text).encode("utf-8") if text else b""


_FLUSH_AT = 256 * 1024  # bytes of lines handed to the compressor at once


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


class TarSplitWriter:
    """Writes a tar-split stream exactly as Go's ``storage.NewJSONPacker`` over gzip would.

    The apply engine calls ``add_segment`` with every run of raw bytes that is not file content
    and ``add_file`` once per tar header (size 0 included, as Go does); ``close`` finishes the
    gzip member but leaves ``out`` open for the caller to fsync and rename.
    """

    def __init__(self, out: IO[bytes], compresslevel: int = 1, compressor: _Compressor | None = None
                 ) -> None:
        self._out = out
        if compressor is not None:  # zstd:chunked blobs keep their tar-split zstd-compressed
            self._gz: _Compressor = compressor
        else:
            # A raw ISA-L compressor with a gzip wrapper (wbits 31: zero mtime, no name) rather
            # than igzip.IGzipFile, whose module imports gzip and typing: ~10 ms of a cold CLI start.
            from isal import isal_zlib

            self._gz = isal_zlib.compressobj(compresslevel, isal_zlib.DEFLATED, 31)
        self._pos = 0
        self._seen: set[bytes] = set()
        self._lines: list[bytes] = []
        self._pending = 0
        self._closed = False

    @property
    def entries(self) -> int:
        """How many entries were written so far (the next entry's ``position``)."""
        return self._pos

    @property
    def seen(self) -> set[bytes]:
        """The cleaned names recorded so far (for an accelerator that writes entries itself)."""
        return self._seen

    def add_lines(self, lines: list[bytes]) -> None:
        """Entries formatted elsewhere exactly as ``add_segment``/``add_file`` would, one a line,
        positions numbered from ``entries`` on; their names already added to ``seen``."""
        pending = self._pending + sum(map(len, lines))
        if pending >= _FLUSH_AT:
            # Line by line, so the compressor is fed at the same points as by add_file: the
            # gzip bytes then do not depend on how the entries were applied.
            for line in lines:
                self._append(line)
            return
        self._lines.extend(lines)
        self._pending = pending
        self._pos += len(lines)

    def add_segment(self, raw: bytes | bytearray | memoryview) -> None:
        """Record raw tar bytes (headers, padding, trailer) verbatim."""
        line = b'{"type":2,"payload":"%b","position":%d}\n' % (_b64encode(raw), self._pos)
        self._append(line)

    def add_file(self, name: bytes, size: int, crc: bytes | None) -> None:
        """Record a file entry; ``crc`` is the 8-byte CRC-64/ISO digest (None when size is 0).

        Raises ``DuplicatePath`` when the cleaned name was recorded before, as Go's packer does.
        """
        # Fast path: a clean relative name ("./" in front and one "/" behind allowed) of plain
        # printable ASCII is its own duplicate key and its own JSON text.
        key = _plain_key(name)
        if key is not None:
            name_field = b'"name":"%b",' % name
        else:
            key = clean_path(name)
            name_field = _name_field(name)
        if key in self._seen:
            raise DuplicatePath.about(os.fsdecode(name))
        self._seen.add(key)
        size_field = b'"size":%d,' % size if size else b""
        payload = b'"%b"' % _b64encode(crc) if crc is not None else b"null"
        line = b'{"type":1,%b%b"payload":%b,"position":%d}\n' % (name_field, size_field, payload, self._pos)
        self._append(line)

    def _append(self, line: bytes) -> None:
        self._lines.append(line)
        self._pending += len(line)
        self._pos += 1
        if self._pending >= _FLUSH_AT:
            self._flush_lines()

    def _flush_lines(self) -> None:
        if self._lines:
            self._out.write(self._gz.compress(b"".join(self._lines)))
            self._lines.clear()
            self._pending = 0

    def close(self) -> None:
        """Flush everything and end the gzip stream; ``out`` itself stays open."""
        if self._closed:
            return
        self._closed = True
        self._flush_lines()
        self._out.write(self._gz.flush())

    def __enter__(self) -> TarSplitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading ------------------------------------------------------------------------------------

# Go's packer writes every entry in one fixed shape, so the hot path slices lines by hand and only
# hands lines it does not recognise (escaped names, name_raw, other encoders) to a JSON parser.
_SEG_PREFIX = b'{"type":2,"payload":"'
_SEG_START = len(_SEG_PREFIX)
_FILE_PREFIX = b'{"type":1,"name":"'
_FILE_START = len(_FILE_PREFIX)
_B64_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_Op = bytearray | tuple[bytes, int, bytes | None]


def _parse_file_line(line: bytes) -> tuple[bytes, int, bytes | None] | None:
    """(name, size, base64 CRC or None) of a file entry in the shape Go's packer writes
    (``{"type":1,"name":"N",["size":S,]"payload":"P"|null,"position":I}``, a name without quotes
    or escapes, trailing white space allowed); None for any other line."""
    if not line.startswith(_FILE_PREFIX):
        return None
    end = line.find(b'"', _FILE_START)
    if end <= _FILE_START or line[end + 1 : end + 2] != b",":
        return None
    name = line[_FILE_START:end]
    if b"\\" in name:
        return None
    pos = end + 2
    size = 0
    if line.startswith(b'"size":', pos):
        comma = line.find(b",", pos + 7)
        size_text = line[pos + 7 : comma]
        if comma < 0 or not size_text.isdigit():
            return None
        size = int(size_text)
        pos = comma + 1
    if not line.startswith(b'"payload":', pos):
        return None
    pos += 10
    crc: bytes | None = None
    if line.startswith(b"null", pos):
        pos += 4
    elif line.startswith(b'"', pos):
        quote = line.find(b'"', pos + 1)
        crc = line[pos + 1 : quote]
        if quote < 0 or crc.translate(None, _B64_BYTES):
            return None
        pos = quote + 1
    else:
        return None
    if not line.startswith(b',"position":', pos):
        return None
    tail = line[pos + 12 :].rstrip()
    if not tail.endswith(b"}") or not tail[:-1].isdigit():
        return None
    return name, size, crc


def _text_blocks(src: IO[bytes]) -> Iterator[bytes]:
    """The decompressed JSON text of a ``.tar-split.gz``, in pieces of at most a few MB.

    The archive engine's streaming decompressor (ISA-L, concatenated members, bounded output)
    rather than igzip.IGzipFile, whose module imports gzip and typing at ~10 ms of start-up.
    """
    from .compression import Compression, Decompressor

    dec = Decompressor(Compression.GZIP)
    try:
        while True:
            chunk = src.read(_READ_SIZE)
            if not chunk:
                break
            yield from dec.feed(chunk)
        dec.finish()
    except InvalidArchive as e:
        raise InvalidArchive.about(f"corrupt tar-split: {e}") from None


def _iter_lines(src: IO[bytes]) -> Iterator[list[bytes]]:
    """Lines in batches of a few MB, so memory stays bounded however long the layer is."""
    rest = b""
    for block in _text_blocks(src):
        data = rest + block if rest else block
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        rest = data[cut + 1:]
        yield data[:cut].split(b"\n")
    if rest.strip():
        yield [rest]


def _a2b(value: bytes | str) -> bytes:
    try:
        return _b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArchive.about("corrupt tar-split: bad base64 payload") from None


def _b64(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str | bytes):
        raise InvalidArchive.about("corrupt tar-split: payload is not a string")
    return _a2b(value)


def _decode_line(line: bytes) -> Entry | None:
    """Any JSON entry line as Go's decoder reads it; None for a blank line."""
    if not line.strip():
        return None
    import json  # only for lines off the fast path; keeps it out of CLI start-up

    try:
        e = json.loads(line)
    except ValueError as err:
        raise InvalidArchive.about(f"corrupt tar-split entry: {err}") from None
    if not isinstance(e, dict):
        raise InvalidArchive.about("corrupt tar-split: an entry is not a JSON object")
    typ, size, pos = e.get("type") or 0, e.get("size") or 0, e.get("position") or 0
    if not all(isinstance(v, int) for v in (typ, size, pos)) or size < 0:
        raise InvalidArchive.about("corrupt tar-split: bad number in entry")
    raw = _b64(e.get("name_raw"))
    if raw:
        name = raw
    else:
        text = e.get("name") or ""
        if not isinstance(text, str):
            raise InvalidArchive.about("corrupt tar-split: name is not a string")
        name = text.encode("utf-8", "surrogatepass")
    return Entry(type=typ, name=name, size=size, payload=_b64(e.get("payload")), position=pos)


def iter_entries(src: IO[bytes]) -> Iterator[Entry]:
    """The entries of a ``.tar-split.gz`` stream, in order.

    Like Go's ``JSONUnpacker`` this refuses a second file entry for the same cleaned path.
    """
    seen: set[bytes] = set()
    for lines in _iter_lines(src):
        for line in lines:
            entry = _decode_line(line)
            if entry is None:
                continue
            if entry.type == FILE_TYPE:
                key = clean_path(entry.name)
                if key in seen:
                    raise DuplicatePath.about(os.fsdecode(entry.name))
                seen.add(key)
            yield entry


def _plan(lines: list[bytes], seen: set[bytes], want_crc: bool) -> list[_Op]:
    """Turn a batch of lines into output operations: raw byte runs and files to copy.

    Consecutive segments merge into one buffer, files of size 0 vanish (Go skips them too, without
    opening them), and duplicate paths are refused here, before anything is written.
    """
    ops: list[_Op] = []
    run = bytearray()
    a2b = _a2b
    parse_file = _parse_file_line
    for line in lines:
        if line.startswith(_SEG_PREFIX):
            end = line.find(b'"', _SEG_START)
            payload = line[_SEG_START:end]
            if end > 0 and b"\\" not in payload and line.startswith(b',"position":', end + 1):
                run += a2b(payload)
                continue
        parsed = parse_file(line)
        if parsed is not None:
            name, size, crc_text = parsed
            crc = a2b(crc_text) if crc_text is not None and want_crc else None
        else:
            entry = _decode_line(line)
            if entry is None:
                continue
            if entry.type == SEGMENT_TYPE:
                if entry.payload:
                    run += entry.payload
                continue
            if entry.type != FILE_TYPE:
                continue  # Go ignores entry types it does not know
            name, size, crc = entry.name, entry.size, entry.payload
        key = clean_path(name)
        if key in seen:
            raise DuplicatePath.about(os.fsdecode(name))
        seen.add(key)
        if size:
            if want_crc and crc is None:
                raise InvalidArchive.about(f"corrupt tar-split: no CRC for {os.fsdecode(name)!r}")
            if run:
                ops.append(run)
                run = bytearray()
            ops.append((name, size, crc if want_crc else None))
    if run:
        ops.append(run)
    return ops


# --- reassembly ---------------------------------------------------------------------------------


def _open_content(roots: Sequence[int], name: bytes) -> int:
    """Open a file entry's content confined to the first layer root that has it (Go's getter)."""
    err: OSError | None = None
    for root_fd in roots:
        try:
            return open_beneath(root_fd, name, os.O_RDONLY)
        except OSError as e:
            if err is None:
                err = e
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                break
    assert err is not None
    raise _file_error("missing", name, f"open {os.fsdecode(name)}: {err.strerror}") from err


def _copy_file(out: BlockSink, fd: int, name: bytes, size: int, crc: bytes | None) -> None:
    """Append exactly ``size`` bytes of ``fd`` to the output, checking the size (and CRC)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _file_error("", name, f"{os.fsdecode(name)!r} is not a regular file")
    if st.st_size != size:
        raise _file_error(
            "content", name, f"{os.fsdecode(name)!r} has size {st.st_size}, the layer recorded {size}")
    short = f"{os.fsdecode(name)!r} is shorter than recorded"
    value = out.copy_fd(fd, size, lambda: _file_error("content", name, short),
                        _crc64 if crc is not None else None)
    if crc is not None and value.to_bytes(8, "big") != crc:
        raise _file_error("content", name, f"file integrity checksum failed for {os.fsdecode(name)!r}",
                          prefixed=False)


class _Lookahead:
    """Opens files a window ahead of the writer and asks the kernel to read them in the background.

    With a cold page cache reassembly would otherwise wait on the disk one file at a time.  Each
    file is opened once, ``window`` files before it is copied, followed by ``POSIX_FADV_WILLNEED``,
    so the reads of the next files are in flight while this one is written.  No threads: worker
    threads were tried and lost more to GIL hand-offs than they gained.
    """

    __slots__ = ("_fds", "_files", "_next", "_roots", "_window")

    def __init__(self, roots: Sequence[int], window: int) -> None:
        self._roots = roots
        self._window = window
        self._files: list[tuple[bytes, int, bytes | None]] = []
        self._next = 0  # index in _files of the next file to open
        self._fds: list[int] = []  # a window of a few dozen: pop(0) is cheap, no collections

    def reset(self, files: list[tuple[bytes, int, bytes | None]]) -> None:
        """Start on a new batch; the previous one must have been consumed."""
        self._files = files
        self._next = 0
        self._fill()

    def _fill(self) -> None:
        files, fds = self._files, self._fds
        while self._next < len(files) and len(fds) < self._window:
            name, size, _ = files[self._next]
            fd = _open_content(self._roots, name)
            fds.append(fd)
            self._next += 1
            if self._window > 1:
                try:
                    os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass

    def take(self) -> int:
        """The fd of the next file in order; the caller closes it."""
        fd = self._fds.pop(0)
        self._fill()
        return fd

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def reassemble(
    tar_split: IO[bytes],
    root: str | bytes,
    out: IO[bytes],
    *,
    lowers: Iterable[str | bytes] = (),
    verify_crc: bool = True,
    readahead: int = 32,
) -> int:
    """Rebuild the original tarball from a ``.tar-split.gz`` stream and the layer's files.

    File contents are opened beneath ``root`` (then each of ``lowers``, as Go's overlay
    ``DiffGetter`` falls back to lower layers for staged layers), so a name with ``..`` or a
    symlink cannot make us read outside the layer.  Every file's size is checked against the
    record, which catches truncated or grown files, and ``verify_crc`` compares the CRC-64 as Go
    does (turning it off lets big files go out by sendfile without passing through Python).
    ``readahead`` files are kept open and being read ahead of the writer, which is what makes a
    cold-cache export fast (1 turns it off).  Returns the number of bytes written.
    """
    roots: list[int] = []
    try:
        roots.append(open_root(root))
        for lower in lowers:
            roots.append(open_root(lower))
        return _reassemble(tar_split, roots, out, verify_crc, readahead)
    except ReassemblyError as e:
        if e.root is None:
            e.root = os.fsdecode(root)
        raise
    finally:
        for fd in roots:
            os.close(fd)


def _reassemble(tar_split: IO[bytes], roots: list[int], out_obj: IO[bytes], verify_crc: bool,
                window: int) -> int:
    out = BlockSink(out_obj)
    seen: set[bytes] = set()
    ahead = _Lookahead(roots, max(window, 1))
    try:
        for lines in _iter_lines(tar_split):
            ops = _plan(lines, seen, verify_crc)
            del lines
            ahead.reset([op for op in ops if isinstance(op, tuple)])
            for op in ops:
                if isinstance(op, bytearray):
                    out.write(op)
                    continue
                fd = ahead.take()
                try:
                    _copy_file(out, fd, *op)
                finally:
                    os.close(fd)
    finally:
        ahead.close()
    out.close()
    return out.written
