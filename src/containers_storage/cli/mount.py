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
                path = ctx.store.mount_image(arg, mount_label=label)
            else:
                path = ctx.store.mount(arg, mount_label=label)
        except Exception as e:
            error = go_error_text(e)
        results.append({"id": arg, "mountpoint": path, "error": error})
    return _report(ctx, results, "while mounting", print_mountpoint=True)


def unmount(ctx: Context, args: list[str]) -> int:
    force = ctx.flag("force")
    results: list[dict[str, str]] = []
    for arg in args:
        error = ""
        try:
            still_mounted = ctx.store.unmount(arg, force=force)
            if not still_mounted:
                ctx.out.out(f"{arg} mountpoint unmounted\n")
        except Exception as e:
            try:
                ctx.store.unmount_image(arg, force=force)
            except Exception:
                error = go_error_text(e)
        results.append({"id": arg, "error": error})
    return _report(ctx, results, "while unmounting")


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
    return _report(ctx, results, "checking if", suffix=" is mounted")


def _report(ctx: Context, results: list[dict[str, str]], context: str, suffix: str = "",
            print_mountpoint: bool = False) -> int:
    """Go's ending of all three: the results as JSON, or each error next to its argument."""
    if ctx.json:
        ctx.out.json(results)
    else:
        for r in results:
            if r["error"]:
                ctx.out.err(f"{r['error']} {context} {r['id']}{suffix}\n")
            if print_mountpoint:
                ctx.out.out(r["mountpoint"] + "\n")
    return 1 if any(r["error"] for r in results) else 0

