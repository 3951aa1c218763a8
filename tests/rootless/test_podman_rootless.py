"""An ordinary user's store, shared live by our CLI, rootless skopeo and podman, and Go's CLI.

Everything runs as the unprivileged user with no flags and no configuration (unless a test writes
the user's storage.conf): the default paths are the test's own, and each tool finds the same
store there.  Go's CLI is Debian's 1.43, run under ``podman unshare`` (it does not enter a
namespace by itself); its default paths for the user are the same as ours and podman's.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from imagetools import BUSYBOX, Image, busybox_tar, make_image, readable_by_all, sha, write_oci_layout
from rootlesstools import GO_CLI, User

pytestmark = [
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                       reason="podman and runc are not installed"),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed"),
]

GREETING = b"hello from busybox\n"


def _busybox() -> Image:
    return make_image(busybox_tar(GREETING), {"Cmd": ["/bin/busybox", "echo", "hi"]})


def skopeo_copy(user: User, image: Image, ref: str) -> None:
    """Rootless skopeo copies ``image`` from an OCI layout into the user's default store."""
    layout = user.home / "oci"
    write_oci_layout(layout, image, "latest")
    readable_by_all(layout)
    user.skopeo("--insecure-policy", "copy", "-q", f"oci:{layout}:latest", f"containers-storage:{ref}")


def store_with_our_cli(user: User, image: Image, name: str) -> str:
    """Our CLI stores ``image`` as ``name`` (import-layer, create-image, the big data podman
    reads); returns the layer's ID."""
    files = user.home / "blobs"
    files.mkdir()
    (files / "layer.tar.gz").write_bytes(image.blob)
    data = image.big_data()
    for i, (_, content, _) in enumerate(data):
        (files / f"data{i}").write_bytes(content)
    readable_by_all(files)
    layer = user.ours("import-layer", "-f", str(files / "layer.tar.gz")).stdout.strip()
    assert user.ours("create-image", "-i", image.id, "-n", name, layer).stdout.split() == [image.id, name]
    for i, (key, _, _) in enumerate(data):
        user.ours("set-image-data", "-f", str(files / f"data{i}"), name, key)
    return layer


def go_under_podman_unshare(user: User, script: str) -> str:
    """A shell script run by ``podman unshare`` with ``$GO`` naming Go's CLI (Debian's 1.43), its
    default paths left to itself (podman's CONTAINERS_GRAPHROOT/RUNROOT removed)."""
    return user.podman("unshare", "env", "-u", "CONTAINERS_GRAPHROOT", "-u", "CONTAINERS_RUNROOT",
                       f"GO={GO_CLI}", "sh", "-euc", script).stdout


def _needs_go_cli() -> None:
    if not os.access(GO_CLI, os.X_OK):
        pytest.skip(f"{GO_CLI} (Debian's containers-storage) is not installed")


def _mount_type(mountinfo: str, mountpoint: str) -> str:
    for line in mountinfo.splitlines():
        fields = line.split()
        if fields[4] == mountpoint:
            return fields[fields.index("-") + 1]
    raise AssertionError(f"{mountpoint} is not mounted:\n{mountinfo}")


# -- 1. what rootless skopeo stored ---------------------------------------------------------------
def test_images_rootless_skopeo_stored_are_listed_and_mount(user: User) -> None:
    image = _busybox()
    skopeo_copy(user, image, "localhost/busybox:latest")

    images = user.ours("images").stdout.splitlines()
    assert images[0] == image.id
    assert "\tname: localhost/busybox:latest" in images
    assert f"\tdigest: {image.manifest_digest}" in images
    info = user.ours("image", "localhost/busybox:latest").stdout.splitlines()
    assert info[:2] == [f"ID: {image.id}", "Name: localhost/busybox:latest"]
    top = next(line.split(": ", 1)[1] for line in info if line.startswith("Top Layer: "))
    assert user.ours("layers").stdout.splitlines()[0] == top
    layer = json.loads(user.ours("layer", "--json", top).stdout)[0]
    assert layer["diff-digest"] == f"sha256:{top}"  # skopeo names a base layer by its diff ID
    assert layer["compressed-diff-digest"] == sha(image.blob)

    # The mount exists in the namespace that made it: look at it from inside `unshare`.
    out = user.ours("unshare", "sh", "-euc",
                    f'm=$(containers-storage mount {top}); cat "$m/etc/greeting"; '
                    f'ls -n "$m/bin"; grep " $m " /proc/self/mountinfo; containers-storage unmount {top}'
                    ).stdout
    assert out.startswith(GREETING.decode())
    assert " busybox\n" in out and "sh -> busybox" in out
    assert " 0 0 " in out  # owned by root of the namespace: the user on the host
    assert " - overlay overlay " in out  # native overlay, not fuse-overlayfs
    on_disk = user.graph_root / "overlay" / top / "diff" / "bin" / "busybox"
    assert on_disk.stat().st_uid == user.uid


