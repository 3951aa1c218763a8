"""storage.conf and the environment, read the way Go's ``types.DefaultStoreOptions`` reads them.

Only this module and ``cli/`` look at ``os.environ``; everything else receives ``StoreOptions``.

Go 1.60's rules, which podman 4.x shares:

- The *system* options come from ``$CONTAINERS_STORAGE_CONF`` (an error when it names a missing
  file), else ``$XDG_CONFIG_HOME/containers/storage.conf`` when that exists, else
  ``/etc/containers/storage.conf``, else ``/usr/share/containers/storage.conf``.
- Root (and a process in a namespace whose real user is root) takes them, then replaces them with
  ``/etc/containers/storage.conf`` when that exists.
- A rootless user starts from their own defaults: graph root ``rootless_storage_path`` of the
  system file, else ``$XDG_DATA_HOME/containers/storage`` (``~/.local/share/...``); run root
  ``$XDG_RUNTIME_DIR/containers``, else ``/run/user/$UID/containers``, else
  ``/tmp/storage-run-$UID/containers``; the system file's driver when a rootless one, its pull
  options and (for overlay) its ``ignore_chown_errors``, not its roots or other options.  The
  user's own file (``$XDG_CONFIG_HOME`` or ``~/.config``) then replaces all of it, keeping those
  roots where it names none.
- ``$UID`` (the real user), ``$HOME`` and other variables in the roots are expanded and symlinks
  resolved.  ``STORAGE_DRIVER`` and ``STORAGE_OPTS`` override the file.
"""

from __future__ import annotations

import os

from . import TYPE_CHECKING
from .idtools import IDMap
from .layout import driver_of_images_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

SYSTEM_CONFIG = "/usr/share/containers/storage.conf"
OVERRIDE_CONFIG = "/etc/containers/storage.conf"
DEFAULT_GRAPH_ROOT = "/var/lib/containers/storage"
DEFAULT_RUN_ROOT = "/run/containers/storage"
ROOTLESS_DRIVERS = frozenset({"btrfs", "overlay", "overlay2", "vfs"})


class StoreOptions:
    """Everything needed to open a store (Go's types.StoreOptions).

    :func:`~containers_storage.store.open_store` fills one in from keyword arguments and
    ``storage.conf``; :func:`~containers_storage.store.get_store` takes one as it is.  Empty
    strings and lists mean "not set".

    Attributes:
        graph_root: where layers, images and containers are kept.
        run_root: where state a reboot clears is kept (mount records, locks).
        image_store: a separate directory for images and their layers.
        driver_name: the graph driver (``"overlay"``, ``"vfs"``, ...); probed when empty.
        driver_priority: the drivers to probe, in order, when none is named.
        driver_options: driver options (``"overlay.mount_program=..."``,
            ``"<driver>.imagestore=<dir>"`` for additional image stores).
        uid_map: default UID mapping of new layers and containers.
        gid_map: default GID mapping of new layers and containers.
        transient_store: keep container records in the run root.
        disable_volatile: mount containers without overlay's ``volatile`` option.
        pull_options: storage.conf's ``pull_options`` (for image tools; unused here).
        config_file: the storage.conf these options came from.

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
        rootless_storage_path: str = "",
        root_auto_ns_user: str = "",
        auto_ns_min_size: int = 0,
        auto_ns_max_size: int = 0,
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
        #: storage.conf's ``rootless_storage_path``: a rootless user's graph root.
        self.rootless_storage_path = rootless_storage_path
        #: ``root-auto-userns-user``: whose /etc/subuid ranges root's automatic namespaces use.
        self.root_auto_ns_user = root_auto_ns_user
        #: ``auto-userns-min-size`` / ``auto-userns-max-size`` (0: Go's 1024 and 65536).
        self.auto_ns_min_size = auto_ns_min_size
        self.auto_ns_max_size = auto_ns_max_size

    def copy(self) -> StoreOptions:
        """An independent copy (its lists and dicts are copies too)."""
        new = StoreOptions()
        new.__dict__.update(self.__dict__)
        for key in ("driver_priority", "driver_options", "uid_map", "gid_map"):
            setattr(new, key, list(getattr(self, key)))
        new.pull_options = dict(self.pull_options)
        return new

    def __repr__(self) -> str:
        """``StoreOptions({...every field...})``."""
        return f"StoreOptions({vars(self)!r})"


class ConfigError(OSError):
    """A configuration file Go would not accept either; ``str()`` is Go's text."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _ignore(message: str) -> None:
    pass


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _user_home(env: Mapping[str, str]) -> str:
    """Go's unshare.HomeDir: $HOME, else the passwd entry of the real (rootless) user."""
    home = env.get("HOME", "")
    if home:
        return home
    from .userns import rootless_uid

    try:
        import pwd

        return pwd.getpwuid(rootless_uid()).pw_dir
    except KeyError:
        return ""


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False
    return True


