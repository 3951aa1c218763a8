"""Automatic user namespaces: ID ranges for a container that no other container uses.

A container created with :class:`AutoUserNsOptions` (podman's ``--userns=auto``, Go's
``ContainerOptions.AutoUserNs``) gets a UID and a GID map chosen by the store:

- the IDs it may use are, for root, the ranges ``/etc/subuid`` and ``/etc/subgid`` grant the user
  named by storage.conf's ``root-auto-userns-user`` (by default ``containers``); for a rootless
  user, the user's own ranges as they appear inside the user's namespace, ``1..N``;
- minus the host IDs that any existing container's ``uidmap``/``gidmap`` uses (whoever made it:
  podman, Go's tools or us) and any additional mappings asked for;
- of which the lowest free IDs are taken (first fit, possibly from several ranges).

The size is the one asked for; otherwise the largest of ``auto-userns-min-size`` (1024), the
options' ``initial_size`` and the IDs the image needs (the layers' recorded owners and the users
and groups of its ``/etc/passwd`` and ``/etc/group``), refused above ``auto-userns-max-size``
(65536).  The store holds ``userns.lock`` around the whole container creation, so two processes
(ours or Go's) never pick the same range.
"""

from __future__ import annotations

import os

from . import TYPE_CHECKING, errors
from .idset import IDSet
from .idtools import IDMap

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import BinaryIO

    from .layers import LayerStore, ROLayerStore
    from .records import Container, Image

#: Go's AutoUserNsMinSize, AutoUserNsMaxSize and RootAutoUserNsUser.
DEFAULT_MIN_SIZE = 1024
DEFAULT_MAX_SIZE = 65536
DEFAULT_ROOT_USER = "containers"
#: The ID of "nobody"/"nogroup", which most images list and which would otherwise make nearly
#: every namespace 65535 IDs large; Go leaves it out of the size, and so do we.
NOBODY_ID = 65534

SUBUID_FILE = "/etc/subuid"
SUBGID_FILE = "/etc/subgid"


class AutoUserNsOptions:
    """How to size and place a container's automatic user namespace (Go's AutoUserNsOptions).

    ``size``: exactly this many IDs when above 0 (the maximum size does not apply then).
    ``initial_size``: at least this many IDs when the size is worked out from the image.
    ``passwd_file`` / ``group_file``: host paths read instead of the image's ``/etc/passwd`` and
    ``/etc/group`` (e.g. when a volume provides them).
    ``additional_uid_maps`` / ``additional_gid_maps``: maps added as they are; their host IDs are
    not handed out and their container IDs are left out of the automatic part.
    """

    __slots__ = ("additional_gid_maps", "additional_uid_maps", "group_file", "initial_size",
                 "passwd_file", "size")

    def __init__(self, size: int = 0, initial_size: int = 0, passwd_file: str = "",
                 group_file: str = "", additional_uid_maps: Sequence[IDMap] | None = None,
                 additional_gid_maps: Sequence[IDMap] | None = None) -> None:
        for name, value in (("size", size), ("initial_size", initial_size)):
            if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"AutoUserNsOptions.{name} must be an integer in 0..4294967295, "
                                 f"not {value!r}")
        self.size = size
        self.initial_size = initial_size
        self.passwd_file = passwd_file
        self.group_file = group_file
        self.additional_uid_maps: list[IDMap] = [IDMap(*m) for m in additional_uid_maps or ()]
        self.additional_gid_maps: list[IDMap] = [IDMap(*m) for m in additional_gid_maps or ()]

    def __repr__(self) -> str:
        """``AutoUserNsOptions(size=...)`` with the fields that are set."""
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if getattr(self, k))
        return f"AutoUserNsOptions({fields})"


# -- which IDs may be used ---------------------------------------------------------------------
def _warn(message: str) -> None:
    import logging

    logging.getLogger("containers_storage").error("%s", message)


def _sub_ids(user: str, subuid_file: str, subgid_file: str) -> tuple[IDSet, IDSet]:
    """The host IDs the two files grant ``user`` (by name or numeric ID), as Go's NewIDMappings
    reads them; both sets empty (and the reason logged, as Go logs it) when either grants none."""
    from .userns import parse_subid_file

    uid_text = ""  # an entry may name the user's UID instead; Go matches it in both files
    try:
        import pwd

        uid_text = str(pwd.getpwnam(user).pw_uid)
    except (KeyError, ImportError):
        pass
    try:
        uids = parse_subid_file(subuid_file, user, uid_text)
        if not uids:
            raise ValueError(f"no subuid ranges found for user {_go_q(user)} in {subuid_file}")
        gids = parse_subid_file(subgid_file, user, uid_text)
        if not gids:
            raise ValueError(f"no subgid ranges found for group {_go_q(user)} in {subgid_file}")
    except (OSError, ValueError) as e:
        text = (f"open {e.filename}: {(e.strerror or '').lower()}"
                if isinstance(e, OSError) and e.filename else str(e))
        _warn(f"Cannot find mappings for user {_go_q(user)}: {text}")
        return IDSet(), IDSet()
    return (IDSet((start, start + size) for start, size in uids),
            IDSet((start, start + size) for start, size in gids))


