"""``exists``: does a layer, image or container go by this name or ID?

As in Go, the printed answer is the store-wide one, while ``-l``/``-i``/``-c`` only narrow what
counts for the exit status.
"""

from __future__ import annotations

from .. import TYPE_CHECKING
from .base import Context
from .output import go_json_sorted

if TYPE_CHECKING:
    from collections.abc import Callable


def exists(ctx: Context, args: list[str]) -> int:
    from ..errors import StorageError

    store = ctx.store
    answers: dict[str, bool] = {}
    any_missing = False
    for what in args:
        found = store.exists(what)
        answers[what] = found
        checks: list[Callable[[str], object]] = []
        if ctx.flag("container"):
            checks.append(store.container)
        if ctx.flag("image"):
            checks.append(store.image)
        if ctx.flag("layer"):
            checks.append(store.layer)
        for check in checks:
            try:
                check(what)
            except StorageError:
                found = False
        if not found:
            any_missing = True
    if ctx.json:
        ctx.out.out_bytes(go_json_sorted(answers))
    elif not ctx.flag("quiet"):
        ctx.out.out("".join(f"{what}: {'true' if found else 'false'}\n" for what, found in answers.items()))
    return 1 if any_missing else 0
