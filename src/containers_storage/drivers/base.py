"""What every graph driver provides, and the naive (mount and compare) diff built on top of it.

Drivers own the layer *contents* on disk; the layer store owns the metadata.  Applying and
exporting tar streams go through the archive engine so that confinement rules live in one place.
"""

from __future__ import annotations

from .. import TYPE_CHECKING
from ..errors import DriverError
from ..idtools import IDMap

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import BinaryIO, Protocol, TypeGuard

    from ..archive.apply import ApplyOptions, ApplyResult, InsufficientIDs
    from ..archive.changes import Change
    from ..archive.tarsplit import TarSplitWriter

    Mappings = tuple[Sequence[IDMap], Sequence[IDMap]]  # (uid maps, gid maps)
else:
    Protocol = object  # the interfaces below only matter to the type checker


class DriverUnsupported(DriverError):
    """The driver cannot work on this machine or file system (Go's ErrNotSupported,
    ErrPrerequisites and ErrIncompatibleFS): choosing a driver by priority tries the next one."""

    text = "driver not supported"
    prerequisites = "prerequisites for driver not satisfied (wrong filesystem?)"
    incompatible_fs = "backing file system is unsupported for this graph driver"

    @classmethod
    def describes(cls, err: BaseException) -> bool:
        """Whether ``err`` is one of these, by type or by Go's sentinel text at its end."""
        if isinstance(err, cls):
            return True
        text = str(err)
        return text.endswith((cls.text, cls.prerequisites, cls.incompatible_fs))


class CreateOpts:
    """How to create a layer: its mount label, driver options and ID mappings."""

    def __init__(
        self,
        mount_label: str = "",
        storage_opt: dict[str, str] | None = None,
        uid_map: list[IDMap] | None = None,
        gid_map: list[IDMap] | None = None,
    ) -> None:
        self.mount_label = mount_label
        self.storage_opt: dict[str, str] = dict(storage_opt or {})
        self.uid_map: list[IDMap] = list(uid_map or [])
        self.gid_map: list[IDMap] = list(gid_map or [])


class MountOpts:
    """How to mount a layer: label, options ("ro", ...), ID mappings, volatile upper dir.

    ``disable_shifting`` (Go's DisableShifting) says the maps must not be applied at mount time,
    e.g. because the layer's files were already re-owned to them.
    """

    def __init__(
        self,
        mount_label: str = "",
        options: list[str] | None = None,
        uid_map: list[IDMap] | None = None,
        gid_map: list[IDMap] | None = None,
        volatile: bool = False,
        disable_shifting: bool = False,
    ) -> None:
        self.mount_label = mount_label
        self.options: list[str] = list(options or [])
        self.uid_map: list[IDMap] = list(uid_map or [])
        self.gid_map: list[IDMap] = list(gid_map or [])
        self.volatile = volatile
        self.disable_shifting = disable_shifting


class ApplyDiffOpts:
    """How to apply a diff into a layer, and where its tar-split goes."""

    def __init__(
        self,
        uid_map: list[IDMap] | None = None,
        gid_map: list[IDMap] | None = None,
        mount_label: str = "",
        ignore_chown_errors: bool = False,
        tar_split: TarSplitWriter | None = None,
    ) -> None:
        self.uid_map: list[IDMap] = list(uid_map or [])
        self.gid_map: list[IDMap] = list(gid_map or [])
        self.mount_label = mount_label
        self.ignore_chown_errors = ignore_chown_errors
        self.tar_split = tar_split


