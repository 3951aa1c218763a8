"""tar-split: Go-identical JSON entries, reading them back, and byte-exact reassembly."""

from __future__ import annotations

import base64
import gzip
import io
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from containers_storage.archive.crc64 import Crc64
from containers_storage.archive.tarsplit import (
    FILE_TYPE,
    SEGMENT_TYPE,
    DuplicatePath,
    ReassemblyError,
    TarSplitWriter,
    clean_path,
    go_json_string,
    iter_entries,
    reassemble,
)
from containers_storage.errors import InvalidArchive


def _lines(writer_calls: list[tuple[str, tuple[object, ...]]]) -> list[bytes]:
    buf = io.BytesIO()
    w = TarSplitWriter(buf)
    for method, args in writer_calls:
        getattr(w, method)(*args)
    w.close()
    return gzip.decompress(buf.getvalue()).splitlines()


def split_tar(data: bytes, out: io.BytesIO) -> None:
    """A minimal tar disassembler: raw bytes around each member's content become segments."""
    w = TarSplitWriter(out)
    pos = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            w.add_segment(data[pos:m.offset_data])
            content = data[m.offset_data:m.offset_data + m.size] if m.isreg() else b""
            w.add_file(os.fsencode(m.name), len(content), Crc64(content).digest() if content else None)
            pos = m.offset_data + len(content)
    w.add_segment(data[pos:])
    w.close()


