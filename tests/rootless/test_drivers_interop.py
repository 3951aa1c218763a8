"""One rootless store, two implementations: each reads and mounts the layers the other wrote.

In CI the other one is Debian's Go CLI (1.43), which does not enter a user namespace itself: it
runs inside ours (``containers-storage unshare``) or podman's (``podman unshare``), where it finds
the user's default paths and decides it is rootless as we do.  Where go-cs-1.60 (the CLI built
from the Go reference we follow) is installed, the same is checked against it as a tool of its
own, and its outputs are compared with ours word for word; those tests skip elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from rootlesslayers import (
    BASE,
    DRIVERS,
    GO160,
    GO160_MISSING,
    OWNERS,
    TOO_BIG,
    WHITEOUTS,
    give,
    go160,
    layer_path,
    stdout_bytes,
    strip_log_time,
    tar_bytes,
    tar_members,
    tree,
    write_storage_conf,
)
from rootlesstools import GO_CLI, User

needs_go143 = pytest.mark.skipif(not os.access(GO_CLI, os.X_OK),
                                 reason=f"{GO_CLI} (Debian's containers-storage) is not installed")
needs_go160 = pytest.mark.skipif(not GO160, reason=GO160_MISSING)

# What both layers look like through a mount, and in their tar streams.
OWNERS_VIEW = ["/etc 0:0", "/etc/root-file 0:0", "/home 0:0", "/home/user 1000:1000",
               "/home/user/file 1000:1000", "/nobody 65534:65534"]
WHITEOUT_VIEW = ["/a 0:0", "/a/new 0:0", "/c 0:0"]
WHITEOUT_TAR = [".wh.b", "a", "a/.wh..wh..opq", "a/new", "c/.wh.y"]


def _inside(user: User, how: str, script: str) -> str:
    """Run a shell script in the user's namespace: ours (``unshare``) or podman's."""
    if how == "ours":
        return user.ours("unshare", "sh", "-c", script).stdout
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    return user.podman("unshare", "sh", "-c", script).stdout


def _view(cli: str, layer: str) -> str:
    """Shell: mount ``layer`` with ``cli``, list path and owners (as the namespace sees them),
    unmount."""
    return (f"m=$({cli} mount {layer}) && (cd $m && find . -mindepth 1 -printf '/%P %U:%G\\n' | "
            f"sort) && {cli} unmount {layer} >/dev/null")


def _stored(user: User, name: str, data: bytes, cli: str, how: str, parent: str = "") -> str:
    path = give(user, name, data)
    out = _inside(user, how, f"{cli} import-layer -f {path} {parent}")
    return out.strip()


@needs_go143
@pytest.mark.parametrize("how", ["ours", "podman"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_go143_in_a_namespace_reads_and_mounts_our_layers(user: User, driver: str, how: str) -> None:
    write_storage_conf(user, driver)
    owners = user.ours("import-layer", "-f", give(user, "owners.tar", tar_bytes(OWNERS))).stdout.strip()
    base = user.ours("import-layer", "-f", give(user, "base.tar", tar_bytes(BASE))).stdout.strip()
    wh = user.ours("import-layer", "-f", give(user, "wh.tar", tar_bytes(WHITEOUTS)), base).stdout.strip()
    out = _inside(user, how, f"{GO_CLI} layers; echo; {_view(GO_CLI, owners)}; echo; "
                             f"{_view(GO_CLI, wh)}").split("\n\n")
    assert sorted(line.split()[0] for line in out[0].splitlines()) == sorted([owners, base, wh])
    assert out[1].splitlines() == OWNERS_VIEW
    assert out[2].splitlines() == WHITEOUT_VIEW
    # Go's diff of our layer: from our tar-split, the tar we stored.
    tar = _inside(user, how, f"{GO_CLI} diff -u {owners} | tar -tvf - --numeric-owner")
    assert [line.split()[1] for line in tar.splitlines()] == [
        "0/0", "0/0", "0/0", "1000/1000", "1000/1000", "65534/65534"]


@needs_go143
@pytest.mark.parametrize("how", ["ours", "podman"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_we_read_and_mount_layers_go143_wrote_in_a_namespace(user: User, driver: str, how: str) -> None:
    write_storage_conf(user, driver)
    owners = _stored(user, "owners.tar", tar_bytes(OWNERS), GO_CLI, how)
    base = _stored(user, "base.tar", tar_bytes(BASE), GO_CLI, how)
    wh = _stored(user, "wh.tar", tar_bytes(WHITEOUTS), GO_CLI, how, base)
    # On disk exactly as we write the same tarballs (owners on the subordinate IDs, and for
    # overlay 0/0 whiteouts and user.overlay.opaque).
    ours_owners = user.ours("import-layer", "-f", str(user.home / "owners.tar")).stdout.strip()
    assert tree(layer_path(user, driver, owners)) == tree(layer_path(user, driver, ours_owners))
    ours_base = user.ours("import-layer", "-f", str(user.home / "base.tar")).stdout.strip()
    ours_wh = user.ours("import-layer", "-f", str(user.home / "wh.tar"), ours_base).stdout.strip()
    assert tree(layer_path(user, driver, wh)) == tree(layer_path(user, driver, ours_wh))
    if driver == "overlay":
        assert os.listxattr(layer_path(user, driver, wh) / "a") == ["user.overlay.opaque"]
    out = _inside(user, how, f"containers-storage layers; echo; {_view('containers-storage', owners)}; "
                             f"echo; {_view('containers-storage', wh)}").split("\n\n")
    assert {line.split()[0] for line in out[0].splitlines()} >= {owners, base, wh}
    assert out[1].splitlines() == OWNERS_VIEW
    assert out[2].splitlines() == WHITEOUT_VIEW
    names = sorted(n for n, _, _ in tar_members(stdout_bytes(user.ours("diff", wh))))
    assert names == WHITEOUT_TAR


@needs_go143
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_container_we_made_mounts_in_go143_under_podman_unshare(user: User, driver: str) -> None:
    # The "Done when": our container, written into inside `unshare`, read by Go's CLI
    # under podman unshare.
    write_storage_conf(user, driver)
    layer = user.ours("import-layer", "-f", give(user, "owners.tar", tar_bytes(OWNERS))).stdout.strip()
    user.ours("create-image", "-n", "img", layer)
    ctr = user.ours("create-container", "img").stdout.split()[0]
    user.ours("unshare", "sh", "-c", f"m=$(containers-storage mount {ctr}) && echo ours > "
                                     f"$m/home/user/note && containers-storage unmount {ctr}")
    seen = _inside(user, "podman", f"m=$({GO_CLI} mount {ctr}) && cat $m/home/user/note && "
                                   f"{GO_CLI} unmount {ctr} >/dev/null")
    assert seen == "ours\n"


# -- Go 1.60, where installed -------------------------------------------------------------------
@needs_go160
@pytest.mark.parametrize("driver", DRIVERS)
def test_go160_and_we_share_a_store(user: User, driver: str) -> None:
    write_storage_conf(user, driver)
    ours = user.ours("import-layer", "-f", give(user, "owners.tar", tar_bytes(OWNERS))).stdout.strip()
    theirs = go160(user, "import-layer", "-f", str(user.home / "owners.tar")).stdout.strip()
    # Same tarball, same owners on disk.
    assert tree(layer_path(user, driver, ours)) == tree(layer_path(user, driver, theirs))
    for layer in (ours, theirs):
        for cli in ("containers-storage", GO160):
            assert user.ours("unshare", "sh", "-c", _view(cli, layer)).stdout.splitlines() == OWNERS_VIEW
        expect = [(n, u, g) for n, u, g in tar_members(stdout_bytes(go160(user, "diff", "-u", layer)))]
        assert tar_members(stdout_bytes(user.ours("diff", "-u", layer))) == expect
    # A container either one made, written by one and read by the other.
    user.ours("create-image", "-n", "img", ours)
    ctr = go160(user, "create-container", "img").stdout.split()[0]
    user.ours("unshare", "sh", "-c", f"m=$(containers-storage mount {ctr}) && echo ours > "
                                     f"$m/home/user/note && containers-storage unmount {ctr}")
    seen = go160(user, "unshare", "sh", "-c", f"m=$({GO160} mount {ctr}) && cat $m/home/user/note "
                                              f"&& {GO160} unmount {ctr} >/dev/null").stdout
    assert seen == "ours\n"
    cl = json.loads(user.ours("container", "--json", ctr).stdout)[0]["layer"]
    assert go160(user, "changes", cl).stdout == user.ours("changes", cl).stdout


@needs_go160
def test_go160_records_the_same_overlay_probes(user: User) -> None:
    user.ours("status")
    ours = {p.name: p.read_bytes() for p in (user.run_root / "overlay").iterdir()}
    flag = (user.graph_root / "overlay" / ".has-mount-program").read_text()
    shutil.rmtree(user.run_root / "overlay")
    (user.graph_root / "overlay" / ".has-mount-program").unlink()
    status = go160(user, "status").stderr
    theirs = {p.name: p.read_bytes() for p in (user.run_root / "overlay").iterdir()}
    assert ours == theirs
    assert (user.graph_root / "overlay" / ".has-mount-program").read_text() == flag
    assert user.ours("status").stderr == status


@needs_go160
@pytest.mark.parametrize("driver", DRIVERS)
def test_go160_fails_on_ids_that_do_not_fit_with_our_text(user: User, driver: str) -> None:
    write_storage_conf(user, driver)
    path = give(user, "big.tar", tar_bytes(TOO_BIG))
    theirs = go160(user, "import-layer", "-f", path, check=False)
    ours = user.ours("import-layer", "-f", path, check=False)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (1, "")
    assert strip_log_time(ours.stderr) == strip_log_time(theirs.stderr)
    assert user.ours("layers").stdout == go160(user, "layers").stdout == ""
