"""The C extension modules, under one rule: each is used unless it was not built (no compiler or
Python headers) or ``CONTAINERS_STORAGE_PURE_PYTHON=1`` asks for the Python code (to compare
with, or to rule the C code out when debugging)."""

from __future__ import annotations

import os
import sys

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["load"]


def load(name: str) -> ModuleType | None:
    """The extension module ``name`` (absolute, e.g. ``containers_storage._removetree``), or None.

    Call it where the module is first needed: what a module loads when it is imported, every CLI
    call that imports it pays for."""
    if os.environ.get("CONTAINERS_STORAGE_PURE_PYTHON") == "1":
        return None
    try:
        __import__(name)
    except ImportError:
        return None
    return sys.modules[name]
