"""Putting a planned image into the store, record for record as containers/image does.

What c/image's storage destination (skopeo, podman, buildah) writes, and so what this writes:

- each layer's ID is its chain ID: the diff ID's hex for the base layer, then
  ``sha256(parent ID + "+" + diff ID hex)``; the layer records the blob's digest as its
  compressed digest (the blob's own size), the diff ID, and the diff's size and owners;
- a layer with that ID in the store is used as it is; a layer elsewhere in the store with the
  same diff ID (or made from the same blob) is copied from its diff instead of applying the
  blob again;
- the image's ID is the config digest's hex, its creation time the config's; its big data are
  the config under its digest, the index it was chosen from as ``manifest-<digest>``, the
  manifest as ``manifest-<digest>`` and ``manifest``, and ``signature-<hex>`` (empty: these
  formats carry no signatures); its metadata records the signature sizes; its names are
  added one by one (each also going into names-history).

Layers are applied concurrently where the driver can stage a diff before its layer exists
(overlay): each is applied into its own staging directory by a worker thread, then committed
in order.  Otherwise (vfs copies the parent into each new layer) they are applied one after the
other, each decompressing on a thread of its own.  Every blob is verified while it streams
(digest and size of the blob, digest of the diff), and each layer made is held under its
per-digest lock (:meth:`~containers_storage.store.Store.digest_lock` of ``sha256:<layer ID>``),
so a concurrent load of the same layers waits and then finds them.  A failure deletes the
layers this load made: the store is left as it was.
"""

from __future__ import annotations

import hashlib
import os

from .. import TYPE_CHECKING, errors
from .common import TransportError, go_json
from .progress import CountingReader, Progress

if TYPE_CHECKING:
    from typing import BinaryIO

    from ..drivers.base import StagedDiff
    from ..records import Image, Layer
    from ..store import Store
    from .source import ImagePlan, LayerPlan


