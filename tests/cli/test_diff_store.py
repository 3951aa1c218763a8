"""Layer tarballs (import-layer, diff, changes, diffsize, applydiff) and store-wide commands."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest

from clitools import CLI


def _tar(files: dict[str, bytes], dirs: tuple[str, ...] = (), deleted: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        for name in deleted:
            head, _, tail = name.rpartition("/")
            info = tarfile.TarInfo(f"{head}/.wh.{tail}" if head else f".wh.{tail}")
            tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def test_import_diff_changes_roundtrip(cli: CLI, tmp_path: object) -> None:
    base_tar = _tar({"etc/hosts": b"127.0.0.1 localhost\n", "bin/tool": b"x" * 1000}, dirs=("etc", "bin"))
    result = cli.ok("import-layer", "-n", "base", stdin=gzip.compress(base_tar))
    base = result.lines[0]
    record = json.loads(cli.ok("layer", "--json", "base").out)[0]
    assert record["compression"] == 2 and record["diff-size"] == len(base_tar)
    # diff rebuilds the original tarball (uncompressed) byte for byte, from tar-split.
    assert cli.ok("diff", "-u", "base").raw == base_tar
    upper_tar = _tar({"etc/motd": b"hello\n"}, dirs=("etc",), deleted=("bin/tool",))
    path = os.path.join(str(tmp_path), "upper.tar")
    with open(path, "wb") as f:
        f.write(upper_tar)
    upper = cli.ok("import-layer", "-f", path, "--json", base).out
    upper_id = json.loads(upper)["id"]
    changes = json.loads(cli.ok("changes", "--json", upper_id).out)
    assert {"Path": "/etc/motd", "Kind": 1} in changes and {"Path": "/bin/tool", "Kind": 2} in changes
    text = cli.ok("changes", upper_id).lines
    assert 'Add "/etc/motd"' in text and 'Delete "/bin/tool"' in text
    assert cli.ok("diffsize", upper_id).out == "6\n"  # Go's ChangesSize: bytes of added/changed files
    out = os.path.join(str(tmp_path), "out.tar.gz")
    cli.ok("diff", "--gzip", "-f", out, upper_id)
    with open(out, "rb") as f:
        assert gzip.decompress(f.read()) == upper_tar


def test_junk_import_leaves_the_store_unchanged(cli: CLI) -> None:
    cli.new_layer("-n", "base")
    before = cli.snapshot()
    result = cli.fails("import-layer", "base", stdin=b"this is not a tarball" * 100)
    assert result.err
    assert cli.snapshot() == before
    assert cli.fails("import-layer", "-f", "/nonexistent.tar").err == (
        "open /nonexistent.tar: no such file or directory\n")
    assert cli.snapshot() == before


def test_applydiff(cli: CLI) -> None:
    layer = cli.new_layer()
    cli.ok("applydiff", layer, stdin=_tar({"added": b"data"}))
    mount = cli.ok("mount", layer).out.strip()
    with open(os.path.join(mount, "added"), "rb") as f:
        assert f.read() == b"data"
    cli.ok("unmount", layer)
    assert cli.fails("applydiff", "nosuch", stdin=b"").err == "layer not known\n"


def test_applydiff_using_staging_dir_needs_partial_images(cli: CLI, tmp_path: object) -> None:
    # Go (1.60, 1.63) goes through a partial pull, which storage.conf must enable (the CLI's
    # explicit roots leave pull_options out, as Go's do); tests/unit/test_chunked_cli.py has more.
    layer = cli.new_layer()
    failed = cli.fails("applydiff-using-staging-dir", layer, str(tmp_path))
    assert failed.err == "partial images are disabled\n"


# -- store-wide -----------------------------------------------------------------------------------
def test_status_and_version_go_to_stderr(cli: CLI) -> None:
    result = cli.ok("status")
    assert result.out == "" and result.err.splitlines()[:4] == [
        f"Root: {cli.root}", f"Run Root: {cli.run_root}", "Driver Name: vfs", "Driver Options: []"]
    assert json.loads(cli.ok("status", "--json").out)[2] == ["Driver Name", "vfs"]
    assert cli.ok("version").err.startswith("Version: ")
    assert json.loads(cli.ok("version", "--json").out)[0][0] == "Version"


def test_shutdown(cli: CLI) -> None:
    layer = cli.new_layer()
    assert cli.ok("shutdown", "--json").out == '""\n'
    cli.ok("mount", layer)
    assert cli.fails("shutdown").err == "shutdown: a layer is mounted: layer is in use by a container\n"
    assert cli.fails("shutdown", "--json").out == "{}\n"
    cli.fails("shutdown", "-f")  # Go still reports the mounted layer after unmounting it
    assert cli.ok("mounted", layer).out == ""
    cli.ok("shutdown")


def test_gc_removes_leftovers(cli: CLI) -> None:
    layer = cli.new_layer()
    image = cli.ok("create-image", layer).lines[0]
    stray = "e" * 64
    os.makedirs(os.path.join(cli.root, "vfs-images", stray))
    os.makedirs(os.path.join(cli.root, "vfs", "dir", stray))
    assert set(cli.ok("storage-layers").lines) == {layer, stray}
    assert cli.ok("gc", "--json").out == '""\n'
    assert not os.path.exists(os.path.join(cli.root, "vfs-images", stray))
    assert cli.ok("storage-layers").lines == [layer]
    assert cli.ok("images", "-q").lines == [image]


def test_config_prints_storage_conf(cli_in: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = f"{cli_in.root}.conf"
    with open(conf, "w") as f:
        f.write('[storage]\ndriver = "vfs"\nrunroot = "/r"\ngraphroot = "/g"\n'
                '[storage.options]\nadditionalimagestores = ["/ro"]\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", conf)
    monkeypatch.delenv("STORAGE_OPTS", raising=False)
    monkeypatch.delenv("STORAGE_DRIVER", raising=False)
    result = cli_in.ok("config", conf)
    assert json.loads(result.out) == {"runroot": "/r", "root": "/g", "RootlessStoragePath": "",
                                      "driver": "vfs", "driver-options": ["vfs.imagestore=/ro"],
                                      "PullOptions": None}
    assert cli_in.fails("config", "/nonexistent.conf").err == (
        "reload: stat /nonexistent.conf: no such file or directory\n")
