"""Every hostile tarball runs against both resolvers: the kernel's openat2 and the portable walk."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest) -> Iterator[str]:
    from containers_storage.archive import confine

    if request.param == "openat2":
        confine.set_openat2_enabled(None)
        if not confine.have_openat2():
            pytest.skip("kernel has no openat2")
    else:
        confine.set_openat2_enabled(False)
    yield request.param
    confine.set_openat2_enabled(None)
