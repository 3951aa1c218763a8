"""The C accelerator ``archive._fastapply`` against the pure-Python apply path.

The accelerator may only ever be a faster way to the same result, so every case here is applied
twice into fresh directories, once as shipped (the accelerator when it is built) and once with
``apply._fastapply`` set to None, and everything a caller could observe is compared: the tree
(types, modes, owners, times, contents, holes, link targets, hard-link groups, xattrs, devices),
the ``ApplyResult``, the tar-split lines (and gzip bytes), and the exception (type, message,
cause) for bad input.  The corpus runs at several read sizes, so headers and contents straddle
input chunks, where a chunk-at-a-time fast path is most likely to go wrong; seeded random archives
and failing system calls (a full tmpfs, a low fd limit, an immutable directory) follow.  Without
the C module both runs take the Python path and the suite only checks the harness; the tests
that need the accelerator say so by skipping."""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import os
import random
import resource
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from containers_storage.archive import apply
from containers_storage.archive.apply import ApplyOptions, apply_layer
from containers_storage.archive.tarsplit import DuplicatePath, TarSplitWriter
from containers_storage.errors import InvalidArchive
from containers_storage.idtools import IDMap
from sparsebuild import old_gnu_sparse, pax_sparse
from tarbuild import TarBuilder, base256, header, pad, pax_records

ROOT = os.geteuid() == 0
ROOT_MARKS = (pytest.mark.root,
              pytest.mark.skipif(not ROOT, reason="needs root (chown to other IDs, mknod, trusted.*)"))
UID, GID = os.geteuid(), os.getegid()  # owners any user may give its own files
MT = 1_500_000_000  # archive mtimes stay far from "now", which the snapshot treats specially
GNU_MAGIC = b"ustar  \x00"
V7_MAGIC = b"\0" * 8
READ_SIZES = (None, 512, 700, 4096 + 3)  # None: the module's default (1 MiB)
SIZES = (0, 1, 100, 511, 512, 513, 1000, 4097, 0, 7)


def _fast_module() -> object | None:
    return getattr(apply, "_fastapply", None)


def _skip_without_accelerator() -> object:
    mod = _fast_module()
    if mod is None:
        pytest.skip("apply._fastapply is None: the C accelerator is not built (or disabled by "
                    "CONTAINERS_STORAGE_PURE_PYTHON=1), so there is nothing to compare against")
    return mod


# --- observing an apply ---------------------------------------------------------------------

def _extents(fd: int, size: int) -> tuple[tuple[int, int], ...]:
    """Data extents (SEEK_DATA/SEEK_HOLE): holes left by sparse entries are observable."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        pos = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, pos))
    return tuple(out)


def snapshot(root: Path, since_ns: int) -> dict[bytes, dict[str, object]]:
    """Everything observable about the tree below ``root``, keyed by relative path.

    Each node is lstat'ed before it is read or listed, so the snapshot does not disturb the atimes
    it records.  Times from the clock (directories the archive did not describe, the root) are
    reported as "now": both runs set them, at different instants.
    """
    now_hi = time.time_ns() + 5 * 10**9
    since_ns -= 5 * 10**9

    def t(ns: int) -> object:
        return "now" if since_ns <= ns <= now_hi else ns

    top = os.fsencode(root)
    nodes: dict[bytes, dict[str, object]] = {}
    inodes: dict[int, list[bytes]] = {}
    stack = [b"."]
    while stack:
        rel = stack.pop()
        path = top + b"/" + rel
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        node: dict[str, object] = {
            "type": stat.filemode(st.st_mode)[0], "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid, "gid": st.st_gid, "nlink": st.st_nlink,
            "mtime_ns": t(st.st_mtime_ns), "atime_ns": t(st.st_atime_ns),
            "xattrs": {k: os.getxattr(path, k, follow_symlinks=False)
                       for k in sorted(os.listxattr(path, follow_symlinks=False))},
        }
        if kind == stat.S_IFDIR:
            stack.extend(rel + b"/" + c for c in sorted(os.listdir(path)))
        elif kind == stat.S_IFREG:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                node["extents"] = _extents(fd, st.st_size)
                with os.fdopen(os.dup(fd), "rb") as f:
                    node["content"] = f.read()
            finally:
                os.close(fd)
        elif kind == stat.S_IFLNK:
            node["target"] = os.readlink(path)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            node["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        nodes[rel] = node
        inodes.setdefault(st.st_ino, []).append(rel)
    for group in inodes.values():
        for rel in group:
            nodes[rel]["hardlinks"] = tuple(sorted(group))
    return nodes


def _error(e: BaseException) -> tuple[object, ...]:
    cause = e.__cause__
    return (type(e).__module__, type(e).__qualname__, str(e), getattr(e, "errno", None),
            None if cause is None else (type(cause).__qualname__, getattr(cause, "errno", None)))


@dataclass
class Step:
    """One apply_layer call: its result (or error) and the tar-split lines it recorded."""

    result: dict[str, object] | None
    error: tuple[object, ...] | None
    tar_split: list[bytes] | None


@dataclass
class Outcome:
    steps: list[Step]
    tree: dict[bytes, dict[str, object]]
    raw_tar_split: list[bytes | None]  # the gzip bytes as written, before decompression
    fds_leaked: int  # descriptors left open by the applies (the directory cache must be closed)


class Env:
    """Where a run happens: hooks around the applies (a small mount, a low fd limit...)."""

    def prepare(self, dest: Path) -> None:
        """After ``dest`` was made, before the first layer."""

    def between(self, dest: Path, layer: int) -> None:
        """After layer ``layer`` applied cleanly, before the next one."""

    def applying(self) -> contextlib.AbstractContextManager[None]:
        """Held while ``apply_layer`` runs (not while the tree is observed)."""
        return contextlib.nullcontext()

    def teardown(self, dest: Path) -> None:
        """After the tree was observed."""


def run_layers(layers: Sequence[bytes], dest: Path, opts: dict[str, object], tar_split: bool,
               env: Env | None = None) -> Outcome:
    """Apply ``layers`` in order into ``dest`` (stopping at the first failure) and observe it all."""
    env = env or Env()
    dest.mkdir()
    env.prepare(dest)
    fds = len(os.listdir("/proc/self/fd"))
    try:
        since = time.time_ns()
        steps: list[Step] = []
        raw: list[bytes | None] = []
        for i, data in enumerate(layers):
            if i:
                env.between(dest, i - 1)
            out = io.BytesIO()
            writer = TarSplitWriter(out) if tar_split else None
            result: dict[str, object] | None = None
            error = None
            try:
                with env.applying():
                    res = apply_layer(io.BytesIO(data), str(dest),
                                      ApplyOptions(tar_split=writer, **opts))  # type: ignore[arg-type]
                result = dict(vars(res))
            except Exception as e:
                error = _error(e)
            lines = None
            if writer is not None:
                writer.close()
                lines = gzip.decompress(out.getvalue()).splitlines(keepends=True)
            raw.append(out.getvalue() if writer is not None else None)
            steps.append(Step(result, error, lines))
            if error is not None:
                break
        leaked = len(os.listdir("/proc/self/fd")) - fds
        return Outcome(steps, snapshot(dest, since), raw, leaked)
    finally:
        env.teardown(dest)


def run_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layers: Sequence[bytes],
             opts: dict[str, object] | None = None, tar_split: bool = True,
             read_size: int | None = None, env: Env | None = None) -> Outcome:
    """Apply with the accelerator and without it, assert the outcomes agree, return the pure one."""
    opts = opts or {}
    if read_size is not None:
        monkeypatch.setattr(apply, "READ_SIZE", read_size)
    fast = run_layers(layers, tmp_path / "fast", opts, tar_split, env)
    with monkeypatch.context() as m:
        m.setattr(apply, "_fastapply", None, raising=False)
        pure = run_layers(layers, tmp_path / "pure", opts, tar_split, env)
    assert_same(fast, pure)
    return pure


def assert_same(fast: Outcome, pure: Outcome) -> None:
    """Compare piece by piece so a failure names what differs (error, result, tar-split, tree)."""
    assert len(fast.steps) == len(pure.steps), "one run stopped at another layer"
    for i, (f, p) in enumerate(zip(fast.steps, pure.steps, strict=True)):
        assert f.error == p.error, f"layer {i}: exception differs (fast != pure)"
        assert f.result == p.result, f"layer {i}: ApplyResult differs (fast != pure)"
        assert f.tar_split == p.tar_split, f"layer {i}: tar-split differs (fast != pure)"
    assert fast.raw_tar_split == pure.raw_tar_split, "same tar-split lines, different gzip bytes"
    assert (fast.fds_leaked, pure.fds_leaked) == (0, 0), "file descriptors leaked (fast, pure)"
    assert sorted(fast.tree) == sorted(pure.tree), "the trees hold different paths (fast != pure)"
    for rel in sorted(pure.tree):
        assert fast.tree[rel] == pure.tree[rel], f"{rel!r} differs (fast != pure)"


# --- building archives -------------------------------------------------------------------------

@dataclass(frozen=True)
class M:
    """One member for ``tarfile`` to write: kind f(ile) d(ir) l (symlink) h(ardlink) p (fifo)."""

    name: bytes
    kind: str = "f"
    data: bytes = b""
    mode: int | None = None
    mtime: int = MT
    link: bytes = b""
    uid: int = UID
    gid: int = GID
    pax: dict[str, str] = field(default_factory=dict)


_TYPES = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE,
          "p": tarfile.FIFOTYPE}
FORMATS = {"gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT, "pax": tarfile.PAX_FORMAT}


def tf(members: Sequence[M], fmt: str = "gnu") -> bytes:
    """``members`` as Python's tarfile writes them (bytes names via surrogateescape)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=FORMATS[fmt], encoding="utf-8",
                      errors="surrogateescape") as tar:
        for m in members:
            ti = tarfile.TarInfo(os.fsdecode(m.name))
            ti.type = _TYPES[m.kind]
            ti.mode = m.mode if m.mode is not None else (0o755 if m.kind == "d" else 0o644)
            ti.mtime, ti.uid, ti.gid = m.mtime, m.uid, m.gid
            ti.uname = ti.gname = ""
            ti.linkname = os.fsdecode(m.link)
            ti.size = len(m.data) if m.kind == "f" else 0
            ti.pax_headers = dict(m.pax)
            tar.addfile(ti, io.BytesIO(m.data) if m.kind == "f" else None)
    return buf.getvalue()


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def small_tree(n_dirs: int = 6, per_dir: int = 24) -> list[M]:
    """Directories first, then many small files of awkward sizes, links and fifos in each."""
    ms: list[M] = [M(b"top%d" % i, data=_rand(i, SIZES[i])) for i in range(4)]
    for d in range(n_dirs):
        dn = b"d%02d" % d
        ms.append(M(dn + b"/", "d", mtime=MT + d))
        for i in range(per_dir):
            ms.append(M(dn + b"/f%03d" % i, data=_rand(d * 1000 + i, SIZES[(d + i) % len(SIZES)]),
                        mode=(0o644, 0o755, 0o600, 0o4755, 0o2711, 0o1644)[i % 6], mtime=MT + 97 * i))
        ms += [M(dn + b"/sub/", "d", mode=0o750), M(dn + b"/sub/x", data=b"x"),
               M(dn + b"/link", "l", link=b"f000"), M(dn + b"/abs", "l", link=b"/etc/passwd"),
               M(dn + b"/hard", "h", link=dn + b"/f001", mode=0o755),
               M(dn + b"/fifo", "p", mode=0o640)]
    return ms