# -- 2. the user's storage.conf ------------------------------------------------------------------
def test_users_storage_conf_is_shared_with_podman(user: User) -> None:
    conf = user.home / ".config" / "containers"
    user.run(["mkdir", "-p", str(conf)])
    graph = user.home / "elsewhere"
    user.run(["sh", "-c", f"cat > {conf}/storage.conf"],
             input=f'[storage]\ndriver = "vfs"\ngraphroot = "{graph}"\n'.encode())

    status = user.ours("status").stderr
    assert f"Root: {graph}\n" in status and "Driver Name: vfs\n" in status
    assert f"Run Root: {user.run_root}\n" in status
    info = user.podman("info", "--format",
                       "{{.Store.GraphRoot}} {{.Store.GraphDriverName}} {{.Store.RunRoot}}").stdout
    assert info.split() == [str(graph), "vfs", str(user.run_root)]

    # What skopeo stores there we list; what we store there podman lists and runs.
    skopeo_copy(user, _busybox(), "localhost/busybox:latest")
    assert "\tname: localhost/busybox:latest" in user.ours("images").stdout.splitlines()
    ours = make_image(busybox_tar(b"ours on vfs\n"), {"Cmd": ["/bin/busybox", "cat", "/etc/greeting"]})
    store_with_our_cli(user, ours, "localhost/ours:vfs")
    assert (graph / "vfs-images" / ours.id).is_dir()
    listed = user.podman("images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}").stdout
    assert f"sha256:{ours.id} localhost/ours:vfs" in listed.splitlines()
    ran = user.podman("run", "--rm", "--network=none", "localhost/ours:vfs")
    assert ran.stdout == "ours on vfs\n"
    assert not user.graph_root.exists()  # nobody used the default graph root


# -- 3. a container's mount, shared with Go's CLI under podman unshare ------------------------
def test_go_cli_under_podman_unshare_uses_the_same_default_paths(user: User) -> None:
    _needs_go_cli()
    ours = user.ours("status").stderr.splitlines()[:3]
    go = go_under_podman_unshare(user, '"$GO" status 2>&1').splitlines()[:3]
    assert go == ours == [f"Root: {user.graph_root}", f"Run Root: {user.run_root}", "Driver Name: overlay"]


def test_container_we_mount_is_read_and_written_by_go_under_podman_unshare(user: User) -> None:
    _needs_go_cli()
    skopeo_copy(user, _busybox(), "localhost/busybox:latest")
    ctr = user.ours("create-container", "-n", "shared", "localhost/busybox:latest").stdout.split()[0]

    out = user.ours("unshare", "sh", "-euc",
                    'm=$(containers-storage mount shared); echo written-by-ours > "$m/etc/note"; '
                    'grep " $m " /proc/self/mountinfo; containers-storage unmount shared').stdout
    assert " - overlay overlay " in out
    out = go_under_podman_unshare(
        user, 'm=$("$GO" mount shared); cat "$m/etc/note" "$m/etc/greeting"; '
              'echo written-by-go > "$m/etc/note2"; "$GO" unmount shared >/dev/null')
    assert out == "written-by-ours\n" + GREETING.decode()
    out = user.ours("unshare", "sh", "-euc",
                    'm=$(containers-storage mount shared); cat "$m/etc/note2"; '
                    'containers-storage unmount shared >/dev/null').stdout
    assert out == "written-by-go\n"
    # Both wrote into the container's layer (as root of the namespace: the user on the host).
    layer = json.loads(user.ours("container", "--json", ctr).stdout)[0]["layer"]
    diff = user.graph_root / "overlay" / layer / "diff" / "etc"
    assert {p.name: p.stat().st_uid for p in diff.iterdir()} == {"note": user.uid, "note2": user.uid}


def test_container_in_a_store_our_cli_set_up_mounts_overlay(user: User) -> None:
    # Our CLI is the first to touch the store: its overlay probe (run as uid 0 of the namespace)
    # is recorded in the run root, and decides for every tool after it.
    store_with_our_cli(user, _busybox(), "localhost/busybox:latest")
    user.ours("create-container", "-n", "first", "localhost/busybox:latest")
    out = user.ours("unshare", "sh", "-euc",
                    'm=$(containers-storage mount first); cat "$m/etc/greeting"; '
                    'grep " $m " /proc/self/mountinfo; containers-storage unmount first').stdout
    assert out.startswith(GREETING.decode())
    assert " - overlay overlay " in out
    assert (user.run_root / "overlay" / "overlay-true").exists()


