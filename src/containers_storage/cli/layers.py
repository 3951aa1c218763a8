"""Layer commands: layers, storage-layers, layer, layer-parent-owners, create-layer,
create-storage-layer, import-layer.

``layers`` is the command users run most on big stores, so it touches the records' raw JSON
objects directly and builds its output as one string.
"""

from __future__ import annotations

from .. import TYPE_CHECKING
from .base import CommandError, Context, found, id_mappings, print_created

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..records import Container, Layer


def layers(ctx: Context, args: list[str]) -> int:
    from .listing import layers_json, render_layers

    store = ctx.store
    all_layers = store.layers()
    if ctx.json:
        ctx.out.json(layers_json([layer.raw for layer in all_layers]))
        return 0
    quick = ctx.flag("quick")
    tree = ctx.flag("tree")
    if quick and not tree:
        ctx.out.out(render_layers([layer.raw for layer in all_layers], [], [], True))
        return 0
    image_raws: list[dict[str, Any]] = []
    container_raws: list[dict[str, Any]] = []
    try:
        image_raws = [image.raw for image in store.images()]
    except Exception:  # Go ignores errors listing images and containers here
        pass
    try:
        container_raws = [c.raw for c in store.containers()]
    except Exception:
        pass
    if tree:
        image_map: dict[str, list[dict[str, Any]]] = {}
        for raw in image_raws:
            image_map.setdefault(raw.get("layer") or "", []).append(raw)
            for mapped in raw.get("mapped-layers") or ():
                image_map.setdefault(mapped, []).append(raw)
        container_map = {raw.get("layer") or "": raw for raw in container_raws}
        _print_tree(ctx, all_layers, image_map, container_map)
        return 0
    ctx.out.out(render_layers([layer.raw for layer in all_layers], image_raws, container_raws, False))
    return 0


# -- tree output (Go's tree.go) -----------------------------------------------------------------
_VERTICAL = "\u2502"
_THIS_AND_MORE = "\u251c"
_JUST_THIS = "\u2514"
_STEM = "\u2500"
_INDENT_STEP = 2


def _print_tree(ctx: Context, all_layers: list[Layer], image_map: dict[str, list[dict[str, Any]]],
                container_map: dict[str, dict[str, Any]]) -> None:
    nodes: list[tuple[str, str, list[str]]] = []
    for layer in all_layers:
        raw = layer.raw
        notes = ["name: " + n for n in raw.get("names") or ()]
        if layer.mount_point:
            notes.append("mount: " + layer.mount_point)
        for image in image_map.get(layer.id) or ():
            notes.append("image: " + image["id"])
            notes.extend("image name: " + n for n in image.get("names") or ())
        container = container_map.get(layer.id)
        if container is not None:
            notes.append("container: " + container["id"])
            notes.extend("container name: " + n for n in container.get("names") or ())
        nodes.append((layer.parent or "(base)", layer.id, notes))
    lines: list[str] = []
    while nodes:
        root = _select_root(nodes)
        lines.append(root + "\n")
        before = len(nodes)
        nodes = _print_subtree(lines, root, nodes, 0, [])
        if len(nodes) == before:
            break
    ctx.out.out("".join(lines))


def _select_root(nodes: list[tuple[str, str, list[str]]]) -> str:
    """A parent that is not itself a listed layer, preferring the one with fewest children."""
    children: dict[str, int] = {}
    are_children: set[str] = set()
    for left, right, _ in nodes:
        are_children.add(right)
        children[left] = children.get(left, 0) + 1
    favorite = ""
    for left, count in children.items():
        if left in are_children:
            continue
        if not favorite or count < children[favorite]:
            favorite = left
    return favorite


def _print_subtree(lines: list[str], root: str, nodes: list[tuple[str, str, list[str]]], indent: int,
                   continued: list[int]) -> list[tuple[str, str, list[str]]]:
    leftovers = [n for n in nodes if n[0] != root]
    kids = [n for n in nodes if n[0] == root]
    for i, (_, right, notes) in enumerate(kids):
        prefix = [" "] * indent
        for column in continued:
            prefix[column] = _VERTICAL
        istring = "".join(prefix)
        sub = list(continued)
        header, note_header = _JUST_THIS, " "
        if i < len(kids) - 1:
            sub.append(indent)
            header, note_header = _THIS_AND_MORE, _VERTICAL
        lines.append(istring + header + _STEM * (_INDENT_STEP - 1) + right + "\n")
        for note in notes:
            lines.append(istring + note_header + " " * (_INDENT_STEP - 1) + note + "\n")
        leftovers = _print_subtree(lines, right, leftovers, indent + _INDENT_STEP, sub)
    return leftovers


