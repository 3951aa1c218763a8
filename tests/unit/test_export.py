"""Exporting diffs: changes with whiteouts, whole trees, overlay diffs, headers as Go fills them."""

from __future__ import annotations

import io
import os
import socket
import tarfile
from pathlib import Path

import pytest

from containers_storage.archive import export as export_mod
from containers_storage.archive.changes import OPAQUE_XATTR, Change, ChangeKind, changes_dirs
from containers_storage.archive.export import ExportError, export_changes, export_overlay_diff, export_tree
from containers_storage.idtools import IDMap

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.* xattrs)")
A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE
T0 = 1_600_000_000


def mk(base: Path, rel: str, content: bytes = b"x", mode: int = 0o644) -> Path:
    p = base / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)
    os.chmod(p, mode)
    os.utime(p, ns=(T0 * 10**9, T0 * 10**9 + 900_000_000))
    return p


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def content(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def run_changes(root: Path, changes: list[Change], **kw: object) -> bytes:
    out = io.BytesIO()
    n = export_changes(str(root), changes, out, **kw)  # type: ignore[arg-type]
    assert n == len(out.getvalue())
    return out.getvalue()


def test_changes_are_written_sorted_with_whiteouts(tmp_path: Path) -> None:
    mk(tmp_path, "etc/hosts", b"hosts")
    mk(tmp_path, "a.b")
    data = run_changes(tmp_path, [Change("/etc/hosts", M), Change("/etc/gone", D), Change("/etc", M),
                                  Change("/a.b", A), Change("/olddir", D)])
    ms = members(data)
    assert [m.name for m in ms] == ["a.b", "etc", "etc/.wh.gone", "etc/hosts", ".wh.olddir"]
    wh = ms[2]
    assert (wh.type, wh.size, wh.mode, wh.uid, wh.gid, wh.uname) == (tarfile.REGTYPE, 0, 0, 0, 0, "")
    assert content(data, "etc/hosts") == b"hosts"
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0


def test_header_fields_are_filled_as_go_does(tmp_path: Path) -> None:
    mk(tmp_path, "suid", b"#!", mode=0o4755)
    os.mkdir(tmp_path / "sticky")
    os.chmod(tmp_path / "sticky", 0o1777)
    (tmp_path / "link").symlink_to("suid")
    os.mkfifo(tmp_path / "fifo")
    ms = {m.name: m for m in members(run_changes(tmp_path, [
        Change("/suid", A), Change("/sticky", A), Change("/link", A), Change("/fifo", A)]))}
    assert ms["suid"].mode == 0o4755 and ms["suid"].type == tarfile.REGTYPE
    assert ms["suid"].mtime == T0  # truncated, not rounded (the file has .9 s)
    assert ms["sticky"].mode == 0o1777 and ms["sticky"].type == tarfile.DIRTYPE
    assert ms["link"].type == tarfile.SYMTYPE and ms["link"].linkname == "suid"
    assert ms["fifo"].type == tarfile.FIFOTYPE
    assert all(m.uname == "" and m.gname == "" for m in ms.values())


def test_directory_entries_end_in_a_slash_and_modes_carry_no_type_bits(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    data = run_changes(tmp_path, [Change("/d", A)])
    assert data[:2] == b"d/" and data[2] == 0
    assert data[100:108] == b"0000755\x00"


def test_hardlinks_point_at_the_first_name(tmp_path: Path) -> None:
    mk(tmp_path, "b/first", b"same inode")
    os.link(tmp_path / "b/first", tmp_path / "a-second")
    ms = members(run_changes(tmp_path, [Change("/b/first", A), Change("/a-second", A)]))
    # Sorted: "a-second" comes first and so carries the content.
    assert [(m.name, m.type, m.linkname, m.size) for m in ms] == [
        ("a-second", tarfile.REGTYPE, "", 10), ("b/first", tarfile.LNKTYPE, "a-second", 0)]


def test_user_and_security_xattrs_become_pax_records(tmp_path: Path) -> None:
    f = mk(tmp_path, "f")
    os.setxattr(f, "user.mime", b"text/plain")
    os.setxattr(f, "user.overlay.origin", b"skip me")
    if os.geteuid() == 0:
        os.setxattr(f, "trusted.private", b"skip me too")
    (m,) = members(run_changes(tmp_path, [Change("/f", A)]))
    assert m.pax_headers == {"SCHILY.xattr.user.mime": "text/plain"}


def test_sockets_and_unreadable_paths_are_left_out(tmp_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "sock"))
    s.close()
    mk(tmp_path, "ok")
    ms = members(run_changes(tmp_path, [Change("/sock", A), Change("/vanished", A), Change("/ok", A)]))
    assert [m.name for m in ms] == ["ok"]


@root_only
def test_owners_are_mapped_back_to_container_ids(tmp_path: Path) -> None:
    mk(tmp_path, "mine")
    os.chown(tmp_path / "mine", 100000 + 33, 100000 + 44)
    mk(tmp_path, "stranger")
    os.chown(tmp_path / "stranger", 5, 5)  # not in the mapping: Go skips the file
    maps = [IDMap(0, 100000, 65536)]
    changes = [Change("/mine", A), Change("/stranger", A)]
    ms = members(run_changes(tmp_path, changes, uid_map=maps, gid_map=maps))
    assert [(m.name, m.uid, m.gid) for m in ms] == [("mine", 33, 44)]


def test_big_files_go_out_whole_to_real_files_and_memory(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    blob = os.urandom(1_500_000)
    mk(layer, "big", blob)
    mk(layer, "small", b"s")
    changes = [Change("/big", A), Change("/small", A)]
    with open(tmp_path / "out.tar", "wb") as f:
        n = export_changes(str(layer), changes, f)
    on_disk = (tmp_path / "out.tar").read_bytes()
    assert n == len(on_disk)
    assert on_disk == run_changes(layer, changes)
    assert content(on_disk, "big") == blob


def test_file_shrinking_during_export_fails_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mk(tmp_path, "f", b"0123456789")
    real_prepare = export_mod._Writer.prepare

    def prepare_then_truncate(self: export_mod._Writer, path: bytes, name: bytes) -> object:
        result = real_prepare(self, path, name)
        os.truncate(path, 3)
        return result

    monkeypatch.setattr(export_mod._Writer, "prepare", prepare_then_truncate)
    with pytest.raises(ExportError, match="f"):
        run_changes(tmp_path, [Change("/f", A)])


def test_export_tree_walks_depth_first_in_lexical_order(tmp_path: Path) -> None:
    for rel in ("a/b", "a-b", "a.b", "z/y/x"):
        mk(tmp_path, rel)
    out = io.BytesIO()
    export_tree(str(tmp_path), out)
    assert [m.name for m in members(out.getvalue())] == ["a", "a/b", "a-b", "a.b", "z", "z/y", "z/y/x"]
    assert out.getvalue()[:2] == b"a/"


def test_changes_then_export_round_trip(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    mk(old, "keep")
    mk(old, "del")
    mk(new, "keep")
    mk(new, "add", b"added")
    for d in (old, new):
        os.utime(d, (T0, T0))
    data = run_changes(new, changes_dirs(str(new), str(old)))
    assert [m.name for m in members(data)] == ["add", ".wh.del"]


# --- overlay ------------------------------------------------------------------------------------


def whiteout(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(p, 0o20000, 0)


@root_only
def test_overlay_diff_converts_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    mk(lower, "opq/old")
    mk(lower, "gone")
    diff = tmp_path / "diff"
    whiteout(diff / "gone")
    mk(diff, "opq/new")
    os.chmod(diff / "opq", 0o2750)
    os.setxattr(diff / "opq", OPAQUE_XATTR, b"y")
    mk(diff, "fresh/f")
    os.setxattr(diff / "fresh", OPAQUE_XATTR, b"y")  # nothing below it: no opaque marker
    os.mknod(diff / "null", 0o20666, os.makedev(1, 3))  # a real device stays a device
    out = io.BytesIO()
    export_overlay_diff(str(diff), [str(lower)], out)
    ms = members(out.getvalue())
    assert [(m.name, m.type) for m in ms] == [
        ("fresh", tarfile.DIRTYPE), ("fresh/f", tarfile.REGTYPE), (".wh.gone", tarfile.REGTYPE),
        ("null", tarfile.CHRTYPE), ("opq", tarfile.DIRTYPE), ("opq/.wh..wh..opq", tarfile.REGTYPE),
        ("opq/new", tarfile.REGTYPE)]
    by_name = {m.name: m for m in ms}
    assert by_name[".wh.gone"].mode == 0 and by_name[".wh.gone"].size == 0
    opq = by_name["opq/.wh..wh..opq"]
    assert (opq.mode, opq.mtime, opq.size) == (0o750, 0, 0)  # permission bits only, zero time
    assert (by_name["null"].devmajor, by_name["null"].devminor) == (1, 3)
    assert all("trusted.overlay" not in k for m in ms for k in m.pax_headers)


@root_only
def test_overlay_opaque_over_a_whited_out_lower_adds_no_marker(tmp_path: Path) -> None:
    lower1, lower2 = tmp_path / "l1", tmp_path / "l2"
    mk(lower2, "d/x")
    whiteout(lower1 / "d")
    diff = tmp_path / "diff"
    mk(diff, "d/y")
    os.setxattr(diff / "d", OPAQUE_XATTR, b"y")
    out = io.BytesIO()
    export_overlay_diff(str(diff), [str(lower1), str(lower2)], out)
    assert [m.name for m in members(out.getvalue())] == ["d", "d/y"]


@root_only
def test_overlay_hardlinked_whiteouts_keep_gos_linkname(tmp_path: Path) -> None:
    diff = tmp_path / "diff"
    whiteout(diff / "a")
    os.link(diff / "a", diff / "b")  # the kernel shares one whiteout inode the same way
    out = io.BytesIO()
    export_overlay_diff(str(diff), [], out)
    ms = members(out.getvalue())
    assert [(m.name, m.type, m.linkname) for m in ms] == [
        (".wh.a", tarfile.REGTYPE, ""), (".wh.b", tarfile.REGTYPE, ".wh.a")]


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


def test_export_tree_deeper_than_the_python_stack(tmp_path: Path) -> None:
    fds = deep_tree(tmp_path, 1200)
    try:
        out = io.BytesIO()
        export_tree(str(tmp_path), out)
        ms = members(out.getvalue())
        assert len(ms) == 1201 and ms[-1].name == "d/" * 1200 + "f"
    finally:
        remove_deep_tree(fds)


def test_read_ahead_leaks_no_fds_even_when_the_export_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(100):
        mk(tmp_path, f"f{i:03d}", b"%d" % i)
    before = len(os.listdir("/proc/self/fd"))
    out = io.BytesIO()
    export_tree(str(tmp_path), out)
    assert [m.name for m in members(out.getvalue())] == [f"f{i:03d}" for i in range(100)]
    assert len(os.listdir("/proc/self/fd")) == before

    real_prepare = export_mod._Writer.prepare

    def prepare_then_truncate(self: export_mod._Writer, path: bytes, name: bytes) -> object:
        result = real_prepare(self, path, name)
        if path.endswith(b"f050"):
            os.truncate(path, 0)
        return result

    monkeypatch.setattr(export_mod._Writer, "prepare", prepare_then_truncate)
    with pytest.raises(ExportError, match="f050"):
        export_changes(str(tmp_path), [Change(f"/f{i:03d}", A) for i in range(100)], io.BytesIO())
    assert len(os.listdir("/proc/self/fd")) == before