class DriverOptions:
    """What the store hands a driver: its roots and the ``--storage-opt`` list, and the
    ``driver_priority`` of storage.conf for choosing one when none is named."""

    def __init__(self, root: str, run_root: str, image_store: str = "",
                 options: list[str] | None = None, priority: list[str] | None = None) -> None:
        self.root = root  # graphroot; the driver's home is root/<name>
        self.run_root = run_root
        self.image_store = image_store
        self.options: list[str] = list(options or [])
        self.priority: list[str] = list(priority or [])


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
             gid_map: Sequence[IDMap] = (), parent_maps: Mappings = ((), ())) -> int:
        """Tar the layer's changes; owners written as container IDs (``uid_map``/``gid_map``).

        ``parent_maps`` are the parent's (uid, gid) maps, for comparing owners across layers
        whose mappings differ.
        """
        ...
    def changes(self, id: str, parent: str, maps: Mappings = ((), ()),
                parent_maps: Mappings = ((), ())) -> list[Change]: ...
    def diff_size(self, id: str, parent: str, maps: Mappings = ((), ()),
                  parent_maps: Mappings = ((), ())) -> int: ...
    def supports_shifting(self, uid_map: Sequence[IDMap] = (), gid_map: Sequence[IDMap] = ()) -> bool:
        """Whether mounts can shift IDs, so a mapped layer needs no re-owned copy (Go's)."""
        ...
    def update_layer_id_map(self, id: str, old: Mappings, new: Mappings, mount_label: str = "") -> None:
        """Re-own the layer's files from the ``old`` (uid, gid) maps to the ``new`` ones."""
        ...
    def create_from_template(self, id: str, template: str, parent: str, opts: CreateOpts | None,
                             read_write: bool) -> None:
        """A layer with ``template``'s contents, recorded over ``parent`` (Go's CreateFromTemplate).

        The caller re-owns it afterwards when the mappings differ.
        """
        ...


class StagedDiff:
    """A diff applied into a staging directory before its layer is locked or even exists.

    Pulls apply layers without holding store locks and commit them by rename (Go's
    DriverWithDifferOutput, for tarballs).
    """

    def __init__(self, directory: str, result: ApplyResult, tar_split: str = "",
                 lock_fd: int = -1) -> None:
        self.directory = directory  # becomes the layer's files on commit
        self.result = result
        self.tar_split = tar_split  # tar-split recorded while applying, moved on commit
        self.lock_fd = lock_fd  # keeps other processes' cleanup away while the diff waits
        # From a partial pull (archive/chunked): the TOC digest and the big data to record, and
        # the root directory's mode when the layer sets it (else the parent's is kept).
        self.toc_digest = ""
        self.big_data: dict[str, bytes] = {}
        self.big_data_files: dict[str, str] = {}  # key -> a synced temporary file to rename in
        self.root_dir_mode: int | None = None

    def drop_big_data_files(self) -> None:
        """Remove the staged big data files that were not moved into a layer."""
        from ..fsutil import unlink_if_there

        for path in self.big_data_files.values():
            unlink_if_there(path)


class StagingDiffer(Protocol):
    """A partial-pull differ (archive/chunked's ChunkedDiffer), as a driver sees it."""

    def apply(self, dest: str, options: ApplyOptions) -> DifferResult: ...


class DifferResult(Protocol):
    """What a differ's ``apply`` reports (archive/chunked's DifferOutput)."""

    toc_digest: str
    uncompressed_digest: str
    compressed_digest: str
    size: int
    uids: list[int]
    gids: list[int]
    big_data: dict[str, bytes]
    big_data_files: dict[str, str]
    tar_split: str
    root_dir_mode: int | None


class StagingDriver(Protocol):
    """Drivers that can stage a diff and commit it later (Go's DriverWithDiffer)."""

    def prepare_staged(self, src: BinaryIO, opts: ApplyDiffOpts) -> StagedDiff: ...
    def prepare_staged_differ(self, differ: StagingDiffer, opts: ApplyDiffOpts) -> StagedDiff: ...
    def commit_staged(self, id: str, parent: str, staged: StagedDiff) -> None: ...
    def cleanup_staged(self, staged: StagedDiff) -> None: ...


# Go's naive ApplyDiff unpacks in a re-executed child process; its failure reads so.
NAIVE_APPLY_FAILED = "ApplyLayer stdout:  stderr: {} exit status 1"


def naive_apply_failure(err: InsufficientIDs) -> InsufficientIDs:
    """``err`` as Go's naive ApplyDiff reports it, logged at error level as Go logs it."""
    from ..lazylog import LazyLogger

    wrapped = err.wrapped(NAIVE_APPLY_FAILED)
    LazyLogger(__name__).error("While applying layer: %s", wrapped)
    return wrapped


def can_stage(driver: Driver) -> TypeGuard[StagingDriver]:
    return callable(getattr(driver, "prepare_staged", None))


def can_stage_differ(driver: Driver) -> TypeGuard[StagingDriver]:
    """Whether the driver takes partial pulls (Go's DriverWithDiffer: overlay)."""
    return callable(getattr(driver, "prepare_staged_differ", None))


