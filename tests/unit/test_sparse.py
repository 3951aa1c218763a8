"""GNU sparse members: PAX 0.0/0.1/1.0 are expanded as Go's archive/tar reads them, holes left as
holes; old GNU ``S`` is parsed and then refused as Go's createTarFile refuses it; bad maps fail
with Go's errors; tar-split records what Go's records (real size, CRC of the expanded content, no
map or packed bytes), so reassembly gives Go's bytes, which are not the input's."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from containers_storage.archive import tarread
from containers_storage.archive.apply import ApplyOptions, ApplyResult, apply_layer
from containers_storage.archive.crc64 import crc64, crc64_zeros
from containers_storage.archive.tarsplit import TarSplitWriter, reassemble
from containers_storage.errors import InvalidArchive
from sparsebuild import BLOCK, TarBuilder, end, expand, header, old_gnu_sparse, pad, pax_sparse

VERSIONS = ["0.0", "0.1", "1.0"]
FRAGS = [(0, b"A" * 100), (4096, b"B" * 50), (70_000, b"C" * 3000)]
SIZE = 200_000
ERR_HEADER = "archive/tar: invalid tar header"
ERR_MISS = "archive/tar: sparse file references non-existent data"
ERR_UNREF = "archive/tar: sparse file contains unreferenced data"


class Recorder:
    """A TarSplitWriter stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.entries: list[tuple[object, ...]] = []

    def add_segment(self, raw: bytes | bytearray | memoryview) -> None:
        if raw:
            self.entries.append(("seg", bytes(raw)))

    def add_file(self, name: bytes, size: int, crc: bytes | None) -> None:
        self.entries.append(("file", name, size, crc))


def exactly(text: str) -> str:
    return "^" + re.escape(text) + "$"


def apply(data: bytes, dest: Path, **kw: object) -> ApplyResult:
    dest.mkdir(exist_ok=True)
    return apply_layer(io.BytesIO(data), str(dest), ApplyOptions(**kw))  # type: ignore[arg-type]


