"""Applying a zstd:chunked or eStargz layer file by file (Go's chunkedDiffer).

:func:`new_differ` reads and checks the layer's TOC (Go's ``NewDiffer``: no store lock is held,
a few ranges are fetched); :meth:`Store.prepare_staged_layer
<containers_storage.store.Store.prepare_staged_layer>` then has the driver make a staging
directory and calls :meth:`ChunkedDiffer.apply` into it, and :meth:`Store.apply_staged_layer
<containers_storage.store.Store.apply_staged_layer>` makes it a layer.

How the files get written: the layer's tarball is rebuilt, in order, from its tar-split (the
headers) and the file contents — each file from a copy in another layer when the store has one
(found by the digest that layer's TOC records), else chunk by chunk from local copies, holes and
the ranges fetched in one request — and that stream goes through the ordinary layer apply
(``archive.apply``), with its confinement, whiteouts, ownership and ID mapping.  Files found
locally are not written from the stream but cloned (reflinks where the file system has them) or,
with ``use_hard_links``, hard linked.  The stream's digest is the layer's diff ID, which Go
computes the same way, by reading the staged files back through the tar-split.  Every file's
content is checked against its tar-split checksum on the way, and against its TOC digest unless
it was taken whole from another layer (Go does not hash those again either); a wrong one fails
the whole layer, and the staging directory goes.
"""

from __future__ import annotations

import hashlib
import os

from ... import TYPE_CHECKING
from ...errors import InvalidArchive, StorageError
from ..crc64 import crc64
from . import toc as _toc
from .manifest import (
    ESTARGZ,
    UNCOMPRESSED,
    ZSTD_CHUNKED,
    LayerTOC,
    check_none_pending,
    checked_entries,
)
from .plan import MAX_MISSING_CHUNKS, Op, Part, merge_missing_chunks, network_ranges
from .toc import BadRangeRequest, ChunkedError, FallbackToFullPull

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import IO, Any, NoReturn

    from ...store import Store
    from ..apply import ApplyOptions, ApplyResult
    from ..compression import _Member
    from .reuse import LayerIndex
    from .source import BlobSource, RangeReader

__all__ = ["ChunkedDiffer", "DifferOutput", "PullOptions", "new_differ"]

MANIFEST_KEY = "zstd-chunked-manifest"
LAYER_DATA_KEY = "zstd-chunked-layer-data"
LAYER_DATA = b'{"format":0}'  # Go's chunkedLayerData for DifferOutputFormatDir

_PIECE = 1 << 20  # stream pieces handed to the apply thread (it applies a piece at a time)
_READ_AHEAD = 256  # local copies asked of the disk ahead of the one being read (an fd each)
_OPEN_BATCH = 16  # local copies opened in one call (without the GIL when it is C's)
_ZEROS = bytes(_PIECE)


class PullOptions:
    """storage.conf's ``pull_options`` as Go parses them (a value counts when it is "true").

    Attributes:
        enable_partial_images: pull zstd:chunked/eStargz layers partially at all.
        use_hard_links: share identical files with other layers by hard link.
        convert_images: turn layers without a TOC into partial ones (fetching them whole).
        insecure_allow_unpredictable_image_contents: accept layers whose diff ID cannot be
            computed (eStargz, zstd:chunked without tar-split), as Go does with this option.
        ignored: options given that this implementation does not act on (``ostree_repos``).
    """

    def __init__(self, options: Mapping[str, str] | None = None) -> None:
        """Parse ``options`` (storage.conf's table, values as strings)."""
        options = dict(options or {})

        def flag(name: str) -> bool:
            return str(options.get(name, "")).lower() == "true"

        self.enable_partial_images = flag("enable_partial_images")
        self.use_hard_links = flag("use_hard_links")
        self.convert_images = flag("convert_images")
        self.insecure_allow_unpredictable_image_contents = flag("insecure_allow_unpredictable_image_contents")
        known = {"enable_partial_images", "use_hard_links", "convert_images",
                 "insecure_allow_unpredictable_image_contents"}
        self.ignored = sorted(k for k in options if k not in known and options[k])


class DifferOutput:
    """What a partial apply leaves for the layer record (Go's ``DriverWithDifferOutput``).

    Attributes:
        toc_digest: the TOC digest (the layer's ``toc-digest``), "" for converted layers.
        uncompressed_digest: the diff ID, "" when it cannot be known (no tar-split).
        compressed_digest: the blob's digest when the whole blob was read (convert_images).
        size: the tarball's size, -1 when unknown.
        uids: the owners in the TOC.
        gids: the groups in the TOC.
        big_data: the layer's big data items (``zstd-chunked-manifest``,
            ``zstd-chunked-layer-data``).
        big_data_files: big data items written already, each to a synced temporary file beside
            the layer store's records (key -> path): the commit renames them into place, and
            whoever drops the result removes them.
        tar_split: path of the gzipped tar-split to keep with the layer, or "".
        root_dir_mode: the mode the layer gives its root directory, or None.
        fetched_bytes: bytes asked of the blob source for file contents.
    """

    def __init__(self) -> None:
        self.toc_digest = ""
        self.uncompressed_digest = ""
        self.compressed_digest = ""
        self.size = -1
        self.uids: list[int] = []
        self.gids: list[int] = []
        self.big_data: dict[str, bytes] = {}
        self.big_data_files: dict[str, str] = {}
        self.tar_split = ""
        self.root_dir_mode: int | None = None
        self.fetched_bytes = 0


