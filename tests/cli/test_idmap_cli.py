"""The CLI with ID mappings: copy into and between mapped layers, --hostuidmap on containers,
and the parent-owners commands' output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clitools import CLI

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="copying with owners needs root")

A, B = 400000, 500000


def _owner(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _mapped_layer(cli: CLI, host: int, size: int = 101) -> tuple[str, str]:
    layer = cli.ok("create-layer", "--uidmap", f"0:{host}:{size}", "--gidmap", f"0:{host}:{size}").lines[0]
    return layer, cli.ok("mount", layer).lines[0]


def test_copy_maps_owners_through_the_layers_mappings(cli: CLI, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "file").write_bytes(b"one")
    (src / "sub" / "inner").write_bytes(b"two")
    os.chown(src / "file", 3, 4)
    os.chown(src / "sub", 5, 5)
    os.chown(src / "sub" / "inner", 6, 7)
    layer_a, mnt_a = _mapped_layer(cli, A)
    layer_b, mnt_b = _mapped_layer(cli, B)

    cli.ok("copy", str(src / "file"), f"{layer_a}:/file")
    assert _owner(f"{mnt_a}/file") == (A + 3, A + 4)
    cli.ok("copy", "--chown", "100:100", str(src / "file"), f"{layer_a}:/chowned")
    assert _owner(f"{mnt_a}/chowned") == (A + 100, A + 100)

    cli.ok("copy", str(src), f"{layer_a}:/tree")
    assert _owner(f"{mnt_a}/tree/sub") == (A + 5, A + 5)
    assert _owner(f"{mnt_a}/tree/sub/inner") == (A + 6, A + 7)
    assert _owner(f"{mnt_a}/tree") == (A, A)  # a new target directory belongs to the mapped root

    # Layer to layer: host IDs of one mapping become the same container IDs in the other.
    cli.ok("copy", f"{layer_a}:/file", f"{layer_b}:/file")
    assert _owner(f"{mnt_b}/file") == (B + 3, B + 4)
    cli.ok("copy", f"{layer_a}:/tree", f"{layer_b}:/tree")
    assert _owner(f"{mnt_b}/tree/sub/inner") == (B + 6, B + 7)


def test_copy_of_an_owner_the_target_cannot_map_fails(cli: CLI, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(b"x")
    os.chown(src, 500, 500)
    layer, _ = _mapped_layer(cli, A, size=10)
    result = cli("copy", str(src), f"{layer}:/big")
    assert result.code != 0
    assert result.err.rstrip().endswith(
        ": unpacking failed (error: exit status 1; output: container ID 500 cannot be mapped to a host ID)")


def test_create_container_host_maps_and_parent_owners(cli: CLI) -> None:
    layer, _ = _mapped_layer(cli, A)
    out = cli.ok("layer-parent-owners", layer).out
    assert out == f"ID: {layer}\nUIDs: [0]\nGIDs: [0]\n"
    as_json = json.loads(cli.ok("layer-parent-owners", "--json", layer).out)
    assert as_json == {"ID": layer, "UIDs": [0], "GIDs": [0]}
    cli.ok("create-image", "--name", "img", layer)

    ctr = cli.ok("create-container", "--hostuidmap", "--hostgidmap", "img").lines[0]
    record = json.loads(cli.ok("container", "--json", ctr).out)[0]
    assert "uidmap" not in record and "gidmap" not in record
    cli.ok("mount", ctr)
    assert cli.ok("container-parent-owners", ctr).out == f"ID: {ctr}\nUIDs: []\nGIDs: []\n"
    assert json.loads(cli.ok("container-parent-owners", "-j", ctr).out) == {"ID": ctr, "UIDs": None,
                                                                           "GIDs": None}
    image = json.loads(cli.ok("image", "--json", "img").out)[0]
    assert len(image["mapped-layers"]) == 1
    assert cli.ok("layer", image["mapped-layers"][0]).out.startswith(f"ID: {image['mapped-layers'][0]}\n")

    result = cli("create-container", "--hostuidmap", "--uidmap", "0:1:1", "img")
    assert result.code == 1 and "host uid map specified along with UID mapping" in result.err
