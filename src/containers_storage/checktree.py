"""Go's checkDirectory: the tree a layer should show when mounted, built from the tar headers
of its diff and its parents' diffs, the tree it does show, and their differences.

``check`` uses this to catch content that reassembling a layer's diff cannot notice (files added
to the layer after the fact, changed owners, modes or times).  The rules follow Go's check.go
closely, quirks included (a parent directory the diff never names takes the attributes of the
first entry under it; an opaque whiteout re-creates its directory with the whiteout entry's
attributes, which the directory's own entry then overrides when it sorts after it), because the
differences are reported to users and must read the same as Go's.
"""

from __future__ import annotations

import os
import stat
import time

from . import TYPE_CHECKING
from .archive.gopath import go_clean
from .errors import StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from .archive.tarread import TarHeader
    from .idtools import IDMap

__all__ = ["Hdr", "Ignore", "Tree", "apply_headers", "compare_trees", "go_os_text", "go_stable_sort",
           "new_tree", "scan_tree"]


def go_os_text(err: OSError, op: str) -> str:
    """Go's *PathError text (``open /x: no such file or directory``) for an OSError."""
    message = err.strerror or str(err)
    if ": " in message:  # a driver already wrote the whole Go text
        return message
    if message[:1].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    if err.filename is None:
        return message
    return f"{op} {os.fsdecode(err.filename)}: {message}"


class Ignore:
    """Differences the store's options make expected (Go's checkIgnore): chown errors ignored,
    a forced mask, or hard-linked pulls that share one file's times."""

    __slots__ = ("filetype", "ownership", "permissions", "timestamps")

    def __init__(self, driver_options: list[str] | tuple[str, ...] = (),
                 pull_options: dict[str, str] | None = None) -> None:
        self.ownership = self.timestamps = self.permissions = self.filetype = False
        for opt in driver_options:
            if "ignore_chown_errors=true" in opt:
                self.ownership = True
            if "force_mask=" in opt:
                self.ownership = self.permissions = self.filetype = True
        for key, value in (pull_options or {}).items():
            if "use_hard_links" in key and value == "true":
                self.timestamps = True


_REG, _LINK, _SYMLINK, _CHAR, _BLOCK, _DIR, _FIFO, _XGLOBAL = 48, 49, 50, 51, 52, 53, 54, 103
_WHITEOUT = b".wh."
_OPAQUE = b".wh..wh..opq"
# Go compares os.ModeType|os.ModePerm of the two modes: the permission bits, plus Go's high
# file-type bits when a tar header's mode field happens to reach them.
_MODE_MASK = 0o777 | (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)

Info = tuple[int, int, int, int, int, int]  # typeflag, uid, gid, size, mode, mtime (seconds)


