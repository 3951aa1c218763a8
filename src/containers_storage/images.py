"""The image store: ``<driver>-images/images.json`` and each image's big data directory."""

from __future__ import annotations

import os

from . import errors
from .lockfile import get_lock_file
from .records import Image, apply_name_operation, dedupe, now_rfc3339, reassign_names
from .recordstore import RecordStore, RWRecordStore, sha256_digest

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

MANIFEST_PREFIX = "manifest"


class ROImageStore(RecordStore[Image]):
    """Images of an additional (read-only) image store."""

    unknown_error = errors.ImageUnknown
    kind = "image"

    def _make(self, obj: dict[str, Any], location: int) -> Image:
        image = Image(obj)
        image.read_only = not self.read_write
        return image

    def _load(self, locked_for_writing: bool) -> bool:
        damaged = super()._load(locked_for_writing)
        self._by_digest: dict[str, list[Image]] | None = None
        return damaged

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

    def _unknown(self, ref: str) -> errors.StorageError:
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
        from .ids import unused_id

        if not id:
            id = unused_id(self.by_id)
        if id in self.by_id:
            raise errors.DuplicateID(f'an image with ID "{id}" already exists: {errors.DuplicateID.text}')
        names = dedupe(names)
        for name in names:
            other = self.by_name.get(name)
            if other is not None:
                raise errors.DuplicateName(
                    f'image name "{name}" is already associated with image "{other.id}": '
                    f"{errors.DuplicateName.text}")
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
        self._add(image)
        if self._by_digest is not None:  # else the lazy index is built from records, this one included
            for d in image.digests:
                self._by_digest.setdefault(d, []).append(image)
        try:
            self.save()
            for key, value, item_digest in big_data or ():
                self._set_big_data(image, key, value, item_digest or sha256_digest(value))
        except BaseException:
            try:
                self.delete(id)
            except Exception:
                pass
            raise
        return image

    def _remove(self, rec: Image) -> None:
        super()._remove(rec)
        for lst in self.by_digest.values():
            while rec in lst:
                lst.remove(rec)

    def update_names(self, ref: str, names: list[str], op: str) -> None:
        image = self.get(ref)
        new_names = apply_name_operation(image.names, names, op)
        history = image.names_history
        for name in new_names:
            history = dedupe([name, *history])
        if history:
            image.raw["names-history"] = history
        reassign_names(image, new_names, self.by_name)
        self.save()

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


def new_image_store(directory: str) -> ImageStore:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = get_lock_file(os.path.join(directory, "images.lock"))
    return ImageStore(directory, lock, [os.path.join(directory, "images.json")])


def new_ro_image_store(directory: str) -> ROImageStore:
    lock = get_lock_file(os.path.join(directory, "images.lock"), read_only=True)
    return ROImageStore(directory, lock, [os.path.join(directory, "images.json")])