def big_tree() -> list[M]:
    """Files over 1 MiB (the default read size) between small ones: contents straddle chunks."""
    ms = [M(b"big/", "d"), M(b"big/a", data=_rand(1, (1 << 20) + 5))]
    ms += [M(b"big/s%02d" % i, data=_rand(100 + i, 300 + 977 * i)) for i in range(30)]
    ms += [M(b"big/b", data=_rand(2, 600_007)), M(b"big/t", data=b"tail"),
           M(b"big/c", data=bytes(1 << 18)), M(b"big/e", data=b"")]
    return ms


def name_tree(fmt: str) -> list[M]:
    """Names a fast path might mishandle: escapes, non-ASCII, non-UTF-8, dots, long ones."""
    names = [b"sp ace", b"tab\there", b"<>&\"\\", b"caf\xc3\xa9", b"raw\xff\xfe", b"\x01ctl", b"del\x7f",
             b".hidden", b"..dots", b"dots..", b"a.b", b"~tilde", b"#%!$'()*+,;=?@[]^`{|}",
             b"nl\nx", "\u2028".encode(), b"-dash"]
    ms = [M(b"n/", "d"), M(b"n/.hd/", "d"), M(b"n/.hd/f", data=b"in hidden dir")]
    ms += [M(b"n/" + n, data=n) for n in names]
    ms += [M(b"n/.hd/" + n, data=n * 2) for n in names[:6]]
    ms += [M(b"n/d-" + n + b"/", "d") for n in names[:6]]
    ms += [M(b"n/l-" + n, "l", link=n) for n in names[:6]]
    long_dir = b"/".join([b"seg%02d" % i for i in range(14)])  # 83 bytes
    ms.append(M(b"n/x" * 33 + b"/", "d"))
    ms.append(M(b"n/" + b"y" * 98, data=b"98-byte base, 100-byte name"))
    if fmt != "ustar":  # ustar cannot hold these at all
        ms += [M(b"n/" + b"L" * 150, data=b"long"), M(b"n/ll", "l", link=b"T" * 300)]
    ms += [M(b"n/" + long_dir + b"/", "d"), M(b"n/" + long_dir + b"/" + b"f" * 60, data=b"prefix")]
    return ms


def _gnu(tb: TarBuilder, name: bytes, data: bytes = b"", **kw: object) -> TarBuilder:
    kw.setdefault("magic", GNU_MAGIC)
    return tb.file(name, data, **kw)


# --- the corpus ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], tuple[bytes, ...]]
    opts: dict[str, object] = field(default_factory=dict)
    root: bool = False
    error: type[BaseException] | None = None  # what the pure path must raise (keeps cases honest)
    tar_split: bool = True
    read_sizes: tuple[int | None, ...] = READ_SIZES


CASES: list[Case] = []


Layers = Callable[[], tuple[bytes, ...]]


def case(name: str, **kw: object) -> Callable[[Layers], Layers]:
    """Register a corpus case: ``build`` returns the layers to apply in order."""

    def register(fn: Layers) -> Layers:
        CASES.append(Case(name, cache(fn), **kw))  # type: ignore[arg-type]
        return fn
    return register


def _in_format(tree: Callable[[str], list[M]], fmt: str) -> Layers:
    return lambda: (tf(tree(fmt), fmt),)


for _fmt in FORMATS:
    case(f"small-{_fmt}")(_in_format(lambda _: small_tree(), _fmt))
    # Big contents read the same in every format: the other formats once, GNU at every size.
    case(f"big-{_fmt}", read_sizes=READ_SIZES if _fmt == "gnu" else (None,))(
        _in_format(lambda _: big_tree(), _fmt))
    case(f"names-{_fmt}")(_in_format(name_tree, _fmt))

case("small-gnu-gzip")(lambda: (gzip.compress(tf(small_tree()), mtime=0),))


@case("big-compressible-gzip", read_sizes=(None,))
def _big_gzip() -> tuple[bytes, ...]:
    """Compressible contents: a decompressed chunk (up to 4 MiB) holds a multi-MiB file whole."""
    text = b"".join(b"line %d of a log file\n" % i for i in range(100_000))  # ~2.5 MB
    ms = [M(b"log/", "d"), M(b"log/a", data=text), M(b"log/b", data=b"small"),
          M(b"log/zeros", data=bytes((1 << 20) + 1))]
    return (gzip.compress(tf(ms), compresslevel=1, mtime=0),)


@case("small-gnu-zstd")
def _zstd() -> tuple[bytes, ...]:
    from backports import zstd

    return (zstd.compress(tf(small_tree())),)


