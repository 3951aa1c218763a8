"""Rootless operation: who is rootless, subordinate ID ranges, entering a user namespace.

The rules are those of Go's ``pkg/unshare``, which podman, buildah, skopeo and Go's
``containers-storage`` share, so that our CLI and a Python program see the same store as they do:

- A process is *rootless* when it is not root, when it runs in a namespace that one of those tools
  set up (``_CONTAINERS_USERNS_CONFIGURED`` in the environment, the real user in
  ``_CONTAINERS_ROOTLESS_UID``), or when it is root without ``CAP_SYS_ADMIN`` or without the full
  ID range.  Inside such a namespace the process is uid 0, yet still rootless: it uses the user's
  store and overlay's ``user.`` xattrs, never root's.
- Entering a namespace maps the user's own ID to 0 and the ranges ``/etc/subuid`` and
  ``/etc/subgid`` grant the user to 1, 2, ... (through the setuid helpers ``newuidmap`` and
  ``newgidmap``); without ranges, or when the helpers fail, only the user's own ID is mapped and a
  warning says so.

Go re-executes its binary in the new namespace.  :func:`enter_user_namespace` instead moves the
running process itself (a forked helper, still outside, writes the maps for it), which needs no
second interpreter start and works the same for the CLI and for a Python program that calls it at
start-up, before it starts threads.

This is a primitive: it reads the environment and ``/proc`` but knows nothing of stores.
"""

from __future__ import annotations

import os

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .idtools import IDMap

USERNS_ENV = "_CONTAINERS_USERNS_CONFIGURED"
ROOTLESS_UID_ENV = "_CONTAINERS_ROOTLESS_UID"
ROOTLESS_GID_ENV = "_CONTAINERS_ROOTLESS_GID"
SUBUID_FILE = "/etc/subuid"
SUBGID_FILE = "/etc/subgid"

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CAP_SYS_ADMIN = 21


class UserNamespaceError(OSError):
    """Entering a user namespace failed; the text says which step and why."""


class UserNamespaceRequired(PermissionError):
    """A rootless process asked for something only a user namespace allows (mounting, chowning).

    Call :func:`enter_user_namespace` first (at start-up, before any thread is started), open the
    store with ``open_store(enter_user_namespace=True)``, or run the program under
    ``containers-storage unshare`` or ``podman unshare``.
    """

    def __init__(self, action: str) -> None:
        super().__init__(
            f"{action}: a rootless process needs a user namespace for this; call "
            "containers_storage.userns.enter_user_namespace() first (or open the store with "
            "open_store(enter_user_namespace=True)), or run under `containers-storage unshare` "
            "or `podman unshare`")
        self.action = action


def _env_int(name: str, env: Mapping[str, str] | None) -> int | None:
    value = (os.environ if env is None else env).get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return 0  # Go's strconv.Atoi error is ignored and yields 0


def rootless_uid(env: Mapping[str, str] | None = None) -> int:
    """The real user's UID outside any namespace a container tool set up (Go's GetRootlessUID)."""
    value = _env_int(ROOTLESS_UID_ENV, env)
    return os.getuid() if value is None else value


def rootless_gid(env: Mapping[str, str] | None = None) -> int:
    """The real user's GID outside the namespace (Go's GetRootlessGID)."""
    value = _env_int(ROOTLESS_GID_ENV, env)
    return os.getgid() if value is None else value


def _effective_rootless_uid() -> int:
    # Go's unexported getRootlessUID, which IsRootless uses: the effective UID, not the real one.
    value = _env_int(ROOTLESS_UID_ENV, None)
    return os.geteuid() if value is None else value


def has_cap_sys_admin() -> bool:
    """Whether this process holds CAP_SYS_ADMIN in its effective set."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def has_full_id_range() -> bool:
    """True in the initial user namespace, whose uid_map covers every ID (up to 4294967295)."""
    try:
        with open("/proc/self/uid_map", "rb") as f:
            return b"4294967295" in f.read()
    except OSError:
        return False


_rootless: bool | None = None


def is_rootless() -> bool:
    """Whether this process runs rootless, as Go's ``unshare.IsRootless`` decides (cached)."""
    global _rootless
    if _rootless is None:
        rootless = _effective_rootless_uid() != 0 or bool(os.environ.get(USERNS_ENV))
        if not rootless:
            rootless = not has_cap_sys_admin() or not has_full_id_range()
        _rootless = rootless
    return _rootless


