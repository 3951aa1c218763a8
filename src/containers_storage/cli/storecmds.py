"""Store-wide commands: status, version, shutdown, wipe, config, gc, dedup, unshare, copy.

status and version print to stderr (Go does); shutdown/wipe/gc print ``""`` in JSON mode on
success, and Go's JSON of an error value (``{}``) on failure.
"""

from __future__ import annotations

import os

from .. import TYPE_CHECKING
from .base import CommandError, Context, debug_line, go_error_text
from .flags import go_list, go_quote
from .output import Output

if TYPE_CHECKING:
    from typing import Any


def status(ctx: Context, args: list[str]) -> int:
    store = ctx.store
    try:
        pairs = [list(p) for p in store.status()]
    except Exception as e:
        raise CommandError(f"status: {go_error_text(e)}") from None
    basics = [["Root", store.graph_root], ["Run Root", store.run_root], ["Driver Name", store.driver_name],
              ["Driver Options", go_list(list(store.options.driver_options))]]
    rows = basics + pairs
    if ctx.json:
        ctx.out.json(rows)
    else:
        ctx.out.err("".join(f"{k}: {v}\n" for k, v in rows))
    return 0


def version(ctx: Context, args: list[str]) -> int:
    rows = [list(p) for p in ctx.store.version()]
    if ctx.json:
        ctx.out.json(rows)
    else:
        ctx.out.err("".join(f"{k}: {v}\n" for k, v in rows))
    return 0


def _store_wide(ctx: Context, fn: Any) -> int:
    try:
        fn()
    except Exception as e:
        if ctx.json:
            ctx.out.json({})  # Go encodes the error value itself, which has no exported fields
            return 1
        raise CommandError(f"{ctx.name}: {go_error_text(e)}") from None
    if ctx.json:
        ctx.out.json("")
    return 0


def shutdown(ctx: Context, args: list[str]) -> int:
    return _store_wide(ctx, lambda: ctx.store.shutdown(force=ctx.flag("force")))


def wipe(ctx: Context, args: list[str]) -> int:
    return _store_wide(ctx, ctx.store.wipe)


def gc(ctx: Context, args: list[str]) -> int:
    try:
        ctx.store.garbage_collect()
        if ctx.json:
            ctx.out.json("")
        return 0
    finally:
        try:
            ctx.store.shutdown(force=True)
        except Exception as e:
            ctx.out.err(f"shutdown: {go_error_text(e)}\n")


def dedup(ctx: Context, args: list[str]) -> int:
    """Go's dedup: "Deduplicated N bytes" (or {"Deduped": N}).

    Where the file system cannot share extents Go still prints 0 bytes and succeeds, saying why
    only at debug level; we print the same and also say why as a warning.
    """
    method = ctx.text("hash_method")
    if method not in ("crc", "size", "sha256"):
        raise CommandError(f"invalid hash method: {method}")
    try:
        result = ctx.store.dedup(method)
    except Exception as e:
        if ctx.json:
            ctx.out.json({})  # Go encodes the error value itself, which has no exported fields
            return 1
        raise CommandError(f"{ctx.name}: {go_error_text(e)}") from None
    if not result.supported:
        ctx.out.err(debug_line("Failed to deduplicate: reflinks are not supported on this platform",
                               "warning"))
    if ctx.json:
        ctx.out.json(result.to_json())
    else:
        ctx.out.out(f"Deduplicated {result.deduped} bytes\n")
    return 0


def unshare(ctx: Context, args: list[str]) -> int:
    """Run a command (or $SHELL) in the user namespace a rootless user's store needs."""
    return run_unshare(args, ctx.out)


def run_unshare(args: list[str], out: Output) -> int:
    """``unshare``'s work, which needs no open store (the CLI calls it without opening one).

    The CLI has already entered the namespace unless ``--unshare=false`` was given; root with
    CAP_SYS_ADMIN needs none and runs the command as it is.
    """
    from ..userns import UserNamespaceError, enter_user_namespace, in_user_namespace

    if not in_user_namespace():
        try:
            enter_user_namespace(even_for_root=True,
                                 warn=lambda m: out.err(debug_line(m, "warning")))
        except UserNamespaceError as e:
            raise CommandError(str(e.strerror or e)) from None
    if not args:
        args = [os.environ.get("SHELL") or "/bin/sh"]
    out.flush()
    # posix_spawnp rather than subprocess: a rootless user's `unshare CMD` is a hot path, and
    # subprocess costs more to import than the namespace costs to enter.
    try:
        pid = os.posix_spawnp(args[0], args, os.environ)
    except OSError as e:
        reason = "executable file not found in $PATH" if isinstance(e, FileNotFoundError) \
            else (e.strerror or str(e)).lower()
        raise CommandError(f"exec: {go_quote(args[0])}: {reason}") from None
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise CommandError(f"exit status {code}" if code > 0 else f"signal: {_signal_name(-code)}")
    return 0


def _signal_name(number: int) -> str:
    """Go's ExitError text for a signalled child: "signal: killed", "signal: terminated"..."""
    names = {1: "hangup", 2: "interrupt", 3: "quit", 6: "aborted", 9: "killed", 13: "broken pipe",
             15: "terminated"}
    return names.get(number, f"signal {number}")


# -- config ---------------------------------------------------------------------------------------
def config(ctx: Context, args: list[str]) -> int:
    """The effective storage.conf settings as Go's types.StoreOptions JSON."""
    from ..config import config_file_path, default_store_options, load_config_file

    env = dict(os.environ)
    try:
        path = config_file_path(env)
        options = default_store_options(env)
    except (OSError, ValueError) as e:
        raise CommandError(f"default: {go_error_text(e)}") from None
    if args:
        try:
            os.stat(args[0])
        except OSError as e:
            raise CommandError(f"reload: stat {args[0]}: {_lower(e.strerror)}") from None
        if os.path.abspath(args[0]) != os.path.abspath(path):
            path = args[0]
            options = load_config_file(path, env)
    pull = {str(k): str(v) for k, v in sorted(options.pull_options.items())}
    # Go's types.StoreOptions: its fields in order, all but two of them omitempty.
    out: dict[str, Any] = {}
    for key, value, omitempty in (
        ("runroot", options.run_root, True),
        ("root", options.graph_root, True),
        ("imagestore", options.image_store, True),
        ("RootlessStoragePath", options.rootless_storage_path, False),
        ("driver", options.driver_name, True),
        ("driver-priority", list(options.driver_priority), True),
        ("driver-options", list(options.driver_options), True),
        ("uidmap", [m.to_json() for m in options.uid_map], True),
        ("gidmap", [m.to_json() for m in options.gid_map], True),
        ("root_auto_ns_user", options.root_auto_ns_user, True),
        ("auto_userns_min_size", options.auto_ns_min_size, True),
        ("auto_userns_max_size", options.auto_ns_max_size, True),
        ("PullOptions", pull or None, False),
        ("disable-volatile", options.disable_volatile, True),
        ("transient_store", options.transient_store, True),
    ):
        if value or not omitempty:
            out[key] = value
    ctx.out.json(out)
    return 0


def _lower(text: str | None) -> str:
    if not text:
        return ""
    return text[0].lower() + text[1:]


# -- copy ---------------------------------------------------------------------------------------
def copy(ctx: Context, args: list[str]) -> int:
    from .copycmd import copy as copy_content

    return copy_content(ctx, args)


__all__ = ["config", "copy", "dedup", "gc", "shutdown", "status", "unshare", "version", "wipe"]
