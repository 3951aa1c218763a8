"""What changed between a layer and its parent: Go's ``ChangesDirs``, ``OverlayChanges``, ``ChangesSize``.

Two forms, as in Go.  The naive one compares two complete trees (vfs, or any driver without a
native diff): a path is Modify when its type, permissions, owner, device number, mtime (whole
seconds, or nanoseconds when both sides have them), size (non-directories), symlink target,
``security.capability`` or ``user.*`` xattrs differ, and a directory whose only change is below
it is reported Modify too.  The overlay one reads an upper ``diff`` directory alone, taking char
0/0 devices as deletions and ``trusted.overlay.opaque=y`` directories (``user.overlay.opaque``
when rootless, as overlay's ``userxattr`` mounts write it) that hide a lower one as deletions of
that directory, and asks the lower layers whether anything else is an Add or a Modify.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..errors import InvalidMappings
from ..idtools import IDMap, to_container
from ..quoting import go_quote
from .confine import open_beneath, open_root

__all__ = [
    "OPAQUE_XATTR",
    "Change",
    "ChangeKind",
    "changes_dirs",
    "changes_overlay",
    "changes_size",
    "go_quote",
    "lexical_walk",
    "opaque_xattr",
]

OPAQUE_XATTR = "trusted.overlay.opaque"
ROOTLESS_OPAQUE_XATTR = "user.overlay.opaque"


def opaque_xattr() -> str:
    """The opaque-directory xattr of this process's overlay mounts (Go's GetOverlayXattrName):
    ``trusted.`` as root, ``user.`` when rootless (also as uid 0 of a rootless namespace)."""
    from ..userns import is_rootless

    return ROOTLESS_OPAQUE_XATTR if is_rootless() else OPAQUE_XATTR


class ChangeKind(enum.IntEnum):
    """Go's ``archive.ChangeType`` values (they appear in ``changes --json`` output)."""

    MODIFY = 0
    ADD = 1
    DELETE = 2

    @property
    def word(self) -> str:
        """The verb the Go CLI prints: Modify, Add, Delete."""
        return self.name.capitalize()


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path, rooted (``/a/b``); non-UTF-8 bytes are kept as surrogate escapes."""

    path: str
    kind: ChangeKind

    def __str__(self) -> str:
        """The Go CLI's line: ``Add "/a/b"`` (``%s %q``)."""
        return f"{self.kind.word} {go_quote(os.fsencode(self.path))}"

    def to_json(self) -> dict[str, object]:
        """Go's JSON encoding of ``archive.Change`` (exported field names, numeric kind)."""
        return {"Path": self.path, "Kind": int(self.kind)}


# --- naive: two trees ---------------------------------------------------------------------------


class _Node:
    """What Go's ``FileInfo`` keeps per path for the comparison."""

    __slots__ = ("added", "capability", "children", "name", "parent", "st", "target", "xattrs")

    def __init__(self, name: bytes, parent: _Node | None, st: os.stat_result | None) -> None:
        self.name = name
        self.parent = parent
        self.st = st
        self.children: dict[bytes, _Node] = {}
        self.capability: bytes | None = None
        self.xattrs: dict[bytes, bytes] | None = None
        self.target: bytes = b""
        self.added = False

    def is_dir(self) -> bool:
        # Go tests the S_IFDIR bit alone, which sockets and block devices also carry.
        return self.st is None or bool(self.st.st_mode & stat.S_IFDIR)

    def path(self) -> bytes:
        parts: list[bytes] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return b"/" + b"/".join(reversed(parts))


