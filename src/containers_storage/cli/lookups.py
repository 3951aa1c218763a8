"""Lookups without a Store: exists, layer, get-names and metadata on the snapshot path.

Like the listings (see listing.py) these read each records file once and import almost nothing,
so looking items up in a big store costs less than the Go binary does.  Stores with additional
(read-only) image stores take the ordinary path, where lookups are per store.
"""

from __future__ import annotations

from .. import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..snapshot import Snapshot
    from .output import Output

FAST = frozenset({"exists", "layer", "image", "get-names", "getnames", "metadata"})


def _snapshot(name: str, values: dict[str, object]) -> Snapshot | None:
    from .listing import snapshot_for

    kinds = {"layer": (True, False, False), "image": (True, True, False)}.get(name, (True, True, True))
    snap = snapshot_for(values, *kinds, lookups=True)
    if snap is not None and snap.additional_stores:
        return None
    return snap


def run_fast(name: str, values: dict[str, object], args: list[str], out: Output,
             keep: list[object] | None = None) -> int | None:
    """Answer from a snapshot; None when the ordinary path must run instead.  ``keep`` receives
    what should outlive the call (the console script exits without freeing it)."""
    snap = _snapshot(name, values)
    if snap is None:
        return None
    if keep is not None:
        keep.append(snap)
    indexes = [i for i in (snap.layer_index, snap.image_index, snap.container_index) if i is not None]
    as_json = bool(values.get("json"))
    if name == "layer":
        matched = [rec for rec in (indexes[0].lookup(arg) for arg in args) if rec is not None]
        if as_json:
            from .gojson import layers_view

            out.json(layers_view(matched))
        else:
            out.out("".join(_layer_text(rec) for rec in matched))
        return 0 if len(matched) == len(args) else 1

    if name == "image":
        return _image(snap, args, as_json, out)

    def find(ref: str) -> Any:
        for index in indexes:
            rec = index.lookup(ref)
            if rec is not None:
                return rec
        return None

    if name in ("get-names", "getnames"):
        rec = find(args[0])
        if rec is None:
            out.err("layer not known\n")
            return 1
        names = list(rec.get("names") or ())
        if as_json:
            out.json(names)
        else:
            out.out("".join(n + "\n" for n in names))
        return 0
    if name == "metadata":
        from .output import go_json_sorted

        found: dict[str, str] = {}
        for what in args:
            rec = find(what)
            if rec is not None:
                found[what] = str(rec.get("metadata") or "").removesuffix("\n")
        if as_json:
            out.out_bytes(go_json_sorted(found))
        elif values.get("quiet"):
            out.out("".join(found.get(what, "") + "\n" for what in args))
        else:
            out.out("".join(f"{what}: {found.get(what, '')}\n" for what in args))
        return 0 if len(found) == len(args) else 1
    # exists
    from .output import go_json_sorted

    answers: dict[str, bool] = {}
    missing = False
    for what in args:
        present = find(what) is not None
        answers[what] = present
        for flag, index in (("container", snap.container_index), ("image", snap.image_index),
                            ("layer", snap.layer_index)):
            if values.get(flag) and (index is None or index.lookup(what) is None):
                present = False
        missing = missing or not present
    if as_json:
        out.out_bytes(go_json_sorted(answers))
    elif not values.get("quiet"):
        out.out("".join(f"{what}: {'true' if found_ else 'false'}\n" for what, found_ in answers.items()))
    return 1 if missing else 0


def _image(snap: Snapshot, args: list[str], as_json: bool, out: Output) -> int | None:
    """The image command; None (ordinary path) when a size needs a layer's contents measured."""
    from ..recordindex import image_digests

    index = snap.image_index
    if index is None:
        return None
    matched = [rec for rec in (index.lookup(arg) for arg in args) if rec is not None]
    # Go's Image.Digests, which may fill in an image's digest (before it is printed as JSON too).
    digests = {id(rec): image_digests(rec) for rec in matched}
    if as_json:
        from .gojson import images_view

        out.json(images_view(matched))
        return 0 if len(matched) == len(args) else 1
    layers = snap.layer_index
    texts: list[str] = []
    for rec in matched:
        size = _image_size(rec, layers.get if layers is not None else lambda id: None, snap.layer_dir_empty)
        if size is None:
            return None
        texts.append(image_text(rec, digests[id(rec)]) + f"Size: {size}\n")
    out.out("".join(texts))
    return 0 if len(matched) == len(args) else 1


def image_text(rec: dict[str, Any], digests: list[str]) -> str:
    """The `image` command's lines up to the size, for both the snapshot and the Store path."""
    parts = [f"ID: {rec['id']}\n"]
    parts += [f"Name: {name}\n" for name in rec.get("names") or ()]
    parts.append(f"Top Layer: {rec.get('layer') or ''}\n")
    parts += [f"Top Layer: {lid}\n" for lid in rec.get("mapped-layers") or ()]
    parts += [f"Digest: {d}\n" for d in digests]
    parts += [f"Data: {name}\n" for name in rec.get("big-data-names") or ()]
    return "".join(parts)


def _image_size(image: dict[str, Any], layer: Callable[[str], dict[str, Any] | None],
                empty: Callable[[str], bool]) -> int | None:
    """Go's ImageSize from recorded sizes, or 0 for a layer whose directory is empty; None when a
    layer's contents need measuring (the Store does that), or an item of data is unsized."""
    from ..recordindex import layer_chain

    size = 0
    tops = [image.get("layer") or "", *(image.get("mapped-layers") or ())]
    seen: dict[str, dict[str, Any]] = {}

    def parent(id: str) -> str:
        return seen[id].get("parent") or ""

    for layer_id in layer_chain(tops, parent):
        rec = layer(layer_id)
        if rec is None:
            return None
        seen[layer_id] = rec
        diff_size = rec.get("diff-size")
        if rec.get("diff-digest") and diff_size != -1:
            size += int(diff_size or 0)
        elif not empty(layer_id):
            return None  # Go measures the diff (the Store does that)
    sizes = image.get("big-data-sizes") or {}
    for name in image.get("big-data-names") or ():
        if name not in sizes:
            return None
        size += int(sizes[name])
    return size


def _layer_text(rec: dict[str, Any]) -> str:
    parts = [f"ID: {rec['id']}\n"]
    for key, label in (("uidmap", "UID"), ("gidmap", "GID")):
        for m in rec.get(key) or ():
            parts.append(f"{label} mapping: (container={m['container_id']}, host={m['host_id']}, "
                         f"size={m['size']})\n")
    if rec.get("parent"):
        parts.append(f"Parent: {rec['parent']}\n")
    parts += [f"Name: {name}\n" for name in rec.get("names") or ()]
    return "".join(parts)
