"""The console script's own parser (cli/console.py): it takes only the command lines it knows for
certain, and reads them exactly as the full Go flag parser (cli/main.py, cli/flags.py) does."""

from __future__ import annotations

import pytest

from containers_storage.cli import console
from containers_storage.cli import main as cli_main
from containers_storage.cli.commands import find
from containers_storage.cli.flags import FlagError
from containers_storage.cli.output import Output

STORE = ["--graph", "/g", "--run", "/r", "--storage-driver", "vfs"]


def _full_parse(argv: list[str]) -> tuple[str, dict[str, object], list[str]]:
    """What cli/main.py's _run makes of ``argv`` (global flags, command, command flags)."""
    out = Output()
    values: dict[str, object] = {}
    top = cli_main._make_flags(cli_main.PROG, cli_main.PROG, values, False, out)
    top.parse(argv, with_help=True)
    name = top.args[0]
    command = find(name)
    assert command is not None
    fs = cli_main.command_flags(name, command, cli_main.PROG, values, out)
    fs.parse(top.args[1:])
    values.pop("help", None)
    return name, values, fs.args


def test_the_command_lines_taken_are_those_of_the_command_table() -> None:
    fast = {name for name, spec in console.COMMAND_LINES.items() if spec[4]}
    assert fast == cli_main._FAST | cli_main._FAST_LOOKUPS | {"getnames"}
    for name, (flags, low, high, action, _) in console.COMMAND_LINES.items():
        command = find(name)
        assert command is not None
        assert (command.min_args, command.max_args, command.action) == (low, high, action), name
        table = {n: (spec.kind, spec.dest) for spec in command.flags for n in spec.names}
        assert flags == table, name  # (no deprecated "#" spellings: the full parser warns of those)
        assert all(spec.default in (False, "") for spec in command.flags), name
        assert not set(flags) & set(console._GLOBAL), name


@pytest.mark.parametrize("argv", [
    [*STORE, "layers"],
    [*STORE, "layers", "--json"],
    [*STORE, "layers", "-q", "-j"],
    [*STORE, "layers", "--tree"],
    ["-g", "/g", "-R", "/r", "-s", "overlay", "images", "-q"],
    ["--graph=/g", "--run='/r'", '--storage-driver="vfs"', "images", "--json"],
    ["--graph", "/old", *STORE, "containers", "--graph", "/newer"],
    [*STORE, "image", "--json", "a", "b"],
    [*STORE, "exists", "-i", "-l", "x", "-q", "--json"],  # flags end at the first argument
    [*STORE, "exists", "-c", "--container", "x", "-"],
    [*STORE, "get-names", "x"],
    [*STORE, "getnames", "-j", "x"],
    [*STORE, "metadata", "-q", "x", "y"],
    [*STORE, "layer", "x", "--", "y"],
    [*STORE, "create-layer"],
    [*STORE, "create-layer", "-n", "a", "--name=b", "--id", "-r", "-l='x'", "-r", "parent"],
    [*STORE, "createlayer", "--uidmap", "0:1:2", "--hostgidmap", "--readonly"],
    [*STORE, "create-image", "-n", "img", "-d", "sha256:00", "--metadata", "m", "-f", "/m", "top"],
    [*STORE, "create-container", "--volatile", "-n", "c", "img"],
    [*STORE, "delete-layer", "a", "b"],
    [*STORE, "deleteimage", "-t", "x"],
    [*STORE, "delete-container", "--json", "x"],
    [*STORE, "mount", "-o", "ro", "--ro", "--read-only", "-r", "x"],
    [*STORE, "umount", "-f", "x", "y"],
])
def test_accepted_command_lines_read_as_the_full_parser_reads_them(argv: list[str]) -> None:
    parsed = console.parse_command_line(argv)
    assert parsed is not None
    name, values, args = parsed
    full_name, full_values, full_args = _full_parse(argv)
    assert (name, args) == (full_name, full_args)
    assert values == full_values


@pytest.mark.parametrize("argv", [
    [*STORE],                                     # no command
    [*STORE, "import-layer"],                     # not a command taken here
    [*STORE, "create-layer", "a", "b"],
    [*STORE, "create-container"],
    [*STORE, "create-layer", "--name"],           # a value missing
    [*STORE, "create-layer", "--readonly=false"],  # a boolean with a value
    [*STORE, "images", "-qj"],                    # a cluster of letters
    [*STORE, "images", "--json=true"],            # a boolean with a value
    [*STORE, "layers", "--"],                     # the end of the flags
    [*STORE, "--debug", "layers"],                # a global flag the fast paths do not take
    [*STORE, "--storage-opt", "vfs.x=1", "images"],
    [*STORE, "layers", "-h"],
    [*STORE, "images", "extra"],                  # too many arguments
    [*STORE, "layer"],                            # too few
    [*STORE, "get-names", "a", "b"],
    ["--graph", "/g", "--run", "/r", "images"],   # no driver: storage.conf decides
    ["--graph", "/g", "--run", "/r", "--storage-driver", "", "images"],
    [*STORE, "images", "--graph"],                # a value missing
    [*STORE, "-json", "images"],                  # a command flag before the command
    ["-graph", "/g", "--run", "/r", "--storage-driver", "vfs", "images"],  # mflag reads -graph as letters
])
def test_everything_else_goes_to_the_full_parser(argv: list[str]) -> None:
    assert console.parse_command_line(argv) is None


def test_rejected_lines_the_full_parser_refuses_or_reads_otherwise() -> None:
    """Spot checks that the rejections above are needed: the full parser differs or fails."""
    with pytest.raises(FlagError):
        _full_parse([*STORE, "images", "--graph"])
    name, _, args = _full_parse([*STORE, "layers", "--"])
    assert (name, args) == ("layers", [])
