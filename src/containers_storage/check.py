"""Store-wide consistency checks and repairs: Go's ``Store.Check`` and ``Store.Repair``.

``check`` walks every layer, image and container and reports, per item, what is wrong with it
in Go's words (the CLI prints these texts): big data items that are gone or resized, layers whose
diff no longer reproduces the recorded digest and size, layers whose mounted tree holds content
the diffs do not explain, dangling parent/image/layer references, layers nothing uses, and driver
directories no layer record owns.  Items of read-only (additional) stores are reported apart,
because nothing may repair them.  ``repair`` then deletes what is damaged, containers (only when
asked) before images before layers, through the store's ordinary delete paths and locks.

Deliberate differences from Go, each for safety rather than looks:
- a read-write layer whose parent lives in a read-only store is not reported as having a missing
  parent (Go checks parents before it has visited the read-only stores, so every container over
  an additional store's image looked damaged and ``check -r`` tried to delete its layer);
- driver directories of layers created while the check ran are not called unaccounted, and
  repair removes an unaccounted directory only while holding the layer lock and only if no
  record claims it by then (Go lists and removes them without a lock);
- parent chains that loop are walked once instead of forever.

And two where our machinery differs: with ``check_most`` (``--quick``) the diff is hashed but not
also parsed as tar (a diff that reproduces its recorded digest parsed when it was applied), and a
layer whose directory is gone is reported as ``open <layer dir>: ...`` rather than by the name of
its first file.

The check works through the store's public API (``CheckedStore`` says which part), so each step
takes the locks it needs, as any caller's would; records that vanish while the check runs (a
concurrent delete) are not reported as damaged.
"""

from __future__ import annotations

import os
import time

from . import TYPE_CHECKING, errors
from .checktree import go_os_text
from .errors import StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager
    from typing import Any, BinaryIO, Protocol

    from .checktree import Hdr, Ignore
    from .config import StoreOptions
    from .layers import LayerTree
    from .records import Container, Image, Layer

    class CheckedStore(Protocol):
        """What ``check`` and ``repair`` use of a ``Store``: its public API, nothing else."""

        options: StoreOptions

        def layers(self) -> list[Layer]: ...
        def images(self) -> list[Image]: ...
        def containers(self) -> list[Container]: ...
        def layer_big_data(self, ref: str, key: str) -> bytes: ...
        def image_big_data(self, ref: str, key: str) -> bytes: ...
        def container_big_data(self, ref: str, key: str) -> bytes: ...
        def diff(self, ref: str, out: BinaryIO, *, from_ref: str | None = None,
                 compression: int | None = None) -> None: ...
        def layer_tree(self, ref: str) -> AbstractContextManager[LayerTree]: ...
        def unaccounted_layers(self) -> list[str]: ...
        def remove_unaccounted_layer(self, id: str) -> bool: ...
        def delete_container(self, ref: str) -> None: ...
        def delete_image(self, ref: str, *, commit: bool = True) -> list[str]: ...
        def delete_layer(self, ref: str) -> None: ...
        def unmount(self, ref: str, *, force: bool = False) -> bool: ...

__all__ = [
    "DEFAULT_MAXIMUM_UNREFERENCED_LAYER_AGE",
    "CheckOptions",
    "CheckReport",
    "ContainerDataIncorrectSize",
    "ContainerDataMissing",
    "ContainerImageMissing",
    "ImageDataIncorrectSize",
    "ImageDataMissing",
    "ImageLayerMissing",
    "LayerContentModified",
    "LayerDataMissing",
    "LayerIncorrectContentDigest",
    "LayerIncorrectContentSize",
    "LayerMissing",
    "LayerUnaccounted",
    "LayerUnreferenced",
    "RepairOptions",
    "check",
    "check_everything",
    "check_most",
    "repair",
    "repair_everything",
]


# -- Go's sentinel errors (types/errors.go); a report entry's class says which problem it is ----
class LayerUnaccounted(StorageError):
    text = "layer in lower level storage driver not accounted for"


class LayerUnreferenced(StorageError):
    text = "layer not referenced by any images or containers"


class LayerIncorrectContentDigest(StorageError):
    text = "layer content incorrect digest"


class LayerIncorrectContentSize(StorageError):
    text = "layer content incorrect size"


class LayerContentModified(StorageError):
    text = "layer content modified"


class LayerDataMissing(StorageError):
    text = "layer data item is missing"


class LayerMissing(StorageError):
    text = "layer is missing"


class ImageLayerMissing(StorageError):
    text = "image layer is missing"


class ImageDataMissing(StorageError):
    text = "image data item is missing"


class ImageDataIncorrectSize(StorageError):
    text = "image data item has incorrect size"


class ContainerImageMissing(StorageError):
    text = "image missing"


class ContainerDataMissing(StorageError):
    text = "container data item is missing"


class ContainerDataIncorrectSize(StorageError):
    text = "container data item has incorrect size"


DEFAULT_MAXIMUM_UNREFERENCED_LAYER_AGE = 24 * 3600 * 1_000_000_000  # nanoseconds, as Go's 24h


class CheckOptions:
    """Which checks to run (Go's CheckOptions); the age is in nanoseconds, None for 24h."""

    def __init__(self, *, layer_unreferenced_maximum_age: int | None = None,
                 layer_digests: bool = False, layer_mountable: bool = False,
                 layer_contents: bool = False, layer_data: bool = False, image_data: bool = False,
                 container_data: bool = False) -> None:
        self.layer_unreferenced_maximum_age = layer_unreferenced_maximum_age
        self.layer_digests = layer_digests  # the diff still reproduces the recorded digest/size
        self.layer_mountable = layer_mountable  # the driver can mount every read-write layer
        self.layer_contents = layer_contents  # mounted trees hold what the diffs say (slow)
        self.layer_data = layer_data
        self.image_data = image_data
        self.container_data = container_data


def check_most() -> CheckOptions:
    """Everything but the comparison of mounted trees with their diffs (``check --quick``)."""
    return CheckOptions(layer_digests=True, layer_mountable=True, layer_data=True,
                        image_data=True, container_data=True)


def check_everything() -> CheckOptions:
    return CheckOptions(layer_digests=True, layer_mountable=True, layer_contents=True,
                        layer_data=True, image_data=True, container_data=True)


class CheckReport:
    """Problems found, per item ID, in discovery order (Go's CheckReport).

    ``layers``/``images`` are read-write items (repairable); ``ro_layers``/``ro_images`` belong
    to read-only stores.  An image also carries its layers' errors, and a container its image's.
    """

    def __init__(self) -> None:
        self.layers: dict[str, list[StorageError]] = {}
        self.ro_layers: dict[str, list[StorageError]] = {}
        self.images: dict[str, list[StorageError]] = {}
        self.ro_images: dict[str, list[StorageError]] = {}
        self.containers: dict[str, list[StorageError]] = {}
        self.layer_parents: dict[str, str] = {}  # every layer seen -> its parent ("" for none)
        self.layer_order: dict[str, int] = {}  # driver listing position (1-based), for removal

    def __bool__(self) -> bool:
        """True when anything at all was found."""
        return bool(self.layers or self.ro_layers or self.images or self.ro_images
                    or self.containers)

    def sections(self) -> list[tuple[str, dict[str, list[StorageError]]]]:
        """(heading word, errors by ID) in Go's output order."""
        return [("layer", self.layers), ("read-only layer", self.ro_layers), ("image", self.images),
                ("read-only image", self.ro_images), ("container", self.containers)]


class RepairOptions:
    """Go's RepairOptions: containers are only removed when asked (``check -r -f``)."""

    def __init__(self, *, remove_containers: bool = False) -> None:
        self.remove_containers = remove_containers


def repair_everything() -> RepairOptions:
    return RepairOptions(remove_containers=True)


def _add(errs: dict[str, list[StorageError]], id: str, err: StorageError) -> None:
    errs.setdefault(id, []).append(err)


def _text(err: BaseException, op: str = "open") -> str:
    if isinstance(err, OSError):
        return go_os_text(err, op)
    return str(err)


def _quote(name: str) -> str:
    from .quoting import go_quote

    return go_quote(name)


def _created_ns(layer: Layer) -> int | None:
    """The layer's creation time, or None for Go's zero time (or no usable time at all)."""
    from .records import ZERO_TIME, parse_time_ns

    text = layer.created
    if not text or text == ZERO_TIME:
        return None
    try:
        ns = parse_time_ns(text)
    except ValueError:
        return None
    return None if ns == _ZERO_TIME_NS else ns


_ZERO_TIME_NS = -62135596800 * 1_000_000_000  # 0001-01-01T00:00:00Z


