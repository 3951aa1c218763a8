"""Partial layers: zstd:chunked and eStargz, read, written, and pulled file by file.

A zstd:chunked (or eStargz) layer blob carries a table of contents that says where each file's
content is, so a store that already holds most of a layer's files (in other layers) needs to
fetch only the rest, by range requests.  This package is that part of Go's ``pkg/chunked``:

- :func:`compress` writes a layer tarball as a zstd:chunked blob and its annotations (for
  image builders: any zstd reader still reads it as a plain ``tar+zstd`` layer).
- :func:`new_differ` checks a layer's TOC against its annotations and prepares a partial apply
  (Go's ``NewDiffer``); :meth:`Store.prepare_staged_layer
  <containers_storage.store.Store.prepare_staged_layer>` runs it and :meth:`Store.apply_staged_layer
  <containers_storage.store.Store.apply_staged_layer>` makes the layer (Go's
  ``PrepareStagedLayer`` / ``ApplyStagedLayer``).  :func:`pull_layer` does both, falling back to
  a full pull where Go falls back.
- :class:`FileBlobSource` and :class:`HTTPBlobSource` serve a blob's ranges from a local file or
  a registry's blob URL.

Imported lazily: nothing here loads until used (the CLI's start-up stays short).
"""

from __future__ import annotations

from ... import TYPE_CHECKING

if TYPE_CHECKING:
    from .compressor import DEFAULT_LEVEL, ChunkedBlob, compress
    from .differ import ChunkedDiffer, DifferOutput, PullOptions, new_differ
    from .pull import pull_layer
    from .source import BlobSource, FileBlobSource, HTTPBlobSource, RangeReader
    from .toc import BadRangeRequest, ChunkedError, FallbackToFullPull, toc_digest

__all__ = [
    "DEFAULT_LEVEL",
    "BadRangeRequest",
    "BlobSource",
    "ChunkedBlob",
    "ChunkedDiffer",
    "ChunkedError",
    "DifferOutput",
    "FallbackToFullPull",
    "FileBlobSource",
    "HTTPBlobSource",
    "PullOptions",
    "RangeReader",
    "compress",
    "new_differ",
    "pull_layer",
    "toc_digest",
]

_WHERE = {
    "DEFAULT_LEVEL": "compressor", "ChunkedBlob": "compressor", "compress": "compressor",
    "ChunkedDiffer": "differ", "DifferOutput": "differ", "PullOptions": "differ", "new_differ": "differ",
    "pull_layer": "pull",
    "BlobSource": "source", "FileBlobSource": "source", "HTTPBlobSource": "source", "RangeReader": "source",
    "BadRangeRequest": "toc", "ChunkedError": "toc", "FallbackToFullPull": "toc", "toc_digest": "toc",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
