"""The Go CLI and our library share one store: each reads what the other writes, locks exclude."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from containers_storage.config import StoreOptions
from containers_storage.store import Store, get_store
from gocli import GO_CLI, go_cli

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed"),
]


def _open(root: str, run: str) -> Store:
    return get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))


def test_go_reads_what_we_write(store: Any, store_dirs: tuple[str, str]) -> None:
    root, run = store_dirs
    base = store.create_layer(names=["base"])
    top = store.create_layer(parent=base.id, names=["top"])
    store.set_metadata(top.id, "layer-meta")
    image = store.create_image(top.id, names=["example/img:1"], metadata="img-meta")
    store.set_image_big_data(image.id, "manifest", b'{"schemaVersion":2}')
    store.set_image_big_data(image.id, "config-blob", b"cfg")
    ctr = store.create_container(image.id, names=["ctr1"], metadata="ctr-meta")

    layers = json.loads(go_cli(root, run, "layers", "--json").stdout)
    by_id = {l["id"]: l for l in layers}
    assert by_id[top.id]["parent"] == base.id
    assert by_id[top.id]["metadata"] == "layer-meta"
    assert by_id[ctr.layer]["parent"] == top.id

    images = json.loads(go_cli(root, run, "images", "--json").stdout)
    assert [i["id"] for i in images] == [image.id]
    assert images[0]["names"] == ["example/img:1"]
    assert images[0]["digest"] == store.image_big_data_digest(image.id, "manifest")

    out = go_cli(root, run, "get-image-data", "example/img:1", "config-blob").stdout
    assert out == b"cfg"
    assert go_cli(root, run, "metadata", "-q", "ctr1").stdout.strip() == b"ctr-meta"
    containers = json.loads(go_cli(root, run, "containers", "--json").stdout)
    assert containers[0]["image"] == image.id and containers[0]["layer"] == ctr.layer

    # And Go can write to it: delete the container through Go, we see it gone.
    go_cli(root, run, "delete-container", "ctr1")
    assert store.containers() == []


def test_we_read_what_go_writes(store_dirs: tuple[str, str]) -> None:
    root, run = store_dirs
    base = go_cli(root, run, "create-layer", "-n", "gobase").stdout.decode().split()[0]
    top = go_cli(root, run, "create-layer", "-n", "gotop", base).stdout.decode().split()[0]
    go_cli(root, run, "set-metadata", "-m", "from-go", top)
    image = go_cli(root, run, "create-image", "-n", "go/img", top).stdout.decode().split()[0]
    go_cli(root, run, "set-image-data", "-f", "/dev/stdin", image, "manifest",
           input=b'{"schemaVersion":2,"layers":[]}')
    go_cli(root, run, "create-container", "-n", "goctr", image)

    s = _open(root, run)
    try:
        assert s.layer("gotop").parent == base
        assert s.metadata("gotop") == "from-go"
        img = s.image("go/img")
        assert img.id == image and img.top_layer == top
        assert s.image_big_data(image, "manifest") == b'{"schemaVersion":2,"layers":[]}'
        assert s.images_by_digest(img.digest)[0].id == image
        ctr = s.container("goctr")
        assert s.layer(ctr.layer).parent == top
    finally:
        s.close()


def test_our_saves_are_byte_identical_to_go(store_dirs: tuple[str, str]) -> None:
    """Loading Go's JSON and saving it back changes no byte (field order, escaping, times)."""
    root, run = store_dirs
    base = go_cli(root, run, "create-layer", "-n", "a<b>&c").stdout.decode().split()[0]
    go_cli(root, run, "set-metadata", "-m", "meta \u2028 <x>", base)
    go_cli(root, run, "create-layer", "-n", "child", base)
    image = go_cli(root, run, "create-image", "-n", "img", base).stdout.decode().split()[0]
    go_cli(root, run, "set-image-data", "-f", "/dev/stdin", image, "Some Key",
           input=b"data")
    go_cli(root, run, "create-container", "-n", "c1", image)
    paths = [os.path.join(root, "vfs-layers", "layers.json"),
             os.path.join(root, "vfs-images", "images.json"),
             os.path.join(root, "vfs-containers", "containers.json")]
    before = [_read(p) for p in paths]

    s = _open(root, run)
    try:
        with s.layer_store.writing() as ls:
            ls.save(1)
        with s.image_store.writing() as ims:
            ims.save()
        with s.container_store.writing() as cs:
            cs.save()
    finally:
        s.close()
    after = [_read(p) for p in paths]
    assert after == before


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_our_lock_blocks_go_writer(store: Any, store_dirs: tuple[str, str]) -> None:
    root, run = store_dirs
    store.create_layer(names=["pre"])
    lock_path = os.path.join(root, "vfs-layers", "layers.lock")
    lf = store.layer_store.lock
    lf.lock()
    try:
        cmd = [GO_CLI or "", "-g", root, "-R", run, "-s", "vfs", "create-layer", "-n", "blocked"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)
        assert proc.poll() is None, "Go wrote while we held layers.lock"
    finally:
        lf.unlock()
    assert proc.wait(timeout=30) == 0
    assert os.path.exists(lock_path)
    assert "blocked" in [n for l in store.layers() for n in l.names]