# -- the whole check ----------------------------------------------------------------------------
def check(store: CheckedStore, options: CheckOptions | None = None) -> CheckReport:
    """Go's Store.Check: every problem found, per item.  Can be very expensive."""
    checker = _Checker(store, options if options is not None else check_most())
    checker.layers()
    checker.images()
    checker.containers()
    checker.unused_layers()
    return checker.report


class _Checker:
    """One check's state, phase by phase in Go's order (each phase under Go's locks)."""

    def __init__(self, store: CheckedStore, options: CheckOptions) -> None:
        from .checktree import Ignore

        self.store = store
        self.options = options
        self.ignore = Ignore(store.options.driver_options, store.options.pull_options)
        self.report = CheckReport()
        # Layer IDs seen, in read-write and in read-only stores, and whether anything uses them.
        self.referenced: dict[str, bool] = {}
        self.referenced_ro: dict[str, bool] = {}
        self.headers: dict[str, list[Hdr]] = {}  # diff headers of layers whose diff checked out
        self.examined_images: set[str] = set()

    def known(self, layer_id: str) -> bool:
        return layer_id in self.referenced or layer_id in self.referenced_ro

    def layers(self) -> None:
        """Big data, diffs and mounts of every layer, read-write ones first (then the mount
        checks of those), then those of the read-only stores, as Go goes store by store."""
        options, report = self.options, self.report
        layers = self.store.layers()
        rw = [layer for layer in layers if not layer.read_only]
        rw_layer_ids: list[str] = []
        for section in (rw, [layer for layer in layers if layer.read_only]):
            for layer in section:
                id = layer.id
                if self.known(id):  # a copy in a later store is never the one used
                    continue
                read_write = not layer.read_only
                desc = "" if read_write else "read-only "
                target = report.layers if read_write else report.ro_layers
                report.layer_parents[id] = layer.parent
                (self.referenced if read_write else self.referenced_ro)[id] = False
                if read_write:
                    rw_layer_ids.append(id)
                if options.layer_data:
                    _check_layer_data(self.store, layer, desc, target)
                if options.layer_digests and layer.uncompressed_digest:
                    found = _check_layer_diff(self.store, layer, desc, target, options.layer_contents)
                    if found is not None:
                        self.headers[id] = found
            if section is rw and options.layer_mountable:
                for layer in rw:
                    _check_layer_mount(self.store, layer, report, self.headers, options, self.ignore)
        # Dangling parents, once every store has been seen (see the module docstring).
        for id in rw_layer_ids:
            parent = report.layer_parents.get(id, "")
            if parent and not self.known(parent):
                _add(report.layers, id, LayerMissing.after(f"layer {parent}"))

    def images(self) -> None:
        """Big data sizes and layer chains of every image; an image inherits its layers' errors."""
        report = self.report
        for image in self.store.images():
            id = image.id
            if id in self.examined_images:
                continue
            self.examined_images.add(id)
            desc = "read-only " if image.read_only else ""
            target = report.ro_images if image.read_only else report.images
            if self.options.image_data:
                _check_sized_data(self.store.image_big_data, id, image.big_data_names,
                                  image.big_data_sizes, f"{desc}image {id}", target,
                                  ImageDataMissing, ImageDataIncorrectSize)
            seen_tops: set[str] = set()
            for top in [image.top_layer, *image.mapped_top_layers]:
                if not top or top in seen_tops:
                    continue
                seen_tops.add(top)
                for lid in _chain(report.layer_parents, top):
                    if lid in self.referenced:
                        self.referenced[lid] = True
                    elif lid in self.referenced_ro:
                        self.referenced_ro[lid] = True
                    else:
                        _add(target, id, ImageLayerMissing.after(f"{desc}image {id}: layer {lid}"))
                    inherited = report.layers.get(lid, []) + report.ro_layers.get(lid, [])
                    if inherited:
                        target.setdefault(id, []).extend(inherited)

    def containers(self) -> None:
        """Big data sizes and the image of every container, which inherits the image's errors."""
        report = self.report
        for c in self.store.containers():
            id = c.id
            if self.options.container_data:
                _check_sized_data(self.store.container_big_data, id, c.big_data_names,
                                  c.big_data_sizes, f"container {id}", report.containers,
                                  ContainerDataMissing, ContainerDataIncorrectSize)
            if c.image:
                if c.image not in self.examined_images:
                    _add(report.containers, id, ContainerImageMissing.after(f"image {c.image}"))
                inherited = report.images.get(c.image, []) + report.ro_images.get(c.image, [])
                if inherited:
                    report.containers.setdefault(id, []).extend(inherited)
            if c.layer:  # Go counts it as used without looking it up
                self.referenced[c.layer] = True

    def unused_layers(self) -> None:
        """Read-write layers nothing uses once old enough that no image can still be coming for
        them, and driver layers no record claims (layers made while the check ran have one)."""
        report = self.report
        max_age = self.options.layer_unreferenced_maximum_age
        if max_age is None:
            max_age = DEFAULT_MAXIMUM_UNREFERENCED_LAYER_AGE
        now = time.time_ns()
        for layer in self.store.layers():
            if layer.read_only or self.referenced.get(layer.id, False):
                continue
            created = _created_ns(layer)
            if created is None or created + max_age < now:
                _add(report.layers, layer.id, LayerUnreferenced.after(f"layer {layer.id}"))
        try:
            unaccounted = self.store.unaccounted_layers()
        except errors.NotSupported:
            return
        for lid in unaccounted:
            if lid not in self.referenced:
                _add(report.layers, lid, LayerUnaccounted.after(f"layer {lid}"))
                report.layer_order[lid] = len(report.layer_order) + 1


