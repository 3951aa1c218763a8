"""``containers-storage check``: Go's text and JSON output, exit codes and error texts, with and
without ``--repair``/``--force``, and ``--max`` parsed as Go's time.ParseDuration."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from clitools import CLI
from containers_storage.cli.base import CommandError
from containers_storage.cli.check import parse_go_duration
from containers_storage.config import StoreOptions
from containers_storage.store import Store, get_store

CLEAN_JSON = '{"Layers":{},"ROLayers":{},"Images":{},"ROImages":{},"Containers":{}}\n'


@contextmanager
def _library(cli: CLI) -> Iterator[Store]:
    """The same store through the library, for setting up records the test then damages."""
    store = get_store(StoreOptions(graph_root=cli.root, run_root=cli.run_root, driver_name="vfs"))
    try:
        yield store
    finally:
        store.close()


def _counts(layers: int = 0, images: int = 0, containers: int = 0) -> str:
    return (f"{layers} layer errors, 0 read-only layer errors, {images} image errors, "
            f"0 read-only image errors, {containers} container errors\n")


def test_clean_store(cli: CLI) -> None:
    layer = cli.new_layer()
    cli.ok("create-image", layer)
    for args in (["check"], ["check", "-q"], ["check", "-r", "-f"]):
        result = cli.ok(*args)
        assert (result.out, result.err) == ("", "")
    assert cli.ok("check", "--json").out == CLEAN_JSON


def test_damaged_image_text_json_and_repair(cli: CLI) -> None:
    layer = cli.new_layer()
    image = cli.ok("create-image", layer).lines[0]
    with _library(cli) as store:
        store.set_image_big_data(image, "cfg", b"{}")
        path = store.image_store.big_data_path(image, "cfg")
    with open(path, "ab") as f:
        f.write(b"\n")
    problem = f'image {image}: data item "cfg": image data item has incorrect size'
    result = cli.fails("check")
    assert result.out == f"image {image}:\n {problem}\n"
    assert result.err == _counts(images=1)
    result = cli.fails("check", "--json")
    assert json.loads(result.out) == {"Layers": {}, "ROLayers": {}, "Images": {image: [{}]},
                                      "ROImages": {}, "Containers": {}}
    assert result.out == ('{"Layers":{},"ROLayers":{},"Images":{"' + image + '":[{}]},'
                          '"ROImages":{},"Containers":{}}\n')
    result = cli.ok("check", "-r")
    assert (result.out, result.err) == (f"image {image}:\n {problem}\n", "")
    assert cli.ok("images", "-q").out == ""
    assert cli.ok("layers", "-q").out == ""


def test_containers_are_only_removed_with_force(cli: CLI) -> None:
    with _library(cli) as store:
        ctr = store.create_container()
        store.set_container_big_data(ctr.id, "state", b"x")
        os.unlink(store.container_store.big_data_path(ctr.id, "state"))
    text = f'container {ctr.id}:\n container {ctr.id}: data item "state": container data item is missing\n'
    result = cli.fails("check", "-r")
    assert (result.out, result.err) == (text, "0 read-only layer errors, 0 read-only image errors, "
                                              "1 container errors\n")
    assert cli.fails("check").err == _counts(containers=1)
    result = cli.ok("check", "--repair", "--force")
    assert (result.out, result.err) == (text, "")
    assert cli.ok("containers").out == ""
    cli.ok("check")


def test_failed_repair_lists_every_failure_then_the_first_again(cli: CLI) -> None:
    layer = cli.new_layer()
    image = cli.ok("create-image", layer).lines[0]
    with _library(cli) as store:
        ctr = store.create_container(image)
    cli.ok("delete", layer)  # no safety checks: the image and the container's layer lose it
    failures = [f"deleting image {image}: image used by {ctr.id}: image is in use by a container",
                f"deleting layer {ctr.layer}: layer {ctr.layer} used by container {ctr.id}: "
                "layer is in use by a container"]
    result = cli.fails("check", "-r")
    image_problem = f"image {image}: layer {layer}: image layer is missing"
    assert result.out == (f"layer {ctr.layer}:\n layer {layer}: layer is missing\n"
                          f"image {image}:\n {image_problem}\ncontainer {ctr.id}:\n {image_problem}\n")
    assert result.err == "".join(f"{f}\n" for f in [*failures, failures[0]])
    result = cli.fails("check", "-r", "--json")
    report, errs = result.out.splitlines()
    assert json.loads(report)["Layers"] == {ctr.layer: [{}]}
    assert errs == "[{},{}]"
    assert result.err == failures[0] + "\n"
    result = cli.ok("check", "-r", "-f")
    assert result.err == ""
    assert cli.ok("layers", "-q").out == "" and cli.ok("containers").out == ""


def test_max_age_of_unreferenced_layers(cli: CLI) -> None:
    parent = cli.new_layer()
    child = cli.new_layer(parent)
    cli.ok("check", "-r")  # 24h by default: these may still become an image
    unused = "layer not referenced by any images or containers"
    result = cli.fails("check", "-m", "0")
    assert result.out == (f"layer {parent}:\n layer {parent}: {unused}\n"
                          f"layer {child}:\n layer {child}: {unused}\n")
    assert result.err == _counts(layers=2)
    cli.ok("check", "--max", "1h30m")
    assert cli.ok("check", "-r", "-m", "-1ns").out.count(unused) == 2
    assert cli.ok("layers", "-q").out == ""


@pytest.mark.parametrize(("value", "message"), [
    ("abc", 'time: invalid duration "abc"'),
    ("10", 'time: missing unit in duration "10"'),
    ("5x", 'time: unknown unit "x" in duration "5x"'),
])
def test_bad_max_age(cli: CLI, value: str, message: str) -> None:
    result = cli.fails("check", "-m", value)
    assert (result.out, result.err) == ("", message + "\n")


def test_unaccounted_storage_layers_are_removed(cli: CLI) -> None:
    stray = cli.ok("create-storage-layer").lines[0]
    result = cli.ok("check", "-r")
    assert result.out == (f"layer {stray}:\n layer {stray}: layer in lower level storage driver not "
                          "accounted for\n")
    assert cli.ok("storage-layers").out == ""


def test_check_shuts_the_store_down_as_go_does(cli: CLI) -> None:
    layer = cli.new_layer()
    cli.ok("create-image", layer)
    cli.ok("mount", layer)
    result = cli.ok("check")
    assert result.err == "shutdown: a layer is mounted: layer is in use by a container\n"
    with _library(cli) as store:
        assert store.mounted(layer) == 0


@pytest.mark.parametrize(("text", "nanoseconds"), [
    ("0", 0), ("-0", 0), ("+0", 0), ("0s", 0), ("24h", 24 * 3600 * 10**9), ("1h30m", 5400 * 10**9),
    ("1.5h", 5400 * 10**9), ("300ms", 300_000_000), ("-2s", -2 * 10**9), ("+5s", 5 * 10**9),
    ("1us", 1000), ("1µs", 1000), ("1μs", 1000), ("7ns", 7), (".5s", 500_000_000), ("1.s", 10**9),
    ("2h45m30.5s", (2 * 3600 + 45 * 60) * 10**9 + 30_500_000_000),
    ("9223372036854775807ns", 2**63 - 1), ("-9223372036854775808ns", -(2**63)),
    ("0.000000001s", 1), ("1.0000000001s", 10**9),
])
def test_go_durations(text: str, nanoseconds: int) -> None:
    assert parse_go_duration(text) == nanoseconds


@pytest.mark.parametrize(("text", "message"), [
    ("", 'time: invalid duration ""'),
    ("-", 'time: invalid duration "-"'),
    ("abc", 'time: invalid duration "abc"'),
    (".s", 'time: invalid duration ".s"'),
    ("1..5s", 'time: missing unit in duration "1..5s"'),
    ("5x", 'time: unknown unit "x" in duration "5x"'),
    ("5µx", 'time: unknown unit "\\xc2\\xb5x" in duration "5\\xc2\\xb5x"'),
    ("٣s", 'time: invalid duration "\\xd9\\xa3s"'),
    ('1"s', 'time: unknown unit "\\"s" in duration "1\\"s"'),
    ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
    ("99999999999999999999h", 'time: invalid duration "99999999999999999999h"'),
    ("3000000h", 'time: invalid duration "3000000h"'),
])
def test_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_go_duration(text)
    assert str(caught.value) == message
