"""Tar headers as Go's archive/tar writes them: format choice, field encoding, pseudo entries."""

from __future__ import annotations

import io
import tarfile

import pytest

from containers_storage.archive.tarwrite import (
    BLOCK,
    END_OF_ARCHIVE,
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_LINK,
    TYPE_REG,
    TYPE_REGA,
    TYPE_SYMLINK,
    Format,
    HeaderError,
    TarHeader,
    encode_header,
    padding,
)

MTIME = 1_700_000_000 * 10**9


def field(blk: bytes, off: int, size: int) -> bytes:
    return blk[off:off + size]


def checksum_ok(blk: bytes) -> bool:
    expected = sum(blk[:148]) + 8 * 32 + sum(blk[156:])
    return field(blk, 148, 8) == b"%06o\x00 " % expected


def read_back(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data + END_OF_ARCHIVE)) as tf:
        return tf.getmembers()


def test_plain_file_is_ustar_with_gos_field_encoding() -> None:
    blk = encode_header(TarHeader(name=b"usr/bin/x", mode=0o755, uid=1000, gid=1001, size=5, mtime_ns=MTIME))
    assert len(blk) == BLOCK
    assert field(blk, 0, 100) == b"usr/bin/x".ljust(100, b"\x00")
    assert field(blk, 100, 8) == b"0000755\x00"
    assert field(blk, 108, 8) == b"0001750\x00"
    assert field(blk, 116, 8) == b"0001751\x00"
    assert field(blk, 124, 12) == b"00000000005\x00"
    assert field(blk, 136, 12) == b"%011o\x00" % 1_700_000_000
    assert blk[156:157] == TYPE_REG
    assert field(blk, 257, 8) == b"ustar\x0000"
    assert field(blk, 265, 64) == bytes(64)  # no user or group names
    # Go writes device numbers for every entry, zero included (Python's tarfile leaves them NUL).
    assert field(blk, 329, 16) == b"0000000\x000000000\x00"
    assert field(blk, 345, 167) == bytes(167)
    assert checksum_ok(blk)


def test_typeflag_rega_is_promoted_by_trailing_slash() -> None:
    assert encode_header(TarHeader(name=b"d/", typeflag=TYPE_REGA))[156:157] == TYPE_DIR
    assert encode_header(TarHeader(name=b"f", typeflag=TYPE_REGA))[156:157] == TYPE_REG


def test_long_ascii_name_splits_into_prefix_at_the_last_possible_slash() -> None:
    name = b"/".join([b"d%03d" % i for i in range(30)]) + b"/file"  # 149 bytes
    blk = encode_header(TarHeader(name=name, size=1, mtime_ns=MTIME))
    assert len(blk) == BLOCK  # still plain USTAR
    prefix = field(blk, 345, 155).rstrip(b"\x00")
    suffix = field(blk, 0, 100).rstrip(b"\x00")
    assert prefix + b"/" + suffix == name
    assert suffix == b"file"  # Go keeps the prefix as long as it can
    assert read_back(blk + bytes(BLOCK))[0].name == name.decode()


def test_unsplittable_name_gets_a_pax_record() -> None:
    name = b"n" * 120 + b"/" + b"m" * 110
    data = encode_header(TarHeader(name=name, size=0, mtime_ns=MTIME))
    assert len(data) == 3 * BLOCK
    pax_hdr, records, main = data[:BLOCK], data[BLOCK:2 * BLOCK], data[2 * BLOCK:]
    assert pax_hdr[156:157] == b"x"
    assert field(pax_hdr, 0, 100) == (b"n" * 100)  # "<dir>/PaxHeaders.0/<file>" cut to 100
    assert field(pax_hdr, 100, 8) == b"0000000\x00"
    assert field(pax_hdr, 257, 8) == b"ustar\x0000"
    assert records.rstrip(b"\x00") == b"%d path=%s\n" % (len(name) + 10, name)
    assert field(main, 0, 100) == name[:100]
    assert checksum_ok(pax_hdr) and checksum_ok(main)
    assert read_back(data)[0].name == name.decode()


def test_pax_header_name_for_a_short_path() -> None:
    data = encode_header(TarHeader(name="dir/héllo".encode(), mtime_ns=MTIME))
    assert field(data, 0, 100).rstrip(b"\x00") == b"dir/PaxHeaders.0/hllo"
    main = data[-BLOCK:]
    assert field(main, 0, 100).rstrip(b"\x00") == b"dir/hllo"  # the main header keeps only ASCII
    assert read_back(data)[0].name == "dir/héllo"


