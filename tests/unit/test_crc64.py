"""CRC-64/ISO as Go computes it (crc64.MakeTable(crc64.ISO)), streamed and in one go."""

from __future__ import annotations

import os

from containers_storage.archive import crc64 as mod
from containers_storage.archive.crc64 import Crc64, crc64


def test_check_value() -> None:
    # The catalogue check value of CRC-64/GO-ISO over "123456789".
    assert crc64(b"123456789") == 0xB90956C775A41001
    assert Crc64(b"123456789").digest() == bytes.fromhex("b90956c775a41001")


def test_empty_is_zero_like_go() -> None:
    assert Crc64().digest() == bytes(8)
    assert crc64(b"") == 0


def test_streaming_equals_one_shot_for_any_split() -> None:
    data = os.urandom(100_003)
    whole = crc64(data)
    for cut in (0, 1, 7, 4096, 50_000, len(data)):
        h = Crc64()
        h.update(data[:cut])
        h.update(memoryview(data)[cut:])
        assert h.value == whole
        assert crc64(data[cut:], crc64(data[:cut])) == whole


def test_pure_python_fallback_agrees() -> None:
    data = os.urandom(5000)
    assert mod._slow_update(0, data) == crc64(data)
    assert mod._slow_update(mod._slow_update(0, data[:10]), data[10:]) == crc64(data)
