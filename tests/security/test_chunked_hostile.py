"""Hostile partial layers: lies in the TOC, in the content, in the registry's answers.

Every case ends in a clear error (or Go's full-pull fallback, for a registry without ranges),
with bounded memory, and leaves nothing behind: no layer, no staging directory, no temporary
file in the store, nothing written outside it.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from backports import zstd

from chunkedtools import MANIFEST_POSITION, Blob, estargz_blob, file_contents, rootfs_tar, tree
from containers_storage.archive.chunked import ChunkedError, FileBlobSource, HTTPBlobSource, pull_layer
from containers_storage.config import StoreOptions
from containers_storage.errors import InvalidArchive
from containers_storage.store import Store, get_store
from drivertools import IS_ROOT
from storetools import close_store

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="overlay mounts need root")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = get_store(StoreOptions(graph_root=str(tmp_path / "root"), run_root=str(tmp_path / "run"),
                               driver_name="overlay", pull_options={
                                   "enable_partial_images": "true",
                                   "insecure_allow_unpredictable_image_contents": "true"}))
    yield s
    close_store(s)


def _write(tmp_path: Path, blob: bytes, name: str = "blob") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(blob)
    return path, "sha256:" + hashlib.sha256(blob).hexdigest()


def _pull(store: Store, path: Path, digest: str, annotations: dict[str, str]) -> object:
    with FileBlobSource(path) as source:
        return pull_layer(store, source, digest=digest, size=path.stat().st_size, annotations=annotations)


@pytest.fixture(params=["whole", "whole-frame-by-frame", "by-file"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the layer gets applied: "whole" (the store has nothing of it: its frames stream through
    a plain apply, checked on the way; "whole-frame-by-frame": the same without the zstandard
    package, each frame decoded on its own) or "by-file" (a file is reused: the tarball is
    rebuilt from the tar-split and the contents, file by file)."""
    if request.param == "whole-frame-by-frame":
        from containers_storage.archive.chunked import differ

        monkeypatch.setattr(differ, "_zstandard_module", None)
    return "whole" if request.param.startswith("whole") else str(request.param)


def _seed(store: Store, tmp_path: Path, mode: str, files: dict[str, bytes]) -> None:
    """For "by-file": a layer holding the first of ``files``, for the pull to reuse."""
    if mode == "whole":
        return
    name, data = next(iter(files.items()))
    blob, ann = Blob(rootfs_tar({name: data}, extra=False)).assemble()
    path, digest = _write(tmp_path, blob, "seed")
    assert _pull(store, path, digest, ann).partial  # type: ignore[attr-defined]


def _assert_nothing_left(store: Store) -> None:
    """No layer but the seed, no staging directory, no file of the refused layer anywhere."""
    kept = [layer.id for layer in store.layers()]
    assert len(kept) <= 1  # (the seed layer of the "by-file" mode)
    home = Path(store.graph_root) / "overlay"
    ignored = ("l", "staging", ".has-mount-program", *kept)
    assert [p.name for p in home.iterdir() if p.name not in ignored] == []
    assert not list((home / "staging").iterdir()) if (home / "staging").exists() else True
    layers_dir = Path(store.graph_root) / "overlay-layers"
    assert sorted(p.name for p in layers_dir.iterdir() if not p.name.startswith(tuple(kept) or ("-",))) in (
        [], ["layers.json", "layers.lock"], ["layers.lock"])
    assert not [p for p in Path(store.run_root).rglob("*") if p.is_file() and "tmp" in p.name]


def test_toc_digest_mismatch(store: Store, tmp_path: Path, mode: str) -> None:
    _seed(store, tmp_path, mode, file_contents(1, 6))
    parts = Blob(rootfs_tar(file_contents(1, 6)))
    blob, ann = parts.assemble()
    ann["io.github.containers.zstd-chunked.manifest-checksum"] = "sha256:" + "0" * 64
    path, digest = _write(tmp_path, blob)
    with pytest.raises(ChunkedError, match="invalid blob checksum"):
        _pull(store, path, digest, ann)
    _assert_nothing_left(store)


