"""``_removetree.c`` under AddressSanitizer and UBSan: the remove_tree tests run in a child
interpreter against an instrumented build of it (its threads share one work list, its nodes are
freed at the end: a use after free or a read past a name would abort the child)."""

from __future__ import annotations

from pathlib import Path

import pytest

from containers_storage import fsutil
from sanitizedtools import REPO, run_sanitized


def test_removetree_clean_under_sanitizers(tmp_path: Path) -> None:
    if fsutil._c_removetree() is None:
        pytest.skip("the _removetree extension is not built or is disabled")
    run_sanitized(REPO / "src" / "containers_storage" / "_removetree.c", "containers_storage._removetree",
                  ["tests/unit/test_fsutil_tree.py"], tmp_path)
