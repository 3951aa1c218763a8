"""Overlay stores shared with the Go CLI: layers either side made mount and export on the other.

Each test ends with both sides shut down and asserts nothing is left mounted under its directory.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator

import pytest

from containers_storage.config import StoreOptions
from containers_storage.mountinfo import is_mountpoint, mount_points
from containers_storage.store import Store, get_store
from gocli import GO_CLI, go_cli
from storetools import close_store

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root"),
]


def go(dirs: tuple[str, str], *args: str, input: bytes | None = None) -> str:
    """Run the Go CLI on the store; the first word of its output (an ID or a path)."""
    out = go_cli(dirs[0], dirs[1], *args, driver="overlay", input=input).stdout.decode().split()
    return out[0] if out else ""


def _open(dirs: tuple[str, str]) -> Store:
    return get_store(StoreOptions(graph_root=dirs[0], run_root=dirs[1], driver_name="overlay"))


def _mounts_under(path: str) -> list[str]:
    prefix = os.path.realpath(path) + "/"
    return [m for m in mount_points() if m.startswith(prefix)]


@pytest.fixture
def dirs(store_dirs: tuple[str, str], tmp_path: object) -> Iterator[tuple[str, str]]:
    yield store_dirs
    close_store(_open(store_dirs))
    go_cli(store_dirs[0], store_dirs[1], "shutdown", driver="overlay", check=False)
    leaked = _mounts_under(os.path.dirname(store_dirs[0]))
    for mp in sorted(leaked, key=len, reverse=True):
        os.system(f"umount -l '{mp}'")
    assert not leaked, f"leaked mounts: {leaked}"


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """name -> content (None for a directory); names ending in .wh.* are whiteouts."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


