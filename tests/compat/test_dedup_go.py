"""dedup beside Go's: the same bytes reported for one store on btrfs (vfs and overlay), either
side first.  Debian's Go 1.43 has no dedup command, so this runs where a newer Go CLI built from
source is installed (go-cs-1.60, go-cs-1.63 in /usr/local/bin: local references, not on CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from dedupcase import populate

pytestmark = pytest.mark.compat

SCRIPT = shutil.which("containers-storage", path=os.path.dirname(sys.executable)) or "containers-storage"
NEWER_GO = [p for p in ("/usr/local/bin/go-cs-1.60", "/usr/local/bin/go-cs-1.63") if os.access(p, os.X_OK)]


class _Store:
    def __init__(self, binary: str, root: str, run: str, driver: str) -> None:
        self.binary, self.root, self.run, self.driver = binary, root, run, driver

    def cli(self, *args: str) -> str:
        cmd = [self.binary, "--graph", self.root, "--run", self.run, "--storage-driver", self.driver, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "STORAGE_OPTS": ""})
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}{proc.stdout}"
        return proc.stdout


@pytest.mark.skipif(not NEWER_GO, reason="no Go CLI with dedup installed (Debian's 1.43 has none)")
@pytest.mark.parametrize("go_binary", NEWER_GO)
@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_same_bytes_as_go(on_loop_fs: Callable[[str], str], tmp_path: str, driver: str,
                          go_binary: str) -> None:
    base = on_loop_fs("btrfs_mount")
    root, run = os.path.join(base, "root"), os.path.join(base, "run")
    ours, go = _Store(SCRIPT, root, run, driver), _Store(go_binary, root, run, driver)
    try:
        populate(ours, str(tmp_path))
        go_first = json.loads(go.cli("dedup", "--json"))
        assert go_first["Deduped"] > 0
        for method in ("crc", "size", "sha256"):
            ours_json = ours.cli("dedup", "--json", "--hash-method", method)
            assert ours_json == json.dumps(go_first, separators=(",", ":")) + "\n"
            assert go.cli("dedup", "--hash-method", method) == f"Deduplicated {go_first['Deduped']} bytes\n"
    finally:
        ours.cli("shutdown")
