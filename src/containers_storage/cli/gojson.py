"""Records as the Go CLI prints them in --json mode.

Go decodes each record into its struct and encodes it again, so the output has the struct's
field order, ``omitempty`` applied, map keys sorted and unknown keys dropped: ``gojson.go_struct``
without the unknown keys.  Records written by Go (or by our store, which writes the same bytes)
already look like that, which a cached check of their key sequence recognises; only the others
are rebuilt.
"""

from __future__ import annotations

from .. import TYPE_CHECKING
from ..gojson import CONTAINER_FIELDS, IMAGE_FIELDS, LAYER_FIELDS, go_struct

if TYPE_CHECKING:
    from typing import Any

__all__ = ["CONTAINER_FIELDS", "IMAGE_FIELDS", "LAYER_FIELDS", "containers_view", "go_view",
           "images_view", "layers_view"]


def go_view(raw: dict[str, Any], fields: tuple[tuple[str, bool], ...]) -> dict[str, Any]:
    """One record as Go prints it (``raw`` itself when it already is that)."""
    # Maps of records in Go's order are trusted to be sorted: every writer sorts them, and
    # checking costs a listing of big stores more than the rest of the view.
    return go_struct(raw, fields, keep_unknown=False, check_sorted=False)


def _view(raws: list[dict[str, Any]], fields: tuple[tuple[str, bool], ...]) -> list[dict[str, Any]]:
    return [go_struct(r, fields, keep_unknown=False, check_sorted=False) for r in raws]


def layers_view(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _view(raws, LAYER_FIELDS)


def images_view(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _view(raws, IMAGE_FIELDS)


def containers_view(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _view(raws, CONTAINER_FIELDS)