class NaiveDiff:
    """Diff, Changes and DiffSize by mounting both layers and comparing trees (Go's NaiveDiffDriver).

    Mixed into drivers that have no cheaper way to know a layer's own changes.  Owners are
    compared as container IDs, each side through its own mappings, so a layer whose files were
    only re-owned for new mappings shows no changes.
    """

    def get(self, id: str, opts: MountOpts) -> str:  # provided by the driver
        raise NotImplementedError

    def put(self, id: str) -> None:  # provided by the driver
        raise NotImplementedError

    def changes(self, id: str, parent: str, maps: Mappings = ((), ()),
                parent_maps: Mappings = ((), ())) -> list[Change]:
        from ..archive.changes import changes_dirs

        ro = MountOpts(options=["ro"])
        layer_fs = self.get(id, ro)
        try:
            if not parent:
                return changes_dirs(layer_fs, None)
            parent_fs = self.get(parent, ro)
            try:
                return changes_dirs(layer_fs, parent_fs, new_uid_map=maps[0], new_gid_map=maps[1],
                                    old_uid_map=parent_maps[0], old_gid_map=parent_maps[1])
            finally:
                self.put(parent)
        finally:
            self.put(id)

    def diff(self, id: str, parent: str, out: BinaryIO, uid_map: Sequence[IDMap] = (),
             gid_map: Sequence[IDMap] = (), parent_maps: Mappings = ((), ())) -> int:
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
                changes = changes_dirs(layer_fs, parent_fs, new_uid_map=uid_map, new_gid_map=gid_map,
                                       old_uid_map=parent_maps[0], old_gid_map=parent_maps[1])
            finally:
                self.put(parent)
            return export_changes(layer_fs, changes, out, list(uid_map), list(gid_map))
        finally:
            self.put(id)

    def diff_size(self, id: str, parent: str, maps: Mappings = ((), ()),
                  parent_maps: Mappings = ((), ())) -> int:
        from ..archive.changes import changes_size

        changes = self.changes(id, parent, maps, parent_maps)
        layer_fs = self.get(id, MountOpts())
        try:
            return changes_size(layer_fs, changes)
        finally:
            self.put(id)

    def apply_diff(self, id: str, parent: str, src: BinaryIO, opts: ApplyDiffOpts) -> ApplyResult:
        """Apply a layer tarball into the layer's directory (Go's NaiveDiffDriver.ApplyDiff)."""
        return self._apply_plain(id, src, opts, opts.ignore_chown_errors)

    def _apply_plain(self, id: str, src: BinaryIO, opts: ApplyDiffOpts, ignore_chown_errors: bool
                     ) -> ApplyResult:
        """Apply ``src`` into the layer as is, whiteouts as plain ``.wh.`` files, owners mapped by
        the layer's maps, chown failures ignored when ``ignore_chown_errors``."""
        from ..archive.apply import ApplyOptions, InsufficientIDs, apply_layer

        target = self.get(id, MountOpts(mount_label=opts.mount_label))
        options = ApplyOptions(
            whiteouts="plain",
            uid_map=list(opts.uid_map) or None,
            gid_map=list(opts.gid_map) or None,
            ignore_chown_errors=ignore_chown_errors,
            force_mask=None,
            tar_split=opts.tar_split,
        )
        try:
            return apply_layer(src, target, options)
        except InsufficientIDs as e:
            raise naive_apply_failure(e) from e


class NaiveIDMapUpdater:
    """UpdateLayerIDMap by mounting the layer and re-owning every file (Go's naive updater)."""

    def get(self, id: str, opts: MountOpts) -> str:  # provided by the driver
        raise NotImplementedError

    def put(self, id: str) -> None:  # provided by the driver
        raise NotImplementedError

    def supports_shifting(self, uid_map: Sequence[IDMap] = (), gid_map: Sequence[IDMap] = ()) -> bool:
        return False

    def update_layer_id_map(self, id: str, old: Mappings, new: Mappings, mount_label: str = "") -> None:
        from .chown import chown_by_maps

        layer_fs = self.get(id, MountOpts(mount_label=mount_label))
        try:
            chown_by_maps(layer_fs, old[0], old[1], new[0], new[1])
        finally:
            self.put(id)
