"""What the image formats share: media types, size limits, errors, digests, JSON, platforms.

The limits are containers/image's (``internal/iolimits``): a manifest, an index or a config of
more than 4 MiB, or a docker archive's ``manifest.json`` of more than 1 MiB, is refused before it
is read, so a hostile input cannot make a load hold gigabytes of JSON.
"""

from __future__ import annotations

import hashlib
import os

from .. import TYPE_CHECKING
from ..errors import DigestMismatch, StorageError

if TYPE_CHECKING:
    from typing import Any, BinaryIO

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_FOREIGN = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_UNCOMPRESSED = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
LAYER_TYPES = frozenset({
    OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_FOREIGN, OCI_FOREIGN + "+gzip", OCI_FOREIGN + "+zstd",
    DOCKER_LAYER, DOCKER_LAYER_UNCOMPRESSED, DOCKER_FOREIGN,
})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

MIB = 1 << 20
MAX_MANIFEST_SIZE = 4 * MIB  # iolimits.MaxManifestBodySize
MAX_CONFIG_SIZE = 4 * MIB  # iolimits.MaxConfigBodySize
MAX_INDEX_SIZE = 4 * MIB  # an OCI layout's index.json (c/image reads it unbounded)
MAX_TAR_MANIFEST_SIZE = 1 * MIB  # iolimits.MaxTarFileManifestSize (docker archives)

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"  # what buildkit and containerd write (podman reads it)


class TransportError(StorageError):
    """An image input or output that cannot be used: not a known format, malformed, incomplete
    (a missing or truncated blob), hostile (a member outside the archive, absurd sizes), or
    without what was asked for (a tag, a platform)."""

    text = "invalid image"


def sha256_digest(data: bytes) -> str:
    """``"sha256:<hex>"`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(value: object, what: str) -> str:
    """``value`` as a digest string, or TransportError naming ``what`` (only sha256 is usable:
    blobs are found and verified by it)."""
    from ..digest import DigestError, validate

    if not isinstance(value, str):
        raise TransportError(f"{what}: digest {value!r} is not a string")
    try:
        validate(value)
    except DigestError as e:
        raise TransportError(f"{what}: invalid digest {value!r}: {e}") from None
    if not value.startswith("sha256:"):
        raise TransportError(f"{what}: digest {value!r}: only sha256 digests are supported")
    return value


def check_size(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TransportError(f"{what}: invalid size {value!r}")
    return value


def verify_blob(data: bytes, digest: str, size: int | None, what: str) -> None:
    """Raise DigestMismatch unless ``data`` has ``digest`` (and ``size``, when known)."""
    if size is not None and len(data) != size:
        raise DigestMismatch(f"{what} {digest}: size {len(data)}, expected {size}")
    actual = sha256_digest(data)
    if actual != digest:
        raise DigestMismatch(f"{what}: digest {actual}, expected {digest}")


def read_limited(f: BinaryIO, limit: int, what: str) -> bytes:
    """All of ``f``, refusing more than ``limit`` bytes (without reading them)."""
    data = f.read(limit + 1)
    if len(data) > limit:
        raise TransportError(f"{what} is too large (more than {limit} bytes)")
    return data


def parse_json(data: bytes, what: str) -> Any:
    """``data`` parsed as a JSON object, or TransportError."""
    import orjson

    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise TransportError(f"parsing {what}: {e}") from None
    if not isinstance(value, dict):
        raise TransportError(f"parsing {what}: not a JSON object")
    return value


def guess_manifest_type(doc: dict[str, Any], declared: str = "") -> str:
    """The media type of a manifest document: as its descriptor said, as it says, or guessed
    from its shape (c/image's GuessMIMEType)."""
    if declared:
        return declared
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if "manifests" in doc:
        return OCI_INDEX
    config = doc.get("config")
    if isinstance(config, dict) and config.get("mediaType") == DOCKER_CONFIG:
        return DOCKER_MANIFEST
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return ""


# -- platforms ---------------------------------------------------------------------------------

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386",
           "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
           "armv7l": "arm", "armv6l": "arm", "mips64": "mips64le", "loongarch64": "loong64"}


class Platform:
    """An OS, architecture and variant, as an image index describes its images.

    ``Platform.parse("linux/arm64/v8")``; :meth:`host` is the machine's own (what an index
    is resolved to when no platform is named, as podman does).
    """

    __slots__ = ("architecture", "os", "variant")

    def __init__(self, os: str, architecture: str, variant: str = "") -> None:
        """A platform from its parts (Go's names: ``linux``, ``amd64``, ``arm64``, ``v8``)."""
        self.os = os
        self.architecture = architecture
        self.variant = variant

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``OS/ARCH[/VARIANT]``.

        Raises:
            ValueError: not of that form.
        """
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        """This machine's platform, with the variant Go assumes for it (arm64: v8)."""
        machine = os.uname().machine
        arch = _ARCHES.get(machine, machine)
        variant = {"arm64": "v8", "armv7l": "v7", "armv6l": "v6"}.get(machine if arch == "arm" else arch, "")
        return cls("linux", arch, variant)

    def candidates(self) -> list[Platform]:
        """The platforms acceptable for this one, best first (c/image's WantedPlatforms: an
        arm64/v8 machine also takes arm64 images that name no variant)."""
        out = [self]
        if self.variant and self.architecture == "arm64":
            out.append(Platform(self.os, self.architecture, ""))
        return out

    def matches(self, other: Platform) -> bool:
        """Whether an image of platform ``other`` is one of this one (variant only if named)."""
        return (self.os == other.os and self.architecture == other.architecture
                and (not self.variant or self.variant == other.variant))

    def __str__(self) -> str:
        """``os/arch[/variant]``."""
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def __repr__(self) -> str:
        """``Platform('linux/amd64')``."""
        return f"Platform({str(self)!r})"


def choose_instance(manifests: list[Any], platform: Platform, what: str) -> dict[str, Any]:
    """The descriptor in an index's ``manifests`` for ``platform`` (c/image's ChooseInstance)."""
    for wanted in platform.candidates():
        for desc in manifests:
            p = desc.get("platform") if isinstance(desc, dict) else None
            if not isinstance(p, dict):
                continue
            have = Platform(str(p.get("os") or ""), str(p.get("architecture") or ""),
                            str(p.get("variant") or ""))
            if wanted.matches(have):
                return dict(desc)
    raise TransportError(f"{what}: no image found in image index for architecture "
                         f"{platform.architecture}, variant {platform.variant!r}, OS {platform.os}")


# -- Go's JSON and times -----------------------------------------------------------------------

def go_json(value: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (``<``, ``>`` and ``&`` escaped)."""
    import orjson

    out = orjson.dumps(value)
    if b"<" in out or b">" in out or b"&" in out:
        out = out.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    return out


def go_time(text: object) -> str:
    """An RFC 3339 time from a config, re-written as Go marshals a parsed ``time.Time``
    (fraction without trailing zeros, ``Z`` for UTC); ``""`` when it is not one."""
    import re

    if not isinstance(text, str):
        return ""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?(Z|z|[+-]\d\d:\d\d)", text)
    if m is None:
        return ""
    frac = (m.group(2) or "").rstrip("0")
    if frac == ".":
        frac = ""
    zone = m.group(3)
    if zone in ("Z", "z", "+00:00", "-00:00"):
        zone = "Z"
    return m.group(1) + frac + zone


__all__ = ["Platform", "TransportError"]