def config_file_path(env: Mapping[str, str] | None = None) -> str:
    """The storage.conf that applies (Go's ``types.DefaultConfigFile``).

    For a rootless user it is their own file (``$XDG_CONFIG_HOME/containers/storage.conf`` or
    ``~/.config/containers/storage.conf``) whether or not it exists.
    """
    env = _environ(env)
    if "CONTAINERS_STORAGE_CONF" in env:
        return env["CONTAINERS_STORAGE_CONF"]
    from .userns import uses_per_user_storage

    if not uses_per_user_storage():
        return OVERRIDE_CONFIG if _exists(OVERRIDE_CONFIG) else SYSTEM_CONFIG
    if env.get("XDG_CONFIG_HOME"):
        return os.path.join(env["XDG_CONFIG_HOME"], "containers", "storage.conf")
    home = _user_home(env)
    if not home:
        raise ConfigError(0, "cannot determine user's homedir")
    return os.path.join(home, ".config", "containers", "storage.conf")


def system_config_path(env: Mapping[str, str] | None = None) -> str:
    """The file Go reads its system-wide defaults from (a missing one gives Go's defaults).

    Raises ``ConfigError`` when ``$CONTAINERS_STORAGE_CONF`` names a file that is not there.
    """
    env = _environ(env)
    if "CONTAINERS_STORAGE_CONF" in env:
        path = env["CONTAINERS_STORAGE_CONF"]
        try:
            os.stat(path)  # Go stats it first
        except OSError as e:
            reason = (e.strerror or str(e))
            raise ConfigError(e.errno, f"stat {path}: {reason[:1].lower()}{reason[1:]}") from None
        return path
    override = OVERRIDE_CONFIG
    if "XDG_CONFIG_HOME" in env:
        home_file = os.path.join(env["XDG_CONFIG_HOME"], "containers", "storage.conf")
        if _exists(home_file):
            override = home_file
    return override if _exists(override) else SYSTEM_CONFIG


class _TypeMismatch(Exception):
    """A storage.conf value of a type Go's TOML decoder refuses for that key."""

    def __init__(self, table: tuple[str, ...], key: str, value: object, want: str) -> None:
        super().__init__(key)
        self.table, self.key, self.value, self.want = table, key, value, want

    def go_text(self, path: str) -> str:
        """BurntSushi/toml's text: ``toml: line N (last key "a.b.c"): incompatible types: ...``."""
        names = {bool: "bool", int: "int64", float: "float64", str: "string", list: "[]interface {}",
                 dict: "map[string]interface {}"}
        line = _line_of_key(path, self.table, self.key)
        where = f"line {line} " if line else ""
        key = ".".join((*self.table, self.key))
        found = names.get(type(self.value), type(self.value).__name__)
        return (f'toml: {where}(last key "{key}"): incompatible types: TOML value has type {found}; '
                f"destination has type {self.want}")