BASE = _tar([("etc", None), ("etc/a", b"A"), ("etc/gone", b"G"), ("dir", None), ("dir/old", b"O")])
TOP = _tar([("etc", None), ("etc/.wh.gone", b""), ("etc/a", b"A2"), ("dir", None),
            ("dir/.wh..wh..opq", b""), ("dir/new", b"N")])


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _files(root: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            out[rel] = _read(full) if os.path.isfile(full) else b"<dir>"
    return out


EXPECTED_TOP = {"etc": b"<dir>", "etc/a": b"A2", "dir": b"<dir>", "dir/new": b"N"}


def _write(dirs: tuple[str, str], name: str, data: bytes) -> str:
    path = os.path.join(os.path.dirname(dirs[0]), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _layer_tree(home: str, id: str) -> dict[str, str]:
    """Modes and kinds of a layer's dir (not its merged content), to compare layouts."""
    out: dict[str, str] = {}
    base = os.path.join(home, id)
    for name in sorted(os.listdir(base)):
        out[name] = stat.filemode(os.lstat(os.path.join(base, name)).st_mode)
    return out


def test_go_layers_mount_and_export_with_ours(dirs: tuple[str, str]) -> None:
    base = go(dirs, "create-layer")
    go(dirs, "applydiff", "-f", _write(dirs, "base.tar", BASE), base)
    top = go(dirs, "create-layer", base)
    go(dirs, "applydiff", "-f", _write(dirs, "top.tar", TOP), top)
    image = go(dirs, "create-image", "-n", "goimg", top)
    go_diff = go_cli(dirs[0], dirs[1], "diff", "-u", top, driver="overlay").stdout

    s = _open(dirs)
    try:
        path = s.mount_image(image)
        try:
            assert _files(path) == EXPECTED_TOP
        finally:
            s.unmount_image(image)
        ctr = s.create_container(image, names=["ours"])
        path = s.mount(ctr.id)
        try:
            assert _files(path) == EXPECTED_TOP
            with open(os.path.join(path, "written-by-us"), "w") as f:
                f.write("x")
        finally:
            s.unmount(ctr.id)
        out = io.BytesIO()
        s.diff(top, out, compression=0)
        assert out.getvalue() == go_diff, "tar-split export must be byte-identical"
    finally:
        s.close()
    # And Go still mounts the container layer we wrote to.
    mp = go(dirs, "mount", "ours")
    try:
        assert _read(os.path.join(mp, "written-by-us")) == b"x"
    finally:
        go(dirs, "unmount", "ours")


def test_our_layers_mount_and_export_with_go(dirs: tuple[str, str]) -> None:
    s = _open(dirs)
    try:
        base = s.put_layer(io.BytesIO(BASE)).layer
        top = s.put_layer(io.BytesIO(TOP), parent=base.id).layer
        s.create_image(top.id, names=["ourimg"])
        our_diff = io.BytesIO()
        s.diff(top.id, our_diff, compression=0)
    finally:
        s.close()
    home = os.path.join(dirs[0], "overlay")
    diff_dir = os.path.join(home, top.id, "diff")
    st = os.lstat(os.path.join(diff_dir, "etc", "gone"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(os.path.join(diff_dir, "dir"), "trusted.overlay.opaque") == b"y"

    mp = go(dirs, "mount", top.id)
    try:
        assert _files(mp) == EXPECTED_TOP
    finally:
        go(dirs, "unmount", top.id)
    ctr = go(dirs, "create-container", "ourimg")
    mp = go(dirs, "mount", ctr)
    try:
        assert _files(mp) == EXPECTED_TOP
    finally:
        go(dirs, "unmount", ctr)
    go_diff = go_cli(dirs[0], dirs[1], "diff", "-u", top.id, driver="overlay").stdout
    assert go_diff == our_diff.getvalue()


def test_layouts_match(dirs: tuple[str, str]) -> None:
    go_base = go(dirs, "create-layer")
    go_top = go(dirs, "create-layer", go_base)
    s = _open(dirs)
    try:
        base = s.create_layer()
        top = s.create_layer(parent=base.id, writeable=True)
    finally:
        s.close()
    home = os.path.join(dirs[0], "overlay")
    ours_base, go_base_tree = _layer_tree(home, base.id), _layer_tree(home, go_base)
    go_base_tree.pop("merged", None)  # Go 1.43 creates it on first mount; newer Go at create
    ours_base.pop("merged", None)
    assert ours_base == go_base_tree
    ours_top, go_top_tree = _layer_tree(home, top.id), _layer_tree(home, go_top)
    ours_top.pop("merged", None)
    go_top_tree.pop("merged", None)
    assert ours_top == go_top_tree
    for id in (base.id, top.id, go_base, go_top):
        link = _read(os.path.join(home, id, "link")).decode()
        assert len(link) == 26 and os.readlink(os.path.join(home, "l", link)) == f"../{id}/diff"


def test_go_repairs_links_we_lost_and_the_reverse(dirs: tuple[str, str]) -> None:
    s = _open(dirs)
    try:
        base = s.put_layer(io.BytesIO(BASE)).layer
        top = s.put_layer(io.BytesIO(TOP), parent=base.id).layer
    finally:
        s.close()
    link_dir = os.path.join(dirs[0], "overlay", "l")
    for name in os.listdir(link_dir):
        os.unlink(os.path.join(link_dir, name))
    mp = go(dirs, "mount", top.id)
    assert _files(mp) == EXPECTED_TOP
    go(dirs, "unmount", top.id)

    go_top = go(dirs, "create-layer", top.id)
    for name in os.listdir(link_dir):
        os.unlink(os.path.join(link_dir, name))
    s = _open(dirs)
    try:
        path = s.mount(go_top)
        try:
            assert _files(path) == EXPECTED_TOP
        finally:
            s.unmount(go_top)
    finally:
        s.close()


def test_mounts_are_counted_across_go_and_us(dirs: tuple[str, str]) -> None:
    layer = go(dirs, "create-layer")
    mp = go(dirs, "mount", layer)
    s = _open(dirs)
    try:
        assert s.mounted(layer) == 1
        assert s.mount(layer) == mp
        assert s.mounted(layer) == 2
        assert s.unmount(layer) is True
    finally:
        s.close()
    assert is_mountpoint(mp)
    go(dirs, "unmount", layer)
    assert not is_mountpoint(mp)


def test_status_agrees_with_go(dirs: tuple[str, str]) -> None:
    """The Go CLI prints status on stderr."""
    go_lines = go_cli(dirs[0], dirs[1], "status", driver="overlay").stderr.decode().splitlines()
    go_status = dict(line.split(": ", 1) for line in go_lines if ": " in line)
    s = _open(dirs)
    try:
        ours = dict(s.status())
    finally:
        s.close()
    # Go 1.43 prints these four; newer Go adds "Supports shifting" and "Supports volatile".
    for key in ("Backing Filesystem", "Supports d_type", "Native Overlay Diff", "Using metacopy"):
        assert ours[key] == go_status[key], key
    # Both read the same probe cache in the run root.
    assert os.path.exists(os.path.join(dirs[1], "overlay", "overlay-true"))


FUSE_OVERLAYFS = "/usr/bin/fuse-overlayfs"


@pytest.mark.skipif(not os.path.exists(FUSE_OVERLAYFS), reason="fuse-overlayfs is not installed")
def test_mount_program_layers_match_go_and_mount_on_either_side(dirs: tuple[str, str]) -> None:
    """Under a mount program Go keeps the tar's whiteouts as .wh. files (its AUFS format): our
    diff dirs must hold exactly what Go's hold, and each side's fuse mount must hide the same."""
    opt = f"overlay.mount_program={FUSE_OVERLAYFS}"

    def go_mp(*args: str) -> str:
        return go(dirs, "--storage-opt", opt, *args)

    go_base = go_mp("import-layer", "-f", _write(dirs, "base.tar", BASE))
    go_top = go_mp("import-layer", "-f", _write(dirs, "top.tar", TOP), go_base)
    s = get_store(StoreOptions(graph_root=dirs[0], run_root=dirs[1], driver_name="overlay",
                               driver_options=[opt]))
    try:
        base = s.put_layer(io.BytesIO(BASE)).layer
        top = s.put_layer(io.BytesIO(TOP), parent=base.id).layer
        home = os.path.join(dirs[0], "overlay")

        def tree(id: str) -> dict[str, tuple[str, int]]:
            diff = os.path.join(home, id, "diff")
            out = {}
            for dirpath, dirnames, filenames in os.walk(diff):
                for name in dirnames + filenames:
                    st = os.lstat(os.path.join(dirpath, name))
                    out[os.path.relpath(os.path.join(dirpath, name), diff)] = (
                        stat.filemode(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0)
            return out

        assert tree(top.id) == tree(go_top)
        assert tree(top.id)["etc/.wh.gone"] == ("-rw-r--r--", 0)
        path = s.mount(go_top)
        try:
            assert _files(path) == EXPECTED_TOP
        finally:
            s.unmount(go_top)
        s.shutdown(force=True)
    finally:
        s.close()
    mp = go_mp("mount", top.id)
    try:
        assert _files(mp) == EXPECTED_TOP
    finally:
        go_mp("unmount", top.id)
        go_mp("shutdown")