def _rootless_user_name() -> str:
    """Whose ranges a rootless process uses: ``$USER``, else the name of the real user."""
    name = os.environ.get("USER", "")
    if name:
        return name
    from .userns import rootless_uid

    uid = rootless_uid() if os.geteuid() == 0 else os.geteuid()
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return ""


def available_ids(root_user: str = "", rootless: bool | None = None,
                  subuid_file: str | None = None, subgid_file: str | None = None
                  ) -> tuple[IDSet, IDSet]:
    """The UIDs and GIDs automatic namespaces may be built from (Go's getAvailableIDs).

    Root: the host ranges granted ``root_user`` (``root-auto-userns-user``, default
    ``containers``).  Rootless (``rootless`` defaults to :func:`userns.is_rootless`): the
    current user's ranges renumbered as its namespace sees them, ``1 .. N`` (``root_user`` does
    not apply: a rootless user can only use its own entries).  Empty sets when nothing is granted.
    The files default to this module's ``SUBUID_FILE`` and ``SUBGID_FILE``.
    """
    if rootless is None:
        from .userns import is_rootless

        rootless = is_rootless()
    user = _rootless_user_name() if rootless else (root_user or DEFAULT_ROOT_USER)
    uids, gids = _sub_ids(user, subuid_file or SUBUID_FILE, subgid_file or SUBGID_FILE)
    if not rootless:
        return uids, gids
    # Inside the namespace the user's own ID is 0 and the subordinate ranges follow it.
    return IDSet([(1, uids.size() + 1)]), IDSet([(1, gids.size() + 1)])


# -- how many IDs the image needs --------------------------------------------------------------
_MAX_SCAN_LINE = 64 * 1024  # Go's bufio.Scanner token limit, which its passwd parser uses


def _go_atoi(field: bytes) -> int:
    """strconv.Atoi as Go's passwd/group parser uses it: errors give 0, overflow saturates."""
    digits = field[1:] if field[:1] in (b"+", b"-") else field
    if not digits or not digits.isdigit():  # bytes.isdigit(): ASCII digits only
        return 0
    value = int(digits)
    if field[:1] == b"-":
        return max(-value, -(1 << 63))
    return min(value, (1 << 63) - 1)