def _line_of_key(path: str, table: tuple[str, ...], key: str) -> int:
    """The 1-based line where ``key`` is set in ``[table]`` (0 when not found): error texts only."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    current: tuple[str, ...] = ()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.startswith("[") and not line.startswith("[["):
            header = line[1:].split("]", 1)[0]
            current = tuple(part.strip().strip('"').strip("'") for part in header.split("."))
        elif current == table:
            name = line.split("=", 1)[0].strip().strip('"').strip("'")
            if "=" in line and name == key:
                return number
    return 0


def _go_option_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _driver_options(raw_driver: str, driver: str, opts: dict[str, Any]) -> list[str]:
    """The driver options Go's ReloadConfigurationFile derives from ``[storage.options]``.

    Go adds the generic options under the driver name as written in the file, then the driver's
    own section (falling back to the generic ones) under the normalized name: a generic option
    therefore appears twice, as with Go.
    """
    out: list[str] = []
    for store in opts.get("additionalimagestores") or ():
        out.append(f"{raw_driver}.imagestore={store}")
    for store in opts.get("additionallayerstores") or ():
        out.append(f"{raw_driver}.additionallayerstore={store}")
    for key in ("size", "mount_program", "skip_mount_home", "ignore_chown_errors"):
        if opts.get(key):
            out.append(f"{raw_driver}.{key}={_go_option_text(opts[key])}")
    force_mask = opts.get("force_mask")
    if force_mask is not None and (isinstance(force_mask, bool) or not isinstance(force_mask, int)):
        raise _TypeMismatch(("storage", "options"), "force_mask", force_mask, "integer")  # an os.FileMode
    if force_mask:
        out.append(f"{raw_driver}.force_mask={force_mask:o}")  # Go's %o of an os.FileMode
    if opts.get("mountopt"):
        out.append(f"{raw_driver}.mountopt={opts['mountopt']}")

    def add(section: dict[str, Any], key: str, generic: bool = True) -> None:
        """``<driver>.<key>=`` the section's value, else (when ``generic``) the generic one, if set."""
        if section.get(key):
            out.append(f"{driver}.{key}={_go_option_text(section[key])}")
        elif generic and opts.get(key):
            out.append(f"{driver}.{key}={_go_option_text(opts[key])}")

    if driver in ("overlay", "overlay2"):
        section = opts.get("overlay") or {}
        for key, generic in (("ignore_chown_errors", True), ("mount_program", True),
                             ("mountopt", True), ("size", True), ("inodes", False),
                             ("skip_mount_home", True)):
            add(section, key, generic)
        section_mask = section.get("force_mask")
        if section_mask is not None and not isinstance(section_mask, str):
            # A string there ("0700", "shared", "private"), also for Go: 0o700 is refused.
            raise _TypeMismatch(("storage", "options", "overlay"), "force_mask", section_mask, "string")
        if section_mask:
            out.append(f"{driver}.force_mask={section_mask}")
        elif force_mask:
            # Go 1.60 writes this one with %s of an os.FileMode ("-rwx------"), which its own
            # overlay driver then refuses; current Go writes it in octal, as we do.
            out.append(f"{driver}.force_mask={force_mask:o}")
        if section.get("use_composefs"):
            out.append(f"{driver}.use_composefs={_go_option_text(section['use_composefs'])}")
    elif driver == "vfs":
        add(opts.get("vfs") or {}, "ignore_chown_errors")
    elif driver == "btrfs":
        section = opts.get("btrfs") or {}
        if section.get("min_space"):
            out.append(f"btrfs.min_space={section['min_space']}")
        else:
            add(section, "size")
    elif driver == "zfs":
        section = opts.get("zfs") or {}
        if section.get("fsname"):
            out.append(f"zfs.fsname={section['fsname']}")
        for key in ("mountopt", "size"):
            add(section, key)
    return out


