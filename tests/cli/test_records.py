"""Layers, images and containers: creating, listing, examining, and the refusals (with Go's texts)."""

from __future__ import annotations

import json

from clitools import CLI

A = "a" * 64
B = "b" * 64
IMG = "c" * 64
CTR = "d" * 64


def _populate(cli: CLI) -> None:
    cli.ok("create-layer", "--id", A, "-n", "base")
    cli.ok("create-layer", "--id", B, "-n", "top", "base")
    cli.ok("create-image", "--id", IMG, "-n", "img", "-n", "a<b>&c", "-m", "imgmeta", B)
    cli.ok("create-container", "--id", CTR, "-n", "ctr", "-m", '{"k":1}', "img")


# -- layers ---------------------------------------------------------------------------------------
def test_create_layer_prints_id_and_names(cli: CLI) -> None:
    result = cli.ok("create-layer", "-n", "one", "--name", "two")
    lid, *names = result.lines
    assert len(lid) == 64 and names == ["\tone", "\ttwo"]
    created = json.loads(cli.ok("create-layer", "--json", "--id", A, lid).out)
    assert list(created) == ["id", "parent", "created"] and created["parent"] == lid


def test_create_layer_refusals_change_nothing(cli: CLI) -> None:
    cli.ok("create-layer", "--id", A, "-n", "taken")
    before = cli.snapshot()
    assert cli.fails("create-layer", "-n", "taken").err == "that name is already in use\n"
    assert cli.fails("create-layer", "--id", A).err == "that ID is already in use\n"
    assert cli.fails("create-layer", "nosuch").err == "layer not known\n"
    assert cli.fails("create-layer", "--uidmap", "0:1:x").err == (
        'initializing ID mappings: uid setting is malformed expected ["uint32:uint32:uint32"]: ["0:1:x"]\n')
    assert cli.fails("create-layer", "--hostuidmap", "--uidmap", "0:1:1").err == (
        "host uid map specified along with UID mapping\n")
    assert cli.snapshot() == before


def test_layers_listing_forms(cli: CLI) -> None:
    _populate(cli)
    ctr_layer = json.loads(cli.ok("container", "--json", "ctr").out)[0]["layer"]
    assert cli.ok("layers").lines == [
        A, "\tname: base", B, "\tname: top", f"\timage: {IMG}", "\t\tname: img", "\t\tname: a<b>&c",
        ctr_layer, f"\tcontainer: {CTR}", "\t\tname: ctr"]
    assert cli.ok("layers", "-q").lines == [A, B, ctr_layer]
    assert cli.ok("layers", "--tree").lines == [
        "(base)", f"└─{A}", "  name: base", f"  └─{B}", "    name: top", f"    image: {IMG}",
        "    image name: img", "    image name: a<b>&c", f"    └─{ctr_layer}", f"      container: {CTR}",
        "      container name: ctr"]
    listed = json.loads(cli.ok("layers", "--json").out)
    assert [layer["id"] for layer in listed] == [A, B, ctr_layer]
    assert "flags" not in listed[0]  # the incomplete flag is gone, and Go omits empty maps


def test_empty_listings_are_go_nil_slices(cli: CLI) -> None:
    assert cli.ok("layers", "--json").out == "null\n"
    assert cli.ok("images", "--json").out == "null\n"
    assert cli.ok("containers", "--json").out == "[]\n"
    assert cli.ok("layers").out == ""


def test_layer_examines_and_counts_misses(cli: CLI) -> None:
    _populate(cli)
    result = cli.fails("layer", "top", "nosuch")
    assert result.lines == [f"ID: {B}", f"Parent: {A}", "Name: top"]
    assert [x["id"] for x in json.loads(cli.ok("layer", "--json", "base", "top").out)] == [A, B]
    assert cli.fails("layer", "--json", "nosuch").out == "[]\n"
    mapped = cli.ok("create-layer", "--uidmap", "0:100000:65536", "--gidmap", "0:200000:65536").lines[0]
    assert cli.ok("layer", mapped).lines == [
        f"ID: {mapped}", "UID mapping: (container=0, host=100000, size=65536)",
        "GID mapping: (container=0, host=200000, size=65536)"]


# -- images ---------------------------------------------------------------------------------------
def test_images_and_image(cli: CLI) -> None:
    _populate(cli)
    assert cli.ok("images").lines == [IMG, "\tname: img", "\tname: a<b>&c"]
    assert cli.ok("images", "-q").lines == [IMG]
    raw = cli.ok("images", "--json").out
    assert '"names":["img","a\\u003cb\\u003e\\u0026c"]' in raw  # Go's HTML-safe escaping
    assert list(json.loads(raw)[0]) == ["id", "names", "layer", "metadata", "created"]
    result = cli.ok("image", "img")
    assert result.lines == [f"ID: {IMG}", "Name: img", "Name: a<b>&c", f"Top Layer: {B}", "Size: 0"]
    assert cli.fails("image", "img", "nosuch").lines[0] == f"ID: {IMG}"


def test_create_image_refusals(cli: CLI) -> None:
    _populate(cli)
    before = cli.snapshot()
    assert cli.fails("create-image", "-n", "img", B).err == (
        f'image name "img" is already associated with image "{IMG}": that name is already in use\n')
    assert cli.fails("create-image", "--id", IMG, B).err == (
        f'an image with ID "{IMG}" already exists: that ID is already in use\n')
    assert cli.fails("create-image", "-d", "sha256:abc", B).err == (
        'validating digests for new image: validating image digest "sha256:abc": '
        "invalid checksum digest length\n")
    assert cli.fails("create-image", "nosuch").err == "layer not known\n"
    assert cli.snapshot() == before


