"""The C accelerator (``_fastapply``), or None: see :mod:`containers_storage.native`."""

from __future__ import annotations

from .. import TYPE_CHECKING
from ..native import load

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["fastapply"]

fastapply: ModuleType | None = load("containers_storage.archive._fastapply")
