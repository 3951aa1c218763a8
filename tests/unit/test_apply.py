"""apply_layer: entry types, metadata, whiteouts, digests, ID sets and tar-split recording."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from containers_storage.archive.apply import ApplyOptions, ApplyResult, apply_layer
from containers_storage.archive.compression import Compression
from containers_storage.archive.crc64 import crc64
from containers_storage.errors import InvalidArchive
from containers_storage.idtools import IDMap
from tarbuild import TarBuilder, base256, header

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (chown, mknod, trusted.* xattrs)")


class Recorder:
    """A TarSplitWriter stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []  # ("seg", bytes) or ("file", name, size, crc)

    def add_segment(self, raw: bytes | bytearray | memoryview) -> None:
        self.entries.append(("seg", bytes(raw)))

    def add_file(self, name: bytes, size: int, crc: bytes | None) -> None:
        self.entries.append(("file", name, size, crc))


def apply(data: bytes, dest: Path, **kw: object) -> ApplyResult:
    return apply_layer(io.BytesIO(data), str(dest), ApplyOptions(**kw))  # type: ignore[arg-type]


def rebuild(entries: list[tuple[Any, ...]], contents: list[bytes]) -> bytes:
    """Concatenate segments and, for file entries, the given contents in order."""
    out = bytearray()
    it = iter(contents)
    for e in entries:
        if e[0] == "seg":
            out += e[1]
        elif e[2]:
            out += next(it)
    return bytes(out)


# --- entry types and metadata ------------------------------------------------------------

