"""copy: host paths or ``layer:/path`` sources into ``layer:/path`` (Go's copy command).

As Go's chrootarchive does, the source is archived and the archive unpacked by processes
chrooted into the layers, so symlinks inside a layer can never lead outside it.  Owners travel
as container IDs: a source layer's host IDs are mapped into the container through its ID
mappings, ``--chown`` replaces them, and the target layer's mappings take them to the host.
"""

from __future__ import annotations

import os

from .. import TYPE_CHECKING
from .base import CommandError, Context, go_error_text
from .flags import go_quote

if TYPE_CHECKING:
    import tarfile
    from collections.abc import Callable

    from ..idtools import IDMap

    Maps = tuple[list[IDMap], list[IDMap]]


def copy(ctx: Context, args: list[str]) -> int:
    from ..errors import StorageError

    owner: tuple[int, int] | None = None
    spec = ctx.text("chown")
    if spec:
        uid_text, sep, gid_text = spec.partition(":")
        if not sep:
            gid_text = uid_text
        owner = (_parse_id(uid_text, "UID"), _parse_id(gid_text, "GID"))
    store = ctx.store
    mounted: list[str] = []

    def resolve(location: str) -> tuple[str, str, Maps]:
        """(root to chroot into or "", path inside it, the layer's ID maps)."""
        layer_ref, sep, rel = location.partition(":")
        if not sep:
            return "", location, ([], [])
        try:
            layer = store.layer(layer_ref)
        except StorageError as e:
            raise CommandError(f"error finding layer {go_quote(layer_ref)}: {e}") from None
        try:
            root = store.mount(layer.id, mount_label=layer.mount_label)
        except StorageError as e:
            raise CommandError(f"error mounting layer {go_quote(layer.id)}: {e}") from None
        mounted.append(layer.id)
        return root, "/" + rel.lstrip("/"), (layer.uid_map, layer.gid_map)

    try:
        target_root, target, target_maps = resolve(args[-1])
        for source_spec in args[:-1]:
            source_root, source, source_maps = resolve(source_spec)
            shown_source = os.path.join(source_root, source.lstrip("/")) if source_root else source
            shown_target = os.path.join(target_root, target.lstrip("/")) if target_root else target
            failure = _copy_with_tar(source_root, source, source_maps, target_root, target, target_maps,
                                     owner)
            if failure:
                raise CommandError(f"error copying {go_quote(shown_source)} to {go_quote(shown_target)}: "
                                   f"{failure}")
    finally:
        for layer_id in reversed(mounted):
            try:
                store.unmount(layer_id)
            except Exception as e:
                ctx.out.err(f"error unmounting layer {go_quote(layer_id)}: {go_error_text(e)}\n")
    return 0


def _parse_id(text: str, what: str) -> int:
    if text.isascii() and text.isdigit() and int(text) <= 0xFFFFFFFF:
        return int(text)
    raise CommandError(f"bad {what}: strconv.ParseUint: parsing {go_quote(text)}: invalid syntax")


def _copy_with_tar(source_root: str, source: str, source_maps: Maps, target_root: str, target: str,
                   target_maps: Maps, owner: tuple[int, int] | None) -> str:
    """Archive ``source`` in one child and unpack it at ``target`` in another; "" on success."""
    read_fd, write_fd = os.pipe()
    err_read, err_write = os.pipe()
    writer = os.fork()
    if writer == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        os.close(err_read)
        _child(lambda: _write_tar(source_root, source, write_fd, owner, source_maps), err_write)
    reader = os.fork()
    if reader == 0:  # pragma: no cover - runs in the child
        os.close(write_fd)
        os.close(err_read)
        # Go's unpacking helper is a child process too; its failure reads so.
        _child(lambda: _extract_tar(target_root, target, read_fd, owner, target_maps), err_write,
               "unpacking failed (error: exit status 1; output: {})")
    os.close(read_fd)
    os.close(write_fd)
    os.close(err_write)
    with os.fdopen(err_read, "rb") as f:
        message = f.read().decode("utf-8", "replace")
    statuses = [os.waitpid(writer, 0)[1], os.waitpid(reader, 0)[1]]
    if message:
        return message.splitlines()[0]
    if any(statuses):
        return "copy failed"
    return ""


