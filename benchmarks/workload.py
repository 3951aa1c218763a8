"""The benchmark workload: a synthetic root filesystem shaped like a Debian minbase tree.

About 170 MB in 6-7k entries: many small files (log-normal sizes, median ~3 KiB), a tail of large
ones, symlinks, some hard links, a few setuid files and group-owned directories.  The content is
compressible (~0.6 with gzip, like real binaries and text).  It is deterministic (seeded), built
once under ``benchmarks/work/`` and packed as ``rootfs.tar``, ``.tar.gz`` and ``.tar.zst``.

Shared by bench.py (the CLI benchmark against the Go CLI) and bench_apply.py (the engine-level
apply benchmark).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
TREE = WORK / "rootfs"
TAR = WORK / "rootfs.tar"

TARGET_BYTES = 170 * 1000 * 1000
N_DIRS = 900
N_FILES = 5200
N_SYMLINKS = 650
N_HARDLINKS = 60


def build_tree(dest: Path = TREE, *, seed: int = 1701, target_bytes: int = TARGET_BYTES,
               n_dirs: int = N_DIRS, n_files: int = N_FILES, n_symlinks: int = N_SYMLINKS,
               n_hardlinks: int = N_HARDLINKS) -> None:
    """A deterministic tree with minbase's shape at ``dest`` (replaced if it exists)."""
    rng = random.Random(seed)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(4000)]
    text = b" ".join(rng.choice(words) for _ in range(1_200_000))  # ~7 MB of "text"
    binary = rng.randbytes(6 << 20)
    dirs = [Path("usr"), Path("etc"), Path("var"), Path("usr/lib"), Path("usr/share"), Path("usr/bin")]
    for i in range(n_dirs - len(dirs)):
        parent = rng.choice(dirs[: max(6, len(dirs))])
        dirs.append(parent / f"d{i:04d}")
    for d in dirs:
        (dest / d).mkdir(parents=True, exist_ok=True)
    # Log-normal sizes (median ~3 KiB), scaled so the total lands on target_bytes.
    sizes = [min(int(rng.lognormvariate(8.0, 1.9)), 12 << 20) for _ in range(n_files)]
    scale = target_bytes / sum(sizes)
    files: list[Path] = []
    for i, size in enumerate(sizes):
        size = max(0, int(size * scale))
        path = rng.choice(dirs) / f"f{i:05d}{rng.choice(['', '.so', '.py', '.gz', '.txt'])}"
        pool = binary if rng.random() < 0.35 else text
        out = bytearray()
        while len(out) < size:
            off = rng.randrange(0, len(pool) - 4096)
            out += pool[off : off + min(size - len(out), rng.randint(4096, 256 << 10))]
        (dest / path).write_bytes(out)
        os.chmod(dest / path, rng.choice([0o644, 0o644, 0o755, 0o600, 0o4755]))
        files.append(path)
    for i in range(n_symlinks):
        link = rng.choice(dirs) / f"l{i:04d}"
        target = os.path.relpath(rng.choice(files), link.parent)
        os.symlink(target, dest / link)
    for i in range(n_hardlinks):
        os.link(dest / rng.choice(files), dest / rng.choice(dirs) / f"h{i:03d}")
    for i, d in enumerate(dirs):
        if i % 7 == 0:
            os.chown(dest / d, 0, 50)


def build_inputs() -> dict[str, Path]:
    """The tree and its three tarballs, built once (``rootfs.stamp`` marks them complete)."""
    WORK.mkdir(exist_ok=True)
    stamp = WORK / "rootfs.stamp"
    if not stamp.exists() or not TREE.is_dir():
        print("building the workload tree ...", file=sys.stderr, flush=True)
        build_tree()
        subprocess.run(["tar", "--numeric-owner", "--sort=name", "-cf", str(TAR), "-C", str(TREE), "."],
                       check=True)
        subprocess.run(f"gzip -6 -c {TAR} > {TAR}.gz", shell=True, check=True)
        subprocess.run(["zstd", "-q", "-3", "-f", str(TAR), "-o", f"{TAR}.zst"], check=True)
        stamp.write_text("ok\n")
    return {"tar": TAR, "tar.gz": Path(f"{TAR}.gz"), "tar.zst": Path(f"{TAR}.zst")}


def drop_caches(enabled: bool = True) -> None:
    """sync, then drop the page cache, dentries and inodes (root only; a no-op otherwise)."""
    os.sync()
    if enabled:
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError:
            pass