def load_config_file(path: str, env: Mapping[str, str] | None = None,
                     warn: Callable[[str], None] = _ignore) -> StoreOptions:
    """Parse one storage.conf (Go's ReloadConfigurationFile); a missing file gives empty options.

    ``warn`` receives the warnings Go logs while doing so (no driver set, overlay2, unknown keys).
    """
    from .minitoml import load_file  # tomllib only for what the fast subset parser declines

    env = _environ(env)
    opts = StoreOptions(config_file=path)
    try:
        conf = load_file(path)
    except FileNotFoundError:
        conf = {}
    storage = conf.get("storage") or {}
    raw_driver = str(storage.get("driver") or "")
    driver = raw_driver
    if env.get("STORAGE_DRIVER"):
        driver = raw_driver = env["STORAGE_DRIVER"]
    if driver == "overlay2":
        warn("Switching default driver from overlay2 to the equivalent overlay driver")
        driver = "overlay"
    opts.driver_name = driver
    opts.driver_priority = [str(d) for d in storage.get("driver_priority") or []]
    if not driver and not opts.driver_priority:
        warn(f"The storage 'driver' option should be set in {path}. "
             "A driver was picked automatically.")
    opts.run_root = str(storage.get("runroot") or "")
    opts.graph_root = str(storage.get("graphroot") or "")
    opts.image_store = str(storage.get("imagestore") or "")
    opts.rootless_storage_path = str(storage.get("rootless_storage_path") or "")
    opts.transient_store = bool(storage.get("transient_store", False))
    options = storage.get("options") or {}
    try:
        opts.driver_options = _driver_options(raw_driver, driver, options)
    except _TypeMismatch as e:
        text = e.go_text(path)
        warn(f"Failed to read {path} {text}\n")  # Go logs it, then fails with it
        raise ConfigError(0, text) from None
    opts.root_auto_ns_user = str(options.get("root-auto-userns-user") or "")
    opts.auto_ns_min_size = int(options.get("auto-userns-min-size") or 0)
    opts.auto_ns_max_size = int(options.get("auto-userns-max-size") or 0)
    if options.get("pull_options") is not None:
        opts.pull_options = {str(k): str(v) for k, v in options["pull_options"].items()}
    opts.disable_volatile = bool(options.get("disable-volatile", False))
    if "STORAGE_OPTS" in env:
        # Go keeps empty items (and its drivers then refuse them); we drop them.
        opts.driver_options = [o for o in env["STORAGE_OPTS"].split(",") if o]
    return opts


def expand_path(path: str, rootless_uid: int, env: Mapping[str, str] | None = None) -> str:
    """Go's expandEnvPath: ``$UID`` is the real user, then ``$VAR``/``${VAR}`` (unset: empty),
    then symlinks resolved (or the path only cleaned when it does not exist yet)."""
    env = _environ(env)
    path = path.replace("$UID", str(rootless_uid))
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        if path[i + 1] == "{":
            end = path.find("}", i + 2)
            if end < 0:  # Go drops a lone "${" with the rest of the name
                i = n
                continue
            out.append(env.get(path[i + 2 : end], ""))
            i = end + 1
            continue
        j = i + 1
        while j < n and (path[j].isalnum() or path[j] == "_") and path[j].isascii():
            j += 1
        if j == i + 1:
            out.append(ch)
            i += 1
            continue
        out.append(env.get(path[i + 1 : j], ""))
        i = j
    expanded = "".join(out)
    if not expanded:
        return "."
    try:
        os.stat(expanded)
    except OSError:
        cleaned = os.path.normpath(expanded)
        return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned
    return os.path.realpath(expanded)


def _owned_private_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    import stat

    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and st.st_mode & 0o722 == 0o700)


def rootless_runtime_dir(env: Mapping[str, str] | None = None) -> str:
    """Go's homedir.GetRuntimeDir: $XDG_RUNTIME_DIR, /run/user/$UID or /tmp/storage-run-$UID."""
    from .userns import rootless_uid

    env = _environ(env)
    if env.get("XDG_RUNTIME_DIR"):
        return os.path.realpath(env["XDG_RUNTIME_DIR"])
    uid = rootless_uid()
    tmp = os.path.join(env.get("TMPDIR") or "/tmp", f"storage-run-{uid}")
    for candidate in (f"/run/user/{uid}", tmp):
        try:
            os.makedirs(candidate, 0o700, exist_ok=True)
        except OSError:
            pass
        if _owned_private_dir(candidate):
            return candidate
    raise ConfigError(0, f'path "{tmp}" exists and it is not writeable only by the current user')


def _can_use_rootless_overlay(env: Mapping[str, str]) -> bool:
    """Go's canUseRootlessOverlay: fuse-overlayfs in $PATH, or a kernel from 5.13 on."""
    for entry in env.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(entry or ".", "fuse-overlayfs")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return True
    release = os.uname().release.split(".")
    try:
        major = int(release[0])
        minor = int("".join(c for c in release[1] if c.isdigit()) or 0) if len(release) > 1 else 0
    except ValueError:
        return False
    return major >= 6 or (major == 5 and minor >= 13)


