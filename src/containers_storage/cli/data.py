"""Big data items of layers, images and containers, and the per-image/container directories.

get-* commands create their ``--file`` before looking the item up, as Go does, so a failed
lookup still leaves an empty file behind.
"""

from __future__ import annotations

import sys

from .base import CommandError, Context, go_os_error, read_file

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO


def _list(ctx: Context, names: list[str]) -> int:
    if ctx.json:
        ctx.out.json(list(names) or None)  # Go returns a nil slice when there are none
    else:
        ctx.out.out("".join(name + "\n" for name in names))
    return 0


def _open_output(ctx: Context) -> BinaryIO | None:
    path = ctx.text("file")
    if not path:
        return None
    try:
        return open(path, "wb")
    except OSError as e:
        raise CommandError(go_os_error(e)) from None


def _write(ctx: Context, target: BinaryIO | None, data: bytes) -> None:
    if target is None:
        ctx.out.out_bytes(data)
        return
    with target:
        target.write(data)


def _input(ctx: Context) -> bytes:
    path = ctx.text("file")
    if path:
        return read_file(path)
    return sys.stdin.buffer.read()


def _get(ctx: Context, fetch: Callable[[], bytes]) -> int:
    """Open the -f output first (Go creates it even when the lookup then fails), then write."""
    target = _open_output(ctx)
    try:
        data = fetch()
    except BaseException:
        if target is not None:
            target.close()
        raise
    _write(ctx, target, data)
    return 0


def _print_digest(ctx: Context, value: str) -> int:
    from ..digest import validate

    validate(value)
    ctx.out.out(value + "\n")
    return 0


# -- layers -------------------------------------------------------------------------------------
def list_layer_data(ctx: Context, args: list[str]) -> int:
    layer = ctx.store.layer(args[0])
    return _list(ctx, ctx.store.list_layer_big_data(layer.id))


def get_layer_data(ctx: Context, args: list[str]) -> int:
    layer = ctx.store.layer(args[0])
    return _get(ctx, lambda: ctx.store.layer_big_data(layer.id, args[1]))


def set_layer_data(ctx: Context, args: list[str]) -> int:
    layer = ctx.store.layer(args[0])
    ctx.store.set_layer_big_data(layer.id, args[1], _input(ctx))
    return 0


# -- images -------------------------------------------------------------------------------------
def list_image_data(ctx: Context, args: list[str]) -> int:
    image = ctx.store.image(args[0])
    return _list(ctx, ctx.store.list_image_big_data(image.id))


def get_image_data(ctx: Context, args: list[str]) -> int:
    image = ctx.store.image(args[0])
    return _get(ctx, lambda: ctx.store.image_big_data(image.id, args[1]))


def get_image_data_size(ctx: Context, args: list[str]) -> int:
    image = ctx.store.image(args[0])
    ctx.out.out(f"{ctx.store.image_big_data_size(image.id, args[1])}\n")
    return 0


def get_image_data_digest(ctx: Context, args: list[str]) -> int:
    image = ctx.store.image(args[0])
    return _print_digest(ctx, ctx.store.image_big_data_digest(image.id, args[1]))


def set_image_data(ctx: Context, args: list[str]) -> int:
    image = ctx.store.image(args[0])
    data = _input(ctx)
    # The Go CLI digests manifests with plain sha256 ("sometimes wrong digest"), as we do.
    ctx.store.set_image_big_data(image.id, args[1], data)
    return 0


def get_image_dir(ctx: Context, args: list[str]) -> int:
    ctx.out.out(ctx.store.image_directory(args[0]) + "\n")
    return 0


def get_image_run_dir(ctx: Context, args: list[str]) -> int:
    ctx.out.out(ctx.store.image_run_directory(args[0]) + "\n")
    return 0


# -- containers ---------------------------------------------------------------------------------
def list_container_data(ctx: Context, args: list[str]) -> int:
    container = ctx.store.container(args[0])
    return _list(ctx, ctx.store.list_container_big_data(container.id))


def get_container_data(ctx: Context, args: list[str]) -> int:
    container = ctx.store.container(args[0])
    return _get(ctx, lambda: ctx.store.container_big_data(container.id, args[1]))


def get_container_data_size(ctx: Context, args: list[str]) -> int:
    container = ctx.store.container(args[0])
    ctx.out.out(f"{ctx.store.container_big_data_size(container.id, args[1])}\n")
    return 0


def get_container_data_digest(ctx: Context, args: list[str]) -> int:
    container = ctx.store.container(args[0])
    return _print_digest(ctx, ctx.store.container_big_data_digest(container.id, args[1]))


def set_container_data(ctx: Context, args: list[str]) -> int:
    container = ctx.store.container(args[0])
    ctx.store.set_container_big_data(container.id, args[1], _input(ctx))
    return 0


def get_container_dir(ctx: Context, args: list[str]) -> int:
    ctx.out.out(ctx.store.container_directory(args[0]) + "\n")
    return 0


def get_container_run_dir(ctx: Context, args: list[str]) -> int:
    ctx.out.out(ctx.store.container_run_directory(args[0]) + "\n")
    return 0
