"""Changes between layers: the naive two-tree comparison, the overlay form, sizes, Go's text."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from containers_storage.archive.changes import (
    OPAQUE_XATTR,
    Change,
    ChangeKind,
    changes_dirs,
    changes_overlay,
    changes_size,
    go_quote,
)
from containers_storage.idtools import IDMap

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.* xattrs)")

A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE
T0 = 1_600_000_000


def mk(base: Path, rel: str, content: bytes | None = b"x", mtime: int | None = T0) -> Path:
    """A file (or, with None, a directory) with a fixed mtime so copies compare equal."""
    p = base / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        p.mkdir(exist_ok=True)
    else:
        p.write_bytes(content)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


def pairs(changes: list[Change]) -> list[tuple[str, ChangeKind]]:
    return [(c.path, c.kind) for c in changes]


def clone(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    for dirpath, _dirs, _files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        st = os.stat(dirpath)
        os.utime(os.path.join(dst, rel), ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    old = tmp_path / "old"
    for rel in ("etc/hosts", "etc/passwd", "usr/bin/sh", "usr/lib/libc.so", "var/log/x"):
        mk(old, rel)
    for d in ("etc", "usr/bin", "usr/lib", "usr", "var/log", "var"):
        os.utime(old / d, (T0, T0))
    new = tmp_path / "new"
    clone(old, new)
    return new, old


def test_identical_trees_have_no_changes(trees: tuple[Path, Path]) -> None:
    new, old = trees
    assert changes_dirs(str(new), str(old)) == []


def test_add_modify_delete_with_parent_directories(trees: tuple[Path, Path]) -> None:
    new, old = trees
    mk(new, "etc/hosts", b"changed", mtime=T0 + 5)
    os.remove(new / "usr/bin/sh")
    os.utime(new / "usr/bin", (T0, T0))
    mk(new, "opt/app/run")
    shutil.rmtree(new / "var/log")
    os.utime(new / "var", (T0, T0))
    assert pairs(changes_dirs(str(new), str(old))) == [
        ("/etc", M), ("/etc/hosts", M), ("/opt", A), ("/opt/app", A), ("/opt/app/run", A),
        ("/usr", M), ("/usr/bin", M), ("/usr/bin/sh", D), ("/var", M), ("/var/log", D)]


def test_no_old_tree_means_everything_is_added(trees: tuple[Path, Path]) -> None:
    new, _old = trees
    result = changes_dirs(str(new), None)
    assert all(c.kind == A for c in result)
    assert [c.path for c in result] == sorted(
        "/" + os.path.relpath(os.path.join(d, n), new) for d, ds, fs in os.walk(new) for n in ds + fs)


def test_output_is_sorted_by_bytes_not_tree_order(tmp_path: Path) -> None:
    new = tmp_path / "new"
    for rel in ("a/b", "a-b", "a.b"):
        mk(new, rel)
    assert [c.path for c in changes_dirs(str(new), None)] == ["/a", "/a-b", "/a.b", "/a/b"]


def test_mtime_nanoseconds_only_count_when_both_sides_have_them(trees: tuple[Path, Path]) -> None:
    new, old = trees
    os.utime(old / "etc/hosts", ns=(T0 * 10**9, T0 * 10**9 + 5))
    os.utime(new / "etc/hosts", ns=(T0 * 10**9, T0 * 10**9))  # whole second on one side: same
    os.utime(old / "etc/passwd", ns=(T0 * 10**9, T0 * 10**9 + 5))
    os.utime(new / "etc/passwd", ns=(T0 * 10**9, T0 * 10**9 + 6))  # both precise, different
    assert pairs(changes_dirs(str(new), str(old))) == [("/etc", M), ("/etc/passwd", M)]


def test_directory_metadata_changes_are_modifications(trees: tuple[Path, Path]) -> None:
    new, old = trees
    os.chmod(new / "usr/lib", 0o700)
    os.utime(new / "var", (T0 + 1, T0 + 1))  # mtime of a directory counts (current Go)
    assert pairs(changes_dirs(str(new), str(old))) == [("/usr", M), ("/usr/lib", M), ("/var", M)]


def test_symlink_target_and_user_xattrs_count(tmp_path: Path) -> None:
    old = tmp_path / "old"
    mk(old, "f")
    (old / "l").symlink_to("aaaa")
    os.utime(old / "l", (T0, T0), follow_symlinks=False)
    os.utime(old, (T0, T0))
    new = tmp_path / "new"
    clone(old, new)
    (new / "l").unlink()
    (new / "l").symlink_to("bbbb")  # same length, same mtime: only the target differs
    os.utime(new / "l", (T0, T0), follow_symlinks=False)
    os.setxattr(new / "f", "user.k", b"v")
    os.utime(new, (T0, T0))
    assert pairs(changes_dirs(str(new), str(old))) == [("/f", M), ("/l", M)]


def test_type_change_file_to_dir_and_back(trees: tuple[Path, Path]) -> None:
    new, old = trees
    os.remove(new / "etc/hosts")
    mk(new, "etc/hosts/inner")
    shutil.rmtree(new / "var/log")
    mk(new, "var/log", b"now a file")
    os.utime(new / "etc", (T0, T0))
    os.utime(new / "var", (T0, T0))
    # The old directory's children are not listed as deleted, as in Go.
    assert pairs(changes_dirs(str(new), str(old))) == [
        ("/etc", M), ("/etc/hosts", M), ("/etc/hosts/inner", A), ("/var", M), ("/var/log", M)]


def test_same_inode_on_both_sides_is_skipped(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    mk(old, "shared", b"one")
    new.mkdir()
    os.link(old / "shared", new / "shared")
    os.utime(old, (T0, T0))
    os.utime(new, (T0, T0))
    assert changes_dirs(str(new), str(old)) == []


@root_only
def test_owners_compare_in_container_ids(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    mk(old, "f")
    os.utime(old, (T0, T0))
    clone(old, new)
    os.chown(new / "f", 100000, 100000)
    maps = [IDMap(0, 100000, 65536)]
    assert changes_dirs(str(new), str(old), new_uid_map=maps, new_gid_map=maps) == []
    assert pairs(changes_dirs(str(new), str(old))) == [("/f", M)]


@root_only
def test_capability_and_device_numbers_count(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    mk(old, "bin")
    os.mknod(old / "dev", 0o20600, os.makedev(1, 3))
    os.utime(old / "dev", (T0, T0))
    os.utime(old, (T0, T0))
    clone(old, new)
    os.setxattr(new / "bin", "security.capability", bytes.fromhex("0000000200040000000000000000000000000000"))
    os.remove(new / "dev")
    os.mknod(new / "dev", 0o20600, os.makedev(1, 5))
    os.utime(new / "dev", (T0, T0))
    os.utime(new, (T0, T0))
    assert pairs(changes_dirs(str(new), str(old))) == [("/bin", M), ("/dev", M)]


def test_go_cli_text() -> None:
    assert str(Change("/a b", A)) == 'Add "/a b"'
    assert str(Change("/x", M)) == 'Modify "/x"'
    assert str(Change("/x", D)) == 'Delete "/x"'
    assert Change("/x", D).to_json() == {"Path": "/x", "Kind": 2}


@pytest.mark.parametrize(("raw", "quoted"), [
    (b'a"b\\c', '"a\\"b\\\\c"'), (b"tab\there\n", '"tab\\there\\n"'), (b"\x01\x7f", '"\\x01\\x7f"'),
    (b"bad\xff", '"bad\\xff"'), ("héllo ☃".encode(), '"héllo ☃"'), ("nb\u00a0sp".encode(), '"nb\\u00a0sp"'),
    ("\U000e0001".encode(), '"\\U000e0001"'), (b"\xed\xa0\x80", '"\\xed\\xa0\\x80"'),
])
def test_go_quote(raw: bytes, quoted: str) -> None:
    assert go_quote(raw) == quoted


def test_changes_size_counts_hardlinks_once_and_skips_dirs(tmp_path: Path) -> None:
    mk(tmp_path, "a", b"12345")
    mk(tmp_path, "dir/b", b"123")
    os.link(tmp_path / "a", tmp_path / "dir/a2")
    changes = [Change("/a", A), Change("/dir", A), Change("/dir/b", M), Change("/dir/a2", A),
               Change("/gone", D), Change("/missing", A)]
    assert changes_size(str(tmp_path), changes) == 8


# --- overlay ------------------------------------------------------------------------------------


def whiteout(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(p, 0o20000, 0)


@root_only
def test_overlay_whiteouts_opaque_dirs_and_lower_lookups(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    for rel in ("keep", "gone", "dir/a", "opq/x", "same/f"):
        mk(lower, rel)
    diff = tmp_path / "diff"
    whiteout(diff / "gone")
    whiteout(diff / "dir/a")
    mk(diff, "dir/new")
    mk(diff, "opq/y")
    os.setxattr(diff / "opq", OPAQUE_XATTR, b"y")
    mk(diff, "fresh/opaque-but-nothing-below/z")
    os.setxattr(diff / "fresh/opaque-but-nothing-below", OPAQUE_XATTR, b"y")
    mk(diff, "keep", b"modified")
    # A directory identical to the lower one is not reported itself; a new child brings it back
    # as the Modify of a parent, as in Go.
    (diff / "same").mkdir()
    mk(diff, "same/g")
    st = os.stat(lower / "same")
    os.utime(diff / "same", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(diff / "same", st.st_mode & 0o7777)
    assert pairs(changes_overlay(str(diff), [str(lower)])) == [
        ("/dir", M), ("/dir/a", D), ("/dir/new", A),
        ("/fresh", A), ("/fresh/opaque-but-nothing-below", A), ("/fresh/opaque-but-nothing-below/z", A),
        ("/gone", D), ("/keep", M),
        ("/opq", D), ("/opq/y", A),
        ("/same", M), ("/same/g", A),
    ]


@root_only
def test_overlay_walk_order_is_gos_lexical_walk(tmp_path: Path) -> None:
    diff = tmp_path / "diff"
    for rel in ("a/c", "a-b", "a.b"):
        mk(diff, rel)
    assert [c.path for c in changes_overlay(str(diff), [])] == ["/a", "/a/c", "/a-b", "/a.b"]


@root_only
def test_overlay_path_whited_out_in_a_lower_is_an_add(tmp_path: Path) -> None:
    lower1, lower2 = tmp_path / "l1", tmp_path / "l2"
    mk(lower2, "etc/conf")
    whiteout(lower1 / "etc")  # the nearer lower deleted /etc
    diff = tmp_path / "diff"
    mk(diff, "etc/conf")
    assert pairs(changes_overlay(str(diff), [str(lower1), str(lower2)])) == [("/etc", A), ("/etc/conf", A)]


def deep_tree(base: Path, depth: int) -> list[int]:
    """``base/d/d/.../d/f`` made with dir fds (pathlib and os.makedirs recurse); returns the fds."""
    fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY)]
    for _ in range(depth):
        os.mkdir("d", dir_fd=fds[-1])
        fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fds[-1]))
    return fds


def remove_deep_tree(fds: list[int]) -> None:
    """Undo ``deep_tree`` bottom-up (shutil.rmtree would recurse past Python's limit)."""
    os.unlink("f", dir_fd=fds[-1])
    for parent, child in zip(reversed(fds[:-1]), reversed(fds[1:]), strict=True):
        os.close(child)
        os.rmdir("d", dir_fd=parent)
    os.close(fds[0])


def test_deeper_than_the_python_stack(tmp_path: Path) -> None:
    """A layer may nest deeper than Python's recursion limit; the walks use explicit stacks."""
    new = tmp_path / "new"
    new.mkdir()
    fds = deep_tree(new, 1200)
    try:
        result = changes_dirs(str(new), None)
        assert len(result) == 1201 and result[-1].path.endswith("/d/f")
        assert len(changes_overlay(str(new), [])) == 1201
    finally:
        remove_deep_tree(fds)
