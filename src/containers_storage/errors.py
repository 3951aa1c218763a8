"""Error types mirroring the Go library's sentinel errors.

Go wraps sentinels (``fmt.Errorf("%w: %s", ErrLayerUnknown, id)``) and callers test them with
``errors.Is``; here each sentinel is an exception class, so ``except LayerUnknown`` plays the part
of ``errors.Is`` while ``str(err)`` keeps Go's full wrapped text for the CLI.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import ClassVar


class StorageError(Exception):
    """Base of every error this library raises on purpose."""

    text: ClassVar[str] = "storage error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.text)

    @classmethod
    def about(cls, subject: str) -> StorageError:
        """Go's ``fmt.Errorf("%w: %s", Err, subject)`` form: ``"<text>: <subject>"``."""
        return cls(f"{cls.text}: {subject}")

    @classmethod
    def after(cls, prefix: str) -> StorageError:
        """Go's ``fmt.Errorf("%s: %w", prefix, Err)`` form: ``"<prefix>: <text>"``."""
        return cls(f"{prefix}: {cls.text}")


class ContainerUnknown(StorageError):
    text = "container not known"


class DigestUnknown(StorageError):
    text = "could not compute digest of item"


class DuplicateID(StorageError):
    text = "that ID is already in use"


class DuplicateImageNames(StorageError):
    text = "read-only image store assigns the same name to multiple images"


class DuplicateLayerNames(StorageError):
    text = "read-only layer store assigns the same name to multiple layers"


class DuplicateName(StorageError):
    text = "that name is already in use"


class ImageUnknown(StorageError):
    text = "image not known"


class ImageUsedByContainer(StorageError):
    text = "image is in use by a container"


class IncompleteOptions(StorageError):
    text = "missing necessary StoreOptions"


class InvalidBigDataName(StorageError):
    text = "not a valid name for a big data item"


class LayerHasChildren(StorageError):
    text = "layer has children"


class LayerNotMounted(StorageError):
    text = "layer is not mounted"


class LayerUnknown(StorageError):
    text = "layer not known"


class LayerUsedByContainer(StorageError):
    text = "layer is in use by a container"


class LayerUsedByImage(StorageError):
    text = "layer is in use by an image"


class LoadError(StorageError):
    text = "error loading storage metadata"


class NotAContainer(StorageError):
    text = "identifier is not a container"


class NotALayer(StorageError):
    text = "identifier is not a layer"


class NotAnID(StorageError):
    text = "identifier is not a layer, image, or container"


class NotAnImage(StorageError):
    text = "identifier is not an image"


class ParentIsContainer(StorageError):
    text = "would-be parent layer is a container"


class ParentUnknown(StorageError):
    text = "parent of layer not known"


class SizeUnknown(StorageError):
    text = "size is not known"


class StoreIsReadOnly(StorageError):
    text = "called a write method on a read-only store"


class NotSupported(StorageError):
    text = "not supported"


class InvalidMappings(StorageError):
    text = "invalid mappings specified"


class NoAvailableIDs(StorageError):
    text = "not enough unused IDs in user namespace"


class InvalidArchive(StorageError):
    """A layer tarball that is malformed, truncated or tries to escape its layer."""

    text = "invalid layer archive"


class DriverError(StorageError):
    """A graph driver could not do what was asked (mount failed, unknown option, ...)."""

    text = "storage driver error"
