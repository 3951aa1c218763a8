"""Taking images out of the store as OCI layouts, OCI archives and docker archives.

What c/image makes of a stored image (skopeo copy / podman save), and so what this makes: the
config as stored, each layer as its diff (the original tar, reassembled from tar-split and
checked against the diff ID), compressed for OCI outputs (gzip by default, zstd on request)
and uncompressed in docker archives; the manifest rewritten for the new blobs, as an OCI
manifest (OCI outputs) or with the manifest.json c/image writes (docker archives).

The store gives diffs one at a time (its diff holds the layer store's lock, as Go's does), so
the parallelism is inside each stream: ISA-L gzip (or zstd) compresses blocks on several
threads while the next part of the tar is reassembled.  Outputs appear whole or not at all:
blobs and archives are written under temporary names and renamed at the end.
"""

from __future__ import annotations

import hashlib
import os

from .. import TYPE_CHECKING, errors
from ..fsutil import unlink_if_there
from .common import (
    DOCKER_CONFIG,
    MANIFEST_TYPES,
    MAX_INDEX_SIZE,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    REF_NAME,
    TransportError,
    go_json,
    guess_manifest_type,
    parse_json,
    read_limited,
)
from .progress import Progress

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, BinaryIO

    from ..records import Image, Layer
    from ..store import Store

COMPRESSIONS = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}


class _Stored:
    """An image as the store has it: record, manifest, config, layers bottom first."""

    def __init__(self, store: Store, image: Image) -> None:
        self.image = image
        try:
            self.manifest_bytes = store.image_big_data(image.id, "manifest")
        except errors.BigDataUnknown:
            raise TransportError(f"image {image.id} has no manifest") from None
        self.manifest = parse_json(self.manifest_bytes, f"manifest of image {image.id}")
        mtype = guess_manifest_type(self.manifest)
        if mtype not in MANIFEST_TYPES:
            raise TransportError(f"image {image.id}: cannot save a manifest of type {mtype!r}")
        config_desc = self.manifest.get("config")
        if not isinstance(config_desc, dict) or not isinstance(config_desc.get("digest"), str):
            raise TransportError(f"image {image.id}: its manifest names no config")
        self.config_digest: str = config_desc["digest"]
        try:
            self.config = store.image_big_data(image.id, self.config_digest)
        except errors.BigDataUnknown:
            raise TransportError(f"image {image.id}: its config {self.config_digest} is missing") from None
        chain: list[Layer] = []
        layer_id = image.top_layer
        while layer_id:
            layer = store.layer(layer_id)
            if not layer.uncompressed_digest or layer.uncompressed_size < 0:
                raise TransportError(f"uncompressed digest for layer {layer.id!r} is unknown")
            chain.append(layer)
            layer_id = layer.parent
        self.layers = chain[::-1]
        listed = self.manifest.get("layers")
        if not isinstance(listed, list) or len(listed) != len(self.layers):
            raise TransportError(f"image {image.id}: its manifest lists "
                                 f"{len(listed) if isinstance(listed, list) else 0} layers, "
                                 f"the store has {len(self.layers)}")