def xattrs(path: bytes, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    """The ``wanted`` extended attributes of ``path`` itself (never a link's target), without
    those that vanish meanwhile; a value too big to read comes as None (callers word that)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENODATA):
            return
        raise
    for key in names:
        if not wanted(key):
            continue
        try:
            yield key, os.getxattr(path, key, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.E2BIG:
                yield key, None
            elif e.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise


def _read_xattrs(path: bytes, node: _Node) -> None:
    for key, value in xattrs(path, lambda key: key == "security.capability" or key.startswith("user.")):
        if value is None:
            continue
        if key == "security.capability":
            node.capability = value
        else:
            if node.xattrs is None:
                node.xattrs = {}
            node.xattrs[os.fsencode(key)] = value


def _add_node(parent: _Node, name: bytes, dirpath: bytes, st: os.stat_result) -> _Node:
    node = _Node(name, parent, st)
    path = dirpath + b"/" + name
    _read_xattrs(path, node)
    if stat.S_ISLNK(st.st_mode):
        node.target = os.readlink(path)
    parent.children[name] = node
    return node


def _list_dir(path: bytes) -> dict[bytes, int]:
    with os.scandir(path) as it:
        return {e.name: e.inode() for e in it}


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _walk(old_dir: bytes, new_dir: bytes, old: _Node | None, new: _Node | None,
          st_old: os.stat_result | None, st_new: os.stat_result | None) -> None:
    """Go's walker: both trees in one pass, skipping names that are the same inode on both sides.

    An explicit stack rather than recursion: a layer can nest deeper than Python's stack.
    """
    stack = [(old_dir, new_dir, old, new, st_old, st_new)]
    while stack:
        old_dir, new_dir, old, new, st_old, st_new = stack.pop()
        old_is_dir = st_old is not None and stat.S_ISDIR(st_old.st_mode)
        new_is_dir = st_new is not None and stat.S_ISDIR(st_new.st_mode)
        if not old_is_dir and not new_is_dir:
            continue
        same_dev = st_old is not None and st_new is not None and st_old.st_dev == st_new.st_dev
        names_old = _list_dir(old_dir) if old_is_dir else {}
        names_new = _list_dir(new_dir) if new_is_dir else {}
        for name in sorted(names_old.keys() | names_new.keys()):
            ino_old, ino_new = names_old.get(name), names_new.get(name)
            if ino_old is not None and ino_new is not None and ino_old == ino_new and same_dev:
                continue
            c_old = _lstat(old_dir + b"/" + name) if old_is_dir else None
            c_new = _lstat(new_dir + b"/" + name) if new_is_dir else None
            n_old = _add_node(old, name, old_dir, c_old) if c_old is not None and old is not None else None
            n_new = _add_node(new, name, new_dir, c_new) if c_new is not None and new is not None else None
            stack.append((old_dir + b"/" + name, new_dir + b"/" + name, n_old, n_new, c_old, c_new))


class _Maps:
    __slots__ = ("gid", "uid")

    def __init__(self, uid: Sequence[IDMap] | None, gid: Sequence[IDMap] | None) -> None:
        self.uid = uid
        self.gid = gid

    def to_container(self, uid: int, gid: int) -> tuple[int, int] | None:
        try:
            return to_container(uid, self.uid), to_container(gid, self.gid)
        except InvalidMappings:
            return None


def _same_mtime(a: os.stat_result, b: os.stat_result) -> bool:
    """Go's sameFsTimeSpec: same second, and same nanoseconds unless either side has none."""
    sa, na = divmod(a.st_mtime_ns, 1_000_000_000)
    sb, nb = divmod(b.st_mtime_ns, 1_000_000_000)
    return sa == sb and (na == nb or na == 0 or nb == 0)


def _stat_different(old: os.stat_result, new: os.stat_result, old_maps: _Maps, new_maps: _Maps) -> bool:
    old_ids = (old.st_uid, old.st_gid)
    new_ids = (new.st_uid, new.st_gid)
    mapped = new_maps.to_container(*new_ids)
    if mapped is not None:
        new_ids = mapped
        mapped_old = old_maps.to_container(*old_ids)
        if mapped_old is not None:
            old_ids = mapped_old
    return (old.st_mode != new.st_mode or old_ids != new_ids or old.st_rdev != new.st_rdev
            or not _same_mtime(old, new)
            or (not stat.S_ISDIR(old.st_mode) and old.st_size != new.st_size))


def _add_changes(new: _Node, old: _Node | None, out: list[Change], old_maps: _Maps, new_maps: _Maps) -> None:
    """Go's ``FileInfo.addChanges``, with a stack; ``out`` comes unordered and is sorted after.

    A directory not itself changed is reported Modify when anything below it changed: a
    second visit after its subtree (``None`` as the old side marks it) checks that.
    """
    stack: list[tuple[_Node, _Node | None, int]] = [(new, old, -1)]
    while stack:
        node, old_node, size_at_entry = stack.pop()
        if size_at_entry >= 0:  # after the subtree
            if len(out) > size_at_entry and node.is_dir() and not node.added and node.parent is not None:
                out.append(Change(os.fsdecode(node.path()), ChangeKind.MODIFY))
            continue
        stack.append((node, None, len(out)))
        if old_node is None:
            out.append(Change(os.fsdecode(node.path()), ChangeKind.ADD))
            node.added = True
        old_children = dict(old_node.children) if old_node is not None and node.is_dir() else {}
        for name, child in node.children.items():
            old_child = old_children.pop(name, None)
            if old_child is not None:
                assert old_child.st is not None and child.st is not None
                if (_stat_different(old_child.st, child.st, old_maps, new_maps)
                        or (old_child.capability or b"") != (child.capability or b"")
                        or old_child.target != child.target
                        or (old_child.xattrs or None) != (child.xattrs or None)):
                    out.append(Change(os.fsdecode(child.path()), ChangeKind.MODIFY))
                    child.added = True
            stack.append((child, old_child, -1))
        for old_child in old_children.values():
            out.append(Change(os.fsdecode(old_child.path()), ChangeKind.DELETE))


def _sort_key(change: Change) -> bytes:
    return os.fsencode(change.path)


def changes_dirs(
    new: str,
    old: str | None,
    *,
    new_uid_map: Sequence[IDMap] | None = None,
    new_gid_map: Sequence[IDMap] | None = None,
    old_uid_map: Sequence[IDMap] | None = None,
    old_gid_map: Sequence[IDMap] | None = None,
) -> list[Change]:
    """Compare two layer trees as Go's ``ChangesDirs``; ``old=None`` compares with an empty tree.

    Owners are compared after mapping each side's host IDs back into the container (the maps
    are the layers' host mappings).  Go returns the list in map order, which is random; ours is
    sorted by path (byte order), the order ``export_changes`` writes in anyway.
    """
    new_b = os.fsencode(new)
    st_new = os.lstat(new_b)
    if old is None:
        old_b = b""
        st_old = None
    else:
        old_b = os.fsencode(old)
        st_old = os.lstat(old_b)
    old_root = _Node(b"/", None, None)
    new_root = _Node(b"/", None, None)
    if st_old is None:
        # Go compares against a fresh empty directory: every name is an Add.
        _walk(b"", new_b, None, new_root, None, st_new)
    else:
        _walk(old_b, new_b, old_root, new_root, st_old, st_new)
    out: list[Change] = []
    _add_changes(new_root, old_root, out, _Maps(old_uid_map, old_gid_map), _Maps(new_uid_map, new_gid_map))
    out.sort(key=_sort_key)
    return out


# --- overlay: an upper directory and its lowers --------------------------------------------------


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _stat_in(root_fd: int, rel: bytes) -> os.stat_result | None:
    """stat() of ``rel`` inside a lower layer, following symlinks without leaving that layer.

    Go stats ``lower + path`` on the host; resolving in the layer instead is what the container
    sees and cannot wander out of the store.
    """
    try:
        fd = open_beneath(root_fd, rel, os.O_PATH)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _parents(path: bytes) -> Iterable[bytes]:
    """``/a/b/c`` -> ``/a/b``, ``/a`` (Go's loop up to, not including, the root)."""
    cut = path.rfind(b"/")
    while cut > 0:
        path = path[:cut]
        yield path
        cut = path.rfind(b"/")


def _lower_has_whiteout(lower_fd: int, path: bytes) -> bool:
    st = _stat_in(lower_fd, path)
    return st is not None and _is_whiteout(st)


def opaque_hides_lower(lower_fds: Sequence[int], path: bytes, *, need_dir: bool = False) -> bool:
    """Whether an opaque directory at ``path`` hides something in the lowers (Go's rule).

    The first lower that has the path decides (unless there it is a whiteout); a lower in which
    a parent directory of ``path`` is whited out hides nothing.  ``need_dir`` is the export-side
    variant: Go stats ``name/`` there, so only a directory counts as being there.
    """
    for lower in lower_fds:
        st = _stat_in(lower, path)
        if st is not None:
            if _is_whiteout(st):
                return False
            if not need_dir or stat.S_ISDIR(st.st_mode):
                return True
        for parent in _parents(path):
            pst = _stat_in(lower, parent)
            if pst is not None and _is_whiteout(pst):
                return False
    return False


def _is_opaque(path: bytes, name: str) -> bool:
    try:
        return os.getxattr(path, name, follow_symlinks=False) == b"y"
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise


def _same_dir(a: os.stat_result, b: os.stat_result) -> bool:
    """Go's test for an unchanged directory: same size, same mode, same mtime (sameFsTime)."""
    return a.st_size == b.st_size and a.st_mode == b.st_mode and _same_mtime(a, b)


def changes_overlay(diff: str, lowers: Sequence[str]) -> list[Change]:
    """Changes of an overlay layer from its ``diff`` directory alone, as Go's ``OverlayChanges``.

    ``lowers`` are the lower layers' diff directories, nearest first.  The list comes out in
    Go's order (a lexical walk of ``diff``, with parent directories Modify before a child's Add or
    Delete), which unlike the naive form is deterministic in Go too.
    """
    lower_fds = [open_root(lower) for lower in lowers]
    try:
        return _overlay_walk(os.fsencode(diff), lower_fds)
    finally:
        for fd in lower_fds:
            os.close(fd)


def _overlay_walk(diff: bytes, lower_fds: list[int]) -> list[Change]:
    out: list[Change] = []
    changed_dirs: set[bytes] = set()
    opaque = opaque_xattr()

    def visit(rel: bytes, st: os.stat_result) -> None:
        full = diff + rel
        kind = ChangeKind.ADD
        if _is_whiteout(st) or (stat.S_ISDIR(st.st_mode) and lower_fds and _is_opaque(full, opaque)
                                and opaque_hides_lower(lower_fds, rel)):
            kind = ChangeKind.DELETE
        else:
            for lower in lower_fds:
                if _lower_has_whiteout(lower, rel) or any(
                        _lower_has_whiteout(lower, p) for p in _parents(rel)):
                    break
                lst = _stat_in(lower, rel)
                if lst is not None:
                    if stat.S_ISDIR(lst.st_mode) and stat.S_ISDIR(st.st_mode) and _same_dir(st, lst):
                        return  # unchanged directory: not reported, its children still are
                    kind = ChangeKind.MODIFY
                    break
        if stat.S_ISDIR(st.st_mode):
            changed_dirs.add(rel)
        if kind != ChangeKind.MODIFY:
            tail: list[Change] = []
            for parent in _parents(rel):
                if parent not in changed_dirs:
                    tail.append(Change(os.fsdecode(parent), ChangeKind.MODIFY))
                    changed_dirs.add(parent)
            out.extend(reversed(tail))
        out.append(Change(os.fsdecode(rel), kind))

    for rel, st in lexical_walk(diff):
        visit(rel, st)
    return out


def lexical_walk(top: bytes, on_error: Callable[[OSError], None] | None = None,
                 ) -> Iterator[tuple[bytes, os.stat_result]]:
    """``(/rel/path, lstat)`` for everything under ``top``, depth first, names in byte order:
    the order of Go's ``filepath.Walk``; a stack of iterators instead of recursion.

    With ``on_error``, a directory that cannot be listed is reported there and skipped.
    """
    def listing(rel: bytes) -> Iterator[tuple[bytes, os.stat_result]]:
        try:
            with os.scandir(top + rel) as it:
                entries = sorted((e.name, e) for e in it)
        except OSError as e:
            if on_error is None:
                raise
            on_error(e)
            entries = []
        return ((rel + b"/" + name, e.stat(follow_symlinks=False)) for name, e in entries)

    stack = [listing(b"")]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        yield item
        if stat.S_ISDIR(item[1].st_mode):
            stack.append(listing(item[0]))


# --- size ---------------------------------------------------------------------------------------


def changes_size(root: str, changes: Iterable[Change]) -> int:
    """Bytes the Add/Modify changes occupy under ``root``, hard links counted once (Go's ChangesSize).

    Directories count nothing; a path that cannot be stat'ed is skipped, as Go logs and skips it.
    """
    size = 0
    seen: set[int] = set()
    root_b = os.fsencode(root)
    for change in changes:
        if change.kind == ChangeKind.DELETE:
            continue
        try:
            st = os.lstat(root_b + os.fsencode(change.path))
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if st.st_nlink > 1:
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
        size += st.st_size
    return size