def _check_sized_data(read: Callable[[str, str], bytes], id: str, names: list[str],
                      sizes: dict[str, int], what: str, target: dict[str, list[StorageError]],
                      missing: type[StorageError], resized: type[StorageError]) -> None:
    """Every big data item of an image or container must be there with its recorded size."""
    for key in names:
        item = f"{what}: data item {_quote(key)}"
        data = _read_item(read, id, key, item, target, missing)
        if data is not None and len(data) != int(sizes.get(key, 0)):
            _add(target, id, resized.after(item))


def _read_item(read: Callable[[str, str], bytes], id: str, key: str, item: str,
               target: dict[str, list[StorageError]], missing: type[StorageError]) -> bytes | None:
    """A big data item read through (as Go does, so read errors show); None when it could not
    be (the problem is reported) or its record is gone (nothing to report)."""
    try:
        return read(id, key)
    except (FileNotFoundError, errors.BigDataUnknown):
        _add(target, id, missing.after(item))
    except errors.NotKnown:
        pass  # deleted while the check ran
    except (OSError, StorageError) as e:
        _add(target, id, StorageError(f"{item}: {_text(e)}"))
    return None


def _chain(parents: dict[str, str], top: str) -> Iterator[str]:
    """``top`` and its ancestors as far as the report knows them (each once)."""
    seen: set[str] = set()
    lid = top
    while lid and lid not in seen:
        seen.add(lid)
        yield lid
        lid = parents.get(lid, "")


def _check_layer_data(store: CheckedStore, layer: Layer, desc: str,
                      target: dict[str, list[StorageError]]) -> None:
    """Every big data item must be there and readable (nothing records their sizes)."""
    for name in layer.big_data_names:
        _read_item(store.layer_big_data, layer.id, name,
                   f"{desc}layer {layer.id}: data item {_quote(name)}", target, LayerDataMissing)


# -- the diff: digest, size and headers ----------------------------------------------------------
class _Digester:
    """A write-only file object for the diff: hashes and counts what passes through, and hands
    copies to a header reader in another thread when one is listening."""

    def __init__(self, algorithm: str, queue: Any = None) -> None:
        import hashlib

        self.hash = hashlib.new(algorithm)
        self.count = 0
        self.queue = queue
        self.cancelled = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.cancelled:
            raise _Cancelled()
        self.hash.update(data)
        n = len(data)
        self.count += n
        if self.queue is not None:
            self.queue.put(bytes(data))
        return n

    def flush(self) -> None:
        return None


class _Cancelled(Exception):
    """The reader gave up; the writer stops producing."""


