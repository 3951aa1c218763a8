"""Image commands: images, images-by-digest, image, create-image."""

from __future__ import annotations

from .. import TYPE_CHECKING
from .base import CommandError, Context, found, print_created, read_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..records import Image


def images(ctx: Context, args: list[str]) -> int:
    from .listing import images_json

    return _list_images(ctx, ctx.store.images(), images_json)


def images_by_digest(ctx: Context, args: list[str]) -> int:
    from ..digest import validate
    from .gojson import images_view

    matched: list[Image] = []
    for arg in args:
        validate(arg)
        matched.extend(ctx.store.images_by_digest(arg))
    return _list_images(ctx, matched, images_view)


def _list_images(ctx: Context, matched: list[Image],
                 view: Callable[[list[dict[str, Any]]], object]) -> int:
    """``images``' and ``images-by-digest``' output: Go's JSON view, or the listing."""
    from .listing import render_images

    if ctx.json:
        ctx.out.json(view([i.raw for i in matched]))
        return 0
    ctx.out.out(render_images([i.raw for i in matched], [i.digests for i in matched], ctx.flag("quiet")))
    return 0


def image(ctx: Context, args: list[str]) -> int:
    matched = found(args, ctx.store.image)
    if ctx.json:
        from .gojson import images_view

        ctx.out.json(images_view([m.raw for m in matched]))
        return 0 if len(matched) == len(args) else 1
    from .lookups import image_text

    for m in matched:
        ctx.out.out(image_text(m.raw, m.digests))
        try:
            ctx.out.out(f"Size: {ctx.store.image_size(m.id)}\n")
        except Exception as e:  # Go prints the reason and carries on
            from .base import go_error_text

            ctx.out.out(f"Size unknown: {go_error_text(e)}\n")
        if m.read_only:
            ctx.out.out("Read Only: true\n")
    return 0 if len(matched) == len(args) else 1


def create_image(ctx: Context, args: list[str]) -> int:
    metadata = ctx.text("metadata")
    if ctx.text("metadata_file"):
        metadata = read_file(ctx.text("metadata_file")).decode("utf-8", "replace")
    layer = args[0] if args else ""
    created = ctx.store.create_image(layer, id=ctx.text("id"), names=ctx.strings("name"),
                                     metadata=metadata, digest=ctx.text("digest"))
    return print_created(ctx, created)


__all__ = ["CommandError", "create_image", "image", "images", "images_by_digest"]
