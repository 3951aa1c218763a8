"""``containers-storage``: the Go CLI's command line, help texts, exit codes and error texts.

The flow is Go's main.go: global options (parsed again after the command name, with the values
seen so far as defaults), the command's own flags, argument counts, then the store is opened and
the command runs.  Only the chosen command's module is imported.
"""

from __future__ import annotations

import gc
import os
import sys

from .. import TYPE_CHECKING
from .commands import COMMANDS, Command, find
from .flags import FlagError, FlagSet, go_list
from .output import Output, exit_now
from .runner import log_sink, run_command

if TYPE_CHECKING:
    from ..config import ConfigError, StoreOptions

PROG = "containers-storage"
_FAST = frozenset({"layers", "images", "containers"})  # listing.FAST, without importing it
_FAST_LOOKUPS = frozenset({"exists", "layer", "image", "get-names", "getnames", "metadata"})  # lookups.FAST
_gc_resume = (True, False)  # main(): whether to turn the collector back on, whether a console run


def program_name(argv0: str) -> str:
    """What Go's os.Args[0] would be: the bare name when the shell found us through $PATH."""
    if "/" not in argv0:
        return argv0
    directory, base = os.path.split(argv0)
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(entry or ".", base)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            same = os.path.abspath(entry or ".") == os.path.abspath(directory or ".")
            return base if same else argv0
    return argv0


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _is_rootless() -> bool:
    from ..userns import is_rootless

    return is_rootless()


def _make_flags(name: str, prog: str, values: dict[str, object], exit_on_error: bool, out: Output
                ) -> FlagSet:
    """Go's makeFlags: the global options, defaulting to whatever was parsed so far."""
    fs = FlagSet(name=name, prog=prog, values=values, exit_on_error=exit_on_error, output=out)
    fs.add_string("run", ["-run", "R"], str(values.get("run", "")), "Root of the runtime state tree")
    fs.add_string("graph", ["-graph", "g"], str(values.get("graph", "")), "Root of the storage tree")
    fs.add_string("image_store", ["-image-store"], str(values.get("image_store", "")),
              "Root of the separate image store")
    fs.add_bool("transient_store", ["-transient-store"], bool(values.get("transient_store", False)),
            "Transient store")
    fs.add_string("storage_driver", ["-storage-driver", "s"], str(values.get("storage_driver", "")),
              "Storage driver to use ($STORAGE_DRIVER)")
    fs.add_list("storage_opt", ["-storage-opt"], "Set storage driver options ($STORAGE_OPTS)")
    fs.add_bool("debug", ["-debug", "D"], bool(values.get("debug", False)), "Print debugging information")
    rootless = _is_rootless()
    fs.add_bool("unshare", ["-unshare", "U"], bool(values.get("unshare", rootless)),
            f"Run in a user namespace (default {'true' if rootless else 'false'})")
    return fs


def command_flags(name: str, command: Command, prog: str, values: dict[str, object], out: Output
                  ) -> FlagSet:
    """A command's flag set: the global options again (Go's makeFlags), then the command's own."""
    fs = _make_flags(name, prog, values, True, out)
    for spec in command.flags:
        if spec.kind == "bool":
            fs.add_bool(spec.dest, list(spec.names), bool(spec.default), spec.usage)
        elif spec.kind == "list":
            values.pop(spec.dest, None)
            fs.add_list(spec.dest, list(spec.names), spec.usage)
        else:
            fs.add_string(spec.dest, list(spec.names), str(spec.default), spec.usage)
    return fs


def _global_usage(fs: FlagSet, out: Output) -> None:
    lines = ["Usage: containers-storage command [options [...]]\n\n", "Commands:\n\n"]
    lines += [f"  {command.names[0]:<30}{command.usage}\n" for command in COMMANDS]
    lines.append("\nOptions:\n")
    out.out("".join(lines))
    fs.print_defaults()


def _command_usage(fs: FlagSet, name: str, command: Command, out: Output) -> None:
    out.out(f"Usage: containers-storage {name} {command.options_help}\n\n{command.usage}\n\nOptions:\n")
    fs.print_defaults()


def main(argv: list[str] | None = None, prog: str | None = None, *, _start_up_gc_off: bool = False) -> int:
    """Run one command line (``argv`` without the program name); returns the exit status."""
    global _gc_resume
    console = argv is None
    # The garbage collector stays off through start-up and the read-only fast paths (no garbage
    # worth a collection, thousands of objects it would scan again and again), and is back on
    # for a command's own code (console.py turned it off before our imports).
    gc_was_on = _start_up_gc_off or gc.isenabled()
    gc.disable()
    _gc_resume = (gc_was_on, console)
    if argv is None:
        argv = sys.argv[1:]
        if prog is None:
            prog = program_name(sys.argv[0])
    out = Output()
    from .. import lazylog

    saved, lazylog.sink = lazylog.sink, log_sink(out)  # library warnings as Go's logrus lines
    try:
        code = _run(list(argv), prog or PROG, out)
    except _Exit as e:
        code = e.code
    finally:
        lazylog.sink = saved
        out.flush()
        if gc_was_on and not console:
            gc.enable()
    if console:
        exit_now(code)
    return code