class _DiffSink:
    """Receives a layer's diff: hashes and counts it, and passes it on (compressed or not)."""

    def __init__(self, out: BinaryIO, progress: Progress, key: str, limit: int | None = None) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0
        self._progress = progress
        self._key = key
        self._limit = limit

    def write(self, data: bytes) -> int:
        n = len(data)
        if self._limit is not None and self.size + n > self._limit:
            raise TransportError(f"layer {self._key}: its diff is larger than its recorded size")
        self._hash.update(data)
        self.size += n
        self._out.write(data)
        self._progress.layer_advanced(self._key, n)
        return n

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _HashingFile:
    """A file written through, hashed and counted: a compressed blob on its way to disk."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _compressor(out: Any, compression: str, threads: int) -> Any:
    if compression == "gzip":
        from isal import igzip_threaded

        # Level 2 (ISA-L's default) compresses like zlib's 6 at several times its speed;
        # blocks are compressed on ``threads`` threads (GIL released) while the tar streams.
        return igzip_threaded.open(out, "wb", compresslevel=2, threads=threads)  # type: ignore[no-untyped-call]
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            from backports import zstd
        params = {zstd.CompressionParameter.compression_level: 3}
        if threads > 1:
            params[zstd.CompressionParameter.nb_workers] = threads
        return zstd.ZstdFile(out, "w", options=params)
    return None


def _check_diff(layer: Layer, sink: _DiffSink) -> None:
    if sink.digest != layer.uncompressed_digest or sink.size != layer.uncompressed_size:
        raise errors.DigestMismatch(
            f"layer {layer.id}: its diff has digest {sink.digest} ({sink.size} bytes), recorded "
            f"{layer.uncompressed_digest} ({layer.uncompressed_size} bytes)")


def _write_blob(store: Store, layer: Layer, blobs_dir: str, compression: str, threads: int,
                progress: Progress) -> tuple[str, int]:
    """The layer's diff as a (compressed) blob in ``blobs_dir``; its digest and size."""
    import tempfile

    key = layer.uncompressed_digest.split(":", 1)[1][:12]
    progress.layer_started(key, layer.uncompressed_size)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-blob-", dir=blobs_dir)
    try:
        with os.fdopen(fd, "wb") as raw:
            hashed = _HashingFile(raw)
            comp = _compressor(hashed, compression, threads)
            sink = _DiffSink(comp if comp is not None else hashed, progress, key,  # type: ignore[arg-type]
                             layer.uncompressed_size)
            try:
                store.diff(layer.id, sink, compression=0)  # type: ignore[arg-type]
            finally:
                if comp is not None:
                    comp.close()
            _check_diff(layer, sink)
        digest = sink.digest if comp is None else hashed.digest
        size = sink.size if comp is None else hashed.size
        os.chmod(tmp, 0o644)
        os.rename(tmp, os.path.join(blobs_dir, digest.split(":", 1)[1]))
    except BaseException:
        unlink_if_there(tmp)
        progress.layer_done(key, "failed")
        raise
    progress.layer_done(key, "done")
    return digest, size


def _put_bytes(blobs_dir: str, data: bytes) -> tuple[str, int]:
    from ..fsutil import atomic_write

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(blobs_dir, digest.split(":", 1)[1])
    if not os.path.exists(path):
        atomic_write(path, data)
        os.chmod(path, 0o644)
    return digest, len(data)


def _oci_manifest(stored: _Stored, layers: list[dict[str, Any]]) -> bytes:
    """The manifest c/image writes for the new blobs: an OCI manifest with the stored one's
    config (as an OCI config) and annotations."""
    config = dict(stored.manifest["config"])
    if config.get("mediaType") == DOCKER_CONFIG:
        config["mediaType"] = OCI_CONFIG
    ordered_config = {k: config[k] for k in ("mediaType", "digest", "size") if k in config}
    ordered_config.update({k: v for k, v in config.items() if k not in ordered_config})
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": ordered_config,
                           "layers": layers}
    annotations = stored.manifest.get("annotations")
    if isinstance(annotations, dict) and annotations:
        doc["annotations"] = annotations
    return go_json(doc)


