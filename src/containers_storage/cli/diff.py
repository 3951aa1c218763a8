"""Layer contents as changes and tarballs: changes, diffsize, diff, applydiff,
applydiff-using-staging-dir.  These are the only commands that load the archive engine.
"""

from __future__ import annotations

import sys

from .. import TYPE_CHECKING
from .base import CommandError, Context, go_os_error

if TYPE_CHECKING:
    from typing import Any, BinaryIO

def _from_to(args: list[str]) -> tuple[str, str]:
    return (args[1] if len(args) >= 2 else ""), args[0]


def changes(ctx: Context, args: list[str]) -> int:
    from_ref, to_ref = _from_to(args)
    found: list[Any] = ctx.store.changes(to_ref, from_ref=from_ref)
    if ctx.json:
        # Go's archive.Change has no JSON tags: {"Path": ..., "Kind": 0|1|2}.
        ctx.out.json([{"Path": c.path, "Kind": int(c.kind)} for c in found] if found else None)
        return 0
    ctx.out.out("".join(f"{c}\n" for c in found))
    return 0


def diffsize(ctx: Context, args: list[str]) -> int:
    from_ref, to_ref = _from_to(args)
    ctx.out.out(f"{ctx.store.diff_size(to_ref, from_ref=from_ref)}\n")
    return 0


def diff(ctx: Context, args: list[str]) -> int:
    from_ref, to_ref = _from_to(args)
    path = ctx.text("file")
    target: BinaryIO | None = None
    if path:
        try:
            target = open(path, "wb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise CommandError(go_os_error(e)) from None
    compression: int | None = None
    if any(ctx.flag(f) for f in ("uncompressed", "gzip", "bzip2", "xz")):
        compression = 0
        if ctx.flag("gzip"):
            compression = 2
        if ctx.flag("bzip2"):
            compression = 1
        if ctx.flag("xz"):
            compression = 3
    try:
        if target is None:
            out = ctx.out.binary_stdout()
            if out is None:
                raise CommandError("stdout does not accept binary data")
            ctx.store.diff(to_ref, out, from_ref=from_ref, compression=compression)
            out.flush()
        else:
            ctx.store.diff(to_ref, target, from_ref=from_ref, compression=compression)
    finally:
        if target is not None:
            target.close()
    return 0


def _open_input(ctx: Context) -> BinaryIO:
    path = ctx.text("file")
    if not path:
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as e:
        raise CommandError(go_os_error(e)) from None


def applydiff(ctx: Context, args: list[str]) -> int:
    stream = _open_input(ctx)
    try:
        ctx.store.apply_diff(args[0], stream)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return 0


def applydiff_staging(ctx: Context, args: list[str]) -> int:
    """Go's: the directory's tarball goes through the zstd:chunked writer into a temporary file,
    which is then applied as a partial pull from that file (NewDiffer, PrepareStagedLayer) and
    committed into the layer (ApplyStagedLayer).  So, as in Go, it needs ``pull_options =
    {enable_partial_images = "true"}`` in storage.conf ("partial images are disabled" otherwise)
    and a driver that takes partial pulls ("graph driver vfs does not support partial pull")."""
    import os
    import tempfile

    from ..archive.chunked import FileBlobSource, compress, new_differ
    from ..archive.export import export_tree

    store = ctx.store
    layer_id, source = args[0], args[1]
    try:
        os.lstat(source)
    except OSError as e:
        raise CommandError(go_os_error(e, "lstat")) from None
    with tempfile.TemporaryFile(prefix="layer-diff-tar-") as tar, \
            tempfile.TemporaryFile(prefix="layer-diff-tar-") as blob:
        export_tree(source, tar)
        tar.seek(0)
        written = compress(tar, blob)
        tar.close()
        blob.flush()
        # Go hands NewDiffer the digest of the uncompressed tarball as the blob's (it only
        # matters to convert_images, which reads the blob whole).
        with FileBlobSource(blob) as blob_source, new_differ(
                store, blob_digest=written.diff_id, blob_size=written.size,
                annotations=written.annotations, source=blob_source) as differ:
            staged = store.prepare_staged_layer(differ=differ)
    try:
        store.apply_staged_layer(staged, id=layer_id)
    except BaseException:
        store.cleanup_staged_layer(staged)
        raise
    return 0