@case("raw-gnu-and-ustar")
def _raw_plain() -> tuple[bytes, ...]:
    """Hand-laid headers: GNU and ustar magic, './' prefixes, dirs with and without '/'."""
    tb = TarBuilder().dir(b"./", mtime=MT - 1, magic=GNU_MAGIC)
    for i in range(40):
        d = b"./g%d/" % i if i % 2 else b"u%d" % i
        tb.dir(d, magic=GNU_MAGIC if i % 3 else b"ustar\x0000", mtime=MT + i)
        for j in range(5):
            _gnu(tb, d.rstrip(b"/") + b"/f%d" % j, _rand(i * 10 + j, 37 * j * i),
                 magic=GNU_MAGIC if (i + j) % 2 else b"ustar\x0000", mode=0o640 + j)
    tb.file(b"prefixed-name", b"p", prefix=b"u2")  # ustar prefix field: u2/prefixed-name
    return (tb.build(),)


@case("dirs-after-children")
def _order() -> tuple[bytes, ...]:
    """Children first (parents made by MkdirAll), the directory entries later, then more children."""
    ms = [M(b"x/y/z/f", data=b"deep first"), M(b"x/g", data=b"g"), M(b"x/", "d", mode=0o711, mtime=MT + 5),
          M(b"x/y/", "d", mode=0o700, mtime=7), M(b"x/y/h", data=b"after y"), M(b"x/y/z/", "d", mode=0o2775),
          M(b"x/y/z/k", data=b"k"), M(b"w/", "d", mtime=MT + 9)]
    return (tf(ms),)


@case("deep-nesting")
def _deep() -> tuple[bytes, ...]:
    """60 levels: short names at first, then GNU long names once the path passes 100 bytes."""
    ms: list[M] = []
    path = b""
    for i in range(60):
        path += b"d%d/" % (i % 10)
        ms += [M(path, "d", mtime=MT + i), M(path + b"f", data=b"%d" % i)]
    return (tf(ms),)


@case("many-dirs", read_sizes=(None, 4096 + 3))  # the slowest case: two read sizes are plenty
def _many_dirs() -> tuple[bytes, ...]:
    """More directories than the 256-entry fd cache, then back to the first ones (evicted)."""
    ms: list[M] = []
    for i in range(300):
        ms += [M(b"m%03d/" % i, "d", mtime=MT + i), M(b"m%03d/a" % i, data=b"a%d" % i)]
    ms += [M(b"m%03d/c" % i, data=b"late") for i in range(0, 300, 9)]
    ms += [M(b"m%03d/s/" % i, "d") for i in range(0, 300, 13)]
    ms += [M(b"m%03d/s/t" % i, data=b"t") for i in range(0, 300, 13)]
    return (tf(ms),)


@case("old-regular-type")
def _oldreg() -> tuple[bytes, ...]:
    """Type '\\0': a file, or a directory when the name ends in '/'; also V7 headers (no magic)."""
    tb = TarBuilder().member(b"o/", typeflag=b"\0", mode=0o751, mtime=MT + 1)
    tb.member(b"o/file", b"old regular", typeflag=b"\0", mode=0o640)
    tb.member(b"o/empty", typeflag=b"\0")
    tb.member(b"o/v7", b"seventh edition", typeflag=b"\0", magic=V7_MAGIC)
    tb.member(b"o/v7dir/", typeflag=b"5", magic=V7_MAGIC)
    tb.member(b"o/gnu", b"gnu old", typeflag=b"\0", magic=GNU_MAGIC)
    tb.member(b"o/sub2/", typeflag=b"\0", magic=GNU_MAGIC, mode=0o700)
    return (tb.build(),)


@case("old-regular-dir-with-size", error=InvalidArchive)
def _oldreg_size() -> tuple[bytes, ...]:
    """A '\\0' directory with a size: header-only, so its 'content' is read as the next header."""
    return (TarBuilder().file(b"a", b"a").member(b"o/", b"not data", typeflag=b"\0").build(),)


@case("symlinks")
def _symlinks() -> tuple[bytes, ...]:
    tb = TarBuilder().dir(b"s/", magic=GNU_MAGIC).dir(b"s/real/")
    tb.symlink(b"s/rel", b"real", magic=GNU_MAGIC, mtime=MT + 3)
    tb.symlink(b"s/abs", b"/s/real", uid=UID, gid=GID)
    tb.symlink(b"s/up", b"../../../../etc")
    tb.symlink(b"s/dangling", b"nowhere/at/all")
    tb.symlink(b"s/exact100", b"t" * 100)  # linkname field without a NUL
    tb.gnu_long(b"T" * 400, typeflag=b"K").symlink(b"s/long", b"ignored")
    tb.symlink(b"s/utf8", "é/ü".encode())
    tb.file(b"s/rel/through", b"written through a symlink to a directory")
    tb.file(b"s/abs/through2", b"an absolute symlink stays inside the layer")
    return (tb.build(),)


@case("symlink-empty-target", error=InvalidArchive)
def _symlink_empty() -> tuple[bytes, ...]:
    return (TarBuilder().file(b"f", b"x").symlink(b"empty", b"").file(b"g", b"y").build(),)


@case("hardlinks")
def _hardlinks() -> tuple[bytes, ...]:
    tb = TarBuilder().dir(b"h/").file(b"h/src", b"shared", mode=0o600, mtime=MT)
    tb.hardlink(b"h/l1", b"h/src", mode=0o640, mtime=MT + 1)
    tb.hardlink(b"h/l2", b"./h/l1")
    tb.dir(b"other/").hardlink(b"other/l3", b"h/src", mtime=MT + 2)
    tb.symlink(b"h/sym", b"src").hardlink(b"h/tosym", b"h/sym", mode=0o600, mtime=5)
    tb.file(b"h/after", b"after the links")
    return (tb.build(),)


@case("hardlink-missing-target", error=InvalidArchive)
def _hardlink_missing() -> tuple[bytes, ...]:
    return (TarBuilder().file(b"a", b"a").hardlink(b"b", b"nope").build(),)


@case("hardlink-to-root", error=InvalidArchive)
def _hardlink_root() -> tuple[bytes, ...]:
    return (TarBuilder().file(b"a", b"a").hardlink(b"b", b"./").build(),)


@case("fifos")
def _fifos() -> tuple[bytes, ...]:
    tb = TarBuilder().dir(b"p/")
    for i, mode in enumerate((0o600, 0o644, 0o620, 0o1777)):
        tb.member(b"p/fifo%d" % i, typeflag=b"6", mode=mode, mtime=MT + i)
        tb.file(b"p/f%d" % i, b"%d" % i)
    return (tb.build(),)


@case("times")
def _times() -> tuple[bytes, ...]:
    """Epoch, before it (base-256), far future in octal and base-256, PAX fractions and atimes."""
    far = 8**11 - 1
    tb = TarBuilder()
    for kind, fn in (("f", TarBuilder.file), ("d", TarBuilder.dir)):
        k = kind.encode()
        fn(tb, b"%b-zero" % k, mtime=0)
        fn(tb, b"%b-neg" % k, raw_fields={"mtime": base256(-5, 12)})
        fn(tb, b"%b-far" % k, mtime=far)
        fn(tb, b"%b-b256" % k, raw_fields={"mtime": base256(1 << 40, 12)})
        fn(tb, b"%b-max" % k, raw_fields={"mtime": base256((1 << 63) - 1, 12)})
    tb.symlink(b"l-zero", b"x", mtime=0)
    tb.symlink(b"l-neg", b"x", raw_fields={"mtime": base256(-5, 12)})
    tb.symlink(b"l-far", b"x", mtime=far)
    tb.symlink(b"l-max", b"x", raw_fields={"mtime": base256((1 << 63) - 1, 12)})
    tb.pax({b"mtime": b"1500000000.123456789", b"atime": b"1600000000.5"}).file(b"pax-frac", b"p")
    tb.pax({b"mtime": b"-1.25"}).file(b"pax-neg", b"n")
    tb.pax({b"atime": b"1"}).dir(b"pax-dir-old-atime/")
    tb.file(b"gnu-atime", b"a", magic=GNU_MAGIC)  # GNU atime field empty: atime = mtime
    hdr = bytearray(header(b"gnu-atime2", size=1, magic=GNU_MAGIC))
    hdr[345:357] = b"%011o\0" % (MT + 500)  # GNU atime field set
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\x00 " % sum(hdr)
    tb.raw(bytes(hdr) + pad(b"b"))
    return (tb.build(),)


