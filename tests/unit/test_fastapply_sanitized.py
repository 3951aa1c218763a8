"""The C accelerator under AddressSanitizer and UBSan: the equivalence suite and the hostile-tar
suite run in a child interpreter against an instrumented build of ``_fastapply.c``.

An out-of-bounds read of a header, a use-after-free of a cached fd object or an overflow in a
field conversion would not always change an outcome the other tests compare; the sanitizers
make any of them abort the child.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from containers_storage.archive import apply

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src" / "containers_storage" / "archive" / "_fastapply.c"


def _runtime(name: str) -> str | None:
    """The path gcc links the sanitizer runtime from, or None without gcc or the runtime."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    out = subprocess.run([gcc, f"-print-file-name={name}"], capture_output=True, text=True,
                         check=False).stdout.strip()
    return out if os.path.isabs(out) and os.path.exists(out) else None


def test_accelerator_clean_under_sanitizers(tmp_path: Path) -> None:
    if apply._fastapply is None:
        pytest.skip("the C accelerator is not built or is disabled")
    asan, ubsan = _runtime("libasan.so"), _runtime("libubsan.so")
    if asan is None or ubsan is None:
        pytest.skip("gcc with libasan/libubsan is needed to build the instrumented module")
    so = tmp_path / ("_fastapply" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
         "-I", str(sysconfig.get_paths()["include"]), str(SOURCE), "-o", str(so)],
        check=True)
    env = dict(os.environ, CS_SANITIZED_SO=str(so), LD_PRELOAD=f"{asan} {ubsan}",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    env.pop("CONTAINERS_STORAGE_PURE_PYTHON", None)
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "asan_preload",
         "-x", "tests/unit/test_fastapply.py", "tests/security", "tests/unit/test_apply.py",
         "tests/unit/test_confine.py"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False)
    report = child.stdout[-4000:] + child.stderr[-4000:]
    assert "Sanitizer" not in report, report
    assert child.returncode == 0, report
    assert " passed" in child.stdout, report
