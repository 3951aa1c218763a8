"""Compat tests run Go's tools (skopeo, podman, the Go CLI) on stores under ``tmp_path``.

Go's overlay driver bind-mounts its home (``<graphroot>/overlay``) on itself to make it private
and leaves that mount when the process exits (only ``Shutdown`` removes it), so each test's mounts
are detached afterwards: otherwise pytest cannot remove old temporary directories and warns.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivertools import mounts_under


@pytest.fixture(autouse=True)
def _detach_mounts_left_by_go_tools(tmp_path: Path) -> Iterator[None]:
    yield
    left = mounts_under(str(tmp_path))
    if left:
        libc = ctypes.CDLL(None, use_errno=True)
        for path in sorted(left, key=len, reverse=True):
            libc.umount2(os.fsencode(path), 2)  # MNT_DETACH: nothing in them is used any more
