"""The archive engine and drivers as a rootless process sees them, without an unprivileged user.

Root can make a user namespace that maps only itself (``unshare --user --map-root-user``): there
a chown to any other ID fails with EINVAL, device nodes cannot be made and trusted.* xattrs
cannot be set, exactly as for a rootless user with too few subordinate IDs.  The in-process
tests force ``userns.is_rootless()`` instead, to check what follows from it (the ``user.overlay.``
xattrs overlay uses when rootless), and fake the EINVAL to check how the drivers report it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from containers_storage import userns
from containers_storage.archive import apply as apply_mod
from containers_storage.archive.apply import ApplyOptions, InsufficientIDs, apply_layer

SRC = str(Path(__file__).resolve().parents[2] / "src")
GO_TEXT = ('potentially insufficient UIDs or GIDs available in user namespace (requested '
           '{ids} for {path}): Check /etc/subuid and /etc/subgid if configured locally and run '
           '"podman system migrate": {op} {path}: invalid argument')


def _tar(*entries: tuple[str, str, int, int], pax: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, uid, gid in entries:
            ti = tarfile.TarInfo(name)
            ti.uid, ti.gid, ti.mtime = uid, gid, 1700000000
            data = None
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "file":
                ti.mode, ti.size, data = 0o644, 3, io.BytesIO(b"abc")
                ti.pax_headers = dict(pax or {})
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor, ti.mode = tarfile.CHRTYPE, 1, 3, 0o666
            elif kind == "blk":
                ti.type, ti.devmajor, ti.devminor, ti.mode = tarfile.BLKTYPE, 8, 0, 0o660
            elif kind == "fifo":
                ti.type, ti.mode = tarfile.FIFOTYPE, 0o644
            elif kind == "whiteout":
                ti.mode = 0
            tf.addfile(ti, data)
    return buf.getvalue()


# -- in a user namespace that maps only root -------------------------------------------------
_IN_NAMESPACE = r"""
import io, json, os, sys
from containers_storage import userns
from containers_storage.archive import apply as A
from containers_storage.archive.apply import ApplyOptions, InsufficientIDs, apply_layer

job = json.loads(sys.argv[1])
if not job["fast"]:
    A._fastapply = None
out = {"rootless": userns.is_rootless(), "fast": A._fastapply is not None}
with open(job["tar"], "rb") as f:
    data = f.read()
try:
    apply_layer(io.BytesIO(data), job["dest"], ApplyOptions(
        whiteouts=job["whiteouts"], ignore_chown_errors=job["ignore"],
        overlay_xattr_prefix="user.overlay."))
    out["result"] = "ok"
except InsufficientIDs as e:
    out["result"] = "InsufficientIDs"
    out["text"] = str(e)
    out["ids"] = [e.uid, e.gid, e.path, e.op]