def test_images_by_digest(cli: CLI) -> None:
    digest = "sha256:" + "e" * 64
    image = cli.ok("create-image", "--digest", digest, "-n", "dig").lines[0]
    assert cli.ok("images-by-digest", digest).lines == [image, "\tname: dig", f"\tdigest: {digest}"]
    assert cli.ok("images-by-digest", "-q", "sha256:" + "f" * 64).out == ""
    assert cli.ok("images-by-digest", "--json", "sha256:" + "f" * 64).out == "[]\n"
    assert cli.fails("images-by-digest", "bogus").err == "invalid checksum digest format\n"
    assert cli.fails("images-by-digest", "md5:abc").err == "unsupported digest algorithm\n"
    assert cli.fails("images-by-digest", "sha256:abc").err == "invalid checksum digest length\n"


# -- containers -----------------------------------------------------------------------------------
def test_containers_and_container(cli: CLI) -> None:
    _populate(cli)
    assert cli.ok("containers").lines == [CTR, "\tname: ctr"]
    record = json.loads(cli.ok("containers", "--json").out)[0]
    assert record["flags"] == {"MountLabel": "", "ProcessLabel": ""} and record["metadata"] == '{"k":1}'
    lines = cli.ok("container", "ctr").lines
    assert lines[:5] == [f"ID: {CTR}", "Name: ctr", f"Image: {IMG}", "Image name: img", "Image name: a<b>&c"]
    assert lines[5] == "Size: 0" and lines[6] == f"Layer: {record['layer']}"
    assert cli.fails("container", "--json", "nosuch").out == "[]\n"


def test_create_container_refusals(cli: CLI) -> None:
    _populate(cli)
    before = cli.snapshot()
    assert cli.fails("create-container", "-n", "ctr", "img").err == (
        f'the container name "ctr" is already in use by {CTR}. You have to remove that container to be '
        "able to reuse that name: that name is already in use\n")
    assert cli.fails("create-container", "nosuch").err == 'locating image with ID "nosuch": image not known\n'
    assert cli.snapshot() == before


def test_container_and_image_directories(cli: CLI) -> None:
    _populate(cli)
    assert cli.ok("get-container-dir", "ctr").out == f"{cli.root}/vfs-containers/{CTR}/userdata\n"
    assert cli.ok("get-container-run-dir", "ctr").out == f"{cli.run_root}/vfs-containers/{CTR}/userdata\n"
    assert cli.ok("get-image-dir", "img").out == f"{cli.root}/vfs-images/{IMG}/userdata\n"
    assert cli.ok("get-image-run-dir", "img").out == f"{cli.run_root}/vfs-images/{IMG}/userdata\n"
    assert cli.fails("get-container-dir", "nosuch").err == "container not known\n"
    assert cli.fails("get-image-dir", "nosuch").err == 'locating image with ID "nosuch": image not known\n'


# -- names, metadata, exists ----------------------------------------------------------------------
def test_names(cli: CLI) -> None:
    _populate(cli)
    assert cli.ok("get-names", "img").lines == ["img", "a<b>&c"]
    assert cli.ok("get-names", "--json", "base").out == '["base"]\n'
    assert cli.ok("add-names", "-n", "extra", "img").out == ""
    assert json.loads(cli.ok("add-names", "--json", "-n", "more", "img").out)[0] == "more"
    assert cli.ok("set-names", "--json", "-n", "x", "-n", "y", "ctr").out == '["x","y"]\n'
    assert cli.ok("remove-names", "--json", "-n", "x", "-n", "y", "x").out == "null\n"
    assert cli.ok("get-names", "--json", CTR).out == "[]\n"
    # A name moves: the layer that had it loses it.
    cli.ok("add-names", "-n", "base", "top")
    assert cli.ok("get-names", A).out == ""
    before = cli.snapshot()
    assert cli.fails("get-names", "nosuch").err == "layer not known\n"
    assert cli.fails("add-names", "-n", "q", "nosuch").err == "layer not known\n"
    assert cli.snapshot() == before


def test_metadata(cli: CLI) -> None:
    _populate(cli)
    result = cli.fails("metadata", "img", "ctr", "base", "nosuch")
    assert result.lines == ["img: imgmeta", 'ctr: {"k":1}', "base: ", "nosuch: "]
    assert cli.ok("metadata", "-q", "img").out == "imgmeta\n"
    assert cli.fails("metadata", "--json", "ctr", "nosuch").out == '{"ctr":"{\\"k\\":1}"}\n'
    assert cli.fails("set-metadata", "img").err == "no new metadata provided\n"
    cli.ok("set-metadata", "-m", "new\n", "base")
    assert cli.ok("metadata", "base").out == "base: new\n"  # one trailing newline is trimmed
    before = cli.snapshot()
    assert cli.fails("set-metadata", "-m", "x", "nosuch").err == (
        "identifier is not a layer, image, or container\n")
    assert cli.fails("set-metadata", "-f", "/nonexistent/file", "img").err == (
        "open /nonexistent/file: no such file or directory\n")
    assert cli.snapshot() == before


def test_exists(cli: CLI) -> None:
    _populate(cli)
    assert cli.ok("exists", "base", "img", "ctr").lines == ["base: true", "img: true", "ctr: true"]
    result = cli.fails("exists", "-l", "img")
    assert result.lines == ["img: true"]  # the answer printed is the store-wide one, as in Go
    assert cli.fails("exists", "-q", "nosuch").out == ""
    assert cli.fails("exists", "--json", "nosuch", "base").out == '{"base":true,"nosuch":false}\n'
    cli.ok("exists", "-c", "ctr")
    cli.ok("exists", "-i", "img")
