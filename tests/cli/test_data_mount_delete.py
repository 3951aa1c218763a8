"""Big data items, mounting, and deleting (with the safety checks and their Go error texts)."""

from __future__ import annotations

import hashlib
import json
import os

from clitools import CLI


def _image_with_container(cli: CLI) -> tuple[str, str, str]:
    base = cli.new_layer("-n", "base")
    image = cli.ok("create-image", "-n", "img", base).lines[0]
    ctr = cli.ok("create-container", "-n", "ctr", "img").lines[0]
    return base, image, ctr


# -- big data -------------------------------------------------------------------------------------
def test_image_data(cli: CLI, tmp_path: object) -> None:
    _, image, _ = _image_with_container(cli)
    cli.ok("set-image-data", "img", "config", stdin=b"cfg-bytes")
    manifest = b'{"schemaVersion":2}'
    cli.ok("set-image-data", "img", "manifest", stdin=manifest)
    assert cli.ok("list-image-data", "img").lines == ["config", "manifest"]
    assert cli.ok("list-image-data", "--json", "img").out == '["config","manifest"]\n'
    assert cli.ok("get-image-data", "img", "config").raw == b"cfg-bytes"
    assert cli.ok("get-image-data-size", "img", "config").out == "9\n"
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert cli.ok("get-image-data-digest", "img", "manifest").out == digest + "\n"
    # A manifest's digest becomes one of the image's digests.
    assert f"\tdigest: {digest}" in cli.ok("images").lines
    target = os.path.join(str(tmp_path), "out")
    cli.ok("get-image-data", "-f", target, "img", "manifest")
    with open(target, "rb") as f:
        assert f.read() == manifest
    before = cli.snapshot()
    assert cli.fails("get-image-data", "img", "nosuch").err == (
        f'locating item named "nosuch" for image with ID "{image}" (consider removing the image to resolve '
        "the issue): file does not exist\n")
    assert cli.fails("get-image-data-size", "img", "nosuch").err == "size is not known\n"
    assert cli.fails("get-image-data-digest", "img", "nosuch").err == "could not compute digest of item\n"
    assert cli.fails("get-image-data", "nosuch", "x").err == (
        'locating image with ID "nosuch": image not known\n')
    assert cli.fails("set-image-data", "-f", "/nonexistent", "img", "x").err == (
        "open /nonexistent: no such file or directory\n")
    assert cli.snapshot() == before


def test_container_data(cli: CLI) -> None:
    _, _, ctr = _image_with_container(cli)
    assert cli.ok("list-container-data", "--json", "ctr").out == "null\n"
    cli.ok("set-container-data", "ctr", "state", stdin=b"12345")
    assert cli.ok("list-container-data", "ctr").out == "state\n"
    assert cli.ok("get-container-data", "ctr", "state").raw == b"12345"
    assert cli.ok("get-container-data-size", "ctr", "state").out == "5\n"
    assert cli.ok("get-container-data-digest", "ctr", "state").out == (
        "sha256:" + hashlib.sha256(b"12345").hexdigest() + "\n")
    assert cli.ok("containers").lines == [ctr, "\tname: ctr", "\tdata: state"]
    assert cli.fails("get-container-data", "ctr", "nosuch").err == (
        f"open {cli.root}/vfs-containers/{ctr}/nosuch: no such file or directory\n")
    assert cli.fails("get-container-data", "nosuch", "x").err == "container not known\n"


def test_layer_data(cli: CLI) -> None:
    base = cli.new_layer("-n", "base")
    assert cli.ok("list-layer-data", "--json", "base").out == "null\n"
    cli.ok("set-layer-data", "base", "Key With Spaces", stdin=b"value")
    assert cli.ok("list-layer-data", "base").out == "Key With Spaces\n"
    assert cli.ok("get-layer-data", "base", "Key With Spaces").raw == b"value"
    assert cli.fails("get-layer-data", "base", "nosuch").err == (
        f'locating item named "nosuch" for layer with ID "{base}": file does not exist\n')
    assert cli.fails("list-layer-data", "nosuch").err == "layer not known\n"