def holes_supported(where: Path) -> bool:
    """Whether the filesystem keeps unwritten ranges unallocated (tmpfs, ext4, xfs and btrfs do)."""
    probe = where / ".hole-probe"
    with open(probe, "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"x")
    blocks = os.stat(probe).st_blocks
    probe.unlink()
    return blocks * 512 < (1 << 20)


def member_crc(fragments: list[tuple[int, bytes]], size: int) -> bytes:
    return crc64(expand(fragments, size)).to_bytes(8, "big")


# --- the CRC of zero runs -----------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 511, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 * (1 << 20) + 3])
@pytest.mark.parametrize("start", [0, 0x0123456789ABCDEF])
def test_crc64_zeros_matches_feeding_zero_bytes(n: int, start: int) -> None:
    assert crc64_zeros(start, n) == crc64(bytes(n), start)


def test_crc64_zeros_of_a_huge_hole_composes() -> None:
    # 2**40 bytes cannot be fed; splitting the run anywhere must give the same value.
    whole = crc64_zeros(7, 1 << 40)
    assert whole == crc64_zeros(crc64_zeros(7, (1 << 40) - 12345), 12345)
    assert whole != crc64_zeros(7, (1 << 40) + 1)


# --- well-formed members --------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_pax_sparse_is_expanded_with_metadata(tmp_path: Path, version: str) -> None:
    data = pax_sparse(version, b"dir/file", SIZE, FRAGS, mode=0o640, mtime=1_234_567_890,
                      extra=[(b"SCHILY.xattr.user.k", b"v")]) + end()
    apply(data, tmp_path)
    path = tmp_path / "dir" / "file"
    assert path.read_bytes() == expand(FRAGS, SIZE)
    st = path.stat()
    assert st.st_size == SIZE
    assert st.st_mode & 0o7777 == 0o640
    assert st.st_mtime_ns == 1_234_567_890 * 10**9
    assert os.getxattr(path, "user.k") == b"v"
    # The header's "GNUSparseFile.0/file" name is replaced by GNU.sparse.name (0.1, 1.0).
    assert sorted(os.listdir(tmp_path)) == ["dir"]
    assert os.listdir(tmp_path / "dir") == ["file"]


@pytest.mark.parametrize("version", VERSIONS)
def test_holes_stay_holes(tmp_path: Path, version: str) -> None:
    if not holes_supported(tmp_path):
        pytest.skip("the filesystem under tmp_path allocates holes")
    size = 64 << 20
    frags = [(1 << 20, b"x" * 10), (40 << 20, b"y" * 4096)]
    apply(pax_sparse(version, b"f", size, frags) + end(), tmp_path)
    st = os.stat(tmp_path / "f")
    assert st.st_size == size
    assert st.st_blocks * 512 < (1 << 20)
    with open(tmp_path / "f", "rb") as f:
        assert os.pread(f.fileno(), 12, (1 << 20) - 1) == b"\0" + b"x" * 10 + b"\0"
        assert os.pread(f.fileno(), 4097, 40 << 20) == b"y" * 4096 + b"\0"


def test_huge_trailing_hole_costs_nothing(tmp_path: Path) -> None:
    """A terabyte-sized hole is neither written nor read: not to disk, not for the CRC."""
    if not holes_supported(tmp_path):
        pytest.skip("the filesystem under tmp_path allocates holes")
    size = 1 << 40
    rec = Recorder()
    try:
        apply(pax_sparse("1.0", b"f", size, [(5, b"data")]) + end(), tmp_path, tar_split=rec)
    except InvalidArchive as e:
        if "too large" in str(e):
            pytest.skip(f"the filesystem under tmp_path cannot hold a 1 TiB file: {e}")
        raise
    st = os.stat(tmp_path / "f")
    assert st.st_size == size and st.st_blocks * 512 < (1 << 20)
    crc = crc64_zeros(crc64(b"data", crc64(bytes(5))), size - 9)
    assert ("file", b"f", size, crc.to_bytes(8, "big")) in rec.entries


EDGE_MAPS = {"all-hole": [], "data-at-end": [(SIZE - 10, b"z" * 10)], "no-hole": [(0, b"q" * SIZE)]}


# An empty 0.x map is no map at all (see the next test), so "all-hole" is a 1.0 case only.
@pytest.mark.parametrize("version,case", [(v, c) for v in VERSIONS for c in EDGE_MAPS
                                          if EDGE_MAPS[c] or v == "1.0"])
def test_edge_maps(tmp_path: Path, version: str, case: str) -> None:
    frags = EDGE_MAPS[case]
    apply(pax_sparse(version, b"f", SIZE, frags) + end(), tmp_path)
    assert (tmp_path / "f").read_bytes() == expand(frags, SIZE)


def test_empty_0x_map_is_a_plain_file(tmp_path: Path) -> None:
    """Go guesses 0.x from a non-empty GNU.sparse.map; without one the member is what it says."""
    apply(pax_sparse("0.1", b"f", SIZE, [], data=b"plain") + end(), tmp_path)
    assert (tmp_path / "GNUSparseFile.0" / "f").read_bytes() == b"plain"


def test_zero_length_entries_and_signs_are_accepted(tmp_path: Path) -> None:
    """Empty fragments anywhere (GNU tar ends every map with one at the real size) and "+n"
    numbers, which Go's ParseInt takes."""
    text = b"+4\n0\n0\n+3\n2\n10\n0\n20\n0\n"
    apply(pax_sparse("1.0", b"f", 20, [(3, b"hi")], sparse_map=text) + end(), tmp_path)
    assert (tmp_path / "f").read_bytes() == b"\0\0\0hi" + bytes(15)


def test_sparse_size_prefers_size_over_realsize(tmp_path: Path) -> None:
    data = pax_sparse("1.0", b"f", 300, [(0, b"x")], extra=[(b"GNU.sparse.size", b"10")])
    apply(data + end(), tmp_path)
    assert (tmp_path / "f").read_bytes() == b"x" + bytes(9)


def test_unknown_sparse_version_is_a_plain_file(tmp_path: Path) -> None:
    data = pax_sparse("1.0", b"f", SIZE, FRAGS, extra=[(b"GNU.sparse.major", b"2")]) + end()
    apply(data, tmp_path)
    packed = (tmp_path / "GNUSparseFile.0" / "f").read_bytes()
    assert packed.startswith(b"3\n0\n100\n") and packed.endswith(b"C" * 3000)
    assert not (tmp_path / "f").exists()


def test_sparse_member_in_the_overlay_target(tmp_path: Path) -> None:
    apply(pax_sparse("0.1", b"f", SIZE, FRAGS) + end(), tmp_path, whiteouts="overlay")
    assert (tmp_path / "f").read_bytes() == expand(FRAGS, SIZE)


def test_sparse_replaces_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1_000_000)
    apply(pax_sparse("0.0", b"f", 5000, [(10, b"new")]) + end(), tmp_path)
    assert (tmp_path / "f").read_bytes() == bytes(10) + b"new" + bytes(4987)