@case("modes", root=True)
def _modes() -> tuple[bytes, ...]:
    tb = TarBuilder()
    for i, mode in enumerate((0o4755, 0o2755, 0o1755, 0o7777, 0o6711, 0o000, 0o4000, 0o444)):
        tb.file(b"f%o" % mode, b"%d" % i, mode=mode)
        tb.dir(b"d%o/" % mode, mode=mode)
        tb.file(b"d%o/child" % mode, b"c", mode=mode)
    tb.file(b"typebits", b"t", raw_fields={"mode": b"0100644\0"})
    tb.dir(b"typebits-dir/", raw_fields={"mode": b"0040755\0"})
    return (tb.build(),)


@case("owners", root=True)
def _owners() -> tuple[bytes, ...]:
    """Many IDs (ApplyResult's sets), octal maxima, base-256, and 2**32-1 (chown's 'unchanged')."""
    tb = TarBuilder().dir(b"o/", uid=1, gid=2)
    for i in range(60):
        tb.file(b"o/f%d" % i, b"x", uid=1000 + i % 13, gid=2000 + i % 7)
    tb.file(b"o/octmax", b"", uid=8**7 - 1, gid=8**7 - 1)
    tb.raw(_patched(b"o/oct8", {108: b"77777777", 116: b"7777777 "}))  # eight digits, no NUL
    tb.file(b"o/b256", b"", raw_fields={"uid": base256(1 << 21, 8), "gid": base256((1 << 21) + 1, 8)})
    tb.dir(b"o/b256dir/", raw_fields={"uid": base256(1 << 21, 8), "gid": base256(1 << 22, 8)})
    tb.symlink(b"o/b256link", b"f1", raw_fields={"uid": base256(1 << 21, 8)})
    tb.file(b"o/minus1", b"", raw_fields={"uid": base256(0xFFFFFFFF, 8), "gid": base256(0xFFFFFFFF, 8)})
    tb.pax({b"uid": b"4000000000", b"gid": b"7"}).file(b"o/paxuid", b"p")
    return (tb.build(),)


@case("uid-too-large", error=InvalidArchive)
def _uid_too_large() -> tuple[bytes, ...]:
    return (TarBuilder().file(b"a", b"a").file(b"b", raw_fields={"uid": base256(1 << 32, 8)}).build(),)


@case("devices", root=True)
def _devices() -> tuple[bytes, ...]:
    tb = TarBuilder().dir(b"dev/")
    for i, (t, ma, mi) in enumerate(((b"3", 1, 3), (b"4", 7, 0), (b"3", 4095, 1048575), (b"4", 259, 7))):
        tb.member(b"dev/n%d" % i, typeflag=t, devmajor=ma, devminor=mi, mode=0o660, mtime=MT + i, uid=3)
        tb.file(b"dev/f%d" % i, b"f")
    return (tb.build(),)


@case("xattrs", root=True)
def _xattrs() -> tuple[bytes, ...]:
    tb = TarBuilder().dir(b"x/")
    tb.pax({b"SCHILY.xattr.user.a": b"1", b"SCHILY.xattr.trusted.b": b"\x00\xff",
            b"SCHILY.xattr.security.selinux": b"ignored"}).file(b"x/f", b"f")
    tb.pax({b"SCHILY.xattr.user.empty": b""}).dir(b"x/d/")
    tb.pax({b"SCHILY.xattr.trusted.l": b"on a link"}).symlink(b"x/l", b"f")
    tb.file(b"x/plain", b"no xattrs")
    return (tb.build(),)


@case("pax-everywhere")
def _pax_everywhere() -> tuple[bytes, ...]:
    """Every member has a PAX header (so none is plain) interleaved with plain members."""
    ms: list[M] = []
    for i in range(30):
        ms.append(M(b"p%d" % i, data=b"%d" % i, pax={"comment": f"c{i}"}))
        ms.append(M(b"q%d" % i, data=b"plain"))
    return (tf(ms, "pax"),)


@case("pax-global-header")
def _pax_global() -> tuple[bytes, ...]:
    """Global headers are recorded by tar-split as file entries; each needs its own name."""
    tb = TarBuilder().file(b"a", b"a").member(b"g1", pax_records({b"comment": b"global"}), typeflag=b"g")
    tb.file(b"b", b"b").member(b"g2", pax_records({b"mtime": b"5"}), typeflag=b"g")
    return (tb.dir(b"c/").file(b"c/d", b"d").build(),)


@case("sparse")
def _sparse() -> tuple[bytes, ...]:
    body = (TarBuilder().dir(b"sp/").file(b"sp/before", b"b").build(end=False)
            + pax_sparse("1.0", b"sp/pax10", 1 << 20, [(4096, b"c" * 5000), (900_000, b"d")])
            + pax_sparse("0.1", b"sp/pax01", 9000, [(8000, b"e" * 1000)])
            + TarBuilder().file(b"sp/after", b"a").build())
    return (body,)


@case("old-gnu-sparse", error=InvalidArchive)
def _old_sparse() -> tuple[bytes, ...]:
    """Go's unpacker has no case for type 'S': refused after the plain entries before it."""
    return (_plain_prefix(5).build(end=False)
            + old_gnu_sparse(b"e/old", 100_000, [(0, b"a" * 10), (50_000, b"b" * 600)])
            + TarBuilder().file(b"after", b"a").build(),)


def _patched(name: bytes, fields: dict[int, bytes], checksum: str = "%06o\x00 ", signed: bool = False,
             data: bytes = b"", **kw: object) -> bytes:
    """A header (plus padded ``data``) with raw bytes put at offsets and the checksum re-spelled."""
    kw.setdefault("size", len(data))
    h = bytearray(header(name, **kw))  # type: ignore[arg-type]
    for at, value in fields.items():
        h[at : at + len(value)] = value
    h[148:156] = b" " * 8
    total = sum(b - 256 if signed and b > 127 else b for b in h)
    h[148:156] = (checksum % total).encode().ljust(8, b"\0")[:8]
    return bytes(h) + pad(data)


MAX_SECS = ((1 << 63) - 1) // 10**9  # the last whole second int64 nanoseconds hold


