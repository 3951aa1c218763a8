"""tar-split, changes and exported diffs against Debian's Go containers-storage CLI (v1.43).

- A layer imported by the Go CLI is rebuilt by our ``reassemble()`` byte for byte, and our writer
  re-encodes Go's tar-split JSON byte for byte.
- The Go CLI's ``diff`` rebuilds the original tarball from a tar-split we wrote.
- ``changes_dirs``/``changes_overlay`` list what the Go CLI's ``changes`` lists, and our exported
  diffs are Go's bytes, once the differences between v1.43 and the current Go code we follow are
  normalised away (v1.43 put file-type bits in the mode and user/group names in headers, and
  named a hard-linked whiteout's link target before converting it); whiteout mtimes are the
  export time on both sides and are ignored.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import socket
import struct
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from containers_storage.archive.changes import changes_dirs, changes_overlay
from containers_storage.archive.crc64 import Crc64
from containers_storage.archive.export import export_changes, export_overlay_diff, export_tree
from containers_storage.archive.tarsplit import FILE_TYPE, TarSplitWriter, iter_entries, reassemble
from gocli import GO_CLI, go_cli

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the Go CLI's store needs root (chown, mknod)"),
]


class GoStore:
    def __init__(self, tmp_path: Path, driver: str) -> None:
        self.root = str(tmp_path / "root")
        self.run = str(tmp_path / "run")
        self.driver = driver

    def __call__(self, *args: str) -> bytes:
        return go_cli(self.root, self.run, *args, driver=self.driver).stdout

    def first(self, *args: str) -> str:
        return self(*args).decode().split()[0]

    def tar_split(self, layer: str) -> Path:
        return Path(self.root) / f"{self.driver}-layers" / f"{layer}.tar-split.gz"

    def vfs_dir(self, layer: str) -> str:
        return os.path.join(self.root, "vfs", "dir", layer)

    def overlay_diff(self, layer: str) -> str:
        return os.path.join(self.root, "overlay", layer, "diff")

    def diff(self, layer: str, tmp: Path) -> bytes:
        out = tmp / f"go-diff-{layer[:12]}.tar"
        self("diff", "-u", "-f", str(out), layer)
        return out.read_bytes()


@pytest.fixture
def vfs(tmp_path: Path) -> GoStore:
    return GoStore(tmp_path, "vfs")


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[GoStore]:
    store = GoStore(tmp_path, "overlay")
    yield store
    go_cli(store.root, store.run, "shutdown", driver="overlay", check=False)


# --- tarballs -----------------------------------------------------------------------------------


def build_tar(fmt: int) -> bytes:
    """A layer tarball with the awkward cases: long and non-UTF-8 names, links, devices, xattrs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mtime, ti.mode = kind, 1_700_000_000, 0o755 if kind == tarfile.DIRTYPE else 0o644
            for k, v in kw.items():
                setattr(ti, k, v)
            if kind == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)

        add("./", tarfile.DIRTYPE)
        add("./etc/", tarfile.DIRTYPE)
        add("./etc/hosts", data=b"127.0.0.1 localhost\n")
        add("./empty")
        add("./big", data=os.urandom(600_000))
        add("./" + "deep/" * 25 + "file", data=b"deep")
        add("./" + "n" * 120 + "/" + "m" * 120, data=b"no ustar split")
        add("./héllo wörld", data=b"utf-8")
        add(os.fsdecode(b"./bad\xffname"), data=b"not utf-8")
        add("./x<y&z>", data=b"html escaped in JSON")
        add("./hardlink", tarfile.LNKTYPE, linkname="./etc/hosts")
        add("./symlink", tarfile.SYMTYPE, linkname="t" * 150)
        add("./fifo", tarfile.FIFOTYPE)
        add("./null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("./owned", data=b"o", uid=1000, gid=1000, uname="someone", gname="group")
        if fmt == tarfile.PAX_FORMAT:
            add("./xattr", data=b"x", pax_headers={"SCHILY.xattr.user.k": "v"})
    return buf.getvalue()


def split_tar(data: bytes, out: io.BytesIO) -> None:
    """Our own recording of a tarball (segmented differently from Go's disassembler)."""
    w = TarSplitWriter(out)
    pos = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            w.add_segment(data[pos:m.offset_data])
            body = data[m.offset_data:m.offset_data + m.size] if m.isreg() else b""
            w.add_file(os.fsencode(m.name), len(body), Crc64(body).digest() if body else None)
            pos = m.offset_data + len(body)
    w.add_segment(data[pos:])
    w.close()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_go_imported_layer_reassembles_byte_identically(vfs: GoStore, tmp_path: Path, fmt: int) -> None:
    data = build_tar(fmt)
    (tmp_path / "in.tar").write_bytes(data)
    layer = vfs.first("import-layer", "-f", str(tmp_path / "in.tar"))
    assert vfs.diff(layer, tmp_path) == data  # Go itself, as a sanity check
    out_path = tmp_path / "ours.tar"
    with open(vfs.tar_split(layer), "rb") as ts, open(out_path, "wb") as out:
        assert reassemble(ts, vfs.vfs_dir(layer), out) == len(data)
    assert out_path.read_bytes() == data
    with open(vfs.tar_split(layer), "rb") as ts:
        mem = io.BytesIO()
        reassemble(ts, vfs.vfs_dir(layer), mem, verify_crc=False, readahead=1)
    assert mem.getvalue() == data


def test_our_writer_reencodes_gos_tar_split_json_exactly(vfs: GoStore, tmp_path: Path) -> None:
    data = build_tar(tarfile.PAX_FORMAT)
    (tmp_path / "in.tar").write_bytes(data)
    layer = vfs.first("import-layer", "-f", str(tmp_path / "in.tar"))
    go_json = gzip.decompress(vfs.tar_split(layer).read_bytes())
    ours = io.BytesIO()
    with open(vfs.tar_split(layer), "rb") as ts, TarSplitWriter(ours) as w:
        for e in iter_entries(ts):
            if e.type == FILE_TYPE:
                w.add_file(e.name, e.size, e.payload)
            else:
                w.add_segment(e.payload or b"")
    assert b"name_raw" in go_json and b"\\u003c" in go_json  # the cases worth checking are there
    assert gzip.decompress(ours.getvalue()) == go_json


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_go_diff_rebuilds_the_tarball_from_our_tar_split(vfs: GoStore, tmp_path: Path, fmt: int) -> None:
    data = build_tar(fmt)
    (tmp_path / "in.tar").write_bytes(data)
    layer = vfs.first("import-layer", "-f", str(tmp_path / "in.tar"))
    ours = io.BytesIO()
    split_tar(data, ours)
    vfs.tar_split(layer).write_bytes(ours.getvalue())
    assert vfs.diff(layer, tmp_path) == data


# --- changes and exported diffs -----------------------------------------------------------------

CAP = struct.pack("<IIIII", 0x02000000, 0x400, 0, 0, 0)


def _w(p: str | bytes, data: bytes = b"x", mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, mode)


def populate_base(m: str) -> None:
    _w(m + "/file1", b"hello\n")
    _w(m + "/empty", b"")
    _w(m + "/suid", b"#!/bin/sh\n", 0o4755)
    os.mkdir(m + "/sticky")
    os.chmod(m + "/sticky", 0o1777)
    _w(m + "/owned", b"o" * 1000)
    os.chown(m + "/owned", 1000, 1001)
    _w(m + "/bigid", b"b")
    os.chown(m + "/bigid", 3000000, 3000001)
    _w(m + "/nsec", b"n")
    os.utime(m + "/nsec", ns=(1700000000_123456789, 1700000000_987654321))
    _w(m + "/future", b"f")
    os.utime(m + "/future", (9000000000, 9000000000))
    _w(m + "/past", b"p")
    os.utime(m + "/past", (-100, -100))
    _w(m + "/" + "/".join(f"d{i:02d}-{'x' * 10}" for i in range(9)) + "/in-long-dir", b"L")
    _w(m + "/" + "n" * 200 + "/" + "m" * 150, b"very long")
    _w(m + "/héllo wörld", b"utf8")
    _w(os.fsencode(m) + b"/bad\xffname", b"latin1")
    os.symlink("t" * 150, m + "/longlink")
    os.symlink("file1", m + "/link1")
    _w(m + "/hard1", b"hardlinked")
    os.link(m + "/hard1", m + "/hard2")
    os.mkfifo(m + "/fifo")
    os.mknod(m + "/chr", 0o20644, os.makedev(1, 3))
    os.mknod(m + "/blk", 0o60600, os.makedev(8, 0))
    os.mknod(m + "/bigdev", 0o20600, os.makedev(300, 70000))
    _w(m + "/xattrs", b"x")
    os.setxattr(m + "/xattrs", "user.foo", b"bar")
    os.setxattr(m + "/xattrs", "user.empty", b"")
    os.setxattr(m + "/xattrs", "trusted.secret", b"t")
    _w(m + "/capfile", b"c")
    os.setxattr(m + "/capfile", "security.capability", CAP)
    _w(m + "/big", os.urandom(300000))
    _w(m + "/dir/a/b/c", b"deep")
    _w(m + "/dir/keep", b"k")
    _w(m + "/gone/sub/x", b"g")
    _w(m + "/gonefile", b"g")
    _w(m + "/tobedir", b"f")
    os.makedirs(m + "/tobefile/sub")
    _w(m + "/a.b", b"dot")
    _w(m + "/a/b", b"slash")
    _w(m + "/a-b", b"dash")


def populate_child(c: str) -> None:
    _w(c + "/file1", b"changed\n")
    os.chmod(c + "/owned", 0o600)
    os.chown(c + "/empty", 5, 6)
    os.utime(c + "/nsec", ns=(1700000000_123456789, 1700000000_000000000))  # same per Go's rule
    os.utime(c + "/past", (-50, -50))
    os.remove(c + "/gonefile")
    shutil.rmtree(c + "/gone")
    _w(c + "/new/dir/file", b"new")
    _w(c + "/dir/a/b/added", b"add")
    os.remove(c + "/tobedir")
    os.mkdir(c + "/tobedir")
    _w(c + "/tobedir/inside", b"i")
    shutil.rmtree(c + "/tobefile")
    _w(c + "/tobefile", b"now a file")
    os.remove(c + "/link1")
    os.symlink("empty", c + "/link1")
    os.setxattr(c + "/xattrs", "user.foo", b"baz")
    os.setxattr(c + "/file1", "user.new", b"1")
    os.setxattr(c + "/capfile", "security.capability", struct.pack("<IIIII", 0x02000000, 0x1000, 0, 0, 0))
    os.link(c + "/big", c + "/big-link")
    _w(c + "/newhard1", b"nh")
    os.link(c + "/newhard1", c + "/newhard2")
    os.mknod(c + "/chr2", 0o20644, os.makedev(1, 5))
    with contextlib.chdir(c), socket.socket(socket.AF_UNIX) as s:  # a short path for bind()
        s.bind("sock")
    _w(c + "/" + "q" * 250, b"long new name")
    _w(c + "/a.b", b"dot2")
    _w(c + "/a/b", b"slash2")


def make_layers(store: GoStore, base_fill: Callable[[str], None],
                child_fill: Callable[[str], None]) -> tuple[str, str]:
    base = store.first("create-layer")
    base_fill(store.first("mount", base))
    store("unmount", base)
    child = store.first("create-layer", base)
    child_fill(store.first("mount", child))
    store("unmount", child)
    return base, child


def _num(f: bytes) -> int:
    if f[0] & 0x80:
        return int.from_bytes(bytes([f[0] & 0x7F]) + f[1:], "big")
    f = f.rstrip(b"\0 ").lstrip(b" ")
    return int(f, 8) if f else 0


def normalize(data: bytes) -> bytes:
    """Undo the v1.43-only header differences (see the module docstring) and whiteout times."""
    out = bytearray(data)
    off = 0
    while off + 512 <= len(out):
        blk = out[off:off + 512]
        if not any(blk):
            break
        flag, size = bytes(blk[156:157]), _num(bytes(blk[124:136]))
        if flag not in (b"x", b"g", b"L", b"K"):
            blk[100:108] = b"%07o\0" % (_num(bytes(blk[100:108])) & 0o7777)
            blk[265:329] = bytes(64)
            if bytes(blk[0:100]).split(b"\0")[0].rsplit(b"/", 1)[-1].startswith(b".wh."):
                blk[136:148] = b"%011o\0" % 0
                blk[157:257] = bytes(100)
            blk[148:156] = b" " * 8
            blk[148:156] = b"%06o\0 " % sum(blk)
            out[off:off + 512] = blk
        body = 0 if flag in (b"1", b"2", b"3", b"4", b"5", b"6") else size
        off += 512 + (body + 511) // 512 * 512
    return bytes(out)


def go_changes(store: GoStore, layer: str) -> list[str]:
    return store("changes", layer).decode("utf-8", "surrogateescape").splitlines()


def test_changes_and_exported_diffs_match_go_on_vfs(vfs: GoStore, tmp_path: Path) -> None:
    base, child = make_layers(vfs, populate_base, populate_child)
    new, old = vfs.vfs_dir(child), vfs.vfs_dir(base)

    ours = changes_dirs(new, old)
    assert sorted(go_changes(vfs, child)) == sorted(str(c) for c in ours)
    assert sorted(go_changes(vfs, base)) == sorted(str(c) for c in changes_dirs(old, None))

    out = io.BytesIO()
    export_changes(new, ours, out)
    assert normalize(out.getvalue()) == normalize(vfs.diff(child, tmp_path))

    out = io.BytesIO()
    export_tree(old, out)  # a layer without a parent: Go's naive diff tars the whole tree
    assert normalize(out.getvalue()) == normalize(vfs.diff(base, tmp_path))


def overlay_base(m: str) -> None:
    for rel in ("keep", "del", "dir/a", "dir/b", "opq/x", "mod", "deep/er/f", "same/f"):
        _w(m + "/" + rel, rel.encode())
    os.makedirs(m + "/emptydir")
    os.symlink("dir", m + "/dirlink")


def overlay_child(c: str) -> None:
    os.remove(c + "/del")
    os.remove(c + "/dir/a")
    _w(c + "/dir/new", b"n")
    shutil.rmtree(c + "/opq")
    os.mkdir(c + "/opq")
    _w(c + "/opq/y", b"y")
    _w(c + "/mod", b"changed")
    os.chmod(c + "/keep", 0o600)
    _w(c + "/newdir/f", b"nf")
    shutil.rmtree(c + "/deep")
    os.mknod(c + "/chr", 0o20644, os.makedev(1, 3))
    _w(c + "/" + "l" * 200, b"long")


def test_changes_and_exported_diffs_match_go_on_overlay(overlay: GoStore, tmp_path: Path) -> None:
    base, child = make_layers(overlay, overlay_base, overlay_child)
    diff, lowers = overlay.overlay_diff(child), [overlay.overlay_diff(base)]
    # Overlay changes come in Go's (deterministic) walk order, so compare lists as they are.
    assert go_changes(overlay, child) == [str(c) for c in changes_overlay(diff, lowers)]
    assert go_changes(overlay, base) == [str(c) for c in changes_overlay(overlay.overlay_diff(base), [])]

    out = io.BytesIO()
    export_overlay_diff(diff, lowers, out)
    go = overlay.diff(child, tmp_path)
    assert b".wh..wh..opq" in go and b".wh.del" in go
    assert normalize(out.getvalue()) == normalize(go)
