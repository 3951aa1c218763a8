"""Listing output (layers, images, containers) and its fast path.

The text and JSON renderers work on raw record objects, so the ordinary commands (through a
``Store``) and the fast path (through ``snapshot``, no ``Store`` at all) print identical bytes.
The fast path is what keeps ``containers-storage layers`` ahead of the Go binary: it imports
almost nothing and parses each file once.
"""

from __future__ import annotations

from .. import TYPE_CHECKING

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
    ids, own = layer_parts(layers)
    return assemble_layers(ids, own, image_users(images), container_users(containers))


def layer_parts(layers: list[Raw]) -> tuple[list[str], list[str]]:
    """Each layer's ID and its own lines of the ``layers`` text (ID and names)."""
    ids: list[str] = []
    own: list[str] = []
    for layer in layers:
        lid = layer["id"]
        ids.append(lid)
        own.append("".join([lid + "\n", *["\tname: " + name + "\n" for name in layer.get("names") or ()]]))
    return ids, own


def image_users(images: list[Raw]) -> dict[str, str]:
    """Layer ID -> the ``layers`` text's lines of the images using it (top or mapped), in order."""
    users: dict[str, list[str]] = {}
    for image in images:
        text = "".join(["\timage: " + image["id"] + "\n",
                        *["\t\tname: " + name + "\n" for name in image.get("names") or ()]])
        users.setdefault(image.get("layer") or "", []).append(text)
        for mapped in image.get("mapped-layers") or ():
            users.setdefault(mapped, []).append(text)
    return {lid: "".join(texts) for lid, texts in users.items()}


def container_users(containers: list[Raw]) -> dict[str, str]:
    """Layer ID -> the ``layers`` text's lines of the container using it (the last one, as Go's
    map of them keeps)."""
    users: dict[str, str] = {}
    for ctr in containers:
        users[ctr.get("layer") or ""] = "".join(["\tcontainer: " + ctr["id"] + "\n",
                                                 *["\t\tname: " + n + "\n" for n in ctr.get("names") or ()]])
    return users


def assemble_layers(ids: list[str], own: list[str], images: dict[str, str], containers: dict[str, str]
                    ) -> str:
    """The ``layers`` text from its parts (each kept with its records file: ``run_fast``)."""
    if not images and not containers:
        return "".join(own)
    get_image, get_container = images.get, containers.get
    return "".join([part for lid, text in zip(ids, own, strict=True)
                    for part in (text, get_image(lid, ""), get_container(lid, ""))])


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


def snapshot_for(values: dict[str, object], layers: bool, images: bool, containers: bool,
                 lookups: bool = False) -> Snapshot | None:
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
                layers=layers, images=images, containers=containers, lookups=lookups)


def run_fast(name: str, values: dict[str, object], out: Output, keep: list[object] | None = None
             ) -> int | None:
    """Run a listing from a snapshot; None when the ordinary path must run instead.  ``keep``
    receives what should outlive the call (the console script exits without freeing it).

    What a listing prints from one records file alone (the images or containers text, the IDs,
    whether ``--json`` may print the file's own bytes) is kept with that file's cache entry
    (``Snapshot.product``), so a repeated listing of an unchanged store makes no records at all.
    """
    if name == "layers" and values.get("tree"):
        return None
    snap = snapshot_for(values, name == "layers", name == "images" or _layer_users(name, values),
                        name == "containers" or _layer_users(name, values))
    if snap is None:
        return None
    if keep is not None:
        keep.append(snap)  # a process about to exit need not free every record first
    as_json = bool(values.get("json"))
    if name == "layers":
        if as_json:
            _json_out(out, snap, "layers", lambda: snap.layers, layers_json)
        elif values.get("quick"):
            out.out(_text(snap.product("layers", "layers-quick",
                                       lambda: render_layers(snap.layers, [], [], True))))
        else:
            # Its parts are each one file's: kept with that file, the whole made of them here.
            ids, own = _parts(snap.product("layers", "layers-parts", lambda: layer_parts(snap.layers)))
            images = _users(snap.product("images", "image-users", lambda: image_users(snap.image_users)))
            ctrs = _users(snap.product("containers", "container-users",
                                       lambda: container_users(snap.containers)))
            out.out(assemble_layers(ids, own, images, ctrs))
    elif name == "images":
        if as_json:
            _json_out(out, snap, "images", lambda: snap.images, images_json)
        else:
            quiet = bool(values.get("quiet"))
            out.out(_text(snap.product("images", "images-quiet" if quiet else "images-text",
                                       lambda: render_images(snap.images, snap.image_digests, quiet))))
    else:
        if as_json:
            _json_out(out, snap, "containers", lambda: snap.containers, containers_json)
        else:
            out.out(_text(snap.product("containers", "containers-text",
                                       lambda: render_containers(snap.containers))))
    return 0


def _parts(value: object) -> tuple[list[str], list[str]]:
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], list)
            and isinstance(value[1], list)):
        raise TypeError("the layers' parts are two lists")
    return value[0], value[1]


def _users(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("a users product is a dict")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a listing's text product is a str")
    return value


def _json_out(out: Output, snap: Snapshot, kind: str, records: Callable[[], list[Raw]],
              view: Callable[[list[Raw]], Any]) -> None:
    """Print records as Go would, reusing the file's bytes when they already are exactly that."""
    sources = snap.layer_sources if kind == "layers" else (
        snap.image_sources if kind == "images" else snap.container_sources)
    if len(sources) == 1:

        def unchanged() -> bool:
            value = view(records())
            return isinstance(value, list) and all(a is b for a, b in zip(value, records(), strict=True))

        if snap.product(kind, kind + "-json-unchanged", unchanged) is True:
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
    out.json(view(records()))