@needs_root
def test_types_modes_owners_and_times(tmp_path: Path) -> None:
    data = (TarBuilder()
            .dir(b"d/", mode=0o2755, uid=5, gid=6, mtime=1_000_000)
            .file(b"d/suid", b"#!/bin/sh\n", mode=0o4755, uid=7, gid=8, mtime=2_000_000)
            .file(b"d/sticky", b"", mode=0o1777, mtime=3)
            .symlink(b"d/link", b"suid", uid=9, gid=10, mtime=4_000_000)
            .hardlink(b"d/hard", b"d/suid", mode=0o4755, uid=7, gid=8, mtime=2_000_000)
            .member(b"d/null", typeflag=b"3", devmajor=1, devminor=3, mode=0o666)
            .member(b"d/blk", typeflag=b"4", devmajor=7, devminor=0, mode=0o660)
            .member(b"d/fifo", typeflag=b"6", mode=0o600, mtime=5)
            .build())
    dest = tmp_path / "l"
    dest.mkdir()
    apply(data, dest)
    d = dest / "d"
    st = os.lstat(d)
    assert stat.S_IMODE(st.st_mode) == 0o2755 and (st.st_uid, st.st_gid) == (5, 6)
    assert st.st_mtime_ns == 1_000_000 * 10**9  # set last, after its children were created
    st = os.lstat(d / "suid")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (7, 8)  # chown before chmod
    assert st.st_nlink == 2 and os.lstat(d / "hard").st_ino == st.st_ino
    assert stat.S_IMODE(os.lstat(d / "sticky").st_mode) == 0o1777
    st = os.lstat(d / "link")
    assert stat.S_ISLNK(st.st_mode) and os.readlink(d / "link") == "suid"
    assert (st.st_uid, st.st_gid) == (9, 10) and st.st_mtime_ns == 4_000_000 * 10**9
    st = os.lstat(d / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert stat.S_ISBLK(os.lstat(d / "blk").st_mode)
    assert stat.S_ISFIFO(os.lstat(d / "fifo").st_mode)


def test_regular_file_content_and_times(tmp_path: Path) -> None:
    payload = os.urandom(3 << 20)
    data = (TarBuilder().file(b"big", payload, mtime=1234)
            .pax({b"atime": b"2000.5", b"mtime": b"1500.25"}).file(b"pax", b"p").build())
    apply(data, tmp_path)
    assert (tmp_path / "big").read_bytes() == payload
    assert os.stat(tmp_path / "big").st_mtime_ns == 1234 * 10**9
    st = os.stat(tmp_path / "pax")
    assert st.st_mtime_ns == 1_500_250_000_000 and st.st_atime_ns == 2_000_500_000_000


def test_times_before_epoch_are_clamped_as_go_does(tmp_path: Path) -> None:
    data = TarBuilder().file(b"old", b"x", raw_fields={"mtime": base256(-5, 12)}).build()
    apply(data, tmp_path)
    assert os.stat(tmp_path / "old").st_mtime_ns == 0


@needs_root
def test_xattrs_from_pax_and_selinux_skipped(tmp_path: Path) -> None:
    data = (TarBuilder()
            .pax({b"SCHILY.xattr.user.k": b"v\x00bin", b"SCHILY.xattr.trusted.t": b"y",
                  b"SCHILY.xattr.security.selinux": b"system_u:object_r:x:s0"})
            .file(b"f", b"x")
            .pax({b"SCHILY.xattr.user.d": b""}).dir(b"d")
            .build())
    apply(data, tmp_path)
    f = tmp_path / "f"
    assert os.getxattr(f, "user.k") == b"v\x00bin"
    assert os.getxattr(f, "trusted.t") == b"y"
    assert "security.selinux" not in os.listxattr(f) or os.getxattr(f, "security.selinux") != (
        b"system_u:object_r:x:s0")
    assert os.getxattr(tmp_path / "d", "user.d") == b""


def test_long_names_pax_gnu_and_non_utf8(tmp_path: Path) -> None:
    long_dir = b"a" * 150
    long_name = long_dir + b"/" + b"b" * 200
    weird = b"caf\xe9-\xff"
    data = (TarBuilder()
            .dir(long_dir)
            .pax({b"path": long_name}).file(b"ignored", b"pax-long")
            .gnu_long(long_dir + b"/gnu-" + b"c" * 120).file(b"x", b"gnu-long")
            .gnu_long(long_name, typeflag=b"K").symlink(b"sl", b"ignored")
            .file(weird, b"latin1")
            .file(b"file", b"prefixed", prefix=b"pre/fix")
            .build())
    apply(data, tmp_path)
    root = os.fsencode(tmp_path)

    def read(rel: bytes) -> bytes:
        return Path(os.fsdecode(root + b"/" + rel)).read_bytes()

    assert read(long_name) == b"pax-long"
    assert read(long_dir + b"/gnu-" + b"c" * 120) == b"gnu-long"
    assert os.readlink(root + b"/sl") == long_name
    assert read(weird) == b"latin1"
    assert (tmp_path / "pre" / "fix" / "file").read_bytes() == b"prefixed"


def test_base256_fields(tmp_path: Path) -> None:
    fields = {"size": base256(5, 12), "uid": base256(0, 8)}
    data = TarBuilder().file(b"f", b"hello", raw_fields=fields).build()
    apply(data, tmp_path)
    assert (tmp_path / "f").read_bytes() == b"hello"


def test_missing_parents_are_created(tmp_path: Path) -> None:
    apply(TarBuilder().file(b"x/y/z/f", b"1").build(), tmp_path)
    assert (tmp_path / "x/y/z/f").read_bytes() == b"1"
    assert stat.S_IMODE(os.stat(tmp_path / "x/y").st_mode) == 0o755


def test_header_only_types_ignore_size_field(tmp_path: Path) -> None:
    # A directory claiming 100 bytes: Go reads the next header right after it.
    data = header(b"d/", typeflag=b"5", size=100, mode=0o755) + TarBuilder().file(b"d/f", b"x").build()
    rec = Recorder()
    apply(data, tmp_path, tar_split=rec)
    assert (tmp_path / "d/f").read_bytes() == b"x"
    assert rec.entries[1] == ("file", b"d/", 100, bytes(8))  # crc of no content, as Go records


def test_global_pax_header_is_skipped(tmp_path: Path) -> None:
    data = TarBuilder().pax({b"comment": b"hi"}, typeflag=b"g").file(b"f", b"x").build()
    res = apply(data, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["f"]
    assert res.uids == [0]


def test_unknown_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArchive, match="unhandled tar header type"):
        apply(TarBuilder().member(b"f", b"", typeflag=b"7").build(), tmp_path)


# --- existing entries ---------------------------------------------------------------------

def test_replacing_existing_entries(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "old").write_text("old")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "deep").mkdir()
    (tmp_path / "tree" / "deep" / "x").write_text("x")
    outside = tmp_path.parent / (tmp_path.name + "-target")
    outside.write_text("keep")
    os.symlink(outside, tmp_path / "link")
    (tmp_path / "file").write_text("file")
    data = (TarBuilder()
            .dir(b"dir", mode=0o700)          # dir over dir: merged, metadata updated
            .file(b"tree", b"now a file")     # non-dir over dir: tree removed
            .file(b"link", b"replaced")       # file over symlink: the link is replaced
            .symlink(b"file", b"dir")         # symlink over file
            .build())
    apply(data, tmp_path)
    assert (tmp_path / "dir" / "old").read_text() == "old"
    assert stat.S_IMODE(os.stat(tmp_path / "dir").st_mode) == 0o700
    assert (tmp_path / "tree").read_bytes() == b"now a file"
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").read_bytes() == b"replaced"
    assert outside.read_text() == "keep"
    assert os.readlink(tmp_path / "file") == "dir"


