"""``load`` and ``save``: podman's image commands over :mod:`containers_storage.transport`.

``load -i INPUT`` prints ``Loaded image: NAME`` for each name (``sha256:<id>`` for an unnamed
image) as podman does; ``save -o OUTPUT IMAGE...`` writes a docker archive by default (podman's
default), or ``--format oci-dir|oci-archive``.  Progress goes to stderr on a terminal only.
Errors print their text and exit 1, with the store unchanged.
"""

from __future__ import annotations

from .base import CommandError, Context


def load(ctx: Context, args: list[str]) -> int:
    from ..errors import StorageError
    from ..transport import load as load_images
    from ..transport.common import Platform
    from ..transport.progress import terminal_progress

    path = ctx.text("input")
    if not path:
        raise CommandError("load: an input is required (-i INPUT)")
    platform = None
    if ctx.text("platform"):
        try:
            platform = Platform.parse(ctx.text("platform"))
        except ValueError as e:
            raise CommandError(f"load: {e}") from None
    progress = terminal_progress(quiet=ctx.flag("quiet") or ctx.json)
    try:
        loaded = load_images(ctx.store, path, platform=platform, progress=progress)
    except FileNotFoundError as e:
        raise CommandError(f"load: {path}: {e.strerror or e}") from None
    except StorageError as e:  # TransportError, DigestMismatch, InvalidArchive, ...
        raise CommandError(f"load: {e}") from None
    if ctx.json:
        ctx.out.json([{"id": l.id, "names": l.names} for l in loaded])
        return 0
    lines = []
    for image in loaded:
        for name in image.names or [image.reference]:
            lines.append(f"Loaded image: {name}\n")
    ctx.out.out("".join(lines))
    return 0


def save(ctx: Context, args: list[str]) -> int:
    from ..errors import StorageError
    from ..transport import FORMATS
    from ..transport import save as save_images
    from ..transport.progress import terminal_progress

    output = ctx.text("output")
    if not output:
        raise CommandError("save: an output is required (-o OUTPUT)")
    fmt = ctx.text("format") or "docker-archive"
    if fmt not in FORMATS:
        raise CommandError(f"save: unsupported format {fmt!r} (oci-dir, oci-archive, docker-archive)")
    compression = ctx.text("compression") or "gzip"
    if compression not in ("gzip", "zstd", "none"):
        raise CommandError(f"save: unknown compression {compression!r} (gzip, zstd, none)")
    progress = terminal_progress(quiet=ctx.flag("quiet"))
    try:
        save_images(ctx.store, args, output, format=fmt, compression=compression, progress=progress)
    except StorageError as e:
        raise CommandError(f"save: {e}") from None
    return 0
