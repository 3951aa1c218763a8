"""The tar-split held to the TOC entry by entry (Go's ensureTOCMatchesTarSplit): the C scanner
(``archive/chunked/_tocmatch.c``) against the Python path, on the same layers and the same lies.

The C code only ever accepts what the Python code accepts and hands everything else to it, so
both must end the same way on every input here: the same entries, or the same error text.  The
plain shapes (Go's packer lines, one ustar or GNU header) must really be taken in C, or the
comparison would prove nothing."""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile
from collections.abc import Callable

import pytest

from chunkedtools import Blob
from containers_storage.archive.chunked import manifest, reuse
from containers_storage.archive.chunked import toc as _toc
from containers_storage.archive.chunked.manifest import TarSplitFile, check_toc_matches_tar_split
from containers_storage.archive.chunked.toc import parse_toc

MTIME = 1_700_000_000

needs_c = pytest.mark.skipif(
    manifest._tocmatch_scanner() is None,
    reason="the _tocmatch extension is not built (or CONTAINERS_STORAGE_PURE_PYTHON=1)")


def _tar(fmt: int, long_names: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name: str, data: bytes | None = None, **kw: object) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.mode = 0o644
            for k, v in kw.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add("etc", type=tarfile.DIRTYPE, mode=0o755)
        add("etc/a", b"alpha\n" * 300, uid=1000, gid=1001, mode=0o4755)
        add("etc/empty", b"")
        add("etc/l", type=tarfile.SYMTYPE, linkname="a", mode=0o777)
        add("etc/h", type=tarfile.LNKTYPE, linkname="etc/a")
        add("dev", type=tarfile.DIRTYPE, mode=0o755)
        add("dev/c", type=tarfile.CHRTYPE, devmajor=3, devminor=4, mode=0o600)
        add("dev/b", type=tarfile.BLKTYPE, devmajor=8, devminor=1, mode=0o600)
        add("dev/f", type=tarfile.FIFOTYPE)
        add("tmp", type=tarfile.DIRTYPE, mode=0o1777)
        deep = "usr/" + "d" * 90 + "/" + "n" * 60  # a ustar prefix, or a long name
        add("usr", type=tarfile.DIRTYPE, mode=0o755)
        add("usr/" + "d" * 90, type=tarfile.DIRTYPE, mode=0o755)
        add(deep, b"deep")
        if long_names:
            add("usr/" + "x" * 200, b"long")
        add("etc/z", b"zeta", mtime=MTIME + 7)
    return buf.getvalue()


def _xattr_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x")
        info.mtime = MTIME
        info.size = 2
        info.pax_headers = {"SCHILY.xattr.user.k": "v"}
        tar.addfile(info, io.BytesIO(b"ab"))
        plain = tarfile.TarInfo("y")
        plain.mtime = MTIME
        plain.size = 1
        tar.addfile(plain, io.BytesIO(b"c"))
    return buf.getvalue()


_BLOBS: dict[str, Blob] = {}


def _blob(kind: str) -> Blob:
    if kind not in _BLOBS:
        tar = {"gnu": lambda: _tar(tarfile.GNU_FORMAT), "ustar": lambda: _tar(tarfile.USTAR_FORMAT, False),
               "pax": lambda: _tar(tarfile.PAX_FORMAT), "xattr": _xattr_tar}[kind]()
        _BLOBS[kind] = Blob(tar)
    return _BLOBS[kind]


def _run(toc: dict[str, object], ts: bytes, data_end: int) -> tuple[str, object]:
    """What checking the two against each other ends with: the files and size, or the error."""
    try:
        parsed = parse_toc(json.dumps(toc).encode(), data_end)
        tsf = TarSplitFile(io.BytesIO(ts))
        check_toc_matches_tar_split(parsed, tsf)
    except Exception as e:  # the outcome compared, whatever it is
        return "error", f"{type(e).__name__}: {e}"
    return "ok", (tsf.tar_size, tsf.files)


