"""Usage texts, help, argument counts and unknown commands: Go's texts, streams and exit codes."""

from __future__ import annotations

import pytest

from clitools import CLI, run_inprocess
from containers_storage.cli.commands import COMMANDS

GO_ORDER_START = ["check", "config", "container", "list-container-data", "get-container-data"]


def test_no_arguments_prints_usage_and_fails() -> None:
    result = run_inprocess([])
    assert result.code == 1
    assert result.lines[0] == "Usage: containers-storage command [options [...]]"
    assert result.out.endswith("\nOptions:\n")
    assert "  --graph, -g             Root of the storage tree" in result.err
    assert "--help" not in result.err  # the help flag only exists once parsing starts


def test_help_goes_to_stdout_and_succeeds() -> None:
    result = run_inprocess(["--help"])
    assert result.code == 0 and result.err == ""
    listed = [line.split()[0] for line in result.lines
              if line.startswith("  ") and not line.startswith("  -")]
    assert listed == [c.names[0] for c in COMMANDS]
    assert listed[:5] == GO_ORDER_START
    assert "  remove-names                  Remove layer, image, or container name or names" in result.lines
    assert "  --help                  Print usage" in result.lines


def test_dash_h_is_an_error_that_prints_usage_twice() -> None:
    result = run_inprocess(["-h"])
    assert result.code == 1
    assert result.out.count("Usage: containers-storage command") == 2
    assert "flag: help requested while parsing arguments (1)" in result.lines


def test_unknown_global_flag() -> None:
    result = run_inprocess(["--bogus", "layers"])
    assert result.code == 1
    assert result.lines[0] == "flag provided but not defined: --bogus while parsing arguments (1)"
    assert result.err.startswith("flag provided but not defined: --bogus\nSee 'containers-storage --help'.\n")


def test_unknown_command(cli: CLI) -> None:
    result = cli.fails("frobnicate")
    assert result.out == "frobnicate: unrecognized command.\n" and result.err == ""


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.names[0])
def test_every_command_has_help(command: object, cli_in: CLI) -> None:
    names = command.names  # type: ignore[attr-defined]
    result = cli_in(names[-1], "--help")
    assert result.code == 125
    usage = f"Usage: containers-storage {names[-1]} {command.options_help}"  # type: ignore[attr-defined]
    assert result.lines[0] == usage
    assert result.lines[2] == command.usage  # type: ignore[attr-defined]
    assert result.out.endswith("\nOptions:\n")
    assert f"  --graph, -g={cli_in.root}" in result.err  # globals default to the values given so far
    for spec in command.flags:  # type: ignore[attr-defined]
        assert "-" + ", -".join(spec.names) in result.err


def test_command_help_shows_repeatable_defaults(cli_in: CLI) -> None:
    result = cli_in("--storage-opt", "a=b", "layers", "--help")
    assert "  --storage-opt=[a=b]" in result.err


def test_missing_and_extra_arguments(cli: CLI) -> None:
    before = cli.snapshot()
    result = cli.fails("layer")
    assert result.lines[:4] == ["layer: more arguments required.",
                                "Usage: containers-storage layer [options [...]] layerNameOrID [...]", "",
                                "Examine a layer"]
    result = cli.fails("create-layer", "a", "b")
    assert result.lines[0] == "create-layer: too many arguments ([a b])."
    result = cli.fails("layers", "extra")
    assert result.lines[0] == "layers: too many arguments ([extra])."
    assert cli.snapshot() == before


def test_bad_command_flag_exits_125(cli: CLI) -> None:
    result = cli.fails("layers", "--nope", code=125)
    assert result.out == ""
    assert result.err.splitlines()[0] == "flag provided but not defined: --nope"
    assert result.err.splitlines()[1].endswith(" layers --help'.")


def test_global_options_after_the_command(cli_in: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    # With no global option before the command, storage.conf's settings are the starting point
    # (and its driver options stay, as in Go); STORAGE_OPTS= empties them.
    monkeypatch.setenv("STORAGE_OPTS", "")
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", cli_in.root + ".conf")
    with open(cli_in.root + ".conf", "w") as f:
        f.write('[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmountopt = "nodev"\n')
    result = run_inprocess(["layers", "--graph", cli_in.root, "--run", cli_in.run_root, "-s", "vfs",
                            "--json"])
    assert (result.code, result.out) == (0, "null\n")


@pytest.mark.parametrize("before", [True, False])
def test_missing_storage_conf_named_by_env_fails_every_command(
        cli_in: CLI, monkeypatch: pytest.MonkeyPatch, before: bool) -> None:
    # Go's GetStore reads the system configuration even when the roots are given on the command
    # line: both Go 1.43 and 1.60 fail so.
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", "/nonexistent/storage.conf")
    roots = ["--graph", cli_in.root, "--run", cli_in.run_root, "-s", "vfs"]
    argv = [*roots, "layers"] if before else ["layers", *roots]
    result = run_inprocess(argv)
    assert (result.code, result.out) == (
        1, "error initializing: stat /nonexistent/storage.conf: no such file or directory\n")


def test_storage_conf_options_stay_when_the_driver_changes(cli_in: CLI, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: object) -> None:
    conf = f"{cli_in.root}.conf"
    with open(conf, "w") as f:
        f.write('[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmountopt = "nodev"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", conf)
    monkeypatch.delenv("STORAGE_OPTS", raising=False)
    monkeypatch.delenv("STORAGE_DRIVER", raising=False)
    result = run_inprocess(["layers", "--graph", cli_in.root, "--run", cli_in.run_root, "-s", "vfs"])
    expected = "error initializing: vfs driver does not support overlay.mountopt options\n"
    assert (result.code, result.out) == (1, expected)


def test_debug_lines_are_logrus_text(cli: CLI) -> None:
    result = cli.ok("--debug", "layers")
    lines = result.err.splitlines()
    assert lines[0].startswith('time="') and lines[0].endswith(f' level=debug msg="Root: {cli.root}"')
    assert lines[3].endswith('msg="Driver Options: []"')
    assert result.out == ""
    assert cli.ok("--debug=false", "layers").err == ""
