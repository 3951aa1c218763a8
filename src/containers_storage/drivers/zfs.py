"""zfs: not implemented; says why it cannot be used, in Go's words where Go would refuse too.

Go's zfs driver needs the ``zfs`` tool and the kernel module's ``/dev/zfs``; without them it
refuses with these texts (a "wrong prerequisites" error, so choosing a driver by priority skips
it).  Where both exist, we still cannot: the error says so instead of pretending.
"""

from __future__ import annotations

import os

from .base import DriverOptions, DriverUnsupported


class ZfsDriver:
    name = "zfs"

    def __init__(self, options: DriverOptions) -> None:
        import shutil

        if shutil.which("zfs") is None:
            raise DriverUnsupported(f"the 'zfs' command is not available: {DriverUnsupported.prerequisites}")
        try:
            os.close(os.open("/dev/zfs", os.O_RDWR | os.O_CLOEXEC))
        except OSError as e:
            reason = os.strerror(e.errno or 0)
            raise DriverUnsupported(f"could not open /dev/zfs: {reason[:1].lower()}{reason[1:]}: "
                                    f"{DriverUnsupported.prerequisites}") from None
        raise DriverUnsupported(f"zfs in {os.path.join(options.root, 'zfs')}: this implementation has no "
                                f"zfs driver (use overlay, btrfs or vfs): {DriverUnsupported.text}")
