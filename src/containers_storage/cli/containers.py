"""Container commands: containers, container, create-container, container-parent-owners."""

from __future__ import annotations

from .base import Context, found, go_error_text, id_mappings, print_created, read_file


def containers(ctx: Context, args: list[str]) -> int:
    from .listing import containers_json, render_containers

    found = ctx.store.containers()
    if ctx.json:
        ctx.out.json(containers_json([c.raw for c in found]))
    else:
        ctx.out.out(render_containers([c.raw for c in found]))
    return 0


def container(ctx: Context, args: list[str]) -> int:
    all_images = ctx.store.images()
    matches = found(args, ctx.store.container)
    if ctx.json:
        from .gojson import containers_view

        ctx.out.json(containers_view([m.raw for m in matches]))
        return 0 if len(matches) == len(args) else 1
    for m in matches:
        parts = [f"ID: {m.id}\n"]
        parts += [f"Name: {name}\n" for name in m.names]
        parts.append(f"Image: {m.image}\n")
        for image in all_images:
            if image.id == m.image:
                parts += [f"Image name: {name}\n" for name in image.names]
                break
        ctx.out.out("".join(parts))
        try:
            ctx.out.out(f"Size: {ctx.store.container_size(m.id)}\n")
        except Exception as e:  # Go prints the reason and carries on
            ctx.out.out(f"Size unknown: {go_error_text(e)}\n")
        ctx.out.out(f"Layer: {m.layer}\n" + "".join(f"Data: {name}\n" for name in m.big_data_names))
    return 0 if len(matches) == len(args) else 1


def create_container(ctx: Context, args: list[str]) -> int:
    metadata = ctx.text("metadata")
    if ctx.text("metadata_file"):
        metadata = read_file(ctx.text("metadata_file")).decode("utf-8", "replace")
    uids, gids, host_uid, host_gid = id_mappings(ctx)
    created = ctx.store.create_container(
        args[0], id=ctx.text("id"), names=ctx.strings("name"), metadata=metadata, uid_map=uids,
        gid_map=gids, host_uid_mapping=host_uid, host_gid_mapping=host_gid,
        volatile=ctx.flag("volatile"))
    return print_created(ctx, created)


def container_parent_owners(ctx: Context, args: list[str]) -> int:
    from .layers import parent_owners

    return parent_owners(ctx, args, ctx.store.container, ctx.store.container_parent_owners,
                         "ContainerParentOwner", always=True)
