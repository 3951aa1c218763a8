"""Mount records of mounts that live in other mount namespaces, or in none any more.

A rootless user's mounts exist only in the user namespace that made them.  As Go does, the
records in mountpoints.json are bookkeeping that outlives them: ``mounted`` reports the count,
a mount in a namespace that lacks the mount really mounts (and counts one more), and unmounts
count down to zero.  That is what lets a rootless user balance ``mount``/``unmount`` across
separate CLI calls, each in its own namespace, as the upstream mount-layer.bats does.  Root can
play both parts here: ``unshare --mount`` gives a child its own mount namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers_storage import errors, userns
from containers_storage.config import StoreOptions
from containers_storage.store import Store, get_store

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and overlay mounts need root"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is not installed"),
]
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _session(script: str) -> subprocess.Popen[bytes]:
    """A shell in its own mount namespace; it says "ready" and waits for a line on stdin."""
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"{script} && echo ready && read answer"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


_MOUNT = r"""
import sys
from containers_storage.config import StoreOptions
from containers_storage.store import get_store
s = get_store(StoreOptions(graph_root=sys.argv[1], run_root=sys.argv[2], driver_name="overlay"))
print(s.mount(sys.argv[3]))
s.close()
"""


@pytest.fixture
def overlay_store(tmp_path: Path) -> Iterator[tuple[Store, str, str]]:
    root, run = str(tmp_path / "root"), str(tmp_path / "run")
    s = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="overlay"))
    try:
        yield s, root, run
    finally:
        with contextlib.suppress(errors.StorageError):  # it says when something was mounted
            s.shutdown(force=True)
        s.close()
        subprocess.run(["umount", "-R", os.path.join(root, "overlay")], capture_output=True)


def _mount_in_a_namespace_that_ends(root: str, run: str, layer: str) -> str:
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
                           _MOUNT, root, run, layer], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _records(run: str) -> list[tuple[str, int]]:
    with open(os.path.join(run, "overlay-layers", "mountpoints.json")) as f:
        return [(m["id"], m["count"]) for m in json.load(f)]


@pytest.mark.parametrize("rootless", [False, True])
def test_records_of_ended_namespaces_are_gos_bookkeeping(
        overlay_store: tuple[Store, str, str], monkeypatch: pytest.MonkeyPatch, rootless: bool) -> None:
    store, root, run = overlay_store
    monkeypatch.setattr(userns, "_rootless", rootless)
    layer = store.create_layer(writeable=True).id
    path = _mount_in_a_namespace_that_ends(root, run, layer)
    assert _records(run) == [(layer, 1)] and not os.path.ismount(path)
    assert store.mounted(layer) == 1  # the record, taken at its word
    # A mount here finds no mount at the recorded point: it mounts, and counts one more.
    assert store.mount(layer) == path and os.path.ismount(path)
    assert _records(run) == [(layer, 2)]
    assert store.unmount(layer) is True  # counted down; the mount stays
    assert _records(run) == [(layer, 1)] and os.path.ismount(path)
    assert store.unmount(layer) is False
    assert _records(run) == [] and not os.path.ismount(path)


def test_rootless_records_of_live_namespaces_still_count(
        overlay_store: tuple[Store, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    store, root, run = overlay_store
    layer = store.create_layer(writeable=True).id
    code = _MOUNT.replace("s.close()", "sys.stdout.flush(); input(); s.unmount(sys.argv[3]); s.close()")
    session = subprocess.Popen(["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
                                code, root, run, layer], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": SRC})
    assert session.stdout is not None
    try:
        path = session.stdout.readline().decode().strip()
        assert path and not os.path.ismount(path)
        monkeypatch.setattr(userns, "_rootless", True)
        assert store.mounted(layer) == 1
        assert store.mount(layer) == path
        assert _records(run) == [(layer, 2)]
        assert store.unmount(layer) is True  # the other namespace's mount remains
        assert _records(run) == [(layer, 1)]
    finally:
        session.communicate(b"\n", timeout=60)
    assert session.returncode == 0
    assert _records(run) == []