def test_aufs_hardlink_to_a_sparse_stash(tmp_path: Path) -> None:
    """A sparse ``.wh..wh.plnk`` file is stashed expanded, so its hard links get the real content."""
    data = (pax_sparse("0.1", b".wh..wh.plnk/1234.5", 9000, [(1, b"one"), (8000, b"two")])
            + TarBuilder().file(b"before", b"b")
            .hardlink(b"f", b".wh..wh.plnk/1234.5").build())
    apply(data, tmp_path)
    assert (tmp_path / "f").read_bytes() == expand([(1, b"one"), (8000, b"two")], 9000)
    assert not (tmp_path / ".wh..wh.plnk" / "1234.5").exists()


def test_force_mask_turns_old_gnu_sparse_into_its_expanded_content(tmp_path: Path) -> None:
    # Like devices under force_mask, an S member is then written as a regular file: the real one.
    apply(old_gnu_sparse(b"f", 9000, [(1, b"one")]) + end(), tmp_path, force_mask=0o700,
          whiteouts="overlay")
    assert (tmp_path / "f").read_bytes() == b"\0one" + bytes(8996)


# --- old GNU sparse ---------------------------------------------------------------------------

@pytest.mark.parametrize("count", [3, 4, 5, 25, 26, 60])
def test_old_gnu_sparse_is_refused_as_go_refuses_it(tmp_path: Path, count: int) -> None:
    frags = [(i * 1000, b"%d" % i) for i in range(count)]
    with pytest.raises(InvalidArchive, match=exactly("unhandled tar header type 83")):
        apply(old_gnu_sparse(b"f", 100_000, frags) + end(), tmp_path)


def test_old_gnu_sparse_whiteout_applies(tmp_path: Path) -> None:
    """Whiteouts never reach createTarFile, so Go accepts an S-typed one; so do we, recording the
    extension blocks as raw bytes and the entry at its real size."""
    (tmp_path / "gone").write_bytes(b"x")
    frags = [(i * 1000, b"%d" % i) for i in range(30)]
    member = old_gnu_sparse(b".wh.gone", 100_000, frags)
    rec = Recorder()
    apply(member + end(), tmp_path, tar_split=rec)
    assert os.listdir(tmp_path) == []
    assert rec.entries[0] == ("seg", member[: 3 * BLOCK])  # header + 2 extension blocks
    assert rec.entries[1] == ("file", b".wh.gone", 100_000, member_crc(frags, 100_000))


