"""The layer store over overlay: mount counts in mountpoints.json, recovery after crashes and
reboots, shutdown — with the kernel's view (``/proc/self/mountinfo``) checked every time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from containers_storage import errors
from containers_storage.config import StoreOptions
from containers_storage.mountinfo import is_mountpoint
from containers_storage.store import Store, get_store
from drivertools import IS_ROOT, mounts_under
from storetools import close_store

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="overlay mounts need root")


def _open(base: str) -> Store:
    return get_store(StoreOptions(graph_root=os.path.join(base, "root"),
                                  run_root=os.path.join(base, "run"), driver_name="overlay"))


@pytest.fixture
def store(no_leaked_mounts: str) -> Iterator[Store]:
    s = _open(no_leaked_mounts)
    try:
        yield s
    finally:
        close_store(s)


def _mountpoints(store: Store) -> dict[str, int]:
    path = os.path.join(store.run_root, "overlay-layers", "mountpoints.json")
    try:
        with open(path) as f:
            return {e["id"]: e["count"] for e in json.load(f)}
    except FileNotFoundError:
        return {}


def test_mount_counts_in_mountpoints_json(store: Store) -> None:
    layer = store.create_layer(writeable=True)
    path = store.mount(layer.id)
    assert path == os.path.join(store.graph_root, "overlay", layer.id, "merged")
    assert is_mountpoint(path)
    assert store.mount(layer.id) == path
    assert _mountpoints(store) == {layer.id: 2}
    assert store.unmount(layer.id) is True
    assert _mountpoints(store) == {layer.id: 1}
    assert is_mountpoint(path)
    assert store.unmount(layer.id) is False
    assert _mountpoints(store) == {}
    assert not is_mountpoint(path)


def test_mount_unknown_layer(store: Store) -> None:
    with pytest.raises(errors.LayerUnknown):
        store.mount("no-such-layer")
    with pytest.raises(errors.LayerUnknown):
        store.unmount("no-such-layer")


def test_unmount_not_mounted_layer_is_harmless(store: Store) -> None:
    layer = store.create_layer(writeable=True)
    store.unmount(layer.id)
    assert store.mounted(layer.id) == 0
    assert not mounts_under(os.path.join(store.graph_root, "overlay", layer.id))


def test_image_mount_read_only(store: Store) -> None:
    layer = store.create_layer()
    image = store.create_image(layer.id, names=["img"])
    path = store.mount_image(image.id)
    try:
        with pytest.raises(OSError):
            open(os.path.join(path, "x"), "w").close()
    finally:
        store.unmount_image(image.id)
    assert not is_mountpoint(path)


def test_runroot_emptied_by_reboot(store: Store, no_leaked_mounts: str) -> None:
    layer = store.create_layer(writeable=True)
    store.mount(layer.id)
    path = store.layer(layer.id).mount_point
    # A reboot: every mount is gone and the run root (a tmpfs) is empty.
    for mp in sorted(mounts_under(no_leaked_mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=True)
    store.close()
    shutil.rmtree(os.path.join(no_leaked_mounts, "run"))
    fresh = _open(no_leaked_mounts)
    try:
        assert fresh.mounted(layer.id) == 0
        assert fresh.mount(layer.id) == path
        assert is_mountpoint(path)
        fresh.unmount(layer.id)
        assert not is_mountpoint(path)
    finally:
        fresh.shutdown(force=True)
        fresh.close()


def test_stale_mount_count_without_mount(store: Store) -> None:
    layer = store.create_layer(writeable=True)
    path = store.mount(layer.id)
    store.mount(layer.id)
    # Someone unmounted it behind our back (conmon cleanup, a reboot with a persistent run root).
    subprocess.run(["umount", "-l", path], check=True)
    store.close()
    again = _open(os.path.dirname(store.graph_root))
    try:
        assert again.mount(layer.id) == path
        assert is_mountpoint(path), "a stale count must not stop a real mount"
        again.unmount(layer.id, force=True)
        assert not is_mountpoint(path)
        assert again.mounted(layer.id) == 0
    finally:
        again.shutdown(force=True)
        again.close()


def test_process_killed_while_mounted(store: Store, no_leaked_mounts: str) -> None:
    layer = store.create_layer(writeable=True)
    script = textwrap.dedent(f"""
        import os, signal, sys
        from containers_storage.config import StoreOptions
        from containers_storage.store import get_store
        s = get_store(StoreOptions(graph_root={store.graph_root!r}, run_root={store.run_root!r},
                                   driver_name="overlay"))
        print(s.mount({layer.id!r}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    path = proc.stdout.strip()
    assert is_mountpoint(path)
    assert store.mounted(layer.id) == 1
    # Another user takes a reference on the live mount, then both are released.
    assert store.mount(layer.id) == path
    assert store.unmount(layer.id) is True
    assert store.unmount(layer.id) is False
    assert not is_mountpoint(path)


def test_shutdown_unmounts_everything(store: Store) -> None:
    base = store.create_layer()
    top = store.create_layer(parent=base.id, writeable=True)
    paths = [store.mount(base.id), store.mount(top.id), store.mount(top.id)]
    with pytest.raises(errors.LayerUsedByContainer):
        store.shutdown(force=True)  # Go reports the mounted layers even after unmounting them
    assert not any(is_mountpoint(p) for p in paths)
    assert _mountpoints(store) == {}
    store.shutdown(force=False)
    assert not is_mountpoint(os.path.join(store.graph_root, "overlay"))


def test_shutdown_without_force_keeps_mounts(store: Store) -> None:
    layer = store.create_layer(writeable=True)
    path = store.mount(layer.id)
    with pytest.raises(errors.LayerUsedByContainer):
        store.shutdown(force=False)
    assert is_mountpoint(path)
    store.unmount(layer.id)


def test_staged_layer_through_the_store(store: Store) -> None:
    from drivertools import make_tar

    base = store.create_layer()
    staged = store.prepare_staged_layer(make_tar([("f", "f", b"staged")]))
    layer = store.apply_staged_layer(staged, parent=base.id)
    assert layer.parent == base.id
    record = store.layer(layer.id)
    assert record.uncompressed_digest.startswith("sha256:")
    assert os.path.exists(os.path.join(store.graph_root, "overlay-layers", layer.id + ".tar-split.gz"))
    assert os.listdir(os.path.join(store.graph_root, "overlay", "staging")) == []
    path = store.mount(layer.id)
    try:
        with open(os.path.join(path, "f"), "rb") as f:
            assert f.read() == b"staged"
    finally:
        store.unmount(layer.id)
    # And into an existing layer, as the CLI's applydiff-using-staging-dir does.
    empty = store.create_layer(parent=base.id)
    staged = store.prepare_staged_layer(make_tar([("g", "f", b"G")]))
    store.apply_staged_layer(staged, id=empty.id)
    assert os.listdir(os.path.join(store.graph_root, "overlay", empty.id, "diff")) == ["g"]


def test_staged_new_layer_is_incomplete_until_its_files_are_in(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record of a staged new layer says "incomplete" while the staged files move in (a
    crash then leaves a layer the next writer removes), and a failed commit leaves nothing."""
    from drivertools import make_tar

    driver = store.driver
    seen: list[object] = []
    real_commit = driver.commit_staged  # type: ignore[attr-defined]

    def watching(id: str, parent: str, staged: object) -> None:
        with open(os.path.join(store.graph_root, "overlay-layers", "layers.json")) as f:
            record = next(r for r in json.load(f) if r["id"] == id)
        seen.append(record.get("flags", {}).get("incomplete"))
        real_commit(id, parent, staged)

    monkeypatch.setattr(driver, "commit_staged", watching)
    layer = store.apply_staged_layer(store.prepare_staged_layer(make_tar([("f", "f", b"x")])))
    assert seen == [True]
    assert "incomplete" not in (store.layer(layer.id).raw.get("flags") or {})

    def failing(id: str, parent: str, staged: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(driver, "commit_staged", failing)
    before = {l.id for l in store.layers()}
    with pytest.raises(OSError, match="No space"):
        store.apply_staged_layer(store.prepare_staged_layer(make_tar([("g", "f", b"y")])))
    assert {l.id for l in store.layers()} == before
    assert os.listdir(os.path.join(store.graph_root, "overlay", "staging")) == []


def test_deleting_a_mounted_layer_unmounts_it(store: Store) -> None:
    layer = store.create_layer(writeable=True)
    path = store.mount(layer.id)
    store.delete_layer(layer.id)
    assert not is_mountpoint(path)
    assert not os.path.exists(os.path.dirname(path))
