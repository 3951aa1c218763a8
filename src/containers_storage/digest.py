"""Digest strings validated as go-digest's ``Digest.Validate`` does (same rules, same error texts)."""

from __future__ import annotations

import re

from .errors import StorageError

# Lengths of the hex encodings of the algorithms go-digest registers.
_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_ANCHORED = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX = re.compile(r"^[a-f0-9]+$")


class DigestError(StorageError):
    text = "invalid checksum digest format"


INVALID_FORMAT = "invalid checksum digest format"
INVALID_LENGTH = "invalid checksum digest length"
UNSUPPORTED = "unsupported digest algorithm"


def validate(value: str) -> None:
    """Raise DigestError with go-digest's message when ``value`` is not a usable digest."""
    i = value.find(":")
    if i <= 0 or i + 1 == len(value):
        raise DigestError(INVALID_FORMAT)
    algorithm, encoded = value[:i], value[i + 1:]
    length = _ALGORITHMS.get(algorithm)
    if length is None:
        if not _ANCHORED.match(value):
            raise DigestError(INVALID_FORMAT)
        raise DigestError(UNSUPPORTED)
    if len(encoded) != length:
        raise DigestError(INVALID_LENGTH)
    if not _HEX.match(encoded):
        raise DigestError(INVALID_FORMAT)
