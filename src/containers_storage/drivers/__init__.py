"""Graph driver registry: names map to classes, imported only when chosen."""

from __future__ import annotations

import os

from ..errors import DriverError
from .base import Driver, DriverOptions, DriverUnsupported

# name -> (module, class); "overlay2" is Go's alias for overlay.  zfs only says why it cannot
# work here (it needs a kernel module and tools); aufs is left out, as current Go leaves it out.
_REGISTRY: dict[str, tuple[str, str]] = {
    "vfs": (".vfs", "VfsDriver"),
    "overlay": (".overlay", "OverlayDriver"),
    "overlay2": (".overlay", "OverlayDriver"),
    "btrfs": (".btrfs", "BtrfsDriver"),
    "zfs": (".zfs", "ZfsDriver"),
}

# Go's priority list (drivers.Priority on Linux) when neither a driver nor storage.conf's
# driver_priority is given; aufs is not built in.
PRIORITY = ("overlay", "btrfs", "zfs", "vfs")
# Driver homes Go recognizes as a prior driver's state (every registered name).
_PRIOR = ("aufs", "btrfs", "overlay", "overlay2", "vfs", "zfs")


def new_driver(name: str, options: DriverOptions) -> Driver:
    """Instantiate ``name``, or pick one as Go's drivers.New does.

    Without a name: a driver whose home already exists in the graph root wins, in priority
    order (``options.priority``, storage.conf's ``driver_priority``, else Go's list, where vfs
    is only taken this way when the configured list names it) — unless several homes exist,
    which is an error.  Otherwise the first driver of the list that works here; one that cannot
    (not supported, wrong file system) is skipped, any other failure is reported.

    A rootless process must be in a user namespace first (``UserNamespaceRequired`` otherwise):
    every driver owns its directories as the namespace's root and mounts.
    """
    from ..userns import require_user_namespace

    require_user_namespace(f"setting up the {name or 'storage'} driver in {options.root}")
    if name:
        return _load(name, options)
    configured = list(options.priority)
    order = configured or list(PRIORITY)
    prior = [d for d in _PRIOR if os.path.exists(os.path.join(options.root, d))]
    for candidate in order:
        if candidate == "vfs" and not configured:
            continue  # Go never picks vfs state by itself: it may be left over from a test
        if candidate in prior:
            driver = _load(candidate, options)  # prior state that no longer works is an error
            if len(prior) > 1:
                raise DriverError(f"{options.root} contains several valid graphdrivers: "
                                  f"{', '.join(prior)}; Please cleanup or explicitly choose storage "
                                  "driver (-s <DRIVER>)")
            return driver
    for candidate in order:
        try:
            return _load(candidate, options)
        except DriverError as e:
            if DriverUnsupported.describes(e):
                continue
            raise
    raise DriverError("no supported storage backend found")


def _load(name: str, options: DriverOptions) -> Driver:
    # Go's drivers.GetDriver text: "failed to GetDriver graph <name> <root>: driver not supported".
    unsupported = f"failed to GetDriver graph {name} {options.root}: driver not supported"
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        raise DriverUnsupported(unsupported) from None
    try:
        # __import__ rather than importlib.import_module: importlib costs start-up time.
        module = __import__(module_name.lstrip("."), globals(), None, [class_name], 1)
    except ModuleNotFoundError:
        raise DriverUnsupported(unsupported) from None
    cls = getattr(module, class_name)
    driver: Driver = cls(options)
    return driver