def _both(toc: dict[str, object], ts: bytes, data_end: int, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[str, object]:
    c = _run(toc, ts, data_end)
    with monkeypatch.context() as m:
        m.setattr(_toc, "accelerator", lambda: None)
        python = _run(toc, ts, data_end)
    assert c == python
    return c


def _lines(ts: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in ts.splitlines() if line.strip()]


def _packed(entries: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in entries)


def _entry(toc: dict[str, object], name: str) -> dict[str, object]:
    return next(e for e in toc["entries"] if e["name"] == name)  # type: ignore[attr-defined]


def _header_of(entries: list[dict[str, object]], name: str) -> int:
    """The index of the segment holding the header of file entry ``name``."""
    i = next(i for i, e in enumerate(entries) if e["type"] == 1 and e.get("name") == name)
    while entries[i - 1]["type"] != 2 or not entries[i - 1].get("payload"):
        i -= 1
    return i - 1


def _patch_header(entries: list[dict[str, object]], name: str, at: int, value: bytes,
                  fix_checksum: bool = True) -> None:
    """Overwrite bytes of ``name``'s header block (in the last 512 bytes of its segment)."""
    i = _header_of(entries, name)
    raw = bytearray(base64.b64decode(str(entries[i]["payload"])))
    start = len(raw) - 512
    raw[start + at : start + at + len(value)] = value
    if fix_checksum:
        raw[start + 148 : start + 156] = b" " * 8
        raw[start + 148 : start + 156] = b"%06o\x00 " % sum(raw[start : start + 512])
    entries[i]["payload"] = base64.b64encode(bytes(raw)).decode()


Lie = Callable[[dict[str, object], list[dict[str, object]]], object]

_TOC_LIES: dict[str, Lie] = {
    "none": lambda toc, ts: None,
    "mode": lambda toc, ts: _entry(toc, "etc/a").update(mode=0o755),
    "uid": lambda toc, ts: _entry(toc, "etc/a").update(uid=0),
    "gid": lambda toc, ts: _entry(toc, "etc/a").update(gid=7),
    "size of a directory": lambda toc, ts: _entry(toc, "etc/").update(size=4096),
    "devmajor": lambda toc, ts: _entry(toc, "dev/c").update(devMajor=5),
    "devminor": lambda toc, ts: _entry(toc, "dev/b").update(devMinor=0),
    "type": lambda toc, ts: _entry(toc, "dev/f").update(type="char"),
    "linkname": lambda toc, ts: _entry(toc, "etc/l").update(linkName="b"),
    "hard link target": lambda toc, ts: _entry(toc, "etc/h").update(linkName="etc/z"),
    "modtime": lambda toc, ts: _entry(toc, "etc/z").update(modtime="2023-11-14T22:13:21Z"),
    "modtime in another zone": lambda toc, ts: _entry(toc, "etc/z").update(
        modtime="2023-11-14T23:13:27+01:00"),
    "modtime with nanoseconds": lambda toc, ts: _entry(toc, "etc/z").update(
        modtime="2023-11-14T22:13:27.000000000Z"),
    "no modtime": lambda toc, ts: _entry(toc, "etc/z").pop("modtime"),
    "accesstime": lambda toc, ts: _entry(toc, "etc/a").update(accesstime="2023-11-14T22:13:20Z"),
    "changetime": lambda toc, ts: _entry(toc, "etc/a").update(changetime="2023-11-14T22:13:20Z"),
    "xattrs": lambda toc, ts: _entry(toc, "etc/a").update(xattrs={"user.k": "dg=="}),
    "missing entry": lambda toc, ts: toc["entries"].remove(_entry(toc, "dev/f")),  # type: ignore[attr-defined]
    "extra entry": lambda toc, ts: toc["entries"].append(  # type: ignore[attr-defined]
        {"type": "dir", "name": "extra", "mode": 0o755}),
}


def _edit_line(ts: list[dict[str, object]], who: str, **kw: object) -> None:
    next(e for e in ts if e["type"] == 1 and e.get("name") == who).update(kw)


_TS_LIES: dict[str, Lie] = {
    "file size": lambda toc, ts: _edit_line(ts, "etc/z", size=5),
    "entry type": lambda toc, ts: _edit_line(ts, "etc/l", type=3),
    "checksum not 8 bytes": lambda toc, ts: _edit_line(ts, "etc/a", payload="AAAA"),
    "name_raw": lambda toc, ts: _edit_line(ts, "etc/z", name_raw=base64.b64encode(b"etc/z").decode()),
    "another name": lambda toc, ts: _edit_line(ts, "etc/z", name="etc/y"),
    "header checksum": lambda toc, ts: _patch_header(ts, "etc/a", 0, b"etc/b", fix_checksum=False),
    "header renamed": lambda toc, ts: _patch_header(ts, "etc/z", 0, b"etc/y"),
    "header mode": lambda toc, ts: _patch_header(ts, "etc/a", 100, b"0000777"),
    "header mode with 8": lambda toc, ts: _patch_header(ts, "etc/a", 100, b"0000788"),
    "header mode base-256": lambda toc, ts: _patch_header(ts, "etc/a", 100,
                                                          b"\x80" + (0o4755).to_bytes(7, "big")),
    "header typeflag NUL": lambda toc, ts: _patch_header(ts, "etc/z", 156, b"\x00"),
    "header typeflag g": lambda toc, ts: _patch_header(ts, "etc/z", 156, b"g"),
    "header GNU atime": lambda toc, ts: _patch_header(ts, "etc/z", 345, b"%011o\x00" % (MTIME + 9)),
    "header GNU ctime": lambda toc, ts: _patch_header(ts, "etc/z", 357, b"14524540550\x00"),
    "header not ustar": lambda toc, ts: _patch_header(ts, "etc/a", 257, b"xxxxxxxx"),
    "header mtime huge": lambda toc, ts: _patch_header(ts, "etc/z", 136, b"77777777777\x00"),
    "header spaces in octal": lambda toc, ts: _patch_header(ts, "etc/a", 100, b" 0 644\x00\x00"),
}


def _cases(blob: Blob, lie: Lie) -> tuple[dict[str, object], bytes]:
    toc = json.loads(json.dumps(blob.toc))
    ts = _lines(blob.tar_split)
    lie(toc, ts)
    return toc, _packed(ts)


@needs_c
@pytest.mark.parametrize("kind", ["gnu", "ustar", "pax"])
@pytest.mark.parametrize("lie", sorted(_TOC_LIES))
def test_toc_lies_end_alike(kind: str, lie: str, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = _blob(kind)
    toc, ts = _cases(blob, _TOC_LIES[lie])
    outcome, detail = _both(toc, ts, len(blob.data), monkeypatch)
    if lie in ("none", "modtime in another zone", "modtime with nanoseconds"):
        assert outcome == "ok", detail
    else:
        assert outcome == "error" and "inconsistent" in str(detail), detail


@needs_c
@pytest.mark.parametrize("kind", ["gnu", "ustar"])
@pytest.mark.parametrize("lie", sorted(_TS_LIES))
def test_tar_split_lies_end_alike(kind: str, lie: str, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = _blob(kind)
    toc, ts = _cases(blob, _TS_LIES[lie])
    if lie == "header GNU atime":  # the TOC saying the same: accepted, else refused
        _both(toc, ts, len(blob.data), monkeypatch)
        if kind == "gnu":
            _entry(toc, "etc/z")["accesstime"] = "2023-11-14T22:13:29Z"
    outcome, detail = _both(toc, ts, len(blob.data), monkeypatch)
    if lie in ("name_raw", "header mode base-256", "header typeflag NUL", "header not ustar") or (
            lie == "header GNU ctime" and kind == "ustar") or (  # (in the prefix field, after its NUL)
            lie == "header GNU atime" and kind == "gnu"):
        assert outcome == "ok", detail
    else:
        assert outcome == "error", detail


@needs_c
def test_xattrs_and_other_line_shapes_end_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = _blob("xattr")
    toc = json.loads(json.dumps(blob.toc))
    assert _both(toc, blob.tar_split, len(blob.data), monkeypatch)[0] == "ok"
    _entry(toc, "x")["xattrs"] = {"user.k": "dw=="}
    outcome, detail = _both(toc, blob.tar_split, len(blob.data), monkeypatch)
    assert outcome == "error" and "xattrs" in str(detail)
    # Lines in shapes Go's packer does not write: JSON parsers decide, the same in both.
    good = _blob("gnu")
    text = good.tar_split.decode()
    variants = {
        "escaped slash": (text.replace('"name":"etc/a"', '"name":"etc\\/a"'), "ok"),
        "spaces": (text.replace('{"type":2,', '{ "type": 2,'), "ok"),
        "blank lines": (text.replace("\n", "\n\n  \n"), "ok"),
        "carriage returns": (text.replace("\n", "\r\n"), "ok"),
        "no newline at the end": (text.rstrip("\n"), "ok"),
        "leading zero": (re.sub(r'"position":(\d+)}', r'"position":0\1}', text, count=3), "error"),
        "payload not base64": (text.replace('{"type":2,"payload":"', '{"type":2,"payload":"*', 1), "any"),
        "unpadded base64": (re.sub(r'"payload":"([A-Za-z0-9+/]*)=+"', r'"payload":"\1"', text, count=2),
                            "any"),
        "not JSON": (text.replace("}\n", "\n", 1), "error"),
        "size as text": (text.replace('"size":', '"size":"', 1).replace(',"payload"', '","payload"', 1),
                         "error"),
    }
    for what, (ts, want) in variants.items():
        outcome, detail = _both(good.toc, ts.encode(), len(good.data), monkeypatch)
        assert want == "any" or outcome == want, (what, detail)


@needs_c
@pytest.mark.parametrize("kind", ["gnu", "ustar"])
def test_plain_lines_and_headers_are_taken_in_c(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the GNU long names go to Python (two in the GNU tar; the ustar one has a prefix
    instead); every other line and header is checked in C."""
    blob = _blob(kind)
    calls = {"line": 0, "header": 0}
    decode, header = manifest._decode_line, manifest._header

    def counted_line(line: bytes) -> object:
        calls["line"] += 1
        return decode(line)

    def counted_header(*args: object) -> object:
        calls["header"] += 1
        return header(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(manifest, "_decode_line", counted_line)
    monkeypatch.setattr(manifest, "_header", counted_header)
    outcome, detail = _run(blob.toc, blob.tar_split, len(blob.data))
    assert outcome == "ok", detail
    assert calls == {"line": 0, "header": 2 if kind == "gnu" else 0}


def test_the_python_path_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension (or with CONTAINERS_STORAGE_PURE_PYTHON=1) the same checks run."""
    monkeypatch.setattr(manifest, "_tocmatch_scanner", lambda: None)
    blob = _blob("gnu")
    outcome, detail = _run(blob.toc, blob.tar_split, len(blob.data))
    assert outcome == "ok", detail
    toc = json.loads(json.dumps(blob.toc))
    _entry(toc, "etc/a")["mode"] = 0o600
    outcome, detail = _run(toc, blob.tar_split, len(blob.data))
    assert outcome == "error" and "mismatch of mode" in str(detail), detail


def test_pure_python_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERS_STORAGE_PURE_PYTHON", "1")
    assert manifest._tocmatch_scanner() is None


# -- TOC entries made in C --------------------------------------------------------------------

_DIGEST = "sha256:" + "ab" * 32

_RAW_ENTRIES: dict[str, dict[str, object]] = {
    "plain file": {"type": "reg", "name": "a", "mode": 420, "size": 3, "modtime": "2023-11-14T22:13:20Z",
                   "digest": _DIGEST, "offset": 10, "endOffset": 20},
    "empty file": {"type": "reg", "name": "e"},
    "empty file, digest null": {"type": "reg", "name": "e", "digest": None},
    "every field": {"type": "symlink", "name": "l", "linkName": "a", "mode": 511, "uid": 4294967295,
                    "gid": 1, "modtime": "x", "accesstime": "y", "changetime": "z", "devMajor": 1,
                    "devMinor": 2, "xattrs": {"user.k": "dg=="}, "chunkDigest": _DIGEST,
                    "chunkType": "zeros", "chunkSize": 5, "chunkOffset": 6},
    "nulls": {"type": "dir", "name": "d", "linkName": None, "modtime": None, "xattrs": None},
    "other key case": {"Type": "dir", "NAME": "d", "Mode": 493},
    "unknown key": {"type": "dir", "name": "d", "color": "red"},
    "bool mode": {"type": "dir", "name": "d", "mode": True},
    "float size": {"type": "reg", "name": "f", "size": 1.0},
    "negative uid": {"type": "dir", "name": "d", "uid": -1},
    "uid beyond 32 bits": {"type": "dir", "name": "d", "uid": 1 << 32},
    "offset of 2**63": {"type": "dir", "name": "d", "offset": 1 << 63},
    "huge offset": {"type": "dir", "name": "d", "offset": 1 << 80},
    "unknown type": {"type": "sock", "name": "s"},
    "type not a string": {"type": 1, "name": "s"},
    "no name": {"type": "dir"},
    "empty name": {"type": "dir", "name": ""},
    "NUL in name": {"type": "dir", "name": "a\x00b"},
    "NUL in link": {"type": "symlink", "name": "l", "linkName": "a\x00"},
    "time not a string": {"type": "dir", "name": "d", "modtime": 5},
    "bad digest": {"type": "reg", "name": "f", "size": 1, "digest": "sha256:AB" + "ab" * 31},
    "digest with newline": {"type": "reg", "name": "f", "size": 1, "digest": _DIGEST + "\n"},
    "short digest": {"type": "reg", "name": "f", "size": 1, "digest": "sha256:ab"},
    "bad chunk digest": {"type": "chunk", "name": "f", "chunkDigest": "md5:x"},
    "bad chunk type": {"type": "chunk", "name": "f", "chunkType": "holes"},
    "xattrs not strings": {"type": "dir", "name": "d", "xattrs": {"user.k": 1}},
    "xattrs a list": {"type": "dir", "name": "d", "xattrs": ["a"]},
    "not an object": ["type", "dir"],  # type: ignore[dict-item]
}


def _parsed(raw: object) -> tuple[str, object]:
    try:
        entries = _toc._entries([raw])
    except Exception as e:  # the outcome compared, whatever it is
        return "error", f"{type(e).__name__}: {e}"
    return "ok", [(type(v).__name__, v) for e in entries for v in (getattr(e, a) for a in e.__slots__)]


@needs_c
@pytest.mark.parametrize("case", sorted(_RAW_ENTRIES))
def test_toc_entries_made_in_c_are_the_python_ones(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _RAW_ENTRIES[case]
    c = _parsed(raw)
    with monkeypatch.context() as m:
        m.setattr(_toc, "accelerator", lambda: None)
        python = _parsed(raw)
    assert c == python
    assert (c[0] == "ok") == (case in ("plain file", "empty file", "empty file, digest null", "every field",
                                        "nulls", "other key case", "unknown key")), c


@needs_c
def test_toc_entries_in_the_usual_shape_are_made_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    entry = _toc._entry

    def counted(obj: object, i: int) -> object:
        calls.append(i)
        return entry(obj, i)

    monkeypatch.setattr(_toc, "_entry", counted)
    names = ("plain file", "empty file", "every field", "nulls", "unknown key")
    raw: list[object] = [_RAW_ENTRIES[k] for k in names]
    assert len(_toc._entries(raw)) == 5
    assert calls == [4]  # only the one with a key Go's writers do not write


# -- files and chunks laid out in C -----------------------------------------------------------

def _chunked_blob() -> Blob:
    if "chunks" not in _BLOBS:
        from chunkedtools import file_contents, rootfs_tar

        _BLOBS["chunks"] = Blob(rootfs_tar(file_contents(2, 12)))
    return _BLOBS["chunks"]


def _files(toc: dict[str, object]) -> list[dict[str, object]]:
    return [e for e in toc["entries"] if e["type"] == "reg" and e.get("size")]  # type: ignore[attr-defined]


def _chunks(toc: dict[str, object]) -> list[dict[str, object]]:
    return [e for e in toc["entries"] if e["type"] == "chunk"]  # type: ignore[attr-defined]


_LAYOUT_LIES: dict[str, Lie] = {
    "none": lambda toc, _: None,
    "outside": lambda toc, data_end: _files(toc)[1].update(endOffset=int(data_end) + 4096),  # type: ignore[call-overload]
    "overlap": lambda toc, _: _files(toc)[1].update(offset=int(_files(toc)[0]["endOffset"]) - 1),  # type: ignore[call-overload]
    "backwards": lambda toc, _: _files(toc)[0].update(offset=_files(toc)[1]["offset"]),
    "chunk outside": lambda toc, _: _chunks(toc)[0].update(offset=10**12),
    "chunk offset": lambda toc, _: _chunks(toc)[0].update(chunkOffset=1),
    "chunk without size": lambda toc, _: _chunks(toc)[0].pop("chunkSize"),
    "chunk too big": lambda toc, _: _chunks(toc)[0].update(chunkSize=10**9),
    "chunk of another file": lambda toc, _: _chunks(toc)[0].update(name="etc/link"),
    "duplicate": lambda toc, _: toc["entries"].append(dict(_files(toc)[0])),  # type: ignore[attr-defined]
    "no digest": lambda toc, _: _files(toc)[2].pop("digest"),
    "empty file with a chunk": lambda toc, _: toc["entries"].extend(  # type: ignore[attr-defined]
        [{"type": "reg", "name": "z0"}, {"type": "chunk", "name": "z0", "offset": 1, "chunkSize": 1}]),
    "no end offsets": lambda toc, _: [e.pop("endOffset", None) for e in toc["entries"]],  # type: ignore[attr-defined]
    "unusual entry": lambda toc, _: _files(toc)[0].update(Color="red"),
}


@needs_c
@pytest.mark.parametrize("lie", sorted(_LAYOUT_LIES))
def test_files_and_chunks_laid_out_in_c_are_the_python_ones(lie: str, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    blob = _chunked_blob()
    toc = json.loads(json.dumps(blob.toc))
    _LAYOUT_LIES[lie](toc, len(blob.data))  # type: ignore[arg-type]

    def parsed() -> tuple[str, object]:
        try:
            t = parse_toc(json.dumps(toc).encode(), len(blob.data))
        except Exception as e:  # the outcome compared, whatever it is
            return "error", f"{type(e).__name__}: {e}"
        return "ok", ([[getattr(e, a) for a in e.__slots__] for e in t.entries],
                      [(f.entry.name, f.chunks) for f in t.files])

    c = parsed()
    with monkeypatch.context() as m:
        m.setattr(_toc, "accelerator", lambda: None)
        python = parsed()
    assert c == python
    assert (c[0] == "ok") == (lie in ("none", "no end offsets", "unusual entry")), c


@needs_c
def test_a_valid_toc_is_laid_out_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    file_chunks = _toc._file_chunks

    def counted(*args: object) -> object:
        calls.append(args)
        return file_chunks(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_toc, "_file_chunks", counted)
    blob = _chunked_blob()
    assert len(parse_toc(json.dumps(blob.toc).encode(), len(blob.data)).files) > 10
    assert calls == []


# -- the layer's bytes walked against the tar-split and TOC ------------------------------------

def _walk(toc: dict[str, object], ts: bytes, tar: bytes, data_end: int) -> tuple[str, object]:
    """What differ._Verifier makes of ``tar`` (in pieces of 1000 bytes), as apply-whole feeds it."""
    from containers_storage.archive.chunked.differ import _Verifier
    from containers_storage.archive.chunked.manifest import ZSTD_CHUNKED, LayerTOC

    manifest_bytes = json.dumps(toc).encode()
    layer = LayerTOC(ZSTD_CHUNKED, "", manifest_bytes, _toc.load_toc(manifest_bytes),
                     TarSplitFile(io.BytesIO(ts)), data_end)
    ended: list[bool] = []
    verifier = _Verifier(layer, lambda: ended.append(True))
    try:
        for i in range(0, len(tar), 1000):
            verifier(tar[i : i + 1000])
            assert (verifier.walker is not None) == (_toc.accelerator() is not None)
        assert not ended
        verifier(b"")  # the end, as the reading thread signals it
    except Exception as e:  # the outcome compared, whatever it is
        assert not ended  # (nothing is made of a layer that failed its check)
        return "error", f"{type(e).__name__}: {e}"
    assert ended == [True]
    assert layer.tar_split is not None
    return "ok", (layer.tar_split.tar_size, verifier.k)


def _gnu_tar() -> bytes:
    return _tar(tarfile.GNU_FORMAT)


def _digest_lie(toc: dict[str, object], ts: list[dict[str, object]], tar: bytearray) -> None:
    _entry(toc, "etc/a")["digest"] = "sha256:" + "1" * 64


def _crc_lie(toc: dict[str, object], ts: list[dict[str, object]], tar: bytearray) -> None:
    _edit_line(ts, "etc/z", payload=base64.b64encode(b"\0" * 8).decode())


def _content_lie(toc: dict[str, object], ts: list[dict[str, object]], tar: bytearray) -> None:
    at = tar.find(b"alpha\n")
    tar[at : at + 5] = b"omega"


def _header_lie(toc: dict[str, object], ts: list[dict[str, object]], tar: bytearray) -> None:
    at = tar.find(b"etc/z\0")
    tar[at + 4 : at + 5] = b"y"


def _order_lie(toc: dict[str, object], ts: list[dict[str, object]], tar: bytearray) -> None:
    entries: list[dict[str, object]] = toc["entries"]  # type: ignore[assignment]
    a = next(i for i, e in enumerate(entries) if e["name"] == "etc/a")
    z = next(i for i, e in enumerate(entries) if e["name"] == "etc/z")
    entries[a], entries[z] = entries[z], entries[a]


def _longer(toc: dict[str, object], ts: list[dict[str, object]], tar: bytearray) -> None:
    tar.extend(b"\0" * 2048)


def _shorter(toc: dict[str, object], ts: list[dict[str, object]], tar: bytearray) -> None:
    del tar[-3000:]


_WALK_LIES = {"none": lambda toc, ts, tar: None, "digest": _digest_lie, "crc": _crc_lie,
              "content": _content_lie, "header": _header_lie, "order": _order_lie, "longer": _longer,
              "shorter": _shorter}


@needs_c
@pytest.mark.parametrize("lie", sorted(_WALK_LIES))
def test_the_walk_in_c_ends_as_the_python_one(lie: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tar = _gnu_tar()
    blob = _blob("gnu")
    toc = json.loads(json.dumps(blob.toc))
    ts = _lines(blob.tar_split)
    raw = bytearray(tar)
    _WALK_LIES[lie](toc, ts, raw)
    c = _walk(toc, _packed(ts), bytes(raw), len(blob.data))
    with monkeypatch.context() as m:
        m.setattr(_toc, "accelerator", lambda: None)
        python = _walk(toc, _packed(ts), bytes(raw), len(blob.data))
    assert c == python
    assert (c[0] == "ok") == (lie == "none"), c


@needs_c
def test_c_types_let_the_collector_free_cycles_through_them() -> None:
    """A Walker or Scanner holding a bound method of its owner (as _Verifier's walker holds
    ``self._fail``) must not keep that owner, and its TOC, alive."""
    import gc
    import hashlib
    import weakref

    from containers_storage.archive.crc64 import crc64

    accel = _toc.accelerator()

    class Owner:
        def fail(self, *args: object) -> None:
            pass

    owner = Owner()
    owner.walker = accel.Walker(iter(()), [], hashlib.sha256, crc64, owner.fail)  # type: ignore[attr-defined]
    owner.scanner = accel.Scanner({}, owner.fail, owner.fail)  # type: ignore[attr-defined]
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="not initialized"):
        accel.Walker.__new__(accel.Walker).take(b"x")


def _two_layers_indexed(manifest: bytes, python: bool, monkeypatch: pytest.MonkeyPatch) -> reuse.LayerIndex:
    """A reuse index of two layers with this TOC, made in C or (``python``) without the extension."""
    from containers_storage.archive.chunked import toc

    if python:
        monkeypatch.setattr(toc, "accelerator", lambda: None)
    index = reuse.LayerIndex()
    index.add_layer("/layers/one", manifest)
    index.add_layer("/layers/two", manifest)
    monkeypatch.undo()
    return index


@needs_c
def test_the_reuse_index_is_the_same_from_c_and_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another layer's TOC indexed by the C loop and by the Python one, from entries in Go's
    shapes and in shapes no writer makes (each skipped or taken alike)."""
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    entries: list[object] = [
        {"type": "dir", "name": "etc"},
        {"type": "reg", "name": "etc/a", "size": 10, "digest": d1, "chunkSize": 4, "chunkDigest": d2},
        {"type": "chunk", "name": "etc/a", "chunkOffset": 4, "chunkSize": 6, "chunkDigest": d1},
        {"type": "reg", "name": "etc/b", "size": 10, "digest": d1},  # the same content again
        {"type": "reg", "name": "empty", "size": 0, "digest": d1},
        {"type": "reg", "name": "huge", "size": 1 << 70, "digest": d2},
        {"type": "reg", "name": "bool", "size": True, "digest": d2},
        {"type": "reg", "name": "neg", "size": -1, "digest": d2},
        {"type": "reg", "name": "text size", "size": "10", "digest": d2},
        {"type": "reg", "name": "no digest", "size": 10},
        {"type": "reg", "name": "digest not text", "size": 10, "digest": 5},
        {"type": "symlink", "name": "link", "size": 10, "digest": d2},
        {"type": 7, "name": "typed", "size": 10, "digest": d2},
        {"name": "untyped", "size": 10, "digest": d2},
        {"type": "reg", "name": 3, "size": 10, "digest": d2},
        {"type": "chunk", "name": "c0", "chunkSize": 3, "chunkDigest": d2, "chunkOffset": None},
        {"type": "chunk", "name": "c1", "chunkSize": 0, "chunkDigest": d2},
        {"type": "chunk", "name": "c2", "chunkDigest": d2},
        {"type": "chunk", "name": "c3", "chunkSize": 3, "chunkDigest": None},
        {"type": "chunk", "name": "c4", "chunkSize": 3, "chunkDigest": d2, "chunkOffset": 1 << 70},
        ["not", "a", "dict"],
        None,
    ]
    manifest = json.dumps({"version": 1, "entries": entries}).encode()
    c = _two_layers_indexed(manifest, False, monkeypatch)
    py = _two_layers_indexed(manifest, True, monkeypatch)
    assert (c.files, c.chunks, c.layers) == (py.files, py.chunks, py.layers)
    assert c.files[d1] == [("/layers/one", "etc/a", 10), ("/layers/one", "etc/b", 10),
                           ("/layers/two", "etc/a", 10), ("/layers/two", "etc/b", 10)]
    assert c.files[d2] == [("/layers/one", "huge", 1 << 70), ("/layers/two", "huge", 1 << 70)]
    assert [x[1:] for x in c.chunks[d2]] == [("etc/a", 0, 4), ("c4", 1 << 70, 3)] * 2


# -- a TOC's JSON read in C ---------------------------------------------------------------------

_D1, _D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
_GO_TOC = (
    '{"version":1,"entries":['
    '{"type":"dir","name":"./","mode":493,"modtime":"2026-12-07T11:44:36Z"},'
    '{"type":"reg","name":"./etc/a","mode":420,"size":10,"modtime":"2026-12-07T11:44:36Z",'
    '"accesstime":"2026-12-07T11:44:36Z","changetime":"2026-12-07T11:44:36Z","offset":100,"endOffset":170,'
    '"digest":"' + _D1 + '","chunkSize":4,"chunkDigest":"' + _D2 + '"},'
    '{"type":"chunk","name":"./etc/a","offset":150,"endOffset":170,"chunkOffset":4,"chunkSize":6,'
    '"chunkDigest":"' + _D1 + '"},'
    '{"type":"reg","name":"./etc/é","mode":420,"uid":1000,"gid":1000,"size":5,"offset":170,"endOffset":190,'
    '"digest":"' + _D2 + '","xattrs":{"user.k":"dg==","security.capability":"AQAAAg=="}},'
    '{"type":"symlink","name":"./etc/l","linkName":"a","mode":511},'
    '{"type":"hardlink","name":"./etc/h","linkName":"./etc/a"},'
    '{"type":"char","name":"./dev/null","devMajor":1,"devMinor":3,"mode":438},'
    '{"type":"reg","name":"./empty","mode":420}'
    '],"tarSplitDigest":"' + _D2 + '"}')


def _toc_outcome(text: bytes, python: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[str, object]:
    from containers_storage.archive.chunked import toc
    from containers_storage.archive.chunked.toc import ChunkedError

    if python:
        monkeypatch.setattr(toc, "accelerator", lambda: None)
    try:
        parsed = toc.parse_toc(text, 10_000)
        got: object = (parsed.version, parsed.tar_split_digest,
                       [{k: getattr(e, k) for k in e.__slots__} for e in parsed.entries],
                       [(f.entry.name, f.chunks) for f in parsed.files])
        return "ok", got
    except ChunkedError as e:
        return "error", str(e)
    finally:
        monkeypatch.undo()


def _toc_variants() -> dict[str, str]:
    t = _GO_TOC
    return {
        "as Go writes it": t,
        "whitespace": t.replace('",', '" ,\n ').replace('":', '" : ').replace("{", "{ \t").replace(
            "]", "\r\n]"),
        "escaped name": t.replace('"./etc/l"', '"./etc/\\u0026l"'),
        "escaped slash": t.replace('"./etc/l"', '"./etc\\/l"'),
        "null link": t.replace('"linkName":"a"', '"linkName":null'),
        "null xattrs": t.replace('"xattrs":{', '"xattrs":null,"x":{'),
        "unknown key": t.replace('"mode":511', '"mode":511,"extra":1'),
        "key in another case": t.replace('"mode":511', '"Mode":511'),
        "key twice": t.replace('"mode":511', '"mode":511,"mode":438'),
        "xattr twice": t.replace('"user.k":"dg=="', '"user.k":"dg==","user.k":"dw=="'),
        "version twice": t.replace('{"version":1,', '{"version":1,"version":2,'),
        "top key in another case": t.replace('"tarSplitDigest"', '"TarSplitDigest"'),
        "no version": t.replace('"version":1,', ''),
        "no tar-split digest": t.replace(',"tarSplitDigest":"' + _D2 + '"', ''),
        "no entries": '{"version":1}',
        "empty entries": '{"version":1,"entries":[]}',
        "empty object": '{}',
        "empty entry": t.replace('{"type":"reg","name":"./empty","mode":420}', '{}'),
        "fraction": t.replace('"mode":511', '"mode":511.0'),
        "exponent": t.replace('"mode":511', '"mode":5e2'),
        "leading zero": t.replace('"mode":511', '"mode":0511'),
        "negative": t.replace('"mode":511', '"mode":-1'),
        "minus zero": t.replace('"mode":511', '"mode":-0'),
        "19 digits": t.replace('"mode":511', '"mode":1234567890123456789'),
        "huge size": t.replace('"size":5,', '"size":123456789012345678901234567890,'),
        "uid too big": t.replace('"uid":1000', '"uid":4294967296'),
        "string for int": t.replace('"mode":511', '"mode":"511"'),
        "int for string": t.replace('"linkName":"a"', '"linkName":7'),
        "bool": t.replace('"mode":511', '"mode":true'),
        "array entry": t.replace('{"type":"reg","name":"./empty","mode":420}', '[1]'),
        "unknown type": t.replace('"type":"char"', '"type":"socket"'),
        "bad digest": t.replace(_D1, "sha256:" + "G" * 64),
        "chunk type zeros": t.replace('"chunkOffset":4,', '"chunkOffset":4,"chunkType":"zeros",'),
        "chunk type other": t.replace('"chunkOffset":4,', '"chunkOffset":4,"chunkType":"other",'),
        "trailing comma": t.replace('"mode":420}]', '"mode":420},]'),
        "trailing data": t + " x",
        "trailing whitespace": t + " \n",
        "cut short": t[:-5],
        "not an object": "[" + t + "]",
        "control character in a name": t.replace('"./etc/l"', '"./etc/\tl"'),
        "NUL escape in a name": t.replace('"./etc/l"', '"./etc/\\u0000l"'),
        "NaN": t.replace('"mode":511', '"mode":NaN'),
        "lone surrogate": t.replace('"./etc/l"', '"./etc/\\ud800l"'),
        "duplicate name": t.replace('"./etc/h"', '"./etc/l"'),
    }


@needs_c
@pytest.mark.parametrize("variant", list(_toc_variants()))
def test_toc_json_read_in_c_or_python_alike(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _toc_variants()[variant].encode()
    assert _toc_outcome(text, False, monkeypatch) == _toc_outcome(text, True, monkeypatch)


@needs_c
def test_toc_json_in_c_takes_what_writers_write() -> None:
    """The document as Go writes it (and non-ASCII names) is read in C, not handed back."""
    from containers_storage.archive.chunked import toc

    for text in (_GO_TOC, _toc_variants()["whitespace"], _toc_variants()["empty entries"]):
        assert toc.accelerator().toc_json(text.encode(), toc.TOCEntry) is not None
    for bad in (b"\xff", _GO_TOC.encode().replace(b"./etc/l", b"./etc/\xc3l")):  # invalid UTF-8
        assert toc.accelerator().toc_json(bad, toc.TOCEntry) is None


@needs_c
@pytest.mark.parametrize("variant", list(_toc_variants()))
def test_reuse_index_from_json_in_c_or_python_alike(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _toc_variants()[variant].encode()
    c, py = _two_layers_indexed(text, False, monkeypatch), _two_layers_indexed(text, True, monkeypatch)
    assert (c.files, c.chunks, c.layers) == (py.files, py.chunks, py.layers)


@needs_c
def test_objects_made_by_the_thousand_are_left_to_reference_counting() -> None:
    """Entries, files, chunk lists and index tuples made in C hold no reference cycles and are
    not followed by the cyclic collector (walking them cost a pull ~20 ms of collections)."""
    import gc

    from containers_storage.archive.chunked import toc

    parsed = toc.parse_toc(_GO_TOC.encode(), 10_000)
    assert parsed.entries and not any(gc.is_tracked(e) for e in parsed.entries)
    assert parsed.files and not any(gc.is_tracked(f) or gc.is_tracked(f.chunks) for f in parsed.files)
    assert not any(gc.is_tracked(c) for f in parsed.files for c in f.chunks)
    index = reuse.LayerIndex()
    index.add_layer("/layers/one", _GO_TOC.encode())
    files, chunks = list(index.files.values()), list(index.chunks.values())  # (the lists themselves)
    assert files and not any(gc.is_tracked(x) for x in files)
    assert chunks and not any(gc.is_tracked(x) for x in chunks)
    assert not any(gc.is_tracked(t) for x in files for t in x)
    assert not any(gc.is_tracked(t) for x in chunks for t in x)
