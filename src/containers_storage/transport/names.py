"""Image names as podman completes them (containers/common's ``NormalizeName`` over the docker
reference grammar of distribution/reference).

``busybox`` → ``localhost/busybox:latest``; ``docker.io/busybox`` →
``docker.io/library/busybox:latest``; ``quay.io/a/b:1`` stays; a name with both a tag and a digest
keeps only the digest, as podman does.
"""

from __future__ import annotations

import re

from .common import TransportError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^((?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)(?::({_TAG}))?(?:@({_DIGEST}))?$")
_NAME_MAX = 255


class Reference:
    """A parsed reference: ``name`` (with its domain), ``tag`` and ``digest`` (may be empty)."""

    __slots__ = ("digest", "name", "tag")

    def __init__(self, name: str, tag: str = "", digest: str = "") -> None:
        self.name = name
        self.tag = tag
        self.digest = digest

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def parse(text: str) -> Reference:
    """Parse without normalizing (distribution/reference's ``Parse``).

    Raises:
        TransportError: not a valid reference.
    """
    m = _REFERENCE.match(text)
    if m is None:
        if text and text.lower() != text and _REFERENCE.match(text.lower()):
            raise TransportError(f"normalizing name {text!r}: repository name must be lowercase")
        raise TransportError(f"normalizing name {text!r}: invalid reference format")
    if len(m.group(1)) > _NAME_MAX:
        raise TransportError(f"normalizing name {text!r}: repository name must not be more than "
                             f"{_NAME_MAX} characters")
    return Reference(m.group(1), m.group(2) or "", m.group(3) or "")


def _split_domain(name: str) -> tuple[str, str]:
    """distribution/reference's splitDockerDomain: the default domain is docker.io, and a
    one-component docker.io name is in ``library/``."""
    i = name.find("/")
    if i == -1 or (not any(c in name[:i] for c in ".:") and name[:i] != "localhost"
                   and name[:i].lower() == name[:i]):
        domain, rest = "docker.io", name
    else:
        domain, rest = name[:i], name[i + 1:]
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in rest:
        rest = "library/" + rest
    return domain, rest


def parse_normalized(text: str) -> Reference:
    """distribution/reference's ``ParseNormalizedNamed``: ``busybox`` →
    ``docker.io/library/busybox`` (no tag added)."""
    ref = parse(text)
    domain, rest = _split_domain(ref.name)
    ref.name = f"{domain}/{rest}"
    return ref


def normalize_name(text: str) -> str:
    """The name podman gives an image called ``text`` (containers/common's ``NormalizeName``).

    Short names go to ``localhost/``, docker.io names to their canonical form, and
    ``:latest`` is added when there is neither a tag nor a digest.

    Raises:
        TransportError: not a valid image name.
    """
    ref = parse(text)
    i = ref.name.find("/")
    registry = ref.name[:i] if i != -1 else ""
    if not any(c in registry for c in ".:") and registry != "localhost":
        text = "localhost/" + str(ref).lstrip("/")
    ref = parse_normalized(text)
    if ref.tag and ref.digest:
        ref.tag = ""  # podman (and docker) ignore the tag of a tagged and digested name
    elif not ref.tag and not ref.digest:
        ref.tag = "latest"
    return str(ref)


def tagged(text: str) -> Reference | None:
    """``text`` as a tagged reference (for a docker archive's RepoTags), or None."""
    try:
        ref = parse(text)
    except TransportError:
        return None
    return ref if ref.tag and not ref.digest else None


__all__ = ["Reference", "normalize_name", "parse", "parse_normalized", "tagged"]
