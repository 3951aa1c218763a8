"""What every command receives (``Context``) and the helpers commands share.

Kept free of heavy imports: the store is already open when a command runs, and anything else a
command needs (archive engine, hashing) is imported inside that command.
"""

from __future__ import annotations

import os
import time

from .. import TYPE_CHECKING
from ..quoting import go_quote
from .output import Output

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from ..idtools import IDMap
    from ..records import Record
    from ..store import Store

    T = TypeVar("T")


class CommandError(Exception):
    """A failure whose text is exactly what Go prints (to stderr, exit status 1)."""


class Context:
    """A running command: its name, flag values, open store and output streams."""

    def __init__(self, name: str, values: dict[str, object], store: Store, out: Output) -> None:
        self.name = name
        self.values = values
        self.store = store
        self.out = out

    def flag(self, dest: str) -> bool:
        return bool(self.values.get(dest, False))

    def text(self, dest: str) -> str:
        value = self.values.get(dest, "")
        return value if isinstance(value, str) else ""

    def strings(self, dest: str) -> list[str]:
        value = self.values.get(dest)
        return [str(v) for v in value] if isinstance(value, list) else []

    @property
    def json(self) -> bool:
        return self.flag("json")


def found(args: list[str], lookup: Callable[[str], T]) -> list[T]:
    """What ``lookup`` finds for each argument, skipping the unknown ones (Go's commands list
    what they can and exit 1 when something was missing: compare the lengths)."""
    from ..errors import StorageError

    out: list[T] = []
    for arg in args:
        try:
            out.append(lookup(arg))
        except StorageError:
            pass
    return out


def print_created(ctx: Context, record: Record) -> int:
    """A new layer, image or container as Go's create-* commands print it: the ID and then each
    name after a tab, or (``--json``) the record."""
    if ctx.json:
        from .gojson import go_view

        ctx.out.json(go_view(record.raw, record.FIELDS))
        return 0
    ctx.out.out(record.id + "\n" + "".join(f"\t{name}\n" for name in record.names))
    return 0


def go_error_text(err: BaseException) -> str:
    """Go's text for an error: our sentinels already carry it; OS errors become ``op path: msg``."""
    from ..errors import StorageError

    if isinstance(err, StorageError | CommandError):
        return str(err)
    if isinstance(err, OSError):
        return go_os_error(err)
    return str(err)


def go_os_error(err: OSError, op: str = "open") -> str:
    """``open /x: no such file or directory``, as Go's *PathError prints."""
    message = err.strerror or str(err)
    if message and message[0].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    if err.filename is not None:
        name = os.fsdecode(err.filename)
        if err.filename2 is not None:
            return f"{op} {name} {os.fsdecode(err.filename2)}: {message}"
        return f"{op} {name}: {message}"
    return message


def read_file(path: str) -> bytes:
    """Read a ``--file``/``--metadata-file`` argument; Go's error text when it cannot."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CommandError(go_os_error(e, "open")) from None


def debug_line(message: str, level: str = "debug") -> str:
    """One logrus TextFormatter line (what Go prints with --debug when stderr is not a TTY)."""
    now = time.time()
    local = time.localtime(now)
    offset = local.tm_gmtoff or 0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local)
    if offset == 0:
        stamp += "Z"
    else:
        sign = "+" if offset > 0 else "-"
        hours, minutes = divmod(abs(offset) // 60, 60)
        stamp += f"{sign}{hours:02d}:{minutes:02d}"
    return f'time="{stamp}" level={level} msg={_logrus_value(message)}\n'


def _logrus_value(text: str) -> str:
    for ch in text:
        if not (ch.isascii() and (ch.isalnum() or ch in "-._/@^+")):
            return go_quote(text)
    return text


def id_mappings(ctx: Context) -> tuple[list[IDMap], list[IDMap], bool, bool]:
    """Go's paramIDMapping: --uidmap/--gidmap/--subuidmap/--subgidmap/--host*map as ID maps."""
    from ..idtools import IDMap

    host_uid, host_gid = ctx.flag("hostuidmap"), ctx.flag("hostgidmap")
    uidmap, gidmap = ctx.text("uidmap"), ctx.text("gidmap")
    sub_uid, sub_gid = ctx.text("subuidmap"), ctx.text("subgidmap")
    if host_uid and (uidmap or sub_uid):
        raise CommandError("host uid map specified along with UID mapping")
    if host_gid and (gidmap or sub_gid):
        raise CommandError("host gid map specified along with GID mapping")
    if not sub_gid and sub_uid:
        sub_gid = sub_uid
    if not sub_uid and sub_gid:
        sub_uid = sub_gid
    uids: list[IDMap] = []
    gids: list[IDMap] = []
    if sub_uid and sub_gid:
        uids = _subid_map("/etc/subuid", sub_uid)
        gids = _subid_map("/etc/subgid", sub_gid)
        if not uids:
            raise CommandError(f"no subuid ranges found for user {go_quote(sub_uid)} in /etc/subuid")
        if not gids:
            raise CommandError(f"no subgid ranges found for group {go_quote(sub_gid)} in /etc/subgid")
    uids += parse_id_map(uidmap, "uid")
    gids += parse_id_map(gidmap, "gid")
    _ = IDMap
    return uids, gids, host_uid, host_gid


def parse_id_map(spec: str, setting: str) -> list[IDMap]:
    """Go's idtools.ParseIDMap for one ``--uidmap`` value: colon-separated triples."""
    from ..idtools import IDMap

    if not spec:
        return []
    fields = spec.split(":")
    malformed = CommandError(
        f'initializing ID mappings: {setting} setting is malformed expected ["uint32:uint32:uint32"]: '
        f'[{go_quote(spec)}]')
    if len(fields) % 3:
        raise malformed
    maps: list[IDMap] = []
    for i in range(0, len(fields), 3):
        try:
            triple = [_parse_uint32(f) for f in fields[i:i + 3]]
        except ValueError:
            raise malformed from None
        maps.append(IDMap(triple[0], triple[1], triple[2]))
    return maps


def _parse_uint32(text: str) -> int:
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(text)
    value = int(text)
    if value > 0xFFFFFFFF:
        raise ValueError(text)
    return value


def _subid_map(path: str, name: str) -> list[IDMap]:
    """The ranges /etc/subuid (or subgid) grants ``name``, stacked from container ID 0 up."""
    from ..userns import parse_subid_file, stacked_maps

    uid_text = ""
    try:
        import pwd

        uid_text = str(pwd.getpwnam(name).pw_uid)
    except (KeyError, ImportError):
        pass
    try:
        return stacked_maps(parse_subid_file(path, name, uid_text))
    except OSError as e:
        raise CommandError(go_os_error(e)) from None
    except ValueError as e:
        raise CommandError(str(e)) from None


__all__ = ["CommandError", "Context", "debug_line", "found", "go_error_text", "go_os_error", "go_quote",
           "id_mappings", "read_file"]