def uses_per_user_storage() -> bool:
    """Whether the user's own store and configuration apply (Go's ``usePerUserStorage``).

    Rootless, and the real user is not root: a nested podman in a root container's namespace
    keeps the system paths.
    """
    return is_rootless() and rootless_uid() != 0


def in_user_namespace() -> bool:
    """Whether this process already is uid 0 of a namespace entered for a rootless user."""
    return os.geteuid() == 0 and rootless_uid() > 0


def needs_user_namespace() -> bool:
    """True for a rootless process that has not entered a user namespace yet.

    Such a process can read a store but cannot mount, or own files as anyone but itself.
    """
    return os.geteuid() != 0 and is_rootless()


def require_user_namespace(action: str) -> None:
    """Raise :class:`UserNamespaceRequired` naming ``action`` when this process lacks one."""
    if needs_user_namespace():
        raise UserNamespaceRequired(action)


# -- subordinate ID ranges ---------------------------------------------------------------------
def parse_subid_file(path: str, name: str, uid_text: str = "") -> list[tuple[int, int]]:
    """The (start, length) ranges ``path`` (/etc/subuid or /etc/subgid) grants ``name``.

    An entry names the user or its numeric ID; ``ALL`` takes every entry.  Errors use Go's texts.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    ranges: list[tuple[int, int]] = []
    for raw in lines:
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(
                f"cannot parse subuid/gid information: Format not correct for {path} file")
        if parts[0] == name or name == "ALL" or (uid_text and parts[0] == uid_text):
            numbers = []
            for field in parts[1:]:
                if not field.lstrip("+-").isdigit() or not field.isascii():
                    raise ValueError(
                        "string to int conversion failed during subuid/gid parsing of "
                        f"{path}: strconv.Atoi: parsing {_q(field)}: invalid syntax")
                numbers.append(int(field))
            ranges.append((numbers[0], numbers[1]))
    return ranges


def stacked_maps(ranges: list[tuple[int, int]], first_container_id: int = 0) -> list[IDMap]:
    """Ranges sorted by host ID and laid end to end from ``first_container_id`` (Go's createIDMap)."""
    from .idtools import IDMap

    maps: list[IDMap] = []
    container_id = first_container_id
    for start, length in sorted(ranges):
        maps.append(IDMap(container_id, start, length))
        container_id += length
    return maps


def sub_id_maps(user: str, group: str | None = None) -> tuple[list[IDMap], list[IDMap]]:
    """The ID maps ``/etc/subuid`` and ``/etc/subgid`` grant ``user`` (Go's NewIDMappings).

    Raises ``OSError`` when a file cannot be read and ``ValueError`` (Go's texts) when it cannot
    be parsed or grants nothing.
    """
    group = user if group is None else group
    uid_text = gid_text = ""
    try:
        import pwd

        uid_text = str(pwd.getpwnam(user).pw_uid)
    except (KeyError, ImportError):
        pass
    try:
        import grp

        gid_text = str(grp.getgrnam(group).gr_gid)
    except (KeyError, ImportError):
        pass
    uids = stacked_maps(parse_subid_file(SUBUID_FILE, user, uid_text))
    gids = stacked_maps(parse_subid_file(SUBGID_FILE, group, gid_text))
    if not uids:
        raise ValueError(f"no subuid ranges found for user {_q(user)} in {SUBUID_FILE}")
    if not gids:
        raise ValueError(f"no subgid ranges found for group {_q(group)} in {SUBGID_FILE}")
    return uids, gids


def current_id_maps(pid: str = "self") -> tuple[list[IDMap], list[IDMap]]:
    """The uid_map and gid_map of a process, as the kernel shows them."""
    from .idtools import IDMap

    out: list[list[IDMap]] = []
    for kind in ("uid_map", "gid_map"):
        path = f"/proc/{pid}/{kind}"
        maps: list[IDMap] = []
        with open(path, encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) != 3:
                    raise ValueError(f"line {line!r} from {path!r} has {len(fields)} fields, not 3")
                maps.append(IDMap(int(fields[0]), int(fields[1]), int(fields[2])))
        out.append(maps)
    return out[0], out[1]


def current_user() -> tuple[str, int, int]:
    """(name, uid, gid) of the real user, as Go's ``user.Current`` finds them ($USER as fallback)."""
    uid, gid = os.getuid(), os.getgid()
    try:
        import pwd

        entry = pwd.getpwuid(uid)
        return entry.pw_name, uid, entry.pw_gid
    except KeyError:
        name = os.environ.get("USER", "")
        if name and os.environ.get("HOME"):
            return name, uid, gid
        raise UserNamespaceError(
            f"error determining current user: user: unknown userid {uid}") from None


def rootless_maps(user: str, uid: int, gid: int, warn: Callable[[str], None] | None = None
                  ) -> tuple[list[IDMap], list[IDMap]]:
    """The maps a rootless user's namespace gets: own IDs to 0, subordinate ranges from 1 on."""
    from .idtools import IDMap

    warn = warn or _log_warning
    uids: list[IDMap] = []
    gids: list[IDMap] = []
    try:
        uids, gids = sub_id_maps(user, user)
    except (OSError, ValueError) as e:
        text = (f"open {e.filename}: {(e.strerror or '').lower()}" if isinstance(e, OSError)
                else str(e))
        warn(f"Reading allowed ID mappings: reading subuid mappings for user {_q(user)} and "
             f"subgid mappings for group {_q(user)}: {text}")
    if not uids:
        warn(f"Found no UID ranges set aside for user {_q(user)} in {SUBUID_FILE}.")
    if not gids:
        warn(f"Found no GID ranges set aside for user {_q(user)} in {SUBGID_FILE}.")
    uid_maps = [IDMap(0, uid, 1), *(IDMap(1 + m.container_id, m.host_id, m.size) for m in uids)]
    gid_maps = [IDMap(0, gid, 1), *(IDMap(1 + m.container_id, m.host_id, m.size) for m in gids)]
    return uid_maps, gid_maps


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _log_warning(message: str) -> None:
    import logging

    logging.getLogger("containers_storage.userns").warning("%s", message)


# -- entering a namespace ------------------------------------------------------------------------
def enter_user_namespace(even_for_root: bool = True, warn: Callable[[str], None] | None = None
                         ) -> bool:
    """Move this process into a new user and mount namespace, as a rootless podman would run.

    For a rootless user the namespace maps the user's IDs to 0 and the subordinate ranges after
    them; afterwards the process is uid 0 there, with every capability over that namespace, and
    ``is_rootless()`` stays true (the environment says who the real user is, so child processes
    such as ``podman`` or our CLI see the same store).  Returns False when there is nothing to do:
    already inside such a namespace, or root with ``CAP_SYS_ADMIN`` (root without it gets a
    namespace with its current maps when ``even_for_root``).

    Call it early, before the program starts threads: the kernel refuses ``unshare`` to a
    multithreaded process (``UserNamespaceError`` then says so).  ``warn`` receives the warnings
    Go logs (no subordinate ranges, ``newuidmap`` failures and the single-ID fallback); by default
    they go to the ``containers_storage.userns`` logger.
    """
    warn = warn or _log_warning
    if in_user_namespace():
        return False
    name, uid, gid = current_user()
    if uid != 0:
        uid_maps, gid_maps = rootless_maps(name, uid, gid, warn)
        use_helpers = True
    elif not even_for_root or has_cap_sys_admin():
        # Root with CAP_SYS_ADMIN needs no namespace to mount.  (Go 1.60 would map root's own
        # subordinate ranges here, find none, and re-execute itself until memfd_create fails.)
        return False
    else:
        uid_maps, gid_maps = current_id_maps()
        uid_maps = [type(m)(m.container_id, m.container_id, m.size) for m in uid_maps]
        gid_maps = [type(m)(m.container_id, m.container_id, m.size) for m in gid_maps]
        use_helpers = False
    _threads_check()
    outcome = _unshare_with_helper(uid_maps, gid_maps, use_helpers)
    for line in outcome.get("warnings", ()):
        warn(line)
    if "error" in outcome:
        raise UserNamespaceError(outcome["error"][0])
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as e:
        raise UserNamespaceError(f"Error during setresuid(0): {e.strerror}") from None
    _unshare(_CLONE_NEWNS, "Error during unshare(CLONE_NEWNS)")
    if uid != 0 or is_rootless():
        os.environ[USERNS_ENV] = "done"
        os.environ[ROOTLESS_UID_ENV] = str(uid)
        os.environ[ROOTLESS_GID_ENV] = str(gid)
    os.environ.setdefault("BUILDAH_ISOLATION", "rootless")
    global _rootless
    _rootless = None
    return True


def _threads_check() -> None:
    import sys

    threading = sys.modules.get("threading")
    count = threading.active_count() if threading is not None else 1
    try:
        count = max(count, len(os.listdir("/proc/self/task")))
    except OSError:
        pass
    if count > 1:
        raise UserNamespaceError(
            f"cannot enter a user namespace: the process runs {count} threads (the kernel allows "
            "unshare(CLONE_NEWUSER) only to a single-threaded process); call "
            "enter_user_namespace() before starting any")


def _unshare(flags: int, what: str) -> None:
    try:
        from ._userns import unshare  # the small C extension: no ctypes on every rootless call
    except ImportError:
        unshare = _ctypes_unshare
    try:
        unshare(flags)
    except OSError as e:
        err = e.errno or 0
        text = f"{what}: {os.strerror(err)}"
        if flags & _CLONE_NEWUSER:
            for path in ("/proc/sys/user/max_user_namespaces",
                         "/proc/sys/kernel/unprivileged_userns_clone"):
                try:
                    with open(path, "rb") as f:
                        if int(f.read().strip() or b"0") == 0:
                            text += f"\nUser namespaces are not enabled in {path}."
                except (OSError, ValueError):
                    pass
        raise UserNamespaceError(err, text) from None


def _ctypes_unshare(flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _unshare_with_helper(uid_maps: list[IDMap], gid_maps: list[IDMap], use_helpers: bool
                         ) -> dict[str, list[str]]:
    """unshare(CLONE_NEWUSER) here, while a forked helper outside writes this process's maps.

    The helper is what Go's parent process is to its re-executed child: it waits until we have
    unshared, runs newgidmap/newuidmap on our PID (falling back to a single-ID map written
    directly), and reports back through a pipe.
    """
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    target = os.getpid()
    helper = os.fork()
    if helper == 0:  # the helper: never returns
        code = 1
        try:
            os.close(go_w)
            os.close(res_r)
            if os.read(go_r, 1) == b"u":
                report = _write_maps(str(target), uid_maps, gid_maps, use_helpers)
                os.write(res_w, (report + "\0done").encode("utf-8", "replace"))
                code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(res_w)
    try:
        try:
            _unshare(_CLONE_NEWUSER, "Error during unshare(CLONE_NEWUSER)")
        except BaseException:
            os.close(go_w)
            go_w = -1
            raise
        os.write(go_w, b"u")
        os.close(go_w)
        go_w = -1
        replies = _read_to_end(res_r)
    finally:
        if go_w >= 0:
            os.close(go_w)
        os.close(res_r)
        os.waitpid(helper, 0)
    outcome: dict[str, list[str]] = {}
    for line in replies.decode("utf-8", "replace").split("\0"):
        kind, _, text = line.partition(" ")
        if kind in ("warning", "error"):
            outcome.setdefault(kind + "s" if kind == "warning" else kind, []).append(text)
    if not replies:
        outcome["error"] = ["setting up the user namespace: the helper process exited early"]
    return outcome


def _write_maps(pid: str, uid_maps: list[IDMap], gid_maps: list[IDMap], use_helpers: bool) -> str:
    """In the helper: set setgroups, gid_map and uid_map of ``pid``; return the report lines.

    newgidmap and newuidmap run side by side (each is a setuid program start); a failure falls
    back, as Go does, to a single-ID map written directly.
    """
    lines: list[str] = []

    def proc_write(name: str, data: str) -> None:
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    texts = {kind: "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)
             for kind, maps in (("gid", gid_maps), ("uid", uid_maps))}
    try:
        proc_write("setgroups", "allow")
        outcomes: dict[str, tuple[bool, str]] = {}
        if use_helpers:
            started = {kind: _spawn_helper(f"new{kind}map", [pid, *texts[kind].split()])
                       for kind in ("gid", "uid")}
            outcomes = {kind: _reap_helper(run) for kind, run in started.items()}
        for kind, own in (("gid", os.getegid()), ("uid", os.geteuid())):
            text = texts[kind]
            if use_helpers:
                done, output = outcomes[kind]
                if done:
                    continue
                program = f"new{kind}map"
                prefix = "running" if kind == "gid" else "Error running"
                lines.append(f"warning {prefix} {program}: {output}")
                if not _is_setid(program, kind):
                    lines.append(f"warning {program} should be set{kind} or have filecaps set{kind}")
                lines.append("warning Falling back to single mapping")
                text = f"0 {own} 1\n"
                if kind == "gid":
                    proc_write("setgroups", "deny")
            try:
                proc_write(f"{kind}_map", text)
            except OSError as e:
                lines.append(f"error writing {text!r} to /proc/{pid}/{kind}_map: {e.strerror}")
                break
    except OSError as e:
        lines.append(f"error setting up the user namespace of {pid}: {e}")
    return "\0".join(lines)


def _which(program: str) -> str | None:
    for entry in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        candidate = os.path.join(entry or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _spawn_helper(program: str, args: list[str]) -> tuple[int, int] | str:
    """Start newuidmap/newgidmap with its output on a pipe: (pid, read end), or why it could not."""
    path = _which(program)
    if path is None:
        return f'exec: "{program}": executable file not found in $PATH'
    out_r, out_w = os.pipe()
    try:
        pid = os.posix_spawn(path, [path, *args], dict(os.environ), file_actions=[
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, out_w, 2)])
    except OSError as e:
        os.close(out_r)
        return str(e)
    finally:
        os.close(out_w)
    return pid, out_r


def _read_to_end(fd: int) -> bytes:
    """Everything a helper writes to its pipe, up to its end."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap_helper(started: tuple[int, int] | str) -> tuple[bool, str]:
    """Wait for a started helper: (succeeded, what it printed, or why it failed)."""
    if isinstance(started, str):
        return False, started
    pid, out_r = started
    data = _read_to_end(out_r)
    os.close(out_r)
    _, status = os.waitpid(pid, 0)
    output = data.decode("utf-8", "replace")
    if status == 0:
        return True, output
    code = os.waitstatus_to_exitcode(status)
    state = f"exit status {code}" if code >= 0 else f"signal: {-code}"
    return False, f"{state}: {output}"


def _is_setid(program: str, kind: str) -> bool:
    import stat

    path = _which(program)
    if path is None:
        return False
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    bit = stat.S_ISUID if kind == "uid" else stat.S_ISGID
    if mode & bit:
        return True
    try:  # file capabilities: any security.capability xattr counts (cap_set[ug]id is what it holds)
        os.getxattr(path, "security.capability")
        return True
    except OSError:
        return False


__all__ = [
    "ROOTLESS_GID_ENV", "ROOTLESS_UID_ENV", "USERNS_ENV", "UserNamespaceError",
    "UserNamespaceRequired", "current_id_maps", "current_user", "enter_user_namespace",
    "has_cap_sys_admin", "has_full_id_range", "in_user_namespace", "is_rootless",
    "needs_user_namespace", "parse_subid_file", "require_user_namespace", "rootless_gid",
    "rootless_maps", "rootless_uid", "stacked_maps", "sub_id_maps", "uses_per_user_storage",
]
