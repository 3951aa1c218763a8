"""The C accelerator (``_fastapply``), or None: built without a compiler, or turned off with
``CONTAINERS_STORAGE_PURE_PYTHON=1`` (to compare with, or to rule it out when debugging)."""

from __future__ import annotations

import os

from .. import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["fastapply"]

fastapply: ModuleType | None
try:
    if os.environ.get("CONTAINERS_STORAGE_PURE_PYTHON") == "1":
        raise ImportError("pure Python asked for")
    from . import _fastapply as fastapply
except ImportError:
    fastapply = None