def make_layer(tmp_path: Path, members: list[tuple[str, bytes | None]],
               fmt: int = tarfile.PAX_FORMAT) -> tuple[bytes, Path, bytes]:
    """A tarball of the given files (None: a directory), its extraction, and its tar-split."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, content in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            if content is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                ti.size = len(content)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(content))
    data = buf.getvalue()
    root = tmp_path / "layer"
    root.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(root, filter="fully_trusted")
        else:  # extraction filters came in 3.11.4; Debian's 3.11.2 trusts the archive fully
            tf.extractall(root)
    ts = io.BytesIO()
    split_tar(data, ts)
    return data, root, ts.getvalue()


# --- writer -------------------------------------------------------------------------------------


def test_segment_line_is_gos_shape() -> None:
    assert _lines([("add_segment", (b"abc",))]) == [b'{"type":2,"payload":"YWJj","position":0}']


def test_empty_segment_has_empty_string_payload() -> None:
    assert _lines([("add_segment", (b"",))]) == [b'{"type":2,"payload":"","position":0}']


def test_file_line_with_size_and_crc() -> None:
    crc = Crc64(b"hello\n").digest()
    (line,) = _lines([("add_file", (b"./d/f", 6, crc))])
    assert line == b'{"type":1,"name":"./d/f","size":6,"payload":"%s","position":0}' % base64.b64encode(crc)


def test_empty_file_omits_size_and_has_null_payload() -> None:
    assert _lines([("add_file", (b"./", 0, None))]) == [b'{"type":1,"name":"./","payload":null,"position":0}']


def test_positions_count_every_entry() -> None:
    lines = _lines([("add_segment", (b"a",)), ("add_file", (b"x", 0, None)), ("add_segment", (b"b",))])
    assert [line.rsplit(b'"position":', 1)[1] for line in lines] == [b"0}", b"1}", b"2}"]


def test_names_are_escaped_as_go_json() -> None:
    (line,) = _lines([("add_file", ('a<b>&"\\\n\t\x01\u2028é'.encode(), 0, None))])
    assert line == ('{"type":1,"name":"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\t\\u0001\\u2028é",'
                    '"payload":null,"position":0}').encode()


def test_go_json_string_leaves_plain_text_alone() -> None:
    assert go_json_string("usr/lib/x86_64-linux-gnu/libc.so.6") == '"usr/lib/x86_64-linux-gnu/libc.so.6"'
    assert go_json_string("\x7f") == '"\x7f"'  # DEL is not escaped by Go


def test_non_utf8_name_goes_to_name_raw() -> None:
    (line,) = _lines([("add_file", (b"bad\xffname", 0, None))])
    assert line == b'{"type":1,"name_raw":"YmFk/25hbWU=","payload":null,"position":0}'


def test_duplicate_paths_are_refused_after_cleaning() -> None:
    w = TarSplitWriter(io.BytesIO())
    w.add_file(b"./a/b/", 0, None)
    with pytest.raises(DuplicatePath, match="duplicates of file paths not supported"):
        w.add_file(b"a//b", 0, None)


def test_close_keeps_output_open_and_is_idempotent() -> None:
    buf = io.BytesIO()
    w = TarSplitWriter(buf)
    w.add_segment(b"x" * 600_000)  # more than one internal batch
    w.close()
    w.close()
    assert not buf.closed
    assert len(gzip.decompress(buf.getvalue())) > 600_000


@pytest.mark.parametrize(("name", "clean"), [
    (b"./usr/bin/", b"usr/bin"), (b"usr//bin", b"usr/bin"), (b"/a/../b", b"/b"), (b"../a", b"../a"),
    (b"a/./b/..", b"a"), (b"", b"."), (b"./", b"."), (b"//x", b"/x"), (b".hidden/x", b".hidden/x"),
    (b"a/../../b", b"../b"), (b"./.wh..wh..opq", b".wh..wh..opq"),
])
def test_clean_path_matches_go_filepath_clean(name: bytes, clean: bytes) -> None:
    assert clean_path(name) == clean


# --- reader -------------------------------------------------------------------------------------


def test_iter_entries_round_trip() -> None:
    buf = io.BytesIO()
    with TarSplitWriter(buf) as w:
        w.add_segment(b"\x00header")
        w.add_file(b"bad\xff", 3, b"12345678")
        w.add_file(b"./a<b", 0, None)
    entries = list(iter_entries(io.BytesIO(buf.getvalue())))
    assert [(e.type, e.name, e.size, e.payload, e.position) for e in entries] == [
        (SEGMENT_TYPE, b"", 0, b"\x00header", 0),
        (FILE_TYPE, b"bad\xff", 3, b"12345678", 1),
        (FILE_TYPE, b"./a<b", 0, None, 2),
    ]


def test_reader_accepts_blank_lines_and_any_field_order() -> None:
    text = b'\n{"position":0,"payload":"YQ==","type":2}\n\n{"name":"x","type":1,"payload":null}\n'
    entries = list(iter_entries(io.BytesIO(gzip.compress(text))))
    assert [(e.type, e.name, e.payload) for e in entries] == [(2, b"", b"a"), (1, b"x", None)]


def test_reader_refuses_duplicates_and_junk() -> None:
    dup = b'{"type":1,"name":"a","payload":null}\n{"type":1,"name":"./a","payload":null}\n'
    with pytest.raises(DuplicatePath):
        list(iter_entries(io.BytesIO(gzip.compress(dup))))
    with pytest.raises(InvalidArchive):
        list(iter_entries(io.BytesIO(gzip.compress(b'{"type":2,"payload":\n'))))
    with pytest.raises(InvalidArchive):
        list(iter_entries(io.BytesIO(gzip.compress(b'{"type":2,"payload":"!!!"}\n'))))


# --- reassembly ---------------------------------------------------------------------------------

MEMBERS: list[tuple[str, bytes | None]] = [
    ("./", None),
    ("./etc/", None),
    ("./etc/hosts", b"127.0.0.1 localhost\n"),
    ("./empty", b""),
    ("./big.bin", os.urandom(700_000)),  # above the sendfile threshold
    ("./" + "long/" * 30 + "name.txt", b"long name"),
    ("./héllo wörld", b"utf-8 name"),
    ("./a<b&c>", b"html-ish name"),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_reassemble_to_a_file_is_byte_identical(tmp_path: Path, fmt: int) -> None:
    data, root, ts = make_layer(tmp_path, MEMBERS, fmt)
    out_path = tmp_path / "out.tar"
    with open(out_path, "wb") as out:
        n = reassemble(io.BytesIO(ts), str(root), out)
    assert n == len(data)
    assert out_path.read_bytes() == data


@pytest.mark.parametrize(("verify_crc", "readahead"), [(True, 32), (False, 32), (False, 1), (True, 1)])
def test_reassemble_to_memory_is_byte_identical(tmp_path: Path, verify_crc: bool, readahead: int) -> None:
    data, root, ts = make_layer(tmp_path, MEMBERS)
    out = io.BytesIO()
    assert reassemble(io.BytesIO(ts), str(root), out, verify_crc=verify_crc, readahead=readahead) == len(data)
    assert out.getvalue() == data


def test_reassemble_after_python_buffered_writes(tmp_path: Path) -> None:
    """Bytes the caller wrote into a buffered file object before us come first."""
    data, root, ts = make_layer(tmp_path, MEMBERS)
    out_path = tmp_path / "out.tar"
    with open(out_path, "wb") as out:
        out.write(b"PREFIX")
        reassemble(io.BytesIO(ts), str(root), out)
    assert out_path.read_bytes() == b"PREFIX" + data


def test_many_files_cross_parse_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from containers_storage.archive import tarsplit

    monkeypatch.setattr(tarsplit, "_READ_SIZE", 500)  # lines split across many reads
    members: list[tuple[str, bytes | None]] = [(f"./d{i // 100}/f{i}", b"%d" % i) for i in range(400)]
    data, root, ts = make_layer(tmp_path, members)
    out = io.BytesIO()
    reassemble(io.BytesIO(ts), str(root), out, readahead=8)
    assert out.getvalue() == data


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    _data, root, ts = make_layer(tmp_path, MEMBERS)
    (root / "etc" / "hosts").unlink()
    with pytest.raises(ReassemblyError, match="etc/hosts") as info:
        reassemble(io.BytesIO(ts), str(root), io.BytesIO())
    assert (info.value.problem, info.value.file_name) == ("missing", b"./etc/hosts")


@pytest.mark.parametrize("new_content", [b"short", b"127.0.0.1 localhost\nand more\n"])
def test_resized_file_is_an_error_naming_it(tmp_path: Path, new_content: bytes) -> None:
    _data, root, ts = make_layer(tmp_path, MEMBERS)
    (root / "etc" / "hosts").write_bytes(new_content)
    with pytest.raises(ReassemblyError, match="etc/hosts") as info:
        reassemble(io.BytesIO(ts), str(root), io.BytesIO(), verify_crc=False)
    assert (info.value.problem, info.value.file_name) == ("content", b"./etc/hosts")


def test_changed_content_fails_the_crc_check(tmp_path: Path) -> None:
    data, root, ts = make_layer(tmp_path, MEMBERS)
    (root / "etc" / "hosts").write_bytes(b"127.0.0.1 localhosT\n")
    with pytest.raises(ReassemblyError, match=r"file integrity checksum failed for '\./etc/hosts'") as info:
        reassemble(io.BytesIO(ts), str(root), io.BytesIO())
    assert (info.value.problem, info.value.file_name) == ("content", b"./etc/hosts")
    # Without the CRC check only sizes are compared, so a same-size edit goes through.
    out = io.BytesIO()
    reassemble(io.BytesIO(ts), str(root), out, verify_crc=False)
    assert out.getvalue() != data and len(out.getvalue()) == len(data)


def test_big_file_crc_is_checked_too(tmp_path: Path) -> None:
    _data, root, ts = make_layer(tmp_path, MEMBERS)
    with open(root / "big.bin", "r+b") as f:
        f.seek(600_000)
        old = f.read(1)
        f.seek(600_000)  # the read moved the position: flip the byte that was read
        f.write(bytes([old[0] ^ 0xFF]))
    with open(tmp_path / "out.tar", "wb") as out, pytest.raises(ReassemblyError, match=r"big\.bin"):
        reassemble(io.BytesIO(ts), str(root), out)


def test_directory_where_a_file_was_is_an_error(tmp_path: Path) -> None:
    _data, root, ts = make_layer(tmp_path, MEMBERS)
    (root / "etc" / "hosts").unlink()
    (root / "etc" / "hosts").mkdir()
    with pytest.raises(ReassemblyError, match="hosts"):
        reassemble(io.BytesIO(ts), str(root), io.BytesIO())


def test_reads_stay_inside_the_layer(tmp_path: Path) -> None:
    """A symlink in the layer or a '..' name cannot make reassembly read a host file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"SECRET")
    root = tmp_path / "layer"
    root.mkdir()
    (root / "link").symlink_to(outside)  # absolute target: resolved inside the root instead
    for name in (b"link/secret", b"../outside/secret", b"/../../outside/secret"):
        buf = io.BytesIO()
        with TarSplitWriter(buf) as w:
            w.add_file(name, 6, Crc64(b"SECRET").digest())
        out = io.BytesIO()
        with pytest.raises(ReassemblyError):
            reassemble(io.BytesIO(buf.getvalue()), str(root), out, verify_crc=False)
        assert b"SECRET" not in out.getvalue()