@case("header-spellings")
def _spellings() -> tuple[bytes, ...]:
    """Numeric fields and checksums as different writers spell them; all valid, most plain."""
    tb = TarBuilder().dir(b"s/")
    variants: list[tuple[bytes, dict[int, bytes], dict[str, object]]] = [
        (b"s/spaces", {100: b"  644 \0\0", 108: b"     0 \0"}, {}),
        (b"s/no-nul", {124: b"%012o" % 3, 136: b"%012o" % MT, 100: b"00000640"}, {}),
        (b"s/blank-ids", {108: b"       \0", 116: b"\0" * 8}, {}),
        (b"s/ck7", {}, {"checksum": "%07o\x00"}),
        (b"s/ck-lead", {}, {"checksum": " %06o\x00"}),
        (b"s/ck8", {}, {"checksum": "%08o"}),
        (b"s/ck-2sp", {}, {"checksum": "%06o  "}),
        (b"s/uname-hi", {265: b"\xe9\xff\x80"}, {}),
        (b"s/uname-hi-signed", {265: b"\xe9\xff\x80"}, {"signed": True}),
        (b"s/gname-hi-signed", {297: b"\xfe" * 31}, {"signed": True}),
        (b"s/ver-99", {263: b"99"}, {}),  # ustar magic, odd version: still ustar
        (b"s/prefix-later", {346: b"ignored"}, {}),  # prefix[0] NUL: no prefix
        (b"s/" + b"n" * 98, {}, {}),  # 100 bytes, no NUL
        (b"s/slashfile/", {}, {}),  # type '0' with a trailing slash: a file
        (b"s/star", {508: b"tar\0", 476: b"%011o\0" % (MT + 5)}, {}),  # star: atime, prefix at 345
        (b"s/t-max", {136: b"%012o" % MAX_SECS}, {}),
        (b"s/t-max+1", {136: b"%012o" % (MAX_SECS + 1)}, {}),
    ]
    for i, (name, fields, kw) in enumerate(variants):
        tb.raw(_patched(name, fields, data=b"v%d" % i, **kw))  # type: ignore[arg-type]
    # Header-only types with a size: no content follows, tar-split records the size anyway.
    tb.raw(_patched(b"s/dir-sized/", {}, typeflag=b"5", size=1000))
    tb.raw(_patched(b"s/link-sized", {}, typeflag=b"2", size=5, linkname=b"t"))
    tb.raw(_patched(b"s/olddir-sized/", {}, typeflag=b"\0", size=0))
    # Padding is not always zeros: whatever is there is raw bytes for tar-split.
    tb.raw(header(b"s/junk-pad", size=3) + b"abc" + b"\xaa" * 509)
    tb.raw(header(b"s/junk-pad2", size=700) + _rand(3, 700) + bytes(range(256)) + b"\x01" * 68)
    for t, suffix in ((b"5", b"/"), (b"2", b"")):
        for secs in (MAX_SECS, MAX_SECS + 1, 8**12 - 1):
            tb.raw(_patched(b"s/%b-%d%b" % (t, secs, suffix), {136: b"%012o" % secs}, typeflag=t,
                            linkname=b"x"))
    return (tb.build(),)


@case("header-bad-spellings", error=InvalidArchive)
def _bad_spellings() -> tuple[bytes, ...]:
    """Stray bytes inside a numeric field: invalid in Go, after plain entries in the same chunk."""
    return (_plain_prefix(8).raw(_patched(b"e/bad", {100: b"06 44\0\0\0"})).build(),)


@case("header-bad-devmajor", error=InvalidArchive)
def _bad_dev() -> tuple[bytes, ...]:
    """Device fields are parsed (and refused) even on a regular file."""
    return (_plain_prefix(8).raw(_patched(b"e/bad", {329: b"zz\0"})).build(),)


@case("end-without-zero-blocks")
def _no_end() -> tuple[bytes, ...]:
    return (TarBuilder().dir(b"d/").file(b"d/a", b"a" * 600).file(b"d/b", b"b").build(end=False),)


@case("end-inside-padding")
def _end_in_pad() -> tuple[bytes, ...]:
    return (TarBuilder().file(b"a", b"a").file(b"b", b"b" * 10).build(end=False)[:-300],)


@case("junk-after-end")
def _junk() -> tuple[bytes, ...]:
    return (tf(small_tree(2, 5)) + _rand(9, 3000),)


@case("single-zero-block-then-eof")
def _one_zero() -> tuple[bytes, ...]:
    return (TarBuilder().file(b"a", b"a").build(end=False) + bytes(512),)


@case("zero-block-then-header", error=InvalidArchive)
def _zero_then_header() -> tuple[bytes, ...]:
    return (TarBuilder().file(b"a", b"a").raw(bytes(512)).file(b"b", b"b").build(),)


def _plain_prefix(n: int = 50) -> TarBuilder:
    """A run of plain entries, so an error comes after the fast path has had work to do."""
    tb = TarBuilder().dir(b"e/")
    for i in range(n):
        tb.file(b"e/f%02d" % i, _rand(i, 13 * i))
    return tb


case("checksum-first", error=InvalidArchive)(
    lambda: (TarBuilder().raw(header(b"a", size=0, checksum=1)).build(),))
case("checksum-middle", error=InvalidArchive)(
    lambda: (_plain_prefix().raw(header(b"e/bad", checksum=12345)).file(b"e/z", b"z").build(),))


def _signed_checksum(name: bytes) -> bytes:
    """A header whose checksum sums the bytes as signed chars, as some old writers did."""
    h = bytearray(header(name))
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\x00 " % sum(b - 256 if b > 127 else b for b in h)
    return bytes(h)


case("checksum-signed-sum")(lambda: (_plain_prefix(3).raw(_signed_checksum(b"e/\xe9\xff")).build(),))
case("cut-inside-header", error=InvalidArchive)(
    lambda: (_plain_prefix().build(end=False) + header(b"e/next")[:300],))
case("cut-inside-content", error=InvalidArchive)(
    lambda: (_plain_prefix().file(b"e/big", _rand(1, 5000)).build(end=False)[:-3000],))
case("bad-octal-size", error=InvalidArchive)(
    lambda: (_plain_prefix(5).file(b"e/x", raw_fields={"size": b"00000000009\0"}).build(),))
case("negative-size", error=InvalidArchive)(
    lambda: (_plain_prefix(5).file(b"e/x", raw_fields={"size": base256(-1, 12)}).build(),))
case("base256-size")(
    lambda: (_plain_prefix(5).file(b"e/x", b"q" * 700, raw_fields={"size": base256(700, 12)}).build(),))
case("base256-mode")(
    lambda: (_plain_prefix(5).file(b"e/x", b"m", raw_fields={"mode": base256(0o640, 8)}).build(),))
case("unknown-type", error=InvalidArchive)(
    lambda: (_plain_prefix(5).member(b"e/weird", b"zz", typeflag=b"Z").build(),))
case("root-as-file", error=InvalidArchive)(lambda: (_plain_prefix(5).file(b"./", b"").build(),))
case("contiguous-type-7", error=InvalidArchive)(
    lambda: (_plain_prefix(5).member(b"e/contig", b"cc", typeflag=b"7").build(),))


def _replacements(tb: TarBuilder, first: bool) -> TarBuilder:
    """Every kind of replacement of one name by another entry (the first or second layer)."""
    if first:
        tb.file(b"ff", b"old").dir(b"fd/").file(b"fd/inner", b"i").file(b"fd/sub/j", b"j")
        tb.file(b"df", b"file").dir(b"dd/", mode=0o700, mtime=MT).file(b"dd/keep", b"k")
        tb.file(b"sf", b"s").file(b"hf", b"h").file(b"pf", b"p").dir(b"cached/").file(b"cached/a", b"a")
        tb.dir(b"elsewhere/").symlink(b"sd", b"elsewhere").file(b"fs", b"over a symlink")
        return tb
    tb.file(b"ff", b"new content", mode=0o600).file(b"fd", b"file over dir")
    tb.dir(b"df/", mode=0o750).file(b"df/child", b"c")
    tb.dir(b"dd/", mode=0o755, mtime=MT + 1, uid=UID).file(b"dd/new", b"n")
    tb.symlink(b"sf", b"target").hardlink(b"hf", b"ff").member(b"pf", typeflag=b"6")
    tb.symlink(b"cached", b"elsewhere").file(b"cached/b", b"through the new symlink")
    tb.file(b"sd/x", b"through a symlink").dir(b"fs/").file(b"fs/y", b"y")
    return tb


case("replace-across-layers")(
    lambda: (_replacements(TarBuilder(), True).build(), _replacements(TarBuilder(), False).build()))
case("replace-same-layer", tar_split=False)(
    lambda: (_replacements(_replacements(TarBuilder(), True), False).build(),))


@case("dir-times-after-parent-replaced", error=InvalidArchive, tar_split=False)
def _dir_times_lost() -> tuple[bytes, ...]:
    """Directory times are set at the end by path; Go fails when a parent became a file."""
    return (TarBuilder().dir(b"p/").dir(b"p/q/").file(b"p/q/f", b"f").file(b"p", b"over").build(),)


@case("duplicate-file", error=DuplicatePath)
def _dup_file() -> tuple[bytes, ...]:
    return (TarBuilder().file(b"a", b"1").file(b"b", b"2").file(b"a", b"3").build(),)


@case("duplicate-spellings", error=DuplicatePath)
def _dup_spellings() -> tuple[bytes, ...]:
    return (_plain_prefix(5).file(b"./e/f01", b"again").build(),)


