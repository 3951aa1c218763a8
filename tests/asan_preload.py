"""pytest plugin (``-p asan_preload``): load the build of a C extension named by
``CS_SANITIZED_SO`` (compiled with AddressSanitizer/UBSan by :mod:`sanitizedtools`) as the module
``CS_SANITIZED_MODULE``, in place of the installed one, before anything imports it."""

from __future__ import annotations

import os
import sys
from importlib.machinery import ExtensionFileLoader
from importlib.util import module_from_spec, spec_from_loader

_path = os.environ.get("CS_SANITIZED_SO")
_name = os.environ.get("CS_SANITIZED_MODULE")
if _path and _name:
    _loader = ExtensionFileLoader(_name, _path)
    _spec = spec_from_loader(_name, _loader)
    assert _spec is not None
    _module = module_from_spec(_spec)
    _loader.exec_module(_module)
    sys.modules[_name] = _module
