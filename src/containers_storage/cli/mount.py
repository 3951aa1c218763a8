"""mount, unmount, mounted: per-argument results, errors reported next to the argument."""

from __future__ import annotations

from .base import Context, go_error_text


def mount(ctx: Context, args: list[str]) -> int:
    label = ctx.text("label")
    results: list[dict[str, str]] = []
    for arg in args:
        path, error = "", ""
        try:
            if ctx.flag("read_only"):
                path = ctx.store.mount_image(arg, [], label)
            else:
                path = ctx.store.mount(arg, label)
        except Exception as e:
            error = go_error_text(e)
        results.append({"id": arg, "mountpoint": path, "error": error})
    if ctx.json:
        ctx.out.json(results)
    else:
        for r in results:
            if r["error"]:
                ctx.out.err(f"{r['error']} while mounting {r['id']}\n")
            ctx.out.out(r["mountpoint"] + "\n")
    return 1 if any(r["error"] for r in results) else 0


def unmount(ctx: Context, args: list[str]) -> int:
    force = ctx.flag("force")
    results: list[dict[str, str]] = []
    for arg in args:
        error = ""
        try:
            still_mounted = ctx.store.unmount(arg, force)
            if not still_mounted:
                ctx.out.out(f"{arg} mountpoint unmounted\n")
        except Exception as e:
            try:
                ctx.store.unmount_image(arg, force)
            except Exception:
                error = go_error_text(e)
        results.append({"id": arg, "error": error})
    if ctx.json:
        ctx.out.json(results)
    else:
        for r in results:
            if r["error"]:
                ctx.out.err(f"{r['error']} while unmounting {r['id']}\n")
    return 1 if any(r["error"] for r in results) else 0


def mounted(ctx: Context, args: list[str]) -> int:
    results: list[dict[str, str]] = []
    for arg in args:
        error = ""
        try:
            if ctx.store.mounted(arg) > 0:
                ctx.out.out(f"{arg} mounted\n")
        except Exception as e:
            error = go_error_text(e)
        results.append({"id": arg, "error": error})
    if ctx.json:
        ctx.out.json(results)
    else:
        for r in results:
            if r["error"]:
                ctx.out.err(f"{r['error']} checking if {r['id']} is mounted\n")
    return 1 if any(r["error"] for r in results) else 0