# -- mounting -------------------------------------------------------------------------------------
def test_mount_unmount_mounted(cli: CLI) -> None:
    base, _, _ = _image_with_container(cli)
    path = cli.ok("mount", "base").out.strip()
    assert path == f"{cli.root}/vfs/dir/{base}" and os.path.isdir(path)
    assert cli.ok("mounted", "base").out == "base mounted\n"
    assert cli.ok("mount", "base").out.strip() == path
    assert cli.ok("unmount", "base").out == ""  # still mounted once
    assert cli.ok("unmount", "base").out == "base mountpoint unmounted\n"
    assert cli.ok("mounted", "base").out == ""
    record = json.loads(cli.ok("mount", "--json", "ctr").out)
    assert record == [{"id": "ctr", "mountpoint": record[0]["mountpoint"], "error": ""}]
    # Go prints the "unmounted" note even in JSON mode.
    assert cli.ok("unmount", "--json", "ctr").out == 'ctr mountpoint unmounted\n[{"id":"ctr","error":""}]\n'
    assert cli.ok("mount", "-r", "img").out.strip() == path  # the image's top layer, read-only
    cli.ok("unmount", "img")


def test_mount_errors(cli: CLI) -> None:
    cli.new_layer("-n", "base")
    result = cli.fails("mount", "nosuch", "base")
    assert result.err == "layer not known while mounting nosuch\n"
    assert result.lines[0] == "" and result.lines[1].endswith("/vfs/dir/" + result.lines[1].split("/")[-1])
    assert cli.fails("unmount", "nosuch").err == "layer not known while unmounting nosuch\n"
    assert cli.fails("mounted", "--json", "nosuch").out == '[{"id":"nosuch","error":"layer not known"}]\n'
    assert cli.fails("mounted", "nosuch").err == "layer not known checking if nosuch is mounted\n"


# -- deleting -------------------------------------------------------------------------------------
def test_delete_layer_safety_checks(cli: CLI) -> None:
    lone = cli.new_layer("-n", "lone")
    child = cli.new_layer("-n", "child", "lone")
    base, image, ctr = _image_with_container(cli)
    ctr_layer = json.loads(cli.ok("container", "--json", "ctr").out)[0]["layer"]
    before = cli.snapshot()
    assert cli.fails("delete-layer", "lone").err == f"lone: used by layer {child}: layer has children\n"
    assert cli.fails("delete-layer", ctr_layer).err == (
        f"{ctr_layer}: layer {ctr_layer} used by container {ctr}: layer is in use by a container\n")
    assert cli.fails("delete-layer", "--json", "nosuch").out == '{"nosuch":"identifier is not a layer"}\n'
    assert cli.fails("delete-image", "img").err == (
        f"img: image used by {ctr}: image is in use by a container\n")
    assert cli.fails("delete-container", "nosuch").err == "nosuch: identifier is not a container\n"
    assert cli.fails("delete", "nosuch").err == "nosuch: layer not known\n"
    assert cli.snapshot() == before
    cli.ok("delete-layer", "child", lone)
    assert cli.ok("delete-container", "--json", "ctr").out == '{"ctr":""}\n'
    assert cli.ok("delete-image", "-t", "img").err == f"img: {base}\n"  # only a test: still there
    assert cli.ok("exists", "img").out == "img: true\n"
    assert cli.ok("delete-image", "--json", "img").out == f'{{"img":{{"deleted-layers":["{base}"]}}}}\n'
    assert cli.ok("layers").out == ""
    assert image not in cli.ok("images").out


def test_delete_without_checks_and_wipe(cli: CLI) -> None:
    _image_with_container(cli)
    assert cli.fails("delete", "--json", "nosuch", "img").out == '{"img":"","nosuch":"layer not known"}\n'
    assert cli.ok("wipe", "--json").out == '""\n'
    assert cli.ok("layers", "--json").out == "null\n"
    assert cli.ok("containers", "--json").out == "[]\n"
