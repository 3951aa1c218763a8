"""Every hostile tarball runs against both resolvers (the kernel's openat2 and the portable walk)
and both apply paths (the C accelerator when built, and pure Python)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


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


@pytest.fixture(autouse=True, params=["accel", "pure"])
def apply_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The C loop applies plain entries (and confine's openat2) by default; "pure" takes it out,
    so confinement is proven for builds without a compiler too."""
    from containers_storage.archive import apply, confine

    if request.param == "accel":
        if getattr(apply, "_fastapply", None) is None:
            pytest.skip("the C accelerator (archive._fastapply) is not built or is disabled")
    else:
        monkeypatch.setattr(apply, "_fastapply", None, raising=False)
        make_ctypes = getattr(confine, "_ctypes_openat2", None)
        if make_ctypes is not None and getattr(confine, "_raw_openat2_impl", None) is not None:
            monkeypatch.setattr(confine, "_raw_openat2_impl", make_ctypes())
    return str(request.param)
