"""Partial pulls into a real overlay store: the layer equals a full pull's, record and files.

The blob source is a local file here (tests/compat/test_chunked_skopeo.py pulls over HTTP from a
registry beside skopeo).  Each test checks what a partial pull promises: the same files as the
tarball's plain import, Go's record (toc-digest, the diff digest and size, the zstd-chunked big
data, a tar-split that gives the tarball back), what was reused instead of fetched, and the
full-pull fallbacks where Go falls back.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chunkedtools import Blob, changed_files, estargz_blob, file_contents, rootfs_tar, tree
from containers_storage.archive.chunked import (
    BadRangeRequest,
    ChunkedError,
    FileBlobSource,
    compress,
    new_differ,
    pull_layer,
    toc_digest,
)
from containers_storage.config import StoreOptions
from containers_storage.idtools import IDMap
from containers_storage.store import Store, get_store
from drivertools import IS_ROOT
from storetools import close_store

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="overlay mounts need root")

MANIFEST_KEY = "zstd-chunked-manifest"


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[Store]]:
    made: list[Store] = []
    yield made
    for s in made:
        close_store(s)


def _store(stores: list[Store], base: Path, driver: str = "overlay", **pull: str) -> Store:
    s = get_store(StoreOptions(graph_root=str(base / "root"), run_root=str(base / "run"), driver_name=driver,
                               pull_options={"enable_partial_images": "true", **pull}))
    stores.append(s)
    return s


def _blob_file(tmp_path: Path, tar: bytes, name: str = "blob") -> tuple[Path, dict[str, str], str]:
    path = tmp_path / name
    with open(path, "wb") as out:
        written = compress(io.BytesIO(tar), out)
    return path, written.annotations, written.digest


def _pull(store: Store, path: Path, annotations: dict[str, str], digest: str, **kw: object
          ) -> tuple[object, FileBlobSource]:
    source = FileBlobSource(path)
    result = pull_layer(store, source, digest=digest, size=path.stat().st_size, annotations=annotations,
                        **kw)  # type: ignore[arg-type]
    source.close()
    return result, source


def _diff_dir(store: Store, layer_id: str) -> Path:
    return Path(store.graph_root) / "overlay" / layer_id / "diff"


def _diff(store: Store, layer_id: str) -> bytes:
    out = io.BytesIO()
    store.diff(layer_id, out)
    return out.getvalue()


def _staging_left(store: Store) -> list[str]:
    staging = Path(store.graph_root) / "overlay" / "staging"
    return os.listdir(staging) if staging.exists() else []


def test_partial_pull_equals_full_pull(stores: list[Store], tmp_path: Path) -> None:
    tar = rootfs_tar(file_contents(1, 40))
    path, ann, digest = _blob_file(tmp_path, tar)
    store = _store(stores, tmp_path / "s")
    result, source = _pull(store, path, ann, digest)
    assert result.partial  # type: ignore[attr-defined]
    assert source.requests == 2  # the TOC and tar-split, then every file's frames
    layer = store.layer(result.layer.id)  # type: ignore[attr-defined]
    # Go's record: toc-digest, the tarball's digest and size, owners from the TOC, no blob digest.
    record = json.loads((Path(store.graph_root) / "overlay-layers/layers.json").read_text())[0]
    assert list(record) == ["id", "created", "diff-digest", "toc-digest", "diff-size", "uidset", "gidset",
                            "big-data-names"]
    import hashlib

    assert record["id"] == hashlib.sha256(tar).hexdigest()  # c/image's ID for a base layer
    assert record["diff-digest"] == "sha256:" + record["id"] and record["diff-size"] == len(tar)
    assert record["toc-digest"] == toc_digest(ann)
    assert (record["uidset"], record["gidset"]) == ([0, 1000], [0, 1001])
    assert record["big-data-names"] == [MANIFEST_KEY, "zstd-chunked-layer-data"]
    assert store.layer_big_data(layer.id, "zstd-chunked-layer-data") == b'{"format":0}'
    assert json.loads(store.layer_big_data(layer.id, MANIFEST_KEY))["entries"][0]["name"] == "etc/"
    assert [x.id for x in store.layers_by_toc_digest(toc_digest(ann) or "")] == [layer.id]
    assert _diff(store, layer.id) == tar
    # File for file what the tarball makes when imported whole.
    full = _store(stores, tmp_path / "full")
    plain = full.put_layer(io.BytesIO(tar)).layer
    assert tree(_diff_dir(store, layer.id)) == tree(_diff_dir(full, plain.id))
    assert _staging_left(store) == [] and os.listdir(Path(store.run_root)) != []
    assert not [p for p in Path(store.run_root).iterdir() if p.name.startswith("tmp")]


def test_a_second_layer_reuses_files_and_chunks(stores: list[Store], tmp_path: Path) -> None:
    files = file_contents(2, 40)
    tar1 = rootfs_tar(files)
    files2 = changed_files(files, changed=2)
    big = next(n for n, d in files.items() if len(d) > 150_000)
    files2[big] = files[big][:-20_000] + b"x" * 20_000  # a changed tail: its first chunks are kept
    tar2 = rootfs_tar(files2)
    p1, a1, d1 = _blob_file(tmp_path, tar1, "one")
    p2, a2, d2 = _blob_file(tmp_path, tar2, "two")
    store = _store(stores, tmp_path / "s")
    first, _ = _pull(store, p1, a1, d1)
    second, source = _pull(store, p2, a2, d2)
    assert second.partial  # type: ignore[attr-defined]
    assert source.bytes_read < 0.15 * p2.stat().st_size, (source.bytes_read, p2.stat().st_size)
    layer = second.layer  # type: ignore[attr-defined]
    assert _diff(store, layer.id) == tar2
    full = _store(stores, tmp_path / "full")
    plain = full.put_layer(io.BytesIO(tar2)).layer
    assert tree(_diff_dir(store, layer.id)) == tree(_diff_dir(full, plain.id))
    # Cloned or copied, never linked: each layer has its own inode.
    unchanged = next(n for n in files if files[n] == files2[n])
    assert os.stat(_diff_dir(store, layer.id) / unchanged).st_ino != os.stat(
        _diff_dir(store, first.layer.id) / unchanged).st_ino  # type: ignore[attr-defined]


def test_use_hard_links_shares_inodes(stores: list[Store], tmp_path: Path) -> None:
    files = file_contents(3, 12)
    p1, a1, d1 = _blob_file(tmp_path, rootfs_tar(files), "one")
    tar2 = rootfs_tar(changed_files(files, changed=1))
    p2, a2, d2 = _blob_file(tmp_path, tar2, "two")
    store = _store(stores, tmp_path / "s", use_hard_links="true")
    first, _ = _pull(store, p1, a1, d1)
    second, _ = _pull(store, p2, a2, d2)
    name = "usr/lib/f011"
    a = os.stat(_diff_dir(store, first.layer.id) / name)  # type: ignore[attr-defined]
    b = os.stat(_diff_dir(store, second.layer.id) / name)  # type: ignore[attr-defined]
    assert a.st_ino == b.st_ino and a.st_nlink >= 2
    assert _diff(store, second.layer.id) == tar2  # type: ignore[attr-defined]


def test_fallbacks_where_go_falls_back(stores: list[Store], tmp_path: Path) -> None:
    tar = rootfs_tar(file_contents(4, 6))
    path, ann, digest = _blob_file(tmp_path, tar)
    off = _store(stores, tmp_path / "off", enable_partial_images="false")
    result, source = _pull(off, path, ann, digest)
    assert not result.partial and result.fallback_reason == "partial images are disabled"  # type: ignore[attr-defined]
    assert source.requests == 0 and off.layer(result.layer.id).compressed_digest == digest  # type: ignore[attr-defined]
    vfs = _store(stores, tmp_path / "vfs", driver="vfs")
    result, _ = _pull(vfs, path, ann, digest)
    assert result.fallback_reason == "graph driver vfs does not support partial pull"  # type: ignore[attr-defined]
    store = _store(stores, tmp_path / "notoc")
    result, _ = _pull(store, path, {}, digest)
    assert result.fallback_reason == "no TOC found and convert_images is not configured"  # type: ignore[attr-defined]
    assert _diff(store, result.layer.id) != b""  # type: ignore[attr-defined]


def test_convert_images_makes_a_plain_layer_partial(stores: list[Store], tmp_path: Path) -> None:
    import gzip
    import hashlib

    tar = rootfs_tar(file_contents(5, 8))
    path = tmp_path / "blob.gz"
    path.write_bytes(gzip.compress(tar, mtime=0))
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    store = _store(stores, tmp_path / "s", convert_images="true")
    result, source = _pull(store, path, {}, digest)
    assert result.partial and source.requests == 1  # type: ignore[attr-defined]
    raw = store.layer(result.layer.id).raw  # type: ignore[attr-defined]
    assert raw["compressed-diff-digest"] == digest
    assert raw["diff-digest"] == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert not raw.get("toc-digest") and MANIFEST_KEY in raw["big-data-names"]
    assert _diff(store, result.layer.id) == tar  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="invalid digest to convert"):
        _pull(store, path, {}, "sha256:" + "0" * 64, id="other")
    assert _staging_left(store) == []


def test_estargz_and_go_1_43_layers_need_the_insecure_option(stores: list[Store], tmp_path: Path) -> None:
    tar = rootfs_tar(file_contents(6, 10), whiteout=False)
    blob, ann = estargz_blob(tar)
    path = tmp_path / "estargz"
    path.write_bytes(blob)
    import hashlib

    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    strict = _store(stores, tmp_path / "strict")
    result, _ = _pull(strict, path, ann, digest)
    assert not result.partial and "estargz layers don't support" in result.fallback_reason  # type: ignore[attr-defined]
    store = _store(stores, tmp_path / "s", insecure_allow_unpredictable_image_contents="true")
    result, source = _pull(store, path, ann, digest)
    assert result.partial and source.requests == 3  # type: ignore[attr-defined]
    raw = store.layer(result.layer.id).raw  # type: ignore[attr-defined]
    assert raw["toc-digest"] == toc_digest(ann) and not raw.get("diff-digest") and raw["diff-size"] == -1
    assert not Path(store.layer_store.tar_split_path(result.layer.id)).exists()  # type: ignore[attr-defined]
    # The files are the tarball's (but the TOC's landmark files and the TOC itself).
    full = _store(stores, tmp_path / "full")
    assert tree(_diff_dir(store, result.layer.id)) == tree(  # type: ignore[attr-defined]
        _diff_dir(full, full.put_layer(io.BytesIO(tar)).layer.id))
    # Go 1.43's zstd:chunked: no tar-split, the old annotation names, read through the footer.
    parts = Blob(tar)
    legacy, lann = parts.assemble(legacy=True)
    lpath = tmp_path / "legacy"
    lpath.write_bytes(legacy)
    ldigest = "sha256:" + hashlib.sha256(legacy).hexdigest()
    result, _ = _pull(strict, lpath, lann, ldigest)
    assert not result.partial and "without tar-split" in result.fallback_reason  # type: ignore[attr-defined]
    result, _ = _pull(store, lpath, lann, ldigest)
    assert result.partial  # type: ignore[attr-defined]
    assert tree(_diff_dir(store, result.layer.id)) == tree(  # type: ignore[attr-defined]
        _diff_dir(full, full.layers()[0].id))


def test_fewer_ranges_when_the_source_refuses_many(stores: list[Store], tmp_path: Path) -> None:
    files = file_contents(7, 30)
    p1, a1, d1 = _blob_file(tmp_path, rootfs_tar(files), "one")
    # Every third file changed: the missing frames lie apart, in several ranges.
    files2 = dict(files)
    for name in list(files)[::3]:
        files2[name] = os.urandom(len(files[name]) // 3 + 10)
    tar2 = rootfs_tar(files2)
    p2, a2, d2 = _blob_file(tmp_path, tar2, "two")
    asked: list[int] = []

    class Picky(FileBlobSource):
        def get_blob_at(self, chunks):  # type: ignore[no-untyped-def]
            asked.append(len(chunks))
            if len(chunks) > 2 and len(asked) > 1:
                raise BadRangeRequest()
            return super().get_blob_at(chunks)

    store = _store(stores, tmp_path / "s")
    _pull(store, p1, a1, d1)
    with Picky(p2) as source, new_differ(store, blob_digest=d2, blob_size=p2.stat().st_size, annotations=a2,
                                         source=source) as differ:
        staged = store.prepare_staged_layer(differ=differ)
    layer = store.apply_staged_layer(staged)
    # The TOC request, then Go's halving of the ranges until the source takes them.
    assert asked[0] == 2 and asked[1] > 4 and asked[-1] <= 2
    assert all(b < a for a, b in itertools.pairwise(asked[1:])), asked
    assert _diff(store, layer.id) == tar2


def test_id_mapped_partial_layer(stores: list[Store], tmp_path: Path) -> None:
    tar = rootfs_tar(file_contents(8, 4))
    path, ann, digest = _blob_file(tmp_path, tar)
    store = _store(stores, tmp_path / "s")
    source = FileBlobSource(path)
    maps = [IDMap(0, 100_000, 65536)]
    with new_differ(store, blob_digest=digest, blob_size=path.stat().st_size, annotations=ann,
                    source=source) as differ:
        staged = store.prepare_staged_layer(differ=differ, uid_map=maps, gid_map=maps)
    layer = store.apply_staged_layer(staged)
    st = os.stat(_diff_dir(store, layer.id) / "etc/owned")
    assert (st.st_uid, st.st_gid) == (101_000, 101_001)
    assert store.layer(layer.id).raw["uidset"] == [0, 1000]


def test_diff_emits_zstd_chunked(stores: list[Store], tmp_path: Path) -> None:
    tar = rootfs_tar(file_contents(9, 10))
    plain = _store(stores, tmp_path / "plain")
    layer = plain.put_layer(io.BytesIO(tar)).layer
    out = io.BytesIO()
    written = plain.diff_zstd_chunked(layer.id, out)
    assert written.diff_id == layer.uncompressed_digest and written.size == len(out.getvalue())
    path = tmp_path / "blob"
    path.write_bytes(out.getvalue())
    store = _store(stores, tmp_path / "s")
    result, _ = _pull(store, path, written.annotations, written.digest)
    assert result.partial and _diff(store, result.layer.id) == tar  # type: ignore[attr-defined]


def test_cli_applydiff_using_staging_dir(tmp_path: Path) -> None:
    """Go 1.60/1.63's record for it: toc-digest, diff-digest, diff-size, the zstd-chunked big data
    and no compressed digest; compared field by field with Go's when it is installed."""
    import shutil
    import sys

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "file1").write_bytes(os.urandom(150_000))
    (src / "sub/x").write_bytes(b"hi\n")
    (src / "sub/l").symlink_to("../file1")
    records = {}
    for name, cli in (("ours", [sys.executable, "-m", "containers_storage"]),
                      ("go", [shutil.which("go-cs-1.63") or "/usr/local/bin/go-cs-1.63"])):
        if name == "go" and not os.path.exists(cli[0]):
            continue
        base = tmp_path / name
        conf = base / "storage.conf"
        base.mkdir()
        conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{base}/root"\nrunroot = "{base}/run"\n'
                        '[storage.options.pull_options]\nenable_partial_images = "true"\n')
        env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
        layer = subprocess.run([*cli, "create-layer"], env=env, capture_output=True, text=True, check=True)
        done = subprocess.run([*cli, "applydiff-using-staging-dir", layer.stdout.strip(), str(src)], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        (records[name],) = json.loads((base / "root/overlay-layers/layers.json").read_text())
        lid = records[name]["id"]
        records[name]["manifest"] = json.loads(
            (base / "root/overlay-layers" / lid / "=enN0ZC1jaHVua2VkLW1hbmlmZXN0").read_text())
        import gzip

        ts_path = base / f"root/overlay-layers/{lid}.tar-split.gz"
        records[name]["tar-split"] = gzip.decompress(ts_path.read_bytes())
        assert (base / f"root/overlay/{lid}/diff/file1").read_bytes() == (src / "file1").read_bytes()
        subprocess.run([*cli, "shutdown"], env=env, capture_output=True)
        subprocess.run(["umount", "-R", str(base / "root/overlay")], capture_output=True)
    ours = records["ours"]
    assert [k for k in ours if k not in ("manifest", "tar-split")] == [
        "id", "created", "diff-digest", "toc-digest", "diff-size", "uidset", "gidset", "big-data-names"]
    assert ours["big-data-names"] == [MANIFEST_KEY, "zstd-chunked-layer-data"]
    if "go" in records:
        go = records["go"]
        assert set(go) == set(ours)
        for key in ("diff-digest", "diff-size", "uidset", "gidset", "tar-split"):
            assert ours[key] == go[key], key

        def without_offsets(m: dict[str, list[dict[str, object]]]) -> list[dict[str, object]]:
            return [{k: v for k, v in e.items() if k not in ("offset", "endOffset")} for e in m["entries"]]

        assert without_offsets(ours["manifest"]) == without_offsets(go["manifest"])


@pytest.mark.parametrize("fs", ["xfs_mount", "btrfs_mount"])
def test_reflinks_where_the_file_system_has_them(on_loop_fs: Callable[[str], str], fs: str) -> None:
    """On XFS (reflink=1, mkfs.xfs's default) and btrfs a file of another layer is cloned: the
    two layers' files share their extents, and nothing is hard linked."""
    from dedupcase import first_extent

    base = Path(on_loop_fs(fs))
    files = file_contents(10, 6)
    p1, a1, d1 = _blob_file(base, rootfs_tar(files), "one")
    files2 = changed_files(files, changed=1)
    tar2 = rootfs_tar(files2)
    p2, a2, d2 = _blob_file(base, tar2, "two")
    made: list[Store] = []
    try:
        store = _store(made, base / "s")
        first, _ = _pull(store, p1, a1, d1)
        second, _ = _pull(store, p2, a2, d2)
        assert _diff(store, second.layer.id) == tar2  # type: ignore[attr-defined]
        name = "usr/lib/f002"  # large, unchanged
        a = _diff_dir(store, first.layer.id) / name  # type: ignore[attr-defined]
        b = _diff_dir(store, second.layer.id) / name  # type: ignore[attr-defined]
        assert a.read_bytes() == b.read_bytes() and os.stat(a).st_ino != os.stat(b).st_ino
        assert first_extent(str(a)) == first_extent(str(b))
        # Every unchanged file past btrfs's inline size is a clone, whichever loop applied it
        # (the C loop takes the small ones whole from its buffer, the Python path the rest).
        same = [n for n, data in files.items() if files2[n] == data and len(data) > 4096]
        assert len(same) >= 3, same
        for n in same:
            a, b = (_diff_dir(store, r.layer.id) / n for r in (first, second))  # type: ignore[attr-defined]
            assert first_extent(str(a)) == first_extent(str(b)), n
    finally:
        for s in made:
            close_store(s)


def test_a_partial_layer_on_a_parent(stores: list[Store], tmp_path: Path) -> None:
    """Over a parent: c/image's chain ID, the parent recorded, the diff against it the tarball,
    the layer's root directory taking the parent's mode (the tarball sets none)."""
    import hashlib

    lower_tar = rootfs_tar(file_contents(11, 4), extra=False)
    upper_tar = rootfs_tar(changed_files(file_contents(11, 4), changed=1), extra=False)
    p1, a1, d1 = _blob_file(tmp_path, lower_tar, "lower")
    p2, a2, d2 = _blob_file(tmp_path, upper_tar, "upper")
    store = _store(stores, tmp_path / "s")
    lower, _ = _pull(store, p1, a1, d1)
    os.chmod(_diff_dir(store, lower.layer.id), 0o751)  # type: ignore[attr-defined]
    upper, _ = _pull(store, p2, a2, d2, parent=lower.layer.id)  # type: ignore[attr-defined]
    layer = store.layer(upper.layer.id)  # type: ignore[attr-defined]
    diff_id = hashlib.sha256(upper_tar).hexdigest()
    assert layer.id == hashlib.sha256(f"{lower.layer.id}+{diff_id}".encode()).hexdigest()  # type: ignore[attr-defined]
    assert layer.parent == lower.layer.id  # type: ignore[attr-defined]
    assert _diff(store, layer.id) == upper_tar
    assert os.stat(_diff_dir(store, layer.id)).st_mode & 0o7777 == 0o751


def test_a_toc_read_late_is_held_to_the_same_checks(stores: list[Store], tmp_path: Path) -> None:
    """A store with nothing to reuse reads a layer's TOC only once the apply has started: a TOC
    naming no tar-split still falls back to a full pull (as Go does when it reads it first); one
    naming another tar-split, or no JSON at all, is refused; nothing is left behind."""
    import hashlib

    tar = rootfs_tar(file_contents(5, 12), whiteout=False)
    parts = Blob(tar)
    no_ts = json.dumps({k: v for k, v in parts.toc.items() if k != "tarSplitDigest"}).encode()
    other_ts = json.dumps({**parts.toc, "tarSplitDigest": "sha256:" + "1" * 64}).encode()
    store = _store(stores, tmp_path / "s")

    def blob(manifest: bytes, name: str) -> tuple[Path, dict[str, str], str]:
        data, ann = parts.assemble(manifest=manifest)
        path = tmp_path / name
        path.write_bytes(data)
        return path, ann, "sha256:" + hashlib.sha256(data).hexdigest()

    def nothing_left() -> None:
        assert store.layers() == []
        staging = Path(store.graph_root) / "overlay" / "staging"
        assert not staging.exists() or list(staging.iterdir()) == []

    path, ann, digest = blob(b'{"version":1,"entries":[', "not-json")
    with FileBlobSource(path) as source:  # read late: new_differ does not see it yet
        new_differ(store, blob_digest=digest, blob_size=path.stat().st_size, annotations=ann,
                   source=source).close()
    with pytest.raises(ChunkedError, match="read zstd:chunked manifest: TOC is not JSON"):
        _pull(store, path, ann, digest)
    nothing_left()
    path, ann, digest = blob(other_ts, "other-tar-split")
    with pytest.raises(ChunkedError, match="tar-split: invalid blob checksum, expected checksum sha256:1111"):
        _pull(store, path, ann, digest)
    nothing_left()
    path, ann, digest = blob(no_ts, "no-tar-split")
    result, _ = _pull(store, path, ann, digest)
    assert not result.partial and "without tar-split" in result.fallback_reason  # type: ignore[attr-defined]
    full = _store(stores, tmp_path / "full")
    assert tree(_diff_dir(store, result.layer.id)) == tree(  # type: ignore[attr-defined]
        _diff_dir(full, full.put_layer(io.BytesIO(tar)).layer.id))
    # And the same layer as it should be: applied whole, partially.
    data, ann = parts.assemble()
    path, digest = tmp_path / "good", "sha256:" + hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    store.delete_layer(result.layer.id)  # type: ignore[attr-defined]
    result, _ = _pull(store, path, ann, digest)
    assert result.partial  # type: ignore[attr-defined]
    assert tree(_diff_dir(store, result.layer.id)) == tree(  # type: ignore[attr-defined]
        _diff_dir(full, full.layers()[0].id))


def _staged_big_data(store: Store) -> list[str]:
    layers_dir = Path(store.graph_root) / "overlay-layers"
    return [p.name for p in layers_dir.iterdir() if p.name.startswith(".staged")]


@pytest.mark.parametrize("reuse", [False, True], ids=["applied-whole", "file-by-file"])
def test_the_manifest_is_staged_and_never_left_behind(stores: list[Store], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, reuse: bool) -> None:
    """The TOC is written (and synced) beside the records as the apply ends and renamed into
    place by the commit; a pull that fails after writing it, and one that finds its layer made
    already, leave no copy of it behind."""
    from containers_storage.archive.chunked import differ as differ_mod

    store = _store(stores, tmp_path / "s")
    files = file_contents(5, 12)
    if reuse:  # a partially pulled layer to reuse files from: the file-by-file path
        path, ann, digest = _blob_file(tmp_path, rootfs_tar(files), "seed")
        _pull(store, path, ann, digest)
    tar = rootfs_tar(changed_files(files))
    path, ann, digest = _blob_file(tmp_path, tar)
    real = differ_mod.ChunkedDiffer._stream_ended
    staged: list[str] = []

    def stage_then_fail(self: object, layer_toc: object, tmp_dir: str, out: object) -> None:
        real(self, layer_toc, tmp_dir, out)  # type: ignore[arg-type]
        staged.extend(out.big_data_files.values())  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(differ_mod.ChunkedDiffer, "_stream_ended", stage_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _pull(store, path, ann, digest)
    assert staged and not os.path.exists(staged[0])
    assert _staged_big_data(store) == [] and _staging_left(store) == []
    monkeypatch.undo()
    result, _ = _pull(store, path, ann, digest)
    layer = result.layer  # type: ignore[attr-defined]
    manifest = store.layer_big_data(layer.id, MANIFEST_KEY)
    assert json.loads(manifest)["entries"] and store.layer(layer.id).big_data_names == [
        MANIFEST_KEY, "zstd-chunked-layer-data"]
    again, _ = _pull(store, path, ann, digest)  # made already: what it staged is dropped
    assert again.layer.id == layer.id  # type: ignore[attr-defined]
    assert store.layer_big_data(layer.id, MANIFEST_KEY) == manifest
    assert _staged_big_data(store) == [] and _staging_left(store) == []