def _run(argv: list[str], prog: str, out: Output) -> int:
    values: dict[str, object] = {}
    top = _make_flags(PROG, prog, values, False, out)
    top.usage = lambda: _global_usage(top, out)
    if not argv:
        _global_usage(top, out)
        return 1
    try:
        top.parse(argv, with_help=True)
    except FlagError as e:
        if e.exit_code is not None:
            return e.exit_code
        out.out(f"{e} while parsing arguments (1)\n")
        top.to_stdout = False
        _global_usage(top, out)
        return 1
    base: StoreOptions | None = None
    config_error: BaseException | None = None
    if not (values["graph"] or values["run"] or values["storage_driver"] or values["storage_opt"]):
        try:
            base = _default_options(values, out)
        except (OSError, ValueError) as e:
            # Go ignores DefaultStoreOptions' error here and fails in GetStore with its text.
            config_error = e
    else:
        config_error = _system_config_error()
    args = top.args
    if not args:
        _global_usage(top, out)
        return 1
    name = args[0]
    command = find(name)
    if command is None:
        out.out(f"{name}: unrecognized command.\n")
        return 1

    fs = command_flags(name, command, prog, values, out)
    fs.usage = lambda: _command_usage(fs, name, command, out)
    try:
        fs.parse(args[1:])
    except FlagError as e:
        return e.exit_code if e.exit_code is not None else 125
    args = fs.args
    if command.min_args and len(args) < command.min_args:
        out.out(f"{name}: more arguments required.\n")
        _command_usage(fs, name, command, out)
        return 1
    if command.max_args >= 0 and len(args) > command.max_args:
        out.out(f"{name}: too many arguments ({go_list(args)}).\n")
        _command_usage(fs, name, command, out)
        return 1
    if values.get("unshare"):
        code = enter_namespace(out)
        if code is not None:
            return code
    if config_error is not None:
        from .base import go_error_text

        out.out(f"error initializing: {go_error_text(config_error)}\n")
        return 1

    if values.get("debug"):
        from .base import debug_line

        driver = str(values.get("storage_driver") or "")
        opts = values.get("storage_opt")
        out.err("".join(debug_line(m) for m in (
            f"Root: {values.get('graph') or ''}", f"Run Root: {values.get('run') or ''}",
            f"Driver Name: {driver}", f"Driver Options: {go_list(opts if isinstance(opts, list) else [])}",
        )))
        if driver:
            out.err(debug_line(f'[graphdriver] trying provided driver "{driver}"'))
    if name == "unshare":
        # Go opens the store first only to drop it; its imports would cost a third of the call.
        from .base import go_error_text
        from .storecmds import run_unshare

        try:
            return run_unshare(args, out)
        except Exception as e:
            out.err(go_error_text(e) + "\n")
            return 1
    if name in _FAST:
        from .listing import run_fast

        code = run_fast(name, values, out)
        if code is not None:
            return code
    elif name in _FAST_LOOKUPS:
        from .lookups import run_fast as run_lookup

        code = run_lookup(name, values, args, out)
        if code is not None:
            return code
    return run_command(name, command.action, values, args, out, base, _gc_resume)


def _system_config_error() -> ConfigError | None:
    """Go's GetStore reads the system configuration even when the roots are given: a missing
    $CONTAINERS_STORAGE_CONF fails every command.  (A stat, not a parse: parsing TOML on every
    call would cost start-up time for the one case Go also refuses.)"""
    path = os.environ.get("CONTAINERS_STORAGE_CONF")
    if path is None:
        return None
    from ..config import ConfigError, system_config_path

    try:
        system_config_path()
    except ConfigError as e:
        return e
    return None


def enter_namespace(out: Output) -> int | None:
    """Go's MaybeReexecUsingUserNamespace for a rootless caller: None to go on, else the exit code.

    We move this very process into the namespace (no re-execution); warnings are Go's logrus lines.
    """
    from ..userns import UserNamespaceError, enter_user_namespace, in_user_namespace

    if in_user_namespace() or (os.geteuid() == 0 and not _is_rootless()):
        return None  # nothing to do
    from .base import debug_line

    try:
        enter_user_namespace(even_for_root=True, warn=lambda m: out.err(debug_line(m, "warning")))
    except UserNamespaceError as e:
        out.err(f"{e.strerror or e}\n")
        return 1
    return None


def _default_options(values: dict[str, object], out: Output) -> StoreOptions:
    """Go replaces the options with DefaultStoreOptions when no root/driver option was given."""
    from ..config import default_store_options
    from .base import debug_line

    base = default_store_options(warn=lambda m: out.err(debug_line(m, "warning")))
    values["graph"] = base.graph_root
    values["run"] = base.run_root
    values["storage_driver"] = base.driver_name
    values["storage_opt"] = list(base.driver_options)
    values["image_store"] = base.image_store
    values["transient_store"] = base.transient_store
    return base


if __name__ == "__main__":
    sys.exit(main())
