"""Go's ``path.Clean`` on byte names: tar names are bytes, and apply, tar-split and the tar
writer must all normalize them exactly as the Go code does."""

from __future__ import annotations


def go_clean(name: bytes) -> bytes:
    """Lexically clean ``name``: drop empty and ``.`` components, resolve ``..``, keep a root."""
    if not name:
        return b"."
    rooted = name.startswith(b"/")
    out: list[bytes] = []
    for comp in name.split(b"/"):
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if out and out[-1] != b"..":
                out.pop()
            elif not rooted:
                out.append(comp)
            continue
        out.append(comp)
    body = b"/".join(out)
    return b"/" + body if rooted else body or b"."
