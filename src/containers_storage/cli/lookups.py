"""Lookups without a Store: exists, layer, get-names and metadata on the snapshot path.

Like the listings (see listing.py) these read each records file once and import almost nothing,
so looking items up in a big store costs less than the Go binary does.  Stores with additional
(read-only) image stores take the ordinary path, where lookups are per store.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

    from ..snapshot import Snapshot
    from .output import Output

FAST = frozenset({"exists", "layer", "image", "get-names", "getnames", "metadata"})


def _snapshot(name: str, values: dict[str, object]) -> Snapshot | None:
    from .listing import snapshot_for

    kinds = {"layer": (True, False, False), "image": (True, True, False)}.get(name, (True, True, True))
    snap = snapshot_for(values, *kinds)
    if snap is not None and snap.additional_stores:
        return None
    return snap


def run_fast(name: str, values: dict[str, object], args: list[str], out: Output) -> int | None:
    """Answer from a snapshot; None when the ordinary path must run instead."""
    snap = _snapshot(name, values)
    if snap is None:
        return None
    indexes = [i for i in (snap.layer_index, snap.image_index, snap.container_index) if i is not None]
    as_json = bool(values.get("json"))
    if name == "layer":
        from .gojson import layers_view

        matched = [rec for rec in (indexes[0].lookup(arg) for arg in args) if rec is not None]
        if as_json:
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
    index = snap.image_index
    if index is None:
        return None
    matched = [rec for rec in (index.lookup(arg) for arg in args) if rec is not None]
    if as_json:
        from .gojson import images_view

        out.json(images_view(matched))
        return 0 if len(matched) == len(args) else 1
    layers = snap.layer_index.by_id if snap.layer_index is not None else {}
    digests = {id(rec): d for rec, d in zip(snap.images, snap.image_digests, strict=True)}
    texts: list[str] = []
    for rec in matched:
        size = _image_size(rec, layers)
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


def _image_size(image: dict[str, Any], layers: dict[str, dict[str, Any]]) -> int | None:
    """Go's ImageSize from recorded sizes alone; None when a layer lacks one or data is unsized."""
    from ..recordindex import layer_chain

    size = 0
    tops = [image.get("layer") or "", *(image.get("mapped-layers") or ())]
    for layer_id in layer_chain(tops, lambda id: layers[id].get("parent") or ""):
        layer = layers.get(layer_id)
        if layer is None or not layer.get("diff-digest"):
            return None
        size += int(layer.get("diff-size") or 0)
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
