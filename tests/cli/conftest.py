"""Fixtures: one store driven through the CLI, in-process and as a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from clitools import CLI


@pytest.fixture(params=["inprocess", "script"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> CLI:
    """The CLI both ways: the in-process call and the installed console script."""
    return CLI(str(tmp_path / "root"), str(tmp_path / "run"), request.param)


@pytest.fixture
def cli_in(tmp_path: Path) -> CLI:
    return CLI(str(tmp_path / "root"), str(tmp_path / "run"), "inprocess")


@pytest.fixture
def cli_sub(tmp_path: Path) -> CLI:
    return CLI(str(tmp_path / "root"), str(tmp_path / "run"), "script")
