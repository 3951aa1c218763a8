"""Writing to stdout/stderr the way the Go CLI does: same bytes, same interleaving, Go's JSON.

Go writes unbuffered, so when both streams go to one pipe (bats' ``run``) lines arrive in program
order; we buffer stdout for speed but flush it before anything goes to stderr.  Text is encoded
with ``surrogateescape`` so arguments that are not UTF-8 come back out byte for byte, as in Go.
"""

from __future__ import annotations

import os
import sys

from .. import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, BinaryIO, TextIO


def go_json(value: Any) -> bytes:
    """Go's ``json.NewEncoder(w).Encode(value)``: compact, HTML-escaped, newline-terminated.

    Dicts are written in their own order: callers pass records in Go's struct order and plain
    maps through ``go_json_sorted``.
    """
    from .. import gojson  # here: text output never needs it

    try:
        return gojson.dumps(value) + b"\n"
    except UnicodeEncodeError:  # lone surrogates from non-UTF-8 names
        return gojson.dumps(_scrub(value)) + b"\n"


def go_json_sorted(value: dict[str, Any]) -> bytes:
    """A Go ``map[string]T``: keys in byte order, as encoding/json sorts them."""
    return go_json(dict(sorted(value.items(), key=lambda kv: kv[0].encode("utf-8", "surrogateescape"))))


def _scrub(value: Any) -> Any:
    """Replace what is not valid UTF-8 (surrogate-escaped argv bytes) with U+FFFD, as Go does."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


class Output:
    """The command's stdout and stderr (whatever ``sys.stdout``/``sys.stderr`` are at start-up)."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.stdout: TextIO = stdout if stdout is not None else sys.stdout
        self.stderr: TextIO = stderr if stderr is not None else sys.stderr
        self._parts: list[str] = []

    # -- stdout --------------------------------------------------------------------------------
    def out(self, text: str) -> None:
        """Queue text for stdout (flushed before stderr output and at exit)."""
        self._parts.append(text)

    def out_bytes(self, data: bytes) -> None:
        self.flush()
        buf = self.binary_stdout()
        if buf is not None:
            buf.write(data)
            buf.flush()
        else:
            self.stdout.write(data.decode("utf-8", "surrogateescape"))
            self.stdout.flush()

    def json(self, value: Any) -> None:
        self.out_bytes(go_json(value))

    def binary_stdout(self) -> BinaryIO | None:
        self.flush()
        buf = getattr(self.stdout, "buffer", None)
        return buf

    def flush(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        _write_text(self.stdout, text)

    # -- stderr --------------------------------------------------------------------------------
    def err(self, text: str) -> None:
        self.flush()
        _write_text(self.stderr, text)


def _write_text(stream: TextIO, text: str) -> None:
    buf = getattr(stream, "buffer", None)
    try:
        if buf is not None:
            stream.flush()
            buf.write(text.encode("utf-8", "surrogateescape"))
            buf.flush()
        else:
            stream.write(text)
            stream.flush()
    except BrokenPipeError:
        # Go dies of SIGPIPE silently when a reader goes away (``| head``); so do we.
        import os

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
        raise SystemExit(1) from None


def exit_now(code: int) -> None:
    """Exit a CLI process without interpreter teardown (freeing every parsed record, for one)
    when nothing else is running; return (to exit the ordinary way) when something is.

    Everything we wrote went through closed files or flushed streams by now; a second thread
    (the archive engine's) means we leave the ordinary way instead.
    """
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)