def new_differ(store: Store, *, blob_digest: str, blob_size: int, annotations: Mapping[str, str],
               source: BlobSource) -> ChunkedDiffer:
    """Check that the layer can be applied partially and read its TOC (Go's ``NewDiffer``).

    Call it without holding store locks; pass the result to
    :meth:`~containers_storage.store.Store.prepare_staged_layer`, and close it afterwards.

    Args:
        store: the store the layer goes into (its pull options and its other layers count).
        blob_digest: the blob's digest (checked when convert_images reads the whole blob).
        blob_size: the blob's size.
        annotations: the layer descriptor's annotations in the image manifest.
        source: where the blob's ranges come from.

    Raises:
        FallbackToFullPull: a partial pull is not possible (disabled, no TOC, a driver without
            staging, a registry without ranges, ...): pull the whole blob instead.
        ChunkedError: the layer announces a TOC that does not match its digest, or one that is
            malformed (in a store with no partially pulled layers, where the layer is applied
            whole, the TOC is read while it is applied: its faults, and a TOC that names no
            tar-split, which falls back as here, come from ``prepare_staged_layer`` then).
        StorageError: ``convert_images`` demands a partial pull that cannot be done.
    """
    from ...drivers.base import can_stage_differ

    opts = PullOptions(store.options.pull_options)
    if not opts.enable_partial_images:
        raise FallbackToFullPull("partial images are disabled")
    driver = store.driver
    if not can_stage_differ(driver):
        if opts.convert_images:
            raise StorageError(f"graph driver {driver.name} does not support partial pull but "
                               "convert_images requires that")
        raise FallbackToFullPull(f"graph driver {driver.name} does not support partial pull")
    # Go builds its layers cache in NewDiffer, where no lock is held; so do we, in a thread while
    # the TOC is fetched and parsed (reading the other layers' TOCs waits for the disk).
    indexing = _Indexing(store)

    def nothing_to_reuse() -> bool:
        # A store without partially pulled layers has nothing to reuse: the layer is applied
        # whole, its TOC read as it streams.  (Only the list of those layers is waited for: with
        # some, their TOCs are read into the index while this TOC is read, now.)
        return indexing.listed() == 0

    try:
        layer_toc = _read_toc(store, blob_size, annotations, source, opts, nothing_to_reuse)
    except FallbackToFullPull as e:
        if not opts.convert_images:
            indexing.discard()
            raise
        if not e.can_convert:
            indexing.discard()
            raise StorageError(f"neither a partial pull nor convert_images is possible: {e}") from None
        return ChunkedDiffer(store, opts, source, blob_digest, blob_size, None, indexing.result())
    except BaseException:
        indexing.discard()
        raise
    try:
        index = indexing.result()
    except BaseException:
        layer_toc.close()
        raise
    return ChunkedDiffer(store, opts, source, blob_digest, blob_size, layer_toc, index)


class _Indexing:
    """:func:`layer_index` of a store, made in a thread of its own."""

    def __init__(self, store: Store) -> None:
        import _thread

        from ... import lightthread

        self._store = store
        self._index: LayerIndex | None = None
        self._error: BaseException | None = None
        self._count = -1  # the layers it reads the TOCs of; -1 until known (or on an error)
        self._listing = _thread.allocate_lock()
        self._listing.acquire()  # released once _count is known
        self._running = lightthread.start(self._run)

    def _run(self) -> None:
        told = False

        def listed(count: int) -> None:
            nonlocal told
            self._count = count
            told = True
            self._listing.release()

        try:
            self._index = layer_index(self._store, listed)
        except BaseException as e:  # raised in the caller's thread by result()
            self._error = e
        finally:
            if not told:
                self._listing.release()

    def listed(self) -> int:
        """How many layers' TOCs the index reads, once that is known; -1 after an error."""
        self._listing.acquire()
        self._listing.release()
        return self._count

    def result(self) -> LayerIndex:
        """The index, once made (what making it raised, raised here)."""
        self._running.acquire()
        self._running.release()
        if self._error is not None:
            raise self._error
        assert self._index is not None
        return self._index

    def discard(self) -> None:
        """Wait for the thread and drop what it made (the caller is failing anyway)."""
        try:
            self.result().close()
        except Exception:
            pass


def _read_toc(store: Store, blob_size: int, annotations: Mapping[str, str], source: BlobSource,
              opts: PullOptions, nothing_to_reuse: Callable[[], bool]) -> LayerTOC:
    from .manifest import NO_TAR_SPLIT, read_estargz_toc, read_zstd_chunked_toc, reading_manifest

    digest = _toc.toc_digest(annotations)
    if digest is None:
        message = "no TOC found"
        if not opts.convert_images:
            message += " and convert_images is not configured"
        raise FallbackToFullPull(message, can_convert=True)
    if _toc.ESTARGZ_TOC_DIGEST in annotations:
        if not opts.insecure_allow_unpredictable_image_contents:
            raise FallbackToFullPull("estargz layers don't support partial pulls with guaranteed consistency "
                                     "with non-partial pulls", can_convert=True)
        try:
            return read_estargz_toc(source, blob_size, digest)
        except (ChunkedError, FallbackToFullPull) as e:
            raise type(e)(f"read zstd:chunked manifest: {e}") from e
    try:
        # (Read late only where a TOC without a tar-split would fall back as Go does.)
        late = not (opts.insecure_allow_unpredictable_image_contents or opts.convert_images)
        layer_toc = read_zstd_chunked_toc(source, blob_size, digest, annotations, store.run_root, check=False,
                                          defer=nothing_to_reuse if late else None)
    except ChunkedError as e:
        raise reading_manifest(e) from e
    except FallbackToFullPull as e:
        raise FallbackToFullPull(f"read zstd:chunked manifest: {e}", can_convert=e.can_convert) from e
    if layer_toc.tar_split is None and not opts.insecure_allow_unpredictable_image_contents:
        layer_toc.close()
        raise FallbackToFullPull(NO_TAR_SPLIT, can_convert=True)
    return layer_toc


def layer_index(store: Store, listed: Callable[[int], None] | None = None) -> LayerIndex:
    """The store's partially pulled layers, indexed by file and chunk digest; ``listed`` is told
    how many there are before their TOCs are read."""
    from ...errors import BigDataUnknown
    from .reuse import LayerIndex

    index = LayerIndex(PullOptions(store.options.pull_options).use_hard_links)
    rl = store.layer_store
    with rl.reading():
        candidates = [(layer.id, rl.driver) for layer in rl.records
                      if MANIFEST_KEY in layer.big_data_names and not layer.incomplete]
    if listed is not None:
        listed(len(candidates))
    for layer_id, driver in candidates:
        try:
            manifest = store.layer_big_data(layer_id, MANIFEST_KEY)
            root = driver.diff_root(layer_id)
        except (BigDataUnknown, StorageError, OSError):
            continue
        index.add_layer(root, manifest)
    return index


class _Stream:
    """The file-like object the apply thread reads the rebuilt tarball from."""

    def __init__(self, gen: Iterator[bytes]) -> None:
        self._gen = gen
        self.error: BaseException | None = None

    def read(self, n: int = -1, /) -> bytes:
        try:
            return next(self._gen, b"")
        except BaseException as e:
            self.error = e
            raise