def test_pax_record_length_counts_itself() -> None:
    # "99 path=<90 bytes>\n" is 99 bytes; one byte more and the length needs a third digit.
    for n, expected_len in ((90, 99), (91, 101)):
        name = "é" + "a" * (n - 2)
        data = encode_header(TarHeader(name=name.encode(), mtime_ns=MTIME))
        rec = data[BLOCK:2 * BLOCK].rstrip(b"\x00")
        assert int(rec.split(b" ", 1)[0]) == len(rec) == expected_len


def test_non_utf8_name_round_trips_through_pax() -> None:
    data = encode_header(TarHeader(name=b"bad\xffname", mtime_ns=MTIME))
    assert b"path=bad\xffname\n" in data
    assert field(data[-BLOCK:], 0, 100).rstrip(b"\x00") == b"badname"


def test_big_ids_sizes_and_times_go_to_pax() -> None:
    data = encode_header(TarHeader(name=b"f", uid=3_000_000, gid=7, size=1, mtime_ns=9_000_000_000 * 10**9))
    records = data[BLOCK:2 * BLOCK].rstrip(b"\x00")
    assert records == b"20 mtime=9000000000\n15 uid=3000000\n"  # sorted by key
    main = data[2 * BLOCK:]
    assert field(main, 108, 8) == b"0000000\x00"  # numbers that do not fit: zero, value in PAX
    assert field(main, 136, 12) == b"00000000000\x00"
    ti = read_back(data + bytes(BLOCK))[0]
    assert (ti.uid, ti.gid, ti.mtime) == (3_000_000, 7, 9_000_000_000)


def test_xattrs_force_pax_sorted_by_key() -> None:
    hdr = TarHeader(name=b"f", mtime_ns=MTIME, pax_records={
        b"SCHILY.xattr.user.b": b"2", b"SCHILY.xattr.security.capability": b"\x01\x00",
        b"SCHILY.xattr.user.a": b""})
    data = encode_header(hdr)
    records = data[BLOCK:2 * BLOCK].rstrip(b"\x00")
    assert records == (b"39 SCHILY.xattr.security.capability=\x01\x00\n"
                       b"24 SCHILY.xattr.user.a=\n25 SCHILY.xattr.user.b=2\n")
    assert field(data, 0, 100).rstrip(b"\x00") == b"PaxHeaders.0/f"


def test_pax_records_cannot_override_basic_keys() -> None:
    records = {b"path": b"evil", b"user.x": b"1"}
    data = encode_header(TarHeader(name=b"f", mtime_ns=MTIME, pax_records=records))
    assert b"evil" not in data
    assert b"12 user.x=1\n" in data


def test_invalid_pax_record_is_refused() -> None:
    with pytest.raises(HeaderError):
        encode_header(TarHeader(name=b"f", pax_records={b"a=b": b"1"}))


def test_huge_device_numbers_need_gnu_base256() -> None:
    hdr = TarHeader(name=b"c" * 120, typeflag=TYPE_CHAR, mode=0o600, devmajor=1 << 22, devminor=5,
                    mtime_ns=MTIME)
    data = encode_header(hdr)
    longname, name_data, main = data[:BLOCK], data[BLOCK:2 * BLOCK], data[2 * BLOCK:]
    assert longname[156:157] == b"L"
    assert field(longname, 0, 100).rstrip(b"\x00") == b"././@LongLink"
    assert field(longname, 257, 8) == b"ustar  \x00"
    assert name_data.rstrip(b"\x00") == b"c" * 120
    assert field(main, 257, 8) == b"ustar  \x00"
    assert field(main, 329, 8) == b"\x80\x00\x00\x00\x00\x40\x00\x00"
    assert field(main, 337, 8) == b"0000005\x00"
    ti = read_back(data)[0]
    assert (ti.name, ti.devmajor, ti.devminor) == ("c" * 120, 1 << 22, 5)


def test_long_symlink_target_uses_pax_linkpath() -> None:
    target = b"t" * 150
    data = encode_header(TarHeader(name=b"l", typeflag=TYPE_SYMLINK, linkname=target, mtime_ns=MTIME))
    assert b"164 linkpath=" + target + b"\n" in data
    assert read_back(data)[0].linkname == target.decode()


def test_unknown_format_rounds_mtime_half_up_and_drops_atime_ctime() -> None:
    hdr = TarHeader(name=b"f", mtime_ns=MTIME + 500_000_000, atime_ns=MTIME, ctime_ns=MTIME)
    blk = encode_header(hdr)
    assert len(blk) == BLOCK
    assert field(blk, 136, 12) == b"%011o\x00" % (1_700_000_001)
    assert field(encode_header(TarHeader(name=b"f", mtime_ns=MTIME + 499_999_999)), 136, 12) == (
        b"%011o\x00" % 1_700_000_000)
    assert hdr.mtime_ns == MTIME + 500_000_000  # the caller's header is not modified


