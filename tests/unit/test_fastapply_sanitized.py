"""The C accelerator under AddressSanitizer and UBSan: the equivalence suite and the hostile-tar
suite run in a child interpreter against an instrumented build of ``_fastapply.c``.

An out-of-bounds read of a header, a use-after-free of a cached fd object or an overflow in a
field conversion would not always change an outcome the other tests compare; the sanitizers
make any of them abort the child.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from containers_storage.archive import apply
from sanitizedtools import REPO, run_sanitized


def test_accelerator_clean_under_sanitizers(tmp_path: Path) -> None:
    if apply._fastapply is None:
        pytest.skip("the C accelerator is not built or is disabled")
    run_sanitized(REPO / "src" / "containers_storage" / "archive" / "_fastapply.c",
                  "containers_storage.archive._fastapply",
                  ["tests/unit/test_fastapply.py", "tests/security", "tests/unit/test_apply.py",
                   "tests/unit/test_confine.py"], tmp_path)
