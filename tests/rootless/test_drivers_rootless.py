"""vfs and overlay for an unprivileged user: our CLI and library, run as that user.

Each test writes the user's storage.conf to pick the driver (default paths otherwise) and looks
at the result on the host as root: files owned by the namespace's IDs (the user for 0, the
subordinate range for 1 and up), kernel overlay mounted inside the namespace with ``userxattr``,
Go's probe records, Go's error text for owners the namespace cannot hold.
"""

from __future__ import annotations

import json
import os
import platform

import pytest

from rootlesslayers import (
    BASE,
    DEVICES,
    DRIVERS,
    OWNERS,
    TOO_BIG,
    WHITEOUTS,
    give,
    layer_path,
    stdout_bytes,
    strip_log_time,
    tar_bytes,
    tar_members,
    tree,
    write_storage_conf,
)
from rootlesstools import User


def _kernel_at_least(major: int, minor: int) -> bool:
    parts = platform.release().split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


# Unprivileged overlay mounts inside a user namespace arrived in 5.11, userxattr in 5.11 too.
NATIVE_OVERLAY = pytest.mark.skipif(not _kernel_at_least(5, 13),
                                    reason="kernel overlay in a user namespace needs Linux >= 5.13")
GO_CHOWN_TEXT = ('potentially insufficient UIDs or GIDs available in user namespace (requested '
                 '{ids} for {path}): Check /etc/subuid and /etc/subgid if configured locally and '
                 'run "podman system migrate": {op} {path}: invalid argument')


def _import(user: User, name: str, data: bytes, parent: str = "", **kw: object) -> str:
    path = give(user, name, data)
    args = ["import-layer", "-f", path] + ([parent] if parent else [])
    return user.ours(*args, **kw).stdout.strip()


def _layer_of(user: User, container: str) -> str:
    return str(json.loads(user.ours("container", "--json", container).stdout)[0]["layer"])


def _mounts(user: User) -> list[dict[str, object]]:
    path = user.run_root / f"{_driver(user)}-layers" / "mountpoints.json"
    return json.loads(path.read_text()) if path.exists() else []


def _driver(user: User) -> str:
    return "vfs" if (user.graph_root / "vfs").is_dir() else "overlay"


# -- the overlay probe ----------------------------------------------------------------------------
@NATIVE_OVERLAY
def test_overlay_probe_records_what_go_records(user: User) -> None:
    err = user.ours("status").stderr
    assert "Native Overlay Diff: true\n" in err
    assert "Supports shifting: false\n" in err  # no ID-mapped mounts for an unprivileged user
    assert "Supports volatile: true\n" in err
    runhome = user.run_root / "overlay"
    # Go 1.60 records exactly these for the same user on this kernel (checked with go-cs-1.60).
    assert sorted(os.listdir(runhome)) == ["idmapped-lower-dir-false", "metacopy()-false",
                                           "native-diff()-true", "overlay-true", "volatile-true"]
    assert all((runhome / name).read_bytes() == b"" for name in os.listdir(runhome))
    assert (user.graph_root / "overlay" / ".has-mount-program").read_text() == "false"


# -- owners ------------------------------------------------------------------------------------
@pytest.mark.parametrize("driver", DRIVERS)
def test_owners_land_on_the_namespace_ids_and_diff_gives_them_back(user: User, driver: str) -> None:
    write_storage_conf(user, driver)
    layer = _import(user, "owners.tar", tar_bytes(OWNERS))
    found = tree(layer_path(user, driver, layer))
    sub = user.host_id
    assert found["etc/root-file"][1:3] == (user.uid, user.gid)
    assert found["home/user"][1:3] == (sub(1000), sub(1000, "gid"))
    assert found["home/user/file"][1:3] == (sub(1000), sub(1000, "gid"))
    assert found["nobody"][1:3] == (sub(65534), sub(65534, "gid"))
    assert user.subuid is not None and sub(1000) == user.subuid[0] + 999
    record = json.loads(user.ours("layer", "--json", layer).stdout)[0]
    assert (record["uidset"], record["gidset"]) == ([0, 1000, 65534], [0, 1000, 65534])
    # Rebuilt without the tar-split, and from it: the original owners either way.
    members = tar_members(stdout_bytes(user.ours("diff", "-u", layer)))
    assert {n.rstrip("/"): (u, g) for n, u, g in members} == {
        "etc": (0, 0), "etc/root-file": (0, 0), "home": (0, 0), "home/user": (1000, 1000),
        "home/user/file": (1000, 1000), "nobody": (65534, 65534)}


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_device_nodes_in_a_user_namespace(user: User, driver: str) -> None:
    write_storage_conf(user, driver)
    layer = _import(user, "dev.tar", tar_bytes(DEVICES))
    found = tree(layer_path(user, driver, layer))
    # Char and block devices are skipped, as Go does there; a FIFO needs no privilege.
    assert {k: v[0] for k, v in found.items()} == {"dev": "d", "dev/fifo": "p", "dev/file": "f"}


