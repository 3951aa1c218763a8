"""``_tocmatch.c`` under AddressSanitizer and UBSan: its equivalence tests and the hostile
partial-pull suite run in a child interpreter against an instrumented build of it.

A read past a tar-split line or a header block, or a reference dropped once too often, would not
always change an outcome the other tests compare; the sanitizers make any of them abort the
child."""

from __future__ import annotations

from pathlib import Path

import pytest

from containers_storage.archive.chunked import toc
from sanitizedtools import REPO, run_sanitized


def test_tocmatch_clean_under_sanitizers(tmp_path: Path) -> None:
    if toc.accelerator() is None:
        pytest.skip("the _tocmatch extension is not built or is disabled")
    run_sanitized(REPO / "src" / "containers_storage" / "archive" / "chunked" / "_tocmatch.c",
                  "containers_storage.archive.chunked._tocmatch",
                  ["tests/unit/test_chunked_tocmatch.py", "tests/unit/test_chunked.py",
                   "tests/security/test_chunked_hostile.py"], tmp_path)