def test_explicit_pax_keeps_sub_second_times() -> None:
    hdr = TarHeader(name=b"f", mtime_ns=MTIME + 123_450_000, atime_ns=MTIME, format=Format.PAX)
    data = encode_header(hdr)
    records = data[BLOCK:2 * BLOCK].rstrip(b"\x00")
    assert records == b"20 atime=1700000000\n26 mtime=1700000000.12345\n"
    assert read_back(data)[0].mtime == pytest.approx(1_700_000_000.12345)


def test_negative_times() -> None:
    blk = encode_header(TarHeader(name=b"f", mtime_ns=-100 * 10**9))
    assert len(blk) == 3 * BLOCK and b"14 mtime=-100\n" in blk
    frac = encode_header(TarHeader(name=b"f", mtime_ns=-1_500_000_000, format=Format.PAX))
    assert b"14 mtime=-1.5\n" in frac


def test_regular_file_name_may_not_end_in_slash() -> None:
    with pytest.raises(HeaderError, match="trailing slash"):
        encode_header(TarHeader(name=b"f/", typeflag=TYPE_REG))


def test_header_only_types_carry_no_data() -> None:
    assert TarHeader(name=b"d/", typeflag=TYPE_DIR, size=10).data_size == 0
    assert TarHeader(name=b"l", typeflag=TYPE_LINK, size=10).data_size == 0
    assert TarHeader(name=b"b", typeflag=TYPE_BLOCK).data_size == 0
    assert TarHeader(name=b"f", size=10).data_size == 10


def test_padding() -> None:
    assert padding(0) == b""
    assert padding(1) == bytes(511)
    assert padding(512) == b""
    assert padding(513) == bytes(511)


def test_written_archive_reads_back_with_content() -> None:
    out = io.BytesIO()
    for hdr, content in [
        (TarHeader(name=b"dir/", typeflag=TYPE_DIR, mode=0o755, mtime_ns=MTIME), b""),
        (TarHeader(name=b"dir/file", mode=0o4755, size=3, mtime_ns=MTIME), b"abc"),
        (TarHeader(name=b"dir/hard", typeflag=TYPE_LINK, linkname=b"dir/file", mtime_ns=MTIME), b""),
    ]:
        out.write(encode_header(hdr) + content + padding(hdr.data_size))
    out.write(END_OF_ARCHIVE)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        members = tf.getmembers()
        assert [(m.name, m.type, m.mode) for m in members] == [
            ("dir", tarfile.DIRTYPE, 0o755), ("dir/file", tarfile.REGTYPE, 0o4755),
            ("dir/hard", tarfile.LNKTYPE, 0o000)]
        f = tf.extractfile(members[1])
        assert f is not None and f.read() == b"abc"


def test_fast_path_agrees_with_the_general_encoder() -> None:
    """Random plain headers: the one-pack USTAR shortcut must give the general path's bytes."""
    import random

    from containers_storage.archive import tarwrite

    rnd = random.Random(7)
    checked = 0
    for _ in range(3000):
        typeflag = rnd.choice([TYPE_REG, TYPE_DIR, TYPE_SYMLINK, TYPE_LINK, TYPE_CHAR, TYPE_BLOCK, TYPE_REGA])
        name = bytes(rnd.choice(b"abc/._-\x7f") for _ in range(rnd.choice([0, 1, 50, 99, 100, 101])))
        if typeflag == TYPE_DIR and rnd.random() < 0.5:
            name += b"/"
        hdr = TarHeader(
            name=name, typeflag=typeflag, mode=rnd.choice([0, 0o644, 0o4755, 0o7777, 1 << 21]),
            uid=rnd.choice([0, 1000, (1 << 21) - 1, 1 << 21]), gid=rnd.choice([0, 5, 1 << 21]),
            size=rnd.choice([0, 1, (1 << 33) - 1, 1 << 33]),
            mtime_ns=rnd.choice([0, MTIME, MTIME + 500_000_000, -1, (1 << 33) * 10**9]),
            linkname=b"t" * rnd.choice([0, 5, 100, 101]), uname=b"u" * rnd.choice([0, 32, 33]),
            devmajor=rnd.choice([0, 8, 1 << 21]), devminor=rnd.choice([0, 70000]))
        fast = tarwrite._fast_ustar(hdr)
        try:
            general = tarwrite._encode_general(hdr)
        except HeaderError:
            assert fast is None
            continue
        if fast is not None:
            assert fast == general, hdr
            checked += 1
    assert checked > 100  # enough plain headers were compared