def _write_layout(store: Store, stored: _Stored, directory: str, ref_name: str | None,
                  compression: str, threads: int, progress: Progress) -> None:
    """An OCI layout in ``directory`` (made, or added to as c/image adds to one)."""
    from ..fsutil import atomic_write

    blobs_dir = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs_dir, mode=0o755, exist_ok=True)
    index_path = os.path.join(directory, "index.json")
    index: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path, "rb") as f:
            index = parse_json(read_limited(f, MAX_INDEX_SIZE, f"{index_path}"), index_path)
        if not isinstance(index.get("manifests"), list):
            raise TransportError(f"{index_path}: no manifests list")
    layers: list[dict[str, Any]] = []
    for layer in stored.layers:
        digest, size = _write_blob(store, layer, blobs_dir, compression, threads, progress)
        layers.append({"mediaType": COMPRESSIONS[compression], "digest": digest, "size": size})
    _put_bytes(blobs_dir, stored.config)
    manifest = _oci_manifest(stored, layers)
    mdigest, msize = _put_bytes(blobs_dir, manifest)
    desc: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": msize}
    if ref_name:
        desc["annotations"] = {REF_NAME: ref_name}
    _add_manifest(index, desc)
    atomic_write(os.path.join(directory, "oci-layout"), b'{"imageLayoutVersion": "1.0.0"}')
    os.chmod(os.path.join(directory, "oci-layout"), 0o644)
    atomic_write(index_path, go_json(index))
    os.chmod(index_path, 0o644)


def _add_manifest(index: dict[str, Any], desc: dict[str, Any]) -> None:
    """c/image's addManifest: a name moves to the new entry; an unnamed entry of the same
    digest is replaced."""
    manifests: list[Any] = index["manifests"]
    name = (desc.get("annotations") or {}).get(REF_NAME)
    if name:
        for entry in manifests:
            annotations = entry.get("annotations") if isinstance(entry, dict) else None
            if isinstance(annotations, dict) and annotations.get(REF_NAME) == name:
                del annotations[REF_NAME]
                if not annotations:
                    del entry["annotations"]
                break
    for i, entry in enumerate(manifests):
        if (isinstance(entry, dict) and entry.get("digest") == desc["digest"]
                and not (entry.get("annotations") or {}).get(REF_NAME)):
            manifests[i] = desc
            return
    manifests.append(desc)


# -- tar output --------------------------------------------------------------------------------

