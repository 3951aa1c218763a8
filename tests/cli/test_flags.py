"""Go's mflag rules as the CLI applies them: spellings, clusters, booleans, errors, help layout."""

from __future__ import annotations

import io

import pytest

from containers_storage.cli.flags import FlagError, FlagSet, go_quote, parse_bool
from containers_storage.cli.output import Output


def _flagset(exit_on_error: bool = True) -> tuple[FlagSet, dict[str, object], io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    values: dict[str, object] = {}
    fs = FlagSet("layers", "containers-storage", values, exit_on_error, Output(out, err))
    fs.add_bool("json", ["-json", "j"], False, "Prefer JSON output")
    fs.add_bool("quick", ["-quick", "q"], False, "Just the IDs")
    fs.add_string("id", ["-id", "i"], "", "Layer ID")
    fs.add_list("name", ["-name", "n"], "Layer name")
    return fs, values, out, err


def test_long_short_and_values() -> None:
    fs, values, _, _ = _flagset()
    fs.parse(["--json", "-i", "abc", "--name=x", "-n", "y", "rest", "--quick"])
    assert values["json"] is True
    assert values["id"] == "abc"
    assert values["name"] == ["x", "y"]
    assert values["quick"] is False  # parsing stops at the first non-flag argument
    assert fs.args == ["rest", "--quick"]


def test_clusters_and_double_dash() -> None:
    fs, values, _, _ = _flagset()
    fs.parse(["-qj", "--json=false", "--", "-n"])
    assert values["quick"] is True and values["json"] is False
    assert fs.args == ["-n"]


def test_long_names_need_two_dashes() -> None:
    fs, _, _, err = _flagset()
    with pytest.raises(FlagError):
        fs.parse(["-json"])  # a cluster of -j -s -o -n, and -s is not defined
    assert err.getvalue().splitlines()[0] == "flag provided but not defined: -json"


def test_cluster_takes_the_next_argument_for_a_value_flag() -> None:
    fs, values, _, _ = _flagset()
    fs.parse(["-qi", "theid", "arg"])
    assert values["quick"] is True and values["id"] == "theid"
    assert fs.args == ["arg"]


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("t", True), ("TRUE", True), ("True", True),
                                                  ("0", False), ("f", False), ("FALSE", False)])
def test_go_parse_bool(value: str, expected: bool) -> None:
    assert parse_bool(value) is expected


def test_bad_boolean_is_go_text_and_exit_125() -> None:
    fs, _, _, err = _flagset()
    with pytest.raises(FlagError) as info:
        fs.parse(["--json=maybe"])
    assert info.value.exit_code == 125
    assert err.getvalue() == ('invalid boolean value "maybe" for  --json: strconv.ParseBool: '
                              'parsing "maybe": invalid syntax\n'
                              "See 'containers-storage layers --help'.\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["--bogus"], "flag provided but not defined: --bogus"),
    (["-z"], "flag provided but not defined: -z"),
    (["-qz"], "flag provided but not defined: -qz"),
    (["-i"], "flag needs an argument: -i"),
    (["-=x"], "bad flag syntax: -=x"),
])
def test_errors(argv: list[str], message: str) -> None:
    fs, _, out, err = _flagset()
    with pytest.raises(FlagError):
        fs.parse(argv)
    assert err.getvalue().splitlines()[0] == message
    assert out.getvalue() == ""


def test_help_flag_on_a_command_prints_usage_and_fails() -> None:
    fs, _, out, _ = _flagset()
    shown: list[str] = []
    fs.usage = lambda: shown.append("usage")
    with pytest.raises(FlagError) as info:
        fs.parse(["--help"])
    assert shown == ["usage"] and info.value.exit_code == 125 and str(info.value) == "flag: help requested"
    assert out.getvalue() == ""


def test_print_defaults_matches_go_tabwriter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    fs, _, _, err = _flagset()
    fs.add_string("graph", ["-graph", "g"], "/home/someone/store", "Root of the storage tree")
    fs.print_defaults()
    assert err.getvalue() == (
        "\n"
        "  --graph, -g=~/store    Root of the storage tree\n"
        "  --id, -i               Layer ID\n"
        "  --json, -j             Prefer JSON output\n"
        "  --name, -n=[]          Layer name\n"
        "  --quick, -q            Just the IDs\n"
    )


def test_short_tables_are_padded_to_go_minimum_width() -> None:
    out, err = io.StringIO(), io.StringIO()
    fs = FlagSet("status", "containers-storage", {}, True, Output(out, err))
    fs.add_bool("json", ["-json", "j"], False, "Prefer JSON output")
    fs.print_defaults()
    assert err.getvalue() == "\n  --json, -j         Prefer JSON output\n"  # cell padded to 20


@pytest.mark.parametrize(("text", "quoted"), [
    ("plain", '"plain"'), ('a"b\\c', '"a\\"b\\\\c"'), ("tab\there\n", '"tab\\there\\n"'),
    ("\x01\x7f", '"\\x01\\x7f"'), ("héllo", '"héllo"'), ("\u200b", '"\\u200b"'), ("\udcff", '"\\xff"'),
])
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted
