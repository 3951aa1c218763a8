"""Images for tests that hand them to skopeo and podman: layer tarballs, configs, OCI manifests.

Go's tools read an image from a store through its big data: the config under its digest and the
manifest under ``manifest`` and ``manifest-<digest>``.  :func:`make_image` builds the three
blobs, :func:`write_oci_layout` an OCI layout skopeo copies from, :meth:`Image.big_data` what
``Store.create_image`` (or our CLI's ``set-image-data``) stores.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"  # Debian's busybox-static: runs with no libraries beside it


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def busybox_tar(greeting: bytes = b"hello from busybox\n") -> bytes:
    """A root filesystem that runs: /bin/busybox (static), /bin/sh, /etc/greeting, /tmp."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 1_700_000_000
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        # 0777 as a symlink has on disk, or `check` reports the mode as modified
        link.type, link.linkname, link.mode, link.mtime = tarfile.SYMTYPE, "busybox", 0o777, 1_700_000_000
        tar.addfile(link)
        info = tarfile.TarInfo("etc/greeting")
        info.size, info.mode, info.mtime = len(greeting), 0o644, 1_700_000_000
        tar.addfile(info, io.BytesIO(greeting))
    return buf.getvalue()


@dataclass(frozen=True)
class Image:
    """One single-layer image: the uncompressed layer, its gzip blob, config and OCI manifest."""

    layer_tar: bytes
    blob: bytes
    config: bytes
    manifest: bytes

    @property
    def id(self) -> str:
        """The image ID Go's tools give it: the config's digest, without the algorithm."""
        return sha(self.config)[7:]

    @property
    def manifest_digest(self) -> str:
        return sha(self.manifest)

    def big_data(self) -> list[tuple[str, bytes, str]]:
        """(key, data, digest) of what a store holds for the image, as skopeo stores it."""
        digest = self.manifest_digest
        return [(sha(self.config), self.config, ""), ("manifest-" + digest, self.manifest, digest),
                ("manifest", self.manifest, digest)]


def make_image(layer_tar: bytes, config: dict[str, object] | None = None) -> Image:
    """An image of ``layer_tar`` (gzip-compressed, deterministically) and ``config``'s "config"."""
    blob = gzip.compress(layer_tar, mtime=0)
    config_bytes = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar)]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(blob),
                    "size": len(blob)}],
    }).encode()
    return Image(layer_tar, blob, config_bytes, manifest)


def write_oci_layout(path: Path, image: Image, tag: str) -> None:
    """An OCI image layout at ``path`` holding ``image`` as ``tag`` (``oci:<path>:<tag>``)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (image.blob, image.config, image.manifest):
        (blobs / sha(data)[7:]).write_bytes(data)
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.manifest_digest,
        "size": len(image.manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def readable_by_all(path: Path) -> None:
    """Let an unprivileged user read ``path`` and everything under it."""
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        os.chmod(p, mode | (0o055 if p.is_dir() else 0o044))


def layer_tar(files: dict[str, bytes], *, dirs: tuple[str, ...] = (), whiteouts: tuple[str, ...] = (),
              mtime: int = 1_700_000_000) -> bytes:
    """A layer tarball: ``dirs``, then ``files`` (name -> content), then ``.wh.`` entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tar.addfile(info, io.BytesIO(data))
        for name in whiteouts:
            head, _, base = name.rpartition("/")
            info = tarfile.TarInfo(f"{head}/.wh.{base}" if head else f".wh.{base}")
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def five_layer_tars() -> list[bytes]:
    """A small five-layer root filesystem: busybox, then layers that add, replace and delete
    files of the ones below (a whiteout), as a real image's history does."""
    return [
        busybox_tar(),
        layer_tar({"usr/share/doc/a.txt": b"a" * 5000, "usr/share/doc/b.txt": b"b" * 300},
                  dirs=("usr", "usr/share", "usr/share/doc")),
        layer_tar({"etc/greeting": b"hello from layer three\n", "etc/os-release": b"ID=test\n"},
                  dirs=("etc",)),
        layer_tar({"var/lib/data.bin": bytes(range(256)) * 64}, dirs=("var", "var/lib"),
                  whiteouts=("usr/share/doc/b.txt",)),
        layer_tar({"app/run.sh": b"#!/bin/sh\necho five layers\n"}, dirs=("app",)),
    ]


