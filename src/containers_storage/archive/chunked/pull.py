"""One layer blob into the store: partially where the store and the layer allow it, else whole.

What containers/image does around ``NewDiffer`` / ``PrepareStagedLayer`` / ``ApplyStagedLayer``
for one layer, without the image around it: the partial pull, the full-pull fallback Go takes
on ``ErrFallbackToOrdinaryLayerDownload``, and the layer ID c/image gives (a chain ID of the diff
ID, or of the TOC digest when the diff ID cannot be known).
"""

from __future__ import annotations

import hashlib

from ... import TYPE_CHECKING
from ...errors import DigestMismatch, DuplicateID
from .toc import FallbackToFullPull

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ...records import Layer
    from ...store import Store
    from .source import BlobSource

__all__ = ["PullResult", "layer_id", "pull_layer"]

EXPECTED_DIFF_ID_FLAG = "expected-layer-diffid"  # c/image's expectedLayerDiffIDFlag


class PullResult:
    """What :func:`pull_layer` did.

    Attributes:
        layer: the layer (new, or one the store had with the same ID).
        partial: True when applied file by file, False after a full pull.
        fallback_reason: why a partial pull was not done ("" when it was).
        fetched_bytes: bytes of file data asked of the source by the partial pull.
    """

    __slots__ = ("fallback_reason", "fetched_bytes", "layer", "partial")

    def __init__(self, layer: Layer, partial: bool, fallback_reason: str = "",
                 fetched_bytes: int = 0) -> None:
        self.layer = layer
        self.partial = partial
        self.fallback_reason = fallback_reason
        self.fetched_bytes = fetched_bytes

    def __repr__(self) -> str:
        """A short description for debugging."""
        how = "partial" if self.partial else f"full ({self.fallback_reason})"
        return f"PullResult({self.layer!r}, {how})"


def layer_id(parent: str, diff_id: str = "", toc_digest: str = "") -> str:
    """The layer ID c/image gives: the diff ID's hex for a base layer, else a digest of the parent
    and it; ``@TOC=`` and the TOC digest's hex when only that identifies the layer."""
    if diff_id:
        component = diff_id.split(":", 1)[-1]
        if not parent:
            return component
    else:
        component = "@TOC=" + toc_digest.split(":", 1)[-1]
    return hashlib.sha256(f"{parent}+{component}".encode()).hexdigest()


def pull_layer(store: Store, source: BlobSource, *, digest: str, size: int, annotations: Mapping[str, str],
               id: str | None = None, parent: str | None = None, names: Sequence[str] | None = None,
               diff_id: str | None = None) -> PullResult:
    """Put one layer blob into ``store``, partially when possible (what c/image does for a layer).

    The partial path needs ``pull_options`` with ``enable_partial_images = "true"`` in
    storage.conf (or the store's options), a driver that stages layers (overlay), and a layer
    with a TOC; otherwise, and wherever Go falls back, the whole blob is read from ``source``
    and applied as a tarball (and checked against ``digest``).

    Args:
        store: the store.
        source: the blob's ranges (and, for a full pull, the whole blob).
        digest: the blob's digest (the layer descriptor's).
        size: the blob's size.
        annotations: the layer descriptor's annotations.
        id: the layer ID; by default the one c/image gives (see :func:`layer_id`).
        parent: the parent layer's ID.
        names: names for the new layer.
        diff_id: the image config's diff ID for the layer; a partial pull that computes another
            one is refused, as c/image refuses it.

    Returns:
        The layer and how it was pulled.

    Raises:
        ChunkedError: the layer's TOC or content does not match what it claims.
        DigestMismatch: a full pull's blob is not ``digest``, or the layer is not ``diff_id``.
    """
    from .differ import new_differ

    parent = parent or ""
    try:
        differ = new_differ(store, blob_digest=digest, blob_size=size, annotations=annotations, source=source)
    except FallbackToFullPull as e:
        return _full_pull(store, source, str(e), digest=digest, id=id, parent=parent, names=names,
                          diff_id=diff_id)
    with differ:
        try:
            staged = store.prepare_staged_layer(differ=differ)
        except FallbackToFullPull as e:  # a registry that stops serving ranges mid-way
            return _full_pull(store, source, str(e), digest=digest, id=id, parent=parent, names=names,
                              diff_id=diff_id)
    try:
        computed = staged.result.uncompressed_digest
        flags: dict[str, str] = {}
        if diff_id and computed and computed != diff_id:
            raise DigestMismatch(f"uncompressed digest of layer {digest!r} is {computed!r}, config claims "
                                 f"{diff_id!r}")
        if diff_id and not computed:
            flags[EXPECTED_DIFF_ID_FLAG] = diff_id
        layer_ref = id or layer_id(parent, computed or diff_id or "", staged.toc_digest)
        existing = store.layer_store
        with existing.reading():
            found = existing.lookup(layer_ref)
        if found is not None:
            store.cleanup_staged_layer(staged)
            return PullResult(found, True, "", 0)
        try:
            layer = store.apply_staged_layer(staged, id=layer_ref, parent=parent or None, names=names,
                                             flags=flags or None)
        except DuplicateID:
            # Another process (podman, skopeo, us) made the same layer meanwhile: c/image takes it.
            store.cleanup_staged_layer(staged)
            return PullResult(store.layer(layer_ref), True, "", 0)
    except BaseException:
        store.cleanup_staged_layer(staged)
        raise
    return PullResult(layer, True, "", getattr(differ, "fetched_bytes", 0))


def _full_pull(store: Store, source: BlobSource, reason: str, *, digest: str, id: str | None, parent: str,
               names: Sequence[str] | None, diff_id: str | None) -> PullResult:
    opener = getattr(source, "open", None)
    if opener is None:
        raise FallbackToFullPull(f"{reason}, and the source cannot give the whole blob")
    layer_ref = id or (layer_id(parent, diff_id) if diff_id else None)
    if layer_ref:
        with store.layer_store.reading():
            found = store.layer_store.lookup(layer_ref)
        if found is not None:
            return PullResult(found, False, reason)
    with opener() as blob:
        result = store.put_layer(blob, id=layer_ref, parent=parent or None, names=names)
    layer = result.layer
    problem = ""
    if layer.compressed_digest != digest:
        problem = f"blob digest is {layer.compressed_digest!r}, not {digest!r}"
    elif diff_id and layer.uncompressed_digest != diff_id:
        problem = (f"uncompressed digest of layer {digest!r} is {layer.uncompressed_digest!r}, config "
                   f"claims {diff_id!r}")
    if problem:
        store.delete_layer(layer.id)
        raise DigestMismatch(problem)
    return PullResult(layer, False, reason)