@pytest.mark.parametrize("case", ["ustar-magic", "overlap", "beyond", "bad-number", "truncated-ext"])
def test_bad_old_gnu_sparse(tmp_path: Path, case: str) -> None:
    err = ERR_HEADER
    if case == "ustar-magic":
        data = old_gnu_sparse(b"f", 9000, [(0, b"x")], magic=b"ustar\x0000") + end()
    elif case == "overlap":
        data = old_gnu_sparse(b"f", 9000, [(0, b"xx"), (1, b"y")]) + end()
    elif case == "beyond":
        data = old_gnu_sparse(b"f", 9000, [(8999, b"xx")]) + end()
    elif case == "bad-number":
        blk = bytearray(old_gnu_sparse(b"f", 9000, [(0, b"x")]))
        blk[386:398] = b"9" * 12
        blk[148:156] = b" " * 8
        blk[148:156] = b"%06o\x00 " % sum(blk[:BLOCK])
        data = bytes(blk) + end()
    else:
        data = old_gnu_sparse(b"f", 90_000, [(i * 100, b"x") for i in range(10)])[:BLOCK + 100]
        err = "unexpected EOF"
    with pytest.raises(InvalidArchive, match=exactly(err)):
        apply(data, tmp_path)


# --- malformed maps ---------------------------------------------------------------------------

