"""A rootless user's every call reads storage.conf and enters a user namespace: neither may pull
in the heavy modules the everyday commands avoid (tests/cli/test_startup_imports.py)."""

from __future__ import annotations

from rootlesstools import VENV_PYTHON, User

HEAVY = frozenset({
    "typing", "re", "tomllib", "ctypes", "subprocess", "threading", "logging", "enum",
    "dataclasses", "shutil", "tempfile", "json",
})


def test_listing_as_a_rootless_user_imports_nothing_heavy(user: User) -> None:
    user.ours("layers")  # the first call sets the store up
    result = user.run([VENV_PYTHON, "-X", "importtime", str(user.install.cli), "layers"])
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "containers_storage.userns" in modules  # it did enter the namespace path
    assert "containers_storage.minitoml" in modules  # and read storage.conf
    assert not modules & HEAVY, sorted(modules & HEAVY)
