"""Shared fixtures: a fresh store per test, and the Go reference CLI when installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

GO_CLI = shutil.which("containers-storage", path="/usr/bin:/usr/local/bin")


@pytest.fixture
def store_dirs(tmp_path: Path) -> tuple[str, str]:
    root = tmp_path / "root"
    run = tmp_path / "run"
    return str(root), str(run)


@pytest.fixture
def store(store_dirs: tuple[str, str]) -> Iterator[object]:
    from containers_storage.config import StoreOptions
    from containers_storage.store import get_store

    root, run = store_dirs
    s = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    yield s
    s.free()


def go_cli(root: str, run: str, *args: str, driver: str = "vfs", check: bool = True,
           input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run Debian's Go containers-storage on the same store."""
    if GO_CLI is None:
        pytest.skip("Debian's containers-storage (Go reference CLI) is not installed")
    cmd = [GO_CLI, "--graph", root, "--run", run, "--storage-driver", driver, *args]
    env = {**os.environ, "STORAGE_OPTS": ""}
    proc = subprocess.run(cmd, capture_output=True, input=input, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}): {proc.stderr.decode()}{proc.stdout.decode()}")
    return proc