def _lines(f: BinaryIO, limit: int) -> Iterable[tuple[bytes, bool]]:
    """Lines of ``f`` (without the newline), each cut at ``limit`` bytes: (line, was_cut)."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if line.endswith(b"\n"):
            yield line[:-1], False
            continue
        if len(line) <= limit:  # the last line, without a newline
            yield line, False
            return
        while True:  # skip the rest of an over-long line without holding it
            rest = f.readline(65536)
            if not rest or rest.endswith(b"\n"):
                break
        yield line[:limit], True


def passwd_size(f: BinaryIO) -> int:
    """One more than the largest UID or GID a passwd file lists, "nobody" left out.

    The file is read as Go's user.ParsePasswd reads it: a line of 64 KiB or more makes the whole
    file count for nothing, as Go's parser then fails.  (Go compares with ``>`` where ``>=`` is
    meant and so can leave the very largest ID out; we count it.)
    """
    size = 0
    for line, cut in _lines(f, _MAX_SCAN_LINE):
        if cut or len(line) >= _MAX_SCAN_LINE:
            return 0
        line = line.removesuffix(b"\r").strip()
        if not line:
            continue
        parts = line.split(b":")
        if parts[0] in (b"nobody", b"nogroup"):
            continue
        for field in parts[2:4]:
            value = _go_atoi(field)
            if value != NOBODY_ID:
                size = max(size, value + 1)
    return size


def group_size(f: BinaryIO) -> int:
    """One more than the largest GID a group file lists, "nobody"/"nogroup" left out."""
    size = 0
    for line, cut in _lines(f, _MAX_SCAN_LINE):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        parts = line.split(b":")
        if len(parts) < 3 or (cut and len(parts) < 4):
            continue  # the GID is missing, or it may go on past what we kept of the line
        if parts[0] in (b"nobody", b"nogroup"):
            continue
        value = _go_atoi(parts[2])
        if value != NOBODY_ID:
            size = max(size, value + 1)
    return size


def _open_in_root(root: str, path: str) -> BinaryIO | None:
    """Open ``path`` for reading as if ``root`` were ``/`` (symlinks and ``..`` cannot leave it);
    None unless that is a regular file: an image's FIFO or device must not block or be read."""
    import stat

    from .archive.confine import open_beneath, open_root

    try:
        root_fd = open_root(root)
    except OSError:
        return None
    try:
        fd = open_beneath(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    finally:
        os.close(root_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def user_files_size(root: str, passwd_file: str = "", group_file: str = "") -> int:
    """The namespace size the users and groups of a root filesystem need (Go's
    parseMountedFiles): its ``/etc/passwd`` and ``/etc/group``, opened beneath ``root``, or the
    given host files instead.  Files that are missing or unreadable count for nothing."""
    size = 0
    for given, inner, measure in ((passwd_file, "/etc/passwd", passwd_size),
                                  (group_file, "/etc/group", group_size)):
        f: BinaryIO | None
        if given:
            try:
                f = open(given, "rb")  # noqa: SIM115 - closed below
            except OSError:
                f = None
        else:
            f = _open_in_root(root, inner)
        if f is None:
            continue
        try:
            with f:
                size = max(size, measure(f))
        except OSError:
            pass
    return size


def image_size(image: Image, rl: LayerStore, ro_layer_stores: Sequence[ROLayerStore],
               passwd_file: str = "", group_file: str = "") -> int:
    """How many IDs ``image`` needs (Go's getMaxSizeFromImage).

    The owners its layers recorded (``uidset``/``gidset``) and the users and groups of its
    ``/etc/passwd`` and ``/etc/group``, read through a temporary layer over the top layer that is
    mounted, read and removed again.  Callers hold ``rl`` for writing and the others for reading.
    """
    from .drivers.base import MountOpts

    stores: list[ROLayerStore] = [rl, *ro_layer_stores]
    size = 0
    top = None
    name = image.top_layer
    while name:
        layer = None
        for store in stores:
            layer = store.lookup(name)
            if layer is not None:
                break
        if layer is None:
            raise errors.LayerUnknown(f"cannot find layer {_go_q(name)}", ref=name)
        if top is None:
            top = layer
        for id in (*layer.uids, *layer.gids):
            size = max(size, id + 1)
        name = layer.parent
    if top is None:
        return size  # a layerless image has no files (Go fails to find layer "" here)
    # The temporary layer keeps the top layer's maps: nothing is re-owned, and the contents of
    # the two files are all we read.
    temp, _ = rl.create("", top, [], "", None, False, uid_map=top.uid_map, gid_map=top.gid_map)
    try:
        mountpoint = rl.mount(temp.id, MountOpts(uid_map=top.uid_map, gid_map=top.gid_map))
        try:
            size = max(size, user_files_size(mountpoint, passwd_file, group_file))
        finally:
            try:
                rl.unmount(temp.id, force=True)
            except Exception as e:
                raise errors.StorageError(f"unmounting temporary layer {_go_q(temp.id)}: {e}") from e
    finally:
        try:
            rl.delete(temp.id)
        except Exception as e:
            raise errors.StorageError(f"deleting temporary layer {_go_q(temp.id)}: {e}") from e
    return size


# -- choosing the maps ---------------------------------------------------------------------------
def allocate(size: int, available_uids: IDSet, available_gids: IDSet,
             used_uid_maps: Sequence[IDMap], used_gid_maps: Sequence[IDMap],
             additional_uid_maps: Sequence[IDMap] = (), additional_gid_maps: Sequence[IDMap] = ()
             ) -> tuple[list[IDMap], list[IDMap]]:
    """The UID and GID maps of a new ``size``-ID namespace (Go's getAutoUserNSIDMappings).

    Container IDs ``0..size`` not covered by the additional maps are given the lowest host IDs
    that are available and neither used by an existing map nor by the additional ones; the
    additional maps follow as they are.  Raises :class:`errors.NoAvailableIDs` when too few
    IDs are free.
    """
    out: list[list[IDMap]] = []
    for available, used, extra in ((available_uids, used_uid_maps, additional_uid_maps),
                                   (available_gids, used_gid_maps, additional_gid_maps)):
        taken = IDSet.of_host_ids([*used, *extra])
        wanted = IDSet([(0, size)]) - IDSet.of_container_ids(extra)
        hosts = (available - taken).first(wanted.size())
        out.append([*hosts.zip(wanted), *extra])
    return out[0], out[1]


def used_maps(containers: Iterable[Container]) -> tuple[list[IDMap], list[IDMap]]:
    """Every UID and GID map the containers use."""
    uids: list[IDMap] = []
    gids: list[IDMap] = []
    for c in containers:
        uids.extend(c.uid_map)
        gids.extend(c.gid_map)
    return uids, gids


def namespace_size(options: AutoUserNsOptions, min_size: int, max_size: int,
                   image_needs: int = 0) -> int:
    """The size to allocate: the asked-for size, else the largest of ``min_size`` (0 for Go's
    1024), ``initial_size`` and what the image needs, refused (Go's text) above ``max_size``
    (0 for Go's 65536)."""
    if options.size > 0:
        return options.size
    min_size = min_size or DEFAULT_MIN_SIZE
    max_size = max_size or DEFAULT_MAX_SIZE
    size = max(min_size, options.initial_size or 1, image_needs)
    if size > max_size:
        raise errors.StorageError(
            f"the container needs a user namespace with size {size} that is bigger than the "
            f"maximum value allowed with userns=auto {max_size}")
    return size


def _go_q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = [
    "DEFAULT_MAX_SIZE", "DEFAULT_MIN_SIZE", "DEFAULT_ROOT_USER", "AutoUserNsOptions", "allocate",
    "available_ids", "group_size", "image_size", "namespace_size", "passwd_size", "used_maps",
    "user_files_size",
]