class ChunkedDiffer:
    """A layer to apply partially, its TOC read and checked (Go's ``chunkedDiffer``).

    Made by :func:`new_differ`; used once by
    :meth:`~containers_storage.store.Store.prepare_staged_layer`; :meth:`close` it afterwards.

    Attributes:
        kind: ``"zstd:chunked"``, ``"estargz"``, or ``"convert"`` (a layer without a TOC that
            ``convert_images`` fetches whole).
        toc_digest: the TOC's digest, "" when converting.
        options: the store's pull options.
    """

    def __init__(self, store: Store, options: PullOptions, source: BlobSource, blob_digest: str,
                 blob_size: int, layer_toc: LayerTOC | None, index: LayerIndex) -> None:
        """Use :func:`new_differ`."""
        self.options = options
        self.kind = layer_toc.kind if layer_toc is not None else "convert"
        self.toc_digest = layer_toc.toc_digest if layer_toc is not None else ""
        self._store = store
        self._source = source
        self._blob_digest = blob_digest
        self._blob_size = blob_size
        self._toc = layer_toc
        self._used = False
        self.fetched_bytes = 0  # bytes of file data asked of the source by apply()
        self._converted: IO[bytes] | None = None  # convert_images: the rewritten blob (unnamed)
        self._index = index  # the store's other partially pulled layers (closed by close())

    def close(self) -> None:
        """Drop the temporary files (the tar-split, a converted blob)."""
        if self._toc is not None:
            self._toc.close()
        self._index.close()
        if self._converted is not None:
            self._converted.close()
            self._converted = None

    def __enter__(self) -> ChunkedDiffer:
        """Itself; :meth:`close` on the way out."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close it."""
        self.close()

    # -- apply -----------------------------------------------------------------------------------
    def apply(self, dest: str, options: ApplyOptions) -> DifferOutput:
        """Write the layer's files into the empty directory ``dest`` (Go's ``ApplyDiff``).

        ``options`` are the driver's (whiteout form, ID maps, force_mask); the caller removes
        ``dest`` when this raises.

        Raises:
            ChunkedError: content that does not match the TOC, a source that sends wrong data.
            InvalidArchive: what a tar apply refuses (names escaping the layer, ...).
            BadRangeRequest: the source refuses even a single range.
        """
        if self._used:
            raise StorageError("internal error: chunked differ already used")
        self._used = True
        out = DifferOutput()
        try:
            return self._apply(dest, options, out)
        except BaseException:
            from ...fsutil import unlink_if_there

            for path in out.big_data_files.values():
                unlink_if_there(path)
            raise

    def _apply(self, dest: str, options: ApplyOptions, out: DifferOutput) -> DifferOutput:
        tmp_dir = os.path.dirname(dest.rstrip("/")) or "."
        source = self._source
        kind = self.kind
        layer_toc = self._toc
        if layer_toc is None:
            layer_toc, source, out.uncompressed_digest = self._convert(tmp_dir)
            self._toc = layer_toc
            out.compressed_digest = self._blob_digest
            kind = UNCOMPRESSED
        else:
            out.toc_digest = layer_toc.toc_digest
        out.big_data = {LAYER_DATA_KEY: LAYER_DATA}  # (the manifest is staged: see _stream_ended)
        whole = kind == ZSTD_CHUNKED and layer_toc.tar_split is not None
        plan: _Plan | None = None
        if whole and (self._index.files or self._index.chunks):
            plan = _Plan(layer_toc.toc, self._index, self.options.use_hard_links)
            whole = plan.all_fetched
        if whole:
            # Nothing in the store to reuse: the blob's frames, applied as a .tar.zst is (the TOC
            # is read, parsed and checked on the way, in the reading thread).
            result = self._apply_whole(layer_toc, source, dest, options, tmp_dir, out)
            assert layer_toc.tar_split is not None
            out.uncompressed_digest = result.uncompressed_digest
            out.size = layer_toc.tar_split.tar_size
            out.fetched_bytes = self.fetched_bytes = layer_toc.data_end
            return out
        toc = layer_toc.toc
        _owners(out, toc)
        if plan is None:
            plan = _Plan(toc, self._index, self.options.use_hard_links)
        # The local copies are opened (and their reading started) while the missing parts are
        # asked for: on a cold cache their opens wait for the disk, and that can start now.
        opener = _opener_for(plan, toc)
        try:
            parts, readers = self._request(plan, source)
        except BaseException:
            if opener is not None:
                opener.close()
            raise
        out.fetched_bytes = self.fetched_bytes = sum(length for _, length in network_ranges(parts))
        stream = _Producer(layer_toc, plan, parts, readers, kind, opener,
                           lambda: self._stream_ended(layer_toc, tmp_dir, out))
        from ..apply import apply_layer

        # Files found locally are cloned or hard linked rather than written from the stream; on
        # a file system without reflinks, and without use_hard_links, cloning is copying, and
        # the stream's bytes are written as they come (the C loop keeps applying plain entries).
        apply_opts = _with_reuse(options, plan.reused_any and (
            self.options.use_hard_links or _can_reflink(plan, dest)))
        stream.reuse = apply_opts.reuse
        reader = _Stream(stream.run())
        try:
            result = apply_layer(reader, dest, apply_opts)  # type: ignore[arg-type]
        except InvalidArchive:
            if reader.error is not None:
                raise reader.error from None
            raise
        finally:
            stream.close()
            if apply_opts.reuse:
                for fd, _ in apply_opts.reuse.values():
                    os.close(fd)
                apply_opts.reuse.clear()
        if layer_toc.tar_split is not None:
            out.size = layer_toc.tar_split.tar_size
            if not out.uncompressed_digest:
                out.uncompressed_digest = result.uncompressed_digest
            elif out.uncompressed_digest != result.uncompressed_digest:
                raise ChunkedError(f"rebuilt tarball digest {result.uncompressed_digest} is not the "
                                   f"converted layer's {out.uncompressed_digest}")
            if not out.tar_split:  # pragma: no cover - the stream ends before the apply can
                raise ChunkedError("internal error: the layer's stream did not end")
        elif self.kind != ESTARGZ and kind != ZSTD_CHUNKED:  # pragma: no cover - converted layers have one
            raise ChunkedError("internal error: converted layer without tar-split")
        return out

    def _apply_whole(self, layer_toc: LayerTOC, source: BlobSource, dest: str, options: ApplyOptions,
                     tmp_dir: str, out: DifferOutput) -> ApplyResult:
        """A layer the store has nothing of: its frames are the layer's tarball compressed, so
        they are fetched in one range and applied as a .tar.zst is, while a check in the
        reading thread holds every byte to the tar-split and every file to its TOC digest (the
        same checks as file by file).  The check in a thread of its own was tried: with three
        threads on two CPUs and the GIL, the apply took longer (medians of 6: 1.05 s against
        0.95 s with the check here).  Once the check passed, the reading thread also gzips the
        tar-split and collects the owners into ``out``, while the apply finishes."""
        from ..apply import ApplyOptions, apply_layer

        def end() -> None:
            _owners(out, layer_toc.toc)
            self._stream_ended(layer_toc, tmp_dir, out)

        verifier = _Verifier(layer_toc, end)
        readers = source.get_blob_at([(0, layer_toc.data_end)])
        try:
            reader = next(iter(readers), None)
            if reader is None:
                raise ChunkedError("not enough data returned from the server")
            stream = _Frames(reader)
            opts = ApplyOptions(whiteouts=options.whiteouts, uid_map=options.uid_map, gid_map=options.gid_map,
                                ignore_chown_errors=options.ignore_chown_errors,
                                force_mask=options.force_mask,
                                overlay_xattr_prefix=options.overlay_xattr_prefix, tap=verifier,
                                detect_compression=not stream.decoded)
            try:
                result = apply_layer(stream, dest, opts)  # type: ignore[arg-type]
            except InvalidArchive:
                for failure in (stream.error, verifier.error):
                    if failure is not None:
                        raise failure from None
                raise
        finally:
            close = getattr(readers, "close", None)
            if close is not None:
                close()
        if not out.tar_split:  # pragma: no cover - the tap ends before the apply can
            raise ChunkedError("internal error: the layer's check did not end")
        return result

    def _stream_ended(self, layer_toc: LayerTOC, tmp_dir: str, out: DifferOutput) -> None:
        """In the reading thread, once the whole stream was checked and handed on, while the
        apply writes what is queued: the tar-split gzipped (~9 ms) and the TOC (the layer's
        ``zstd-chunked-manifest``, ~4 MB for a root filesystem) written and synced beside the
        layer store's records, so that the commit, under the store's lock, only renames them
        (the TOC's fdatasync took 5-40 ms of the pull's tail on this machine's disk)."""
        from ...fsutil import write_temp

        if layer_toc.tar_split is not None:
            out.tar_split = _gzip_tar_split(layer_toc, tmp_dir)
        path = write_temp(os.path.join(self._store.layer_store.dir, ".staged-big-data"), layer_toc.manifest)
        out.big_data_files[MANIFEST_KEY] = path

    def _request(self, plan: _Plan, source: BlobSource) -> tuple[list[Part], Iterator[RangeReader]]:
        """The missing chunks in one request, merged as Go merges them; fewer if refused."""
        parts = merge_missing_chunks(plan.parts, MAX_MISSING_CHUNKS)
        while True:
            ranges = network_ranges(parts)
            if not ranges:
                return parts, iter(())
            try:
                return parts, source.get_blob_at(ranges)
            except BadRangeRequest:
                if len(ranges) == 1:
                    raise
                parts = merge_missing_chunks(parts, len(ranges) // 2)

    def _convert(self, tmp_dir: str) -> tuple[LayerTOC, BlobSource, str]:
        """convert_images: the whole blob, checked against its digest, rewritten as an
        uncompressed zstd:chunked file to apply from (Go's convertTarToZstdChunked)."""
        from ...fsutil import anonymous_file
        from ..compression import open_decompressed
        from .compressor import compress
        from .manifest import read_zstd_chunked_toc
        from .source import FileBlobSource

        blob = anonymous_file(tmp_dir)  # closed below
        converted = anonymous_file(tmp_dir)  # kept open, with the differ
        try:
            h = hashlib.sha256()
            for reader in self._source.get_blob_at([(0, self._blob_size)]):
                while True:
                    data = reader.read(_PIECE)
                    if not data:
                        break
                    h.update(data)
                    blob.write(data)
            got = "sha256:" + h.hexdigest()
            if got != self._blob_digest:
                raise ChunkedError(f"invalid digest to convert: expected {self._blob_digest!r}, got {got!r}")
            blob.seek(0)
            _, tar = open_decompressed(blob)
            result = compress(tar, converted, level=None)
            blob.close()
            converted.flush()
            source = FileBlobSource(converted)
            # (our own writer's output: its tar-split is held to the TOC as the layer streams,
            # entry by entry, as for any partial pull, so not compared here first)
            layer_toc = read_zstd_chunked_toc(source, result.size, result.toc_digest, result.annotations,
                                              tmp_dir, compressed=False, check=False)
        except BaseException:
            blob.close()
            converted.close()
            raise
        self._converted = converted  # kept open (unnamed) until the differ is dropped
        return layer_toc, source, result.diff_id


def _can_reflink(plan: _Plan, dest: str) -> bool:
    """Whether a file of another layer can be cloned into ``dest`` (FICLONE: btrfs, XFS)."""
    import fcntl

    from .reuse import open_local

    root, rel, _link = next(iter(plan.reused.values()))
    src = open_local(root, rel)
    if src is None:
        return False
    try:
        fd = os.open(dest, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError:
        os.close(src)
        return False
    try:
        fcntl.ioctl(fd, 0x40049409, src)  # FICLONE
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.close(src)


def _owners(out: DifferOutput, toc: _toc.TOC) -> None:
    """The owners the TOC names (Go's collectIDs) and the root directory's mode, if it sets one."""
    out.uids = sorted({e.uid for e in toc.entries})
    out.gids = sorted({e.gid for e in toc.entries})
    for e in toc.entries:
        if e.type == _toc.TYPE_DIR and e.name.strip("/") in ("", "."):
            out.root_dir_mode = e.mode & 0o7777


def _with_reuse(options: ApplyOptions, reused: bool) -> ApplyOptions:
    from ..apply import ApplyOptions

    return ApplyOptions(whiteouts=options.whiteouts, uid_map=options.uid_map, gid_map=options.gid_map,
                        ignore_chown_errors=options.ignore_chown_errors, force_mask=options.force_mask,
                        tar_split=None, overlay_xattr_prefix=options.overlay_xattr_prefix,
                        reuse={} if reused else None, detect_compression=False)


def _gzip_tar_split(layer_toc: LayerTOC, tmp_dir: str) -> str:
    """The layer's tar-split as the layer store keeps it (gzip), in the staging area."""
    from isal import isal_zlib

    from ...fsutil import create_temp

    assert layer_toc.tar_split is not None
    f = layer_toc.tar_split.file
    fd, path = create_temp(os.path.join(tmp_dir, "tar-split.gz"))
    try:
        with os.fdopen(fd, "wb") as out:
            gz = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
            f.seek(0)
            while True:
                data = f.read(_PIECE)
                if not data:
                    break
                out.write(gz.compress(data))
            out.write(gz.flush())
    except BaseException:
        os.unlink(path)
        raise
    return path


# -- planning --------------------------------------------------------------------------------

class _Plan:
    """Where each file's content comes from: a local file, or chunk by chunk (local chunk,
    zeros, or the network)."""

    def __init__(self, toc: _toc.TOC, index: LayerIndex, use_hard_links: bool) -> None:
        self.reused: dict[int, tuple[str, str, bool]] = {}
        self.local_chunks: dict[tuple[int, int], tuple[str, str, int]] = {}
        self.parts: list[Part] = []
        for i, f in enumerate(toc.files):
            found = index.find_file(f.entry, use_hard_links) if index.files else None
            if found is not None:
                self.reused[i] = found
                continue
            for j, (start, end, usize, cdigest, ctype) in enumerate(f.chunks):
                op = Op(file=i, first=j, last=j, csize=end - start, usize=usize)
                if ctype == _toc.CHUNK_ZEROS:
                    op.hole = True
                    self.parts.append(Part(start, end - start, [op], hole=True))
                    continue
                origin = index.find_chunk(cdigest, usize) if cdigest and index.chunks else None
                self.parts.append(Part(start, end - start, [op], origin=origin))

    @property
    def reused_any(self) -> bool:
        return bool(self.reused)

    @property
    def all_fetched(self) -> bool:
        """Nothing of the layer is in the store: every file comes from the blob."""
        return not self.reused and not any(p.origin is not None for p in self.parts)


# -- a whole blob, checked as it streams ----------------------------------------------------

class _Frames:
    """The blob's data (its zstd frames), read for the apply thread; zstd or nothing.

    With the ``zstandard`` package, the frames are decoded here, in C, one context reused from
    frame to frame (``read_across_frames``), and the apply reads the tarball itself: a frame per
    file and chunk (27,000 in the benchmark's layer) each in a new decompressor, in a Python
    loop, took 0.39 s of CPU for the 117 MB against 0.13 s.  Reads return at most ``_PIECE``
    bytes, however much a frame expands.  A stream cut short ends early here, without an
    error: the check of every byte against the tar-split (``_Verifier``) then fails it."""

    def __init__(self, reader: RangeReader) -> None:
        self._raw = _RawFrames(reader)
        self.error: BaseException | None = None
        zstandard = _zstandard()
        self.decoded = zstandard is not None
        self._decoder: Any = None
        if zstandard is not None:
            self._decoder = zstandard.ZstdDecompressor().stream_reader(
                self._raw, read_size=_PIECE, read_across_frames=True, closefd=False)

    def read(self, n: int = -1, /) -> bytes:
        try:
            if self._decoder is None:
                return self._raw.read(_PIECE)
            try:
                return self._decoder.read(_PIECE)  # type: ignore[no-any-return]
            except _zstandard().ZstdError as e:
                raise ChunkedError(f"decompressing the layer: {e}") from None
        except BaseException as e:
            self.error = e
            raise


class _RawFrames:
    """The blob's frames as read, the first one checked to be zstd."""

    def __init__(self, reader: RangeReader) -> None:
        self._reader = reader
        self._first = True

    def read(self, n: int = -1, /) -> bytes:
        data = self._reader.read(_PIECE if n < 0 else n)
        if self._first:
            self._first = False
            if not data.startswith(b"\x28\xb5\x2f\xfd"):
                raise ChunkedError("the layer's data does not start with a zstd frame")
        return data


def _zstandard() -> Any:
    """The ``zstandard`` module, or None without it (frames are then decoded one by one)."""
    global _zstandard_module
    if _zstandard_module is False:
        try:
            import zstandard
        except ImportError:
            _zstandard_module = None
        else:
            _zstandard_module = zstandard
    return _zstandard_module


_zstandard_module: Any = False


class _Verifier:
    """Called with the uncompressed tarball in order: every byte that is not file content must
    be the tar-split's, every header must say what the TOC says, every file's content must have
    its TOC digest and its tar-split checksum."""

    def __init__(self, layer_toc: LayerTOC, on_end: Callable[[], None]) -> None:
        assert layer_toc.tar_split is not None
        self.layer_toc = layer_toc
        self.on_end = on_end  # called once everything was checked
        self.ts = layer_toc.tar_split
        self.lines: Iterator[tuple[int, bytes, int, bytes | None]] = iter(())  # (with the TOC)
        self.files: list[_toc.File] = []
        self.pending: dict[str, _toc.TOCEntry] | None = None
        self.k = 0
        self.left = 0  # bytes of the current segment or file still to come
        self.segment: bytes = b""
        self.seg_pos = 0
        self.in_file = False
        self.hash = hashlib.sha256()
        self.crc = 0
        self.crc_want: bytes | None = None
        self.total = 0
        self.error: BaseException | None = None
        self.walker: Any = None  # the walk in C (_tocmatch.Walker), when built

    def __call__(self, piece: bytes) -> None:
        try:
            if not piece:  # the end of the tarball
                self.finish()
                self.on_end()
                return
            if self.pending is None:  # the TOC, parsed here, in the reading thread (see _apply_whole)
                self._next_checked_toc()
            if self.walker is not None:
                self.walker.take(piece)
            else:
                self._take(piece)
        except BaseException as e:
            self.error = e
            raise

    def _fail(self, what: str, k: int, got: str | None) -> NoReturn:
        """Raise what went wrong at file ``k`` (the walk in C calls this too)."""
        if what == "headers":
            raise ChunkedError("the layer's tar headers are not the ones its tar-split records")
        if what == "order":
            raise ChunkedError("tar-split and TOC data is inconsistent: files are in another order")
        if what == "more":
            raise ChunkedError("the layer holds more than its tar-split records")
        f = self.files[k]
        if what == "checksum":
            raise ChunkedError(f"checksum mismatch for {f.entry.name!r} (got {got!r} instead of "
                               f"{f.entry.digest!r})")
        raise ChunkedError(f"content of {f.entry.name!r} does not match its tar-split checksum")

    def _take(self, piece: bytes) -> None:
        view = memoryview(piece)
        i, n = 0, len(view)
        while i < n:
            if not self.left:
                self._next()
            take = min(n - i, self.left)
            part = view[i : i + take]
            if self.in_file:
                self.hash.update(part)
                self.crc = crc64(part, self.crc)
            else:
                if part != self.segment[self.seg_pos : self.seg_pos + take]:
                    self._fail("headers", self.k, None)
                self.seg_pos += take
            self.left -= take
            i += take
            if not self.left and self.in_file:
                self._file_done()

    def _next(self) -> None:
        """On to the next tar-split entry with bytes, checking the headers passed on the way."""
        for typ, name, size, payload in self.lines:
            if typ == 2:
                if payload:
                    self.total += len(payload)
                    self.segment, self.seg_pos, self.left, self.in_file = payload, 0, len(payload), False
                    return
                continue
            self.total += size
            if size:
                if self.k >= len(self.files) or self.files[self.k].entry.size != size or (
                        self.files[self.k].entry.name != name.decode("utf-8", "replace")):
                    self._fail("order", self.k, None)
                self.hash = hashlib.sha256()
                self.crc = 0
                self.crc_want = payload
                self.left, self.in_file = size, True
                return
        self._fail("more", self.k, None)

    def _next_checked_toc(self) -> None:
        toc = self.layer_toc.toc
        self.files = toc.files
        self.pending = {e.name: e for e in toc.entries}
        self.lines = checked_entries(self.ts, self.pending)
        accel = _toc.accelerator()
        if accel is not None:
            # The same walk without a Python loop over every entry and piece of a file.
            self.walker = accel.Walker(self.lines, self.files, hashlib.sha256, crc64, self._fail)

    def _file_done(self) -> None:
        f = self.files[self.k]
        got = "sha256:" + self.hash.hexdigest()
        if got != f.entry.digest:
            self._fail("checksum", self.k, got)
        if self.crc_want is not None and self.crc.to_bytes(8, "big") != self.crc_want:
            self._fail("crc", self.k, None)
        self.k += 1
        self.in_file = False

    def finish(self) -> None:
        """The tarball ended: so must the tar-split (but for empty segments) and the TOC."""
        if self.pending is None:
            self._next_checked_toc()
        assert self.pending is not None
        if self.walker is not None:
            self.left, self.k, self.total = self.walker.state
        if self.left:
            raise ChunkedError("the layer ends before its tar-split does")
        for typ, _name, _size, payload in self.lines:
            if typ != 2 or payload:
                raise ChunkedError("the layer ends before its tar-split does")
        check_none_pending(self.pending)
        if self.k != len(self.files):
            raise ChunkedError("tar-split and TOC data is inconsistent: files are missing")
        self.ts.tar_size = self.total


# -- the rebuilt tarball ---------------------------------------------------------------------

class _Producer:
    """Yields the layer's tarball: tar-split segments (or headers made from the TOC), each
    file's content from where the plan says, checked against its digests."""

    def __init__(self, layer_toc: LayerTOC, plan: _Plan, parts: list[Part], readers: Iterator[RangeReader],
                 kind: str, opener: _Opener | None, on_end: Callable[[], None] | None = None) -> None:
        self.layer_toc = layer_toc
        self.on_end = on_end  # run once the whole stream was handed on (and checked)
        self.toc = layer_toc.toc
        self.plan = plan
        self.kind = kind
        self.readers = readers
        self.reuse: dict[bytes, tuple[int, bool]] | None = None
        # Where each chunk comes from once merging decided: local and zeros parts stay so.
        self.local: dict[tuple[int, int], tuple[str, str, int]] = {}
        self.zeros: set[tuple[int, int]] = set()
        for p in parts:
            if p.network:
                continue
            for op in p.ops:
                for j in range(op.first, op.last + 1):
                    if p.hole:
                        self.zeros.add((op.file, j))
                    elif p.origin is not None:
                        self.local[(op.file, j)] = p.origin
        self._net = self._network_ops(parts)
        self._opener = opener  # opens the local copies ahead of the stream (None: no copies)
        self._roots: dict[str, int] = {}  # layer directories the local chunks come from, opened once

    def close(self) -> None:
        if self._opener is not None:
            self._opener.close()
        for rfd in self._roots.values():
            os.close(rfd)
        self._roots.clear()
        close = getattr(self.readers, "close", None)
        if close is not None:
            close()

    def _network_ops(self, parts: list[Part]) -> Iterator[tuple[Op, RangeReader]]:
        network = [p for p in parts if p.network]
        readers = iter(self.readers)
        for p in network:
            reader = next(readers, None)
            if reader is None:
                raise ChunkedError("not enough data returned from the server")
            for op in p.ops:
                if op.gap:
                    _skip(reader, op.gap)
                    continue
                yield op, reader

    # -- the stream --------------------------------------------------------------------------
    def run(self) -> Iterator[bytes]:
        buf = bytearray()
        if self.layer_toc.tar_split is not None:
            pieces = self._from_tar_split()
        else:
            pieces = self._from_toc()
        for piece in pieces:
            if len(piece) >= _PIECE // 4:
                if buf:
                    yield bytes(buf)
                    buf.clear()
                yield piece if type(piece) is bytes else bytes(piece)
                continue
            buf += piece
            if len(buf) >= _PIECE:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)
        if next(self._net, None) is not None:
            raise ChunkedError("the server sent more data than the TOC accounts for")
        if self.on_end is not None:
            self.on_end()

    def _register(self, i: int, name: bytes) -> int:
        """Before file ``i``'s header reaches the applier: hand it an fd of the local copy."""
        if self._opener is None:
            raise ChunkedError("internal error: a local copy without an opener")
        fd = self._opener.take(i)
        if fd < 0:
            root, rel, _link = self.plan.reused[i]
            raise ChunkedError(f"the local copy of {rel!r} in {root} went away")
        if self.reuse is not None:
            self.reuse[name] = (os.dup(fd), self.plan.reused[i][2])
        return fd

    def _from_tar_split(self) -> Iterator[bytes | memoryview]:
        """The tarball as the tar-split records it, each header checked against its TOC entry
        on the way (Go's ensureTOCMatchesTarSplit, done as the layer streams)."""
        ts = self.layer_toc.tar_split
        assert ts is not None
        files = self.toc.files
        pending = {e.name: e for e in self.toc.entries}
        total = 0
        k = 0  # the next file with content
        local_fd = -1
        for typ, name, size, payload in checked_entries(ts, pending):
            if typ == 2:
                if k < len(files) and k in self.plan.reused and local_fd < 0:
                    local_fd = self._register(k, files[k].entry.name.encode("utf-8", "surrogateescape"))
                if payload:
                    total += len(payload)
                    yield payload
                continue
            total += size
            if not size:
                continue
            if k >= len(files) or files[k].entry.size != size or (
                    files[k].entry.name != name.decode("utf-8", "replace")):
                raise ChunkedError("tar-split and TOC data is inconsistent: files are in another order")
            f = files[k]
            try:
                yield from self._content(k, f, local_fd, payload)
            finally:
                if local_fd >= 0:
                    os.close(local_fd)
                    local_fd = -1
            k += 1
        if k != len(files):
            raise ChunkedError("tar-split and TOC data is inconsistent: files are missing")
        check_none_pending(pending)
        ts.tar_size = total

    def _from_toc(self) -> Iterator[bytes | memoryview]:
        """Without a tar-split (eStargz, Go 1.43's zstd:chunked): headers made from the TOC."""
        import base64

        from ..tarwrite import END_OF_ARCHIVE, TarHeader, encode_header, padding

        flags = {_toc.TYPE_REG: b"0", _toc.TYPE_LINK: b"1", _toc.TYPE_SYMLINK: b"2", _toc.TYPE_CHAR: b"3",
                 _toc.TYPE_BLOCK: b"4", _toc.TYPE_DIR: b"5", _toc.TYPE_FIFO: b"6"}
        contents = {id(f.entry): k for k, f in enumerate(self.toc.files)}
        for e in self.toc.entries:
            from .manifest import _time_ns

            name = e.name.encode()
            pax = {b"SCHILY.xattr." + k.encode(): base64.b64decode(v) for k, v in e.xattrs.items()}
            hdr = TarHeader(name=name, linkname=e.linkname.encode(), typeflag=flags[e.type], size=e.size,
                            mode=e.mode, uid=e.uid, gid=e.gid, mtime_ns=_time_ns(e.modtime) or 0,
                            devmajor=e.devmajor, devminor=e.devminor, pax_records=pax)
            k = contents.get(id(e), -1)
            local_fd = self._register(k, name) if k >= 0 and k in self.plan.reused else -1
            try:
                yield encode_header(hdr)
                if k >= 0:
                    yield from self._content(k, self.toc.files[k], local_fd, None)
                    yield padding(e.size)
            finally:
                if local_fd >= 0:
                    os.close(local_fd)
        yield END_OF_ARCHIVE

    def _content(self, k: int, f: _toc.File, local_fd: int, crc_want: bytes | None
                 ) -> Iterator[bytes | memoryview]:
        """File ``k``'s content, checked against its digest and (when known) its CRC-64.

        One function for every source of content: it runs once per file of the layer, and the
        layers of generators it replaced cost more than decompressing the data."""
        h = hashlib.sha256()
        update = h.update
        crc = 0
        size = 0
        # A copy found in another layer by the digest its TOC records is used as it is, not
        # hashed again, as Go does (storage_linux.go: findFileInOtherLayers and
        # copyFileFromOtherLayer copy it without reading it; only chunks found locally are
        # re-hashed, by canDedupFileWithChunk).  It is still read, for the layer's diff digest,
        # and held to its tar-split CRC-64, as Go's diff digest (tar-split's
        # WriteOutputTarStream, "file integrity checksum failed") holds it: a copy that changed
        # since its layer was pulled fails the pull.  Without a tar-split (eStargz, Go 1.43's
        # zstd:chunked), there is no CRC-64: the copy is hashed.
        hashed = local_fd < 0 or crc_want is None
        if local_fd >= 0:
            for piece in _read_fd(local_fd, 0, f.entry.size):
                if hashed:
                    update(piece)
                crc = crc64(piece, crc)
                size += len(piece)
                yield piece
        else:
            chunks = f.chunks
            j = 0
            while j < len(chunks):
                usize = chunks[j][2]
                if (k, j) in self.zeros:
                    pieces: Iterator[bytes] = _zeros(usize)
                    j += 1
                elif (k, j) in self.local:
                    pieces = self._local_chunk(self.local[(k, j)], usize)
                    j += 1
                else:
                    op, reader = next(self._net, (None, None))
                    if op is None or reader is None or op.file != k or op.first != j:
                        raise ChunkedError("internal error: chunks fetched out of order")
                    pieces = self._fetched(op, reader)
                    j = op.last + 1
                for piece in pieces:
                    update(piece)
                    crc = crc64(piece, crc)
                    size += len(piece)
                    yield piece
        name = f.entry.name
        if size != f.entry.size:
            raise ChunkedError(f"content of {name!r} is {size} bytes, not the {f.entry.size} its TOC says")
        where = " (its copy in another layer of the store changed)" if local_fd >= 0 else ""
        if hashed:
            got = "sha256:" + h.hexdigest()
            if got != f.entry.digest:
                raise ChunkedError(f"checksum mismatch for {name!r} (got {got!r} instead of "
                                   f"{f.entry.digest!r}){where}")
        if crc_want is not None and crc.to_bytes(8, "big") != crc_want:
            raise ChunkedError(f"content of {name!r} does not match its tar-split checksum{where}")

    def _local_chunk(self, origin: tuple[str, str, int], usize: int) -> Iterator[bytes]:
        from .reuse import open_local

        root, rel, off = origin
        fd = open_local(root, rel, self._roots)
        if fd is None:
            raise ChunkedError(f"the local copy of {rel!r} in {root} went away")
        try:
            yield from _read_fd(fd, off, usize)
        finally:
            os.close(fd)

    def _fetched(self, op: Op, reader: RangeReader) -> Iterator[bytes]:
        """One fetched range: decompressed (or, for a hole, thrown away) into ``op.usize`` bytes."""
        if op.hole:
            _skip(reader, op.csize)
            yield from _zeros(op.usize)
            return
        if self.kind == UNCOMPRESSED:
            if op.usize != op.csize:
                raise ChunkedError("content size of an uncompressed chunk differs from its range")
            yield from _read_exact(reader, op.csize)
            return
        new_decompressor = _zstd_decompressor if self.kind == ZSTD_CHUNKED else _gzip_decompressor
        d = new_decompressor()
        need = op.usize
        left = op.csize
        try:
            while left > 0:
                raw = reader.read(min(left, _PIECE))
                if not raw:
                    raise ChunkedError("not enough data returned from the server")
                left -= len(raw)
                data = raw
                # Frame after frame (a chunk may span several) until the content is complete;
                # the rest of the range (following headers' frames) is read and dropped.
                while need > 0:
                    if d.eof:
                        data = d.unused_data + data
                        if not data:
                            break
                        d = new_decompressor()
                    out = d.decompress(data, min(need, _PIECE))
                    data = b""
                    if out:
                        need -= len(out)
                        yield out
                    if not d.eof and d.needs_input:
                        break
        except _codec_errors() as e:
            raise ChunkedError(f"decompressing a chunk: {e}") from None
        if need > 0:
            raise ChunkedError("a chunk decompresses to less data than its TOC says")


def _opener_for(plan: _Plan, toc: _toc.TOC) -> _Opener | None:
    """An opener of the plan's local copies, in file order; None when it takes none."""
    if not plan.reused:
        return None
    files = toc.files
    return _Opener([(k, *plan.reused[k][:2], files[k].entry.size) for k in sorted(plan.reused)])


def _read_ahead() -> int:
    """``_READ_AHEAD``, or a quarter of the process's file descriptor limit when that is lower."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return _READ_AHEAD
    return max(8, min(_READ_AHEAD, soft // 4))


class _Opener:
    """Opens the local copies a partial pull reads, in the stream's order, up to
    ``_READ_AHEAD`` ahead of it, in a thread of its own, and asks the kernel to start reading
    each (POSIX_FADV_WILLNEED): read one by one, thousands of small files of another layer
    would each wait for the disk, and their opens (confined to their layer, an ``openat2``
    each) and the advice held up the thread that builds the stream.  It is started before the
    missing parts are requested, and opens up to ``_OPEN_BATCH`` copies in one call
    (:func:`~containers_storage.archive.confine.open_copies`, without the GIL in C: one thread
    taking the GIL back after every open waited behind the threads applying the layer).  Each
    layer directory is opened once."""

    def __init__(self, items: list[tuple[int, str, str, int]]) -> None:
        """``items``: (file index, layer directory, name in it, size), in the order they are
        taken; a copy that is not a regular file of that size is not used."""
        from _queue import SimpleQueue

        from ... import lightthread

        self._items = items
        self._q: SimpleQueue[tuple[int, int] | None] = SimpleQueue()
        self._slots: SimpleQueue[None] = SimpleQueue()
        for _ in range(_read_ahead()):
            self._slots.put(None)
        self._stopped = False
        self._done = False
        self._running = lightthread.start(self._main)  # held until the thread ends

    def _main(self) -> None:
        from _queue import Empty

        from ..confine import open_copies
        from .reuse import layer_root

        roots: dict[str, int] = {}
        items = self._items
        i = 0
        try:
            while i < len(items):
                while not self._stopped:  # one free slot, then as many more as are free now
                    try:
                        self._slots.get(timeout=0.1)
                        break
                    except Empty:
                        continue
                if self._stopped:
                    return
                n = 1
                while n < _OPEN_BATCH and i + n < len(items):
                    try:
                        self._slots.get_nowait()
                    except Empty:
                        break
                    n += 1
                batch = items[i:i + n]
                i += n
                wanted = []
                for _, root, rel, size in batch:
                    rfd = layer_root(root, roots)
                    # (a layer directory gone: -1, so its copies fail to open, as each would)
                    wanted.append((-1 if rfd is None else rfd, rel, size))
                for (k, *_), fd in zip(batch, open_copies(wanted), strict=True):
                    self._q.put((k, fd))
        finally:
            for rfd in roots.values():
                os.close(rfd)
            self._q.put(None)

    def take(self, k: int) -> int:
        """An fd of file ``k``'s local copy (the caller closes it), or -1 if it cannot be opened.
        Copies not taken before it are closed unused."""
        while not self._done:
            item = self._q.get()
            if item is None:
                self._done = True
                break
            self._slots.put(None)
            index, fd = item
            if index == k:
                return fd
            if fd >= 0:
                os.close(fd)
            if index > k:
                break
        raise ChunkedError("internal error: local copies taken out of order")

    def close(self) -> None:
        """Stop the thread and close what it opened and nobody took."""
        self._stopped = True
        self._slots.put(None)
        self._running.acquire()
        self._running.release()
        while not self._done:
            item = self._q.get()
            if item is None:
                self._done = True
            elif item[1] >= 0:
                os.close(item[1])


def _zstd_decompressor() -> _Member:
    try:
        from compression.zstd import ZstdDecompressor  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from backports.zstd import ZstdDecompressor  # type: ignore[import-not-found,unused-ignore]
    global _zstd_decompressor
    _zstd_decompressor = ZstdDecompressor  # resolved once: a failed import is not cached
    return ZstdDecompressor()  # type: ignore[no-any-return]


def _gzip_decompressor() -> _Member:
    from isal import igzip_lib

    return igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)


def _codec_errors() -> tuple[type[BaseException], ...]:
    from isal import igzip_lib

    try:
        from compression.zstd import ZstdError  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from backports.zstd import ZstdError  # type: ignore[import-not-found,unused-ignore]
    return (ZstdError, igzip_lib.IsalError, EOFError, ValueError, OSError)  # type: ignore[return-value]


def _read_exact(reader: RangeReader, n: int) -> Iterator[bytes]:
    while n > 0:
        data = reader.read(min(n, _PIECE))
        if not data:
            raise ChunkedError("not enough data returned from the server")
        n -= len(data)
        yield data


def _skip(reader: RangeReader, n: int) -> None:
    for _ in _read_exact(reader, n):
        pass


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        take = min(n, _PIECE)
        yield _ZEROS[:take] if take < _PIECE else _ZEROS
        n -= take


def _read_fd(fd: int, offset: int, size: int) -> Iterator[bytes]:
    while size > 0:
        data = os.pread(fd, min(size, _PIECE), offset)
        if not data:
            raise ChunkedError("a local copy of a file is shorter than expected")
        offset += len(data)
        size -= len(data)
        yield data
