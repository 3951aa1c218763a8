"""Running a C extension's tests against a build of it instrumented with AddressSanitizer and
UBSan: an out-of-bounds read or a reference dropped once too often would not always change an
outcome the other tests compare; the sanitizers make any of them abort the child."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _runtime(name: str) -> str | None:
    """The path gcc links the sanitizer runtime from, or None without gcc or the runtime."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    out = subprocess.run([gcc, f"-print-file-name={name}"], capture_output=True, text=True,
                         check=False).stdout.strip()
    return out if os.path.isabs(out) and os.path.exists(out) else None


def run_sanitized(source: Path, module: str, tests: list[str], tmp_path: Path) -> None:
    """Build ``source`` instrumented, and run pytest on ``tests`` (paths from the repository's
    root) in a child that imports that build as ``module``; fail on any sanitizer report or
    failed test.  Skips without gcc and its sanitizer runtimes."""
    asan, ubsan = _runtime("libasan.so"), _runtime("libubsan.so")
    if asan is None or ubsan is None:
        pytest.skip("gcc with libasan/libubsan is needed to build the instrumented module")
    so = tmp_path / (module.rpartition(".")[2] + str(sysconfig.get_config_var("EXT_SUFFIX")))
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
         "-I", str(sysconfig.get_paths()["include"]), str(source), "-o", str(so)],
        check=True)
    env = dict(os.environ, CS_SANITIZED_SO=str(so), CS_SANITIZED_MODULE=module,
               LD_PRELOAD=f"{asan} {ubsan}", ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    env.pop("CONTAINERS_STORAGE_PURE_PYTHON", None)
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "asan_preload",
         "-x", *tests],
        cwd=REPO, env=env, capture_output=True, text=True, check=False)
    report = child.stdout[-4000:] + child.stderr[-4000:]
    assert "Sanitizer" not in report, report
    assert child.returncode == 0, report
    assert " passed" in child.stdout, report
