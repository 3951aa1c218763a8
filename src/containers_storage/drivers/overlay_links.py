"""The ``l/`` directory: short names for layers, and repairing them the way Go does.

Every layer has a 26-character name in its ``link`` file and a symlink ``l/<name>`` ->
``../<id>/diff``; ``lower`` files list those names so mount data stays short.  A crash or a
careless ``rm`` can lose either half; ``recreate_symlinks`` rebuilds each from the other.
"""

from __future__ import annotations

import os

from .. import TYPE_CHECKING
from ..errors import DriverError

if TYPE_CHECKING:
    from collections.abc import Callable

LINK_DIR = "l"
ID_LENGTH = 26
_SKIP = ("l", "staging", "tempdirs")
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def generate_link_id() -> str:
    """A random 26-character base32 name for ``l/`` (Go's generateID(idLength))."""
    # The symbols of base32-encoded random bytes, without the base64 module's import.
    bits = int.from_bytes(os.urandom((ID_LENGTH * 5 + 7) // 8), "big")
    return "".join(_BASE32[(bits >> (5 * i)) & 31] for i in range(ID_LENGTH))


def write_file(path: str, data: bytes, mode: int) -> None:
    """Create or truncate ``path`` with ``mode`` under the umask (Go's os.WriteFile)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def recreate_symlinks(home: str, layer_dir: Callable[[str], str]) -> None:
    """Repair ``l/`` from the layers' ``link`` files and those files from ``l/``.

    ``layer_dir`` maps a layer ID to its directory (which may be in another store).
    """
    try:
        entries = list(os.scandir(home))
    except OSError as e:
        raise DriverError(f'reading driver home directory "{home}": {e}') from e
    link_dir = os.path.join(home, LINK_DIR)
    os.makedirs(link_dir, mode=0o755, exist_ok=True)
    errors: list[str] = []
    for _ in range(10):
        errors = []
        progress = False
        for entry in entries:
            if entry.name in _SKIP or not entry.is_dir(follow_symlinks=False):
                continue
            link_file = os.path.join(layer_dir(entry.name), "link")
            try:
                with open(link_file, encoding="utf-8") as f:
                    name = f.read().strip("\n")
            except OSError as e:
                errors.append(f'reading name of symlink for "{entry.name}": {e}')
                continue
            link_path = os.path.join(link_dir, name)
            if not os.path.lexists(link_path):
                try:
                    os.symlink(os.path.join("..", entry.name, "diff"), link_path)
                    progress = True
                except OSError as e:
                    errors.append(str(e))
        try:
            links = list(os.scandir(link_dir))
        except OSError as e:
            errors.append(str(e))
            continue
        for link in links:
            try:
                target = os.readlink(link.path)
            except OSError as e:
                errors.append(str(e))
                continue
            parts = target.split("/")
            if len(parts) != 3 or parts[0] != ".." or parts[2] != "diff":
                errors.append(f'link target of "{link.name}" looks weird: "{target}"')
                try:
                    os.unlink(link.path)
                    progress = True
                except FileNotFoundError:
                    pass
                except OSError as e:
                    errors.append(f'removing link "{link.name}": {e}')
                continue
            link_file = os.path.join(layer_dir(parts[1]), "link")
            try:
                with open(link_file, encoding="utf-8") as f:
                    current = f.read()
            except OSError:
                current = None
            if current != link.name:
                if not os.path.isdir(os.path.dirname(link_file)):
                    continue  # a dangling link to a removed layer: nothing to repair
                try:
                    write_file(link_file, link.name.encode(), 0o644)
                    progress = True
                except OSError as e:
                    errors.append(f"correcting link for layer {parts[1]}: {e}")
        if not progress:
            break
    if errors:
        raise DriverError("; ".join(errors))
