"""storage.conf and the environment, read the way Go's types.DefaultStoreOptions reads them.

Only this module and ``cli/`` look at ``os.environ``; everything else receives ``StoreOptions``.
"""

from __future__ import annotations

import os

from .idtools import IDMap

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

SYSTEM_CONFIG = "/usr/share/containers/storage.conf"
OVERRIDE_CONFIG = "/etc/containers/storage.conf"
DEFAULT_GRAPH_ROOT = "/var/lib/containers/storage"
DEFAULT_RUN_ROOT = "/run/containers/storage"


class StoreOptions:
    """Everything needed to open a store (Go's types.StoreOptions).

    A plain class rather than a dataclass: importing dataclasses costs every CLI call ~10 ms.
    """

    def __init__(
        self,
        graph_root: str = "",
        run_root: str = "",
        image_store: str = "",
        driver_name: str = "",
        driver_priority: list[str] | None = None,
        driver_options: list[str] | None = None,
        uid_map: list[IDMap] | None = None,
        gid_map: list[IDMap] | None = None,
        transient_store: bool = False,
        disable_volatile: bool = False,
        pull_options: dict[str, str] | None = None,
        config_file: str = "",
    ) -> None:
        self.graph_root = graph_root
        self.run_root = run_root
        self.image_store = image_store
        self.driver_name = driver_name
        self.driver_priority: list[str] = list(driver_priority or [])
        self.driver_options: list[str] = list(driver_options or [])
        self.uid_map: list[IDMap] = list(uid_map or [])
        self.gid_map: list[IDMap] = list(gid_map or [])
        self.transient_store = transient_store
        self.disable_volatile = disable_volatile
        self.pull_options: dict[str, str] = dict(pull_options or {})
        self.config_file = config_file

    def __repr__(self) -> str:
        return f"StoreOptions({vars(self)!r})"


def config_file_path(env: dict[str, str] | None = None) -> str:
    """Which storage.conf applies: $CONTAINERS_STORAGE_CONF, then the user's, /etc, /usr/share."""
    env = dict(os.environ) if env is None else env
    if "CONTAINERS_STORAGE_CONF" in env:
        return env["CONTAINERS_STORAGE_CONF"]
    override = OVERRIDE_CONFIG
    if os.geteuid() != 0:
        xdg = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "/"), ".config")
        override = os.path.join(xdg, "containers", "storage.conf")
    elif "XDG_CONFIG_HOME" in env:
        candidate = os.path.join(env["XDG_CONFIG_HOME"], "containers", "storage.conf")
        if os.path.exists(candidate):
            override = candidate
    if os.path.exists(override):
        return override
    return SYSTEM_CONFIG


def _driver_options(driver: str, opts: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for store in opts.get("additionalimagestores") or ():
        out.append(f"{driver}.imagestore={store}")
    for store in opts.get("additionallayerstores") or ():
        out.append(f"{driver}.additionallayerstore={store}")
    generic = {
        "size": opts.get("size"), "mount_program": opts.get("mount_program"),
        "skip_mount_home": opts.get("skip_mount_home"),
        "ignore_chown_errors": opts.get("ignore_chown_errors"),
        "mountopt": opts.get("mountopt"),
    }
    for key, value in generic.items():
        if value:
            out.append(f"{driver}.{key}={value}")
    if opts.get("force_mask"):
        out.append(f"{driver}.force_mask={opts['force_mask']}")
    section = opts.get("overlay" if driver in ("overlay", "overlay2") else driver) or {}
    if isinstance(section, dict):
        for key in ("ignore_chown_errors", "mount_program", "mountopt", "size", "inodes",
                    "skip_mount_home", "force_mask", "use_composefs"):
            if section.get(key):
                out.append(f"{driver}.{key}={section[key]}")
    return out


def load_config_file(path: str, env: dict[str, str]) -> StoreOptions:
    """Parse one storage.conf; a missing file yields Go's built-in defaults."""
    import tomllib  # only when a config file is actually read: most CLI calls name their roots

    opts = StoreOptions(config_file=path)
    try:
        with open(path, "rb") as f:
            conf = tomllib.load(f)
    except FileNotFoundError:
        conf = {}
    storage = conf.get("storage") or {}
    driver = str(storage.get("driver") or "")
    if env.get("STORAGE_DRIVER"):
        driver = env["STORAGE_DRIVER"]
    if driver == "overlay2":
        driver = "overlay"
    opts.driver_name = driver
    opts.driver_priority = list(storage.get("driver_priority") or [])
    opts.run_root = str(storage.get("runroot") or "")
    opts.graph_root = str(storage.get("graphroot") or "")
    opts.image_store = str(storage.get("imagestore") or "")
    opts.transient_store = bool(storage.get("transient_store", False))
    options = storage.get("options") or {}
    opts.driver_options = _driver_options(driver, options)
    opts.pull_options = dict(options.get("pull_options") or {})
    opts.disable_volatile = bool(options.get("disable-volatile", False))
    if "STORAGE_OPTS" in env:
        opts.driver_options = [o for o in env["STORAGE_OPTS"].split(",") if o]
    return opts


def default_store_options(env: dict[str, str] | None = None) -> StoreOptions:
    """Go's DefaultStoreOptions for root: storage.conf with the default roots filled in."""
    env = dict(os.environ) if env is None else env
    opts = load_config_file(config_file_path(env), env)
    if os.geteuid() != 0 and not opts.graph_root:
        data = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME", "/"), ".local", "share")
        opts.graph_root = os.path.join(data, "containers", "storage")
        runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        opts.run_root = opts.run_root or os.path.join(runtime, "containers")
    opts.graph_root = opts.graph_root or DEFAULT_GRAPH_ROOT
    opts.run_root = opts.run_root or DEFAULT_RUN_ROOT
    return opts
