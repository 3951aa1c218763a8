"""The Go reference CLI (Debian's containers-storage), for tests that compare against it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

GO_CLI = shutil.which("containers-storage", path="/usr/bin:/usr/local/bin")


def go_cli(root: str, run: str, *args: str, driver: str = "vfs", check: bool = True,
           input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run Debian's Go containers-storage on the same store."""
    if GO_CLI is None:
        pytest.skip("Debian's containers-storage (Go reference CLI) is not installed")
    cmd = [GO_CLI, "--graph", root, "--run", run, "--storage-driver", driver, *args]
    env = {**os.environ, "STORAGE_OPTS": ""}
    proc = subprocess.run(cmd, capture_output=True, input=input, env=env)
    if check and proc.returncode != 0:
        output = proc.stderr.decode() + proc.stdout.decode()
        raise AssertionError(f"{cmd} failed ({proc.returncode}): {output}")
    return proc
