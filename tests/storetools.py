"""Helpers for tests in any directory that open real stores (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from containers_storage import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from containers_storage.store import Store


def close_store(s: Store) -> None:
    """Shut a test's store down (unmounting everything; a second try when the first hits a
    layer still busy) and forget it, so the next test opens its own."""
    try:
        try:
            s.shutdown(force=True)
        except errors.StorageError:
            s.shutdown(force=True)
    finally:
        s.close()