@dataclass(frozen=True)
class LayeredImage:
    """An image of several layers: their tarballs and blobs, the config and the OCI manifest."""

    layer_tars: list[bytes]
    blobs: list[bytes]
    config: bytes
    manifest: bytes
    layer_media_type: str

    @property
    def id(self) -> str:
        return sha(self.config)[7:]

    @property
    def diff_ids(self) -> list[str]:
        return [sha(t) for t in self.layer_tars]

    @property
    def manifest_digest(self) -> str:
        return sha(self.manifest)


def make_layered_image(layer_tars: list[bytes], config: dict[str, object] | None = None, *,
                       compression: str = "gzip", created: str | None = None) -> LayeredImage:
    """An OCI image of ``layer_tars`` (gzip-compressed, zstd or plain), deterministic."""
    if compression == "gzip":
        blobs = [gzip.compress(t, mtime=0) for t in layer_tars]
        media = "application/vnd.oci.image.layer.v1.tar+gzip"
    elif compression == "zstd":
        from backports import zstd

        blobs = [zstd.compress(t) for t in layer_tars]
        media = "application/vnd.oci.image.layer.v1.tar+zstd"
    else:
        blobs = list(layer_tars)
        media = "application/vnd.oci.image.layer.v1.tar"
    doc: dict[str, object] = {"architecture": "amd64", "os": "linux", "config": config or {},
                              "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layer_tars]}}
    if created:
        doc = {"created": created, **doc}
    config_bytes = json.dumps(doc).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": media, "digest": sha(b), "size": len(b)} for b in blobs],
    }).encode()
    return LayeredImage(list(layer_tars), blobs, config_bytes, manifest, media)


def write_layout(path: Path, entries: list[tuple[LayeredImage, str | None]]) -> None:
    """An OCI layout at ``path`` with each image of ``entries`` under its reference name."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    manifests = []
    for image, name in entries:
        for data in (*image.blobs, image.config, image.manifest):
            (blobs / sha(data)[7:]).write_bytes(data)
        desc: dict[str, object] = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "digest": image.manifest_digest, "size": len(image.manifest)}
        if name:
            desc["annotations"] = {"org.opencontainers.image.ref.name": name}
        manifests.append(desc)
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def tar_directory(src: Path, dest: Path) -> None:
    """``src``'s contents as a tar at ``dest`` (an OCI archive of a layout)."""
    with tarfile.open(dest, "w") as tar:
        for child in sorted(src.iterdir()):
            tar.add(child, arcname=child.name)


def write_docker_archive(path: Path, entries: list[tuple[LayeredImage, list[str]]]) -> None:
    """A docker archive (``docker save`` format) of ``entries``, each with its RepoTags."""
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        items = []
        for image, tags in entries:
            layers = []
            for layer in image.layer_tars:
                name = sha(layer)[7:] + ".tar"
                if name not in tar.getnames():
                    add(name, layer)
                layers.append(name)
            add(image.id + ".json", image.config)
            items.append({"Config": image.id + ".json", "RepoTags": tags, "Layers": layers})
        add("manifest.json", json.dumps(items).encode())


def store_state(graph_root: str) -> dict[str, object]:
    """Everything a store holds on disk, for before/after comparisons: each file's content
    (records files parsed), each symlink's target; lock files (tokens change) left out."""
    state: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(graph_root):
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, graph_root)
            if name.endswith(".lock"):
                continue
            if os.path.islink(path):
                state[rel] = ("link", os.readlink(path))
            elif name.endswith(".json"):
                with open(path, "rb") as f:
                    data = f.read()
                records = json.loads(data) if data.strip() else None
                if records:  # an empty records file is no record, as a missing one
                    state[rel] = records
            else:
                with open(path, "rb") as f:
                    state[rel] = hashlib.sha256(f.read()).hexdigest()
        for d in dirnames:  # a layer's or image's directory, even empty
            path = os.path.join(dirpath, d)
            if len(d) == 64 and not os.path.islink(path) and not os.listdir(path):
                state[os.path.relpath(path, graph_root) + "/"] = "empty dir"
    return state


__all__ = ["BUSYBOX", "Image", "LayeredImage", "busybox_tar", "five_layer_tars", "layer_tar",
           "make_image", "make_layered_image", "readable_by_all", "sha", "store_state", "tar_directory",
           "write_docker_archive", "write_layout", "write_oci_layout"]
