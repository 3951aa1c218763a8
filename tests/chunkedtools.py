"""Layers for partial-pull tests: tarballs with many files, and what they become as blobs.

:func:`rootfs_tar` makes a small deterministic root filesystem (files large enough to be cut
into chunks, runs of zeros, links, a whiteout) and :func:`changed_tar` the same with a few files
replaced, the second image of a "shares most files" test.  :func:`pull_image_layers` pulls an
image's layers from a registry through our library, as containers/image would.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Mapping
from pathlib import Path

from containers_storage.archive.chunked import HTTPBlobSource, pull_layer
from containers_storage.archive.chunked.pull import PullResult
from containers_storage.store import Store

MTIME = 1_700_000_000
MANIFEST_POSITION = "io.github.containers.zstd-chunked.manifest-position"
TARSPLIT_POSITION = "io.github.containers.zstd-chunked.tarsplit-position"


def _info(name: str, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.mode = 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def file_contents(seed: int = 1, count: int = 60) -> dict[str, bytes]:
    """``count`` files: text, random bytes (some over 64 KiB, cut into chunks), zero runs."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(count):
        kind = i % 4
        if kind == 0:
            data = (f"line {i} of a text file\n" * rng.randint(10, 400)).encode()
        elif kind == 1:
            data = rng.randbytes(rng.randint(1000, 40_000))
        elif kind == 2:
            data = rng.randbytes(rng.randint(70_000, 200_000))
        else:  # a hole in the middle: Go's writer makes it a "zeros" chunk
            data = rng.randbytes(3000) + bytes(rng.randint(2000, 9000)) + rng.randbytes(2000)
        files[f"usr/lib/f{i:03d}"] = data
    return files


