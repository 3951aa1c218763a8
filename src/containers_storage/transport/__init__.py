"""Images in and out of the store: OCI layouts, OCI archives and docker archives.

Load an image as podman, skopeo and buildah would (containers/image's storage destination: the
same layer IDs, digests, big data, metadata and names, record for record), and save one as they
would export it::

    from containers_storage import open_store
    from containers_storage.transport import load, save

    with open_store() as store:
        for loaded in load(store, "busybox.tar"):          # OCI layout, OCI archive or docker archive
            print("Loaded image:", loaded.reference)         # localhost/busybox:latest
        save(store, ["localhost/busybox:latest"], "out", format="oci-dir")

Everything goes through the :class:`~containers_storage.store.Store` API.  Input is untrusted:
it is checked before the store is touched (formats, sizes, digests of manifests and configs,
every blob present), layer blobs are verified as they stream, and a load that fails leaves
the store as it was.
"""

from __future__ import annotations

from .. import TYPE_CHECKING
from .common import Platform, TransportError
from .loading import LoadedImage, chain_ids
from .names import normalize_name
from .progress import Progress, terminal_progress

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from ..records import Image
    from ..store import Store

FORMATS = ("oci-dir", "oci-archive", "docker-archive")


def load(store: Store, source: str | os.PathLike[str], *, image: str | None = None,
         platform: Platform | str | None = None, names: Sequence[str] | None = None,
         progress: Progress | None = None, jobs: int | None = None) -> list[LoadedImage]:
    """Load the images of ``source`` into ``store``, as ``podman load`` does.

    The format is detected: a directory is an OCI image layout; a file (plain or compressed)
    an OCI archive (a tar of a layout) or a docker archive (``docker save``/``podman save``).
    Every image in it is loaded, named from its own references (an OCI layout's
    ``org.opencontainers.image.ref.name``, a docker archive's ``RepoTags``) completed as podman
    completes short names (``busybox`` → ``localhost/busybox:latest``).  An image index is
    resolved to this machine's platform unless ``platform`` names another.

    Args:
        store: the store to load into.
        source: the layout directory or archive file.
        image: load only the image with this tag (an OCI reference name, or a docker archive's
            RepoTag); by default every image.
        platform: ``"os/arch[/variant]"`` (or a :class:`Platform`) to choose from an index.
        names: names to give the image instead of its own (only when one image is loaded);
            ``[]`` for none.
        progress: receives progress (see :func:`terminal_progress`); none by default.
        jobs: layers applied at once where the driver allows it; by default the number of
            CPUs (at least 2).

    Returns:
        The loaded images, in the input's order.

    Raises:
        TransportError: the input is not an image, is malformed, incomplete or hostile, or has
            no image for ``image`` or ``platform``.  The store is unchanged.
        ~containers_storage.errors.DigestMismatch: a blob is not what its digest says (the
            store is unchanged).
        ~containers_storage.errors.InvalidArchive: a layer is not a valid tar stream.
    """
    import os

    from .loading import load_plan
    from .source import open_input

    if isinstance(platform, str):
        platform = Platform.parse(platform)
    progress = progress or Progress()
    opened = open_input(os.fspath(source), image=image, platform=platform)
    try:
        plans = opened.plans
        if names is not None and len(plans) != 1:
            raise TransportError(f"{os.fspath(source)!r} holds {len(plans)} images: names can only "
                                 "be given to one")
        total = sum(l.size or 0 for p in plans for l in p.layers)
        progress.start(os.path.basename(os.fspath(source)) or os.fspath(source), total)
        try:
            return [load_plan(store, plan, names=list(names) if names is not None else None,
                              progress=progress, jobs=jobs) for plan in plans]
        finally:
            progress.finish()
    finally:
        opened.close()


def find_image(store: Store, ref: str) -> tuple[Image, str | None]:
    """The image ``ref`` names, looked up as podman looks up a name it is given: as it is,
    then completed (``busybox`` → ``localhost/busybox:latest``, ``docker.io/library/...``), then
    as the last part of a stored name (``busybox`` finds ``quay.io/x/busybox:latest``).

    Returns:
        The image, and the name it was found by (None when ``ref`` is its ID or an ID prefix).

    Raises:
        ~containers_storage.errors.ImageUnknown: no image has that name or ID.
    """
    from .. import errors
    from .names import parse, parse_normalized

    try:
        image = store.image(ref)
    except errors.ImageUnknown:
        pass
    else:
        return image, (ref if ref in image.names else None)
    candidates: list[str] = []
    try:
        candidates.append(normalize_name(ref))
        docker = parse_normalized(ref)
        if not docker.tag and not docker.digest:
            docker.tag = "latest"
        candidates.append(str(docker))
    except TransportError:
        pass
    for name in candidates:
        try:
            return store.image(name), name
        except errors.ImageUnknown:
            continue
    try:
        short = parse(ref)
    except TransportError:
        short = None
    if short is not None and not short.digest:
        suffix = "/" + str(short) + ("" if short.tag else ":latest")
        for image in store.images():
            for name in image.names:
                if name.endswith(suffix):
                    return image, name
    raise errors.ImageUnknown.after(f'locating image with ID "{ref}"', ref=ref)


def save(store: Store, images: Sequence[str], output: str | os.PathLike[str], *,
         format: str = "oci-dir", names: Sequence[Sequence[str]] | None = None,
         compression: str = "gzip", progress: Progress | None = None,
         jobs: int | None = None) -> None:
    """Save images of ``store`` to ``output``, as ``podman save`` (or ``skopeo copy``) would.

    Args:
        store: the store to read.
        images: the images, by name or ID (looked up as :func:`find_image` does); one for the
            OCI formats, any number for a docker archive.
        output: a directory for ``"oci-dir"`` (made, or added to), a file otherwise (replaced
            when the save is complete).
        format: ``"oci-dir"`` (an OCI image layout), ``"oci-archive"`` (a tar of one) or
            ``"docker-archive"`` (``docker load``'s format).
        names: for each image, the names to record: an OCI layout's reference name (the first),
            a docker archive's RepoTags.  By default the name each image was given by, as
            podman does (none when it was given by ID).
        compression: the layers' compression in OCI outputs: ``"gzip"`` (ISA-L), ``"zstd"``
            or ``"none"``; docker archives hold uncompressed layers.
        progress: receives progress (see :func:`terminal_progress`); none by default.
        jobs: threads that compress each layer; by default the number of CPUs (at least 2).

    Raises:
        ~containers_storage.errors.ImageUnknown: an image is not in the store.
        TransportError: the image cannot be saved (no manifest, missing layers), or several
            images for a format that holds one.
        ~containers_storage.errors.DigestMismatch: a layer's diff is not what its record says
            (a damaged layer); nothing is written.
    """
    import os

    from .saving import save_images

    chosen: list[tuple[Image, list[str]]] = []
    for i, ref in enumerate(images):
        image, found_by = find_image(store, ref)
        given = list(names[i]) if names is not None else ([found_by] if found_by else [])
        chosen.append((image, given))
    save_images(store, chosen, os.fspath(output), format=format, compression=compression,
                progress=progress, jobs=jobs)


__all__ = ["FORMATS", "LoadedImage", "Platform", "Progress", "TransportError", "chain_ids",
           "find_image", "load", "normalize_name", "save", "terminal_progress"]