def test_go_lock_blocks_our_writer(store_dirs: tuple[str, str]) -> None:
    """Go holds layers.lock while it applies a slowly fed layer; our writer must wait."""
    root, run = store_dirs
    layer = go_cli(root, run, "create-layer").stdout.decode().split()[0]
    image = go_cli(root, run, "create-image", "-n", "img", layer).stdout.decode().split()[0]
    fifo = os.path.join(os.path.dirname(root), "slow-input")
    os.mkfifo(fifo)
    # import-layer holds layers.lock for the whole apply, so a slow input keeps it held.
    go = subprocess.Popen([GO_CLI or "", "-g", root, "-R", run, "-s", "vfs", "import-layer", "-f", fifo],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, "wb") as feed:
        feed.write(b"\0" * 512)
        feed.flush()
        time.sleep(1.0)  # Go now holds layers.lock, waiting for more input
        code = ("from containers_storage.config import StoreOptions;"
                "from containers_storage.store import get_store;"
                f"s=get_store(StoreOptions(graph_root={root!r}, run_root={run!r}, driver_name='vfs'));"
                "s.create_layer(names=['ours']); print('done')")
        ours = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        time.sleep(1.5)
        assert ours.poll() is None, "we wrote while Go held layers.lock"
        feed.write(b"\0" * 1024)
    go.wait(timeout=30)
    assert ours.wait(timeout=30) == 0
    s = _open(root, run)
    try:
        assert "ours" in [n for l in s.layers() for n in l.names]
        assert image == s.image("img").id
    finally:
        s.close()


def test_concurrent_go_and_python_writers_lose_nothing(store_dirs: tuple[str, str]) -> None:
    root, run = store_dirs
    go_cli(root, run, "layers")  # initialise the store
    n = 15
    code = ("import sys;from containers_storage.config import StoreOptions;"
            "from containers_storage.store import get_store;"
            f"s=get_store(StoreOptions(graph_root={root!r}, run_root={run!r}, driver_name='vfs'));"
            f"[s.create_layer(names=['py-%d-%d' % (int(sys.argv[1]), i)]) for i in range({n})]")
    go_script = "; ".join(
        f"{GO_CLI} -g {root} -R {run} -s vfs create-layer -n go-$1-{i} >/dev/null" for i in range(n))
    procs = []
    for w in range(2):
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(w)]))
        procs.append(subprocess.Popen(["bash", "-c", go_script, "go", str(w)]))
    for p in procs:
        assert p.wait(timeout=300) == 0
    s = _open(root, run)
    try:
        names = sorted(n for l in s.layers() for n in l.names)
    finally:
        s.close()
    expected = sorted([f"py-{w}-{i}" for w in range(2) for i in range(n)]
                      + [f"go-{w}-{i}" for w in range(2) for i in range(n)])
    assert names == expected
    go_names = sorted(n for l in json.loads(go_cli(root, run, "layers", "--json").stdout)
                      for n in l.get("names", []))
    assert go_names == expected