def rootfs_tar(files: Mapping[str, bytes], *, extra: bool = True, whiteout: bool = True) -> bytes:
    """A PAX tarball of ``files`` under its directories, with a symlink, a hard link, an empty
    file and (``extra``) a whiteout of a file a lower layer could have."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(n).parent) for n in files} | {"etc", "usr"})
        for d in dirs:
            tar.addfile(_info(d, type=tarfile.DIRTYPE, mode=0o755))
        for name, data in files.items():
            tar.addfile(_info(name, size=len(data)), io.BytesIO(data))
        if extra:
            first = next(iter(files))
            tar.addfile(_info("etc/link", type=tarfile.SYMTYPE, linkname="../" + first, mode=0o777))
            tar.addfile(_info("etc/hard", type=tarfile.LNKTYPE, linkname=first))
            tar.addfile(_info("etc/empty", size=0), io.BytesIO(b""))
            if whiteout:
                tar.addfile(_info("etc/.wh.removed", size=0), io.BytesIO(b""))
            tar.addfile(_info("etc/owned", size=5, uid=1000, gid=1001, mode=0o600), io.BytesIO(b"owned"))
    return buf.getvalue()


def changed_files(files: Mapping[str, bytes], changed: int = 3, seed: int = 99) -> dict[str, bytes]:
    """``files`` with ``changed`` of them given new contents."""
    rng = random.Random(seed)
    out = dict(files)
    for name in list(out)[:: max(1, len(out) // changed)][:changed]:
        out[name] = rng.randbytes(len(out[name]) // 2 + 100)
    return out


def pull_image_layers(store: Store, registry_url: str, name: str, tag: str, *,
                      ids: list[str] | None = None, diff_ids: bool = True) -> list[PullResult]:
    """Pull each layer of ``name:tag`` with our library (HTTP ranges against the registry)."""
    import urllib.request

    req = urllib.request.Request(f"{registry_url}/v2/{name}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req) as r:
        manifest = json.loads(r.read())
    with urllib.request.urlopen(f"{registry_url}/v2/{name}/blobs/{manifest['config']['digest']}") as r:
        config = json.loads(r.read())
    results: list[PullResult] = []
    parent = ""
    for n, (desc, diff_id) in enumerate(zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True)):
        source = HTTPBlobSource(f"{registry_url}/v2/{name}/blobs/{desc['digest']}")
        result = pull_layer(store, source, digest=desc["digest"], size=desc["size"],
                            annotations=desc.get("annotations") or {}, parent=parent,
                            diff_id=diff_id if diff_ids else None, id=ids[n] if ids else None)
        results.append(result)
        parent = result.layer.id
    return results


# -- blobs, whole and taken apart --------------------------------------------------------------

class Blob:
    """A zstd:chunked blob taken apart: the frames of the tarball, the TOC (JSON), the tar-split
    (uncompressed JSON lines), so tests can change one and :meth:`assemble` it again."""

    def __init__(self, tar: bytes) -> None:
        from backports import zstd

        from containers_storage.archive.chunked import compress

        out = io.BytesIO()
        self.written = compress(io.BytesIO(tar), out)
        blob = out.getvalue()
        ann = self.written.annotations
        m_off, m_len, _, _ = (int(x) for x in ann[MANIFEST_POSITION].split(":"))
        t_off, t_len, _ = (int(x) for x in ann[TARSPLIT_POSITION].split(":"))
        self.original = blob
        self.data = blob[: m_off - 8]
        self.toc: dict[str, object] = json.loads(zstd.decompress(blob[m_off : m_off + m_len]))
        self.tar_split = zstd.decompress(blob[t_off : t_off + t_len])

    @property
    def entries(self) -> list[dict[str, object]]:
        return self.toc["entries"]  # type: ignore[return-value]

    def entry(self, name: str) -> dict[str, object]:
        return next(e for e in self.entries if e["name"] == name)

    def assemble(self, *, tar_split: bool = True, legacy: bool = False, manifest: bytes | None = None
                 ) -> tuple[bytes, dict[str, str]]:
        """The blob and its annotations; ``legacy``: as Go 1.43 wrote it (old annotation names,
        no tar-split, the 40-byte footer)."""
        import hashlib
        import struct

        from backports import zstd

        toc = dict(self.toc)
        ts_z = zstd.compress(self.tar_split)
        if tar_split and not legacy:
            toc["tarSplitDigest"] = "sha256:" + hashlib.sha256(ts_z).hexdigest()
        else:
            toc.pop("tarSplitDigest", None)
        raw = manifest if manifest is not None else json.dumps(toc, separators=(",", ":")).encode()
        manifest_z = zstd.compress(raw)
        digest = "sha256:" + hashlib.sha256(manifest_z).hexdigest()
        out = bytearray(self.data)

        def skippable(data: bytes) -> None:
            out.extend(b"\x50\x2a\x4d\x18" + struct.pack("<I", len(data)) + data)

        m_off = len(out) + 8
        skippable(manifest_z)
        position = f"{m_off}:{len(manifest_z)}:{len(raw)}:1"
        if legacy:
            skippable(struct.pack("<4Q", m_off, len(manifest_z), len(raw), 1) + b"GnUlInUx")
            return bytes(out), {"io.containers.zstd-chunked.manifest-checksum": digest,
                                "io.containers.zstd-chunked.manifest-position": position}
        t_off = len(out) + 8
        ann = {"io.github.containers.zstd-chunked.manifest-checksum": digest,
               "io.github.containers.zstd-chunked.manifest-position": position}
        if tar_split:
            skippable(ts_z)
            ann[TARSPLIT_POSITION] = f"{t_off}:{len(ts_z)}:{len(self.tar_split)}"
        skippable(struct.pack("<7Q", m_off, len(manifest_z), len(raw), 1, t_off if tar_split else 0,
                              len(ts_z) if tar_split else 0, len(self.tar_split) if tar_split else 0)
                  + b"GNUlInUx")
        return bytes(out), ann


def estargz_blob(tar: bytes) -> tuple[bytes, dict[str, str]]:
    """``tar`` as an eStargz blob (gzip members: headers, then each file's content in its own;
    the TOC as ``stargz.index.json`` in the last member; the 51-byte footer) and its annotation."""
    import gzip
    import hashlib
    import struct
    import zlib

    out = bytearray()
    entries: list[dict[str, object]] = []
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        pending = bytearray()  # header bytes not yet in a member
        for info in tf.getmembers():
            buf = io.BytesIO()
            hdr = info.tobuf(tarfile.PAX_FORMAT)
            buf.write(hdr)
            pending += buf.getvalue()
            e: dict[str, object] = {"name": info.name, "type": {
                tarfile.REGTYPE: "reg", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
                tarfile.LNKTYPE: "hardlink"}[info.type], "mode": info.mode, "uid": info.uid, "gid": info.gid,
                "modtime": "2023-11-14T22:13:20Z"}
            if info.linkname:
                e["linkName"] = info.linkname
            if info.isreg():
                e["size"] = info.size
            if info.isreg() and info.size:
                data = tf.extractfile(info).read()  # type: ignore[union-attr]
                out += gzip.compress(bytes(pending), mtime=0)
                pending.clear()
                e["offset"] = len(out)
                e["digest"] = "sha256:" + hashlib.sha256(data).hexdigest()
                out += gzip.compress(data + bytes(-len(data) % 512), mtime=0)
            entries.append(e)
        if pending:
            out += gzip.compress(bytes(pending), mtime=0)
    toc = json.dumps({"version": 1, "entries": entries}).encode()
    toc_offset = len(out)
    toc_tar = io.BytesIO()
    with tarfile.open(fileobj=toc_tar, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        ti = tarfile.TarInfo("stargz.index.json")
        ti.size = len(toc)
        tf.addfile(ti, io.BytesIO(toc))
    out += gzip.compress(toc_tar.getvalue(), mtime=0)
    extra = b"SG" + struct.pack("<H", 22) + f"{toc_offset:016x}STARGZ".encode()
    footer = (b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\xff" + struct.pack("<H", len(extra)) + extra
              + b"\x01\x00\x00\xff\xff" + struct.pack("<II", zlib.crc32(b""), 0))
    assert len(footer) == 51
    out += footer
    digest = "sha256:" + hashlib.sha256(toc).hexdigest()
    return bytes(out), {"containerd.io/snapshot/stargz/toc.digest": digest}


def tree(root: Path, *, mtimes: bool = True, owners: bool = True) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: type and mode, owner, size, mtime, content or link target.

    Whiteouts (character devices 0/0) carry the time they were made, never compared."""
    import os
    import stat

    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                what: object = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode):
                what = st.st_rdev
            else:
                what = None
            xattrs = tuple(sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                  for k in os.listxattr(p, follow_symlinks=False)))
            mtime = st.st_mtime_ns if mtimes and not stat.S_ISCHR(st.st_mode) else None
            uid, gid = (st.st_uid, st.st_gid) if owners else (None, None)
            out[rel] = (st.st_mode, uid, gid, st.st_size if not stat.S_ISDIR(st.st_mode) else 0, mtime, what,
                        xattrs)
    return out


__all__ = ["MTIME", "Blob", "changed_files", "estargz_blob", "file_contents", "pull_image_layers",
           "rootfs_tar", "tree"]
