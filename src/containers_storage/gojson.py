"""Go's encoding/json byte conventions that orjson does not follow by itself.

Kept free of imports so the CLI's fast listing path can use it without loading the records layer.
"""

from __future__ import annotations


def go_escape(data: bytes) -> bytes:
    """Go escapes <, >, & and U+2028/U+2029 inside strings; match its bytes.

    Safe on whole JSON documents: those characters can only occur inside strings.
    """
    if b"<" in data:
        data = data.replace(b"<", b"\\u003c")
    if b">" in data:
        data = data.replace(b">", b"\\u003e")
    if b"&" in data:
        data = data.replace(b"&", b"\\u0026")
    if b"\xe2\x80\xa8" in data:
        data = data.replace(b"\xe2\x80\xa8", b"\\u2028")
    if b"\xe2\x80\xa9" in data:
        data = data.replace(b"\xe2\x80\xa9", b"\\u2029")
    return data
