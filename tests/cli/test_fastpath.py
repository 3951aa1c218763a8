"""The fast listing path (snapshot.py, no Store) must print exactly what the Store path prints,
and must step aside whenever the store would do something a reader cannot (repairs, errors)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def _entry(cli: CLI, kind: str) -> Any:
    from containers_storage import recordcache

    source = os.path.join(cli.root, f"vfs-{kind}", f"{kind}.json")
    where = recordcache.cache_file(cli.run_root, source)
    with open(source, "rb") as f:
        return recordcache.Entry(f.read(), where)


@pytest.mark.parametrize("volatile", [False, True], ids=["one-file", "with-volatile"])
def test_big_stores_answer_from_their_cache_entries_as_the_store_does(
        cli_sub: CLI, monkeypatch: pytest.MonkeyPatch, volatile: bool) -> None:
    """Records files past the cache's threshold keep their products (packed indexes, listing
    texts): cold and then from the entries, every answer is the Store's.  (A volatile container
    puts records in a second file of the layers and containers: those kinds are then indexed
    in memory.)"""
    from containers_storage import recordcache
    from containers_storage.recordindex import PackedIndex

    cli_sub.ok("create-layer", "-n", "base")
    cli_sub.ok("create-layer", "-n", "top", "base")
    made = cli_sub.ok("create-image", "-n", "img", "top").lines[0]
    cli_sub.ok("set-image-data", made, "manifest", stdin=b'{"schemaVersion":2}')
    cli_sub.ok("create-container", "-n", "ctr", "img")
    if volatile:
        cli_sub.ok("create-container", "--volatile", "-n", "vol", "img")
    big = "m" * (recordcache.MIN_SIZE + 100)
    for what in ("base", "img", "ctr"):
        cli_sub.ok("set-metadata", "-m", big, what)
    cli_sub.ok("create-layer", "-n", "empty")
    cli_sub.ok("create-image", "-n", "img2", "--name", "other:tag", "empty")
    top = json.loads(cli_sub.ok("layer", "--json", "top").out)[0]["id"]
    image = json.loads(cli_sub.ok("image", "--json", "img").out)[0]["id"]
    cases: list[tuple[list[str], int]] = [(argv, 0) for argv in LISTINGS] + [
        (["exists", "base", "img", "ctr", top[:10], image[:10]], 0), (["exists", "-i", "nosuch"], 1),
        (["exists", "-l", "img"], 1), (["exists", "--json", "-c", "ctr", "img"], 1),
        (["layer", top, "empty", "nosuch"], 1), (["layer", "--json", top[:12]], 0),
        (["image", "img"], 0), (["image", "--json", "img2", image[:8]], 0), (["image", "other:tag"], 0),
        (["get-names", "img2"], 0), (["metadata", "-q", "ctr", "base"], 0), (["metadata", "x"], 1),
    ]
    for _ in range(2):  # computed and kept, then read back
        for argv, code in cases:
            fast, slow = _both(monkeypatch, [*cli_sub.globals, *argv], code)
            assert fast == slow, argv
    for kind in ("layers", "images", "containers"):
        entry = _entry(cli_sub, kind)
        packed = not volatile or kind == "images"
        assert isinstance(entry.get(PackedIndex.IDS), bytes) == packed, kind
        assert (entry.get("snapshot.facts") == {"plain": True, "incomplete": False}) == packed
        entry.close()
    texts = _entry(cli_sub, "images")
    assert isinstance(texts.get("product.images-text"), str)
    assert texts.get("product.images-json-unchanged") is True  # --json prints the file's bytes
    texts.close()


def test_an_image_on_empty_layers_is_sized_from_the_snapshot(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """Layers without recorded sizes (as Go's create-layer writes them) whose directories are empty
    add 0, as Go measures them: the snapshot answers instead of the Store."""
    from containers_storage.cli import lookups
    from containers_storage.cli.output import Output

    cli_sub.ok("create-layer", "-n", "l1")
    cli_sub.ok("create-layer", "-n", "l2", "l1")
    cli_sub.ok("create-image", "-n", "img", "l2")
    fast, slow = _both(monkeypatch, [*cli_sub.globals, "image", "img"])
    assert fast == slow and b"Size: 0\n" in fast
    snap = snapshot.take(cli_sub.root, cli_sub.run_root, "vfs", lookups=True)
    assert snap is not None
    assert lookups._image(snap, ["img"], False, Output()) == 0
    # Something in a layer: its size needs measuring, which is the Store's.
    l1 = json.loads(cli_sub.ok("layer", "--json", "l1").out)[0]["id"]
    Path(cli_sub.root, "vfs", "dir", l1, "file").write_text("data")
    assert lookups._image(snap, ["img"], False, Output()) is None