@pytest.mark.parametrize("lie", ["outside", "overlap", "backwards", "chunk-outside"])
def test_offsets_that_lie(store: Store, tmp_path: Path, lie: str, mode: str) -> None:
    _seed(store, tmp_path, mode, file_contents(2, 12))
    parts = Blob(rootfs_tar(file_contents(2, 12)))
    files = [e for e in parts.entries if e["type"] == "reg" and e.get("size")]
    a, b = files[0], files[1]
    if lie == "outside":
        b["endOffset"] = len(parts.data) + 4096
    elif lie == "overlap":
        b["offset"] = int(a["endOffset"]) - 1  # type: ignore[call-overload]
    elif lie == "backwards":
        a["offset"], b["offset"] = b["offset"], a["offset"]
    else:
        chunked = next(e for e in parts.entries if e["type"] == "chunk")
        chunked["offset"] = 10**12
    blob, ann = parts.assemble()
    path, digest = _write(tmp_path, blob)
    with pytest.raises(ChunkedError, match=r"outside|overlap|follow"):
        _pull(store, path, digest, ann)
    _assert_nothing_left(store)


def test_content_not_matching_its_digest(store: Store, tmp_path: Path, mode: str) -> None:
    _seed(store, tmp_path, mode, file_contents(3, 8))
    parts = Blob(rootfs_tar(file_contents(3, 8)))
    target = [e for e in parts.entries if e["type"] == "reg" and e.get("size")][1]
    target["digest"] = "sha256:" + "1" * 64  # the tar-split cannot tell: only the TOC has digests
    blob, ann = parts.assemble()
    path, digest = _write(tmp_path, blob)
    with pytest.raises(ChunkedError, match=f"checksum mismatch for '{target['name']}'"):
        _pull(store, path, digest, ann)
    _assert_nothing_left(store)


def test_frames_swapped_under_a_valid_toc(store: Store, tmp_path: Path, mode: str) -> None:
    """The blob's bytes changed where the TOC says a file is (the blob digest is not checked in
    a partial pull): the file's digest catches it."""
    _seed(store, tmp_path, mode, file_contents(4, 8))
    parts = Blob(rootfs_tar(file_contents(4, 8)))
    e = [e for e in parts.entries if e["type"] == "reg" and int(e.get("size", 0)) > 100][1]  # type: ignore[call-overload]
    start, end = int(e["offset"]), int(e["endOffset"])  # type: ignore[call-overload]
    other = zstd.compress(b"\0" * int(e["size"]))  # type: ignore[call-overload]
    assert len(other) <= end - start
    data = bytearray(parts.data)
    data[start : start + len(other)] = other
    parts.data = bytes(data)
    blob, ann = parts.assemble()
    path, digest = _write(tmp_path, blob)
    # (Applied whole, as here, the next frame no longer starts where it should: zstd says so.)
    with pytest.raises(InvalidArchive, match=r"checksum mismatch|decompress|zstd"):
        _pull(store, path, digest, ann)
    _assert_nothing_left(store)


