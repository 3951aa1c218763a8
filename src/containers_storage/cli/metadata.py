"""metadata and set-metadata: the free-form string each layer, image and container carries."""

from __future__ import annotations

from .base import CommandError, Context, read_file
from .output import go_json_sorted


def metadata(ctx: Context, args: list[str]) -> int:
    from ..errors import StorageError

    found: dict[str, str] = {}
    missing = False
    for what in args:
        try:
            found[what] = ctx.store.metadata(what).removesuffix("\n")
        except StorageError:
            missing = True
    if ctx.json:
        ctx.out.out_bytes(go_json_sorted(found))
    elif ctx.flag("quiet"):
        ctx.out.out("".join(found.get(what, "") + "\n" for what in args))
    else:
        ctx.out.out("".join(f"{what}: {found.get(what, '')}\n" for what in args))
    return 1 if missing else 0


def set_metadata(ctx: Context, args: list[str]) -> int:
    value = ctx.text("metadata")
    path = ctx.text("metadata_file")
    if not path and not value:
        raise CommandError("no new metadata provided")
    if path:
        value = read_file(path).decode("utf-8", "replace")
    ctx.store.set_metadata(args[0], value)
    return 0
