"""Hostile layer tarballs: nothing outside the layer directory may change, whatever the archive.

Each test builds its tarball byte by byte, applies it (both targets, both resolvers), and compares
a snapshot of everything beside the layer (a sentinel directory with a victim file, plus the
parent directory itself) before and after.  Applying may fail with InvalidArchive or succeed with
the damage confined to the layer; it may never touch the sentinel.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from containers_storage.archive.apply import ApplyOptions, apply_layer
from containers_storage.errors import InvalidArchive
from tarbuild import TarBuilder, base256, header, pax_records

ROOT = os.geteuid() == 0
TARGETS = ["plain", "overlay"]


def snapshot(top: Path, skip: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, owner, size, mtime, link count, content hash, link target, xattrs of a tree."""
    out: dict[str, tuple[object, ...]] = {}

    def record(p: Path) -> None:
        st = os.lstat(p)
        extra: object = None
        if stat.S_ISREG(st.st_mode):
            extra = hashlib.sha256(p.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            extra = os.readlink(p)
        try:
            xattrs = sorted((k, os.getxattr(p, k, follow_symlinks=False))
                            for k in os.listxattr(p, follow_symlinks=False))
        except OSError:
            xattrs = []
        out[str(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_nlink,
                       st.st_rdev, extra, tuple(xattrs))

    record(top)
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p != skip:
                record(p)
    return out


class Arena:
    """tmp/layer (the destination) beside tmp/outside (the sentinel with a victim file)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.layer = tmp / "layer"
        self.outside = tmp / "outside"
        self.layer.mkdir()
        self.outside.mkdir()
        (self.outside / "victim").write_bytes(b"secret")
        os.chmod(self.outside / "victim", 0o640)
        (self.outside / "sub").mkdir()
        (self.outside / "sub" / "keep").write_bytes(b"keep")
        self.before = snapshot(tmp, self.layer)

    def apply(self, data: bytes, target: str = "plain") -> bool:
        """Apply; True on success, False on InvalidArchive (both are acceptable outcomes)."""
        try:
            apply_layer(io.BytesIO(data), str(self.layer), ApplyOptions(whiteouts=target))  # type: ignore[arg-type]
        except InvalidArchive:
            return False
        return True

    def assert_untouched(self) -> None:
        assert snapshot(self.tmp, self.layer) == self.before


@pytest.fixture
def arena(tmp_path: Path, resolver: str) -> Arena:
    return Arena(tmp_path)


# --- names --------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", [
    b"../outside/victim", b"../../outside/victim", b"a/../../outside/victim",
    b"/outside/victim", b"./../outside/victim", b"..//outside/./victim",
])
def test_dotdot_and_absolute_names_stay_inside(arena: Arena, target: str, name: bytes) -> None:
    ok = arena.apply(TarBuilder().file(name, b"pwned", mode=0o777).build(), target)
    arena.assert_untouched()
    assert ok
    # As in Go's chroot, the name lands below the layer root.
    assert (arena.layer / "outside" / "victim").read_bytes() == b"pwned"


@pytest.mark.parametrize("target", TARGETS)
def test_dotdot_directory_entry_changes_only_the_layer_root(arena: Arena, target: str) -> None:
    data = TarBuilder().dir(b"..", mode=0o777, uid=1234).dir(b"../..", mode=0o700).build()
    arena.apply(data, target)
    arena.assert_untouched()


def test_root_replaced_by_a_file_is_refused(arena: Arena) -> None:
    assert not arena.apply(TarBuilder().file(b".", b"x").build())
    assert arena.layer.is_dir()
    arena.assert_untouched()


# --- symlinks planted by earlier entries -------------------------------------------------

def _link_cases(arena: Arena) -> dict[str, bytes]:
    absolute = str(arena.outside).encode()
    return {
        "absolute": absolute,
        "relative": b"../outside",
        "deep-relative": b"../../../../../../../../" + absolute.lstrip(b"/"),
        "root": b"/",
    }


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", ["absolute", "relative", "deep-relative"])
def test_file_through_planted_symlink(arena: Arena, target: str, kind: str) -> None:
    link = _link_cases(arena)[kind]
    data = (TarBuilder().symlink(b"evil", link)
            .file(b"evil/victim", b"pwned", mode=0o4777)
            .file(b"evil/new", b"pwned").build())
    arena.apply(data, target)
    arena.assert_untouched()


@pytest.mark.parametrize("target", TARGETS)
def test_chained_symlinks(arena: Arena, target: str) -> None:
    data = (TarBuilder().symlink(b"a", b"b").symlink(b"b", b"c/d").dir(b"c")
            .symlink(b"c/d", b"../../outside").file(b"a/victim", b"pwned")
            .file(b"a/sub/keep", b"pwned").build())
    arena.apply(data, target)
    arena.assert_untouched()


@pytest.mark.parametrize("target", TARGETS)
def test_symlink_then_directory_of_the_same_name(arena: Arena, target: str) -> None:
    data = (TarBuilder().symlink(b"evil", str(arena.outside).encode())
            .dir(b"evil", mode=0o777, uid=4321)
            .file(b"evil/victim", b"pwned").build())
    assert arena.apply(data, target)
    arena.assert_untouched()
    assert (arena.layer / "evil").is_dir() and not (arena.layer / "evil").is_symlink()
    assert (arena.layer / "evil" / "victim").read_bytes() == b"pwned"


@pytest.mark.parametrize("target", TARGETS)
def test_symlink_then_file_of_the_same_name(arena: Arena, target: str) -> None:
    data = (TarBuilder().symlink(b"evil", str(arena.outside / "victim").encode())
            .file(b"evil", b"pwned", mode=0o777).build())
    assert arena.apply(data, target)
    arena.assert_untouched()
    assert (arena.layer / "evil").read_bytes() == b"pwned"


@pytest.mark.parametrize("target", TARGETS)
def test_symlink_entry_itself_is_not_followed_for_metadata(arena: Arena, target: str) -> None:
    victim = str(arena.outside / "victim").encode()
    data = (TarBuilder().symlink(b"s", victim, mode=0o777, uid=1, gid=1)
            .pax({b"SCHILY.xattr.user.evil": b"1"})
            .symlink(b"s2", victim, mtime=0).build())
    arena.apply(data, target)
    arena.assert_untouched()


@pytest.mark.parametrize("target", TARGETS)
def test_symlink_loop_fails_cleanly(arena: Arena, target: str) -> None:
    data = TarBuilder().symlink(b"a", b"b").symlink(b"b", b"a").file(b"a/x", b"x").build()
    assert not arena.apply(data, target)
    arena.assert_untouched()


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
@pytest.mark.parametrize("target", TARGETS)
def test_device_and_fifo_through_symlink(arena: Arena, target: str) -> None:
    data = (TarBuilder().symlink(b"evil", str(arena.outside).encode())
            .member(b"evil/dev", typeflag=b"3", devmajor=1, devminor=3)
            .member(b"evil/fifo", typeflag=b"6").build())
    arena.apply(data, target)
    arena.assert_untouched()


# --- hard links --------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("linkname", [
    b"../outside/victim", b"/OUTSIDE/victim", b"evil/victim", b"evil/../outside/victim",
])
def test_hardlink_targets_outside(arena: Arena, target: str, linkname: bytes) -> None:
    linkname = linkname.replace(b"/OUTSIDE", str(arena.outside).encode())
    data = (TarBuilder().symlink(b"evil", str(arena.outside).encode())
            .hardlink(b"h", linkname, mode=0o777, uid=77).file(b"h2", b"x").build())
    arena.apply(data, target)
    arena.assert_untouched()  # includes the victim's link count


@pytest.mark.parametrize("target", TARGETS)
def test_hardlink_to_symlink_does_not_chmod_its_target(arena: Arena, target: str) -> None:
    data = (TarBuilder().symlink(b"s", str(arena.outside / "victim").encode())
            .hardlink(b"h", b"s", mode=0o777, uid=99, gid=99).build())
    arena.apply(data, target)
    arena.assert_untouched()


@pytest.mark.parametrize("target", TARGETS)
def test_hardlink_to_directory_or_root_is_refused(arena: Arena, target: str) -> None:
    assert not arena.apply(TarBuilder().dir(b"d").hardlink(b"h", b"d").build(), target)
    assert not arena.apply(TarBuilder().hardlink(b"h2", b"..").build(), target)
    arena.assert_untouched()


# --- whiteouts ----------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", [b"evil/.wh.victim", b"evil/.wh.sub", b"evil/sub/.wh.keep",
                                  b"../outside/.wh.victim", b".wh...", b"evil/.wh..wh..opq",
                                  b"evil/sub/.wh..wh..opq"])
def test_whiteouts_through_symlinks(arena: Arena, target: str, name: bytes) -> None:
    data = (TarBuilder().symlink(b"evil", str(arena.outside).encode())
            .file(name, b"").build())
    arena.apply(data, target)
    arena.assert_untouched()


@pytest.mark.parametrize("target", TARGETS)
def test_opaque_marker_under_relative_symlink(arena: Arena, target: str) -> None:
    data = (TarBuilder().dir(b"d").symlink(b"d/up", b"../../outside")
            .file(b"d/up/.wh..wh..opq").file(b"d/up/sub/.wh..wh..opq").build())
    arena.apply(data, target)
    arena.assert_untouched()


# --- bad input: bounded errors, nothing written outside -----------------------------------

def _assert_refused(arena: Arena, data: bytes, message: str) -> None:
    with pytest.raises(InvalidArchive, match=message):
        apply_layer(io.BytesIO(data), str(arena.layer), ApplyOptions())
    arena.assert_untouched()


def test_oversized_pax_record_is_refused_without_reading_it(arena: Arena) -> None:
    # Declares 8 GiB of PAX records; must fail at once, not buffer them.
    data = header(b"PaxHeaders/x", typeflag=b"x", size=(1 << 33) - 1) + b"\0" * 4096
    _assert_refused(arena, data, "header field too long")


def test_oversized_gnu_long_name_is_refused(arena: Arena) -> None:
    data = header(b"././@LongLink", typeflag=b"L", size=(1 << 20) + 1, magic=b"ustar  \x00")
    _assert_refused(arena, data + b"a" * 4096, "header field too long")


def test_pax_record_with_bad_length_is_refused(arena: Arena) -> None:
    body = b"99999 path=x\n"
    data = TarBuilder().member(b"p", body, typeflag=b"x").file(b"f", b"x").build()
    _assert_refused(arena, data, "invalid tar header")


def test_negative_base256_size_is_refused(arena: Arena) -> None:
    data = header(b"f", raw_fields={"size": base256(-1, 12)}) + b"\0" * 1024
    _assert_refused(arena, data, "invalid tar header")


def test_overflowing_base256_size_is_refused(arena: Arena) -> None:
    data = header(b"f", raw_fields={"size": b"\x80" + b"\xff" * 11}) + b"\0" * 1024
    _assert_refused(arena, data, "invalid tar header")


def test_huge_declared_size_fails_at_end_of_input(arena: Arena) -> None:
    data = header(b"f", raw_fields={"size": base256(1 << 50, 12)}) + b"x" * 1000
    _assert_refused(arena, data, "unexpected EOF")


def test_bad_checksum_is_refused(arena: Arena) -> None:
    data = header(b"f", size=1, checksum=1) + b"x".ljust(512, b"\0") + b"\0" * 1024
    _assert_refused(arena, data, "invalid tar header")


def test_random_junk_is_refused(arena: Arena) -> None:
    _assert_refused(arena, os.urandom(1 << 20).replace(b"\x1f\x8b", b"xx"), "invalid tar header")


def test_zero_block_followed_by_data_is_refused(arena: Arena) -> None:
    data = b"\0" * 512 + TarBuilder().file(b"f", b"x").build()
    _assert_refused(arena, data, "invalid tar header")


def test_truncated_header_is_refused(arena: Arena) -> None:
    data = TarBuilder().file(b"a", b"x").file(b"b", b"y").build()
    _assert_refused(arena, data[:512 + 512 + 100], "unexpected EOF")


def test_truncated_content_is_refused(arena: Arena) -> None:
    data = TarBuilder().file(b"a", b"x" * 5000).build()
    _assert_refused(arena, data[:512 + 3000], "unexpected EOF")


def test_truncated_gzip_is_refused(arena: Arena) -> None:
    import gzip

    data = gzip.compress(TarBuilder().file(b"a", os.urandom(50000)).build())
    _assert_refused(arena, data[: len(data) // 2], "gzip: unexpected EOF")


def test_gzip_magic_with_junk_is_refused(arena: Arena) -> None:
    _assert_refused(arena, b"\x1f\x8b\x08" + os.urandom(5000), "gzip")


def test_zstd_magic_with_junk_is_refused(arena: Arena) -> None:
    _assert_refused(arena, b"\x28\xb5\x2f\xfd" + os.urandom(5000), "zstd")


def test_duplicate_pax_headers_stay_bounded(arena: Arena) -> None:
    # Many chained extended headers before one member: each is bounded, the raw total is flushed.
    body = pax_records({b"comment": b"x" * 900_000})
    chain = TarBuilder()
    for _ in range(12):
        chain.member(b"p", body, typeflag=b"x")
    assert arena.apply(chain.file(b"f", b"ok").build())
    assert (arena.layer / "f").read_bytes() == b"ok"
    arena.assert_untouched()
