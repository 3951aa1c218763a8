"""What every graph driver provides, and the naive (mount and compare) diff built on top of it.

Drivers own the layer *contents* on disk; the layer store owns the metadata.  Applying and
exporting tar streams go through the archive engine so that confinement rules live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from ..idtools import IDMap

if TYPE_CHECKING:
    from ..archive.apply import ApplyResult
    from ..archive.changes import Change
    from ..archive.tarsplit import TarSplitWriter


@dataclass
class CreateOpts:
    mount_label: str = ""
    storage_opt: dict[str, str] = field(default_factory=dict)
    uid_map: list[IDMap] = field(default_factory=list)
    gid_map: list[IDMap] = field(default_factory=list)


@dataclass
class MountOpts:
    mount_label: str = ""
    options: list[str] = field(default_factory=list)
    uid_map: list[IDMap] = field(default_factory=list)
    gid_map: list[IDMap] = field(default_factory=list)
    volatile: bool = False


@dataclass
class ApplyDiffOpts:
    uid_map: list[IDMap] = field(default_factory=list)
    gid_map: list[IDMap] = field(default_factory=list)
    mount_label: str = ""
    ignore_chown_errors: bool = False
    tar_split: TarSplitWriter | None = None


@dataclass
class DriverOptions:
    """What the store hands a driver: its roots and the ``--storage-opt`` list."""

    root: str  # graphroot; the driver's home is root/<name>
    run_root: str
    image_store: str = ""
    options: list[str] = field(default_factory=list)


class Driver(Protocol):
    """The graph driver interface (Go's graphdriver.Driver, in our terms)."""

    name: str
    home: str

    def create(self, id: str, parent: str, opts: CreateOpts | None, read_write: bool) -> None: ...
    def remove(self, id: str) -> None: ...
    def get(self, id: str, opts: MountOpts) -> str: ...
    def put(self, id: str) -> None: ...
    def exists(self, id: str) -> bool: ...
    def status(self) -> list[tuple[str, str]]: ...
    def metadata(self, id: str) -> dict[str, str]: ...
    def cleanup(self) -> None: ...
    def additional_image_stores(self) -> list[str]: ...
    def list_layers(self) -> list[str]: ...
    def diff_root(self, id: str) -> str:
        """Directory holding exactly this layer's files, for tar-split reassembly."""
        ...
    def diff_lowers(self, id: str) -> list[str]:
        """Where reassembly looks for a file missing from ``diff_root`` (overlay's lowers)."""
        ...
    def apply_diff(self, id: str, parent: str, src: BinaryIO, opts: ApplyDiffOpts) -> ApplyResult: ...
    def diff(self, id: str, parent: str, out: BinaryIO, uid_map: Sequence[IDMap] = (),
             gid_map: Sequence[IDMap] = ()) -> int: ...
    def changes(self, id: str, parent: str) -> list[Change]: ...
    def diff_size(self, id: str, parent: str) -> int: ...


@dataclass
class StagedDiff:
    """A diff applied into a staging directory before its layer is locked or even exists.

    Pulls apply layers without holding store locks and commit them by rename (Go's
    DriverWithDifferOutput, for tarballs).
    """

    directory: str  # becomes the layer's files on commit
    result: ApplyResult
    tar_split: str = ""  # tar-split recorded while applying, moved next to layers.json on commit
    lock_fd: int = -1  # keeps other processes' cleanup away while the diff waits


@runtime_checkable
class StagingDriver(Protocol):
    """Drivers that can stage a diff and commit it later (Go's DriverWithDiffer)."""

    def prepare_staged(self, src: BinaryIO, opts: ApplyDiffOpts) -> StagedDiff: ...
    def commit_staged(self, id: str, parent: str, staged: StagedDiff) -> None: ...
    def cleanup_staged(self, staged: StagedDiff) -> None: ...


class NaiveDiff:
    """Diff, Changes and DiffSize by mounting both layers and comparing trees (Go's NaiveDiffDriver).

    Mixed into drivers that have no cheaper way to know a layer's own changes.
    """

    def get(self, id: str, opts: MountOpts) -> str:  # provided by the driver
        raise NotImplementedError

    def put(self, id: str) -> None:  # provided by the driver
        raise NotImplementedError

    def changes(self, id: str, parent: str) -> list[Change]:
        from ..archive.changes import changes_dirs

        ro = MountOpts(options=["ro"])
        layer_fs = self.get(id, ro)
        try:
            if not parent:
                return changes_dirs(layer_fs, None)
            parent_fs = self.get(parent, ro)
            try:
                return changes_dirs(layer_fs, parent_fs)
            finally:
                self.put(parent)
        finally:
            self.put(id)

    def diff(self, id: str, parent: str, out: BinaryIO, uid_map: Sequence[IDMap] = (),
             gid_map: Sequence[IDMap] = ()) -> int:
        from ..archive.changes import changes_dirs
        from ..archive.export import export_changes, export_tree

        ro = MountOpts(options=["ro"])
        layer_fs = self.get(id, ro)
        try:
            if not parent:
                # Go tars the whole tree in walk order here (TarWithOptions), not a change list.
                return export_tree(layer_fs, out, list(uid_map), list(gid_map))
            parent_fs = self.get(parent, ro)
            try:
                changes = changes_dirs(layer_fs, parent_fs)
            finally:
                self.put(parent)
            return export_changes(layer_fs, changes, out, list(uid_map), list(gid_map))
        finally:
            self.put(id)

    def diff_size(self, id: str, parent: str) -> int:
        from ..archive.changes import changes_size

        changes = self.changes(id, parent)
        layer_fs = self.get(id, MountOpts())
        try:
            return changes_size(layer_fs, changes)
        finally:
            self.put(id)
