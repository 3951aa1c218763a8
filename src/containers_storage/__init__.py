"""containers-storage for Python: the Go containers/storage on-disk store, from Python.

Imports here stay lazy so that the CLI starts fast; use ``containers_storage.store.get_store``.
"""

from __future__ import annotations

__version__ = "0.1.0"
