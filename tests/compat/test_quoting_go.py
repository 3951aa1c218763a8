"""Error texts that quote a name print the same bytes as Go's CLI (strconv.Quote)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gocli import GO_CLI, go_cli

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed"),
]

# A control character, a printable non-ASCII rune, DEL, a byte that is not UTF-8, a no-break
# space (not printable to Go) and a tab.
KEY = os.fsdecode(b"a\x01b\xc3\xa9\x7f\xff\xc2\xa0\t")


def _ours(root: str, run: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    cli = os.path.join(os.path.dirname(sys.executable), "containers-storage")
    return subprocess.run([cli, "--graph", root, "--run", run, "--storage-driver", "vfs", *args],
                          capture_output=True, env={**os.environ, "STORAGE_OPTS": ""})


@pytest.mark.parametrize("command", ["get-layer-data", "get-image-data"])
def test_missing_item_errors_match_go(store_dirs: tuple[str, str], command: str) -> None:
    root, run = store_dirs
    go_cli(root, run, "create-layer", "-n", "l")
    go_cli(root, run, "create-image", "-n", "img", "l")
    ref = "l" if command == "get-layer-data" else "img"
    go = go_cli(root, run, command, ref, KEY, check=False)
    ours = _ours(root, run, command, ref, KEY)
    assert go.returncode == ours.returncode == 1
    assert b'locating item named "a\\x01b\xc3\xa9\\x7f\\xff\\u00a0\\t"' in go.stdout + go.stderr
    assert ours.stdout + ours.stderr == go.stdout + go.stderr
