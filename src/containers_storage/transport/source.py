"""Reading images out of OCI layouts, OCI archives and docker archives, into load plans.

A plan (:class:`ImagePlan`) is everything a load needs, checked before the store is touched: the
manifest, the config and the top-level index (each read within c/image's size limits and
verified against its digest), each layer's blob (present, of the size its descriptor says, of a
known media type) and diff ID, and the image's names.  Blob contents are verified later, while
they stream into the store.
"""

from __future__ import annotations

import os
import stat

from .. import TYPE_CHECKING
from .common import (
    CONFIG_TYPES,
    CONTAINERD_NAME,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    LAYER_TYPES,
    MANIFEST_TYPES,
    MAX_CONFIG_SIZE,
    MAX_INDEX_SIZE,
    MAX_MANIFEST_SIZE,
    MAX_TAR_MANIFEST_SIZE,
    REF_NAME,
    Platform,
    TransportError,
    check_digest,
    check_size,
    choose_instance,
    go_json,
    go_time,
    guess_manifest_type,
    parse_json,
    read_limited,
    sha256_digest,
    verify_blob,
)
from .names import normalize_name
from .tarindex import Member, TarIndex, clean_name

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

OCI_DIR, OCI_ARCHIVE, DOCKER_ARCHIVE = "oci-dir", "oci-archive", "docker-archive"


class LayerPlan:
    """One layer of a plan: the blob as the manifest names it, and how to read it."""

    __slots__ = ("diff_id", "digest", "media_type", "opener", "size")

    def __init__(self, digest: str, size: int | None, media_type: str, diff_id: str,
                 opener: Callable[[], BinaryIO]) -> None:
        self.digest = digest  # what the manifest says (a docker archive's: the diff ID)
        self.size = size  # the blob's size, when it is known without reading it
        self.media_type = media_type
        self.diff_id = diff_id
        self.opener = opener  # a fresh stream of the blob (decompressed for docker archives)


class ImagePlan:
    """One image to load: manifest, config, the index it was chosen from, layers, names."""

    __slots__ = ("config", "config_digest", "created", "layers", "manifest", "manifest_digest",
                 "names", "toplevel")

    def __init__(self, manifest: bytes, config: bytes, config_digest: str, layers: list[LayerPlan],
                 names: list[str], toplevel: bytes | None = None) -> None:
        self.manifest = manifest
        self.manifest_digest = sha256_digest(manifest)
        self.config = config
        self.config_digest = config_digest
        self.layers = layers
        self.names = names
        self.toplevel = toplevel  # the index the manifest was chosen from, if any
        self.created = go_time(parse_json(config, "image config").get("created"))

    @property
    def id(self) -> str:
        """The image ID every c/image tool gives it: the config digest's hex."""
        return self.config_digest.split(":", 1)[1]


def diff_ids_of(config: dict[str, Any], count: int, what: str) -> list[str]:
    """The config's ``rootfs.diff_ids``, one per layer of the manifest."""
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise TransportError(f"{what}: invalid image config (rootfs.diff_ids is not set)")
    if len(diff_ids) != count:
        raise TransportError(f"{what}: inconsistent layer count: {count} in manifest, "
                             f"{len(diff_ids)} in config")
    return [check_digest(d, f"{what}: diff ID") for d in diff_ids]


# -- blobs of OCI layouts ------------------------------------------------------------------------

class Blobs:
    """Where an OCI layout's files are: a directory, or the members of an archive."""

    what = ""

    def read_file(self, name: str, limit: int) -> bytes:
        raise NotImplementedError

    def blob_size(self, digest: str) -> int | None:
        """The blob's size, None when it is missing."""
        raise NotImplementedError

    def open_blob(self, digest: str) -> BinaryIO:
        raise NotImplementedError

    def read_blob(self, digest: str, size: int, limit: int, what: str) -> bytes:
        """A small blob (manifest, config), verified."""
        if size > limit:
            raise TransportError(f"{self.what}: {what} {digest} is too large ({size} bytes, "
                                 f"at most {limit})")
        have = self.blob_size(digest)
        if have is None:
            raise TransportError(f"{self.what}: {what} {digest} is missing")
        with self.open_blob(digest) as f:
            data = read_limited(f, limit, f"{self.what}: {what} {digest}")
        verify_blob(data, digest, size, f"{self.what}: {what}")
        return data


