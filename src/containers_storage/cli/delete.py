"""Deleting: delete (no safety checks), delete-layer, delete-image, delete-container.

Each argument is tried independently; failures are collected and reported per argument (JSON: a
map from argument to error text, keys sorted as Go sorts map keys), and any failure means exit 1.
"""

from __future__ import annotations

from .. import TYPE_CHECKING
from .base import Context, go_error_text
from .output import go_json_sorted

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _each(ctx: Context, args: list[str], fn: Callable[[str], object]) -> int:
    results: dict[str, str] = {}
    for what in args:
        try:
            fn(what)
            results[what] = ""
        except Exception as e:
            results[what] = go_error_text(e)
    if ctx.json:
        ctx.out.out_bytes(go_json_sorted(results))
    else:
        ctx.out.err("".join(f"{what}: {err}\n" for what, err in results.items() if err))
    return 1 if any(results.values()) else 0


def delete(ctx: Context, args: list[str]) -> int:
    return _each(ctx, args, ctx.store.delete)


def delete_layer(ctx: Context, args: list[str]) -> int:
    return _each(ctx, args, ctx.store.delete_layer)


def delete_container(ctx: Context, args: list[str]) -> int:
    return _each(ctx, args, ctx.store.delete_container)


def delete_image(ctx: Context, args: list[str]) -> int:
    commit = not ctx.flag("test")
    results: dict[str, dict[str, Any]] = {}
    for what in args:
        record: dict[str, Any] = {}
        try:
            layers = ctx.store.delete_image(what, commit=commit)
            if layers:
                record["deleted-layers"] = layers
        except Exception as e:
            record["error"] = go_error_text(e)
        results[what] = record
    if ctx.json:
        ctx.out.out_bytes(go_json_sorted(results))
    else:
        lines: list[str] = []
        for what, record in results.items():
            if record.get("error"):
                lines.append(f"{what}: {record['error']}\n")
            else:
                lines += [f"{what}: {layer}\n" for layer in record.get("deleted-layers", ())]
        ctx.out.err("".join(lines))
    return 1 if any(r.get("error") for r in results.values()) else 0