print(json.dumps(out))
"""


InUserns = Callable[..., dict[str, object]]


@pytest.fixture
def in_userns(tmp_path: Path) -> Iterator[InUserns]:
    if os.geteuid() != 0:
        pytest.skip("root makes the single-ID user namespace here (an unprivileged user may not be "
                    "allowed to)")
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is not installed")

    def run(entries: bytes, *, fast: bool = True, whiteouts: str = "plain", ignore: bool = False,
            dest: Path | None = None) -> dict[str, object]:
        tar = tmp_path / "layer.tar"
        tar.write_bytes(entries)
        dest = dest or tmp_path / "dest"
        dest.mkdir(exist_ok=True)
        job = json.dumps({"tar": str(tar), "dest": str(dest), "fast": fast, "whiteouts": whiteouts,
                          "ignore": ignore})
        env = {**os.environ, "PYTHONPATH": SRC}
        for name in (userns.USERNS_ENV, userns.ROOTLESS_UID_ENV, userns.ROOTLESS_GID_ENV):
            env.pop(name, None)
        proc = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c",
                               _IN_NAMESPACE, job], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        result: dict[str, object] = json.loads(proc.stdout)
        assert result["rootless"] is True  # root of a namespace without the full ID range
        return result

    yield run


@pytest.mark.parametrize("fast", [True, False], ids=["c-loop", "python-path"])
def test_an_owner_the_namespace_lacks_fails_with_gos_text(in_userns: InUserns, fast: bool) -> None:
    data = _tar(("d", "dir", 0, 0), ("d/ok", "file", 0, 0), ("d/big", "file", 70000, 70001))
    result = in_userns(data, fast=fast)
    if fast and not result["fast"]:
        pytest.skip("the C accelerator is not built")
    assert result["result"] == "InsufficientIDs"
    assert result["text"] == GO_TEXT.format(ids="70000:70001", path="/d/big", op="lchown")
    assert result["ids"] == [70000, 70001, "/d/big", "lchown"]


def test_a_directory_owner_too(in_userns: InUserns) -> None:
    # A plain directory entry: the C loop's fchown fails, and its EINVAL is traced to the owner.
    result = in_userns(_tar(("home", "dir", 0, 0), ("home/user", "dir", 1000, 1000)))
    assert result["text"] == GO_TEXT.format(ids="1000:1000", path="/home/user", op="lchown")


def test_a_whiteout_owner_names_the_whiteout(in_userns: InUserns, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "c").mkdir(parents=True)
    result = in_userns(_tar(("c/.wh.y", "whiteout", 5, 6)), whiteouts="overlay", dest=dest)
    assert result["text"] == GO_TEXT.format(ids="5:6", path="/c/y", op="chown")


@pytest.mark.parametrize("fast", [True, False], ids=["c-loop", "python-path"])
def test_ignore_chown_errors_leaves_the_namespace_root_owning(in_userns: InUserns, tmp_path: Path,
                                                              fast: bool) -> None:
    data = _tar(("d", "dir", 1000, 1000), ("d/big", "file", 70000, 70001), ("d/ok", "file", 0, 0))
    assert in_userns(data, fast=fast, ignore=True)["result"] == "ok"
    dest = tmp_path / "dest"
    # Root of the namespace is root outside: the owner stays 0 on the host.
    assert {(p.stat().st_uid, p.stat().st_gid) for p in dest.rglob("*")} == {(0, 0)}
    assert (dest / "d" / "big").read_bytes() == b"abc"


def test_devices_are_skipped_and_privileged_xattrs_ignored(in_userns: InUserns, tmp_path: Path) -> None:
    data = _tar(("dev", "dir", 0, 0), ("dev/null", "chr", 0, 0), ("dev/sda", "blk", 0, 0),
                ("dev/fifo", "fifo", 0, 0), ("dev/file", "file", 0, 0),
                pax={"SCHILY.xattr.trusted.note": "t", "SCHILY.xattr.user.note": "u"})
    assert in_userns(data)["result"] == "ok"
    dest = tmp_path / "dest" / "dev"
    assert sorted(os.listdir(dest)) == ["fifo", "file"]
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert os.listxattr(dest / "file") == ["user.note"]  # trusted.* refused (EPERM), not fatal


def test_overlay_whiteouts_in_a_namespace(in_userns: InUserns, tmp_path: Path) -> None:
    data = _tar(("a", "dir", 0, 0), ("a/.wh..wh..opq", "whiteout", 0, 0), (".wh.b", "whiteout", 0, 0))
    assert in_userns(data, whiteouts="overlay")["result"] == "ok"
    dest = tmp_path / "dest"
    st = os.lstat(dest / "b")
    # A 0/0 character device is the one device node a user namespace may make (Linux >= 5.8).
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "a", "user.overlay.opaque") == b"y"


# -- in-process: what follows from being rootless ------------------------------------------
@pytest.fixture
def rootless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "_rootless", True)


def test_overlay_xattr_names_follow_is_rootless(monkeypatch: pytest.MonkeyPatch) -> None:
    from containers_storage.archive.changes import opaque_xattr
    from containers_storage.drivers.overlay_probe import overlay_xattr

    monkeypatch.setattr(userns, "_rootless", False)
    assert (overlay_xattr("opaque"), opaque_xattr()) == ("trusted.overlay.opaque", "trusted.overlay.opaque")
    monkeypatch.setattr(userns, "_rootless", True)
    # (Also as uid 0, which a process inside a rootless user's namespace is.)
    assert (overlay_xattr("opaque"), opaque_xattr()) == ("user.overlay.opaque", "user.overlay.opaque")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make 0/0 whiteouts")
def test_rootless_overlay_diff_reads_user_overlay_opaque(rootless: None, tmp_path: Path) -> None:
    from containers_storage.archive.changes import changes_overlay
    from containers_storage.archive.export import export_overlay_diff

    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "a").mkdir(parents=True)
    (lower / "a" / "x").write_bytes(b"x")
    (upper / "a").mkdir(parents=True)
    (upper / "a" / "new").write_bytes(b"n")
    os.setxattr(upper / "a", "user.overlay.opaque", b"y")
    os.setxattr(upper / "a", "trusted.overlay.opaque", b"y")  # root's marker: not ours when rootless
    os.mknod(upper / "gone", stat.S_IFCHR, 0)
    assert [str(c) for c in changes_overlay(str(upper), [str(lower)])] == [
        'Delete "/a"', 'Add "/a/new"', 'Delete "/gone"']
    out = io.BytesIO()
    export_overlay_diff(str(upper), [str(lower)], out, None, None)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert sorted(members) == [".wh.gone", "a", "a/.wh..wh..opq", "a/new"]
    # The rootless marker never leaks into the tar; another program's trusted.* one is data.
    assert "SCHILY.xattr.user.overlay.opaque" not in members["a"].pax_headers


def _einval_for(uid: int) -> object:
    real = os.fchown

    def fchown(fd: int, u: int, g: int) -> None:
        if u == uid:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real(fd, u, g)

    return fchown


def test_python_path_einval_is_insufficient_ids(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(apply_mod, "_fastapply", None)
    monkeypatch.setattr(os, "fchown", _einval_for(70000))
    data = _tar(("x", "dir", 0, 0), ("x/big", "file", 70000, 70000))
    with pytest.raises(InsufficientIDs) as err:
        apply_layer(io.BytesIO(data), str(tmp_path), ApplyOptions())
    assert str(err.value) == GO_TEXT.format(ids="70000:70000", path="/x/big", op="lchown")
    # ignore_chown_errors: applied, owner left alone.
    (tmp_path / "again").mkdir()
    apply_layer(io.BytesIO(data), str(tmp_path / "again"), ApplyOptions(ignore_chown_errors=True))
    assert (tmp_path / "again" / "x" / "big").stat().st_uid == os.geteuid()


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_the_cli_reports_it_as_gos_drivers_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               driver: str) -> None:
    if driver == "overlay" and os.geteuid() != 0:
        pytest.skip("kernel overlay needs root")
    from clitools import run_inprocess

    monkeypatch.setattr(apply_mod, "_fastapply", None)
    monkeypatch.setattr(os, "fchown", _einval_for(70000))
    tar = tmp_path / "big.tar"
    tar.write_bytes(_tar(("big", "file", 70000, 70000)))
    store = ["--graph", str(tmp_path / "root"), "--run", str(tmp_path / "run"), "--storage-driver", driver]
    try:
        result = run_inprocess([*store, "import-layer", "-f", str(tar)])
        inner = GO_TEXT.format(ids="70000:70000", path="/big", op="lchown")
        assert result.code == 1 and result.out == ""
        if driver == "overlay":
            assert result.err == f"unpacking failed (error: exit status 1; output: {inner})\n"
        else:
            outer = f"ApplyLayer stdout:  stderr: {inner} exit status 1"
            lines = result.err.splitlines()
            assert lines[0].startswith('time="') and lines[0].endswith(
                f" level=error msg={json.dumps('While applying layer: ' + outer)}")
            assert lines[1:] == [outer]
        assert run_inprocess([*store, "layers"]).out == ""
    finally:
        run_inprocess([*store, "shutdown"])


@pytest.mark.skipif(os.geteuid() != 0, reason="the overlay driver's probes mount")
def test_rootless_overlay_over_a_network_file_system(rootless: None, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from containers_storage import lazylog
    from containers_storage.drivers import overlay_probe
    from containers_storage.drivers.base import DriverOptions
    from containers_storage.drivers.overlay import OverlayDriver
    from containers_storage.errors import DriverError

    monkeypatch.setattr(overlay_probe, "backing_fs", lambda home, mounts=None: (0x6969, "nfs"))
    warnings: list[str] = []
    monkeypatch.setattr(lazylog, "sink", lambda level, text: warnings.append(f"{level}: {text}"))
    root, run = str(tmp_path / "root"), str(tmp_path / "run")
    with pytest.raises(DriverError) as err:
        OverlayDriver(DriverOptions(root, run, options=["overlay.skip_mount_home=true"]))
    assert str(err.value) == ("a network file system with user namespaces is not supported.  Please "
                              "use a mount_program: backing file system is unsupported for this "
                              "graph driver")
    # With a mount program, Go forces the mask (files cannot belong to the namespace's IDs there).
    driver = OverlayDriver(DriverOptions(root, run, options=[
        "overlay.skip_mount_home=true", "overlay.mount_program=/usr/bin/fuse-overlayfs"]))
    assert driver.options.force_mask == 0o700
    assert warnings == ["warning: Network file system detected as backing store.  Enforcing overlay "
                        'option `force_mask="700"`.  Add it to storage.conf to silence this warning']
    with pytest.raises(DriverError) as err:
        OverlayDriver(DriverOptions(root, run, options=[
            "overlay.skip_mount_home=true", "overlay.mount_program=/usr/bin/fuse-overlayfs",
            "overlay.use_composefs=true"]))
    assert str(err.value) == "composefs is not supported in user namespaces"
