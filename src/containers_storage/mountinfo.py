"""Which paths are mount points, from /proc/self/mountinfo (no subprocess, no external tool)."""

from __future__ import annotations

import os


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [_unescape(line.split(" ", 5)[4]) for line in f if line.strip()]


class MountEntry:
    """One mountinfo line: where, which file system type, and how mount events propagate."""

    __slots__ = ("fstype", "mount_point", "propagation")

    def __init__(self, mount_point: str, fstype: str, propagation: list[str]) -> None:
        self.mount_point = mount_point
        self.fstype = fstype
        self.propagation = propagation  # optional fields: shared:N, master:N, unbindable...

    @property
    def private(self) -> bool:
        return not any(tag.startswith(("shared:", "master:", "unbindable")) for tag in self.propagation)


def parse(text: str) -> list[MountEntry]:
    """mountinfo lines: ID, parent, dev, root, mount point, options, optional fields, "-", type..."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        out.append(MountEntry(_unescape(fields[4]), fields[sep + 1], fields[6:sep]))
    return out


def entries() -> list[MountEntry]:
    """Every mount of this process's namespace, in mount order (a later one covers an earlier)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())


def topmost(mounts: list[MountEntry], path: str) -> MountEntry | None:
    """The mount whose mount point is exactly ``path`` (the last when mounts are stacked)."""
    found = None
    for entry in mounts:
        if entry.mount_point == path:
            found = entry
    return found


def containing(mounts: list[MountEntry], path: str) -> MountEntry | None:
    """The mount ``path`` lives on: the deepest mount point above it, the last of equals."""
    found = None
    for entry in mounts:
        mp = entry.mount_point
        inside = path == mp or path.startswith(mp.rstrip("/") + "/")
        if inside and (found is None or len(mp) >= len(found.mount_point)):
            found = entry
    return found


def mount_at(path: str) -> MountEntry | None:
    return topmost(entries(), os.path.realpath(path))  # mountinfo holds resolved paths


def mount_containing(path: str) -> MountEntry | None:
    return containing(entries(), os.path.realpath(path))


def is_mountpoint(path: str) -> bool:
    if not path:
        return False
    return mount_at(path) is not None
