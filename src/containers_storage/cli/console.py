"""The ``containers-storage`` console script's entry point (``pip install`` generates the script;
scripts/build-launcher.sh's launcher calls it too).

Two things happen here before any of the CLI proper is imported:

- The cyclic garbage collector is turned off.  A call imports some fifty modules before doing any
  work, and every few hundred objects allocated on the way ran a collection over all of them:
  ~1.3 ms of a call that makes no garbage worth collecting.  The command's own code runs with it
  back on (cli/runner.py); the read-only fast paths, which exit after printing, leave it off.  A
  library user never imports this module, so their collector is never touched.
- The most common command lines (the listings and lookups the fast paths answer, and creating,
  deleting, mounting and unmounting layers, images and containers, with ``--graph``/``--run``/
  ``--storage-driver`` given) are recognized by a small parser instead of the full Go flag
  machinery (cli/main.py), whose command table, flag sets and output helpers cost ~0.6 ms of
  imports.  Anything it does not know for certain (another command or flag, a flag cluster, a
  boolean with a value, ``--``, a wrong argument count, a rootless caller, an explicit
  ``$CONTAINERS_STORAGE_CONF``) goes to cli/main.py, which parses the command line again from the
  start; what it does accept runs exactly as there (the same values, the same code).
"""

import gc

gc.disable()

# Go's global options (every spelling, as cli/main.py's _make_flags defines them) taken here: each
# takes a value.  The others (--storage-opt, --debug, --unshare, ...) go to cli/main.py.
_GLOBAL = {"-run": "run", "R": "run", "-graph": "graph", "g": "graph",
           "-storage-driver": "storage_driver", "s": "storage_driver"}


def _flag(kind: str, dest: str, *names: str) -> dict[str, tuple[str, str]]:
    return dict.fromkeys(names, (kind, dest))


_JSON = _flag("bool", "json", "-json", "j")
_QUIET = _flag("bool", "quiet", "-quiet", "q")
_NAMES = _flag("list", "name", "-name", "n")
_ID = _flag("string", "id", "-id", "i")
_LABEL = _flag("string", "label", "-label", "l")
_METADATA = {**_flag("string", "metadata", "-metadata", "m"),
             **_flag("string", "metadata_file", "-metadata-file", "f")}
_MAPPINGS = {**_flag("bool", "hostuidmap", "-hostuidmap"), **_flag("bool", "hostgidmap", "-hostgidmap"),
             **_flag("string", "uidmap", "-uidmap"), **_flag("string", "gidmap", "-gidmap"),
             **_flag("string", "subuidmap", "-subuidmap"), **_flag("string", "subgidmap", "-subgidmap")}

# Command -> (flag spelling -> (kind, value key), minimum and maximum arguments (-1: any), the code
# that runs it, whether a fast path answers it), as commands.py defines them (tests/cli/
# test_console.py holds the two together).
_Flags = dict[str, tuple[str, str]]
COMMAND_LINES: dict[str, tuple[_Flags, int, int, str, bool]] = {
    "layers": ({**_JSON, **_flag("bool", "tree", "-tree", "t"), **_flag("bool", "quick", "-quick", "q")},
               0, 0, "layers:layers", True),
    "images": ({**_JSON, **_QUIET}, 0, 0, "images:images", True),
    "containers": (_JSON, 0, 0, "containers:containers", True),
    "layer": (_JSON, 1, -1, "layers:layer", True),
    "image": (_JSON, 1, -1, "images:image", True),
    "exists": ({**_JSON, **_QUIET, **_flag("bool", "layer", "-layer", "l"),
                **_flag("bool", "image", "-image", "i"), **_flag("bool", "container", "-container", "c")},
               1, -1, "exists:exists", True),
    "get-names": (_JSON, 1, 1, "names:get_names", True),
    "getnames": (_JSON, 1, 1, "names:get_names", True),
    "metadata": ({**_JSON, **_QUIET}, 1, -1, "metadata:metadata", True),
    "create-layer": ({**_LABEL, **_NAMES, **_ID, **_flag("bool", "readonly", "-readonly", "r"), **_JSON,
                      **_MAPPINGS}, 0, 1, "layers:create_layer", False),
    "delete-layer": (_JSON, 1, -1, "delete:delete_layer", False),
    "create-image": ({**_NAMES, **_ID, **_flag("string", "digest", "-digest", "d"), **_METADATA, **_JSON},
                     0, 1, "images:create_image", False),
    "delete-image": ({**_flag("bool", "test", "-test", "t"), **_JSON}, 1, -1, "delete:delete_image", False),
    "create-container": ({**_NAMES, **_flag("bool", "volatile", "-volatile"), **_ID, **_METADATA, **_JSON,
                          **_MAPPINGS}, 1, 1, "containers:create_container", False),
    "delete-container": (_JSON, 1, -1, "delete:delete_container", False),
    "mount": ({**_flag("string", "opt", "-opt", "o"), **_LABEL,
               **_flag("bool", "read_only", "-read-only", "-ro", "r"), **_JSON}, 1, -1, "mount:mount", False),
    "unmount": ({**_JSON, **_flag("bool", "force", "-force", "f")}, 1, -1, "mount:unmount", False),
}
for _alias, _name in (("createlayer", "create-layer"), ("deletelayer", "delete-layer"),
                      ("createimage", "create-image"), ("deleteimage", "delete-image"),
                      ("createcontainer", "create-container"), ("deletecontainer", "delete-container"),
                      ("umount", "unmount")):
    COMMAND_LINES[_alias] = COMMAND_LINES[_name]


