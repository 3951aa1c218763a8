"""Every CLI call pays for what it imports before doing any work (~20 ms of a Go call's ~10 ms
total), so the everyday commands must not pull in the heavy stdlib modules.  This guards the
lazy imports: a stray ``from typing import ...`` or ``import shutil`` at module level fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import SCRIPT

# Each costs 1-15 ms to import (python -X importtime); together they were most of a write call.
HEAVY = frozenset({
    "typing", "collections", "contextlib", "re", "enum", "functools", "shutil", "tempfile",
    "hashlib", "threading", "dataclasses", "inspect", "base64", "json", "importlib", "random",
    "subprocess", "bz2", "lzma", "warnings", "ctypes", "orjson",
})


# Applying an uncompressed layer needs ctypes (openat2), hashlib and a thread, but not these: the
# stdlib modules the archive engine used to pull in (regexes, enum, gzip files, threading, queue).
APPLY_AVOIDS = frozenset({
    "typing", "collections", "re", "enum", "functools", "gzip", "threading", "queue", "heapq",
    "lzma", "bz2", "json", "importlib", "warnings", "contextlib",
})


def _script_is_python() -> bool:
    with open(SCRIPT, "rb") as f:
        return f.read(2) == b"#!"  # else scripts/build-launcher.sh's launcher, a program


def _run(store: list[str], *argv: str, heavy: frozenset[str] = HEAVY) -> str:
    """Run one command under ``-X importtime``; fail on an error or a heavy import; its output."""
    env = {**os.environ, "STORAGE_OPTS": "", "PYTHONPROFILEIMPORTTIME": "1"}
    env.pop("STORAGE_DRIVER", None)
    # The console script through this interpreter, or the launcher (which embeds it) as it is.
    command = [sys.executable, SCRIPT] if _script_is_python() else [SCRIPT]
    proc = subprocess.run([*command, *store, *argv], capture_output=True, env=env, text=True)
    modules = set()
    errors = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
        else:
            errors.append(line)
    assert proc.returncode == 0, (argv, proc.stdout, "\n".join(errors))
    # The parse really saw our imports (the listings and lookups never load cli.main).
    assert "containers_storage.cli.console" in modules
    assert not modules & heavy, f"{argv[0]} imports {sorted(modules & heavy)}"
    return proc.stdout.strip()


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_everyday_commands_import_no_heavy_modules(tmp_path: Path, driver: str) -> None:
    if driver == "overlay" and os.geteuid() != 0:
        pytest.skip("kernel overlay needs root")
    store = ["--graph", str(tmp_path / "root"), "--run", str(tmp_path / "run"), "--storage-driver", driver]
    # The first call that sets the driver up runs (and caches) its probes: not what this guards.
    subprocess.run([SCRIPT, *store, "status"], check=True, capture_output=True)
    try:
        layer = _run(store, "create-layer")
        _run(store, "create-layer", layer)
        image = _run(store, "create-image", "-n", "img", layer).split()[0]
        _run(store, "create-image", layer)
        container = _run(store, "create-container", "img").split()[0]
        # Not `image` or `container`: an empty layer's size comes from walking it with the
        # archive engine, which is work rather than start-up.
        for argv in (["layers"], ["layers", "--json"], ["images"], ["images", "--json"],
                     ["containers"], ["layer", layer], ["exists", "-i", "img"],
                     ["get-names", image], ["add-names", "-n", "x", image],
                     ["set-metadata", "-m", "m", image],
                     ["delete-container", container], ["delete-image", image]):
            _run(store, *argv)
    finally:
        subprocess.run([SCRIPT, *store, "shutdown"], capture_output=True)
        subprocess.run(["umount", "-R", str(tmp_path / "root" / "overlay")], capture_output=True)


def test_writing_to_a_store_of_hundreds_of_layers_imports_no_heavy_modules(tmp_path: Path) -> None:
    # orjson (~20 ms to import: uuid, platform, dataclasses) once wrote every records file of
    # more than 500 records, so each write to such a store cost twice a small one.
    from containers_storage.store import open_store

    store = ["--graph", str(tmp_path / "root"), "--run", str(tmp_path / "run"), "--storage-driver", "vfs"]
    with open_store(graph_root=tmp_path / "root", run_root=tmp_path / "run", driver="vfs",
                    use_config=False) as s:
        for _ in range(600):
            s.create_layer()
    try:
        layer = _run(store, "create-layer", "-n", "top").split()[0]
        assert _run(store, "layer", "top").startswith(f"ID: {layer}")
        _run(store, "delete-layer", layer)
        assert len(_run(store, "layers").splitlines()) == 600
    finally:
        subprocess.run([SCRIPT, *store, "shutdown"], capture_output=True)


def test_applying_an_uncompressed_layer_imports_no_heavy_modules(tmp_path: Path) -> None:
    import io
    import tarfile

    layer_tar = tmp_path / "layer.tar"
    with tarfile.open(layer_tar, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("d/", None), ("d/f", b"content"), ("d/l", None)):
            info = tarfile.TarInfo(name.rstrip("/"))
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.SYMTYPE
            info.linkname = "f" if info.type == tarfile.SYMTYPE else ""
            tar.addfile(info)
    store = ["--graph", str(tmp_path / "root"), "--run", str(tmp_path / "run"), "--storage-driver", "vfs"]
    subprocess.run([SCRIPT, *store, "status"], check=True, capture_output=True)
    try:
        layer = _run(store, "import-layer", "-f", str(layer_tar), heavy=APPLY_AVOIDS)
        empty = _run(store, "create-layer")
        _run(store, "applydiff", "-f", str(layer_tar), empty, heavy=APPLY_AVOIDS)
        assert (tmp_path / "root" / "vfs" / "dir" / layer / "d" / "f").read_bytes() == b"content"
        assert (tmp_path / "root" / "vfs" / "dir" / empty / "d" / "l").is_symlink()
    finally:
        subprocess.run([SCRIPT, *store, "shutdown"], capture_output=True)