class LoadedImage:
    """One image a load put into the store (or found there).

    Attributes:
        id: the image's ID (its config digest's hex).
        names: the names the load gave it (podman's completed forms); empty for an image its
            input does not name.
        manifest_digest: the digest of its manifest.
        image: its record after the load.
    """

    __slots__ = ("id", "image", "manifest_digest", "names")

    def __init__(self, id: str, names: list[str], manifest_digest: str, image: Image) -> None:
        """Describe a loaded image."""
        self.id = id
        self.names = names
        self.manifest_digest = manifest_digest
        self.image = image

    @property
    def reference(self) -> str:
        """What podman prints after ``Loaded image:``: each name, or ``sha256:<id>``."""
        return self.names[0] if self.names else "sha256:" + self.id

    def __repr__(self) -> str:
        """``LoadedImage(id=..., names=[...])``."""
        return f"LoadedImage(id={self.id[:12]!r}, names={self.names!r})"


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The layer IDs c/image gives a stack of diffs: the first diff ID's hex, then each
    ``sha256(<parent ID>+<diff ID hex>)``."""
    ids: list[str] = []
    for diff_id in diff_ids:
        hex_ = diff_id.split(":", 1)[1]
        ids.append(hashlib.sha256(f"{ids[-1]}+{hex_}".encode()).hexdigest() if ids else hex_)
    return ids


def _key(layer: LayerPlan) -> str:
    return layer.digest.split(":", 1)[1][:12]


class _Loader:
    """One image's layers into the store (see the module's docstring)."""

    def __init__(self, store: Store, plan: ImagePlan, progress: Progress, jobs: int) -> None:
        self.store = store
        self.plan = plan
        self.progress = progress
        self.jobs = jobs
        self.ids = chain_ids([l.diff_id for l in plan.layers])
        self.made: list[str] = []  # layers this load created, bottom first
        import threading

        self._made_lock = threading.Lock()
        self._committed = [threading.Event() for _ in self.ids]
        self._failed = False

    # -- one layer ---------------------------------------------------------------------------
    def _existing(self, i: int) -> bool:
        try:
            self.store.layer(self.ids[i])
        except errors.LayerUnknown:
            return False
        return True

    def _reuse_source(self, layer: LayerPlan) -> Layer | None:
        """A layer elsewhere in the store with this content (c/image's blob reuse)."""
        found = self.store.layers_by_uncompressed_digest(layer.diff_id)
        if not found:
            found = self.store.layers_by_compressed_digest(layer.digest)
        for candidate in found:
            if candidate.uncompressed_digest == layer.diff_id:
                return candidate
        return None

    def _put(self, i: int, diff: BinaryIO | None, staged: StagedDiff | None, reused: Layer | None) -> None:
        layer = self.plan.layers[i]
        parent = self.ids[i - 1] if i else None
        if reused is not None:
            # The stream is the reused layer's uncompressed diff: record the blob's digest only
            # when that layer was made from this very blob (its size with it), as c/image does.
            same_blob = reused.compressed_digest == layer.digest and reused.compressed_size > 0
            self.store.put_layer(
                diff, id=self.ids[i], parent=parent,
                original_digest=layer.digest if same_blob else layer.diff_id,
                original_size=reused.compressed_size if same_blob else None,
                uncompressed_digest=layer.diff_id)
        else:
            self.store.put_layer(
                diff, id=self.ids[i], parent=parent, staged=staged, original_digest=layer.digest,
                original_size=layer.size, uncompressed_digest=layer.diff_id, verify_digests=True)
        with self._made_lock:
            self.made.append(self.ids[i])

    def _blob(self, layer: LayerPlan) -> BinaryIO:
        self.progress.layer_started(_key(layer), layer.size)
        return CountingReader(layer.opener(), self.progress, _key(layer))  # type: ignore[return-value]

    def _reused_diff(self, source: Layer) -> BinaryIO:
        """The uncompressed diff of ``source`` in a temporary file: the store's diff holds its
        layer lock, which creating the new layer needs too (as in c/image)."""
        import tempfile

        f = tempfile.TemporaryFile(dir=os.environ.get("TMPDIR") or "/var/tmp")  # noqa: SIM115 (returned)
        try:
            self.store.diff(source.id, f, compression=0)
            f.seek(0)
        except BaseException:
            f.close()
            raise
        return f

    def _wait_parent(self, i: int) -> None:
        if i:
            self._committed[i - 1].wait()
        if self._failed:
            raise _Abandoned

    def _one(self, i: int, staging: bool) -> None:
        """Make layer ``i`` (or find it) under its digest lock; commits wait for the parent."""
        layer = self.plan.layers[i]
        key = _key(layer)
        lock = self.store.digest_lock("sha256:" + self.ids[i])
        lock.lock()
        try:
            if self._existing(i):
                self._wait_parent(i)
                self.progress.layer_done(key, "exists")
                return
            source = self._reuse_source(layer)
            if source is not None:
                self._wait_parent(i)
                with self._reused_diff(source) as diff:
                    self._commit(i, diff, None, source)
                self.progress.layer_done(key, "reused")
                return
            if not staging:
                self._wait_parent(i)
                with self._blob(layer) as blob:
                    self._commit(i, blob, None, None)
                self.progress.layer_done(key, "done")
                return
            with self._blob(layer) as blob:
                staged = self.store.prepare_staged_layer(blob)
            try:
                self._wait_parent(i)
                self._commit(i, None, staged, None)
            finally:
                self.store.cleanup_staged_layer(staged)
            self.progress.layer_done(key, "done")
        except BaseException:
            self._failed = True
            self.progress.layer_done(key, "failed")
            raise
        finally:
            self._committed[i].set()
            lock.unlock()

    def _commit(self, i: int, diff: BinaryIO | None, staged: StagedDiff | None, reused: Layer | None) -> None:
        try:
            self._put(i, diff, staged, reused)
        except errors.DuplicateID:
            if not self._existing(i):  # made and deleted meanwhile: nothing sane to do
                raise
            # Another process (podman, skopeo, or another load) made it meanwhile: use theirs.

    # -- all layers ----------------------------------------------------------------------------
    def run(self) -> str:
        """Make every layer; returns the top layer's ID ("" for an image without layers)."""
        if not self.ids:
            return ""
        staging = self.jobs > 1 and len(self.ids) > 1 and self._can_stage()
        if not staging:
            for i in range(len(self.ids)):
                self._one(i, False)
            return self.ids[-1]
        from concurrent.futures import ThreadPoolExecutor

        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=min(self.jobs, len(self.ids)),
                                thread_name_prefix="load-layer") as pool:
            futures = [pool.submit(self._one, i, True) for i in range(len(self.ids))]
            for future in futures:
                try:
                    future.result()
                except _Abandoned:
                    pass
                except BaseException as e:
                    first_error = first_error or e
        if first_error is not None:
            raise first_error
        return self.ids[-1]

    def _can_stage(self) -> bool:
        """Whether diffs can be applied before their layers exist: the driver stages (overlay),
        and new layers need no ID maps of the store's (staging applies without them)."""
        from ..drivers.base import can_stage

        return not self.store.uid_map and not self.store.gid_map and can_stage(self.store.driver)

    def undo(self) -> None:
        """Delete the layers this load made, top first (those something else uses stay)."""
        for id in reversed(self.made):
            try:
                self.store.delete_layer(id)
            except errors.StorageError:
                pass


