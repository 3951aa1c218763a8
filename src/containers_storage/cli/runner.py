"""Running a command once its command line is parsed: the store opened as Go's GetStore opens it,
the command's own code (with the garbage collector back on), failures reported as Go reports them.

cli/main.py comes here after Go's flag parsing, cli/console.py after its own for the common write
command lines, which then never import the command table or the flag machinery.
"""

from __future__ import annotations

import gc

from .. import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import StoreOptions
    from ..store import Store
    from .output import Output

# Commands that only read records: the graph driver is set up lazily for them (Go sets it up in
# GetStore, which costs nothing in Go but an import and a probe here).
LAZY_DRIVER = frozenset({
    "layers", "layer", "images", "image", "images-by-digest", "containers", "container", "exists",
    "get-names", "getnames", "metadata", "list-layer-data", "listlayerdata", "list-image-data",
    "listimagedata", "list-container-data", "listcontainerdata", "get-image-data", "getimagedata",
    "get-container-data", "getcontainerdata", "get-layer-data", "getlayerdata",
    "get-image-data-size", "getimagedatasize", "get-image-data-digest", "getimagedatadigest",
    "get-container-data-size", "getcontainerdatasize", "get-container-data-digest",
    "getcontainerdatadigest", "version", "config", "unshare",
})
KNOWN_DRIVERS = frozenset({"vfs", "overlay", "overlay2"})


def run_command(name: str, action: str, values: dict[str, object], args: list[str], out: Output,
                base: StoreOptions | None, gc_resume: tuple[bool, bool]) -> int:
    """Open the store the options name and run ``action`` ("module:function" in cli/) on it.

    ``gc_resume``: whether to turn the garbage collector back on, and whether this is a CLI
    process (which keeps what start-up allocated for good: frozen, never scanned again).
    """
    store = open_store(store_options(values, base), name, out)
    if store is None:
        return 1

    from .base import Context, go_error_text

    module_name, _, func_name = action.partition(":")
    module = __import__(f"{__package__}.{module_name}", fromlist=[func_name])
    function = getattr(module, func_name)
    ctx = Context(name, values, store, out)
    gc_was_on, console = gc_resume
    if gc_was_on:
        # Start-up is over; a long command (an import, a diff) collects its own garbage as usual.
        if console:
            gc.freeze()
        gc.enable()
    try:
        return int(function(ctx, args))
    except (OSError, Exception) as e:  # every failure is reported as Go reports it: text, exit 1
        out.err(go_error_text(e) + "\n")
        return 1


def store_options(values: dict[str, object], base: StoreOptions | None) -> StoreOptions:
    from ..config import StoreOptions

    options = base if base is not None else StoreOptions()
    options.graph_root = str(values.get("graph") or "")
    options.run_root = str(values.get("run") or "")
    options.driver_name = str(values.get("storage_driver") or "")
    opts = values.get("storage_opt")
    options.driver_options = [str(o) for o in opts] if isinstance(opts, list) else []
    options.image_store = str(values.get("image_store") or "")
    options.transient_store = bool(values.get("transient_store"))
    return options


def open_store(options: StoreOptions, name: str, out: Output) -> Store | None:
    """get_store plus, as Go's GetStore does, the graph driver: errors are "error initializing"."""
    from ..errors import StorageError
    from ..store import get_store
    from .base import go_error_text

    try:
        store = get_store(options)
        lazy = (name in LAZY_DRIVER and not options.driver_options
                and store.driver_name in KNOWN_DRIVERS)
        if not lazy:
            store.driver  # noqa: B018 - set the driver up now, so that its errors come first
    except (StorageError, OSError, ValueError) as e:
        text = go_error_text(e)
        if text.startswith("failed to GetDriver graph "):
            from .base import debug_line

            # Go's drivers.GetDriver also logs this at error level (shown without --debug).
            out.err(debug_line("F" + text[1:].partition(": driver not supported")[0], "error"))
        out.out(f"error initializing: {text}\n")
        return None
    return store


def log_sink(out: Output) -> Callable[[str, str], None]:
    def sink(level: str, message: str) -> None:
        from .base import debug_line

        out.err(debug_line(message, level))

    return sink
