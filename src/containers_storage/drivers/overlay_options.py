"""The ``overlay.*`` storage options, parsed and checked as Go's overlay driver does.

An unknown key is an error rather than ignored, so a typo in storage.conf is noticed.
"""

from __future__ import annotations

import os
import stat

from .. import TYPE_CHECKING
from ..errors import DriverError

if TYPE_CHECKING:
    from collections.abc import Sequence


def _parse_bool(value: str) -> bool:
    v = value.strip()
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise DriverError(f'strconv.ParseBool: parsing "{value}": invalid syntax')


_SIZE_PATTERN = r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$"
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(value: str) -> int:
    """Parse "10G", "512m", "100" with binary units (Go's units.RAMInBytes)."""
    import re  # only quota options need it

    match = re.match(_SIZE_PATTERN, value)
    if not match:
        raise DriverError(f"invalid size: '{value}'")
    try:
        number = float(match.group(1))
    except ValueError:
        raise DriverError(f"invalid size: '{value}'") from None
    unit = (match.group(2) or "").lower()
    return int(number * _UNITS.get(unit, 1))


class OverlayOptions:
    """The ``overlay.*`` storage options (Go's overlayOptions); a plain class, as dataclasses
    costs the CLI ~10 ms of start-up."""

    def __init__(self) -> None:
        self.image_stores: list[str] = []
        self.layer_stores: list[tuple[str, bool]] = []
        self.quota_size = 0
        self.quota_inodes = 0
        self.mount_program = ""
        self.skip_mount_home = False
        self.mount_options = ""
        self.ignore_chown_errors = False
        self.force_mask: int | None = None
        self.use_composefs = False


def parse_options(options: Sequence[str]) -> OverlayOptions:
    """Parse ``--storage-opt`` values; an unknown key is an error, as in Go."""
    o = OverlayOptions()
    for option in options:
        key, sep, val = option.partition("=")
        if not sep:
            raise DriverError(f"unable to parse key/value option: {option}")
        key = key.strip()
        trimmed = key.lower()
        for prefix in ("overlay.", "overlay2.", "."):
            if trimmed.startswith(prefix):
                trimmed = trimmed[len(prefix):]
                break
        if trimmed == "override_kernel_check":
            continue
        if trimmed == "mountopt":
            o.mount_options = val
        elif trimmed == "size":
            o.quota_size = ram_in_bytes(val)
        elif trimmed == "inodes":
            if not val.isdigit():
                raise DriverError(f'strconv.ParseUint: parsing "{val}": invalid syntax')
            o.quota_inodes = int(val)
        elif trimmed in ("imagestore", "additionalimagestore"):
            for store in (s for s in val.split(",") if s):
                store = os.path.normpath(store)
                if not os.path.isabs(store):
                    raise DriverError(f'overlay: image path "{store}" is not absolute.  Can not be relative')
                try:
                    st = os.stat(store)
                except OSError as e:
                    raise DriverError(f"overlay: can't stat imageStore dir {store}: {e}") from e
                if not stat.S_ISDIR(st.st_mode):
                    raise DriverError(f'overlay: image path "{store}" must be a directory')
                o.image_stores.append(store)
        elif trimmed == "additionallayerstore":
            for spec in (s for s in val.split(",") if s):
                elems = spec.split(":")
                path = os.path.normpath(elems[0])
                if not os.path.isabs(path):
                    raise DriverError(f'overlay: additionallayerstore path "{path}" is not absolute.  '
                                      "Can not be relative")
                if not os.path.isdir(path):
                    raise DriverError(f'overlay: additionallayerstore path "{path}" must be a directory')
                with_ref = False
                for elem in elems[1:]:
                    if elem != "ref" or with_ref:
                        raise DriverError(f'overlay: additionallayerstore config "{path}" contains '
                                          f'unknown option "{elem}"')
                    with_ref = True
                o.layer_stores.append((path, with_ref))
        elif trimmed == "use_composefs":
            o.use_composefs = _parse_bool(val)
        elif trimmed == "mount_program":
            if val and not os.path.exists(val):
                raise DriverError(f'overlay: can\'t stat program "{val}": stat {val}: '
                                  "no such file or directory")
            o.mount_program = val
        elif trimmed == "skip_mount_home":
            o.skip_mount_home = _parse_bool(val)
        elif trimmed == "ignore_chown_errors":
            o.ignore_chown_errors = _parse_bool(val)
        elif trimmed == "force_mask":
            if val == "shared":
                o.force_mask = 0o755
            elif val == "private":
                o.force_mask = 0o700
            else:
                try:
                    o.force_mask = int(val, 8)
                except ValueError:
                    raise DriverError(f'strconv.ParseInt: parsing "{val}": invalid syntax') from None
        else:
            raise DriverError(f"overlay: unknown option {key}")
    return o
