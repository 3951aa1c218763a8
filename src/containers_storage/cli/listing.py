"""Listing output (layers, images, containers) and its fast path.

The text and JSON renderers work on raw record objects, so the ordinary commands (through a
``Store``) and the fast path (through ``snapshot``, no ``Store`` at all) print identical bytes.
The fast path is what keeps ``containers-storage layers`` ahead of the Go binary: it imports
almost nothing and parses each file once.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..snapshot import Snapshot
    from .output import Output

    Raw = dict[str, Any]


def render_layers(layers: list[Raw], images: list[Raw], containers: list[Raw], quick: bool) -> str:
    """Go's ``layers`` text: each layer, its names, the images and container using it."""
    if quick:
        return "".join([layer["id"] + "\n" for layer in layers])
    image_map: dict[str, list[Raw]] = {}
    for image in images:
        image_map.setdefault(image.get("layer") or "", []).append(image)
        for mapped in image.get("mapped-layers") or ():
            image_map.setdefault(mapped, []).append(image)
    container_map = {c.get("layer") or "": c for c in containers}
    parts: list[str] = []
    add = parts.append
    for layer in layers:
        lid = layer["id"]
        add(lid + "\n")
        for name in layer.get("names") or ():
            add("\tname: " + name + "\n")
        users = image_map.get(lid)
        if users:
            for img in users:
                add("\timage: " + img["id"] + "\n")
                for name in img.get("names") or ():
                    add("\t\tname: " + name + "\n")
        ctr = container_map.get(lid)
        if ctr is not None:
            add("\tcontainer: " + ctr["id"] + "\n")
            for name in ctr.get("names") or ():
                add("\t\tname: " + name + "\n")
    return "".join(parts)


def render_images(images: list[Raw], digests: list[list[str]], quiet: bool) -> str:
    """Go's ``images`` (and ``images-by-digest``) text."""
    parts: list[str] = []
    add = parts.append
    for image, image_digests in zip(images, digests, strict=True):
        add(image["id"] + "\n")
        if quiet:
            continue
        for name in image.get("names") or ():
            add("\tname: " + name + "\n")
        for digest in image_digests:
            add("\tdigest: " + digest + "\n")
        for name in image.get("big-data-names") or ():
            add("\tdata: " + name + "\n")
    return "".join(parts)


def render_containers(containers: list[Raw]) -> str:
    parts: list[str] = []
    add = parts.append
    for c in containers:
        add(c["id"] + "\n")
        for name in c.get("names") or ():
            add("\tname: " + name + "\n")
        for name in c.get("big-data-names") or ():
            add("\tdata: " + name + "\n")
    return "".join(parts)


def layers_json(layers: list[Raw]) -> Any:
    from .gojson import layers_view

    return layers_view(layers) if layers else None  # Go's nil slice


def images_json(images: list[Raw]) -> Any:
    from .gojson import images_view

    return images_view(images) if images else None  # Go's nil slice


def containers_json(containers: list[Raw]) -> Any:
    from .gojson import containers_view

    return containers_view(containers)  # Go's container store returns an empty, non-nil slice


# -- the fast path --------------------------------------------------------------------------------
FAST = frozenset({"layers", "images", "containers"})


# Driver options that the driver accepts whatever their value, so skipping the driver's own
# parsing cannot hide an error it would have reported.
_HARMLESS_OPTIONS = {
    "vfs": frozenset({"vfs.imagestore", ".imagestore"}),
    "overlay": frozenset({"overlay.mountopt", "overlay2.mountopt", ".mountopt"}),
}


def _options_known_valid(driver: str, opts: list[str]) -> bool:
    harmless = _HARMLESS_OPTIONS.get(driver)
    if harmless is None:
        return False
    for opt in opts:
        key, sep, _ = opt.partition("=")
        if not sep or key.strip().lower() not in harmless:
            return False
    return True


def _layer_users(name: str, values: dict[str, object]) -> bool:
    """Only the full ``layers`` text shows which images and containers use each layer."""
    return name == "layers" and not values.get("json") and not values.get("quick")


def snapshot_for(values: dict[str, object], layers: bool, images: bool, containers: bool) -> Snapshot | None:
    """A snapshot of the store the options name, or None when only the Store can answer."""
    graph = values.get("graph")
    run = values.get("run")
    driver = values.get("storage_driver")
    opts = values.get("storage_opt")
    if not (isinstance(graph, str) and isinstance(run, str) and isinstance(driver, str)
            and isinstance(opts, list)):
        return None
    if not _options_known_valid(driver, [str(o) for o in opts]):
        return None  # let the driver judge (and report) them
    from ..snapshot import take

    # (main keeps the garbage collector off for these short read-only runs.)
    image_store = values.get("image_store")
    return take(graph, run, driver, image_store=image_store if isinstance(image_store, str) else "",
                transient=bool(values.get("transient_store")), driver_options=[str(o) for o in opts],
                layers=layers, images=images, containers=containers)


def run_fast(name: str, values: dict[str, object], out: Output) -> int | None:
    """Run a listing from a snapshot; None when the ordinary path must run instead."""
    if name == "layers" and values.get("tree"):
        return None
    snap = snapshot_for(values, name == "layers", name == "images" or _layer_users(name, values),
                        name == "containers" or _layer_users(name, values))
    if snap is None:
        return None
    as_json = bool(values.get("json"))
    if name == "layers":
        if as_json:
            _json_out(out, snap.layers, snap.layer_sources, layers_json)
        else:
            out.out(render_layers(snap.layers, snap.images, snap.containers, bool(values.get("quick"))))
    elif name == "images":
        if as_json:
            _json_out(out, snap.images, snap.image_sources, images_json)
        else:
            out.out(render_images(snap.images, snap.image_digests, bool(values.get("quiet"))))
    else:
        if as_json:
            _json_out(out, snap.containers, snap.container_sources, containers_json)
        else:
            out.out(render_containers(snap.containers))
    return 0


def _json_out(out: Output, records: list[Raw], sources: list[tuple[bytes, str | None]],
              view: Callable[[list[Raw]], Any]) -> None:
    """Print records as Go would, reusing the file's bytes when they already are exactly that."""
    value = view(records)
    unchanged = isinstance(value, list) and all(a is b for a, b in zip(value, records, strict=True))
    if len(sources) == 1 and unchanged:
        from ..gojson import go_escape, go_form

        data, form = sources[0]
        if form is None:
            form = go_form(data)
        if form == "go":
            out.out_bytes(data.strip() + b"\n")
            return
        if form == "escape":
            out.out_bytes(go_escape(data.strip()) + b"\n")
            return
    out.json(value)