# --- whiteouts ------------------------------------------------------------------------------

def _lower(tmp_path: Path) -> None:
    (tmp_path / "gone").write_text("x")
    (tmp_path / "gonedir" / "sub").mkdir(parents=True)
    (tmp_path / "gonedir" / "sub" / "f").write_text("x")
    (tmp_path / "opq" / "old").mkdir(parents=True)
    (tmp_path / "opq" / "old" / "f").write_text("x")
    (tmp_path / "opq" / "oldfile").write_text("x")


def test_plain_whiteouts_delete_and_opaque_clears(tmp_path: Path) -> None:
    _lower(tmp_path)
    data = (TarBuilder()
            .file(b".wh.gone").file(b".wh.gonedir")
            .dir(b"opq").file(b"opq/new", b"n").dir(b"opq/newdir")
            .file(b"opq/.wh..wh..opq")
            .build())
    res = apply(data, tmp_path, whiteouts="plain")
    assert not (tmp_path / "gone").exists() and not (tmp_path / "gonedir").exists()
    assert sorted(os.listdir(tmp_path / "opq")) == ["new", "newdir"]
    assert not any(n.startswith(".wh.") for n in os.listdir(tmp_path))
    assert res.uids == [0]


@needs_root
def test_overlay_whiteouts_are_devices_and_xattrs(tmp_path: Path) -> None:
    data = (TarBuilder()
            .file(b".wh.gone", uid=3, gid=4)
            .dir(b"opq").file(b"opq/.wh..wh..opq")
            .dir(b"x").file(b"x/.wh.y")
            .build())
    apply(data, tmp_path, whiteouts="overlay")
    st = os.lstat(tmp_path / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and (st.st_uid, st.st_gid) == (3, 4)
    assert os.getxattr(tmp_path / "opq", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(tmp_path / "x" / "y").st_mode)
    assert not (tmp_path / ".wh.gone").exists() and not (tmp_path / "opq" / ".wh..wh..opq").exists()


@needs_root
def test_overlay_whiteout_under_whited_out_dir_is_tolerated(tmp_path: Path) -> None:
    data = TarBuilder().file(b".wh.foo").file(b"foo/.wh.bar").build()
    apply(data, tmp_path, whiteouts="overlay")
    assert stat.S_ISCHR(os.lstat(tmp_path / "foo").st_mode)


def test_aufs_plnk_hardlinks_become_copies(tmp_path: Path) -> None:
    data = (TarBuilder()
            .dir(b".wh..wh.plnk")
            .file(b".wh..wh.plnk/1234.5678", b"shared", mode=0o751, mtime=77)
            .hardlink(b"a", b".wh..wh.plnk/1234.5678")
            .hardlink(b"b/c", b"./.wh..wh.plnk/1234.5678")
            .build())
    apply(data, tmp_path, whiteouts="plain")
    for p in (tmp_path / "a", tmp_path / "b" / "c"):
        assert p.read_bytes() == b"shared"
        st = os.stat(p)
        assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_mtime_ns == 77 * 10**9
    assert not (tmp_path / ".wh..wh.plnk" / "1234.5678").exists()
    with pytest.raises(InvalidArchive, match="invalid aufs hardlink"):
        apply(TarBuilder().hardlink(b"z", b".wh..wh.plnk/missing").build(), tmp_path / "b")


# --- ownership mapping and ID sets ----------------------------------------------------------

@needs_root
def test_id_maps_apply_on_disk_but_sets_are_container_ids(tmp_path: Path) -> None:
    data = (TarBuilder().dir(b"d", uid=0, gid=0).file(b"d/f", b"x", uid=1000, gid=100)
            .file(b".wh.nothing", uid=55, gid=55).build())
    res = apply(data, tmp_path, uid_map=[IDMap(0, 100000, 65536)], gid_map=[IDMap(0, 200000, 65536)])
    st = os.stat(tmp_path / "d" / "f")
    assert (st.st_uid, st.st_gid) == (101000, 200100)
    assert (os.stat(tmp_path / "d").st_uid, os.stat(tmp_path / "d").st_gid) == (100000, 200000)
    assert res.uids == [0, 1000] and res.gids == [0, 100]  # whiteouts excluded, as Go logs them


def test_unmappable_id_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArchive, match="cannot be mapped"):
        apply(TarBuilder().file(b"f", b"x", uid=70000).build(), tmp_path, uid_map=[IDMap(0, 1, 10)])


