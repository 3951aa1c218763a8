"""The ``containers-storage`` console script's entry point (``pip install`` generates the script).

Two things happen here before the CLI proper (cli/main.py) is imported:

- The cyclic garbage collector is turned off.  A call imports some fifty modules before doing any
  work, and every few hundred objects allocated on the way ran a collection over all of them:
  ~1.3 ms of a call that makes no garbage worth collecting.  main() turns it back on for a
  command's own code; the read-only fast paths, which exit after printing, leave it off.  A
  library user never imports this module, so their collector is never touched.
- The command lines the listing and lookup fast paths answer (``layers``, ``images``, ``image
  NAME``, ``exists -i NAME`` ... with ``--graph``/``--run``/``--storage-driver`` given) are
  recognized by a small parser instead of the full Go flag machinery, whose command table, flag
  sets and output helpers cost ~1 ms of imports.  Anything it does not know for certain (another
  flag, a flag cluster, ``--``, a wrong argument count, a rootless caller, an explicit
  ``$CONTAINERS_STORAGE_CONF``) goes to cli/main.py, which parses the command line again from
  the start: the fast paths answer exactly what they answer there.
"""

import gc

gc.disable()

# Go's global options (every spelling, as cli/main.py's _make_flags defines them) that the fast
# paths need; each takes a value.
_GLOBAL = {"-run": "run", "R": "run", "-graph": "graph", "g": "graph",
           "-storage-driver": "storage_driver", "s": "storage_driver"}
# The fast commands, their boolean flags and argument counts (min, max; -1 unlimited), as
# commands.py defines them (tests/cli/test_console.py holds the two together).
_JSON = {"-json": "json", "j": "json"}
FAST_COMMANDS: dict[str, tuple[dict[str, str], int, int]] = {
    "layers": ({**_JSON, "-tree": "tree", "t": "tree", "-quick": "quick", "q": "quick"}, 0, 0),
    "images": ({**_JSON, "-quiet": "quiet", "q": "quiet"}, 0, 0),
    "containers": (_JSON, 0, 0),
    "layer": (_JSON, 1, -1),
    "image": (_JSON, 1, -1),
    "exists": ({**_JSON, "-quiet": "quiet", "q": "quiet", "-layer": "layer", "l": "layer",
                "-image": "image", "i": "image", "-container": "container", "c": "container"}, 1, -1),
    "get-names": (_JSON, 1, 1),
    "getnames": (_JSON, 1, 1),
    "metadata": ({**_JSON, "-quiet": "quiet", "q": "quiet"}, 1, -1),
}


def fast_command_line(argv: list[str]) -> tuple[str, dict[str, object], list[str]] | None:
    """(command, option values as cli/main.py would set them, arguments) for a command line a
    fast path may answer; None for anything else."""
    values: dict[str, object] = {"graph": "", "run": "", "storage_driver": "", "storage_opt": [],
                                 "image_store": "", "transient_store": False, "debug": False,
                                 "unshare": False}
    name = ""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if len(arg) < 2 or arg[0] != "-":
            if name:  # mflag stops at the first argument: the rest are arguments, verbatim
                args = argv[i - 1:]
                break
            if arg not in FAST_COMMANDS:
                return None
            name = arg
            flags = FAST_COMMANDS[name][0]
            for dest in flags.values():
                values[dest] = False
            continue
        flag, eq, value = arg[1:].partition("=")
        if flag in _GLOBAL:
            if not eq:
                if i >= len(argv):
                    return None
                value = argv[i]
                i += 1
            elif len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]  # mflag's trimQuotes
            values[_GLOBAL[flag]] = value
        elif name and flag in flags and not eq:
            values[flags[flag]] = True
        else:
            return None
    else:
        args = []
    if not name:
        return None
    _, low, high = FAST_COMMANDS[name]
    if len(args) < low or (high >= 0 and len(args) > high):
        return None
    if not (values["graph"] and values["run"] and values["storage_driver"]):
        return None  # default paths come from storage.conf: the full path reads it
    return name, values, args


_KEEP: list[object] = []  # the fast paths' records: freeing them before os._exit would only cost


def _run_fast(argv: list[str]) -> int | None:
    """Answer a fast command line; None when cli/main.py must run it."""
    import os

    parsed = fast_command_line(argv)
    if parsed is None or "CONTAINERS_STORAGE_CONF" in os.environ:
        return None
    name, values, args = parsed
    from ..userns import is_rootless

    if is_rootless():
        return None  # the full path enters a user namespace first
    from .output import Output

    out = Output()
    try:
        if name in ("layers", "images", "containers"):
            from .listing import run_fast

            code = run_fast(name, values, out, _KEEP)
        else:
            from .lookups import run_fast as run_lookup

            code = run_lookup(name, values, args, out, _KEEP)
    finally:
        out.flush()
    return code


def _exit(code: int) -> None:
    import os
    import sys

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code)  # no teardown: freeing every parsed record would only cost time


def main() -> int:
    """Run the command line in ``sys.argv``; the exit status."""
    import sys

    code = _run_fast(sys.argv[1:])
    if code is not None:
        _exit(code)
        return code
    from .main import main as run

    return run(_start_up_gc_off=True)
