"""One buffered output for every tar we write (exports and tar-split reassembly).

Small pieces are batched into 1 MiB writes; file bodies are read straight into the buffer, or,
when large and the output is a plain file, copied kernel-side by sendfile(2).  The fd path is
taken only for objects whose bytes reach their fd unchanged: a compressor also answers
``fileno()`` (with the *compressed* file's fd), and writing around it would corrupt the stream.
"""

from __future__ import annotations

import io
import os

from .. import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO

BUF_SIZE = 1024 * 1024
# Files up to this size go through the buffer (one read each, batched writes); larger ones by
# sendfile so their bytes never enter Python (unless a checksum needs them).
INLINE_MAX = 256 * 1024


def plain_fd(out: IO[bytes]) -> int:
    """``out``'s fd if writing to it directly is the same as writing through ``out``, else -1."""
    raw: object = out
    if isinstance(out, (io.BufferedWriter, io.BufferedRandom)):
        raw = out.raw
    if not isinstance(raw, io.FileIO):
        return -1
    try:
        fd = out.fileno()
    except (OSError, ValueError):
        return -1
    out.flush()  # whatever the object buffered goes first; from here on we write to its fd
    return fd


class BlockSink:
    """Buffered output to ``out``; ``written`` counts every byte emitted."""

    __slots__ = ("buf", "fd", "obj", "pos", "view", "written")

    def __init__(self, out: IO[bytes]) -> None:
        self.obj = out
        self.buf = bytearray(BUF_SIZE)
        self.view = memoryview(self.buf)
        self.pos = 0
        self.written = 0
        self.fd = plain_fd(out)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if self.pos + n > BUF_SIZE:
            self.flush()
            if n > BUF_SIZE:
                self._emit(memoryview(data))
                return
        self.view[self.pos:self.pos + n] = data
        self.pos += n

    def _emit(self, data: memoryview) -> None:
        if self.fd >= 0:
            done = 0
            while done < len(data):
                done += os.write(self.fd, data[done:])
        else:
            self.obj.write(data)
        self.written += len(data)

    def flush(self) -> None:
        if self.pos:
            self._emit(self.view[:self.pos])
            self.pos = 0

    def close(self) -> None:
        self.flush()
        self.view.release()

    def copy_fd(self, fd: int, size: int, short: Callable[[], Exception],
                checksum: Callable[[memoryview, int], int] | None = None) -> int:
        """Append exactly ``size`` bytes read from ``fd``; ``short()`` is raised if it has fewer.

        With ``checksum`` every chunk is folded into a running value (returned); without one,
        large files to a plain fd skip the buffer via sendfile.
        """
        if checksum is None and size > INLINE_MAX and self.fd >= 0:
            self.flush()
            offset = 0
            while offset < size:
                n = os.sendfile(self.fd, fd, offset, size - offset)
                if n == 0:
                    raise short()
                offset += n
            self.written += size
            return 0
        value = 0
        remaining = size
        view = self.view
        while remaining:
            if self.pos == BUF_SIZE:
                self.flush()
            pos = self.pos
            n = os.readv(fd, [view[pos:pos + min(remaining, BUF_SIZE - pos)]])
            if n == 0:
                raise short()
            if checksum is not None:
                value = checksum(view[pos:pos + n], value)
            self.pos = pos + n
            remaining -= n
        return value
