"""Shared fixtures: a fresh store per test, and the Go reference CLI when installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loopfs import btrfs_mount, on_loop_fs, xfs_mount, xfs_pquota_mount  # noqa: F401 - shared fixtures


@pytest.fixture
def store_dirs(tmp_path: Path) -> tuple[str, str]:
    root = tmp_path / "root"
    run = tmp_path / "run"
    return str(root), str(run)


@pytest.fixture
def store(store_dirs: tuple[str, str]) -> Iterator[object]:
    from containers_storage.config import StoreOptions
    from containers_storage.store import get_store

    root, run = store_dirs
    s = get_store(StoreOptions(graph_root=root, run_root=run, driver_name="vfs"))
    yield s
    s.free()
