"""The documentation: the API reference builds without a warning, and the tutorial runs."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_api_reference_builds_without_warnings(tmp_path: Path) -> None:
    # Not a skip: scripts/setup.sh installs the docs extra, and CI must build the reference.
    import importlib.util

    assert importlib.util.find_spec("sphinx"), "Sphinx is missing: pip install -e '.[docs]'"
    # -W turns every warning (a broken docstring, a missing page) into a failure; -E and a fresh
    # output directory make it a full build, as CI's.
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q",
                           "-b", "html", str(DOCS), str(tmp_path / "html")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    page = (tmp_path / "html" / "api.html").read_text()
    for name in ("store.open_store", "store.Store.put_layer", "store.PutLayerResult",
                 "nameops.NameOperation", "errors.NotKnown", "records.Layer"):
        assert f'id="containers_storage.{name}"' in page, name


def test_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # its temporary store goes in the test's directory
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    result = doctest.testfile(str(DOCS / "tutorial.rst"), module_relative=False,
                              optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 30
    assert result.failed == 0
