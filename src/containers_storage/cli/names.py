"""Names: get-names, add-names, remove-names, set-names.

The argument is resolved once (layers first, then images, then containers, as Go's Lookup does)
and the operation applies to whatever it named.
"""

from __future__ import annotations

from .base import Context


def get_names(ctx: Context, args: list[str]) -> int:
    store = ctx.store
    names = store.names(store.lookup(args[0]))
    if ctx.json:
        ctx.out.json(list(names))
    else:
        ctx.out.out("".join(name + "\n" for name in names))
    return 0


def _update(ctx: Context, args: list[str], op: str) -> int:
    store = ctx.store
    id = store.lookup(args[0])
    getattr(store, f"{op}_names")(id, ctx.strings("name"))
    names = store.names(id)
    if ctx.json:
        ctx.out.json(list(names) or None)  # Go's copy of an empty slice is nil: null
    return 0


def add_names(ctx: Context, args: list[str]) -> int:
    return _update(ctx, args, "add")


def remove_names(ctx: Context, args: list[str]) -> int:
    return _update(ctx, args, "remove")


def set_names(ctx: Context, args: list[str]) -> int:
    return _update(ctx, args, "set")