# --- digests, sizes, compression, tar-split ------------------------------------------------

def _sample_tar(tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(70000))
    (src / "d" / "empty").write_bytes(b"")
    os.symlink("f", src / "d" / "l")
    os.link(src / "d" / "f", src / "d" / "h")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(src, arcname=".")
    return buf.getvalue() + b"\0" * 3000  # trailing bytes after the end-of-archive blocks


@pytest.mark.parametrize("kind", ["none", "gzip", "bzip2", "xz", "zstd"])
def test_digests_and_sizes(tmp_path: Path, kind: str) -> None:
    tar = _sample_tar(tmp_path)
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    raw = {"none": lambda b: b, "gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress,
           "zstd": zstd.compress}[kind](tar)
    dest = tmp_path / "out"
    dest.mkdir()
    res = apply(raw, dest)
    assert res.compression == {"none": Compression.UNCOMPRESSED, "gzip": Compression.GZIP,
                               "bzip2": Compression.BZIP2, "xz": Compression.XZ,
                               "zstd": Compression.ZSTD}[kind]
    assert res.compressed_digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert res.compressed_size == len(raw)
    assert res.uncompressed_digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert res.uncompressed_size == len(tar)


def test_tar_split_segments_and_files_rebuild_the_input(tmp_path: Path) -> None:
    tar = _sample_tar(tmp_path)
    rec = Recorder()
    dest = tmp_path / "out"
    dest.mkdir()
    apply(tar, dest, tar_split=rec)
    files = [e for e in rec.entries if e[0] == "file"]
    contents = []
    for _, name, size, crc in files:
        if size:
            content = (dest / os.fsdecode(name)).read_bytes()
            assert len(content) == size
            assert crc == crc64(content).to_bytes(8, "big")
            contents.append(content)
        else:
            assert crc is None
    assert rebuild(rec.entries, contents) == tar
    assert len(files) == 7  # ".", d, d/e, d/f, d/empty, d/l, d/h: one entry per header


