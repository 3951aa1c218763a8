"""storage.conf lookup and parsing follow Go's types.DefaultStoreOptions."""

from __future__ import annotations

from pathlib import Path

from containers_storage.config import config_file_path, default_store_options, load_config_file


def _conf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "storage.conf"
    path.write_text(text)
    return str(path)


def test_env_var_names_the_config_file(tmp_path: Path) -> None:
    path = _conf(tmp_path, '[storage]\ndriver = "vfs"\n')
    assert config_file_path({"CONTAINERS_STORAGE_CONF": path}) == path


def test_keys_and_driver_options(tmp_path: Path) -> None:
    path = _conf(tmp_path, """
[storage]
driver = "overlay"
graphroot = "/srv/g"
runroot = "/srv/r"
transient_store = true
[storage.options]
additionalimagestores = ["/ro1", "/ro2"]
pull_options = {enable_partial_images = "false"}
[storage.options.overlay]
mountopt = "nodev"
mount_program = "/usr/bin/fuse-overlayfs"
""")
    opts = load_config_file(path, {})
    assert (opts.driver_name, opts.graph_root, opts.run_root) == ("overlay", "/srv/g", "/srv/r")
    assert opts.transient_store
    assert opts.driver_options == [
        "overlay.imagestore=/ro1", "overlay.imagestore=/ro2",
        "overlay.mount_program=/usr/bin/fuse-overlayfs", "overlay.mountopt=nodev",
    ]
    assert opts.pull_options == {"enable_partial_images": "false"}


def test_environment_overrides(tmp_path: Path) -> None:
    path = _conf(tmp_path, '[storage]\ndriver = "overlay2"\n[storage.options]\nmountopt = "nodev"\n')
    assert load_config_file(path, {}).driver_name == "overlay"  # Go's overlay2 alias
    opts = load_config_file(path, {"STORAGE_DRIVER": "vfs", "STORAGE_OPTS": "vfs.ignore_chown_errors=true,"})
    assert opts.driver_name == "vfs"
    assert opts.driver_options == ["vfs.ignore_chown_errors=true"]


def test_missing_file_gives_go_defaults(tmp_path: Path) -> None:
    opts = default_store_options({"CONTAINERS_STORAGE_CONF": str(tmp_path / "absent.conf")})
    assert opts.graph_root == "/var/lib/containers/storage"
    assert opts.run_root == "/run/containers/storage"
    assert opts.driver_name == ""
