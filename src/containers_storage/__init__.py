"""containers-storage for Python: Go's containers/storage store (podman's), from Python.

Open the store podman uses, or one of your own, and work with its layers, images and
containers::

    import containers_storage

    with containers_storage.open_store() as store:
        for image in store.images():
            print(image.id, image.names)

Everything below is importable from the package itself; the submodules hold the rest
(:mod:`containers_storage.errors` has every error class).  The names are loaded on first use,
so that ``import containers_storage`` (which every CLI call does) costs nothing.
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from .autouserns import AutoUserNsOptions
    from .check import CheckOptions, CheckReport, RepairOptions
    from .config import StoreOptions
    from .errors import (
        BigDataUnknown,
        ContainerUnknown,
        DriverError,
        DuplicateID,
        DuplicateName,
        ImageUnknown,
        ImageUsedByContainer,
        InvalidArchive,
        LayerHasChildren,
        LayerUnknown,
        LayerUsedByContainer,
        LayerUsedByImage,
        NotKnown,
        NotSupported,
        StorageError,
    )
    from .idtools import IDMap
    from .nameops import NameOperation
    from .records import Container, Image, Layer
    from .store import PutLayerResult, Store, get_store, open_store
    from .userns import UserNamespaceError, UserNamespaceRequired

# name -> submodule: what ``from containers_storage import X`` loads on first use.
_EXPORTS: dict[str, str] = {
    "open_store": "store", "get_store": "store", "Store": "store", "PutLayerResult": "store",
    "StoreOptions": "config",
    "Layer": "records", "Image": "records", "Container": "records",
    "NameOperation": "nameops",
    "IDMap": "idtools",
    "AutoUserNsOptions": "autouserns",
    "CheckOptions": "check", "CheckReport": "check", "RepairOptions": "check",
    "UserNamespaceRequired": "userns", "UserNamespaceError": "userns",
    **dict.fromkeys((
        "StorageError", "NotKnown", "LayerUnknown", "ImageUnknown", "ContainerUnknown",
        "BigDataUnknown", "DuplicateID", "DuplicateName", "LayerHasChildren", "LayerUsedByImage",
        "LayerUsedByContainer", "ImageUsedByContainer", "InvalidArchive", "DriverError",
        "NotSupported"), "errors"),
}

__all__ = [  # the same names as _EXPORTS (a test holds them together)
    "AutoUserNsOptions", "BigDataUnknown", "CheckOptions", "CheckReport", "Container",
    "ContainerUnknown", "DriverError", "DuplicateID", "DuplicateName", "IDMap", "Image",
    "ImageUnknown", "ImageUsedByContainer", "InvalidArchive", "Layer", "LayerHasChildren",
    "LayerUnknown", "LayerUsedByContainer", "LayerUsedByImage", "NameOperation", "NotKnown",
    "NotSupported", "PutLayerResult", "RepairOptions", "StorageError", "Store", "StoreOptions",
    "UserNamespaceError", "UserNamespaceRequired", "get_store", "open_store",
]


def __getattr__(name: str) -> object:
    """Load an exported name from its submodule on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__ rather than importlib: the importlib package is one more import at start-up.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
