"""Files and chunks the store already has: the other layers' TOCs, indexed by content digest.

Go keeps a lookaside cache per layer (the ``chunked-manifest-cache`` big data, a bloom filter
and sorted digests) built from each layer's ``zstd-chunked-manifest``; we read the same TOCs and
keep the index in memory for one pull, so only layers pulled partially (by Go or by us) are
searched, as in Go.  A whole file is taken by the digest its layer's TOC records and used
without hashing it again, as Go does (the pull opens it confined to its layer's directory and
holds it to the tar-split's CRC-64: a copy that changed since its layer was pulled fails the
pull, naming it).  A chunk is hashed before it is used, as Go does.
"""

from __future__ import annotations

import hashlib
import os

from ... import TYPE_CHECKING
from ..confine import READ_FLAGS, open_beneath, open_root

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .toc import TOCEntry

__all__ = ["LayerIndex", "hard_link_fingerprint"]

MANIFEST_KEY = "zstd-chunked-manifest"
_READ = 1 << 20


def hard_link_fingerprint(digest: str, uid: int, gid: int, mode: int, xattrs: dict[str, str]) -> str:
    """Go's calculateHardLinkFingerprint: content digest, owner, mode and xattrs in one digest,
    the key under which a file can be shared by hard link."""
    h = hashlib.sha256()
    h.update(digest.encode())
    h.update(f"{uid}:{gid}:{mode:o}".encode())
    for k in sorted(xattrs):
        h.update(k.encode())
        h.update(xattrs[k].encode())
    return "sha256:" + h.hexdigest()


class LayerIndex:
    """Where the store's partially pulled layers hold each file and chunk digest."""

    def __init__(self, use_hard_links: bool = False) -> None:
        """An empty index; :meth:`add_layer` fills it (hard-link keys only when they are used)."""
        self.files: dict[str, list[tuple[str, str, int]]] = {}  # digest -> (root, name, size)
        self.links: dict[str, list[tuple[str, str, int]]] = {}  # fingerprint -> same
        self.chunks: dict[str, list[tuple[str, str, int, int]]] = {}  # -> (root, name, off, size)
        self.layers = 0
        self.use_hard_links = use_hard_links
        self._roots: dict[str, int] = {}  # layer directory -> an O_PATH fd of it

    def close(self) -> None:
        """Close the layer directories opened for lookups."""
        for fd in self._roots.values():
            os.close(fd)
        self._roots.clear()

    def add_layer(self, root: str, manifest: bytes) -> None:
        """Index a layer whose files are under ``root``, from its TOC (skipped when unreadable)."""
        from .toc import accelerator, json_document

        accel = accelerator()
        fast = not self.use_hard_links and accel is not None  # (the fingerprints are hashed here)
        if fast:
            # Read in C straight from the JSON when it is in the shape writers give (~16 ms
            # against ~38 for the json module and the loop, for a 4 MB TOC).
            had_entries = accel.index_json(manifest, root, self.files, self.chunks)
            if had_entries is not None:
                self.layers += had_entries
                return
        try:
            doc = json_document(manifest)
            entries = doc.get("entries") if isinstance(doc, dict) else None
        except ValueError:
            return
        if not isinstance(entries, list):
            return
        self.layers += 1
        if fast:
            accel.index(entries, root, self.files, self.chunks)
            return
        for e in entries:
            if not isinstance(e, dict):
                continue
            name, typ = e.get("name"), e.get("type")
            if not isinstance(name, str):
                continue
            digest, size = e.get("digest"), e.get("size")
            if typ == "reg" and isinstance(digest, str) and type(size) is int and size > 0:
                self.files.setdefault(digest, []).append((root, name, size))
                uid, gid, mode, xattrs = e.get("uid", 0), e.get("gid", 0), e.get("mode", 0), e.get("xattrs")
                if self.use_hard_links and all(type(v) is int for v in (uid, gid, mode)):
                    fp = hard_link_fingerprint(digest, uid, gid, mode,
                                               xattrs if isinstance(xattrs, dict) else {})
                    self.links.setdefault(fp, []).append((root, name, size))
            chunk_digest, csize, coff = e.get("chunkDigest"), e.get("chunkSize"), e.get("chunkOffset", 0)
            if isinstance(chunk_digest, str) and type(csize) is int and csize > 0 and type(coff) is int:
                self.chunks.setdefault(chunk_digest, []).append((root, name, coff, csize))

    # -- lookups ---------------------------------------------------------------------------------
    def find_file(self, entry: TOCEntry, use_hard_links: bool) -> tuple[str, str, bool] | None:
        """(root, name, hard link allowed) of a local copy of ``entry``'s content (by its layer's TOC), or
        None.  A hard link is allowed when the copy's TOC has the same owner, mode and xattrs."""
        if use_hard_links:
            fp = hard_link_fingerprint(entry.digest, entry.uid, entry.gid, entry.mode, entry.xattrs)
            found = _of_size(self.links.get(fp, ()), entry.size)
            if found is not None:
                return (*found, True)
        found = _of_size(self.files.get(entry.digest, ()), entry.size)
        return (*found, False) if found is not None else None

    def find_chunk(self, digest: str, size: int) -> tuple[str, str, int] | None:
        """(root, name, offset) of a verified local copy of a chunk, or None."""
        for root, name, off, csize in self.chunks.get(digest, ()):
            if csize != size:
                continue
            fd = open_local(root, name, self._roots)
            if fd is None:
                continue
            try:
                if _hash_range(fd, off, size) == digest:
                    return root, name, off
            except OSError:
                pass
            finally:
                os.close(fd)
        return None


def _of_size(candidates: Iterable[tuple[str, str, int]], size: int) -> tuple[str, str] | None:
    """The first candidate of the size, by its layer's TOC.  It is not opened here, as Go's
    findFileInOtherLayers does not open it (storage_linux.go): on a cold cache, opening each of
    thousands of files here, before anything is fetched, cost ~0.1 s; the pull opens it, ahead
    of the stream, and fails naming it if it went away, as Go's copyFileFromOtherLayer does.
    Its content is held to the tar-split's CRC-64 as it streams (a copy that changed since its
    layer was pulled fails the pull there)."""
    for root, name, csize in candidates:
        if csize == size:
            return root, name
    return None


def layer_root(root: str, roots: dict[str, int]) -> int | None:
    """The O_PATH fd of layer directory ``root`` from ``roots``, opened and kept there the first
    time (the caller closes them); None when it cannot be opened."""
    rfd = roots.get(root)
    if rfd is None:
        try:
            rfd = roots[root] = open_root(root)
        except OSError:
            return None
    return rfd


def open_local(root: str, name: str, roots: dict[str, int] | None = None) -> int | None:
    """``name`` opened read-only beneath ``root`` (symlinks cannot lead out), or None.

    With ``roots`` (layer directory -> an O_PATH fd of it), the directory is opened once and
    kept there for the caller to close; without, it is opened for this call only.
    """
    rfd = layer_root(root, roots if roots is not None else {})
    if rfd is None:
        return None
    try:
        return open_beneath(rfd, name, READ_FLAGS)
    except OSError:
        return None
    finally:
        if roots is None:
            os.close(rfd)


def _hash_range(fd: int, offset: int, size: int) -> str:
    h = hashlib.sha256()
    while size > 0:
        data = os.pread(fd, min(size, _READ), offset)
        if not data:
            break
        h.update(data)
        offset += len(data)
        size -= len(data)
    return "sha256:" + h.hexdigest() if size == 0 else ""
