"""The fast listing path (snapshot.py, no Store) must print exactly what the Store path prints,
and must step aside whenever the store would do something a reader cannot (repairs, errors)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clitools import CLI, run_inprocess, run_script
from containers_storage import snapshot
from containers_storage.cli import main as cli_main

LISTINGS = [["layers"], ["layers", "--json"], ["layers", "-q"], ["images"], ["images", "--json"],
            ["images", "-q"], ["containers"], ["containers", "--json"]]


def _both(monkeypatch: pytest.MonkeyPatch, argv: list[str], code: int = 0) -> tuple[bytes, bytes]:
    fast = run_script(argv)
    with monkeypatch.context() as m:
        m.setattr(cli_main, "_FAST", frozenset())
        m.setattr(cli_main, "_FAST_LOOKUPS", frozenset())
        slow = run_inprocess(argv)
    assert fast.code == slow.code == code, (fast.err, slow.err)
    assert fast.err == slow.err
    return fast.raw, slow.raw


def _populate(cli: CLI, *extra: str) -> None:
    cli.ok(*extra, "create-layer", "-n", "base")
    cli.ok(*extra, "create-layer", "-n", "top", "base")
    image = cli.ok(*extra, "create-image", "-n", "img", "top").lines[0]
    cli.ok(*extra, "set-image-data", image, "manifest", stdin=b'{"schemaVersion":2}')
    cli.ok(*extra, "create-container", "-n", "ctr", "img")
    cli.ok(*extra, "create-container", "--volatile", "-n", "vol", "img")


@pytest.mark.parametrize("extra", [(), ("--transient-store",)], ids=["plain", "transient"])
def test_fast_and_store_paths_agree(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...]
                                    ) -> None:
    _populate(cli_sub, *extra)
    assert snapshot.take(cli_sub.root, cli_sub.run_root, "vfs", transient=bool(extra)) is not None
    for argv in LISTINGS:
        fast, slow = _both(monkeypatch, [*cli_sub.globals, *extra, *argv])
        assert fast == slow, argv
    # The image's digest comes from its manifest: Go fills it in, in the struct's place.
    image = json.loads(_both(monkeypatch, [*cli_sub.globals, *extra, "images", "--json"])[0])[0]
    assert list(image)[:3] == ["id", "digest", "names"]


def test_additional_image_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ro = CLI(str(tmp_path / "ro"), str(tmp_path / "ro-run"), "script")
    ro.ok("create-layer", "-n", "ro-layer")
    ro.ok("create-image", "-n", "ro-img", "ro-layer")
    rw = CLI(str(tmp_path / "rw"), str(tmp_path / "rw-run"), "script")
    rw.ok("create-layer", "-n", "rw-layer")
    opt = ["--storage-opt", f"vfs.imagestore={ro.root}"]
    rw.ok(*opt, "layers")  # let the store create whatever it creates on first use
    for argv in LISTINGS:
        fast, slow = _both(monkeypatch, [*rw.globals, *opt, *argv])
        assert fast == slow, argv
    assert b"ro-img" in _both(monkeypatch, [*rw.globals, *opt, "images"])[0]


def test_records_not_in_go_form_are_rewritten(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    _populate(cli_sub)
    path = os.path.join(cli_sub.root, "vfs-layers", "layers.json")
    with open(path) as f:
        layers = json.load(f)
    layers[0]["future-field"] = "dropped, as Go's struct drops it"
    layers[0]["names"] = ["base", "caf\u00e9 <x>"]
    layers[1]["compressed-size"] = 0
    with open(path, "w") as f:
        json.dump(layers, f, indent=2)  # pretty-printed, \u-escaped: not Go's bytes
    fast, slow = _both(monkeypatch, [*cli_sub.globals, "layers", "--json"])
    assert fast == slow
    listed = json.loads(fast)
    assert "future-field" not in listed[0] and "compressed-size" not in listed[1]
    assert "café \\u003cx\\u003e".encode() in fast


def test_incomplete_layer_is_left_to_the_store(cli_sub: CLI) -> None:
    _populate(cli_sub)
    path = os.path.join(cli_sub.root, "vfs-layers", "layers.json")
    with open(path) as f:
        layers = json.load(f)
    layers.append({"id": "f" * 64, "created": "2024-01-01T00:00:00Z", "flags": {"incomplete": True}})
    with open(path, "w") as f:
        json.dump(layers, f)
    assert snapshot.take(cli_sub.root, cli_sub.run_root, "vfs") is None
    assert "f" * 64 not in cli_sub.ok("layers").out  # the store finished deleting it
    assert snapshot.take(cli_sub.root, cli_sub.run_root, "vfs") is not None


def test_duplicate_names_and_missing_stores(cli_sub: CLI, tmp_path: Path) -> None:
    assert snapshot.take(cli_sub.root, cli_sub.run_root, "vfs") is None  # nothing created yet
    _populate(cli_sub)
    path = os.path.join(cli_sub.root, "vfs-images", "images.json")
    with open(path) as f:
        images = json.load(f)
    images.append({**images[0], "id": "e" * 64})
    with open(path, "w") as f:
        json.dump(images, f)
    assert snapshot.take(cli_sub.root, cli_sub.run_root, "vfs") is None
    assert snapshot.take(cli_sub.root, cli_sub.run_root, "") is None
    assert snapshot.take(cli_sub.root, str(tmp_path / "elsewhere"), "vfs") is None


def test_invalid_driver_options_still_fail(cli_sub: CLI) -> None:
    _populate(cli_sub)
    result = cli_sub.fails("--storage-opt", "vfs.bogus=1", "layers")
    assert result.out == "error initializing: vfs driver does not support vfs.bogus options\n"


def test_fast_lookups_agree_with_the_store(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    _populate(cli_sub)
    base = cli_sub.ok("layer", "--json", "base").out
    prefix = json.loads(base)[0]["id"][:12]
    cases: list[tuple[list[str], int]] = [
        (["exists", "base", "img", "ctr", prefix], 0), (["exists", "nosuch", "base"], 1),
        (["exists", "--json", "-l", "img", "base"], 1), (["exists", "-c", "ctr"], 0),
        (["exists", "-q", "-i", "base"], 1), (["layer", "top", "nosuch"], 1),
        (["layer", "--json", prefix], 0),
        (["get-names", "img"], 0), (["getnames", "--json", "top"], 0), (["get-names", "nosuch"], 1),
        (["metadata", "ctr", "img", "nosuch"], 1), (["metadata", "-q", "--json", "base"], 0),
    ]
    for argv, code in cases:
        fast, slow = _both(monkeypatch, [*cli_sub.globals, *argv], code)
        assert fast == slow, argv


def test_fast_image_agrees_with_the_store(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc/file")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    (tmp_path / "layer.tar").write_bytes(buf.getvalue())
    base = cli_sub.ok("import-layer", "-n", "imported", "-f", str(tmp_path / "layer.tar")).lines[0]
    cli_sub.ok("create-layer", "-n", "unsized", base)  # no digest: its size needs the Store
    image = cli_sub.ok("create-image", "-n", "img", base).lines[0]
    cli_sub.ok("set-image-data", image, "manifest", stdin=b'{"schemaVersion":2}')
    cli_sub.ok("create-image", "-n", "img2", "unsized")
    cases = [(["image", "img"], 0), (["image", "img", "nosuch"], 1), (["image", "--json", "img"], 0),
             (["image", "img2", "img"], 0)]
    for argv, code in cases:
        fast, slow = _both(monkeypatch, [*cli_sub.globals, *argv], code)
        assert fast == slow, argv
    # The first image is answered from the snapshot (all sizes recorded); the second is not.
    from containers_storage import lockfile
    from containers_storage.cli import lookups
    from containers_storage.cli.output import Output

    monkeypatch.setattr(lockfile, "_registry", {})  # as in a fresh CLI process
    snap = snapshot.take(cli_sub.root, cli_sub.run_root, "vfs")
    assert snap is not None
    sink = Output()
    assert lookups._image(snap, ["img"], False, sink) == 0
    assert lookups._image(snap, ["img2"], False, sink) is None