@case("duplicate-dir-then-file", error=DuplicatePath)
def _dup_dir() -> tuple[bytes, ...]:
    return (TarBuilder().dir(b"d/").file(b"d/x", b"x").file(b"d", b"over").build(),)


def _whiteout_layers(with_base: bool = True) -> tuple[bytes, ...]:
    base = TarBuilder().dir(b"a/").file(b"a/x", b"x").file(b"a/y", b"y").dir(b"b/").file(b"b/old", b"o")
    base.file(b"c", b"c").dir(b"d/").file(b"d/e", b"e").dir(b"e/").file(b"e/old", b"o").dir(b"g/")
    top = TarBuilder().dir(b"a/").file(b"a/.wh.x").file(b".wh.c").file(b".wh.gone")
    top.dir(b"b/").file(b"b/.wh..wh..opq").file(b"b/new", b"n")  # opaque first, as Go writes it
    top.dir(b"d/").file(b"d/new", b"n").file(b"d/.wh..wh..opq")  # opaque after this layer's files
    top.file(b".wh.e").dir(b"e/").file(b"e/f", b"recreated")  # a cached dir removed, then reused
    top.file(b"z/.wh.q").file(b".wh.g").file(b"g/.wh.h")  # whiteout below a whited-out dir
    top.dir(b".hidden/").file(b".hidden/.wh.nothing").file(b".wh..wh.meta", b"dropped")
    top.dir(b".wh..wh.plnk/").file(b".wh..wh.plnk/1.2", b"aufs link source", mode=0o640)
    top.hardlink(b"a/aufslink", b".wh..wh.plnk/1.2")
    return (base.build(), top.build()) if with_base else (top.build(),)


def _overlay_whiteouts() -> tuple[bytes, ...]:
    """Overlay layers are separate directories: the lower files are not in this one."""
    return _whiteout_layers(with_base=False)


case("whiteouts-plain", opts={"whiteouts": "plain"})(_whiteout_layers)
case("whiteouts-aufs", opts={"whiteouts": "aufs"})(_whiteout_layers)
case("whiteouts-overlay", opts={"whiteouts": "overlay"}, root=True)(_overlay_whiteouts)


def _option_layers() -> tuple[bytes, ...]:
    tb = TarBuilder().dir(b"o/", uid=UID, gid=GID)
    for i in range(20):
        tb.file(b"o/f%d" % i, b"%d" % i, uid=UID, gid=GID, mode=0o600 + i)
    tb.dir(b"o/d/").symlink(b"o/l", b"f1").member(b"o/p", typeflag=b"6")
    return (tf(small_tree(2, 6)), tb.build())


_MAP = [IDMap(0, 100_000, 65_536)]
case("uid-gid-map", opts={"uid_map": _MAP, "gid_map": _MAP}, root=True)(_option_layers)
case("force-mask", opts={"force_mask": 0o750})(_option_layers)
case("force-mask-overlay", opts={"force_mask": 0o700, "whiteouts": "overlay"}, root=True)(_option_layers)
case("ignore-chown-errors", opts={"ignore_chown_errors": True})(_option_layers)
case("ignore-chown-errors-foreign-ids", opts={"ignore_chown_errors": True})(
    lambda: (tf([M(b"d/", "d", uid=4242, gid=4343), M(b"d/f", data=b"f", uid=4242)]),))
case("overlay-xattr-prefix", opts={"whiteouts": "overlay", "overlay_xattr_prefix": "user.overlay."},
     root=True)(_overlay_whiteouts)


def _params() -> Iterator[object]:
    for c in CASES:
        for n in c.read_sizes:
            yield pytest.param(c, n, id=f"{c.name}-read{n or '-default'}",
                               marks=ROOT_MARKS if c.root else ())


# --- the equivalence tests ----------------------------------------------------------------------

