"""``_tocmatch.c`` under AddressSanitizer and UBSan: its equivalence tests and the hostile
partial-pull suite run in a child interpreter against an instrumented build of it.

A read past a tar-split line or a header block, or a reference dropped once too often, would not
always change an outcome the other tests compare; the sanitizers make any of them abort the
child."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from containers_storage.archive.chunked import toc

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src" / "containers_storage" / "archive" / "chunked" / "_tocmatch.c"

# The child loads the instrumented module in place of the built one, then runs pytest.
_CHILD = """
import sys
from importlib.machinery import ExtensionFileLoader
from importlib.util import module_from_spec, spec_from_loader
name = "containers_storage.archive.chunked._tocmatch"
loader = ExtensionFileLoader(name, sys.argv[1])
module = module_from_spec(spec_from_loader(name, loader))
loader.exec_module(module)
sys.modules[name] = module
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-x", *sys.argv[2:]]))
"""


def _runtime(name: str) -> str | None:
    """The path gcc links the sanitizer runtime from, or None without gcc or the runtime."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    out = subprocess.run([gcc, f"-print-file-name={name}"], capture_output=True, text=True,
                         check=False).stdout.strip()
    return out if os.path.isabs(out) and os.path.exists(out) else None


def test_tocmatch_clean_under_sanitizers(tmp_path: Path) -> None:
    if toc.accelerator() is None:
        pytest.skip("the _tocmatch extension is not built or is disabled")
    asan, ubsan = _runtime("libasan.so"), _runtime("libubsan.so")
    if asan is None or ubsan is None:
        pytest.skip("gcc with libasan/libubsan is needed to build the instrumented module")
    so = tmp_path / ("_tocmatch" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
         "-I", str(sysconfig.get_paths()["include"]), str(SOURCE), "-o", str(so)],
        check=True)
    env = dict(os.environ, LD_PRELOAD=f"{asan} {ubsan}", ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    env.pop("CONTAINERS_STORAGE_PURE_PYTHON", None)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(so), "tests/unit/test_chunked_tocmatch.py",
         "tests/unit/test_chunked.py", "tests/security/test_chunked_hostile.py"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False)
    report = child.stdout[-4000:] + child.stderr[-4000:]
    assert "Sanitizer" not in report, report
    assert child.returncode == 0, report
    assert " passed" in child.stdout, report