# -- 4. podman runs what our CLI stored -------------------------------------------------------
@pytest.mark.parametrize("first", [
    "ours",  # a fresh store: our CLI sets it up, and podman takes over its probe results
    "podman",  # podman set the store up (and probed overlay) before our CLI stored the image
])
def test_rootless_podman_runs_an_image_our_cli_made(user: User, first: str) -> None:
    if first == "podman":
        user.podman("info", "--format", "{{.Store.GraphDriverName}}")
    image = _busybox()
    layer = store_with_our_cli(user, image, "localhost/ours:v1")
    listed = user.podman("images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}").stdout
    assert listed.splitlines() == [f"sha256:{image.id} localhost/ours:v1"]
    ran = user.podman("run", "--network=none", "--name", "ran", "localhost/ours:v1",
                      "/bin/busybox", "echo", "hi")
    # podman 4.3's attach now and then loses a short-lived container's output on a loaded
    # machine; the container's own log (conmon's) still holds what it printed.
    logs = user.podman("logs", "ran").stdout
    assert "hi\n" in (ran.stdout, logs), (ran.stdout, ran.stderr, logs)
    state = user.podman("inspect", "--format", "{{.State.ExitCode}}", "ran").stdout
    assert state.strip() == "0"
    # podman's container is a record in the same store, on top of our layer.
    ctr = json.loads(user.ours("container", "--json", "ran").stdout)[0]
    assert ctr["image"] == image.id
    assert json.loads(user.ours("layer", "--json", ctr["layer"]).stdout)[0]["parent"] == layer
    user.podman("rm", "ran")
    assert "ran" not in user.ours("containers").stdout


# -- 5. at the same time -------------------------------------------------------------------------
def test_podman_and_our_cli_share_the_store_at_the_same_time(user: User) -> None:
    _needs_go_cli()
    skopeo_copy(user, _busybox(), "localhost/busybox:latest")
    rounds = 8
    # podman creates containers in the background while our CLI creates layers and containers and
    # lists everything; every command must succeed, each under the others' locks.
    script = f"""
        set -u
        (for i in $(seq {rounds}); do
            podman --runtime runc create --name pod$i localhost/busybox:latest /bin/busybox true \
                >/dev/null || exit 1
        done) & podman_loop=$!
        for i in $(seq {rounds}); do
            containers-storage create-layer -n layer$i >/dev/null || exit 2
            containers-storage create-container -n ours$i localhost/busybox:latest >/dev/null || exit 3
            containers-storage layers >/dev/null || exit 4
            containers-storage containers >/dev/null || exit 5
            containers-storage images >/dev/null || exit 6
        done
        wait $podman_loop || exit 7
    """
    user.run(["sh", "-c", script])

    numbers = range(1, rounds + 1)
    containers = json.loads(user.ours("containers", "--json").stdout)
    ids = {name: c["id"] for c in containers for name in c["names"]}
    assert set(ids) == {f"pod{i}" for i in numbers} | {f"ours{i}" for i in numbers}
    podman = user.podman("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout.splitlines()
    assert sorted(podman) == sorted(f"{ids[f'pod{i}']} pod{i}" for i in numbers)
    layers = json.loads(user.ours("layers", "--json").stdout)
    assert {c["layer"] for c in containers} <= {layer["id"] for layer in layers}
    assert {f"layer{i}" for i in numbers} <= {n for layer in layers for n in layer.get("names", [])}
    # Go's CLI reads the same records.
    for what in ("layers", "containers", "images"):
        assert go_under_podman_unshare(user, f'"$GO" {what}') == user.ours(what).stdout, what
    check = user.ours("check", check=False)
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


# -- 6. containers-storage unshare and podman unshare ------------------------------------------
def test_our_cli_inside_podman_unshare_joins_its_namespace(user: User) -> None:
    skopeo_copy(user, _busybox(), "localhost/busybox:latest")
    user.ours("create-container", "-n", "c", "localhost/busybox:latest")
    out = user.podman("unshare", "sh", "-euc", """
        echo "$_CONTAINERS_USERNS_CONFIGURED $_CONTAINERS_ROOTLESS_UID"
        readlink /proc/self/ns/user
        containers-storage unshare readlink /proc/self/ns/user
        containers-storage unshare cat /proc/self/uid_map
        containers-storage status 2>&1 | head -2
        m=$(containers-storage mount c)
        cat "$m/etc/greeting"
        containers-storage unmount c
    """).stdout.splitlines()
    assert out[0] == f"done {user.uid}"
    assert out[1] == out[2]  # no nested namespace
    assert user.subuid is not None
    assert [line.split() for line in out[3:5]] == [["0", str(user.uid), "1"],
                                                   ["1", str(user.subuid[0]), str(user.subuid[1])]]
    assert out[5:7] == [f"Root: {user.graph_root}", f"Run Root: {user.run_root}"]
    # A mount made by our CLI there stays in podman's namespace, where the shell sees it.
    assert out[7] == GREETING.decode().rstrip("\n")
    assert out[8] == "c mountpoint unmounted"


def test_podman_inside_our_unshare_joins_its_namespace(user: User) -> None:
    skopeo_copy(user, _busybox(), "localhost/busybox:latest")
    out = user.ours("unshare", "sh", "-euc", """
        readlink /proc/self/ns/user
        podman unshare readlink /proc/self/ns/user
        podman --runtime runc run --rm --network=none localhost/busybox:latest /bin/busybox cat /etc/greeting
        podman images --format '{{.Repository}}:{{.Tag}}'
    """).stdout.splitlines()
    assert out[0] == out[1]  # podman took ours instead of making (or joining) its own
    assert out[2:] == [GREETING.decode().rstrip("\n"), "localhost/busybox:latest"]
