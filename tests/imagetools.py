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


__all__ = ["BUSYBOX", "Image", "busybox_tar", "make_image", "readable_by_all", "sha",
           "write_oci_layout"]