class _Abandoned(Exception):
    """A layer left alone because one below it failed."""


def _image_items(plan: ImagePlan) -> tuple[list[tuple[str, bytes, str]], str]:
    """The big data items (key, data, digest) and metadata c/image 5.23 stores for an image."""
    mdigest = plan.manifest_digest
    items: list[tuple[str, bytes, str]] = [(plan.config_digest, plan.config, "")]
    if plan.toplevel is not None and plan.toplevel != plan.manifest:
        from .common import sha256_digest

        tdigest = sha256_digest(plan.toplevel)
        items.append(("manifest-" + tdigest, plan.toplevel, tdigest))
    items.append(("manifest-" + mdigest, plan.manifest, mdigest))
    items.append(("manifest", plan.manifest, mdigest))
    # Copying calls PutSignatures even with none: an empty item under the manifest's digest, and
    # its (empty) list of sizes in the metadata.
    items.append(("signature-" + mdigest.split(":", 1)[1], b"", ""))
    metadata = go_json({"signatures-sizes": {mdigest: []}}).decode()
    return items, metadata


def load_plan(store: Store, plan: ImagePlan, *, names: list[str] | None = None,
              progress: Progress | None = None, jobs: int | None = None) -> LoadedImage:
    """Put one planned image into ``store`` (see the module's docstring)."""
    progress = progress or Progress()
    loader = _Loader(store, plan, progress, jobs or max(2, os.cpu_count() or 1))
    image_names = list(plan.names if names is None else names)
    try:
        top = loader.run()
        items, metadata = _image_items(plan)
        try:
            image = store.create_image(top or None, id=plan.id, created=plan.created or None,
                                       metadata=metadata, big_data=items)
        except errors.DuplicateID:
            image = store.image(plan.id)
            if image.top_layer != top:
                raise TransportError(f"image with ID {plan.id!r} already exists, but uses a different "
                                     "top layer: that ID is already in use") from None
            for key, data, digest in items:
                store.set_image_big_data(image.id, key, data, manifest_digest=digest or None)
            store.set_metadata(image.id, metadata)
    except BaseException:
        loader.undo()
        raise
    for name in image_names:
        store.add_names(image.id, [name])
    return LoadedImage(image.id, image_names, plan.manifest_digest, store.image(image.id))
