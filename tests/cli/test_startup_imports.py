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
    "subprocess", "bz2", "lzma", "warnings", "ctypes",
})


def _run(store: list[str], *argv: str) -> str:
    """Run one command under ``-X importtime``; fail on an error or a heavy import; its output."""
    env = {**os.environ, "STORAGE_OPTS": ""}
    env.pop("STORAGE_DRIVER", None)
    proc = subprocess.run([sys.executable, "-X", "importtime", SCRIPT, *store, *argv],
                          capture_output=True, env=env, text=True)
    modules = set()
    errors = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
        else:
            errors.append(line)
    assert proc.returncode == 0, (argv, proc.stdout, "\n".join(errors))
    assert "containers_storage.cli.main" in modules  # the parse really saw our imports
    assert not modules & HEAVY, f"{argv[0]} imports {sorted(modules & HEAVY)}"
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