class _StreamFailed(Exception):
    """The diff stream broke off with ``error`` (what Go's tar reader sees from its pipe)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _check_layer_diff(store: CheckedStore, layer: Layer, desc: str,
                      target: dict[str, list[StorageError]], want_headers: bool
                      ) -> list[Hdr] | None:
    """Regenerate the layer's diff (tar-split reassembly with CRC checks, or the driver's diff
    when there is no tar-split) and compare its digest and size with the record.  Returns the
    diff's headers when asked for and the diff checked out."""
    from .digest import DigestError, validate

    id = layer.id
    expected = layer.uncompressed_digest
    try:
        validate(expected)
    except DigestError as e:
        _add(target, id, StorageError(f"{desc}layer {id}: {e}"))
        return None
    algorithm = expected.partition(":")[0]
    if want_headers:
        digester, found, stream_error, archive_error = _diff_with_headers(store, layer, algorithm)
    else:
        digester = _Digester(algorithm)
        found = None
        stream_error = archive_error = None
        try:
            store.diff(id, digester, compression=0)  # type: ignore[arg-type]
        except Exception as e:
            stream_error = archive_error = e
    if isinstance(stream_error, errors.LayerUnknown):
        return None  # deleted while the check ran
    if stream_error is not None:
        # Go's reader drains the stream after the tar ends or fails, and meets the error again.
        text = _diff_error_text(stream_error)
        _add(target, id, StorageError(f"layer {id}: consume any trailer after the EOF marker: {text}"))
    if archive_error is not None:
        text = _diff_error_text(archive_error)
        _add(target, id, StorageError(f"{desc}layer {id}: {text}"))
        return None
    ok = True
    if f"{algorithm}:{digester.hash.hexdigest()}" != expected:
        _add(target, id, LayerIncorrectContentDigest.after(f"{desc}layer {id}"))
        ok = False
    recorded = layer.uncompressed_size
    if recorded != -1 and digester.count != recorded:
        _add(target, id, LayerIncorrectContentSize.after(
            f"{desc}layer {id}: read {digester.count} bytes instead of {recorded} bytes"))
        ok = False
    return found if ok else None


def _diff_with_headers(store: CheckedStore, layer: Layer, algorithm: str
                       ) -> tuple[_Digester, list[Hdr] | None, BaseException | None,
                                  BaseException | None]:
    """The diff produced in a worker thread and parsed as tar here, as Go pipes it to a tar
    reader; returns the digester, the headers, the stream's error and the parse's error."""
    import queue
    import threading

    from .archive.tarread import TarReader
    from .checktree import Hdr
    from .errors import InvalidArchive

    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
    digester = _Digester(algorithm, chunks)
    outcome: list[BaseException] = []

    def produce() -> None:
        try:
            store.diff(layer.id, digester, compression=0)  # type: ignore[arg-type]
        except _Cancelled:
            pass
        except BaseException as e:  # handed to the reader, as Go's pipe does
            outcome.append(e)
            chunks.put(e)
            return
        chunks.put(None)

    worker = threading.Thread(target=produce, name="check-diff", daemon=True)
    worker.start()
    finished = False

    def read_chunk() -> bytes:
        nonlocal finished
        if finished:
            return b""
        item = chunks.get()
        if item is None:
            finished = True
            return b""
        if isinstance(item, BaseException):
            finished = True
            raise _StreamFailed(item)
        return item

    hdrs: list[Hdr] = []
    archive_error: BaseException | None = None
    completed = False
    try:
        try:
            reader = TarReader(read_chunk)
            while True:
                hdr = reader.next()
                if hdr is None:
                    break
                hdrs.append(Hdr.from_tar(hdr))
        except _StreamFailed as e:
            archive_error = e.error
        except InvalidArchive as e:
            archive_error = e
        # Go's reader drains (and hashes) whatever follows: the trailer, or the rest of a
        # stream it could not parse; a stream error met here is reported by the caller.
        while True:
            try:
                if not read_chunk():
                    break
            except _StreamFailed:
                break
        completed = True
    finally:
        if not completed:  # interrupted: stop the producer and let it finish
            digester.cancelled = True
            while not finished:
                try:
                    read_chunk()
                except _StreamFailed:
                    pass
        worker.join()
    found = None if archive_error is not None else hdrs
    return digester, found, (outcome[0] if outcome else None), archive_error


def _diff_error_text(err: BaseException) -> str:
    """Go's text for a failed diff stream.

    Go's tar-split says ``file integrity checksum failed for "<name>"`` for any content that no
    longer matches (grown, shrunk or changed), and ``open <layer dir>/<name>: ...`` for a file
    that is gone; the reassembler's error carries the file and which of the two it was.
    """
    from .archive.tarsplit import ReassemblyError

    if isinstance(err, ReassemblyError) and err.file_name is not None:
        subject = os.fsdecode(err.file_name)
        if err.problem == "content":
            return f"file integrity checksum failed for {_quote(subject)}"
        cause = err.__cause__
        if err.problem == "missing" and isinstance(cause, OSError) and err.root is not None:
            from .archive.gopath import go_clean

            root = os.fsencode(err.root)
            path = os.fsdecode(go_clean(root + b"/" + err.file_name))
            message = os.strerror(cause.errno) if cause.errno else str(cause)
            return go_os_text(OSError(cause.errno, message, path), "open")
    if isinstance(err, ReassemblyError):
        return str(err)
    return _text(err)


