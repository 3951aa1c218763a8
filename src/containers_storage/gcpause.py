"""The cyclic garbage collector paused while a burst of acyclic objects is made.

Parsing a TOC makes ~100,000 objects (its JSON, an entry and a chunk list per file, the other
layers' index) that hold no reference cycles; the collections their allocations trigger walk
them again and again, and cost ~16 ms of a 4 MB TOC's ~50 ms.  Pauses nest and may overlap
between threads: the collector is turned off by the first and back on by the last, and only if
it was on when the first began (a program that turned it off keeps it off)."""

from __future__ import annotations

import _thread
import gc

__all__ = ["Paused"]

_lock = _thread.allocate_lock()
_depth = 0
_was_enabled = False


class Paused:
    """``with Paused(): ...``: no automatic collection inside (``gc.collect()`` still works).

    Keep the block to object-making work of bounded length: garbage with cycles made inside
    waits for the next collection after it."""

    def __enter__(self) -> Paused:
        global _depth, _was_enabled
        with _lock:
            if _depth == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        global _depth
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
