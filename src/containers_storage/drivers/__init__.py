"""Graph driver registry: names map to classes, imported only when chosen."""

from __future__ import annotations

import os

from ..errors import DriverError
from .base import Driver, DriverOptions

# name -> (module, class); "overlay2" is Go's alias for overlay.
_REGISTRY: dict[str, tuple[str, str]] = {
    "vfs": (".vfs", "VfsDriver"),
    "overlay": (".overlay", "OverlayDriver"),
    "overlay2": (".overlay", "OverlayDriver"),
}

# Go's priority list when no driver is configured, restricted to what we implement.
PRIORITY = ("overlay", "vfs")


def new_driver(name: str, options: DriverOptions) -> Driver:
    """Instantiate ``name``, or pick one as Go does (an existing driver home first, then priority).

    A rootless process must be in a user namespace first (``UserNamespaceRequired`` otherwise):
    every driver owns its directories as the namespace's root and mounts.
    """
    from ..userns import require_user_namespace

    require_user_namespace(f"setting up the {name or 'storage'} driver in {options.root}")
    if name:
        return _load(name, options)
    for candidate in PRIORITY:
        if os.path.isdir(os.path.join(options.root, candidate)):
            try:
                return _load(candidate, options)
            except DriverError:
                continue
    errors: list[str] = []
    for candidate in PRIORITY:
        try:
            return _load(candidate, options)
        except DriverError as e:
            errors.append(f"{candidate}: {e}")
    raise DriverError("no supported storage backend found: " + "; ".join(errors))


def _load(name: str, options: DriverOptions) -> Driver:
    # Go's drivers.GetDriver text: "failed to GetDriver graph <name> <root>: driver not supported".
    unsupported = f"failed to GetDriver graph {name} {options.root}: driver not supported"
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        raise DriverError(unsupported) from None
    try:
        # __import__ rather than importlib.import_module: importlib costs start-up time.
        module = __import__(module_name.lstrip("."), globals(), None, [class_name], 1)
    except ModuleNotFoundError:
        raise DriverError(unsupported) from None
    cls = getattr(module, class_name)
    driver: Driver = cls(options)
    return driver
