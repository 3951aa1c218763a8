"""pytest plugin (``-p asan_preload``): use the build of the C accelerator named by
``CS_SANITIZED_SO`` (compiled with AddressSanitizer/UBSan by test_fastapply_sanitized.py) in
place of the installed one, before anything imports it."""

from __future__ import annotations

import os
import sys
from importlib.machinery import ExtensionFileLoader
from importlib.util import module_from_spec, spec_from_loader

_NAME = "containers_storage.archive._fastapply"
_path = os.environ.get("CS_SANITIZED_SO")
if _path:
    _loader = ExtensionFileLoader(_NAME, _path)
    _spec = spec_from_loader(_NAME, _loader)
    assert _spec is not None
    _module = module_from_spec(_spec)
    _loader.exec_module(_module)
    sys.modules[_NAME] = _module
