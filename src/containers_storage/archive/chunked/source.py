"""Blob sources that give ranges of a layer blob: a local file, or a registry over HTTP.

A partial pull asks its source for a list of ``(offset, length)`` ranges at once, as Go's
``ImageSourceSeekable.GetBlobAt`` does, and reads the answers in order: one stream per range.  Over
HTTP that is one request with a multi-range ``Range`` header, answered with a
``multipart/byteranges`` body (Go's c/image makes the same single request); each part is checked
against the range asked for and read straight from the socket, so memory stays bounded.
"""

from __future__ import annotations

import os

from ... import TYPE_CHECKING
from .toc import BadRangeRequest, ChunkedError, FallbackToFullPull

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from http.client import HTTPResponse
    from typing import BinaryIO, Protocol
else:
    Protocol = object  # the interface below only matters to the type checker

__all__ = ["BlobSource", "FileBlobSource", "HTTPBlobSource", "RangeReader"]


class RangeReader(Protocol):
    """One range of the blob: ``read(n)`` gives at most ``n`` bytes, ``b""`` at its end."""

    def read(self, n: int = -1, /) -> bytes: ...


class BlobSource(Protocol):
    """Where a partial pull gets the bytes of a layer blob it lacks (Go's ``ImageSourceSeekable``).

    ``get_blob_at`` yields one reader per range asked for, in order; each reader is read to its
    end (or abandoned) before the next one is taken.
    """

    def get_blob_at(self, chunks: Sequence[tuple[int, int]]) -> Iterator[RangeReader]:
        """Readers of the ``(offset, length)`` ranges, in the order asked.

        Raises:
            BadRangeRequest: too many ranges at once (the caller merges them and asks again).
            FallbackToFullPull: the source cannot serve ranges at all.
        """
        ...


class _Range:
    """``length`` bytes of the blob: read with pread from a file descriptor at ``offset`` (several
    readers may share the fd), or, given ``resp``, from an HTTP response body (counted in
    ``source.bytes_read``).  One class for both, so that a read costs no call beyond its I/O."""

    def __init__(self, length: int, fd: int = -1, offset: int = 0, resp: object = None,
                 source: HTTPBlobSource | None = None) -> None:
        self._left = length
        self._fd = fd
        self._pos = offset
        self._resp = resp
        self._source = source

    def read(self, n: int = -1, /) -> bytes:
        if self._left <= 0:
            return b""
        if n < 0 or n > self._left:
            n = self._left
        if self._source is None:
            data = os.pread(self._fd, min(n, 1 << 22), self._pos)
            if not data:
                raise ChunkedError("blob file is shorter than its TOC says")
            self._pos += len(data)
        else:
            data = self._resp.read(min(n, 1 << 20))  # type: ignore[attr-defined]
            if not data:
                raise ChunkedError("the server sent less data than the range asked for")
            self._source.bytes_read += len(data)
        self._left -= len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class FileBlobSource:
    """A blob in a local file (Go's CLI ``fileFetcher``).

    Attributes:
        size: the file's size.
        requests: how many ``get_blob_at`` calls were made.
        bytes_read: how many bytes of the blob were asked for.
    """

    def __init__(self, file: str | os.PathLike[str] | BinaryIO) -> None:
        """Serve ``file``: a path (opened here, closed by :meth:`close`) or an open binary file
        (left open)."""
        if isinstance(file, str | os.PathLike):
            self._fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
            self._own = True
        else:
            self._fd = file.fileno()
            self._own = False
        self.size = os.fstat(self._fd).st_size
        self.requests = 0
        self.bytes_read = 0

    def get_blob_at(self, chunks: Sequence[tuple[int, int]]) -> Iterator[RangeReader]:
        """Readers of the ranges; a range past the end of the file is an error."""
        for offset, length in chunks:
            if offset < 0 or length < 0 or offset + length > self.size:
                raise ChunkedError(f"range {offset}+{length} is outside the blob ({self.size} bytes)")
        self.requests += 1
        self.bytes_read += sum(length for _, length in chunks)
        return (_Range(length, self._fd, offset) for offset, length in chunks)

    def open(self) -> BinaryIO:
        """The whole blob, for a full pull (a new handle; close it)."""
        return os.fdopen(os.dup(self._fd), "rb")

    def close(self) -> None:
        """Close the file when this source opened it."""
        if self._own and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileBlobSource:
        """Itself; :meth:`close` on the way out."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close it."""
        self.close()


def _content_range(value: str | None, size_hint: int) -> tuple[int, int]:
    """(first, last) of a ``Content-Range: bytes first-last/total`` header."""
    if not value or not value.startswith("bytes "):
        raise ChunkedError(f"invalid Content-Range {value!r} in the server's answer")
    span = value[6:].split("/", 1)[0]
    first, _, last = span.partition("-")
    if not first.isdigit() or not last.isdigit():
        raise ChunkedError(f"invalid Content-Range {value!r} in the server's answer")
    return int(first), int(last)


