"""zstd:chunked and eStargz, without a store: the writer, the TOC checks, range planning, sources.

The writer is held to Go's by construction (the rolling-checksum cut points, the frame layout,
the TOC fields) and here by its properties: the blob decompresses to the tarball, the annotations
point at the TOC and tar-split, every file's frames decompress to content with its digest; the C
and Python cut-point finders agree.  tests/compat/test_chunked_go.py compares with Go's own TOCs.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import random
import threading
from collections.abc import Iterator, Sequence

import pytest
from backports import zstd

from chunkedtools import MANIFEST_POSITION, TARSPLIT_POSITION, Blob, file_contents, rootfs_tar
from containers_storage.archive.chunked import (
    BadRangeRequest,
    ChunkedBlob,
    ChunkedDiffer,
    ChunkedError,
    DifferOutput,
    FallbackToFullPull,
    FileBlobSource,
    HTTPBlobSource,
    PullOptions,
    RangeReader,
    compress,
    toc_digest,
)
from containers_storage.archive.chunked import compressor as comp
from containers_storage.archive.chunked.manifest import LayerTOC, read_estargz_toc, read_zstd_chunked_toc
from containers_storage.archive.chunked.plan import Op, Part, merge_missing_chunks, network_ranges
from containers_storage.archive.chunked.pull import PullResult, layer_id
from containers_storage.archive.chunked.toc import parse_toc


def _compress(tar: bytes, **kw: object) -> tuple[bytes, ChunkedBlob]:
    out = io.BytesIO()
    result = compress(io.BytesIO(tar), out, **kw)  # type: ignore[arg-type]
    return out.getvalue(), result


# -- the writer -------------------------------------------------------------------------------

def _cuts(chunker: object, data: bytes, pieces: list[int]) -> list[tuple[int, int]]:
    events: list[tuple[int, int]] = []
    pos = 0
    for n in pieces:
        _, ev = chunker.feed(data[pos : pos + n])  # type: ignore[attr-defined]
        events += ev
        pos += n
    _, ev = chunker.finish()  # type: ignore[attr-defined]
    events += ev
    return events


def test_c_and_python_chunkers_cut_alike() -> None:
    pytest.importorskip("containers_storage.archive.chunked._rollsum")
    from containers_storage.archive.chunked._rollsum import Chunker  # type: ignore[import-not-found]

    rng = random.Random(5)
    data = b"".join(rng.choice([rng.randbytes(rng.randint(1, 90_000)), bytes(rng.randint(1, 3000)),
                                b"\0" * 1024, b"\0" * 1023]) for _ in range(40))
    for pieces in ([len(data)], [rng.randint(1, 5000) for _ in range(len(data) // 2500)] + [len(data)]):
        c_events = _cuts(Chunker(), data, pieces)
        assert c_events == _cuts(comp._PyChunker(), data, pieces)
        assert any(kind == 0 for _, kind in c_events) and any(kind == 1 for _, kind in c_events)


def test_blob_is_the_tarball_in_zstd_with_a_toc_and_tar_split() -> None:
    tar = rootfs_tar(file_contents(1, 24))
    blob, result = _compress(tar)
    assert zstd.decompress(blob) == tar  # skippable frames are skipped by any zstd reader
    assert result.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert (result.size, result.tar_size) == (len(blob), len(tar))
    assert result.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    ann = result.annotations
    assert toc_digest(ann) == result.toc_digest
    assert ann["io.containers.zstd-chunked.manifest-checksum"] == result.toc_digest  # for Go 1.43
    off, length, raw_len, kind = (int(x) for x in ann[MANIFEST_POSITION].split(":"))
    assert kind == 1 and blob[off - 8 : off - 4] == b"\x50\x2a\x4d\x18"
    manifest = zstd.decompress(blob[off : off + length])
    assert len(manifest) == raw_len
    assert "sha256:" + hashlib.sha256(blob[off : off + length]).hexdigest() == result.toc_digest
    assert blob[-8:] == b"GNUlInUx"
    toc = parse_toc(manifest, off - 8)
    # Every file's frames decompress to its content, which has its digest; big files have chunks.
    assert any(len(f.chunks) > 1 for f in toc.files)
    assert any(c[4] == "zeros" for f in toc.files for c in f.chunks)
    for f in toc.files:
        content = b"".join(zstd.decompress(blob[start:end]) for start, end, *_ in f.chunks)
        assert len(content) == f.entry.size
        assert "sha256:" + hashlib.sha256(content).hexdigest() == f.entry.digest
    # The tar-split names the files and holds every other byte of the tarball.
    t_off, t_len, t_raw = (int(x) for x in ann[TARSPLIT_POSITION].split(":"))
    lines = [json.loads(x) for x in zstd.decompress(blob[t_off : t_off + t_len]).splitlines()]
    assert len(zstd.decompress(blob[t_off : t_off + t_len])) == t_raw
    ts_digest = "sha256:" + hashlib.sha256(blob[t_off : t_off + t_len]).hexdigest()
    assert json.loads(manifest)["tarSplitDigest"] == ts_digest
    segments = sum(len(__import__("base64").b64decode(x["payload"])) for x in lines if x["type"] == 2)
    assert segments + sum(x.get("size", 0) for x in lines if x["type"] == 1) == len(tar)


def test_writer_is_deterministic_and_level_none_stores_plain_bytes() -> None:
    tar = rootfs_tar(file_contents(2, 8))
    a, ra = _compress(tar)
    b, rb = _compress(tar)
    assert a == b and ra.annotations == rb.annotations
    plain, rp = _compress(tar, level=None, legacy_annotations=False)
    assert plain.startswith(tar[:512]) and rp.diff_id == ra.diff_id
    assert not any(k.startswith("io.containers.") for k in rp.annotations)


def test_writer_refuses_what_go_refuses() -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("contiguous")
        ti.type = tarfile.CONTTYPE
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(ChunkedError, match="unknown tarball type: 55"):
        _compress(buf.getvalue())


# -- reading and checking the TOC -------------------------------------------------------------

def _toc_json(entries: list[dict[str, object]]) -> bytes:
    return json.dumps({"version": 1, "entries": entries}).encode()


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("entries", "message"), [
    ([{"type": "socket", "name": "s"}], "unknown type"),
    ([{"type": "chunk", "name": "f", "offset": 10}], "chunk of 'f' without a regular file"),
    ([{"type": "dir", "name": "d"}, {"type": "dir", "name": "d"}], "duplicate entries"),
    ([{"type": "reg", "name": "f", "size": 5, "offset": 10, "endOffset": 2000, "digest": DIGEST}], "outside"),
    ([{"type": "reg", "name": "f", "size": 5, "offset": 10, "endOffset": 20, "digest": DIGEST},
      {"type": "reg", "name": "g", "size": 5, "offset": 15, "endOffset": 30, "digest": DIGEST}], "overlaps"),
    ([{"type": "reg", "name": "f", "size": 10, "offset": 10, "endOffset": 40, "digest": DIGEST,
       "chunkSize": 4},
      {"type": "chunk", "name": "f", "offset": 20, "chunkOffset": 4, "chunkSize": 4}], "add up"),
    ([{"type": "reg", "name": "f", "size": 5, "offset": 10, "endOffset": 20}], "missing digest"),
    ([{"type": "reg", "name": "f", "size": 5, "offset": 10, "endOffset": 20, "digest": "md5:00"}],
     "invalid digest"),
    ([{"type": "reg", "name": "f", "size": -5}], "invalid size"),
    ([{"type": "reg", "name": "f\x00g"}], "invalid name"),
    ([{"type": "reg", "name": "f", "uid": 1 << 40}], "invalid owner"),
])
def test_toc_checks(entries: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ChunkedError, match=message):
        parse_toc(_toc_json(entries), 1000)


_ONE_FILE = (b'{"version":1,"entries":[{"type":"reg","name":"a","size":5,"offset":10,"endOffset":20,'
             b'"digest":"' + DIGEST.encode() + b'"}]}')


@pytest.mark.parametrize(("text", "message"), [
    (_ONE_FILE.replace(b'"size":5', b'"size":NaN'), "TOC is not JSON: NaN is not JSON"),
    (_ONE_FILE.replace(b'"size":5', b'"size":Infinity'), "TOC is not JSON: Infinity is not JSON"),
    (_ONE_FILE.replace(b'"name":"a"', b'"name":"\\ud800"'), "lone UTF-16 surrogate"),
    (_ONE_FILE.replace(b'"name":"a"', b'"name":"\xff"'), "TOC is not JSON: 'utf-8' codec"),
    (_ONE_FILE.replace(b'"size":5', b'"size":123456789012345678901234567890'), "invalid size"),
    (_ONE_FILE[:-1], "TOC is not JSON"),
])
def test_toc_json_refused(text: bytes, message: str) -> None:
    """What is not JSON to Go either, and names that are not UTF-8 (Go would turn them into
    U+FFFD, naming a file other than the layer's; we refuse them, as we always have)."""
    with pytest.raises(ChunkedError, match=message):
        parse_toc(text, 1000)


def test_toc_json_with_escapes_that_name_files() -> None:
    """A surrogate pair, an escaped slash and Go's HTML escapes decode to the names they stand for."""
    text = _ONE_FILE.replace(b'"name":"a"', b'"name":"d\\/\\ud83d\\ude00\\u0026"')
    assert [e.name for e in parse_toc(text, 1000).entries] == ["d/\U0001f600&"]


def test_toc_digest_of_annotations() -> None:
    assert toc_digest({}) is None
    assert toc_digest({"io.github.containers.zstd-chunked.manifest-checksum": DIGEST}) == DIGEST
    assert toc_digest({"containerd.io/snapshot/stargz/toc.digest": DIGEST}) == DIGEST
    with pytest.raises(ChunkedError, match="both zstd:chunked and eStargz"):
        toc_digest({"containerd.io/snapshot/stargz/toc.digest": DIGEST,
                    "io.containers.zstd-chunked.manifest-checksum": DIGEST})
    with pytest.raises(ChunkedError, match="invalid TOC digest"):
        toc_digest({"io.github.containers.zstd-chunked.manifest-checksum": "sha256:xyz"})


def test_reading_the_toc_checks_it_against_its_digest_and_the_tar_split(tmp_path: object) -> None:
    parts = Blob(rootfs_tar(file_contents(3, 6)))
    blob, ann = parts.assemble()
    source = _MemorySource(blob)
    layer_toc = read_zstd_chunked_toc(source, len(blob), toc_digest(ann) or "", ann, str(tmp_path))
    assert layer_toc.tar_split is not None and len(layer_toc.toc.files) == 7
    assert source.requests == 1  # TOC and tar-split in one request, as Go asks for them
    layer_toc.close()
    with pytest.raises(ChunkedError, match="invalid blob checksum"):
        read_zstd_chunked_toc(source, len(blob), DIGEST, ann, str(tmp_path))
    # The footer when the annotations give no position (Go 1.43 read it so).
    legacy, lann = parts.assemble(legacy=True)
    only_digest = {k: v for k, v in lann.items() if k.endswith("checksum")}
    legacy_toc = read_zstd_chunked_toc(_MemorySource(legacy), len(legacy), toc_digest(lann) or "",
                                       only_digest, str(tmp_path))
    assert legacy_toc.tar_split is None and len(legacy_toc.toc.files) == 7
    # A tar-split that does not say what the TOC says.
    parts.entry("usr/lib/f000")["mode"] = 0o600
    bad, bann = parts.assemble()
    with pytest.raises(ChunkedError, match=r"tar-split and TOC data is inconsistent.*mode"):
        read_zstd_chunked_toc(_MemorySource(bad), len(bad), toc_digest(bann) or "", bann, str(tmp_path))


def test_a_toc_or_tar_split_larger_than_announced_is_refused(tmp_path: object) -> None:
    blob, ann = Blob(rootfs_tar(file_contents(3, 6))).assemble()
    for key, what in ((MANIFEST_POSITION, "the TOC"), (TARSPLIT_POSITION, "the tar-split")):
        fields = ann[key].split(":")
        fields[2] = str(int(fields[2]) - 1)  # the uncompressed size, one byte short
        with pytest.raises(ChunkedError, match=f"^{what} is larger than announced"):
            read_zstd_chunked_toc(_MemorySource(blob), len(blob), toc_digest(ann) or "",
                                  {**ann, key: ":".join(fields)}, str(tmp_path))


def test_a_toc_read_late_words_its_faults_once(tmp_path: object) -> None:
    """Read late (``defer``), a TOC's faults surface when it is first used, worded as when it
    is read at once (the caller, differ._read_toc, adds the one "read zstd:chunked manifest")."""
    blob, ann = Blob(rootfs_tar(file_contents(3, 6))).assemble()
    fields = ann[MANIFEST_POSITION].split(":")
    fields[2] = str(int(fields[2]) - 1)  # the uncompressed size, one byte short
    late = read_zstd_chunked_toc(_MemorySource(blob), len(blob), toc_digest(ann) or "",
                                 {**ann, MANIFEST_POSITION: ":".join(fields)}, str(tmp_path), check=False,
                                 defer=lambda: True)
    try:
        with pytest.raises(ChunkedError) as caught:
            late.toc  # noqa: B018
        assert str(caught.value) == "read zstd:chunked manifest: the TOC is larger than announced"
    finally:
        late.close()


def test_a_tar_split_is_decompressed_as_it_is_first_read(tmp_path: object) -> None:
    """The first read of a tar-split decompresses it as it goes, in a small first block (a
    partial pull streams its first file early); a read left half way, or failing, keeps
    nothing half written: the next read starts again and gets all of it, or the same error."""
    files = {f"usr/share/f{i:04d}": b"%d\n" % i for i in range(400)}
    blob, ann = Blob(rootfs_tar(files)).assemble()
    off, length, _raw = (int(x) for x in ann[TARSPLIT_POSITION].split(":"))
    whole = zstd.decompress(blob[off : off + length])
    assert len(whole) > 4 * (64 << 10)

    def read() -> LayerTOC:
        return read_zstd_chunked_toc(_MemorySource(blob), len(blob), toc_digest(ann) or "", ann,
                                     str(tmp_path), check=False)

    layer_toc = read()
    ts = layer_toc.tar_split
    assert ts is not None
    try:
        blocks = ts.blocks()
        first = next(blocks)
        assert 0 < len(first) <= 64 << 10 and whole.startswith(first + b"\n")
        blocks.close()  # left after one block
        ts.file.seek(0)
        assert ts.file.read() == whole
        assert b"\n".join(ts.blocks()) == whole.rstrip(b"\n")
    finally:
        layer_toc.close()
    layer_toc = read()
    ts = layer_toc.tar_split
    assert ts is not None
    try:
        assert b"\n".join(ts.blocks()) == whole.rstrip(b"\n")  # a first read to the end
        ts.file.seek(0)
        assert ts.file.read() == whole
    finally:
        layer_toc.close()

    fields = ann[TARSPLIT_POSITION].split(":")
    fields[2] = str(int(fields[2]) - 1)  # one byte less than it decompresses to
    ann = {**ann, TARSPLIT_POSITION: ":".join(fields)}
    layer_toc = read()
    ts = layer_toc.tar_split
    assert ts is not None
    try:
        for _ in range(2):
            with pytest.raises(ChunkedError, match=r"^the tar-split is larger than announced"):
                for _block in ts.blocks():
                    pass
    finally:
        layer_toc.close()


def test_estargz_toc(tmp_path: object) -> None:
    from chunkedtools import estargz_blob

    blob, ann = estargz_blob(rootfs_tar(file_contents(4, 5), whiteout=False))
    source = _MemorySource(blob)
    layer_toc = read_estargz_toc(source, len(blob), toc_digest(ann) or "")
    assert source.requests == 2  # the footer, then the TOC, as Go asks
    assert [f.entry.name for f in layer_toc.toc.files][:2] == ["usr/lib/f000", "usr/lib/f001"]
    assert all(f.chunks[-1][1] <= layer_toc.data_end for f in layer_toc.toc.files)
    with pytest.raises(ChunkedError, match="invalid manifest checksum"):
        read_estargz_toc(_MemorySource(blob), len(blob), DIGEST)
    bad = bytearray(blob)
    bad[-51 - 8] ^= 0xFF  # the TOC member's CRC-32
    with pytest.raises(ChunkedError, match=r"^estargz TOC: "):
        read_estargz_toc(_MemorySource(bytes(bad)), len(bad), toc_digest(ann) or "")


class _MemorySource:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.requests = 0

    def get_blob_at(self, chunks: Sequence[tuple[int, int]]) -> Iterator[RangeReader]:
        self.requests += 1
        return iter([io.BytesIO(self.blob[o : o + n]) for o, n in chunks])


# -- which ranges to ask for ------------------------------------------------------------------

def _part(offset: int, length: int, file: int, chunk: int, **kw: object) -> Part:
    return Part(offset, length, [Op(file=file, first=chunk, last=chunk, csize=length, usize=length * 2)],
                **kw)  # type: ignore[arg-type]


def test_merging_missing_chunks_as_go_does() -> None:
    # Adjacent chunks of one file become one; a gap under 1 KiB is closed; a large one is kept.
    parts = [_part(100, 50, 0, 0), _part(150, 50, 0, 1), _part(1000, 10, 1, 0), _part(100_000, 10, 2, 0)]
    merged = merge_missing_chunks(parts, 1024)
    assert network_ranges(merged) == [(100, 910), (100_000, 10)]
    assert [(op.gap, op.file, op.first, op.last) for op in merged[0].ops] == [(0, 0, 0, 1), (800, -1, -1, -1),
                                                                              (0, 1, 0, 0)]
    # Down to a target: the cheapest gaps first (Go merges one more than it needs).
    parts = [_part(i * 10_000, 10, i, 0) for i in range(8)]
    parts[3] = _part(30_000 - 5000, 10, 3, 0)
    assert len(network_ranges(merge_missing_chunks(parts, 4))) == 3
    # Local chunks and holes between network ranges: fetched after all when their gaps close.
    parts = [_part(0, 10, 0, 0), _part(10, 10, 1, 0, origin=("/r", "f", 0)), _part(20, 10, 2, 0, hole=True),
             _part(30, 10, 3, 0)]
    merged = merge_missing_chunks(parts, 1024)
    assert network_ranges(merged) == [(0, 40)]
    assert [op.hole for op in merged[0].ops] == [False, False, True, False]


def test_pull_options_and_layer_ids() -> None:
    opts = PullOptions({"enable_partial_images": "TRUE", "use_hard_links": "false", "ostree_repos": "/x"})
    assert opts.enable_partial_images and not opts.use_hard_links and opts.ignored == ["ostree_repos"]
    assert layer_id("", "sha256:" + "1" * 64) == "1" * 64
    assert layer_id("p", "sha256:" + "1" * 64) == hashlib.sha256(b"p+" + b"1" * 64).hexdigest()
    assert layer_id("", "", "sha256:" + "2" * 64) == hashlib.sha256(b"+@TOC=" + b"2" * 64).hexdigest()


# -- the HTTP source --------------------------------------------------------------------------

class _RangeHandler(http.server.BaseHTTPRequestHandler):
    blob = b""
    mode = "ranges"  # or "ignore" (200 with everything), "refuse" (400 beyond 2 ranges), "wrong"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith("/moved"):
            self._send(307, {"Location": self.path.removesuffix("/moved")}, b"")
            return
        spec = self.headers.get("Range", "")
        ranges = [tuple(int(x) for x in r.split("-")) for r in spec.removeprefix("bytes=").split(",") if r]
        if self.mode == "ignore" or not ranges:
            self._send(200, {"Content-Type": "application/octet-stream"}, self.blob)
            return
        if self.mode == "refuse" and len(ranges) > 2:
            self._send(400, {}, b"too many ranges")
            return
        if self.mode == "wrong":
            ranges = [(a + 1, b + 1) for a, b in ranges]
        if len(ranges) == 1:
            a, b = ranges[0]
            self._send(206, {"Content-Range": f"bytes {a}-{b}/{len(self.blob)}"}, self.blob[a : b + 1])
            return
        body = b""
        for a, b in ranges:
            part = f"Content-Range: bytes {a}-{b}/{len(self.blob)}\r\n\r\n".encode()
            body += b"\r\n--XYZ\r\nContent-Type: application/octet-stream\r\n" + part + self.blob[a : b + 1]
        body += b"\r\n--XYZ--\r\n"
        self._send(206, {"Content-Type": "multipart/byteranges; boundary=XYZ"}, body)

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_blob() -> Iterator[tuple[str, type[_RangeHandler]]]:
    handler = type("Handler", (_RangeHandler,), {"blob": bytes(range(256)) * 40})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/x/blobs/sha256:0", handler
    finally:
        server.shutdown()
        server.server_close()


def test_http_source_reads_multipart_answers(http_blob: tuple[str, type[_RangeHandler]]) -> None:
    url, handler = http_blob
    source = HTTPBlobSource(url)
    chunks = [(0, 10), (100, 5), (5000, 240)]
    got = [r.read(1 << 20) for r in source.get_blob_at(chunks)]
    assert got == [handler.blob[o : o + n] for o, n in chunks] and source.requests == 1
    assert [r.read() for r in source.get_blob_at([(7, 3)])] == [handler.blob[7:10]]
    with source.open() as whole:
        assert whole.read() == handler.blob


def test_http_source_follows_redirects(http_blob: tuple[str, type[_RangeHandler]]) -> None:
    url, handler = http_blob
    source = HTTPBlobSource(url + "/moved")
    assert [r.read() for r in source.get_blob_at([(7, 3), (300, 2)])] == [handler.blob[7:10],
                                                                         handler.blob[300:302]]
    assert source.requests == 2 and source.bytes_read > 5
    with source.open() as whole:
        assert whole.read() == handler.blob
    assert source.requests == 4
    with pytest.raises(ChunkedError, match="unsupported blob URL"):
        HTTPBlobSource("ftp://127.0.0.1/blob").get_blob_at([(0, 1)])
    with pytest.raises(ChunkedError, match="unsupported blob URL"):
        HTTPBlobSource("ftp://127.0.0.1/blob").open()


@pytest.mark.parametrize(("mode", "error"), [("ignore", FallbackToFullPull), ("refuse", BadRangeRequest),
                                             ("wrong", ChunkedError)])
def test_http_source_refusals(http_blob: tuple[str, type[_RangeHandler]], mode: str, error: type[Exception]
                              ) -> None:
    url, handler = http_blob
    handler.mode = mode
    with pytest.raises(error):
        for r in HTTPBlobSource(url).get_blob_at([(0, 10), (100, 5), (5000, 240)]):
            r.read()


def test_public_classes_have_docstrings() -> None:
    import inspect

    classes = (ChunkedBlob, ChunkedDiffer, DifferOutput, PullOptions, PullResult, FileBlobSource,
               HTTPBlobSource)
    lacking = [f"{cls.__name__}.{name}" for cls in classes for name, attr in vars(cls).items()
               if (not name.startswith("_") or name in ("__enter__", "__exit__", "__repr__"))
               and inspect.isfunction(attr) and not (attr.__doc__ or "").strip()]
    assert lacking == []
