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


__all__ = ["MTIME", "changed_files", "file_contents", "pull_image_layers", "rootfs_tar", "tree"]
