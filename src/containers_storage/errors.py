"""Error types mirroring the Go library's sentinel errors.

Go wraps sentinels (``fmt.Errorf("%w: %s", ErrLayerUnknown, id)``) and callers test them with
``errors.Is``; here each sentinel is an exception class, so ``except LayerUnknown`` plays the part
of ``errors.Is`` while ``str(err)`` keeps Go's full wrapped text for the CLI.

Every error the library raises on purpose is a :class:`StorageError`.  The "not known" family
(:class:`LayerUnknown`, :class:`ImageUnknown`, :class:`ContainerUnknown`, ...) derives from
:class:`NotKnown`, which is also a :class:`LookupError` and carries the reference that was not
found in :attr:`NotKnown.ref`::

    try:
        store.image("example.com/app:latest")
    except LookupError as e:       # or containers_storage.ImageUnknown
        print("no image", e.ref)   # str(e) is Go's text: 'locating image with ID "...": image not known'
"""

from __future__ import annotations

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import ClassVar, Self


class StorageError(Exception):
    """Base of every error this library raises on purpose.

    ``str(err)`` is the text Go's library would give for the same failure (the CLI prints it);
    :attr:`text` is the class's bare sentinel text.
    """

    #: Go's sentinel text of this error kind (``ErrLayerUnknown``'s "layer not known", ...).
    text: ClassVar[str] = "storage error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.text)

    @classmethod
    def about(cls, subject: str) -> Self:
        """Go's ``fmt.Errorf("%w: %s", Err, subject)`` form: ``"<text>: <subject>"``."""
        return cls(f"{cls.text}: {subject}")

    @classmethod
    def after(cls, prefix: str) -> Self:
        """Go's ``fmt.Errorf("%s: %w", prefix, Err)`` form: ``"<prefix>: <text>"``."""
        return cls(f"{prefix}: {cls.text}")


