"""Shared fixtures: a fresh store per test, and the Go reference CLI when installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from loopfs import btrfs_mount, on_loop_fs, xfs_mount, xfs_pquota_mount  # noqa: F401 - shared fixtures

if TYPE_CHECKING:
    from containers_storage import Store


@pytest.fixture
def store_dirs(tmp_path: Path) -> tuple[str, str]:
    root = tmp_path / "root"
    run = tmp_path / "run"
    return str(root), str(run)


@pytest.fixture
def store(store_dirs: tuple[str, str]) -> Iterator[Store]:
    """A fresh vfs store in the test's directory (no storage.conf), closed afterwards."""
    from containers_storage import open_store

    root, run = store_dirs
    with open_store(graph_root=root, run_root=run, driver="vfs", use_config=False) as s:
        yield s
