"""Go's ``strconv.Quote`` (what ``%q`` prints), for the error texts and listings that copy Go's.

Go quotes the bytes of a string: printable runes stay as they are (``é``, ``日本``), ``"`` and
``\\`` get a backslash, ``\\a \\b \\f \\n \\r \\t \\v`` their short escapes, other ASCII controls
and DEL become ``\\xNN``, other unprintable runes ``\\uNNNN`` or ``\\UNNNNNNNN``, and each byte
that is not valid UTF-8 ``\\xNN``.  A ``str`` that came from bytes through ``surrogateescape``
(file names, argv) is quoted as those bytes.
"""

from __future__ import annotations

_ESCAPES = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v",
            0x22: '\\"', 0x5C: "\\\\"}


def go_quote(value: str | bytes) -> str:
    """``strconv.Quote(value)``: ``value`` in double quotes with Go's escapes."""
    if isinstance(value, str):
        if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            return f'"{value}"'  # the usual name or ID
        value = _to_bytes(value)
    out = ['"']
    for ch in value.decode("utf-8", "surrogateescape"):
        c = ord(ch)
        escape = _ESCAPES.get(c)
        if escape is not None:
            out.append(escape)
        elif 0xDC80 <= c <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{c - 0xDC00:02x}")
        elif ch.isprintable():  # Python's printable is Go's IsPrint: letters, marks, numbers,
            out.append(ch)      # punctuation, symbols and the ASCII space
        elif c < 0x80:
            out.append(f"\\x{c:02x}")
        elif c < 0x10000:
            out.append(f"\\u{c:04x}")
        else:
            out.append(f"\\U{c:08x}")
    out.append('"')
    return "".join(out)


def _to_bytes(text: str) -> bytes:
    """The bytes a Go string holding ``text`` would have: surrogate escapes are raw bytes, and
    any other lone surrogate is the (invalid) UTF-8 of its code point."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return b"".join(ch.encode("utf-8", "surrogateescape") if not 0xD800 <= ord(ch) <= 0xDFFF
                        or 0xDC80 <= ord(ch) <= 0xDCFF else ch.encode("utf-8", "surrogatepass")
                        for ch in text)
