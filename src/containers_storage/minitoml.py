"""A fast path for the TOML that storage.conf files are written in.

Every CLI call without explicit roots reads one or two storage.conf files, and a rootless user's
calls always do.  ``tomllib`` costs ~10 ms to import (``re``, ``string``, ``typing``...) against
~0.2 ms to parse such a file, a third of a listing's whole time.  This parser takes the subset those
files use (tables, bare or quoted keys, basic and literal strings, integers, booleans, arrays,
inline tables, comments) with no imports, and gives up (returns ``None``) on anything else:
dotted keys, multi-line strings, floats, dates, arrays of tables, redefinitions, any doubt.
The caller then parses with ``tomllib``, which also reports real errors.  For input it accepts it
returns exactly what ``tomllib.loads`` returns (tests compare the two on generated and real files).
"""

from __future__ import annotations

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_DIGITS = {"0x": "0123456789abcdefABCDEF", "0o": "01234567", "0b": "01"}


class _Unsupported(Exception):
    """Not in the subset (or not valid TOML): let tomllib decide."""


class _Parser:
    __slots__ = ("n", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.n = len(text)

    # -- whitespace, comments, line ends ------------------------------------------------------
    def _blank(self) -> None:
        """Spaces and tabs only."""
        text, n, pos = self.text, self.n, self.pos
        while pos < n and text[pos] in " \t":
            pos += 1
        self.pos = pos

    def _comment(self) -> None:
        if self.pos < self.n and self.text[self.pos] == "#":
            end = self.text.find("\n", self.pos)
            comment = self.text[self.pos : self.n if end < 0 else end]
            for ch in comment:
                if (ch < " " and ch != "\t") or ch == "\x7f":
                    raise _Unsupported
            self.pos = self.n if end < 0 else end

    def _end_of_line(self) -> None:
        """After a header or key/value: blanks, an optional comment, then a newline or EOF."""
        self._blank()
        self._comment()
        if self.pos >= self.n:
            return
        if self.text.startswith("\r\n", self.pos):
            self.pos += 2
        elif self.text[self.pos] == "\n":
            self.pos += 1
        else:
            raise _Unsupported

    def _skip_lines(self) -> None:
        """Blank lines and comment lines, in an array too."""
        while True:
            self._blank()
            self._comment()
            if self.text.startswith("\r\n", self.pos):
                self.pos += 2
            elif self.pos < self.n and self.text[self.pos] == "\n":
                self.pos += 1
            else:
                return

    # -- keys and values ------------------------------------------------------------------------
    def _key(self) -> str:
        text, pos = self.text, self.pos
        if pos >= self.n:
            raise _Unsupported
        if text[pos] == '"':
            key = self._basic_string()
        elif text[pos] == "'":
            key = self._literal_string()
        else:
            end = pos
            while end < self.n and text[end] in _BARE:
                end += 1
            if end == pos:
                raise _Unsupported
            key = text[pos:end]
            self.pos = end
        self._blank()
        if self.pos < self.n and self.text[self.pos] == ".":
            raise _Unsupported  # dotted keys
        return key

    def _basic_string(self) -> str:
        text, n = self.text, self.n
        if text.startswith('"""', self.pos):
            raise _Unsupported
        pos = self.pos + 1
        out: list[str] = []
        start = pos
        while True:
            if pos >= n:
                raise _Unsupported
            ch = text[pos]
            if ch == '"':
                out.append(text[start:pos])
                self.pos = pos + 1
                return "".join(out)
            if ch == "\\":
                out.append(text[start:pos])
                if pos + 1 >= n:
                    raise _Unsupported
                esc = text[pos + 1]
                if esc in _ESCAPES:
                    out.append(_ESCAPES[esc])
                    pos += 2
                elif esc in "uU":
                    width = 4 if esc == "u" else 8
                    digits = text[pos + 2 : pos + 2 + width]
                    if len(digits) != width or any(c not in _DIGITS["0x"] for c in digits):
                        raise _Unsupported
                    code = int(digits, 16)
                    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                        raise _Unsupported
                    out.append(chr(code))
                    pos += 2 + width
                else:
                    raise _Unsupported
                start = pos
                continue
            if (ch < " " and ch != "\t") or ch == "\x7f":
                raise _Unsupported
            pos += 1

    def _literal_string(self) -> str:
        text = self.text
        if text.startswith("'''", self.pos):
            raise _Unsupported
        end = text.find("'", self.pos + 1)
        if end < 0:
            raise _Unsupported
        value = text[self.pos + 1 : end]
        for ch in value:
            if (ch < " " and ch != "\t") or ch == "\x7f":
                raise _Unsupported
        self.pos = end + 1
        return value

    def _value(self) -> Any:
        text, pos = self.text, self.pos
        if pos >= self.n:
            raise _Unsupported
        ch = text[pos]
        if ch == '"':
            return self._basic_string()
        if ch == "'":
            return self._literal_string()
        if ch == "[":
            return self._array()
        if ch == "{":
            return self._inline_table()
        end = pos
        while end < self.n and text[end] not in " \t\r\n#,]}":
            end += 1
        token = text[pos:end]
        self.pos = end
        if token == "true":
            return True
        if token == "false":
            return False
        return _integer(token)

    def _array(self) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while True:
            self._skip_lines()
            if self.pos >= self.n:
                raise _Unsupported
            if self.text[self.pos] == "]":
                self.pos += 1
                return items
            items.append(self._value())
            self._skip_lines()
            if self.pos >= self.n:
                raise _Unsupported
            if self.text[self.pos] == ",":
                self.pos += 1
            elif self.text[self.pos] != "]":
                raise _Unsupported

    def _inline_table(self) -> dict[str, Any]:
        self.pos += 1
        table: dict[str, Any] = {}
        self._blank()
        if self.pos < self.n and self.text[self.pos] == "}":
            self.pos += 1
            return table
        while True:
            self._blank()
            key = self._key()
            if key in table or self.pos >= self.n or self.text[self.pos] != "=":
                raise _Unsupported
            self.pos += 1
            self._blank()
            table[key] = self._value()
            self._blank()
            if self.pos >= self.n:
                raise _Unsupported
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "}":
                return table
            if ch != ",":
                raise _Unsupported

    # -- the document ---------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        root: dict[str, Any] = {}
        current = root
        defined: set[tuple[str, ...]] = set()
        inline: set[int] = set()  # ids of inline tables and arrays: closed to headers
        while True:
            self._skip_lines()
            if self.pos >= self.n:
                return root
            if self.text[self.pos] == "[":
                if self.text.startswith("[[", self.pos):
                    raise _Unsupported  # arrays of tables
                self.pos += 1
                names: list[str] = []
                while True:
                    self._blank()
                    if self.pos < self.n and self.text[self.pos] in "\"'":
                        names.append(self._basic_string() if self.text[self.pos] == '"'
                                     else self._literal_string())
                    else:
                        end = self.pos
                        while end < self.n and self.text[end] in _BARE:
                            end += 1
                        if end == self.pos:
                            raise _Unsupported
                        names.append(self.text[self.pos : end])
                        self.pos = end
                    self._blank()
                    if self.pos < self.n and self.text[self.pos] == ".":
                        self.pos += 1
                        continue
                    if self.pos < self.n and self.text[self.pos] == "]":
                        self.pos += 1
                        break
                    raise _Unsupported
                path = tuple(names)
                if path in defined:
                    raise _Unsupported
                defined.add(path)
                current = root
                for name in names:
                    nxt = current.get(name)
                    if nxt is None:
                        nxt = current[name] = {}
                    elif not isinstance(nxt, dict) or id(nxt) in inline:
                        raise _Unsupported
                    current = nxt
                self._end_of_line()
                continue
            key = self._key()
            if key in current or self.pos >= self.n or self.text[self.pos] != "=":
                raise _Unsupported
            self.pos += 1
            self._blank()
            value = self._value()
            if isinstance(value, dict | list):
                inline.add(id(value))
            current[key] = value
            self._end_of_line()


def _integer(token: str) -> int:
    if not token:
        raise _Unsupported
    prefix = token[:2]
    if prefix in _DIGITS:
        body = token[2:]
        if not body or body[0] == "_" or body[-1] == "_" or "__" in body:
            raise _Unsupported
        if any(c not in _DIGITS[prefix] and c != "_" for c in body):
            raise _Unsupported
        return int(body.replace("_", ""), {"0x": 16, "0o": 8, "0b": 2}[prefix])
    sign = token[0] in "+-"
    body = token[1:] if sign else token
    if not body or body[0] == "_" or body[-1] == "_" or "__" in body:
        raise _Unsupported
    if any(c not in "0123456789_" for c in body):
        raise _Unsupported  # floats, dates, inf/nan, anything else
    if len(body) > 1 and body[0] == "0":
        raise _Unsupported  # leading zeros are invalid TOML
    return int(token.replace("_", ""))


def loads(text: str) -> dict[str, Any] | None:
    """The document as ``tomllib.loads`` gives it, or ``None`` when it is not in the subset."""
    try:
        return _Parser(text).document()
    except (_Unsupported, ValueError, IndexError, RecursionError):
        return None


def load_file(path: str) -> dict[str, Any]:
    """Parse a TOML file: the fast path, else ``tomllib`` (whose errors propagate)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        parsed = loads(text)
        if parsed is not None:
            return parsed
    import tomllib

    return tomllib.loads(data.decode("utf-8"))


__all__ = ["load_file", "loads"]
