"""A writer killed mid-import leaves an incomplete layer; the next writable load removes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from containers_storage.config import StoreOptions
from containers_storage.store import get_store

_IMPORTER = """
import sys
from containers_storage.config import StoreOptions
from containers_storage.store import get_store
s = get_store(StoreOptions(graph_root=sys.argv[1], run_root=sys.argv[2], driver_name="vfs"))
with open(sys.argv[3], "rb") as f:
    s.put_layer(f, names=["half-made"])
"""


def _layers_json(root: str) -> list[dict[str, object]]:
    path = os.path.join(root, "vfs-layers", "layers.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return json.loads(data) if data else []


def _incomplete(layer: dict[str, object]) -> bool:
    flags = layer.get("flags")
    return isinstance(flags, dict) and flags.get("incomplete") is True


def test_killed_import_is_cleaned_up(tmp_path: Path) -> None:
    root, run = str(tmp_path / "root"), str(tmp_path / "run")
    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    keep = store.create_layer(names=["keep"])
    store.close()

    fifo = str(tmp_path / "feed")
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-c", _IMPORTER, root, run, fifo])
    feed = open(fifo, "wb")  # noqa: SIM115 - held open across the kill on purpose
    try:
        # One valid header and part of its content: the importer is now mid-apply.
        header = bytearray(512)
        header[0:4] = b"file"
        header[100:108] = b"0000644\0"
        header[124:136] = b"00000100000\0"  # 32 KiB of content announced
        header[156:157] = b"0"
        header[257:263] = b"ustar\0"
        header[263:265] = b"00"
        header[148:156] = b" " * 8
        header[148:155] = f"{sum(header):06o}\0".encode()
        feed.write(bytes(header) + b"x" * 4096)
        feed.flush()
        # Wait for the state to kill in: the record saved as incomplete AND the layer's directory
        # made (the record is saved before the driver makes the directory, so seeing the record
        # alone is too early).
        deadline = time.monotonic() + 20
        half_id = ""
        while time.monotonic() < deadline:
            incomplete = [l for l in _layers_json(root) if _incomplete(l)]
            if incomplete:
                half_id = str(incomplete[0]["id"])
                if os.path.isdir(os.path.join(root, "vfs", "dir", half_id)):
                    break
            time.sleep(0.02)
        else:
            raise AssertionError(f"the importer never got mid-apply (incomplete layer {half_id!r})")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        feed.close()

    store = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    try:
        assert [l.id for l in store.layers()] == [keep.id]
    finally:
        store.close()
    assert [l["id"] for l in _layers_json(root)] == [keep.id]
    assert not os.path.exists(os.path.join(root, "vfs", "dir", half_id))
    leftovers = [n for n in os.listdir(os.path.join(root, "vfs-layers")) if half_id in n]
    assert leftovers == []