# -- IDs that do not fit -------------------------------------------------------------------------
def _assert_nothing_left(user: User, driver: str) -> None:
    assert user.ours("layers").stdout == ""
    if driver == "vfs":
        assert os.listdir(user.graph_root / "vfs" / "dir") == []
    else:
        assert sorted(os.listdir(user.graph_root / "overlay")) == [".has-mount-program", "l"]
        assert os.listdir(user.graph_root / "overlay" / "l") == []
    assert not list((user.graph_root / f"{driver}-layers").glob("*.tar-split.gz"))


@pytest.mark.parametrize("pax", [False, True], ids=["c-loop", "python-path"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_ids_beyond_the_namespace_fail_with_gos_text(user: User, driver: str, pax: bool) -> None:
    write_storage_conf(user, driver)
    data = tar_bytes(TOO_BIG, pax={"SCHILY.xattr.user.note": "x"} if pax else None)
    failed = user.ours("import-layer", "-f", give(user, "big.tar", data), check=False)
    assert failed.returncode == 1 and failed.stdout == ""
    inner = GO_CHOWN_TEXT.format(ids="70000:70000", path="/toobig", op="lchown")
    if driver == "overlay":
        # Go 1.60's output, word for word (its overlay driver unpacks in a chrooted child).
        assert failed.stderr == f"unpacking failed (error: exit status 1; output: {inner})\n"
    else:
        # Go's naive ApplyDiff logs the failure at error level, then the command reports it.
        outer = f"ApplyLayer stdout:  stderr: {inner} exit status 1"
        logged = json.dumps(f"While applying layer: {outer}")
        assert strip_log_time(failed.stderr) == f"level=error msg={logged}\n{outer}\n"
    _assert_nothing_left(user, driver)
    # The store stays usable.
    layer = _import(user, "owners.tar", tar_bytes(OWNERS))
    assert user.ours("layers").stdout.split() == [layer]


@NATIVE_OVERLAY
def test_whiteout_owner_beyond_the_namespace_names_the_whiteout(user: User) -> None:
    base = _import(user, "base.tar", tar_bytes(BASE))
    data = tar_bytes([("c/.wh.y", "whiteout", 70000, 70001, None)])
    failed = user.ours("import-layer", "-f", give(user, "wh.tar", data), base, check=False)
    inner = GO_CHOWN_TEXT.format(ids="70000:70001", path="/c/y", op="chown")
    assert failed.stderr == f"unpacking failed (error: exit status 1; output: {inner})\n"
    assert user.ours("layers").stdout.split() == [base]


@pytest.mark.parametrize("how", ["storage-opt", "storage.conf"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_ignore_chown_errors(user: User, driver: str, how: str) -> None:
    if how == "storage.conf":
        write_storage_conf(user, driver, f"[storage.options.{driver}]", 'ignore_chown_errors = "true"')
        args: list[str] = []
    else:
        write_storage_conf(user, driver)
        # Any --storage-opt makes Go 1.60's CLI (and ours, as it) forget the default roots.
        # Name the driver too: with options and no driver Go picks by priority, and overlay
        # refuses a vfs option.
        args = ["--graph", str(user.graph_root), "--run", str(user.run_root), "-s", driver,
                "--storage-opt", f"{driver}.ignore_chown_errors=true"]
    result = user.ours(*args, "import-layer", "-f", give(user, "big.tar", tar_bytes(TOO_BIG)))
    assert result.stderr == ""  # Go reports nothing either (its unpacking child's output is dropped)
    layer = result.stdout.strip()
    found = tree(layer_path(user, driver, layer))
    # The file the namespace cannot give to 70000 stays with the namespace's root: the user.
    assert found["toobig"][1:3] == (user.uid, user.gid)
    assert found["ok"][1:3] == (user.uid, user.gid)
    record = json.loads(user.ours("layer", "--json", layer).stdout)[0]
    assert record["uidset"] == [0, 70000]  # what the tar says, as Go records it


@pytest.mark.parametrize("driver", DRIVERS)
def test_single_id_namespace_needs_ignore_chown_errors(user_without_subids: User, driver: str) -> None:
    u = user_without_subids
    write_storage_conf(u, driver)
    path = give(u, "owners.tar", tar_bytes(OWNERS))
    failed = u.ours("import-layer", "-f", path, check=False)
    assert failed.returncode == 1
    inner = GO_CHOWN_TEXT.format(ids="1000:1000", path="/home/user", op="lchown")
    assert inner in failed.stderr, failed.stderr
    assert u.ours("layers").stdout == ""
    layer = u.ours("--graph", str(u.graph_root), "--run", str(u.run_root), "-s", driver,
                   "--storage-opt", f"{driver}.ignore_chown_errors=true", "import-layer", "-f",
                   path).stdout.strip()
    found = tree(layer_path(u, driver, layer))
    assert {v[1:3] for v in found.values()} == {(u.uid, u.gid)}


# -- whiteouts -----------------------------------------------------------------------------------
@NATIVE_OVERLAY
def test_overlay_whiteouts_are_kernel_whiteouts_with_user_xattrs(user: User) -> None:
    base = _import(user, "base.tar", tar_bytes(BASE))
    layer = _import(user, "wh.tar", tar_bytes(WHITEOUTS), base)
    diff = layer_path(user, "overlay", layer)
    found = tree(diff)
    # As Go 1.60 writes them for the user: 0/0 char devices the user owns, and the opaque
    # directory marked in the user.overlay namespace that a userxattr mount reads.
    assert found["b"] == ("c", user.uid, user.gid, 0)
    assert found["c/y"] == ("c", user.uid, user.gid, 0)
    assert os.getxattr(diff / "a", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(diff / "a")
    names = [n for n, _, _ in tar_members(stdout_bytes(user.ours("diff", layer)))]
    assert sorted(names) == [".wh.b", "a", "a/.wh..wh..opq", "a/new", "c/.wh.y"]  # the tar's own
    # Without the tar-split: exported from diff/ (native diff), the same whiteouts (and c/, which
    # the apply made for c/.wh.y; Go 1.60 exports the same).
    (user.graph_root / "overlay-layers" / f"{layer}.tar-split.gz").unlink()
    names = [n for n, _, _ in tar_members(stdout_bytes(user.ours("diff", layer)))]
    assert sorted(names) == [".wh.b", "a", "a/.wh..wh..opq", "a/new", "c", "c/.wh.y"]
    assert user.ours("changes", layer).stdout.splitlines() == [
        'Delete "/a"', 'Add "/a/new"', 'Delete "/b"', 'Modify "/c"', 'Delete "/c/y"']
    listing = user.ours("unshare", "sh", "-c",
                        f"cd $(containers-storage mount {layer}) && find . | sort && "
                        f"containers-storage unmount {layer} >/dev/null").stdout
    assert listing.split() == [".", "./a", "./a/new", "./c"]


# -- mounting ------------------------------------------------------------------------------------
_WRITE_IN_CONTAINER = (
    "set -e; m=$(containers-storage mount {ctr}); "
    "grep \" $m \" /proc/self/mountinfo | sed 's/.* - //'; "
    "echo written > $m/home/user/new; chown 1000:1000 $m/home/user/new; "
    "containers-storage mounted {ctr}; containers-storage unmount {ctr}")


@pytest.mark.parametrize("driver", DRIVERS)
def test_container_mounts_inside_unshare_and_its_diff_has_the_file(user: User, driver: str) -> None:
    if driver == "overlay" and not _kernel_at_least(5, 13):
        pytest.skip("kernel overlay in a user namespace needs Linux >= 5.13")
    write_storage_conf(user, driver)
    layer = _import(user, "owners.tar", tar_bytes(OWNERS))
    user.ours("create-image", "-n", "img", layer)
    ctr = user.ours("create-container", "img").stdout.split()[0]
    out = user.ours("unshare", "sh", "-c", _WRITE_IN_CONTAINER.format(ctr=ctr)).stdout.splitlines()
    if driver == "overlay":
        # The kernel's overlay, in the namespace, with the user.* xattrs: no FUSE.
        fstype, _, options = out[0].partition(" ")
        assert fstype == "overlay"
        assert "userxattr" in options.split(" ")[-1].split(",")
        out = out[1:]
    assert out == [f"{ctr} mounted", f"{ctr} mountpoint unmounted"]
    cl = _layer_of(user, ctr)
    assert tree(layer_path(user, driver, cl))["home/user/new"][1:3] == (
        user.host_id(1000), user.host_id(1000, "gid"))
    members = tar_members(stdout_bytes(user.ours("diff", "-u", cl)))
    assert ("home/user/new", 1000, 1000) in members
    assert 'Add "/home/user/new"' in user.ours("changes", cl).stdout.splitlines()
    assert _mounts(user) == []


@NATIVE_OVERLAY
def test_mount_records_when_the_namespace_is_gone(user: User) -> None:
    layer = _import(user, "owners.tar", tar_bytes(OWNERS))
    # The mount lives as long as the unshare session; mountpoints.json still names it after.
    made = user.ours("unshare", "sh", "-c", f"containers-storage mount {layer}").stdout.strip()
    assert [(m["id"], m["count"]) for m in _mounts(user)] == [(layer, 1)]
    assert not os.path.ismount(made)
    # As Go: the count is bookkeeping that the user balances across calls (mount-layer.bats).
    assert user.ours("mounted", layer).stdout == f"{layer} mounted\n"
    # A new session really mounts it (its files are there) and counts one more...
    out = user.ours("unshare", "sh", "-c",
                    f"m=$(containers-storage mount {layer}); ls $m/etc; cat {user.run_root}/overlay-layers/"
                    f"mountpoints.json; echo; containers-storage unmount {layer}").stdout.splitlines()
    assert out[0] == "root-file"
    assert [(m["id"], m["count"]) for m in json.loads(out[1])] == [(layer, 2)]
    assert out[2:] == []  # unmounting one of two counts prints nothing
    # ...and the last unmount clears the record.
    assert user.ours("unmount", layer).stdout == f"{layer} mountpoint unmounted\n"
    assert _mounts(user) == []
    assert user.ours("mounted", layer).stdout == ""


@NATIVE_OVERLAY
def test_a_mount_in_a_live_session_still_counts(user: User) -> None:
    import subprocess

    layer = _import(user, "owners.tar", tar_bytes(OWNERS))
    # One session keeps its mount (and namespace) alive until we answer, while others look.
    script = (f"containers-storage mount {layer} >/dev/null && echo ready && read answer; "
              f"containers-storage unmount {layer}")
    cmd = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--",
           str(user.install.cli), "unshare", "sh", "-c", script]
    session = subprocess.Popen(cmd, env=user.env(), cwd=str(user.home), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert session.stdin is not None and session.stdout is not None
    try:
        assert session.stdout.readline() == b"ready\n"
        assert user.ours("mounted", layer).stdout == f"{layer} mounted\n"
        # Another session mounts too (count 2) and unmounts: one mount, the live one, remains.
        out = user.ours("unshare", "sh", "-c", f"containers-storage mount {layer} >/dev/null; "
                        f"containers-storage unmount {layer}").stdout
        assert out == ""
        assert [m["count"] for m in _mounts(user)] == [1]
    finally:
        session.communicate(b"done\n", timeout=120)
    assert session.returncode == 0
    assert _mounts(user) == []


# -- fuse-overlayfs --------------------------------------------------------------------------------
def _fuse_usable(user: User) -> str | None:
    import shutil

    if shutil.which("fuse-overlayfs") is None:
        return "fuse-overlayfs is not installed"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    # Debian ships /dev/fuse 0666; scripts/setup-rootless.sh makes it so where a VM has 0600.
    if os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
        return "/dev/fuse is not open to users: run scripts/setup-rootless.sh as root"
    return None


@pytest.mark.parametrize("how", ["mount_program", "store-written-by-fuse"])
def test_fuse_overlayfs_where_native_overlay_is_not_used(user: User, how: str) -> None:
    reason = _fuse_usable(user)
    if reason:
        pytest.skip(reason)
    if how == "mount_program":
        write_storage_conf(user, "overlay", "[storage.options.overlay]",
                           'mount_program = "/usr/bin/fuse-overlayfs"')
    else:
        # A store whose layers fuse-overlayfs wrote (Go records that in .has-mount-program)
        # cannot be mounted natively: the driver finds fuse-overlayfs by itself, as Go's does.
        home = user.graph_root / "overlay"
        user.run(["mkdir", "-p", str(home)])
        (home / ".has-mount-program").write_text("true")
        os.chown(home / ".has-mount-program", user.uid, user.gid)
    err = user.ours("status").stderr
    assert "Native Overlay Diff: false\n" in err and "Supports shifting: true\n" in err
    assert (user.graph_root / "overlay" / ".has-mount-program").read_text() == "true"
    base = _import(user, "base.tar", tar_bytes(BASE))
    layer = _import(user, "wh.tar", tar_bytes(WHITEOUTS), base)
    found = tree(layer_path(user, "overlay", layer))
    # fuse-overlayfs reads AUFS whiteouts: they stay the .wh. files they are in the tar.
    assert {k: v[0] for k, v in found.items()} == {
        ".wh.b": "f", "a": "d", "a/.wh..wh..opq": "f", "a/new": "f", "c": "d", "c/.wh.y": "f"}
    out = user.ours("unshare", "sh", "-c",
                    f"m=$(containers-storage mount {layer}); grep \" $m \" /proc/self/mountinfo | "
                    f"sed 's/.* - //' | cut -d' ' -f1; cd $m; find . | sort; echo new > c/z; cd /; "
                    f"containers-storage unmount {layer}").stdout.splitlines()
    assert out[0] == "fuse.fuse-overlayfs"
    assert out[1:] == [".", "./a", "./a/new", "./c", f"{layer} mountpoint unmounted"]
    assert found.keys() < tree(layer_path(user, "overlay", layer)).keys()
    assert tree(layer_path(user, "overlay", layer))["c/z"][1:3] == (user.uid, user.gid)


# -- the library, rootless, outside a namespace -------------------------------------------------
_LIBRARY = r"""
import io, sys
from containers_storage import UserNamespaceRequired, open_store

store = open_store()  # the user's own store, found as podman finds it
layers = [l.id for l in store.layers()]
print("layers", *layers)
for what, call in [("mount", lambda: store.mount(layers[0])),
                   ("put_layer", lambda: store.put_layer(io.BytesIO(b""))),
                   ("create_layer", lambda: store.create_layer(writeable=True))]:
    try:
        call()
        print(what, "worked")
    except UserNamespaceRequired as e:
        print(what, "UserNamespaceRequired", e.action, "open_store(enter_user_namespace=True)" in str(e))
print("layers", *[l.id for l in store.layers()])
store.close()
store = open_store(enter_user_namespace=True)
with open(sys.argv[1], "rb") as f:
    layer = store.put_layer(f).layer
print("imported", layer.id)
store.close()
"""


@pytest.mark.parametrize("driver", DRIVERS)
def test_library_outside_a_namespace_reads_and_refuses_clearly(user: User, driver: str) -> None:
    write_storage_conf(user, driver)
    first = _import(user, "owners.tar", tar_bytes(OWNERS))
    script = give(user, "prog.py", _LIBRARY.encode())
    tar = give(user, "big.tar", tar_bytes(OWNERS[:3]))
    from rootlesstools import VENV_PYTHON

    lines = user.run([VENV_PYTHON, script, tar]).stdout.splitlines()
    assert lines[0] == f"layers {first}"
    for line, what in zip(lines[1:4], ("mount", "put_layer", "create_layer"), strict=True):
        assert line.startswith(f"{what} UserNamespaceRequired setting up the {driver} driver"), line
        assert line.endswith(" True"), line  # the error says how to enter a namespace
    assert lines[4] == f"layers {first}"  # nothing was half made
    imported = lines[5].split()[1]
    assert sorted(user.ours("layers").stdout.split()) == sorted([first, imported])
    assert tree(layer_path(user, driver, imported))["etc/root-file"][1:3] == (user.uid, user.gid)