# -- one layer ----------------------------------------------------------------------------------
def layer(ctx: Context, args: list[str]) -> int:
    matched = found(args, ctx.store.layer)
    if ctx.json:
        from .gojson import layers_view

        ctx.out.json(layers_view([m.raw for m in matched]))
    else:
        parts: list[str] = []
        for m in matched:
            parts.append(f"ID: {m.id}\n")
            parts += [f"UID mapping: (container={u.container_id}, host={u.host_id}, size={u.size})\n"
                      for u in m.uid_map]
            parts += [f"GID mapping: (container={g.container_id}, host={g.host_id}, size={g.size})\n"
                      for g in m.gid_map]
            if m.parent:
                parts.append(f"Parent: {m.parent}\n")
            parts += [f"Name: {name}\n" for name in m.names]
            if m.read_only:
                parts.append("Read Only: true\n")
        ctx.out.out("".join(parts))
    return 0 if len(matched) == len(args) else 1


def storage_layers(ctx: Context, args: list[str]) -> int:
    """What the graph driver itself holds, records or not (useful to spot leaked layers)."""
    found = ctx.store.driver.list_layers()
    if ctx.json:
        ctx.out.json(list(found))
    else:
        ctx.out.out("".join(f"{lid}\n" for lid in found))
    return 0


# -- parent owners ------------------------------------------------------------------------------
def parent_owners(ctx: Context, args: list[str], lookup: Callable[[str], Layer | Container],
                  owners: Callable[[str], tuple[list[int], list[int]]], what: str, always: bool) -> int:
    """layer-parent-owners and container-parent-owners: each record's ``owners`` (UIDs and GIDs
    that own files of its parent layers but that its ID maps do not map); ``what`` names the
    failing call in the error as Go does, and ``always`` prints empty lists too."""
    from ..errors import StorageError

    matched = found(args, lookup)
    for m in matched:
        try:
            uids, gids = owners(m.id)
        except StorageError as e:
            raise CommandError(f"{what}: {e}") from None
        if ctx.json:
            ctx.out.json({"ID": m.id, "UIDs": uids or None, "GIDs": gids or None})  # Go's nil slices
            continue
        ctx.out.out(f"ID: {m.id}\n")
        if always or uids:
            ctx.out.out("UIDs: [" + " ".join(str(u) for u in uids or ()) + "]\n")
        if always or gids:
            ctx.out.out("GIDs: [" + " ".join(str(g) for g in gids or ()) + "]\n")
    return 0 if len(matched) == len(args) else 1


def layer_parent_owners(ctx: Context, args: list[str]) -> int:
    return parent_owners(ctx, args, ctx.store.layer, ctx.store.layer_parent_owners, "LayerParentOwner",
                         always=False)


# -- creating -----------------------------------------------------------------------------------
def create_layer(ctx: Context, args: list[str]) -> int:
    parent = args[0] if args else ""
    uids, gids, host_uid, host_gid = id_mappings(ctx)
    created = ctx.store.create_layer(
        id=ctx.text("id"), parent=parent, names=ctx.strings("name"), mount_label=ctx.text("label"),
        writeable=not ctx.flag("readonly"), uid_map=uids, gid_map=gids, host_uid_mapping=host_uid,
        host_gid_mapping=host_gid)
    return print_created(ctx, created)


def import_layer(ctx: Context, args: list[str]) -> int:
    import sys

    from .base import go_os_error

    parent = args[0] if args else ""
    path = ctx.text("file")
    if path:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise CommandError(go_os_error(e)) from None
    else:
        stream = sys.stdin.buffer  # type: ignore[assignment]
    try:
        uids, gids, host_uid, host_gid = id_mappings(ctx)
        created = ctx.store.put_layer(
            stream, id=ctx.text("id"), parent=parent, names=ctx.strings("name"),
            mount_label=ctx.text("label"), writeable=not ctx.flag("readonly"), uid_map=uids,
            gid_map=gids, host_uid_mapping=host_uid, host_gid_mapping=host_gid).layer
    finally:
        if path:
            stream.close()
    return print_created(ctx, created)


def create_storage_layer(ctx: Context, args: list[str]) -> int:
    """A layer in the driver only, with no record (Go's create-storage-layer, for tests)."""
    from ..drivers.base import CreateOpts
    from ..ids import generate_id

    parent = args[0] if args else ""
    uids, gids, _, _ = id_mappings(ctx)
    new_id = ctx.text("id") or generate_id()
    opts = CreateOpts(mount_label=ctx.text("label"), uid_map=uids, gid_map=gids)
    ctx.store.driver.create(new_id, parent, opts, not ctx.flag("readonly"))
    if ctx.json:
        ctx.out.json(new_id)
    else:
        ctx.out.out(new_id + "\n")
    return 0