@pytest.mark.parametrize(("c", "read_size"), list(_params()))
def test_same_outcome(c: Case, read_size: int | None, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Accelerated and pure apply agree on trees, results, tar-split and errors."""
    pure = run_both(tmp_path, monkeypatch, c.build(), c.opts, c.tar_split, read_size)
    errors = [s.error for s in pure.steps if s.error is not None]
    if c.error is None:
        assert not errors, f"the case is meant to apply cleanly: {errors}"
    else:
        assert errors and errors[0][1] == c.error.__qualname__, f"expected {c.error.__name__}: {errors}"


@pytest.mark.parametrize("name", ["small-gnu", "many-dirs", "names-pax", "whiteouts-plain", "sparse"])
def test_same_outcome_without_tar_split(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no tar-split sink the fast path must still apply exactly what the pure path does."""
    c = next(c for c in CASES if c.name == name)
    run_both(tmp_path, monkeypatch, c.build(), c.opts, tar_split=False, read_size=4096 + 3)


@pytest.mark.parametrize("cut", [1, 100, 511, 512, 513, 1000, 5000, 20_000])
def test_truncated_anywhere(cut: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cutting a plain archive at arbitrary points: same error (or same clean end) both ways."""
    data = tf(small_tree(2, 12))
    run_both(tmp_path, monkeypatch, [data[: len(data) - 10240 - cut]], read_size=700)


# --- differential fuzzing -----------------------------------------------------------------------

_FUZZ_NAMES = (b"a", b"b", b"c d", b"e.wh.f", b"dir") * 4 + (b".h", b"\xc3\xa9", b"<&>", b"..", b".wh.a",
                                                           b".wh..wh..opq")
_FUZZ_BYTES = (b"0", b"7", b"8", b" ", b"\0", b"/", b".", b"\xff", b"\x80", b"5", b"2", b"L", b"x")


def fuzz_archive(seed: int) -> tuple[bytes, int | None, bool]:
    """A random mix of plain and not-quite-plain members, one header byte possibly changed (with
    its checksum fixed up, so the change reaches the field parsers); and a read size."""
    rng = random.Random(seed)
    dirs = [b""]
    members: list[tuple[bytearray, bytes]] = []
    for i in range(rng.randint(5, 40)):
        parent = rng.choice(dirs)
        name = (parent + b"/" if parent else rng.choice([b"", b"./"])) + rng.choice(_FUZZ_NAMES)
        name += b"%d" % i if rng.random() < 0.9 else b""  # now and then a duplicate
        files = [bytes(m[0][:100]).rstrip(b"\0") for m in members if m[0][156] in b"0\0"]
        kind = rng.choice(b"00005552\0" + (b"1" if files else b""))
        data = b""
        if kind in b"0\0":
            data = _rand(seed * 100 + i, rng.choice((*SIZES, rng.randint(0, 3000))))
        elif kind == ord("5"):
            dirs.append(name.removeprefix(b"./"))
            name += rng.choice([b"/", b""])
        link = rng.choice([b"a", b"../x", b"/abs", b"t" * 100]) if kind == ord("2") else b""
        if kind == ord("1"):
            link = rng.choice(files)
        magic = rng.choice([b"ustar\x0000", GNU_MAGIC] * 4 + [V7_MAGIC])
        block = header(name[:100], typeflag=bytes([kind]), size=len(data), linkname=link, magic=magic,
                       mode=rng.choice([0o644, 0o755, 0o4711]), mtime=rng.choice([MT, 0, 8**11 - 1, MT + i]),
                       uid=UID, gid=GID)
        members.append((bytearray(block), data))
    if rng.random() < 0.7:
        target, _ = rng.choice(members)
        at = rng.choice([rng.randrange(100, 148), rng.randrange(156, 345), rng.randrange(0, 100)])
        target[at] = rng.choice(_FUZZ_BYTES)[0]
        if rng.random() < 0.9:
            target[148:156] = b" " * 8
            target[148:156] = b"%06o\x00 " % sum(target)
    body = b"".join(bytes(h) + pad(d) for h, d in members) + bytes(1024)
    return body, rng.choice((*READ_SIZES, 1500)), rng.random() < 0.5


@pytest.mark.parametrize("seed", range(60))
def test_fuzzed_archives(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random archives and single-byte header changes: whatever happens, it happens both ways.
    Odd seeds apply a second random layer over the first (names that exist: the fallback)."""
    data, read_size, tar_split = fuzz_archive(seed)
    layers = [data, fuzz_archive(seed + 100_000)[0]] if seed % 2 else [data]
    targets = ["plain", "aufs", "overlay"] if ROOT else ["plain", "aufs"]
    opts: dict[str, object] = {"whiteouts": targets[seed % len(targets)]}
    run_both(tmp_path, monkeypatch, layers, opts, tar_split=tar_split, read_size=read_size)


def test_concurrent_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C loop releases the GIL around its system calls: applies running side by side in
    threads (as concurrent layer pulls do) still each come out as a lone pure apply does."""
    from concurrent.futures import ThreadPoolExecutor

    names = ["small-gnu", "many-dirs", "raw-gnu-and-ustar", "deep-nesting"]
    cases = [next(c for c in CASES if c.name == n) for n in names]
    monkeypatch.setattr(apply, "READ_SIZE", 64 * 1024 + 1)  # many chunks: many hand-overs
    with ThreadPoolExecutor(len(cases)) as pool:
        fast = list(pool.map(lambda c: run_layers(c.build(), tmp_path / f"fast-{c.name}", {}, True),
                             cases))
    monkeypatch.setattr(apply, "_fastapply", None, raising=False)
    for c, f in zip(cases, fast, strict=True):
        f.fds_leaked = 0  # the other threads' descriptors come and go meanwhile
        assert_same(f, run_layers(c.build(), tmp_path / f"pure-{c.name}", {}, True))


# --- failures of the system calls themselves ---------------------------------------------------

def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Tmpfs(Env):
    """A small tmpfs on the layer directory: running out of space or inodes mid-layer."""

    def __init__(self, options: str) -> None:
        self.options = options

    def prepare(self, dest: Path) -> None:
        _sh("mount", "-t", "tmpfs", "-o", self.options, "tmpfs", str(dest))

    def teardown(self, dest: Path) -> None:
        _sh("umount", str(dest))


class FdLimit(Env):
    """RLIMIT_NOFILE just above what is open: EMFILE while the directory cache fills up."""

    def __init__(self, spare: int) -> None:
        self.spare = spare

    @contextlib.contextmanager
    def applying(self) -> Iterator[None]:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = {int(fd) for fd in os.listdir("/proc/self/fd")}
        # New fds take the lowest free numbers below the limit: leave ``spare`` of them.
        free = [fd for fd in range(max(used) + self.spare + 2) if fd not in used]
        resource.setrlimit(resource.RLIMIT_NOFILE, (free[self.spare], hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Immutable(Env):
    """``imm/`` made immutable after the first layer: EPERM creating entries in it."""

    def between(self, dest: Path, layer: int) -> None:
        _sh("chattr", "+i", str(dest / "imm"))

    def teardown(self, dest: Path) -> None:
        if (dest / "imm").is_dir():
            _sh("chattr", "-i", str(dest / "imm"))


def _enospc_layers() -> tuple[bytes, ...]:
    ms = [M(b"d/", "d")] + [M(b"d/f%d" % i, data=_rand(i, 100_000)) for i in range(5)]
    return (tf(ms),)


def _many_entries() -> tuple[bytes, ...]:
    ms: list[M] = []
    for i in range(40):
        ms += [M(b"d%02d/" % i, "d"), M(b"d%02d/f" % i, data=b"f"), M(b"d%02d/l" % i, "l", link=b"f")]
    return (tf(ms),)


def _only(kind: str) -> Layers:
    """A directory, then only symlinks (or only directories) in it: the failing call is symlinkat
    (whose OSError names target and link) or mkdirat/openat."""

    def build() -> tuple[bytes, ...]:
        ms = [M(b"d/", "d")]
        if kind == "l":
            ms += [M(b"d/l%02d" % i, "l", link=b"t%02d" % i) for i in range(80)]
        else:
            ms += [M(b"d/s%02d/" % i, "d") for i in range(80)]
        return (tf(ms),)

    return build


def _immutable_layers() -> tuple[bytes, ...]:
    first = TarBuilder().dir(b"imm/").file(b"imm/a", b"a").build()
    # The hard link caches imm/ (its target's parent) without writing there; imm/new then has
    # its parent open, which is what the fast path needs.
    second = TarBuilder().hardlink(b"h", b"imm/a").file(b"imm/new", b"n").build()
    return (first, second)


ENVS = [
    pytest.param(Tmpfs("size=256k,nr_inodes=1000"), _enospc_layers, 28, id="tmpfs-no-space",
                 marks=ROOT_MARKS),
    pytest.param(Tmpfs("size=4m,nr_inodes=50"), _many_entries, 28, id="tmpfs-no-inodes", marks=ROOT_MARKS),
    pytest.param(Tmpfs("size=4m,nr_inodes=40"), _only("l"), 28, id="tmpfs-no-inodes-symlinks",
                 marks=ROOT_MARKS),
    pytest.param(Tmpfs("size=4m,nr_inodes=40"), _only("d"), 28, id="tmpfs-no-inodes-dirs",
                 marks=ROOT_MARKS),
    pytest.param(FdLimit(12), _many_entries, 24, id="fd-limit"),
    pytest.param(FdLimit(12), _only("d"), 24, id="fd-limit-dirs"),
    pytest.param(Immutable(), _immutable_layers, 1, id="immutable-dir",
                 marks=(*ROOT_MARKS, pytest.mark.skipif(shutil.which("chattr") is None,
                                                        reason="no chattr"))),
]


@pytest.mark.parametrize(("env", "layers", "errno"), ENVS)
def test_same_system_call_failure(env: Env, layers: Layers, errno: int, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing system call in a fast-path entry is reported as the Python path reports it."""
    real = _fast_module()
    proxy = CountingProxy(real) if real is not None else None
    if proxy is not None:
        monkeypatch.setattr(apply, "_fastapply", proxy)
    pure = run_both(tmp_path, monkeypatch, layers(), env=env)
    error = pure.steps[-1].error
    assert error is not None, "the environment was meant to make the apply fail"
    cause = error[4]
    assert error[3] == errno or (isinstance(cause, tuple) and cause[1] == errno), error
    if proxy is not None and proxy.counted:  # the failure must have happened in the C loop
        assert proxy.errors, "the failing entry never reached the accelerator: the test lost its point"


def test_tar_split_gzip_bytes_identical(tmp_path: Path) -> None:
    """The stored ``.tar-split.gz`` should not depend on the build either: same gzip bytes.

    The Python path flushes its lines to the compressor after the line that passes 256 KiB; the
    compressed stream depends on where those flushes fall, so batching must keep them there.
    """
    _skip_without_accelerator()
    c = next(c for c in CASES if c.name == "many-dirs")
    fast = run_layers(c.build(), tmp_path / "fast", {}, True)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(apply, "_fastapply", None, raising=False)
        pure = run_layers(c.build(), tmp_path / "pure", {}, True)
    assert fast.steps == pure.steps  # decompressed: identical (the main suite checks this too)
    assert fast.raw_tar_split == pure.raw_tar_split, "same lines, different gzip bytes"


# --- the accelerator is really used (meaningful once the C module exists) ------------------------

class CountingProxy:
    """Stands in for the ``_fastapply`` module: counts ``run`` calls and the entries it applied."""

    def __init__(self, real: object) -> None:
        self._real = real
        self.calls = 0
        self.entries = 0
        self.counted = True  # False once a result without an entry count came back
        self.errors: list[object] = []  # (entry name, OSError) the C loop reported

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def run(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        result = self._real.run(*args, **kwargs)  # type: ignore[attr-defined]
        if isinstance(result, tuple) and len(result) >= 3 and isinstance(result[2], int):
            self.entries += result[2]
            if len(result) >= 5 and result[4] is not None:
                self.errors.append(result[4])
        else:
            self.counted = False
        return result


def _counted_apply(monkeypatch: pytest.MonkeyPatch, data: bytes, dest: Path,
                   **opts: object) -> CountingProxy:
    proxy = CountingProxy(_skip_without_accelerator())
    monkeypatch.setattr(apply, "_fastapply", proxy)
    dest.mkdir()
    writer = TarSplitWriter(io.BytesIO())
    apply_layer(io.BytesIO(data), str(dest), ApplyOptions(tar_split=writer, **opts))  # type: ignore[arg-type]
    writer.close()
    return proxy


def test_accelerator_applies_plain_gnu_small_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain GNU tarball of small files in pre-declared directories is the fast path's home ground."""
    ms = [M(b"d%d/" % d, "d") for d in range(4)]
    ms += [M(b"d%d/f%03d" % (d, i), data=b"x" * (i % 50)) for d in range(4) for i in range(100)]
    proxy = _counted_apply(monkeypatch, tf(ms), tmp_path / "l")
    assert proxy.counted, "run() must return the count of entries it applied"
    # The first entry always goes through Python (no chunk has been read before it).
    assert proxy.entries == 403, f"the accelerator applied {proxy.entries} of 404 plain entries"


def test_accelerator_takes_ustar_prefixed_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names over 100 bytes that ustar splits into prefix and name (as Go's writer does for layers
    it makes) are still plain; prefix + "/" + name is the name, as in Go."""
    top = b"p" * 90
    ms = [M(top + b"/", "d")]
    ms += [M(top + b"/" + b"n" * 80 + b"%02d" % i, data=b"z" * i) for i in range(20)]
    ms += [M(top + b"/sub%02d/" % i, "d") for i in range(5)]
    data = tf(ms, "ustar")
    assert data[512 + 345] != 0, "tarfile did not use the ustar prefix field"
    proxy = _counted_apply(monkeypatch, data, tmp_path / "l")
    assert proxy.entries == len(ms) - 1
    names = sorted(os.listdir(tmp_path / "l" / os.fsdecode(top)))
    assert len(names) == 25 and names[0] == "n" * 80 + "00"


@pytest.mark.parametrize("opts", [
    pytest.param({"force_mask": 0o755}, id="force_mask"),
    pytest.param({"ignore_chown_errors": True}, id="ignore_chown_errors"),
])
def test_accelerator_stays_out_with_options(opts: dict[str, object], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """force_mask and ignore_chown_errors are the Python path's alone."""
    proxy = _counted_apply(monkeypatch, tf(small_tree(2, 10)), tmp_path / "l", **opts)
    assert proxy.counted and proxy.entries == 0


@pytest.mark.parametrize("mapped", [pytest.param(True, id="mapped", marks=ROOT_MARKS),
                                    pytest.param(False, id="unmappable", marks=ROOT_MARKS)])
def test_accelerator_maps_ids(mapped: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ID maps the C loop chowns to the host IDs; an ID without one is left to the Python
    path, which refuses the layer with its own error."""
    uid = 7 if mapped else 70_000
    ms = [M(b"d/", "d", uid=uid, gid=uid)] + [M(b"d/f%02d" % i, data=b"q", uid=uid, gid=uid)
                                              for i in range(10)]
    maps = [IDMap(0, 100_000, 65_536)]
    if not mapped:
        with pytest.raises(InvalidArchive, match="Container ID 70000 cannot be mapped"):
            _counted_apply(monkeypatch, tf(ms), tmp_path / "l", uid_map=maps, gid_map=maps)
        return
    proxy = _counted_apply(monkeypatch, tf(ms), tmp_path / "l", uid_map=maps, gid_map=maps)
    assert proxy.entries == len(ms) - 1
    st = os.lstat(tmp_path / "l" / "d" / "f09")
    assert (st.st_uid, st.st_gid) == (100_007, 100_007)


def test_accelerator_leaves_non_plain_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PAX headers and GNU long names are not plain: none of those entries may be taken."""
    ms = [M(b"p%d" % i, data=b"x", pax={"comment": "c"}) for i in range(20)]
    proxy = _counted_apply(monkeypatch, tf(ms, "pax"), tmp_path / "pax")
    longs = tf([M(b"L" * 120 + b"%d" % i, data=b"y") for i in range(20)])
    proxy2 = _counted_apply(monkeypatch, longs, tmp_path / "long")
    assert proxy.counted and proxy2.counted
    assert (proxy.entries, proxy2.entries) == (0, 0)


def test_pure_python_environment_variable_disables_accelerator() -> None:
    """CONTAINERS_STORAGE_PURE_PYTHON=1 at import leaves ``apply._fastapply`` None."""
    code = ("from containers_storage.archive import apply; "
            "print(getattr(apply, '_fastapply', None) is None)")
    env = dict(os.environ, CONTAINERS_STORAGE_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_built_accelerator_is_picked_up() -> None:
    """When the extension is built and not disabled, apply must be using it (no silent fallback)."""
    if importlib.util.find_spec("containers_storage.archive._fastapply") is None:
        pytest.skip("containers_storage.archive._fastapply is not built")
    if os.environ.get("CONTAINERS_STORAGE_PURE_PYTHON") == "1":
        pytest.skip("CONTAINERS_STORAGE_PURE_PYTHON=1 in this environment")
    assert _fast_module() is not None


def _openat2_outcome(fn: Callable[[int, bytes, int, int, int], int], dirfd: int, path: bytes,
                     flags: int, mode: int, resolve: int) -> tuple[object, ...]:
    try:
        fd = fn(dirfd, path, flags, mode, resolve)
    except OSError as e:
        return ("error", type(e).__name__, e.errno, str(e), e.filename)
    try:
        st = os.fstat(fd)
        ino = None if flags & os.O_CREAT else st.st_ino  # a re-created file may get another inode
        return ("fd", stat.S_IFMT(st.st_mode), ino, stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)


def test_openat2_matches_ctypes(tmp_path: Path) -> None:
    """confine's openat2 from the C module behaves as its ctypes fallback: same fds, same errors."""
    fast = _skip_without_accelerator()
    from containers_storage.archive import confine

    make_ctypes = getattr(confine, "_ctypes_openat2", None)
    if make_ctypes is None or make_ctypes() is None:
        pytest.skip("confine has no ctypes openat2 to compare with")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"f")
    for name, target in (("esc", "../../../.."), ("loop", "loop"), ("abs", "/etc"), ("df", "d/f")):
        os.symlink(target, tmp_path / name)
    in_root = confine.RESOLVE_IN_ROOT | confine.RESOLVE_NO_MAGICLINKS
    dir_flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    new = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    calls = [
        (b".", dir_flags, 0, in_root), (b"d", dir_flags, 0, in_root), (b"d/f", os.O_RDONLY, 0, in_root),
        (b"d/f", dir_flags, 0, in_root), (b"esc", dir_flags, 0, in_root), (b"loop", os.O_RDONLY, 0, in_root),
        (b"abs", dir_flags, 0, in_root), (b"df", os.O_RDONLY | os.O_NOFOLLOW, 0, in_root),
        (b"missing/x", dir_flags, 0, in_root), (b"d/f", dir_flags, 0, confine.RESOLVE_BENEATH),
        (b"../x", dir_flags, 0, confine.RESOLVE_BENEATH), (b"d/new1", new, 0o640, in_root),
        (b"d/new1", new, 0o640, in_root), (b"d", os.O_RDONLY, 0o644, in_root),  # mode without O_CREAT
        (b"d", dir_flags, 0, 1 << 40),  # unknown resolve bit
    ]
    root = os.open(tmp_path, dir_flags)
    try:
        for path, flags, mode, resolve in calls:
            got = _openat2_outcome(fast.openat2, root, path, flags, mode, resolve)  # type: ignore[attr-defined]
            if flags & os.O_CREAT and got[0] == "fd":
                os.unlink(tmp_path / os.fsdecode(path))
            want = _openat2_outcome(make_ctypes(), root, path, flags, mode, resolve)
            assert got == want, (path, flags, mode, resolve)
        impls = (fast.openat2, make_ctypes())  # type: ignore[attr-defined]
        bad = [_openat2_outcome(fn, -1, b"x", dir_flags, 0, in_root) for fn in impls]
        assert bad[0] == bad[1]  # EBADF
    finally:
        os.close(root)
