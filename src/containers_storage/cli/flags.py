"""Docker's mflag, as the Go CLI uses it, so that every command line parses (and fails) identically.

The rules that matter: a name like ``-json`` is a long option typed ``--json``; single letters are
typed ``-j`` and may be combined (``-qj``); booleans take ``--flag=false``; a non-boolean flag takes
the next argument verbatim; parsing stops at the first non-flag argument or ``--``; errors go to
stderr followed by a ``See '... --help'.`` hint.  Help output is aligned as Go's tabwriter does.
"""

from __future__ import annotations

import os

from .. import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from .output import Output

ERR_HELP = "flag: help requested"


class FlagError(Exception):
    """Parsing failed; ``str()`` is Go's error text.  ``exit_code`` is set for ExitOnError sets."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Retry(Exception):
    """A single-dash name that is not a flag: maybe a cluster of single-letter flags."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def parse_bool(value: str) -> bool:
    """Go's strconv.ParseBool."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"strconv.ParseBool: parsing {go_quote(value)}: invalid syntax")


def go_quote(value: str | bytes) -> str:
    """Go's strconv.Quote (``%q``): ``quoting.go_quote``, imported when a message needs it."""
    from ..quoting import go_quote as quote

    return quote(value)


def go_list(values: list[str]) -> str:
    """Go's ``%v`` of a []string: ``[a b c]``."""
    return "[" + " ".join(values) + "]"


class Flag:
    """One flag: every spelling in ``names`` (Go's ``[]string{"-json", "j"}``) shares one value."""

    __slots__ = ("default", "dest", "kind", "names", "usage")

    def __init__(self, names: list[str], usage: str, kind: str, dest: str, default: str) -> None:
        self.names = names
        self.usage = usage
        self.kind = kind  # "bool", "string" or "list"
        self.dest = dest
        self.default = default  # Go's DefValue, the text shown by PrintDefaults


