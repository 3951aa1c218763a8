"""Progress of loads and saves: a small callback interface, and a terminal display over tqdm.

:class:`Progress` is what :func:`~containers_storage.transport.load` and
:func:`~containers_storage.transport.save` report to (from several threads at once); the default
reports nothing.  :func:`terminal_progress` gives per-layer byte bars and an overall bar on a
terminal, and :class:`Progress` (silence) anywhere else: tqdm is imported only then, so a load
in a script or a pipe never pays for it.
"""

from __future__ import annotations

import _thread

from .. import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, BinaryIO, TextIO


class Progress:
    """Receives progress; every method may be called from any thread.  This base class
    ignores it all: subclass it to show or log progress."""

    def start(self, label: str, total_bytes: int) -> None:
        """A load or save of ``label`` begins; ``total_bytes`` of layer blobs may be read."""

    def layer_started(self, key: str, total: int | None) -> None:
        """Layer ``key`` (a short digest) starts streaming ``total`` bytes (None: unknown)."""

    def layer_advanced(self, key: str, nbytes: int) -> None:
        """``nbytes`` more of layer ``key`` went through."""

    def layer_done(self, key: str, status: str) -> None:
        """Layer ``key`` is finished: ``"done"``, ``"exists"`` (in the store already),
        ``"reused"`` (copied from a layer with the same content) or ``"failed"``."""

    def finish(self) -> None:
        """Everything is finished (or failed); close any display."""


class CountingReader:
    """``raw`` read through, reporting each chunk's size to a progress layer."""

    def __init__(self, raw: BinaryIO, progress: Progress, key: str) -> None:
        self._raw = raw
        self._progress = progress
        self._key = key

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._progress.layer_advanced(self._key, len(data))
        return data

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TqdmProgress(Progress):
    """Per-layer bars below an overall bar, on ``stream`` (a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._stream = stream
        self._lock = _thread.allocate_lock()
        self._bars: dict[str, Any] = {}
        self._total: Any = None

    def _bar(self, desc: str, total: int | None, position: int) -> Any:
        return self._tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                          position=position, leave=True, file=self._stream, dynamic_ncols=True,
                          bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {rate_fmt}"
                          if total else "{desc}: {n_fmt} {rate_fmt}")

    def start(self, label: str, total_bytes: int) -> None:
        with self._lock:
            self._total = self._bar(label, total_bytes or None, 0)

    def layer_started(self, key: str, total: int | None) -> None:
        with self._lock:
            if key not in self._bars:
                self._bars[key] = self._bar(key, total, len(self._bars) + 1)

    def layer_advanced(self, key: str, nbytes: int) -> None:
        with self._lock:
            bar = self._bars.get(key)
            if bar is not None:
                bar.update(nbytes)
            if self._total is not None:
                self._total.update(nbytes)

    def layer_done(self, key: str, status: str) -> None:
        with self._lock:
            bar = self._bars.get(key)
            if bar is None:
                bar = self._bars[key] = self._bar(key, None, len(self._bars) + 1)
            if status != "done" and self._total is not None and bar.total:
                self._total.update(max(0, bar.total - bar.n))  # skipped bytes count as done
            bar.set_description_str(f"{key} ({status})" if status != "done" else key)
            bar.refresh()

    def finish(self) -> None:
        with self._lock:
            for bar in [*self._bars.values(), self._total]:
                if bar is not None:
                    bar.close()
            self._bars.clear()
            self._total = None


def terminal_progress(stream: TextIO | None = None, *, quiet: bool = False) -> Progress:
    """A progress display on ``stream`` (stderr by default) when it is a terminal and not
    ``quiet``; otherwise silence."""
    import sys

    stream = stream if stream is not None else sys.stderr
    if quiet:
        return Progress()
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return _TqdmProgress(stream) if tty else Progress()


__all__ = ["CountingReader", "Progress", "terminal_progress"]