class HTTPBlobSource:
    """A blob at an HTTP(S) URL, such as a registry's ``/v2/<name>/blobs/<digest>``.

    Attributes:
        url: the blob's URL.
        requests: HTTP requests made for ranges.
        bytes_read: body bytes received for them.
    """

    MAX_REDIRECTS = 5

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 60.0
                 ) -> None:
        """Serve the blob at ``url``; ``headers`` go with every request (``Authorization``...)."""
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.requests = 0
        self.bytes_read = 0

    def _open(self, range_header: str | None) -> HTTPResponse:
        """The response to a GET of the blob (with ``Range: range_header`` when given), after
        following up to MAX_REDIRECTS redirects."""
        import http.client
        import urllib.parse

        headers = self.headers if range_header is None else {**self.headers, "Range": range_header}
        url = self.url
        for _ in range(self.MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ChunkedError(f"unsupported blob URL {url!r}")
            conn = cls(parts.hostname, parts.port, timeout=self.timeout)
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                         headers=headers)
            self.requests += 1
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location") or "")
                resp.read()
                conn.close()
                continue
            return resp
        raise ChunkedError(f"too many redirects fetching {self.url}")

    def open(self) -> BinaryIO:
        """The whole blob, for a full pull: the body of a plain GET (close it)."""
        resp = self._open(None)
        if resp.status != 200:
            resp.close()
            raise ChunkedError(f"fetching blob: HTTP status {resp.status}")
        return resp

    def get_blob_at(self, chunks: Sequence[tuple[int, int]]) -> Iterator[RangeReader]:
        """One request for all ranges; readers of the answer's parts, checked against the ranges.

        Raises:
            BadRangeRequest: the server answered 400 (too many ranges, say).
            FallbackToFullPull: the server ignored the ranges (200) and sent the whole blob.
        """
        if not chunks:
            return iter(())
        spec = ",".join(f"{off}-{off + length - 1}" for off, length in chunks)
        resp = self._open(f"bytes={spec}")
        status = resp.status
        if status == 200:
            resp.close()
            raise FallbackToFullPull("the registry ignored the range request", can_convert=True)
        if status == 400:
            resp.close()
            raise BadRangeRequest()
        if status != 206:
            resp.close()
            raise ChunkedError(f"fetching partial blob: HTTP status {status}")
        return self._parts(resp, list(chunks))

    def _parts(self, resp: object, chunks: list[tuple[int, int]]) -> Iterator[RangeReader]:
        try:
            ctype = resp.getheader("Content-Type") or ""  # type: ignore[attr-defined]
            if not ctype.startswith("multipart/"):
                # One range: the whole body is it.
                first, last = _content_range(resp.getheader("Content-Range"), 0)  # type: ignore[attr-defined]
                if len(chunks) != 1 or (first, last - first + 1) != chunks[0]:
                    raise ChunkedError("the server answered with other ranges than asked for")
                body = _Range(chunks[0][1], resp=resp, source=self)
                yield body
                body.drain()
                return
            boundary = ""
            for param in ctype.split(";")[1:]:
                key, _, value = param.strip().partition("=")
                if key.lower() == "boundary":
                    boundary = value.strip('"')
            if not boundary:
                raise ChunkedError("could not find boundary")
            delimiter = b"--" + boundary.encode()
            for offset, length in chunks:
                headers = self._part_headers(resp, delimiter)
                first, last = _content_range(headers.get("content-range"), 0)
                if (first, last - first + 1) != (offset, length):
                    raise ChunkedError("the server answered with other ranges than asked for")
                body = _Range(length, resp=resp, source=self)
                yield body
                body.drain()
        finally:
            resp.close()  # type: ignore[attr-defined]

    def _part_headers(self, resp: object, delimiter: bytes) -> dict[str, str]:
        """Skip to the next part's delimiter line and read its headers (bounded lines)."""
        for _ in range(8):  # blank lines before the delimiter
            line = resp.readline(4096)  # type: ignore[attr-defined]
            self.bytes_read += len(line)
            if not line:
                raise ChunkedError("invalid number of chunks returned by the server")
            if line.rstrip(b"\r\n") == delimiter:
                break
            if line.strip():
                raise ChunkedError("malformed multipart answer from the server")
        else:
            raise ChunkedError("malformed multipart answer from the server")
        headers: dict[str, str] = {}
        for _ in range(64):
            line = resp.readline(4096)  # type: ignore[attr-defined]
            self.bytes_read += len(line)
            if not line.strip():
                return headers
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        raise ChunkedError("malformed multipart answer from the server")
