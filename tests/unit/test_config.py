"""storage.conf lookup and parsing follow Go's types.DefaultStoreOptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from containers_storage import config, userns
from containers_storage.config import (
    config_file_path,
    default_store_options,
    expand_path,
    load_config_file,
)


class SystemFiles:
    """The two system-wide storage.conf paths, moved into a temporary directory."""

    def __init__(self, base: Path) -> None:
        self.usr = base / "usr-share-storage.conf"
        self.etc = base / "etc-storage.conf"


@pytest.fixture
def system_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SystemFiles:
    files = SystemFiles(tmp_path)
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(files.usr))
    monkeypatch.setattr(config, "OVERRIDE_CONFIG", str(files.etc))
    for name in ("CONTAINERS_STORAGE_CONF", "XDG_CONFIG_HOME", "STORAGE_DRIVER", "STORAGE_OPTS",
                 userns.USERNS_ENV, userns.ROOTLESS_UID_ENV, userns.ROOTLESS_GID_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(userns, "_rootless", None)
    return files


@pytest.fixture
def rootless(monkeypatch: pytest.MonkeyPatch, system_files: SystemFiles) -> None:
    """Act as a process in a namespace podman made for uid 1001: rootless, per-user storage."""
    monkeypatch.setenv(userns.USERNS_ENV, "done")
    monkeypatch.setenv(userns.ROOTLESS_UID_ENV, "1001")
    monkeypatch.setattr(userns, "_rootless", None)


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


def test_missing_file_named_by_env_is_an_error(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.conf")
    with pytest.raises(OSError, match=f"^stat {absent}: no such file or directory$"):
        default_store_options({"CONTAINERS_STORAGE_CONF": absent})


def test_missing_system_files_give_go_defaults(tmp_path: Path, system_files: SystemFiles) -> None:
    opts = default_store_options({})
    assert opts.graph_root == "/var/lib/containers/storage"
    assert opts.run_root == "/run/containers/storage"
    assert opts.driver_name == ""


SYSTEM = """
[storage]
driver = "overlay"
graphroot = "/var/lib/sys-graph"
runroot = "/run/sys-run"
rootless_storage_path = "$HOME/rootless-$UID"
[storage.options]
mount_program = "/usr/bin/fuse-overlayfs"
pull_options = {enable_partial_images = "true"}
[storage.options.overlay]
ignore_chown_errors = "true"
mountopt = "nodev"
"""


def test_root_prefers_etc_over_usr_share(system_files: SystemFiles) -> None:
    system_files.usr.write_text('[storage]\ndriver = "vfs"\ngraphroot = "/usr-g"\n')
    opts = default_store_options({})
    assert (opts.driver_name, opts.graph_root, opts.config_file) == ("vfs", "/usr-g", str(system_files.usr))
    system_files.etc.write_text('[storage]\ndriver = "overlay"\nrunroot = "/etc-r"\n')
    opts = default_store_options({})
    assert (opts.driver_name, opts.graph_root, opts.run_root) == (
        "overlay", "/var/lib/containers/storage", "/etc-r")


def test_root_ignores_xdg_config_home_when_a_system_file_exists(
        system_files: SystemFiles, tmp_path: Path) -> None:
    # Go reads $XDG_CONFIG_HOME's file as the system defaults, then replaces them with
    # /usr/share's file (checked against Go 1.60's `config` as root).
    (tmp_path / "xdg" / "containers").mkdir(parents=True)
    (tmp_path / "xdg" / "containers" / "storage.conf").write_text('[storage]\ndriver = "btrfs"\n')
    system_files.usr.write_text('[storage]\ndriver = "vfs"\ngraphroot = "/usr-g"\n')
    opts = default_store_options({"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert (opts.driver_name, opts.graph_root) == ("vfs", "/usr-g")


def test_rootless_defaults_take_only_some_system_settings(
        rootless: None, system_files: SystemFiles, tmp_path: Path) -> None:
    system_files.usr.write_text(SYSTEM.replace("rootless_storage_path", "# "))
    env = {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path)}
    opts = default_store_options(env)
    assert opts.graph_root == str(tmp_path / "home" / ".local" / "share" / "containers" / "storage")
    assert opts.run_root == str(tmp_path / "containers")
    assert (tmp_path / "containers").is_dir()  # Go makes the run root at once
    assert opts.driver_name == "overlay"
    # Of the system's driver options only ignore_chown_errors (for overlay); its pull options.
    assert opts.driver_options == ["overlay.ignore_chown_errors=true"]
    assert opts.pull_options == {"enable_partial_images": "true"}
    assert opts.config_file == str(tmp_path / "home" / ".config" / "containers" / "storage.conf")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    assert default_store_options(env).graph_root == str(tmp_path / "data" / "containers" / "storage")


def test_rootless_storage_path_is_expanded(rootless: None, system_files: SystemFiles, tmp_path: Path) -> None:
    system_files.usr.write_text(SYSTEM)
    opts = default_store_options({"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)})
    assert opts.graph_root == f"{tmp_path}/rootless-1001"
    assert opts.rootless_storage_path == ""  # the user's options do not carry it


def test_users_own_file_replaces_everything_but_the_roots(
        rootless: None, system_files: SystemFiles, tmp_path: Path) -> None:
    system_files.usr.write_text(SYSTEM)
    # ~/.config's file: with $XDG_CONFIG_HOME set, Go would also take that file as the system one.
    user_conf = tmp_path / ".config" / "containers" / "storage.conf"
    user_conf.parent.mkdir(parents=True)
    user_conf.write_text('[storage]\ndriver = "vfs"\n')
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    opts = default_store_options(env)
    assert (opts.driver_name, opts.driver_options, opts.pull_options) == ("vfs", [], {})
    assert opts.graph_root == f"{tmp_path}/rootless-1001"
    assert opts.run_root == f"{tmp_path}/containers"
    assert opts.config_file == str(user_conf)
    user_conf.write_text('[storage]\ndriver = "vfs"\ngraphroot = "$HOME/g-$UID"\n'
                         'runroot = "${XDG_RUNTIME_DIR}/r"\n')
    opts = default_store_options(env)
    assert (opts.graph_root, opts.run_root) == (f"{tmp_path}/g-1001", f"{tmp_path}/r")
    user_conf.write_text('[storage]\nrootless_storage_path = "/srv/$UNSET/x"\n')
    opts = default_store_options(env)
    assert opts.graph_root == "/srv/x"  # unset variables expand to nothing, the path is cleaned
    assert opts.driver_name == ""


def test_rootless_driver_from_an_existing_store(
        rootless: None, system_files: SystemFiles, tmp_path: Path) -> None:
    system_files.usr.write_text('[storage]\ndriver = "zfs"\n')  # not a rootless driver
    (tmp_path / "d" / "containers" / "storage" / "vfs-images").mkdir(parents=True)
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "d")}
    assert default_store_options(env).driver_name == "vfs"
    assert default_store_options({**env, "STORAGE_DRIVER": "overlay2"}).driver_name == "overlay"


def test_expand_path(tmp_path: Path) -> None:
    env = {"HOME": "/home/u", "USER": "u"}
    assert expand_path("$HOME/x/$USER-$UID", 7, env) == "/home/u/x/u-7"
    assert expand_path("${HOME}//a/../b/", 7, env) == "/home/u/b"
    assert expand_path("/a/$NOPE/b", 7, env) == "/a/b"
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert expand_path(str(tmp_path / "link"), 0, {}) == str(tmp_path / "real")


def test_force_mask_integer_is_written_in_octal(tmp_path: Path) -> None:
    path = _conf(tmp_path, '[storage]\ndriver = "overlay"\n[storage.options]\nforce_mask = 0o700\n')
    assert "overlay.force_mask=700" in load_config_file(path, {}).driver_options


def test_warnings_go_logs(tmp_path: Path) -> None:
    path = _conf(tmp_path, '[storage]\ndriver = "overlay2"\n')
    seen: list[str] = []
    load_config_file(path, {}, seen.append)
    assert seen == ["Switching default driver from overlay2 to the equivalent overlay driver"]
    path = _conf(tmp_path, '[storage]\ngraphroot = "/g"\n')
    seen.clear()
    load_config_file(path, {}, seen.append)
    assert seen == [
        f"The storage 'driver' option should be set in {path}. A driver was picked automatically."]