class Hdr:
    """The parts of a tar header the tree comparison uses.  Mutable on purpose: resolving a hard
    link overwrites its fields with the target's, and Go keeps that across later uses."""

    __slots__ = ("info", "linkname", "name")

    def __init__(self, name: bytes, typeflag: int, uid: int, gid: int, size: int, mode: int,
                 mtime: int, linkname: bytes = b"") -> None:
        self.name = name
        self.linkname = linkname
        self.info: Info = (typeflag, uid, gid, size, mode, mtime)

    @property
    def typeflag(self) -> int:
        return self.info[0]

    @classmethod
    def from_tar(cls, h: TarHeader) -> Hdr:
        return cls(h.name, h.typeflag, h.uid, h.gid, h.size, h.mode & 0xFFFFFFFF,
                   h.mtime_ns // 1_000_000_000, h.linkname)


class Tree:
    """A directory of the tree: its own attributes, subdirectories and other entries."""

    __slots__ = ("dirs", "files", "info")

    def __init__(self, uid: int, gid: int, size: int, mode: int, mtime: int) -> None:
        self.info: Info = (_DIR, uid, gid, size, mode, mtime)
        self.dirs: dict[bytes, Tree] = {}
        self.files: dict[bytes, Info] = {}


def new_tree() -> Tree:
    """An empty root with Go's defaults (0:0, mode 0555, now); a root is never compared."""
    return Tree(0, 0, 0, 0o555, int(time.time()))


def _tree_add(root: Tree, path: bytes, info: Info) -> None:
    typeflag, uid, gid, size, mode, mtime = info
    comps = path.split(b"/")
    if comps[-1] == b"":
        comps.pop()
    if comps and comps[0] == b".":
        comps = comps[1:]
    if typeflag != _REG:
        size = 0
    node = root
    if not comps:
        node.info = (node.info[0], uid, gid, node.info[3], mode, mtime)
        return
    for comp in comps[:-1]:
        sub = node.dirs.get(comp)
        if sub is None:  # a parent the diff never named takes this entry's attributes, as in Go
            sub = node.dirs[comp] = Tree(uid, gid, size, mode, mtime)
        node = sub
    name = comps[-1]
    if typeflag == _DIR:
        node.files.pop(name, None)
        sub = node.dirs.get(name)
        if sub is None:
            node.dirs[name] = Tree(uid, gid, size, mode, mtime)
        else:  # directory entries merge into what is there
            sub.info = (_DIR, uid, gid, size, mode, mtime)
    elif typeflag != _XGLOBAL:
        node.dirs.pop(name, None)
        node.files[name] = (typeflag, uid, gid, size, mode, mtime)


def _tree_remove(root: Tree, path: bytes) -> None:
    comps = path.split(b"/")
    node: Tree | None = root
    for comp in comps[:-1]:
        node = node.dirs.get(comp) if node is not None else None
        if node is None:
            return
    assert node is not None
    node.dirs.pop(comps[-1], None)
    node.files.pop(comps[-1], None)


def _split(name: bytes) -> tuple[bytes, bytes]:
    """Go's path.Split: everything up to the last slash, and the rest."""
    i = name.rfind(b"/")
    return name[:i + 1], name[i + 1:]


def _join(a: bytes, b: bytes) -> bytes:
    """Go's path.Join of two elements."""
    joined = b"/".join(p for p in (a, b) if p)
    return go_clean(joined) if joined else b""


def _tree_header(root: Tree, hdr: Hdr) -> None:
    """Apply one tar entry to the tree: whiteouts remove, hard links take their target's
    attributes (recorded into ``hdr``), everything else is added."""
    name = go_clean(hdr.name)
    parent, base = _split(name)
    if base.startswith(_WHITEOUT):
        if base == _OPAQUE:
            where = go_clean(parent)
            _tree_remove(root, where)
            _tree_add(root, where, (_DIR, *hdr.info[1:]))
        else:
            _tree_remove(root, _join(parent, base[len(_WHITEOUT):]))
        return
    if hdr.typeflag == _LINK:
        node = root
        for comp in go_clean(hdr.linkname).split(b"/"):
            if comp in (b".", b".."):
                continue
            sub = node.dirs.get(comp)
            if sub is not None:
                node = sub
                continue
            target = node.files.get(comp)
            if target is not None:
                hdr.info = target
            break
    _tree_add(root, name, hdr.info)


def _header_less(a: Hdr, b: Hdr) -> bool:
    """Go's order for one layer's headers: whiteouts before content in the same directory, hard
    links after everything else."""
    a_link, b_link = a.typeflag == _LINK, b.typeflag == _LINK
    if a_link != b_link:
        return b_link
    a_dir, a_file = _split(a.name)
    b_dir, b_file = _split(b.name)
    if a_dir != b_dir:
        return a.name < b.name
    if a_file == _OPAQUE:
        return True
    return a_file.startswith(_WHITEOUT) and not b_file.startswith(_WHITEOUT)


def apply_headers(root: Tree, hdrs: list[Hdr]) -> None:
    ordered = list(hdrs)
    go_stable_sort(ordered, _header_less)
    for hdr in ordered:
        _tree_header(root, hdr)


def go_stable_sort(data: list[Any], less: Callable[[Any, Any], bool]) -> None:
    """Go's sort.SliceStable, step for step (insertion-sorted blocks, then SymMerge).

    The header order above is not a strict weak order, so another stable sort could order some
    entries differently; following Go's algorithm keeps the expected tree identical.  Go's
    element-by-element rotations are done as slice moves, which end in the same arrangement.
    """
    n = len(data)
    block = 20
    a, b = 0, block
    while b <= n:
        _insertion_sort(data, a, b, less)
        a, b = b, b + block
    _insertion_sort(data, a, n, less)
    while block < n:
        a, b = 0, 2 * block
        while b <= n:
            _sym_merge(data, a, a + block, b, less)
            a, b = b, b + 2 * block
        if a + block < n:
            _sym_merge(data, a, a + block, n, less)
        block *= 2


def _insertion_sort(data: list[Any], a: int, b: int, less: Callable[[Any, Any], bool]) -> None:
    for i in range(a + 1, b):
        j = i
        while j > a and less(data[j], data[j - 1]):
            data[j], data[j - 1] = data[j - 1], data[j]
            j -= 1


def _sym_merge(data: list[Any], a: int, m: int, b: int, less: Callable[[Any, Any], bool]) -> None:
    if m - a == 1:
        i, j = m, b
        while i < j:
            h = (i + j) >> 1
            if less(data[h], data[a]):
                i = h + 1
            else:
                j = h
        if i - 1 > a:
            data[a:i] = [*data[a + 1:i], data[a]]
        return
    if b - m == 1:
        i, j = a, m
        while i < j:
            h = (i + j) >> 1
            if not less(data[m], data[h]):
                i = h + 1
            else:
                j = h
        if m > i:
            data[i:m + 1] = [data[m], *data[i:m]]
        return
    mid = (a + b) >> 1
    n = mid + m
    if m > mid:
        start, r = n - b, mid
    else:
        start, r = a, m
    p = n - 1
    while start < r:
        c = (start + r) >> 1
        if not less(data[p - c], data[c]):
            start = c + 1
        else:
            r = c
    end = n - start
    if start < m < end:
        data[start:end] = [*data[m:end], *data[start:m]]
    if a < start < mid:
        _sym_merge(data, a, start, mid, less)
    if mid < end < b:
        _sym_merge(data, mid, end, b, less)


def _stat_hdr(rel: bytes, st: os.stat_result) -> Hdr:
    """What Go's tar.FileInfoHeader makes of an on-disk entry."""
    fmt = stat.S_IFMT(st.st_mode)
    size = 0
    if fmt == stat.S_IFREG:
        typeflag, size = _REG, st.st_size
    elif fmt == stat.S_IFDIR:
        typeflag = _DIR
    elif fmt == stat.S_IFLNK:
        typeflag = _SYMLINK
    elif fmt == stat.S_IFCHR:
        typeflag = _CHAR
    elif fmt == stat.S_IFBLK:
        typeflag = _BLOCK
    elif fmt == stat.S_IFIFO:
        typeflag = _FIFO
    elif fmt == stat.S_IFSOCK:
        raise StorageError("archive/tar: sockets not supported")
    else:
        raise StorageError(f"archive/tar: unknown file mode {oct(st.st_mode)}")
    return Hdr(rel, typeflag, st.st_uid, st.st_gid, size, st.st_mode & 0o7777,
                st.st_mtime_ns // 1_000_000_000)


def scan_tree(top: str) -> Tree:
    """The tree under a mount point, walked as Go's filepath.Walk walks it (lexical pre-order,
    symlinks not followed, entries that vanish meanwhile skipped)."""
    tree = new_tree()
    root = os.fsencode(top)
    try:
        st = os.lstat(root)
    except OSError as e:
        raise StorageError(go_os_text(e, "lstat")) from e
    _tree_header(tree, _stat_hdr(b".", st))

    def entries(path: bytes, rel: bytes) -> Iterator[tuple[bytes, bytes, os.stat_result]]:
        try:
            names = sorted(os.listdir(path))
        except FileNotFoundError:
            return
        except OSError as e:
            raise StorageError(go_os_text(e, "open")) from e
        for name in names:
            child = path + b"/" + name
            try:
                st = os.lstat(child)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StorageError(go_os_text(e, "lstat")) from e
            yield child, (rel + b"/" + name if rel else name), st

    stack = [entries(root, b"")] if stat.S_ISDIR(st.st_mode) else []
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        path, rel, st = item
        _tree_header(tree, _stat_hdr(rel, st))
        if stat.S_ISDIR(st.st_mode):
            stack.append(entries(path, rel))
    return tree


class _Compare:
    """Walks two trees and lists every difference in Go's notation."""

    def __init__(self, uid_map: list[IDMap] | None, gid_map: list[IDMap] | None,
                 ignore: Ignore) -> None:
        self.maps = (uid_map or [], gid_map or []) if (uid_map or gid_map) else None
        self.ignore = ignore

    def info(self, a: Info, b: Info) -> bytes:
        """Go's compareFileInfo: ``attr:expected￫actual`` pairs, comma-separated."""
        ignore = self.ignore
        out: list[str] = []
        if a[0] != b[0] and not ignore.filetype:
            out.append(f"filetype:{a[0]}￫{b[0]}")
        b_uid, b_gid = b[1], b[2]
        if self.maps is not None:
            from .idtools import to_container

            try:
                b_uid = to_container(b_uid, self.maps[0])
                b_gid = to_container(b_gid, self.maps[1])
            except StorageError as e:
                return str(e).encode()
        if a[1] != b_uid and not ignore.ownership:
            out.append(f"uid:{a[1]}￫{b_uid}")
        if a[2] != b_gid and not ignore.ownership:
            out.append(f"gid:{a[2]}￫{b_gid}")
        if a[3] != b[3]:
            out.append(f"size:{a[3]}￫{b[3]}")
        if a[4] & _MODE_MASK != b[4] & _MODE_MASK and not ignore.permissions:
            out.append(f"mode:{a[4]:04o}￫{b[4]:04o}")
        if a[5] != b[5] and not ignore.timestamps:
            out.append(f"mtime:0x{a[5]:x}￫0x{b[5]:x}")
        return ",".join(out).encode()

    def trees(self, path: bytes, a: Tree | None, b: Tree | None, out: list[bytes]) -> None:
        if a is None:
            a = new_tree()
        if b is None:
            b = new_tree()
        for name, adir in a.dirs.items():
            here = path + b"/" + name
            bdir = b.dirs.get(name)
            if bdir is None:
                out.append(b"-" + here + b"/")
                self.trees(here, adir, None, out)
            else:
                attrs = self.info(adir.info, bdir.info)
                if attrs:
                    out.append(here + b"(" + attrs + b")")
                self.trees(here, adir, bdir, out)
        for name, bdir in b.dirs.items():
            if name not in a.dirs:
                here = path + b"/" + name
                out.append(b"+" + here + b"/")
                self.trees(here, None, bdir, out)
        for name, afile in a.files.items():
            bfile = b.files.get(name)
            if bfile is None:
                out.append(b"-" + path + b"/" + name)
            else:
                attrs = self.info(afile, bfile)
                if attrs:
                    out.append(path + b"/" + name + b"(" + attrs + b")")
        for name, bfile in b.files.items():
            aprev = a.files.get(name)
            if aprev is None:
                out.append(b"+" + path + b"/" + name)
                continue
            attrs = self.info(aprev, bfile)
            if attrs:
                out.append(b"+" + path + b"/" + name + b"(" + attrs + b")")


def compare_trees(expected: Tree, actual: Tree, uid_map: list[IDMap] | None,
                  gid_map: list[IDMap] | None, ignore: Ignore) -> list[str]:
    """Every difference, sorted by path with removals first (Go orders them by the same rule,
    though its comparison is not consistent enough to promise one order in every case)."""
    out: list[bytes] = []
    _Compare(uid_map, gid_map, ignore).trees(b"", expected, actual, out)
    out.sort(key=lambda d: (d[1:], 0 if d[:1] == b"-" else 1))
    return [os.fsdecode(d) for d in out]
