"""``status`` line for line as the current Go CLI prints it: overlay's "Supports shifting" and
"Supports volatile" (which Debian's 1.43 does not print; test_overlay_go.py checks the lines
1.43 has), with kernel overlay, with shifting turned off, and under fuse-overlayfs.  Go CLIs
built from source (go-cs-1.60, go-cs-1.63 in /usr/local/bin) are local references, not on CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.compat, pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")]

SCRIPT = shutil.which("containers-storage", path=os.path.dirname(sys.executable)) or "containers-storage"
FUSE_OVERLAYFS = shutil.which("fuse-overlayfs")
NEWER_GO = [p for p in ("/usr/local/bin/go-cs-1.60", "/usr/local/bin/go-cs-1.63") if os.access(p, os.X_OK)]

CASES = {
    "kernel": ([], {}),
    "no-shifting": ([], {"_CONTAINERS_OVERLAY_DISABLE_IDMAP": "yes"}),
    "fuse": ([f"--storage-opt=overlay.mount_program={FUSE_OVERLAYFS}"], {}),
}


def _status(binary: str, base: Path, args: list[str],
            env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "--graph", str(base / "root"), "--run", str(base / "run"), "--storage-driver", "overlay",
           *args, "status"]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "STORAGE_OPTS": "", **env})


@pytest.mark.skipif(not NEWER_GO, reason="no Go CLI built from source installed (go-cs-1.60, go-cs-1.63)")
@pytest.mark.parametrize("go_binary", NEWER_GO)
@pytest.mark.parametrize("case", list(CASES))
def test_status_lines_are_current_gos(tmp_path: Path, go_binary: str, case: str) -> None:
    args, env = CASES[case]
    if case == "fuse" and FUSE_OVERLAYFS is None:
        pytest.skip("fuse-overlayfs not installed")
    try:
        go = _status(go_binary, tmp_path, args, env)
        ours = _status(SCRIPT, tmp_path, args, env)
        assert (ours.returncode, ours.stderr) == (go.returncode, go.stderr)
        keys = [line.split(": ")[0] for line in ours.stderr.splitlines()]
        assert keys[-2:] == ["Supports shifting", "Supports volatile"]
    finally:
        subprocess.run([SCRIPT, "--graph", str(tmp_path / "root"), "--run", str(tmp_path / "run"),
                        "--storage-driver", "overlay", "shutdown"], capture_output=True)
