"""Big data items of layers, images and containers, and the per-image/container directories.

get-* commands create their ``--file`` before looking the item up, as Go does, so a failed
lookup still leaves an empty file behind.
"""

from __future__ import annotations

import sys

from .. import TYPE_CHECKING
from ..store import Store  # loaded already: the command runs on an open store
from .base import CommandError, Context, go_os_error, read_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

    from ..records import Record


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


class _DataCommands:
    """The list/get/set data commands of one kind of record: the same code for layers, images
    and containers, over that kind's store calls."""

    __slots__ = ("_find", "_get", "_names", "_set")

    def __init__(self, find: Callable[[Store, str], Record], names: Callable[[Store, str], list[str]],
                 get: Callable[[Store, str, str], bytes],
                 set: Callable[[Store, str, str, bytes], None]) -> None:
        self._find = find
        self._names = names
        self._get = get
        self._set = set

    def list_data(self, ctx: Context, args: list[str]) -> int:
        record = self._find(ctx.store, args[0])
        return _list(ctx, self._names(ctx.store, record.id))

    def get_data(self, ctx: Context, args: list[str]) -> int:
        record = self._find(ctx.store, args[0])
        return _get(ctx, lambda: self._get(ctx.store, record.id, args[1]))

    def set_data(self, ctx: Context, args: list[str]) -> int:
        record = self._find(ctx.store, args[0])
        # The Go CLI digests image manifests with plain sha256 ("sometimes wrong digest"), as we do.
        self._set(ctx.store, record.id, args[1], _input(ctx))
        return 0


class _SizedDataCommands(_DataCommands):
    """With get-*-data-size and get-*-data-digest, which images and containers have."""

    __slots__ = ("_digest", "_size")

    def __init__(self, find: Callable[[Store, str], Record], names: Callable[[Store, str], list[str]],
                 get: Callable[[Store, str, str], bytes], set: Callable[[Store, str, str, bytes], None],
                 size: Callable[[Store, str, str], int], digest: Callable[[Store, str, str], str]) -> None:
        super().__init__(find, names, get, set)
        self._size = size
        self._digest = digest

    def data_size(self, ctx: Context, args: list[str]) -> int:
        record = self._find(ctx.store, args[0])
        ctx.out.out(f"{self._size(ctx.store, record.id, args[1])}\n")
        return 0

    def data_digest(self, ctx: Context, args: list[str]) -> int:
        record = self._find(ctx.store, args[0])
        return _print_digest(ctx, self._digest(ctx.store, record.id, args[1]))


def _print_line(ctx: Context, text: str) -> int:
    ctx.out.out(text + "\n")
    return 0


# -- layers -------------------------------------------------------------------------------------
_layers = _DataCommands(Store.layer, Store.list_layer_big_data, Store.layer_big_data,
                        Store.set_layer_big_data)
list_layer_data = _layers.list_data
get_layer_data = _layers.get_data
set_layer_data = _layers.set_data


# -- images -------------------------------------------------------------------------------------
_images = _SizedDataCommands(Store.image, Store.list_image_big_data, Store.image_big_data,
                             Store.set_image_big_data, Store.image_big_data_size, Store.image_big_data_digest)
list_image_data = _images.list_data
get_image_data = _images.get_data
set_image_data = _images.set_data
get_image_data_size = _images.data_size
get_image_data_digest = _images.data_digest


def get_image_dir(ctx: Context, args: list[str]) -> int:
    return _print_line(ctx, ctx.store.image_directory(args[0]))


def get_image_run_dir(ctx: Context, args: list[str]) -> int:
    return _print_line(ctx, ctx.store.image_run_directory(args[0]))


# -- containers ---------------------------------------------------------------------------------
_containers = _SizedDataCommands(Store.container, Store.list_container_big_data, Store.container_big_data,
                                 Store.set_container_big_data, Store.container_big_data_size,
                                 Store.container_big_data_digest)
list_container_data = _containers.list_data
get_container_data = _containers.get_data
set_container_data = _containers.set_data
get_container_data_size = _containers.data_size
get_container_data_digest = _containers.data_digest


def get_container_dir(ctx: Context, args: list[str]) -> int:
    return _print_line(ctx, ctx.store.container_directory(args[0]))


def get_container_run_dir(ctx: Context, args: list[str]) -> int:
    return _print_line(ctx, ctx.store.container_run_directory(args[0]))
