"""Threads without ``threading``: importing it (with functools and collections) costs ~1.5 ms, a
noticeable part of a CLI call, and the few background threads the store runs need only a start
and a join."""

from __future__ import annotations

import _thread

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def start(target: Callable[[], object]) -> _thread.LockType:
    """Run ``target()`` in a new thread; return a lock held until it has returned (or raised).

    Acquire the lock to wait for the thread (``threading.Thread.join``); ``acquire(timeout=…)``
    waits for a while.  ``target`` deals with its own exceptions: one that escapes is printed
    by ``_thread`` and otherwise lost.
    """
    running = _thread.allocate_lock()
    running.acquire()

    def run() -> None:
        try:
            target()
        finally:
            running.release()

    try:
        _thread.start_new_thread(run, ())
    except BaseException:
        running.release()
        raise
    return running