def _check_layer_mount(store: CheckedStore, layer: Layer, report: CheckReport,
                       headers: dict[str, list[Hdr]], options: CheckOptions,
                       ignore: Ignore) -> None:
    """Mount the read-write layer read-only; with content checks, compare its tree with what
    the diffs of it and its parents say it should hold."""
    id = layer.id
    try:
        with store.layer_tree(id) as tree:
            _check_layer_contents(tree, layer, report, headers, options, ignore)
    except errors.LayerUnknown:
        pass  # deleted while the check ran
    except Exception as e:  # mounting or unmounting failed
        _add(report.layers, id, StorageError(f"layer {id}: {_text(e, 'stat')}"))


def _check_layer_contents(tree: LayerTree, layer: Layer, report: CheckReport,
                          headers: dict[str, list[Hdr]], options: CheckOptions,
                          ignore: Ignore) -> None:
    from .checktree import apply_headers, compare_trees, new_tree, scan_tree

    id = layer.id
    if not (options.layer_digests and layer.uncompressed_digest and options.layer_contents):
        return
    chain: list[list[Hdr]] = []
    for lid in _chain(report.layer_parents, id):
        found = headers.get(lid)
        if found is None:  # not every change that built this tree is known
            return
        chain.append(found)
    expected = new_tree()
    for hdrs in reversed(chain):
        apply_headers(expected, hdrs)
    try:
        actual = scan_tree(tree.path)
    except StorageError as e:
        _add(report.layers, id, StorageError(f"scanning contents of layer {id}: {e}"))
        return
    for diff in compare_trees(expected, actual, tree.uid_map, tree.gid_map, ignore):
        _add(report.layers, id, LayerContentModified(f"layer {id}: {diff}, {LayerContentModified.text}"))


# -- repair -------------------------------------------------------------------------------------
def repair(store: CheckedStore, report: CheckReport, options: RepairOptions | None = None
           ) -> list[StorageError]:
    """Go's Store.Repair: delete damaged containers (when asked), then damaged images with the
    layers only they used, then the remaining damaged layers, children before parents and known
    layers before stray driver directories.  Read-only stores are never touched.  Returns the
    deletions that failed."""
    if options is None:
        options = repair_everything()
    failed: list[StorageError] = []
    if options.remove_containers:
        for id in report.containers:
            try:
                store.delete_container(id)
            except errors.ContainerUnknown:
                pass
            except Exception as e:
                failed.append(StorageError(f"deleting container {id}: {_text(e)}"))
    deleted_layers: set[str] = set()
    for id in report.images:
        try:
            deleted_layers.update(store.delete_image(id))
        except (errors.ImageUnknown, errors.LayerUnknown):
            pass
        except Exception as e:
            failed.append(StorageError(f"deleting image {id}: {_text(e)}"))

    def unaccounted(id: str) -> bool:
        return any(isinstance(e, LayerUnaccounted) for e in report.layers[id])

    def order(id: str) -> tuple[int, int]:
        if unaccounted(id):  # stray directories last, in the driver's listing order
            return (1, report.layer_order.get(id, 0))
        return (0, -(len(list(_chain(report.layer_parents, id))) - 1))  # deepest first

    for id in sorted(report.layers, key=order):
        if id in deleted_layers:
            continue
        for reported in report.layers[id]:  # one attempt per problem, as in Go
            if isinstance(reported, LayerUnaccounted):
                try:
                    store.remove_unaccounted_layer(id)
                except Exception as e:
                    failed.append(StorageError(f"deleting storage layer {id}: {_text(e)}"))
                continue
            try:
                store.unmount(id, force=True)
            except Exception:
                pass  # Go only logs this; the delete below says what matters
            try:
                store.delete_layer(id)
            except (errors.LayerUnknown, errors.NotALayer, FileNotFoundError):
                pass
            except Exception as e:
                failed.append(StorageError(f"deleting layer {id}: {_text(e)}"))
    return failed