BAD_MAPS: dict[str, tuple[str, dict[str, object], str]] = {
    "overlap-0.0": ("0.0", {"fragments": [(0, b"A" * 100), (50, b"B")]}, ERR_HEADER),
    "overlap-1.0": ("1.0", {"fragments": [(0, b"A" * 100), (99, b"B")]}, ERR_HEADER),
    "unsorted-0.1": ("0.1", {"fragments": [(4096, b"B"), (0, b"A")]}, ERR_HEADER),
    "beyond-size-0.1": ("0.1", {"fragments": [(SIZE - 1, b"AB")]}, ERR_HEADER),
    "negative-offset-1.0": ("1.0", {"fragments": [(-1, b"A")]}, ERR_HEADER),
    "negative-length-0.1": ("0.1", {"sparse_map": b"0,-1", "numblocks": b"1"}, ERR_HEADER),
    "negative-size-1.0": ("1.0", {"size": -1, "fragments": []}, ERR_HEADER),
    "bad-size-0.1": ("0.1", {"extra": [(b"GNU.sparse.size", b"12x")]}, ERR_HEADER),
    "count-mismatch-0.0": ("0.0", {"numblocks": b"4"}, ERR_HEADER),
    "count-mismatch-0.1": ("0.1", {"numblocks": b"2"}, ERR_HEADER),
    "count-missing-0.1": ("0.1", {"numblocks": b""}, ERR_HEADER),
    "negative-count-0.1": ("0.1", {"numblocks": b"-1", "sparse_map": b"0,1"}, ERR_HEADER),
    "junk-token-0.1": ("0.1", {"sparse_map": b"0,1 ", "numblocks": b"1"}, ERR_HEADER),
    "overflow-0.1": ("0.1", {"sparse_map": b"0,9223372036854775808", "numblocks": b"1"}, ERR_HEADER),
    "junk-token-1.0": ("1.0", {"sparse_map": b"1\n0x\n1\n"}, ERR_HEADER),
    "junk-count-1.0": ("1.0", {"sparse_map": b"one\n"}, ERR_HEADER),
    "huge-count-1.0": ("1.0", {"sparse_map": b"4611686018427387904\n"}, ERR_HEADER),
    "unterminated-1.0": ("1.0", {"sparse_map": b"3\n0\n1\n"}, "unexpected EOF"),
    "missing-data-0.0": ("0.0", {"data": b"A" * 100}, ERR_MISS),
    "missing-data-1.0": ("1.0", {"data": b""}, ERR_MISS),
    "unreferenced-data-0.1": ("0.1", {"data": b"A" * 4000}, ERR_UNREF),
    "unreferenced-data-1.0": ("1.0", {"fragments": [], "data": b"junk"}, ERR_UNREF),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
def test_bad_sparse_map_is_refused_with_gos_error(tmp_path: Path, case: str) -> None:
    version, kw, err = BAD_MAPS[case]
    kw = dict(kw)
    size = kw.pop("size", SIZE)
    frags = kw.pop("fragments", FRAGS)
    data = pax_sparse(version, b"f", size, frags, **kw) + end()  # type: ignore[arg-type]
    with pytest.raises(InvalidArchive, match=exactly(err)):
        apply(data, tmp_path)
    assert not (tmp_path / "f").exists()  # refused before anything is written


def test_0_0_records_must_alternate_offset_first(tmp_path: Path) -> None:
    for extra in ([(b"GNU.sparse.numbytes", b"1")], [(b"GNU.sparse.offset", b"1,2")]):
        data = pax_sparse("0.0", b"f", SIZE, FRAGS[:1], numblocks=b"2", extra=extra) + end()
        with pytest.raises(InvalidArchive, match=exactly(ERR_HEADER)):
            apply(data, tmp_path)


def test_1_0_map_over_one_mib_is_refused(tmp_path: Path) -> None:
    """Go 1.43's reader (Go 1.19) reads any size; current Go caps the map at 1 MiB (CVE-2025-58183)."""
    text = b"300000\n" + b"0\n0\n" * 300_000
    with pytest.raises(InvalidArchive, match=exactly("archive/tar: sparse map too long")):
        apply(pax_sparse("1.0", b"f", 10, [], sparse_map=text) + end(), tmp_path)
    # Just under the cap is fine.
    text = b"200000\n" + b"0\n0\n" * 200_000
    apply(pax_sparse("1.0", b"f", 10, [], sparse_map=text) + end(), tmp_path)
    assert (tmp_path / "f").read_bytes() == bytes(10)


def test_old_gnu_extension_blocks_are_capped(tmp_path: Path) -> None:
    blk = bytearray(header(b"f", typeflag=b"S", magic=b"ustar  \x00"))
    blk[482] = 1
    blk[483:495] = b"%011o\x00" % 10
    blk[148:156] = b" " * 8
    blk[148:156] = b"%06o\x00 " % sum(blk)
    ext = bytearray(BLOCK)
    ext[504] = 1  # every extension block announces another one
    data = bytes(blk) + bytes(ext) * 2100 + end()
    with pytest.raises(InvalidArchive, match=exactly("archive/tar: sparse map too long")):
        apply(data, tmp_path)


@pytest.mark.parametrize("version,err", [("0.1", ERR_HEADER), ("1.0", "unexpected EOF")])
def test_sparse_map_on_a_header_only_type(tmp_path: Path, version: str, err: str) -> None:
    data = pax_sparse(version, b"d", 10, [(0, b"x")], typeflag=b"5", data=b"") + end()
    with pytest.raises(InvalidArchive, match=exactly(err)):
        apply(data, tmp_path)


# --- tar-split: what Go records, and what reassembly then gives -------------------------------

def layout(member: bytes) -> tuple[int, int]:
    """(end of the ustar header, packed data size) of a ``pax_sparse`` member."""
    pax_size = int(member[124:136].strip(b"\0 "), 8)
    ustar = BLOCK + len(pad(bytes(pax_size)))
    return ustar + BLOCK, int(member[ustar + 124:ustar + 136].strip(b"\0 "), 8)


@pytest.mark.parametrize("version", VERSIONS)
def test_tar_split_records_like_go(tmp_path: Path, version: str) -> None:
    member = pax_sparse(version, b"f", SIZE, FRAGS)
    after = TarBuilder().file(b"g", b"after").build()
    data = member + after
    rec = Recorder()
    result = apply(data, tmp_path / "layer", tar_split=rec)
    assert result.uncompressed_size == len(data)  # digests and sizes are of the stream as given
    ustar_end, packed = layout(member)
    # Go's tar-split keeps neither the 1.0 map nor the packed data, only the padding after them.
    assert rec.entries[:3] == [
        ("seg", member[:ustar_end]),
        ("file", b"f", SIZE, member_crc(FRAGS, SIZE)),
        ("seg", bytes(-packed % BLOCK) + after[:BLOCK]),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_reassembly_gives_gos_expanded_bytes(tmp_path: Path, version: str) -> None:
    """Go 1.43 cannot round-trip a sparse member (its diff writes the expanded content under the
    packed header); we produce the same bytes."""
    member = pax_sparse(version, b"f", SIZE, FRAGS)
    data = member + end()
    layer = tmp_path / "layer"
    ts = io.BytesIO()
    with TarSplitWriter(ts) as writer:
        apply(data, layer, tar_split=writer)
    out = io.BytesIO()
    reassemble(io.BytesIO(ts.getvalue()), str(layer), out)
    ustar_end, packed = layout(member)
    want = member[:ustar_end] + expand(FRAGS, SIZE) + bytes(-packed % BLOCK) + end()
    assert out.getvalue() == want
    assert out.getvalue() != data


# --- GNU tar's own output -----------------------------------------------------------------------

def _gnu_tar_sparse(tmp_path: Path, version: str) -> tuple[bytes, Path]:
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    src.mkdir()
    if not holes_supported(src):
        pytest.skip("the filesystem under tmp_path allocates holes: GNU tar would store no map")
    with open(src / "sparse", "wb") as f:
        f.write(b"head" * 1000)
        f.seek(3 << 20)
        f.write(b"middle" * 700)
        f.truncate((5 << 20) + 17)
    os.chmod(src / "sparse", 0o751)
    os.utime(src / "sparse", ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    with open(src / "allhole", "wb") as f:
        f.truncate(1 << 20)
    (src / "plain").write_bytes(b"plain\n")
    opts = ["--format=gnu"] if version == "gnu" else ["--format=posix", f"--sparse-version={version}"]
    proc = subprocess.run([tar, "--sparse", *opts, "-cf", "-", "-C", str(src), "."],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"tar cannot write this format: {proc.stderr.decode()}")
    return proc.stdout, src


@pytest.mark.parametrize("version", VERSIONS)
def test_gnu_tar_sparse_formats(tmp_path: Path, version: str) -> None:
    data, src = _gnu_tar_sparse(tmp_path, version)
    layer = tmp_path / "layer"
    rec = Recorder()
    apply(data, layer, tar_split=rec)
    for name in ("sparse", "allhole", "plain"):
        assert (layer / name).read_bytes() == (src / name).read_bytes(), name
    st = os.stat(layer / "sparse")
    assert st.st_mode & 0o7777 == 0o751
    assert st.st_mtime_ns == 1_500_000_000_123_456_789
    assert st.st_blocks < os.stat(src / "sparse").st_size // 512
    assert os.stat(layer / "allhole").st_blocks == 0
    files = {e[1]: e[2] for e in rec.entries if e[0] == "file"}
    assert files[b"./sparse"] == (5 << 20) + 17 and files[b"./allhole"] == 1 << 20


def test_gnu_tar_old_sparse_format_is_refused(tmp_path: Path) -> None:
    data, _ = _gnu_tar_sparse(tmp_path, "gnu")
    with pytest.raises(InvalidArchive, match=exactly("unhandled tar header type 83")):
        apply(data, tmp_path / "layer")


# --- the reader alone -----------------------------------------------------------------------

def test_reader_gives_fragments_and_real_size() -> None:
    data = pax_sparse("1.0", b"f", SIZE, FRAGS) + end()
    chunks = [data[i:i + 700] for i in range(0, len(data), 700)]  # pieces split mid-fragment
    it = iter([*chunks, b""])
    reader = tarread.TarReader(lambda: next(it))
    hdr = reader.next()
    assert hdr is not None and hdr.name == b"f" and hdr.size == SIZE
    assert reader.sparse is not None and list(reader.sparse.fragments) == [
        0, 100, 4096, 50, 70_000, 3000]
    got: dict[int, bytes] = {}
    for off, piece in reader.fragments():
        got[off] = bytes(piece)
    rebuilt = bytearray(SIZE)
    for off, piece_bytes in got.items():
        rebuilt[off:off + len(piece_bytes)] = piece_bytes
    assert bytes(rebuilt) == expand(FRAGS, SIZE)
    assert reader.next() is None
    assert reader.sparse is None