def parse_command_line(argv: list[str]) -> tuple[str, dict[str, object], list[str]] | None:
    """(command, option values as cli/main.py would set them, arguments) for a command line taken
    here; None for anything else."""
    values: dict[str, object] = {"graph": "", "run": "", "storage_driver": "", "storage_opt": [],
                                 "image_store": "", "transient_store": False, "debug": False,
                                 "unshare": False}
    name = ""
    flags: _Flags = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if len(arg) < 2 or arg[0] != "-":
            if name:  # mflag stops at the first argument: the rest are arguments, verbatim
                args = argv[i - 1:]
                break
            if arg not in COMMAND_LINES:
                return None
            name = arg
            flags = COMMAND_LINES[name][0]
            for kind, dest in flags.values():
                values[dest] = False if kind == "bool" else [] if kind == "list" else ""
            continue
        flag, eq, value = arg[1:].partition("=")
        spec = ("string", _GLOBAL[flag]) if flag in _GLOBAL else flags.get(flag) if name else None
        if spec is None:
            return None
        kind, dest = spec
        if kind == "bool":
            if eq:
                return None
            values[dest] = True
            continue
        if not eq:
            if i >= len(argv):
                return None
            value = argv[i]
            i += 1
        elif len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]  # mflag's trimQuotes
        if kind == "list":
            target = values[dest]
            assert isinstance(target, list)
            target.append(value)
        else:
            values[dest] = value
    if not name:
        return None
    _, low, high, _, _ = COMMAND_LINES[name]
    if len(args) < low or (high >= 0 and len(args) > high):
        return None
    if not (values["graph"] and values["run"] and values["storage_driver"]):
        return None  # default paths come from storage.conf: the full path reads it
    return name, values, args


_KEEP: list[object] = []  # the fast paths' records: freeing them before os._exit would only cost


def _run(argv: list[str]) -> int | None:
    """Run a command line taken here; None when cli/main.py must run it."""
    import os

    parsed = parse_command_line(argv)
    if parsed is None or "CONTAINERS_STORAGE_CONF" in os.environ:
        return None
    name, values, args = parsed
    from ..userns import is_rootless

    if is_rootless():
        return None  # the full path enters a user namespace first
    from .output import Output

    _, _, _, action, fast = COMMAND_LINES[name]
    out = Output()
    try:
        code: int | None = None
        if fast and name in ("layers", "images", "containers"):
            from .listing import run_fast

            code = run_fast(name, values, out, _KEEP)
        elif fast:
            from .lookups import run_fast as run_lookup

            code = run_lookup(name, values, args, out, _KEEP)
        if code is None:
            from .. import lazylog
            from .runner import log_sink, run_command

            lazylog.sink = log_sink(out)  # library warnings as Go's logrus lines
            code = run_command(name, action, values, args, out, None, (True, True))
    finally:
        out.flush()
    return code


def main() -> int:
    """Run the command line in ``sys.argv``; the exit status."""
    import sys

    code = _run(sys.argv[1:])
    if code is not None:
        from .output import exit_now

        exit_now(code)
        return code
    from .main import main as run

    return run(_start_up_gc_off=True)