def rootless_store_options(system: StoreOptions, env: Mapping[str, str] | None = None,
                           warn: Callable[[str], None] = _ignore) -> StoreOptions:
    """A rootless user's defaults derived from the system options (Go's getRootlessStorageOpts)."""
    from .userns import rootless_uid

    env = _environ(env)
    uid = rootless_uid()
    opts = StoreOptions()
    opts.run_root = os.path.join(rootless_runtime_dir(env), "containers")
    try:
        os.makedirs(opts.run_root, 0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError(e.errno, f"unable to make rootless runtime: {e}") from None
    opts.pull_options = dict(system.pull_options)
    if system.rootless_storage_path:
        opts.graph_root = expand_path(system.rootless_storage_path, uid, env)
    else:
        data = env.get("XDG_DATA_HOME", "")
        if not data:
            home = _user_home(env)
            if not home:
                raise ConfigError(0, "could not get either XDG_DATA_HOME or HOME")
            data = os.path.join(home, ".local", "share")
        opts.graph_root = os.path.join(data, "containers", "storage")
    if system.driver_name in ROOTLESS_DRIVERS:
        opts.driver_name = system.driver_name
    if env.get("STORAGE_DRIVER"):
        opts.driver_name = env["STORAGE_DRIVER"]
    if opts.driver_name == "overlay2":
        warn("Switching default driver from overlay2 to the equivalent overlay driver")
        opts.driver_name = "overlay"
    if opts.driver_name == "overlay":
        for option in system.driver_options:
            if "ignore_chown_errors" in option:
                opts.driver_options.append(option)
                break
    if not opts.driver_name:
        if not system.driver_priority:
            try:
                names = sorted(os.listdir(opts.graph_root))
            except OSError:
                names = []
            for name in names:
                driver = driver_of_images_dir(name)
                if driver:
                    opts.driver_name = driver
                    break
            if not opts.driver_name:
                opts.driver_name = "overlay" if _can_use_rootless_overlay(env) else "vfs"
        else:
            opts.driver_priority = list(system.driver_priority)
    if env.get("STORAGE_OPTS"):
        opts.driver_options.extend(o for o in env["STORAGE_OPTS"].split(",") if o)
    return opts


def system_store_options(env: Mapping[str, str] | None = None,
                         warn: Callable[[str], None] = _ignore) -> StoreOptions:
    """The system-wide options with Go's default roots (Go's loadDefaultStoreOptions)."""
    env = _environ(env)
    opts = load_config_file(system_config_path(env), env, warn)
    opts.run_root = opts.run_root or DEFAULT_RUN_ROOT
    opts.graph_root = opts.graph_root or DEFAULT_GRAPH_ROOT
    return opts


def default_store_options(env: Mapping[str, str] | None = None,
                          warn: Callable[[str], None] = _ignore) -> StoreOptions:
    """The options the CLI (and podman) use when none are given (Go's DefaultStoreOptions).

    Raises ``OSError`` when ``$CONTAINERS_STORAGE_CONF`` names a missing file, and
    ``ValueError`` for a configuration Go refuses too.
    """
    from .userns import rootless_uid, uses_per_user_storage

    env = _environ(env)
    conf = config_file_path(env)
    opts = system_store_options(env, warn)
    if uses_per_user_storage():
        opts = rootless_store_options(opts, env, warn)
    if _exists(conf):
        defaults = opts
        opts = load_config_file(conf, env, warn)
        opts.run_root = opts.run_root or defaults.run_root
        if not opts.graph_root:
            opts.graph_root = opts.rootless_storage_path or defaults.graph_root
    opts.config_file = conf
    uid = rootless_uid()
    if not opts.run_root:
        raise ValueError("runroot must be set")
    opts.run_root = expand_path(opts.run_root, uid, env)
    if not opts.graph_root:
        raise ValueError("graphroot must be set")
    opts.graph_root = expand_path(opts.graph_root, uid, env)
    if opts.rootless_storage_path:
        opts.rootless_storage_path = expand_path(opts.rootless_storage_path, uid, env)
    if opts.image_store and opts.image_store == opts.graph_root:
        raise ValueError(f"imagestore {opts.image_store} must either be not set or be a "
                         "different than graphroot")
    return opts


__all__ = [
    "DEFAULT_GRAPH_ROOT", "DEFAULT_RUN_ROOT", "OVERRIDE_CONFIG", "SYSTEM_CONFIG", "ConfigError",
    "StoreOptions", "config_file_path", "default_store_options", "expand_path", "load_config_file",
    "rootless_runtime_dir", "rootless_store_options", "system_config_path", "system_store_options",
]
