"""What :meth:`Store.update_names <containers_storage.store.Store.update_names>` does with a list
of names (Go's ``updateNameOperation``).

A module of its own because ``enum`` costs every CLI call that imports it ~2 ms: the store and the
CLI pass the plain strings (a :class:`NameOperation` *is* one of them), and only a program that
names an operation imports this module.
"""

from __future__ import annotations

from enum import StrEnum


class NameOperation(StrEnum):
    """How a list of names changes the names a layer, image or container already has.

    Each member is also the plain string Go's code and our record stores use (``"set"``,
    ``"add"``, ``"remove"``).  Names are unique per kind of record: a name given to one image is
    taken away from any other image that had it.
    """

    #: Replace the names with the given ones (Go's ``SetNames``, deprecated there as racy).
    SET = "set"
    #: Put the given names first, then the names the record had (Go's ``AddNames``).
    ADD = "add"
    #: Drop the given names; names the record does not have are ignored (Go's ``RemoveNames``).
    REMOVE = "remove"


__all__ = ["NameOperation"]