def test_files_missing_from_the_layer_come_from_lowers(tmp_path: Path) -> None:
    data, root, ts = make_layer(tmp_path, MEMBERS)
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    os.rename(root / "etc" / "hosts", lower / "etc" / "hosts")
    out = io.BytesIO()
    reassemble(io.BytesIO(ts), str(root), out, lowers=[str(lower)])
    assert out.getvalue() == data


def test_unknown_entry_types_are_ignored_and_empty_files_not_opened(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    root.mkdir()
    text = (b'{"type":2,"payload":"YQ==","position":0}\n'
            b'{"type":7,"payload":"Yg==","position":1}\n'
            b'{"type":1,"name":"does-not-exist","payload":null,"position":2}\n'
            b'{"type":2,"payload":"Yw==","position":3}\n')
    out = io.BytesIO()
    assert reassemble(io.BytesIO(gzip.compress(text)), str(root), out) == 2
    assert out.getvalue() == b"ac"


def test_duplicate_file_entries_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    root.mkdir()
    text = b'{"type":1,"name":"./x","payload":null}\n{"type":1,"name":"x/","payload":null}\n'
    with pytest.raises(DuplicatePath):
        reassemble(io.BytesIO(gzip.compress(text)), str(root), io.BytesIO())


def test_escaped_and_raw_names_are_found(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    root.mkdir()
    (root / "a<b").write_bytes(b"html")
    (root / os.fsdecode(b"bad\xff")).write_bytes(b"raw")
    buf = io.BytesIO()
    with TarSplitWriter(buf) as w:
        w.add_file(b"a<b", 4, Crc64(b"html").digest())
        w.add_file(b"bad\xff", 3, Crc64(b"raw").digest())
    out = io.BytesIO()
    reassemble(io.BytesIO(buf.getvalue()), str(root), out)
    assert out.getvalue() == b"htmlraw"


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "bad deflate"])
def test_corrupt_gzip_is_an_invalid_archive(tmp_path: Path, damage: str) -> None:
    data = gzip.compress(b'{"type":2,"payload":"YQ==","position":0}\n' * 1000)
    bad = {"truncated": data[: len(data) // 2], "not gzip": b"junk" * 10,
           "bad deflate": data[:20] + bytes(50) + data[70:]}[damage]
    with pytest.raises(InvalidArchive, match="corrupt tar-split"):
        reassemble(io.BytesIO(bad), str(tmp_path), io.BytesIO())
    with pytest.raises(InvalidArchive, match="corrupt tar-split"):
        list(iter_entries(io.BytesIO(bad)))


def test_reassemble_into_a_pipe(tmp_path: Path) -> None:
    """stdout piped to another process: partial writes and sendfile into a pipe both work."""
    data, root, ts = make_layer(tmp_path, MEMBERS)
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(stdout.read()))
    reader.start()
    reassemble(io.BytesIO(ts), str(root), proc.stdin)
    proc.stdin.close()
    reader.join()
    proc.wait()
    assert received[0] == data
