"""``load`` and ``save`` on the command line: podman's output lines, formats, progress only on a
terminal, errors with exit status 1."""

from __future__ import annotations

import io
import json
from pathlib import Path

from clitools import run_inprocess, run_script
from containers_storage.transport.progress import Progress, terminal_progress
from imagetools import five_layer_tars, make_layered_image, write_docker_archive, write_layout


def _store(tmp_path: Path) -> list[str]:
    return ["--graph", str(tmp_path / "root"), "--run", str(tmp_path / "run"), "--storage-driver", "vfs"]


def test_load_prints_podmans_lines_and_save_writes_each_format(tmp_path: Path) -> None:
    tars = five_layer_tars()
    one, two = make_layered_image(tars[:2]), make_layered_image(tars[:3])
    write_docker_archive(tmp_path / "d.tar", [(one, ["one:1", "quay.io/x/one:2"]), (two, [])])
    store = _store(tmp_path)
    result = run_script([*store, "load", "-i", str(tmp_path / "d.tar")])
    assert result.code == 0, result.err
    assert result.out == ("Loaded image: localhost/one:1\nLoaded image: quay.io/x/one:2\n"
                          f"Loaded image: sha256:{two.id}\n")
    assert result.err == ""  # no progress when stderr is not a terminal
    for fmt, out in (("oci-dir", "dir"), ("oci-archive", "a.tar"), ("docker-archive", "b.tar")):
        saved = run_inprocess([*store, "save", "--format", fmt, "-o", str(tmp_path / out), "one:1"])
        assert saved.code == 0, saved.err
        assert saved.out == "" and saved.err == ""
    other = _store(tmp_path / "other")
    result = run_inprocess([*other, "load", "--json", "-i", str(tmp_path / "dir")])
    assert json.loads(result.out) == [{"id": one.id, "names": ["localhost/one:1"]}]
    result = run_inprocess([*other, "load", "-q", "-i", str(tmp_path / "b.tar")])
    assert result.out == "Loaded image: localhost/one:1\n"
    result = run_inprocess([*store, "save", "-o", str(tmp_path / "both.tar"), "one:1", two.id[:12]])
    assert result.code == 0, result.err


def test_load_and_save_errors_exit_1(tmp_path: Path) -> None:
    store = _store(tmp_path)
    image = make_layered_image(five_layer_tars()[:1])
    write_layout(tmp_path / "oci", [(image, "x")])
    for argv, message in (
        (["load"], "load: an input is required"),
        (["load", "-i", str(tmp_path / "missing")], "load: "),
        (["load", "-i", str(tmp_path / "oci"), "--platform", "linux"], "load: invalid platform"),
        (["save", "nonesuch"], "save: an output is required"),
        (["save", "-o", str(tmp_path / "o"), "nonesuch"], "image not known"),
        (["save", "-o", str(tmp_path / "o"), "--format", "tarball", "x"], "save: unsupported format"),
    ):
        result = run_inprocess([*store, *argv])
        assert result.code == 1, argv
        assert message in result.err, (argv, result.err)


def test_progress_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert type(terminal_progress(io.StringIO())) is Progress
    assert type(terminal_progress(Terminal(), quiet=True)) is Progress
    stream = Terminal()
    progress = terminal_progress(stream)
    assert type(progress) is not Progress
    progress.start("image", 300)
    progress.layer_started("abc", 100)
    progress.layer_advanced("abc", 100)
    progress.layer_done("abc", "done")
    progress.layer_done("def", "exists")
    progress.finish()
    assert "abc" in stream.getvalue() and "def (exists)" in stream.getvalue()
