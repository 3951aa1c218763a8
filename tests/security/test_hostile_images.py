"""Hostile image inputs: each is refused with an error naming the problem, the CLI exits 1, and
the store is exactly as it was (no half image, no orphan layer)."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clitools import run_inprocess
from containers_storage import errors, open_store
from containers_storage.store import Store
from containers_storage.transport import load
from imagetools import (
    five_layer_tars,
    layer_tar,
    make_layered_image,
    sha,
    store_state,
    tar_directory,
    write_docker_archive,
    write_layout,
)
from storetools import close_store

DRIVERS = ["vfs", "overlay"] if os.geteuid() == 0 else ["vfs"]


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest[7:]


def _layout(tmp: Path) -> tuple[Path, object]:
    image = make_layered_image(five_layer_tars())
    write_layout(tmp / "oci", [(image, "evil")])
    return tmp / "oci", image


def _rewrite_manifest(layout: Path, change: Callable[[dict[str, object]], None]) -> None:
    """Edit the manifest and re-point index.json at it (so only the edit is wrong)."""
    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][0]
    doc = json.loads(_blob(layout, desc["digest"]).read_bytes())
    change(doc)
    data = json.dumps(doc).encode()
    _blob(layout, sha(data)).write_bytes(data)
    desc["digest"], desc["size"] = sha(data), len(data)
    (layout / "index.json").write_text(json.dumps(index))


def truncated_archive(tmp: Path) -> tuple[Path, str]:
    layout, _ = _layout(tmp)
    tar_directory(layout, tmp / "a.tar")
    data = (tmp / "a.tar").read_bytes()
    (tmp / "a.tar").write_bytes(data[: len(data) * 2 // 3])
    return tmp / "a.tar", "truncated"


def truncated_blob(tmp: Path) -> tuple[Path, str]:
    layout, image = _layout(tmp)
    blob = _blob(layout, sha(image.blobs[3]))  # type: ignore[attr-defined]
    blob.write_bytes(blob.read_bytes()[:100])
    return layout, "truncated"


def corrupt_blob(tmp: Path) -> tuple[Path, str]:
    """Same size, other bytes: found while the layer streams, after layers below it are in."""
    layout, image = _layout(tmp)
    good = image.blobs[3]  # type: ignore[attr-defined]
    evil = gzip.compress(layer_tar({"evil": b"x" * 10}), mtime=0)
    evil = (evil + b"\0" * len(good))[: len(good)]  # trailing junk after the gzip member
    _blob(layout, sha(good)).write_bytes(evil)
    return layout, "gzip|digest|does not match"


def wrong_diff_id(tmp: Path) -> tuple[Path, str]:
    """The config's diff ID is not the layer's: refused when the diff has been read."""
    tars = five_layer_tars()
    image = make_layered_image(tars)
    config = json.loads(image.config)
    config["rootfs"]["diff_ids"][4] = sha(b"something else")
    cfg = json.dumps(config).encode()
    write_layout(tmp / "oci", [(image, "evil")])
    _blob(tmp / "oci", sha(cfg)).write_bytes(cfg)
    _rewrite_manifest(tmp / "oci", lambda m: m["config"].update(digest=sha(cfg), size=len(cfg)))  # type: ignore[attr-defined]
    return tmp / "oci", "uncompressed digest"


def manifest_digest_mismatch(tmp: Path) -> tuple[Path, str]:
    layout, _ = _layout(tmp)
    index = json.loads((layout / "index.json").read_text())
    path = _blob(layout, index["manifests"][0]["digest"])
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"schemaVersion": 2', b'"schemaVersion":  2')[: len(data)])
    return layout, "digest"


def missing_blob(tmp: Path) -> tuple[Path, str]:
    layout, image = _layout(tmp)
    _blob(layout, sha(image.blobs[2])).unlink()  # type: ignore[attr-defined]
    return layout, "missing"


def missing_config(tmp: Path) -> tuple[Path, str]:
    layout, image = _layout(tmp)
    _blob(layout, sha(image.config)).unlink()  # type: ignore[attr-defined]
    return layout, "config .* is missing"


def member_outside(tmp: Path) -> tuple[Path, str]:
    image = make_layered_image(five_layer_tars()[:2])
    write_docker_archive(tmp / "d.tar", [(image, ["evil:1"])])
    with tarfile.open(tmp / "d.tar", "a") as tar:
        info = tarfile.TarInfo("../x")
        info.size = 1
        import io

        tar.addfile(info, io.BytesIO(b"x"))
    return tmp / "d.tar", "outside the archive"


def member_absolute(tmp: Path) -> tuple[Path, str]:
    layout, _ = _layout(tmp)
    tar_directory(layout, tmp / "a.tar")
    with tarfile.open(tmp / "a.tar", "a") as tar:
        info = tarfile.TarInfo("/etc/evil")
        tar.addfile(info)
    return tmp / "a.tar", "absolute"


def manifest_json_names_outside(tmp: Path) -> tuple[Path, str]:
    image = make_layered_image(five_layer_tars()[:2])
    write_docker_archive(tmp / "d.tar", [(image, ["evil:1"])])
    with tarfile.open(tmp / "d.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    items = json.loads(members["manifest.json"])
    items[0]["Layers"][0] = "../../etc/passwd"
    members["manifest.json"] = json.dumps(items).encode()
    import io

    with tarfile.open(tmp / "d2.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tmp / "d2.tar", "outside the archive"


def huge_manifest(tmp: Path) -> tuple[Path, str]:
    layout, _ = _layout(tmp)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["size"] = 50 << 20
    (layout / "index.json").write_text(json.dumps(index))
    return layout, "too large"


def huge_config(tmp: Path) -> tuple[Path, str]:
    layout, _ = _layout(tmp)
    big = b'{"pad": "' + b"x" * (5 << 20) + b'"}'
    _blob(layout, sha(big)).write_bytes(big)
    _rewrite_manifest(layout, lambda m: m["config"].update(digest=sha(big), size=len(big)))  # type: ignore[attr-defined]
    return layout, "too large"


def huge_tar_manifest(tmp: Path) -> tuple[Path, str]:
    import io

    with tarfile.open(tmp / "d.tar", "w") as tar:
        data = b"[" + b" " * (2 << 20) + b"]"
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return tmp / "d.tar", "too large"


def no_such_platform(tmp: Path) -> tuple[Path, str]:
    image = make_layered_image([layer_tar({"a": b"a"})])
    write_layout(tmp / "oci", [(image, None)])
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.manifest_digest,
         "size": len(image.manifest), "platform": {"os": "plan9", "architecture": "mips"}}]}
    data = json.dumps(index).encode()
    _blob(tmp / "oci", sha(data)).write_bytes(data)
    (tmp / "oci" / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(data), "size": len(data)}]}))
    return tmp / "oci", "no image found in image index"


def unknown_layer_type(tmp: Path) -> tuple[Path, str]:
    layout, _ = _layout(tmp)
    _rewrite_manifest(layout, lambda m: m["layers"][1].update(mediaType="application/x-evil"))  # type: ignore[index]
    return layout, "unknown media type 'application/x-evil'"


def unknown_manifest_type(tmp: Path) -> tuple[Path, str]:
    layout, _ = _layout(tmp)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["mediaType"] = "application/vnd.evil+json"
    (layout / "index.json").write_text(json.dumps(index))
    return layout, "unknown media type"


def not_an_image(tmp: Path) -> tuple[Path, str]:
    (tmp / "junk").write_bytes(os.urandom(5000))
    return tmp / "junk", "truncated|invalid tar header|does not match"


CASES = [truncated_archive, truncated_blob, corrupt_blob, wrong_diff_id, manifest_digest_mismatch,
         missing_blob, missing_config, member_outside, member_absolute, manifest_json_names_outside,
         huge_manifest, huge_config, huge_tar_manifest, no_such_platform, unknown_layer_type,
         unknown_manifest_type, not_an_image]


@pytest.fixture(autouse=True)
def apply_path() -> str:
    """These inputs are refused by the transport, whatever applies layers: one apply path
    (the security suite's accel/pure pair is for hostile tarballs)."""
    return "default"


@pytest.fixture(params=DRIVERS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(graph_root=tmp_path / "root", run_root=tmp_path / "run", driver=request.param,
                   use_config=False)
    # Something already there that the bad input shares layers with.
    good = make_layered_image(five_layer_tars()[:2])
    write_layout(tmp_path / "good", [(good, "good")])
    load(s, tmp_path / "good")
    yield s
    close_store(s)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_hostile_input_is_refused_and_the_store_is_unchanged(
        store: Store, tmp_path: Path, case: Callable[[Path], tuple[Path, str]]) -> None:
    work = tmp_path / "case"
    work.mkdir()
    path, message = case(work)
    before = store_state(store.graph_root)
    with pytest.raises(errors.StorageError, match=message):
        load(store, path)
    assert store_state(store.graph_root) == before
    # the CLI says so and exits 1
    result = run_inprocess(["--graph", store.graph_root, "--run", store.run_root, "--storage-driver",
                            store.driver_name, "load", "-i", str(path)])
    assert result.code == 1
    assert result.err.startswith("load: ") and result.out == ""
    assert store_state(store.graph_root) == before
    assert [i.names for i in store.images()] == [["localhost/good:latest"]]
