"""The image store: ``<driver>-images/images.json`` and each image's big data directory."""

from __future__ import annotations

import os

from . import TYPE_CHECKING, errors
from .layout import Files
from .lockfile import get_lock_file
from .records import Image, dedupe, now_rfc3339
from .recordstore import RecordStore, RWRecordStore, sha256_digest

if TYPE_CHECKING:
    from typing import Any

    from .lockfile import LockFile

MANIFEST_PREFIX = "manifest"


class ROImageStore(RecordStore[Image]):
    """Images of an additional (read-only) image store."""

    unknown_error = errors.ImageUnknown
    kind = "image"

    def __init__(self, files: Files, lock: LockFile) -> None:
        super().__init__(files, lock)
        self._by_digest: dict[str, list[Image]] | None = None

    def _make(self, obj: dict[str, Any], location: int) -> Image:
        image = Image(obj)
        image.read_only = not self.read_write
        return image

    def _loaded(self) -> None:
        self._by_digest = None

    @property
    def by_digest(self) -> dict[str, list[Image]]:
        """Digest index, built on first use: listing and name lookups never need it."""
        if self._by_digest is None:
            index: dict[str, list[Image]] = {}
            for image in self.records:
                for d in image.digests:
                    index.setdefault(d, []).append(image)
            self._by_digest = index
        return self._by_digest

    def _unknown(self, ref: str, purpose: str = "") -> errors.StorageError:
        return errors.ImageUnknown.after(f'locating image with ID "{ref}"', ref=ref)

    def images_by_digest(self, digest: str) -> list[Image]:
        return list(self.by_digest.get(digest, ()))

    def images_by_top_layer(self, layer_id: str) -> list[Image]:
        return [i for i in self.records if i.top_layer == layer_id or layer_id in i.mapped_top_layers]


class ImageStore(ROImageStore, RWRecordStore[Image]):
    """The primary image store."""

    def _reindex_digests(self, image: Image) -> None:
        for lst in self.by_digest.values():
            while image in lst:
                lst.remove(image)
        image.recompute_digests()
        for d in image.digests:
            self.by_digest.setdefault(d, []).append(image)

    def create(self, id: str, names: list[str], layer: str, *, metadata: str = "",
               created: str = "", digest: str = "", names_history: list[str] | None = None,
               flags: dict[str, Any] | None = None,
               big_data: list[tuple[str, bytes, str]] | None = None) -> Image:
        id, names = self._check_new(id, names)
        if digest:
            from .digest import DigestError, validate

            try:
                validate(digest)
            except DigestError as e:  # Go's recomputeDigests, as CreateImage reports it
                raise errors.StorageError(f"validating digests for new image: validating image digest "
                                          f'"{digest}": {e}') from None
        data: dict[str, Any] = {"id": id}
        if digest:
            data["digest"] = digest
        if names:
            data["names"] = names
        if names_history:
            data["names-history"] = list(names_history)
        if layer:
            data["layer"] = layer
        if metadata:
            data["metadata"] = metadata
        data["created"] = created or now_rfc3339()
        if flags:
            data["flags"] = dict(flags)
        image = Image(data)
        image.recompute_digests()
        self._add_new(image, ((key, value, item_digest or sha256_digest(value))
                              for key, value, item_digest in big_data or ()))
        return image

    def _add(self, rec: Image) -> None:
        super()._add(rec)
        if self._by_digest is not None:  # else the lazy index is built from records, this one included
            for d in rec.digests:
                self._by_digest.setdefault(d, []).append(rec)

    def _remove(self, rec: Image) -> None:
        super()._remove(rec)
        for lst in self.by_digest.values():
            while rec in lst:
                lst.remove(rec)

    def _duplicate_id(self, id: str) -> errors.StorageError:
        return errors.DuplicateID(f'an image with ID "{id}" already exists: {errors.DuplicateID.text}')

    def _duplicate_name(self, name: str, holder: Image) -> errors.StorageError:
        return errors.DuplicateName(f'image name "{name}" is already associated with image '
                                    f'"{holder.id}": {errors.DuplicateName.text}')

    def _names_changing(self, rec: Image, new_names: list[str]) -> None:
        history = rec.names_history
        for name in new_names:
            history = dedupe([name, *history])
        if history:
            rec.raw["names-history"] = history

    def set_big_data(self, ref: str, key: str, data: bytes, manifest_digest: str | None = None) -> None:
        image = self.get(ref)
        if key.startswith(MANIFEST_PREFIX):
            digest = manifest_digest or manifest_digest_of(data)
        else:
            digest = sha256_digest(data)
        self._set_big_data(image, key, data, digest)

    def _set_big_data(self, image: Image, key: str, data: bytes, digest: str) -> None:
        self._write_big_data(image, key, data)
        changed = image.set_big_data_info(key, len(data), digest)
        self._reindex_digests(image)
        if changed:
            self.save()

    def add_mapped_top_layer(self, ref: str, layer: str) -> None:
        image = self.get(ref)
        image.raw.setdefault("mapped-layers", []).append(layer)
        self.save()

    def remove_mapped_top_layer(self, ref: str, layer: str) -> None:
        image = self.get(ref)
        mapped = image.raw.get("mapped-layers") or []
        if layer in mapped:
            image.raw["mapped-layers"] = [m for m in mapped if m != layer]
            self.save()


def manifest_digest_of(data: bytes) -> str:
    """Go's manifest.Digest: sha256 of the manifest, or of its payload for v1 signed manifests.

    Signed schema-1 manifests are rare enough that we digest them whole, like unsigned ones.
    """
    return sha256_digest(data)


def new_image_store(files: Files) -> ImageStore:
    os.makedirs(files.directory, mode=0o700, exist_ok=True)
    return ImageStore(files, get_lock_file(files.lock))


def new_ro_image_store(files: Files) -> ROImageStore:
    return ROImageStore(files, get_lock_file(files.lock, read_only=True))