def _blob_name(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


class DirBlobs(Blobs):
    """An OCI image layout directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.what = f"OCI layout {path!r}"

    def read_file(self, name: str, limit: int) -> bytes:
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                return read_limited(f, limit, f"{self.what}: {name}")
        except FileNotFoundError:
            raise TransportError(f"{self.what}: {name} is missing") from None

    def blob_size(self, digest: str) -> int | None:
        try:
            st = os.stat(os.path.join(self.path, _blob_name(digest)))
        except FileNotFoundError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open_blob(self, digest: str) -> BinaryIO:
        return open(os.path.join(self.path, _blob_name(digest)), "rb")


class TarBlobs(Blobs):
    """An OCI archive: the layout's files are members of a tar, read in place."""

    def __init__(self, index: TarIndex, what: str) -> None:
        self.index = index
        self.what = what

    def _member(self, name: str) -> Member | None:
        return self.index.find(name)

    def read_file(self, name: str, limit: int) -> bytes:
        member = self._member(name)
        if member is None:
            raise TransportError(f"{self.what}: {name} is missing")
        if member.size > limit:
            raise TransportError(f"{self.what}: {name} is too large ({member.size} bytes)")
        return self.index.open(member).read()

    def blob_size(self, digest: str) -> int | None:
        member = self._member(_blob_name(digest))
        return None if member is None else member.size

    def open_blob(self, digest: str) -> BinaryIO:
        member = self._member(_blob_name(digest))
        if member is None:
            raise TransportError(f"{self.what}: blob {digest} is missing")
        return self.index.open(member)  # type: ignore[return-value]


def _ref_name(desc: dict[str, Any]) -> str:
    annotations = desc.get("annotations")
    if not isinstance(annotations, dict):
        return ""
    name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or ""
    return name if isinstance(name, str) else ""


def _descriptor(desc: object, what: str) -> tuple[str, int, str]:
    if not isinstance(desc, dict):
        raise TransportError(f"{what}: a descriptor is not a JSON object")
    media_type = desc.get("mediaType", "")
    if not isinstance(media_type, str):
        raise TransportError(f"{what}: invalid media type {media_type!r}")
    return (check_digest(desc.get("digest"), what), check_size(desc.get("size"), what), media_type)


def layout_plans(blobs: Blobs, *, image: str | None = None, platform: Platform | None = None
                 ) -> list[ImagePlan]:
    """The images of an OCI layout to load: the one tagged ``image``, else every image of its
    index (entries that differ only by platform count as one image)."""
    index = parse_json(blobs.read_file("index.json", MAX_INDEX_SIZE), f"{blobs.what}: index.json")
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise TransportError(f"{blobs.what}: index.json has no manifests list")
    chosen: list[dict[str, Any]]
    if image is not None:
        found = [d for d in manifests if isinstance(d, dict)
                 and d.get("mediaType", "") in MANIFEST_TYPES | INDEX_TYPES | {""}
                 and (d.get("annotations") or {}).get(REF_NAME) == image]
        if not found:
            raise TransportError(f"{blobs.what}: no descriptor found for reference {image!r}")
        chosen = found[:1]
    else:
        chosen = [d for d in manifests if isinstance(d, dict)]
        unnamed_platforms = [d for d in chosen if not _ref_name(d) and isinstance(d.get("platform"), dict)]
        if len(unnamed_platforms) > 1:  # one multi-platform image spelled out in index.json
            pick = choose_instance(unnamed_platforms, platform or Platform.host(), blobs.what)
            chosen = [d for d in chosen if d not in unnamed_platforms or d == pick]
        if not chosen:
            raise TransportError(f"{blobs.what}: index.json lists no image")
    return [_plan_from_descriptor(blobs, desc, platform) for desc in chosen]


def _plan_from_descriptor(blobs: Blobs, desc: dict[str, Any], platform: Platform | None) -> ImagePlan:
    what = blobs.what
    digest, size, media_type = _descriptor(desc, f"{what}: index.json")
    if media_type and media_type not in MANIFEST_TYPES | INDEX_TYPES:
        raise TransportError(f"{what}: unknown media type {media_type!r} of {digest}")
    data = blobs.read_blob(digest, size, MAX_MANIFEST_SIZE, "manifest")
    doc = parse_json(data, f"{what}: manifest {digest}")
    media_type = guess_manifest_type(doc, media_type)
    toplevel: bytes | None = None
    if media_type in INDEX_TYPES:
        toplevel = data
        instances = doc.get("manifests")
        if not isinstance(instances, list):
            raise TransportError(f"{what}: image index {digest} has no manifests list")
        inst = choose_instance(instances, platform or Platform.host(), f"{what}: image index {digest}")
        digest, size, media_type = _descriptor(inst, f"{what}: image index {digest}")
        if media_type and media_type not in MANIFEST_TYPES:
            raise TransportError(f"{what}: unknown media type {media_type!r} of {digest}")
        data = blobs.read_blob(digest, size, MAX_MANIFEST_SIZE, "manifest")
        doc = parse_json(data, f"{what}: manifest {digest}")
        media_type = guess_manifest_type(doc, media_type)
    if media_type not in MANIFEST_TYPES:
        raise TransportError(f"{what}: unknown media type {media_type!r} of manifest {digest}")
    config_desc = doc.get("config")
    config_digest, config_size, config_type = _descriptor(config_desc, f"{what}: manifest config")
    if config_type not in CONFIG_TYPES:
        raise TransportError(f"{what}: unknown media type {config_type!r} of config {config_digest}")
    layer_descs = doc.get("layers")
    if not isinstance(layer_descs, list):
        raise TransportError(f"{what}: manifest {digest} has no layers list")
    config = blobs.read_blob(config_digest, config_size, MAX_CONFIG_SIZE, "config")
    diff_ids = diff_ids_of(parse_json(config, f"{what}: config"), len(layer_descs),
                           f"{what}: image {config_digest}")
    layers: list[LayerPlan] = []
    for layer_desc, diff_id in zip(layer_descs, diff_ids, strict=True):
        ldigest, lsize, ltype = _descriptor(layer_desc, f"{what}: manifest layer")
        if ltype not in LAYER_TYPES:
            raise TransportError(f"{what}: unknown media type {ltype!r} of layer {ldigest}")
        have = blobs.blob_size(ldigest)
        if have is None:
            raise TransportError(f"{what}: layer blob {ldigest} is missing")
        if have != lsize:
            raise TransportError(f"{what}: layer blob {ldigest} has {have} bytes, its descriptor "
                                 f"says {lsize} (truncated?)")
        layers.append(LayerPlan(ldigest, lsize, ltype, diff_id,
                                lambda d=ldigest: blobs.open_blob(d)))  # type: ignore[misc]
    name = _ref_name(desc)
    names = [normalize_name(name)] if name else []
    return ImagePlan(data, config, config_digest, layers, names, toplevel)


# -- docker archives ---------------------------------------------------------------------------

def docker_archive_plans(index: TarIndex, what: str) -> list[ImagePlan]:
    """Every image of a docker archive (``docker save``/``podman save``), each with the
    manifest c/image generates for it and its RepoTags as names."""
    member = index.find("manifest.json")
    if member is None:
        raise TransportError(f"{what}: manifest.json is missing")
    if member.size > MAX_TAR_MANIFEST_SIZE:
        raise TransportError(f"{what}: manifest.json is too large ({member.size} bytes)")
    import orjson

    try:
        items = orjson.loads(index.open(member).read())
    except orjson.JSONDecodeError as e:
        raise TransportError(f"{what}: decoding manifest.json: {e}") from None
    if not isinstance(items, list) or not items:
        raise TransportError(f"{what}: manifest.json lists no image")
    return [_docker_plan(index, item, what) for item in items]


def _docker_member(index: TarIndex, name: object, what: str) -> Member:
    if not isinstance(name, str) or not name:
        raise TransportError(f"{what}: invalid file name {name!r} in manifest.json")
    clean_name(name, f"{what}: manifest.json file")
    member = index.find(name)
    if member is None:
        raise TransportError(f"{what}: {name} is missing")
    return member


def _docker_plan(index: TarIndex, item: object, what: str) -> ImagePlan:
    from ..archive.compression import Compression, detect

    if not isinstance(item, dict):
        raise TransportError(f"{what}: manifest.json: an item is not a JSON object")
    config_member = _docker_member(index, item.get("Config"), what)
    if config_member.size > MAX_CONFIG_SIZE:
        raise TransportError(f"{what}: config {item.get('Config')} is too large "
                             f"({config_member.size} bytes)")
    config = index.open(config_member).read()
    config_digest = sha256_digest(config)
    paths = item.get("Layers")
    if not isinstance(paths, list):
        raise TransportError(f"{what}: manifest.json: Layers is not a list")
    diff_ids = diff_ids_of(parse_json(config, f"{what}: config"), len(paths),
                           f"{what}: image {config_digest}")
    layers: list[LayerPlan] = []
    known: dict[str, LayerPlan] = {}
    for path, diff_id in zip(paths, diff_ids, strict=True):
        if diff_id in known:  # the same diff twice: c/image reads the first copy for both
            layers.append(known[diff_id])
            continue
        member = _docker_member(index, path, what)
        head = index.open(member).read(16)
        compression = detect(head)
        size = member.size
        if compression != Compression.UNCOMPRESSED:
            size = _uncompressed_size(index, member, what)

        def opener(m: Member = member, c: Compression = compression) -> BinaryIO:
            reader: BinaryIO = index.open(m)  # type: ignore[assignment]
            if c == Compression.UNCOMPRESSED:
                return reader
            from ..archive.compression import open_decompressed

            return open_decompressed(reader)[1]

        plan = LayerPlan(diff_id, size, DOCKER_LAYER, diff_id, opener)
        known[diff_id] = plan
        layers.append(plan)
    manifest = go_json({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": DOCKER_LAYER, "size": l.size, "digest": l.digest} for l in layers],
    })
    tags = item.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise TransportError(f"{what}: manifest.json: RepoTags is not a list of strings")
    return ImagePlan(manifest, config, config_digest, layers, [normalize_name(t) for t in tags])


def _uncompressed_size(index: TarIndex, member: Member, what: str) -> int:
    """What c/image reads a compressed layer of a docker archive for: its size decompressed."""
    from ..archive.compression import open_decompressed

    reader = open_decompressed(index.open(member))[1]  # type: ignore[arg-type]
    total = 0
    try:
        while chunk := reader.read(1 << 20):
            total += len(chunk)
    except TransportError:
        raise
    except Exception as e:
        raise TransportError(f"{what}: decompressing {member.name}: {e}") from None
    return total


# -- opening any input -------------------------------------------------------------------------

class Input:
    """An opened load input: its format, its plans, and what to close afterwards."""

    def __init__(self, format: str, plans: list[ImagePlan], closers: list[Callable[[], None]]) -> None:
        self.format = format
        self.plans = plans
        self._closers = closers

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except OSError:
                pass
        self._closers = []


def open_input(path: str, *, image: str | None = None, platform: Platform | None = None) -> Input:
    """Detect the format of ``path`` and plan its images (see :func:`layout_plans`)."""
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "index.json")):
            raise TransportError(f"{path!r} is a directory but not an OCI layout (no index.json)")
        return Input(OCI_DIR, layout_plans(DirBlobs(path), image=image, platform=platform), [])
    closers: list[Callable[[], None]] = []
    try:
        tar_path = _decompressed_copy(path, closers)
        index = TarIndex(tar_path)
        closers.append(index.close)
        if index.find("index.json") is not None:
            what = f"OCI archive {path!r}"
            plans = layout_plans(TarBlobs(index, what), image=image, platform=platform)
            return Input(OCI_ARCHIVE, plans, closers)
        if index.find("manifest.json") is not None:
            if image is not None or platform is not None:
                plans = [p for p in docker_archive_plans(index, f"docker archive {path!r}")
                         if image is None or normalize_name(image) in p.names]
                if not plans:
                    raise TransportError(f"docker archive {path!r}: tag {image!r} not found")
            else:
                plans = docker_archive_plans(index, f"docker archive {path!r}")
            return Input(DOCKER_ARCHIVE, plans, closers)
        raise TransportError(f"{path!r}: payload does not match any of the supported image formats "
                             "(OCI layout, OCI archive, docker archive)")
    except BaseException:
        for close in reversed(closers):
            close()
        raise


def _decompressed_copy(path: str, closers: list[Callable[[], None]]) -> str:
    """``path`` itself when it is a plain tar; else its decompressed copy in a temporary file
    (as c/image makes one for a compressed docker archive)."""
    from ..archive.compression import Compression, Decompressor, detect

    with open(path, "rb") as f:
        head = f.read(16)
        compression = detect(head)
        if compression == Compression.UNCOMPRESSED:
            return path
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix="containers-storage-load-",
                                   dir=os.environ.get("TMPDIR") or "/var/tmp")
        closers.append(lambda: os.unlink(tmp))
        with os.fdopen(fd, "wb") as out:
            f.seek(0)
            dec = Decompressor(compression)
            try:
                while chunk := f.read(1 << 20):
                    for piece in dec.feed(chunk):
                        out.write(piece)
                dec.finish()
            except Exception as e:
                raise TransportError(f"{path!r}: decompressing: {e}") from None
    return tmp