def test_real_tar_split_writer_round_trip(tmp_path: Path) -> None:
    from containers_storage.archive.tarsplit import TarSplitWriter, reassemble

    tar = _sample_tar(tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    ts = io.BytesIO()
    writer = TarSplitWriter(ts)
    apply(tar, dest, tar_split=writer)
    writer.close()
    out = io.BytesIO()
    reassemble(io.BytesIO(ts.getvalue()), str(dest), out)
    assert out.getvalue() == tar


def test_segment_order_matches_go_disassembly(tmp_path: Path) -> None:
    # Go: [pad-of-previous + headers] segment, then the file entry; the end blocks in one
    # segment; bytes after them in further segments; then an empty one.
    data = TarBuilder().file(b"a", b"xyz").file(b"b", b"").build() + b"tail"
    rec = Recorder()
    apply(data, tmp_path, tar_split=rec)
    kinds = [e[0] for e in rec.entries]
    assert kinds == ["seg", "file", "seg", "file", "seg", "seg", "seg"]
    assert rec.entries[6] == ("seg", b"")  # Go 1.43's final empty read
    assert len(rec.entries[0][1]) == 512
    assert len(rec.entries[2][1]) == 509 + 512
    assert rec.entries[4][1] == b"\0" * 1024
    assert rec.entries[5][1] == b"tail"
    assert rec.entries[1] == ("file", b"a", 3, crc64(b"xyz").to_bytes(8, "big"))
    assert rec.entries[3] == ("file", b"b", 0, None)


def test_empty_input_is_an_empty_layer(tmp_path: Path) -> None:
    res = apply(b"", tmp_path)
    assert os.listdir(tmp_path) == []
    assert res.uncompressed_size == 0 and res.compression == Compression.UNCOMPRESSED
    assert res.uncompressed_digest == "sha256:" + hashlib.sha256(b"").hexdigest()


def test_missing_end_blocks_are_accepted_as_go_does(tmp_path: Path) -> None:
    apply(TarBuilder().file(b"f", b"x").build(end=False), tmp_path)
    assert (tmp_path / "f").read_bytes() == b"x"


def test_gzip_trailing_junk_is_an_error(tmp_path: Path) -> None:
    data = gzip.compress(TarBuilder().file(b"f", b"x").build()) + b"junk"
    with pytest.raises(InvalidArchive, match="gzip: invalid header"):
        apply(data, tmp_path)


def test_gzip_bad_checksum(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(TarBuilder().file(b"f", b"x" * 1000).build()))
    data[-6] ^= 0xFF
    with pytest.raises(InvalidArchive, match="gzip: invalid checksum"):
        apply(bytes(data), tmp_path)


def test_duplicate_names_are_refused_by_the_real_writer(tmp_path: Path) -> None:
    from containers_storage.archive.tarsplit import TarSplitWriter

    writer = TarSplitWriter(io.BytesIO())
    with pytest.raises(InvalidArchive, match="duplicates"):
        apply(TarBuilder().file(b"f", b"1").file(b"./f", b"2").build(), tmp_path, tar_split=writer)


def test_pipe_input_is_streamed(tmp_path: Path) -> None:
    tar = _sample_tar(tmp_path)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        with os.fdopen(w, "wb") as f:
            f.write(gzip.compress(tar))
        os._exit(0)
    os.close(w)
    dest = tmp_path / "out"
    dest.mkdir()
    with os.fdopen(r, "rb") as f:
        res = apply_layer(f, str(dest), ApplyOptions())
    os.waitpid(pid, 0)
    assert res.uncompressed_digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert (dest / "d" / "f").read_bytes() == (tmp_path / "src" / "d" / "f").read_bytes()


@pytest.mark.parametrize("compress", [False, True])
def test_regular_file_input_from_its_current_position(tmp_path: Path, compress: bool) -> None:
    tar = _sample_tar(tmp_path)
    raw = gzip.compress(tar) if compress else tar
    path = tmp_path / "layer.tar"
    path.write_bytes(b"skipped" + raw)
    dest = tmp_path / "out"
    dest.mkdir()
    with open(path, "rb") as f:
        f.read(7)  # the input starts where the caller's file position is
        res = apply_layer(f, str(dest), ApplyOptions())
    assert res.compressed_digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert res.uncompressed_digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert res.uncompressed_size == len(tar) and res.compressed_size == len(raw)
    assert (dest / "d" / "f").read_bytes() == (tmp_path / "src" / "d" / "f").read_bytes()


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_reader_errors_and_early_stop(tmp_path: Path) -> None:
    threads = _os_threads()
    truncated = tmp_path / "t.tar.gz"
    data = gzip.compress(TarBuilder().file(b"a", os.urandom(200_000)).build())
    truncated.write_bytes(data[: len(data) // 2])
    with open(truncated, "rb") as f, pytest.raises(InvalidArchive, match="gzip: unexpected EOF"):
        apply_layer(f, str(tmp_path), ApplyOptions())
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"x" * 512 + os.urandom(8 << 20))  # fails on the first header
    with open(junk, "rb") as f, pytest.raises(InvalidArchive, match="invalid tar header"):
        apply_layer(f, str(tmp_path), ApplyOptions())
    # The reader threads are gone (they are _thread threads: threading.enumerate() misses them).
    deadline = time.monotonic() + 5
    while _os_threads() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    # At most as many as before: a thread some earlier test left may end meanwhile.
    assert _os_threads() <= threads


def test_aufs_target_writes_whiteouts_and_aufs_metadata_as_files(tmp_path: Path) -> None:
    """Go's Unpack without a whiteout converter (overlay under a mount program): nothing is
    deleted or converted; ``.wh.`` entries and AUFS's hard-link directory land as they are."""
    dest = tmp_path / "layer"
    dest.mkdir()
    (dest / "etc").mkdir()
    (dest / "etc" / "gone").write_bytes(b"still here")
    tb = TarBuilder()
    tb.file(b"etc/.wh.gone", b"")
    tb.dir(b"opaque/")
    tb.file(b"opaque/.wh..wh..opq", b"")
    tb.dir(b".wh..wh.plnk/")
    tb.file(b".wh..wh.plnk/1234.5678", b"shared")
    tb.hardlink(b"bin/sh", b".wh..wh.plnk/1234.5678")
    apply(tb.build(), dest, whiteouts="aufs")
    assert (dest / "etc" / "gone").read_bytes() == b"still here"
    for name in ("etc/.wh.gone", "opaque/.wh..wh..opq"):
        st = os.lstat(dest / name)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert (dest / "bin" / "sh").read_bytes() == b"shared"
    assert os.stat(dest / "bin" / "sh").st_ino == os.stat(dest / ".wh..wh.plnk" / "1234.5678").st_ino
    assert not os.listxattr(dest / "opaque")



# --- the tap (a partial pull's check of the stream) ---------------------------------------

class _Pieces(io.RawIOBase):
    """A stream read a megabyte at a time, as the apply reads its input."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1, /) -> bytes:
        n = len(self._data) - self._pos if n < 0 else n
        piece = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(piece)
        return piece


def _big_tar(files: int, size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(files):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes([i % 251]) * size))
    return buf.getvalue()


def test_the_tap_sees_every_piece_in_order_then_the_end_once(tmp_path: Path) -> None:
    from containers_storage.archive.apply import TAP_LAG

    data = _big_tar(40, 1 << 20)  # more pieces than the tap runs behind
    seen: list[bytes] = []
    result = apply_layer(_Pieces(data), str(tmp_path),  # type: ignore[arg-type]
                         ApplyOptions(detect_compression=False, tap=seen.append))
    assert len(seen) > TAP_LAG + 1
    assert seen[-1] == b"" and b"" not in seen[:-1]
    assert b"".join(seen) == data
    assert result.uncompressed_digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_tap_failing_at_the_end_fails_the_apply(tmp_path: Path) -> None:
    data = _big_tar(3, 4096)

    def tap(piece: bytes) -> None:
        if not piece:
            raise InvalidArchive("the check failed at the end")

    with pytest.raises(InvalidArchive, match="the check failed at the end"):
        apply_layer(_Pieces(data), str(tmp_path),  # type: ignore[arg-type]
                    ApplyOptions(detect_compression=False, tap=tap))