def _tar(entries: list[tuple[str, bytes | None, dict[str, object]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, kw in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            for k, v in kw.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _blob(tar: bytes, kind: str) -> tuple[bytes, dict[str, str]]:
    return estargz_blob(tar) if kind == "estargz" else Blob(tar).assemble()


@pytest.mark.parametrize("kind", ["zstd:chunked", "estargz"])
def test_names_and_symlinks_stay_inside(store: Store, tmp_path: Path, kind: str, resolver: str) -> None:
    """``..`` stops at the layer's root and an absolute symlink starts there, as in Go's chroot."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = _tar([("../../dotdot", b"dotdot", {}),
                ("abs", None, {"type": tarfile.SYMTYPE, "linkname": "/"}),
                ("abs/../../through-root", b"inside", {}),
                (f"abs{outside}", None, {"type": tarfile.DIRTYPE, "mode": 0o755}),
                (f"abs{outside}/planted", b"planted", {})])
    blob, ann = _blob(tar, kind)
    path, digest = _write(tmp_path, blob)
    result = _pull(store, path, digest, ann)
    assert result.partial  # type: ignore[attr-defined]
    files = tree(Path(store.graph_root) / "overlay" / result.layer.id / "diff")  # type: ignore[attr-defined]
    assert files["dotdot"][5] == b"dotdot" and files["through-root"][5] == b"inside"
    assert files[str(outside.relative_to("/")) + "/planted"][5] == b"planted"
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "dotdot").exists() and not (tmp_path.parent / "through-root").exists()


@pytest.mark.parametrize("kind", ["zstd:chunked", "estargz"])
def test_escaping_symlinks_and_links_are_refused(store: Store, tmp_path: Path, kind: str,
                                                 resolver: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"victim")
    cases: list[list[tuple[str, bytes | None, dict[str, object]]]] = [
            [("evil", None, {"type": tarfile.SYMTYPE, "linkname": str(outside)}),
             ("evil/victim", b"overwritten", {})],
            [("rel", None, {"type": tarfile.SYMTYPE, "linkname": "../../../../../../../../" + str(outside)}),
             ("rel/victim", b"overwritten", {})],
            [("hard", None, {"type": tarfile.LNKTYPE, "linkname": f"../../../../../..{outside}/victim"})]]
    for n, entries in enumerate(cases):
        blob, ann = _blob(_tar(entries), kind)
        path, digest = _write(tmp_path, blob, f"blob{n}")
        with pytest.raises(InvalidArchive):
            _pull(store, path, digest, ann)
        _assert_nothing_left(store)
    assert (outside / "victim").read_bytes() == b"victim" and os.stat(outside / "victim").st_nlink == 1


def test_decompression_bombs_are_bounded(store: Store, tmp_path: Path) -> None:
    # A file whose frames decompress to far more than its TOC size: only its size is read.
    parts = Blob(rootfs_tar(file_contents(5, 4)))
    e = next(e for e in parts.entries if e["type"] == "reg" and e.get("size"))
    bomb = zstd.compress(b"\0" * (256 << 20), 19)
    start = int(e["offset"])  # type: ignore[call-overload]
    parts.data = parts.data[:start] + bomb + parts.data[int(e["endOffset"]):]  # type: ignore[call-overload]
    # (offsets after the file move: shift them)
    shift = len(bomb) - (int(e["endOffset"]) - start)  # type: ignore[call-overload]
    for other in parts.entries:
        if other is not e and int(other.get("offset", 0)) > start:  # type: ignore[call-overload]
            other["offset"] = int(other["offset"]) + shift  # type: ignore[call-overload]
            if other.get("endOffset"):
                other["endOffset"] = int(other["endOffset"]) + shift  # type: ignore[call-overload]
    e["endOffset"] = start + len(bomb)
    blob, ann = parts.assemble()
    path, digest = _write(tmp_path, blob)
    tracemalloc.start()
    try:
        with pytest.raises(ChunkedError, match="checksum mismatch"):
            _pull(store, path, digest, ann)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak
    _assert_nothing_left(store)
    # A TOC larger than announced, and one announced larger than Go reads into memory.
    parts = Blob(rootfs_tar(file_contents(5, 4)))
    huge = b'{"version":1,"entries":[' + b" " * (64 << 20) + b"]}"
    blob, ann = parts.assemble(manifest=huge)
    position = ann[MANIFEST_POSITION].split(":")
    ann[MANIFEST_POSITION] = ":".join([*position[:2], "1000", "1"])
    path, digest = _write(tmp_path, blob, "toc-bomb")
    with pytest.raises(ChunkedError, match="larger than announced"):
        _pull(store, path, digest, ann)
    ann[MANIFEST_POSITION] = ":".join([*position[:2], str(200 << 20), "1"])
    result = _pull(store, path, digest, ann)  # too big to read: Go falls back to a full pull
    assert not result.partial and "too big" in result.fallback_reason  # type: ignore[attr-defined]


class _Server(http.server.BaseHTTPRequestHandler):
    blob = b""
    answer = "whole"  # "whole": 200 and the blob whatever was asked; "garbage": wrong bytes

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        if self.answer == "whole" or not rng:
            body = self.blob
            self.send_response(200)
        else:
            first, last = (int(x) for x in rng.removeprefix("bytes=").split(",")[0].split("-"))
            body = os.urandom(last - first + 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(self.blob)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, type[_Server]]]:
    handler = type("Handler", (_Server,), {})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v2/x/blobs/b", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_registry_ignoring_ranges_gets_a_full_pull(store: Store, server: tuple[str, type[_Server]]) -> None:
    url, handler = server
    tar = rootfs_tar(file_contents(6, 6))
    blob, ann = Blob(tar).assemble()
    handler.blob = blob
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    result = pull_layer(store, HTTPBlobSource(url), digest=digest, size=len(blob), annotations=ann)
    assert not result.partial and "ignored the range request" in result.fallback_reason
    assert result.layer.compressed_digest == digest and result.layer.uncompressed_digest == (
        "sha256:" + hashlib.sha256(tar).hexdigest())


def test_registry_sending_other_bytes(store: Store, server: tuple[str, type[_Server]], tmp_path: Path,
                                     mode: str) -> None:
    url, handler = server
    _seed(store, tmp_path, mode, file_contents(7, 6))
    blob, ann = Blob(rootfs_tar(file_contents(7, 6))).assemble()
    handler.blob = blob
    handler.answer = "garbage"
    with pytest.raises(ChunkedError):
        pull_layer(store, HTTPBlobSource(url), digest="sha256:" + hashlib.sha256(blob).hexdigest(),
                   size=len(blob), annotations=ann)
    _assert_nothing_left(store)


def test_a_local_copy_that_changed(store: Store, tmp_path: Path) -> None:
    """A file of another layer that no longer has its TOC digest (the store was tampered with)
    is not reused as it is: the pull fails, naming it, and leaves nothing behind."""
    files = file_contents(8, 6)
    _seed(store, tmp_path, "by-file", files)
    (seed,) = store.layers()
    name = next(iter(files))
    victim = Path(store.graph_root) / "overlay" / seed.id / "diff" / name
    victim.write_bytes(b"X" * len(files[name]))  # same size, other content
    blob, ann = Blob(rootfs_tar(files)).assemble()
    path, digest = _write(tmp_path, blob)
    with pytest.raises(ChunkedError, match=r"its copy in another layer of the store changed"):
        _pull(store, path, digest, ann)
    _assert_nothing_left(store)


@pytest.mark.parametrize("change", ["removed", "resized", "fifo"])
def test_a_local_copy_that_went_away(store: Store, tmp_path: Path, change: str) -> None:
    """A file of another layer that is no longer a regular file of its TOC size (its layer's
    TOC, not the file, says where a copy is, as in Go): the pull fails naming it, without
    blocking on a FIFO, and leaves nothing behind."""
    files = file_contents(8, 6)
    _seed(store, tmp_path, "by-file", files)
    (seed,) = store.layers()
    name = next(iter(files))
    victim = Path(store.graph_root) / "overlay" / seed.id / "diff" / name
    victim.unlink()
    if change == "resized":
        victim.write_bytes(files[name] + b"more")
    elif change == "fifo":
        os.mkfifo(victim)
    blob, ann = Blob(rootfs_tar(files)).assemble()
    path, digest = _write(tmp_path, blob)
    with pytest.raises(ChunkedError, match=r"the local copy of .* went away"):
        _pull(store, path, digest, ann)
    _assert_nothing_left(store)


def test_a_failure_with_many_local_copies_ahead(store: Store, tmp_path: Path) -> None:
    """The first of 150 files reused from another layer changed: the pull fails at once, while
    the copies after it are being opened ahead of the stream; that thread ends, and every copy
    it opened is closed."""
    files = file_contents(9, 150)
    blob, ann = Blob(rootfs_tar(files, extra=False)).assemble()
    path, digest = _write(tmp_path, blob, "seed")
    assert _pull(store, path, digest, ann).partial  # type: ignore[attr-defined]
    (seed,) = store.layers()
    name = next(iter(files))
    victim = Path(store.graph_root) / "overlay" / seed.id / "diff" / name
    victim.write_bytes(b"X" * len(files[name]))
    files["extra-file"] = b"a file of its own, so that the layer is another one"
    blob, ann = Blob(rootfs_tar(files, extra=False)).assemble()
    path, digest = _write(tmp_path, blob)
    fds, threads = set(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task"))
    with pytest.raises(ChunkedError, match=r"its copy in another layer of the store changed"):
        _pull(store, path, digest, ann)
    _assert_nothing_left(store)
    # A joined thread has said it is done; the kernel may list it for a moment longer (under
    # the sanitizers, long enough to be seen).
    deadline = time.monotonic() + 10
    while len(os.listdir("/proc/self/task")) > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/task")) == threads
    assert set(os.listdir("/proc/self/fd")) <= fds
