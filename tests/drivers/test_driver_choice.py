"""Choosing a driver when none is named, as Go's drivers.New does (storage.conf's
``driver_priority``, driver homes left in the graph root), the CLI reading such a storage.conf
beside Debian's Go CLI, force_mask from storage.conf reaching a working overlay driver, and
additional layer stores refused at start-up rather than ignored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from containers_storage.drivers import new_driver
from containers_storage.drivers.base import CreateOpts, DriverOptions
from containers_storage.errors import DriverError
from gocli import GO_CLI

SCRIPT = shutil.which("containers-storage", path=os.path.dirname(sys.executable)) or "containers-storage"
FUSE_OVERLAYFS = shutil.which("fuse-overlayfs")
IS_ROOT = os.geteuid() == 0
NEWER_GO = [p for p in ("/usr/local/bin/go-cs-1.60", "/usr/local/bin/go-cs-1.63") if os.access(p, os.X_OK)]


def _choose(base: str, priority: list[str] | None = None, options: list[str] | None = None) -> str:
    d = new_driver("", DriverOptions(root=os.path.join(base, "root"), run_root=os.path.join(base, "run"),
                                     options=options, priority=priority))
    try:
        return d.name
    finally:
        d.cleanup()


def test_the_configured_priority_is_followed(no_leaked_mounts: str) -> None:
    assert _choose(no_leaked_mounts, ["vfs", "overlay"]) == "vfs"
    # Drivers that cannot work here are skipped: an unknown one, btrfs off btrfs, zfs without
    # its tools and kernel module.
    assert _choose(no_leaked_mounts, ["devicemapper", "btrfs", "zfs", "vfs"]) == "vfs"


def test_a_driver_that_fails_otherwise_is_an_error(no_leaked_mounts: str) -> None:
    with pytest.raises(DriverError, match=r"^overlay: unknown option overlay\.bogus$"):
        _choose(no_leaked_mounts, ["overlay", "vfs"], ["overlay.bogus=1"])


@pytest.mark.skipif(not IS_ROOT, reason="overlay mounts need root")
def test_prior_driver_homes(no_leaked_mounts: str) -> None:
    root = os.path.join(no_leaked_mounts, "root")
    os.makedirs(os.path.join(root, "vfs"))
    # Go's own list never picks vfs state by itself (tests leave it behind): overlay it is.
    assert _choose(no_leaked_mounts) == "overlay"
    shutil.rmtree(os.path.join(root, "overlay"))
    # A configured list that names vfs takes the state it finds.
    assert _choose(no_leaked_mounts, ["overlay", "vfs"]) == "vfs"
    os.makedirs(os.path.join(root, "overlay"))
    with pytest.raises(DriverError) as e:
        _choose(no_leaked_mounts, ["vfs", "overlay"])
    assert str(e.value) == (f"{root} contains several valid graphdrivers: overlay, vfs; Please cleanup or "
                            "explicitly choose storage driver (-s <DRIVER>)")


def _cli(binary: str, conf: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": conf}
    for name in ("STORAGE_DRIVER", "STORAGE_OPTS"):
        env.pop(name, None)
    return subprocess.run([binary, *args], capture_output=True, text=True, env=env)


def _write_conf(tmp_path: Path, storage: str, options: str = "") -> str:
    root, run = tmp_path / "root", tmp_path / "run"
    path = tmp_path / "storage.conf"
    path.write_text(f'[storage]\nrunroot = "{run}"\ngraphroot = "{root}"\n{storage}\n'
                    f"[storage.options]\n{options}\n")
    return str(path)


def _shutdown(conf: str) -> None:
    for binary in (SCRIPT, GO_CLI):
        if binary:
            _cli(binary, conf, "shutdown")


def test_cli_takes_the_driver_from_the_priority_list(tmp_path: Path) -> None:
    conf = _write_conf(tmp_path, 'driver_priority = ["btrfs", "vfs"]')
    try:
        ours = _cli(SCRIPT, conf, "status")
        assert ours.returncode == 0, ours.stderr + ours.stdout
        assert "Driver Name: vfs\n" in ours.stderr
        for go_binary in NEWER_GO:  # Debian's 1.43 does not know driver_priority yet
            go = _cli(go_binary, conf, "status")
            assert (go.returncode, go.stderr) == (ours.returncode, ours.stderr)
    finally:
        _shutdown(conf)


def test_cli_refuses_a_force_mask_of_the_wrong_type_as_go_does(tmp_path: Path) -> None:
    conf = _write_conf(tmp_path, 'driver = "overlay"', '[storage.options.overlay]\nforce_mask = 0o700')
    ours = _cli(SCRIPT, conf, "layers")
    text = ('error initializing: toml: line 7 (last key "storage.options.overlay.force_mask"): incompatible '
            "types: TOML value has type int64; destination has type string\n")
    assert (ours.returncode, ours.stdout) == (1, text)
    assert "level=warning" in ours.stderr and f"Failed to read {conf} toml: line 7" in ours.stderr
    if GO_CLI is not None:
        assert _cli(GO_CLI, conf, "layers").stdout.endswith(text)  # 1.43 also prints the warning there


@pytest.mark.skipif(FUSE_OVERLAYFS is None, reason="fuse-overlayfs not installed")
@pytest.mark.skipif(not IS_ROOT, reason="overlay mounts need root")
def test_force_mask_from_storage_conf_reaches_the_driver(tmp_path: Path) -> None:
    """An integer force_mask (Go 1.60 and 1.43 fail on it: they hand the driver "-rwx------")."""
    conf = _write_conf(tmp_path, 'driver = "overlay"',
                       f'mount_program = "{FUSE_OVERLAYFS}"\nforce_mask = 0o700')
    try:
        layer = _cli(SCRIPT, conf, "create-layer")
        assert layer.returncode == 0, layer.stderr + layer.stdout
        diff = tmp_path / "root" / "overlay" / layer.stdout.strip() / "diff"
        assert diff.stat().st_mode & 0o777 == 0o700
        assert "user.containers.override_stat" in os.listxattr(diff)
    finally:
        _shutdown(conf)


@pytest.mark.skipif(not IS_ROOT, reason="overlay mounts need root")
def test_additional_layer_stores_are_refused_at_start_up(tmp_path: Path, no_leaked_mounts: str) -> None:
    als = tmp_path / "als"
    als.mkdir()
    with pytest.raises(DriverError) as e:
        new_driver("overlay", DriverOptions(root=os.path.join(no_leaked_mounts, "root"),
                                            run_root=os.path.join(no_leaked_mounts, "run"),
                                            options=[f"overlay.additionallayerstore={als}:ref"]))
    assert str(e.value) == ("overlay: additional layer stores are not supported by this implementation "
                            f'(additionallayerstore "{als}")')
    # Go's checks of the path come first, with Go's texts.
    with pytest.raises(DriverError, match="is not absolute"):
        new_driver("overlay", DriverOptions(root=os.path.join(no_leaked_mounts, "root"),
                                            run_root=os.path.join(no_leaked_mounts, "run"),
                                            options=["overlay.additionallayerstore=rel/dir"]))
    conf = _write_conf(tmp_path, 'driver = "overlay"', f'additionallayerstores = ["{als}"]')
    ours = _cli(SCRIPT, conf, "layers")
    assert (ours.returncode, ours.stdout) == (1, f"error initializing: {e.value}\n")


def test_storage_options_of_a_layer_need_quota_support(no_leaked_mounts: str) -> None:
    d = new_driver("vfs", DriverOptions(root=os.path.join(no_leaked_mounts, "root"),
                                        run_root=os.path.join(no_leaked_mounts, "run")))
    with pytest.raises(DriverError, match="--storage-opt is not supported for vfs"):
        d.create("ctr", "", CreateOpts(storage_opt={"size": "1M"}), True)