class _TarWriter:
    """A tar archive written member by member (USTAR headers as Go's writer makes them for
    c/image: mode 0444, time 0, no owner names)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.offset = 0

    def header(self, name: str, size: int, *, mode: int = 0o444, directory: bool = False) -> None:
        import tarfile

        info = tarfile.TarInfo(name)
        info.size = 0 if directory else size
        info.mode = mode
        info.mtime = 0
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        buf = info.tobuf(format=tarfile.PAX_FORMAT)
        self.f.write(buf)
        self.offset += len(buf)

    def pad(self, size: int) -> None:
        if size % 512:
            self.f.write(bytes(512 - size % 512))
            self.offset += 512 - size % 512

    def add_bytes(self, name: str, data: bytes) -> None:
        self.header(name, len(data))
        self.f.write(data)
        self.offset += len(data)
        self.pad(len(data))

    def add_file(self, name: str, path: str) -> None:
        size = os.path.getsize(path)
        self.header(name, size)
        self.f.flush()
        with open(path, "rb") as src:
            out_fd = self.f.fileno()
            copied = 0
            while copied < size:
                n = os.copy_file_range(src.fileno(), out_fd, size - copied)
                if n == 0:
                    raise TransportError(f"{path} shrank while it was archived")
                copied += n
        self.offset += size
        self.pad(size)

    def close(self) -> None:
        self.f.write(bytes(1024))
        self.f.flush()


def _tar_layout(directory: str, out: BinaryIO) -> None:
    """The layout in ``directory`` as an OCI archive (members in the order c/image's tar walk
    gives: ``blobs/``, ``blobs/sha256/``, the blobs, ``index.json``, ``oci-layout``)."""
    tar = _TarWriter(out)
    tar.header("blobs/", 0, mode=0o755, directory=True)
    tar.header("blobs/sha256/", 0, mode=0o755, directory=True)
    blobs_dir = os.path.join(directory, "blobs", "sha256")
    for name in sorted(os.listdir(blobs_dir)):
        tar.add_file(f"blobs/sha256/{name}", os.path.join(blobs_dir, name))
    for name in ("index.json", "oci-layout"):
        tar.add_file(name, os.path.join(directory, name))
    tar.close()


def _write_docker_archive(store: Store, images: list[tuple[_Stored, list[str]]], out: BinaryIO,
                          progress: Progress) -> None:
    """A docker archive (``docker save`` format) of ``images``, each with its RepoTags."""
    from .names import tagged

    tar = _TarWriter(out)
    written: set[str] = set()
    items: list[dict[str, Any]] = []
    by_config: dict[str, dict[str, Any]] = {}
    for stored, tags in images:
        config_name = stored.config_digest.split(":", 1)[1] + ".json"
        paths = []
        for layer in stored.layers:
            name = layer.uncompressed_digest.split(":", 1)[1] + ".tar"
            paths.append(name)
            if name in written:
                continue
            key = name[:12]
            progress.layer_started(key, layer.uncompressed_size)
            tar.header(name, layer.uncompressed_size)
            sink = _DiffSink(out, progress, key, layer.uncompressed_size)
            store.diff(layer.id, sink, compression=0)  # type: ignore[arg-type]
            _check_diff(layer, sink)
            tar.offset += sink.size
            tar.pad(sink.size)
            written.add(name)
            progress.layer_done(key, "done")
        if config_name not in written:
            tar.add_bytes(config_name, stored.config)
            written.add(config_name)
        repo_tags = []
        for tag in tags:
            ref = tagged(tag)
            if ref is not None:
                repo_tags.append(f"{ref.name}:{ref.tag}")
        item = by_config.get(config_name)
        if item is None:
            item = {"Config": config_name, "RepoTags": [], "Layers": paths}
            by_config[config_name] = item
            items.append(item)
        for tag in repo_tags:
            if tag not in item["RepoTags"]:
                item["RepoTags"].append(tag)
    tar.add_bytes("manifest.json", go_json(items))
    tar.close()


# -- the entry point ----------------------------------------------------------------------------

def save_images(store: Store, images: Sequence[tuple[Image, list[str]]], output: str, *,
                format: str, compression: str = "gzip", progress: Progress | None = None,
                jobs: int | None = None) -> None:
    """Write ``images`` (each with the names to record for it) to ``output`` as ``format``."""
    import shutil
    import tempfile

    progress = progress or Progress()
    threads = jobs or max(2, os.cpu_count() or 1)
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r} (gzip, zstd, none)")
    if format not in ("oci-dir", "oci-archive", "docker-archive"):
        raise ValueError(f"unsupported format {format!r} (oci-dir, oci-archive, docker-archive)")
    if not images:
        raise ValueError("no image to save")
    if format != "docker-archive" and len(images) > 1:
        raise TransportError(f"unsupported format {format!r} for saving multiple images "
                             "(only docker-archive)")
    stored = [(_Stored(store, image), names) for image, names in images]
    total = sum(l.uncompressed_size for s, _ in stored for l in s.layers)
    progress.start(output, total)
    try:
        if format == "oci-dir":
            s, names = stored[0]
            _write_layout(store, s, output, names[0] if names else None, compression, threads, progress)
            return
        parent = os.path.dirname(os.path.abspath(output))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-save-", dir=parent)
        try:
            with os.fdopen(fd, "wb") as out:
                if format == "docker-archive":
                    _write_docker_archive(store, stored, out, progress)
                else:
                    layout = tempfile.mkdtemp(prefix=".tmp-layout-", dir=parent)
                    try:
                        s, names = stored[0]
                        _write_layout(store, s, layout, names[0] if names else None, compression,
                                      threads, progress)
                        _tar_layout(layout, out)
                    finally:
                        shutil.rmtree(layout, ignore_errors=True)
            os.chmod(tmp, 0o644)
            os.rename(tmp, output)
        except BaseException:
            unlink_if_there(tmp)
            raise
    finally:
        progress.finish()