class NotKnown(StorageError, LookupError):
    """A layer, image, container or item the store does not know (also a :class:`LookupError`).

    Attributes:
        ref: the ID, name or other reference that was looked up, when the raiser knew it (None
            otherwise).  ``str()`` stays Go's text, which may or may not quote the reference.
    """

    text = "not known"

    def __init__(self, message: str | None = None, *, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref

    @classmethod
    def about(cls, subject: str, *, ref: str | None = None) -> Self:
        """Go's ``"<text>: <subject>"`` form, remembering ``ref``."""
        return cls(f"{cls.text}: {subject}", ref=ref)

    @classmethod
    def after(cls, prefix: str, *, ref: str | None = None) -> Self:
        """Go's ``"<prefix>: <text>"`` form, remembering ``ref``."""
        return cls(f"{prefix}: {cls.text}", ref=ref)


# -- not known ------------------------------------------------------------------------------------
class LayerUnknown(NotKnown):
    """No layer has that ID, ID prefix or name (Go's ``ErrLayerUnknown``)."""

    text = "layer not known"


class ImageUnknown(NotKnown):
    """No image has that ID, ID prefix or name (Go's ``ErrImageUnknown``)."""

    text = "image not known"


class ContainerUnknown(NotKnown):
    """No container has that ID, ID prefix or name (Go's ``ErrContainerUnknown``)."""

    text = "container not known"


class ParentUnknown(NotKnown):
    """The parent named for a new layer does not exist (Go's ``ErrParentUnknown``)."""

    text = "parent of layer not known"


class NotALayer(NotKnown):
    """The reference names no layer, where only a layer will do (Go's ``ErrNotALayer``)."""

    text = "identifier is not a layer"


class NotAnImage(NotKnown):
    """The reference names no image, where only an image will do (Go's ``ErrNotAnImage``)."""

    text = "identifier is not an image"


class NotAContainer(NotKnown):
    """The reference names no container, where only a container will do (Go's ``ErrNotAContainer``)."""

    text = "identifier is not a container"


class NotAnID(NotKnown):
    """The reference names no layer, image or container (Go's ``ErrNotAnID``)."""

    text = "identifier is not a layer, image, or container"


class SizeUnknown(NotKnown):
    """The size of a big data item is not recorded and cannot be read (Go's ``ErrSizeUnknown``)."""

    text = "size is not known"


class DigestUnknown(NotKnown):
    """The digest of a big data item is not recorded (Go's ``ErrDigestUnknown``)."""

    text = "could not compute digest of item"


class BigDataUnknown(NotKnown):
    """The record exists but has no big data item of that name (Go wraps ``os.ErrNotExist``).

    Attributes:
        key: the item's name.
    """

    text = "file does not exist"

    def __init__(self, message: str | None = None, *, ref: str | None = None, key: str = "") -> None:
        super().__init__(message, ref=ref)
        self.key = key


# -- conflicts --------------------------------------------------------------------------------------
class DuplicateID(StorageError):
    """A new layer, image or container asked for an ID already in use (Go's ``ErrDuplicateID``)."""

    text = "that ID is already in use"


class DuplicateName(StorageError):
    """A name is already taken by another record of the same kind (Go's ``ErrDuplicateName``)."""

    text = "that name is already in use"


class DuplicateImageNames(StorageError):
    """A read-only image store gives one name to several images (Go's ``ErrDuplicateImageNames``)."""

    text = "read-only image store assigns the same name to multiple images"


class DuplicateLayerNames(StorageError):
    """A read-only layer store gives one name to several layers (Go's ``ErrDuplicateLayerNames``)."""

    text = "read-only layer store assigns the same name to multiple layers"


class ImageUsedByContainer(StorageError):
    """The image cannot be deleted: a container uses it (Go's ``ErrImageUsedByContainer``)."""

    text = "image is in use by a container"


class LayerHasChildren(StorageError):
    """The layer cannot be deleted: other layers build on it (Go's ``ErrLayerHasChildren``)."""

    text = "layer has children"


class LayerUsedByContainer(StorageError):
    """The layer is a container's, or still mounted (Go's ``ErrLayerUsedByContainer``)."""

    text = "layer is in use by a container"


class LayerUsedByImage(StorageError):
    """The layer cannot be deleted: an image uses it (Go's ``ErrLayerUsedByImage``)."""

    text = "layer is in use by an image"


class ParentIsContainer(StorageError):
    """A new layer's parent is a container's layer (Go's ``ErrParentIsContainer``)."""

    text = "would-be parent layer is a container"


class LayerNotMounted(StorageError):
    """Unmounting a layer that is not mounted (Go's ``ErrLayerNotMounted``)."""

    text = "layer is not mounted"


# -- the store and its options ----------------------------------------------------------------------
class IncompleteOptions(StorageError):
    """Neither a graph root nor a run root was given (Go's ``ErrIncompleteOptions``)."""

    text = "missing necessary StoreOptions"


class InvalidBigDataName(StorageError):
    """A big data item's name is empty or otherwise unusable (Go's ``ErrInvalidBigDataName``)."""

    text = "not a valid name for a big data item"


class LoadError(StorageError):
    """A records file could not be read or parsed (Go's ``ErrLoadError``)."""

    text = "error loading storage metadata"


class StoreIsReadOnly(StorageError):
    """A write asked of a read-only (additional) store (Go's ``ErrStoreIsReadOnly``)."""

    text = "called a write method on a read-only store"


class NotSupported(StorageError):
    """The driver or platform cannot do this (Go's ``ErrNotSupported``)."""

    text = "not supported"


class InvalidMappings(StorageError):
    """ID mappings that overlap or do not fit (Go's ``ErrInvalidMappings``)."""

    text = "invalid mappings specified"


class NoAvailableIDs(StorageError):
    """Too few unused IDs for an automatic user namespace (Go's ``ErrNoAvailableIDs``)."""

    text = "not enough unused IDs in user namespace"


class InvalidArchive(StorageError):
    """A layer tarball that is malformed, truncated or tries to escape its layer."""

    text = "invalid layer archive"


class DigestMismatch(InvalidArchive):
    """Content that is not what its digest or size said it is (a layer blob, a manifest, a
    config); nothing of it is kept."""

    text = "digest mismatch"


class DriverError(StorageError):
    """A graph driver could not do what was asked (mount failed, unknown option, ...)."""

    text = "storage driver error"


__all__ = [
    "BigDataUnknown",
    "ContainerUnknown",
    "DigestMismatch",
    "DigestUnknown",
    "DriverError",
    "DuplicateID",
    "DuplicateImageNames",
    "DuplicateLayerNames",
    "DuplicateName",
    "ImageUnknown",
    "ImageUsedByContainer",
    "IncompleteOptions",
    "InvalidArchive",
    "InvalidBigDataName",
    "InvalidMappings",
    "LayerHasChildren",
    "LayerNotMounted",
    "LayerUnknown",
    "LayerUsedByContainer",
    "LayerUsedByImage",
    "LoadError",
    "NoAvailableIDs",
    "NotAContainer",
    "NotALayer",
    "NotAnID",
    "NotAnImage",
    "NotKnown",
    "NotSupported",
    "ParentIsContainer",
    "ParentUnknown",
    "SizeUnknown",
    "StorageError",
    "StoreIsReadOnly",
]