def _child(work: Callable[[], None], err_fd: int,
           form: str = "{}") -> None:  # pragma: no cover - runs in a forked child
    code = 0
    try:
        work()
    except BaseException as e:
        text = go_error_text(e) if isinstance(e, Exception) else "interrupted"
        os.write(err_fd, (form.format(text) + "\n").encode("utf-8", "replace"))
        code = 1
    os._exit(code)


def _chroot(root: str) -> None:
    """Confine this child to ``root``, a layer's mount point ("" for a host path), as Go's
    chrootarchive does: called after the imports, which must come from the host."""
    if root:
        os.chroot(root)
        os.chdir("/")


def _write_tar(root: str, source: str, fd: int, owner: tuple[int, int] | None, maps: Maps) -> None:
    """Tar ``source`` with container IDs: ``owner`` if given, else mapped through ``maps``."""
    import tarfile

    from ..idtools import to_container

    _chroot(root)

    def adjust(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if owner is not None:
            info.uid, info.gid = owner
        elif maps[0] or maps[1]:
            info.uid, info.gid = to_container(info.uid, maps[0]), to_container(info.gid, maps[1])
        info.uname = info.gname = ""
        return info

    with os.fdopen(fd, "wb") as pipe, tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        os.lstat(source)
        if os.path.isdir(source) and not os.path.islink(source):
            tar.add(source, arcname=".", recursive=True, filter=adjust)
        else:
            tar.add(source, arcname=os.path.basename(source.rstrip("/")) or ".", recursive=False,
                    filter=adjust)


def _extract_tar(root: str, target: str, fd: int, owner: tuple[int, int] | None, maps: Maps) -> None:
    """Unpack at ``target``, container IDs (or ``owner``) taken to the host through ``maps``."""
    import tarfile

    from ..idtools import root_pair, to_host

    _chroot(root)

    def host_ids(member: tarfile.TarInfo) -> tarfile.TarInfo:
        if owner is not None:
            member.uid, member.gid = owner
        member.uid, member.gid = to_host(member.uid, maps[0]), to_host(member.gid, maps[1])
        return member

    with os.fdopen(fd, "rb") as pipe, tarfile.open(fileobj=pipe, mode="r|") as tar:
        members = iter(tar)
        first = next(members, None)
        if first is None:
            return
        if first.name == "." and first.isdir():
            # A directory: Go makes the missing part of the target path owned by the mapped
            # root (or, as Go does, by the unmapped --chown IDs) and leaves existing ones alone;
            # the source directory's own entry is not copied.
            try:
                ids = owner if owner is not None else root_pair(maps[0], maps[1])
            except Exception:
                ids = (-1, -1)
            _mkdir_all_chown_new(target, 0o755, ids)
            for member in members:
                tar.extract(host_ids(member), target, numeric_owner=True)
            return
        if target.endswith("/") or os.path.isdir(target):
            os.makedirs(target, exist_ok=True)
            tar.extract(host_ids(first), target, numeric_owner=True)
        else:
            directory = os.path.dirname(target) or "."
            os.makedirs(directory, mode=0o700, exist_ok=True)
            first.name = os.path.basename(target)
            tar.extract(host_ids(first), directory, numeric_owner=True)


def _mkdir_all_chown_new(path: str, mode: int, ids: tuple[int, int]) -> None:
    """Go's MkdirAllAndChownNew: create what is missing of ``path``, chowning only what is new."""
    missing: list[str] = []
    current = os.path.normpath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        os.chown(directory, *ids)