class FlagSet:
    """A set of flags bound to ``values`` (shared between the global and command sets, as in Go)."""

    def __init__(self, name: str, prog: str, values: dict[str, object], exit_on_error: bool,
                 output: Output) -> None:
        self.name = name
        self.prog = prog
        self.values = values
        self.exit_on_error = exit_on_error
        self.output = output
        self.formal: dict[str, Flag] = {}
        self.args: list[str] = []
        self.usage: Callable[[], None] | None = None
        self.to_stdout = False

    # -- definitions ---------------------------------------------------------------------------
    def _define(self, names: list[str], usage: str, kind: str, dest: str, default: str) -> None:
        flag = Flag(names, usage, kind, dest, default)
        for name in names:
            self.formal[name.removeprefix("#")] = flag

    def add_bool(self, dest: str, names: list[str], default: bool, usage: str) -> None:
        self.values[dest] = default
        self._define(names, usage, "bool", dest, "true" if default else "false")

    def add_string(self, dest: str, names: list[str], default: str, usage: str) -> None:
        self.values[dest] = default
        self._define(names, usage, "string", dest, default)

    def add_list(self, dest: str, names: list[str], usage: str) -> None:
        """A repeatable flag (Go's ListOpts); the list object is shared, so values accumulate."""
        current = self.values.setdefault(dest, [])
        assert isinstance(current, list)
        self._define(names, usage, "list", dest, go_list(current))

    # -- parsing -------------------------------------------------------------------------------
    def _err(self, text: str) -> None:
        self.output.err(text)

    def failf(self, message: str) -> FlagError:
        """Print the error and the help hint to stderr, as mflag's failf does."""
        if self.prog == self.name:
            hint = f"See '{self.prog} --help'."
        else:
            hint = f"See '{self.prog} {self.name} --help'."
        self._err(f"{message}\n{hint}\n")
        return FlagError(message)

    def _show_usage(self) -> None:
        if self.usage is not None:
            self.usage()
        else:
            self.output.out(f"Usage of {self.name}:\n")
            self.print_defaults()

    def _parse_one(self) -> bool:
        """Consume one flag; False when flags are over.  Raises FlagError or _Retry."""
        if not self.args:
            return False
        s = self.args[0]
        if len(s) < 2 or s[0] != "-":
            return False
        if s == "--":
            self.args = self.args[1:]
            return False
        name = s[1:]
        if name[0] == "=":
            raise self.failf(f"bad flag syntax: {s}")
        self.args = self.args[1:]
        has_value = False
        value = ""
        if "=" in name:
            name, value = name.split("=", 1)
            value = _trim_quotes(value)
            has_value = True
        flag = self.formal.get(name)
        if flag is None:
            if name in ("-help", "help", "h"):
                self._show_usage()
                raise FlagError(ERR_HELP)
            if name.startswith("-"):
                raise self.failf(f"flag provided but not defined: -{name}")
            raise _Retry(name)
        if flag.kind == "bool":
            if has_value:
                try:
                    self.values[flag.dest] = parse_bool(value)
                except ValueError as e:
                    raise self.failf(f"invalid boolean value {go_quote(value)} for  -{name}: {e}") from None
            else:
                self.values[flag.dest] = True
        else:
            if not has_value and self.args:
                has_value = True
                value, self.args = self.args[0], self.args[1:]
            if not has_value:
                raise self.failf(f"flag needs an argument: -{name}")
            if flag.kind == "list":
                target = self.values[flag.dest]
                assert isinstance(target, list)
                target.append(value)
            else:
                self.values[flag.dest] = value
        for i, n in enumerate(flag.names):
            if n == "#" + name:
                replacement = next((m for m in flag.names[i:] if not m.startswith("#")), "")
                if replacement:
                    self._err(f"Warning: '-{name}' is deprecated, it will be replaced by "
                              f"'-{replacement}' soon. See usage.\n")
                else:
                    self._err(f"Warning: '-{name}' is deprecated, it will be removed soon. See usage.\n")
        return True

    def _parse(self, arguments: list[str]) -> None:
        self.args = list(arguments)
        while True:
            try:
                if self._parse_one():
                    continue
                return
            except _Retry as retry:
                name = retry.name
                if len(name) > 1:
                    failed: FlagError | None = None
                    for letter in name:
                        self.args = ["-" + letter, *self.args]
                        try:
                            if self._parse_one():
                                continue
                        except (FlagError, _Retry):
                            failed = self.failf(f"flag provided but not defined: -{name}")
                            break
                    if failed is None:
                        continue
                    raise failed from None
                raise self.failf(f"flag provided but not defined: -{name}") from None

    def parse(self, arguments: list[str], with_help: bool = False) -> None:
        """Go's ParseFlags: raises FlagError (with exit_code 125 for ExitOnError sets)."""
        if with_help:
            self.add_bool("help", ["#help", "-help"], False, "Print usage")
        try:
            self._parse(arguments)
        except FlagError as e:
            if self.exit_on_error:
                e.exit_code = 125
            raise
        if with_help and self.values.get("help"):
            self.to_stdout = True
            self._show_usage()
            raise FlagError(ERR_HELP, 0)

    # -- help ----------------------------------------------------------------------------------
    def sorted_flags(self) -> list[Flag]:
        """Go's sortFlags: by first name, ignoring one leading dash, case-insensitively first."""
        seen: dict[str, Flag] = {}
        for flag in self.formal.values():
            key = flag.names[0].removeprefix("#")
            seen.setdefault(key, flag)

        def order(name: str) -> tuple[str, str]:
            bare = name.removeprefix("-")
            return bare.lower(), bare

        return [seen[k] for k in sorted(seen, key=order)]

    def print_defaults(self) -> None:
        """Go's PrintDefaults through a tabwriter (minwidth 20, padding 3), to stderr by default."""
        home = os.environ.get("HOME", "")
        if not home:
            import pwd

            try:
                home = pwd.getpwuid(os.getuid()).pw_dir
            except KeyError:
                home = ""
        if home == "/":
            home = ""
        flags = self.sorted_flags()
        rows: list[tuple[str, str]] = []
        for flag in flags:
            names = [n for n in flag.names if not n.startswith("#")]
            if not names or not flag.usage:
                continue
            val = flag.default
            if home and val.startswith(home):
                val = "~" + val[len(home):]
            cell = "  -" + ", -".join(names)
            if val not in ("", "false", "0"):
                cell += "=" + val
            for line in flag.usage.split("\n"):
                rows.append((cell, " " + line))
                cell = ""
        lines: list[str] = [""] if flags else []
        width = max([len(c) for c, _ in rows] + [0]) + 3
        width = max(width, 20)
        for cell, text in rows:
            lines.append(cell.ljust(width) + text)
        text = "".join(line + "\n" for line in lines)
        if self.to_stdout:
            self.output.out(text)
        else:
            self.output.err(text)


def _trim_quotes(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
