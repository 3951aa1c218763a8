#!/usr/bin/env python3
"""Engine-level benchmark of layer apply: our apply_layer vs GNU ``tar -xf`` vs Go's import-layer.

Workload: a synthetic root filesystem shaped like a Debian minbase tree (about 170 MB in 6-7k
entries: many small files, a tail of large ones, symlinks, some hard links), built once under
benchmarks/work/ and packed as .tar, .tar.gz and .tar.zst.  Every run starts from cold caches
(``sync; echo 3 > /proc/sys/vm/drop_caches``, when we may) into a fresh directory.  Prints the
median wall time of each tool per input and the ratios the issue asks for: ours/Go (target
<= 0.5) and ours/tar on the uncompressed input (target <= 1.5).

Usage: bench_apply.py [--runs N] [--no-drop-caches] [--inputs tar,tar.gz,tar.zst] [--skip-go]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
TREE = WORK / "rootfs"
REPO = HERE.parent
PYTHON = sys.executable
GO_CLI = shutil.which("containers-storage") or "/usr/bin/containers-storage"

TARGET_BYTES = 170 * 1000 * 1000
N_DIRS = 900
N_FILES = 5200
N_SYMLINKS = 650
N_HARDLINKS = 60

# Runs apply_layer in a fresh interpreter so that its peak RSS is its own.
_CHILD = r"""
import os, resource, sys, time
t0 = time.perf_counter()
from containers_storage.archive.apply import ApplyOptions, apply_layer
from containers_storage.archive.tarsplit import TarSplitWriter
t1 = time.perf_counter()
src, dest, ts = sys.argv[1:4]
with open(src, "rb") as f, open(ts, "wb") as out:
    w = TarSplitWriter(out)
    r = apply_layer(f, dest, ApplyOptions(tar_split=w))
    w.close()
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{t1 - t0:.4f} {t2 - t1:.4f} {rss} {r.uncompressed_size}")
"""


def build_tree() -> None:
    """A deterministic tree with minbase's shape; compressible content (ratio ~0.35 with gzip)."""
    rng = random.Random(1701)
    if TREE.exists():
        shutil.rmtree(TREE)
    TREE.mkdir(parents=True)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(4000)]
    text = b" ".join(rng.choice(words) for _ in range(1_200_000))  # ~7 MB of "text"
    binary = rng.randbytes(6 << 20)
    dirs = [Path("usr"), Path("etc"), Path("var"), Path("usr/lib"), Path("usr/share"), Path("usr/bin")]
    for i in range(N_DIRS - len(dirs)):
        parent = rng.choice(dirs[: max(6, len(dirs))])
        dirs.append(parent / f"d{i:04d}")
    for d in dirs:
        (TREE / d).mkdir(parents=True, exist_ok=True)
    # Log-normal sizes (median ~3 KiB), scaled so the total lands on TARGET_BYTES.
    sizes = [min(int(rng.lognormvariate(8.0, 1.9)), 12 << 20) for _ in range(N_FILES)]
    scale = TARGET_BYTES / sum(sizes)
    files: list[Path] = []
    for i, size in enumerate(sizes):
        size = max(0, int(size * scale))
        path = rng.choice(dirs) / f"f{i:05d}{rng.choice(['', '.so', '.py', '.gz', '.txt'])}"
        pool = binary if rng.random() < 0.35 else text
        out = bytearray()
        while len(out) < size:
            off = rng.randrange(0, len(pool) - 4096)
            out += pool[off : off + min(size - len(out), rng.randint(4096, 256 << 10))]
        (TREE / path).write_bytes(out)
        os.chmod(TREE / path, rng.choice([0o644, 0o644, 0o755, 0o600, 0o4755]))
        files.append(path)
    for i in range(N_SYMLINKS):
        link = rng.choice(dirs) / f"l{i:04d}"
        target = os.path.relpath(rng.choice(files), link.parent)
        os.symlink(target, TREE / link)
    for i in range(N_HARDLINKS):
        os.link(TREE / rng.choice(files), TREE / rng.choice(dirs) / f"h{i:03d}")
    for i, d in enumerate(dirs):
        if i % 7 == 0:
            os.chown(TREE / d, 0, 50)


def build_inputs() -> dict[str, Path]:
    WORK.mkdir(exist_ok=True)
    tar = WORK / "rootfs.tar"
    stamp = WORK / "rootfs.stamp"
    if not stamp.exists():
        print("building the workload tree ...", file=sys.stderr)
        build_tree()
        subprocess.run(["tar", "--numeric-owner", "--sort=name", "-cf", str(tar), "-C", str(TREE), "."],
                       check=True)
        subprocess.run(f"gzip -6 -c {tar} > {tar}.gz", shell=True, check=True)
        subprocess.run(["zstd", "-q", "-3", "-f", str(tar), "-o", f"{tar}.zst"], check=True)
        stamp.write_text("ok\n")
    return {"tar": tar, "tar.gz": Path(f"{tar}.gz"), "tar.zst": Path(f"{tar}.zst")}


def drop_caches(enabled: bool) -> None:
    os.sync()
    if enabled:
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError:
            pass


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.strip()}")
    return elapsed, proc.stdout


def run_ours(src: Path, scratch: Path) -> tuple[float, float, int]:
    dest = scratch / "ours"
    dest.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    wall, out = timed([PYTHON, "-c", _CHILD, str(src), str(dest), str(scratch / "ts.gz")], env)
    _imp, apply_s, rss_kib, _size = out.split()
    return wall, float(apply_s), int(rss_kib)


def run_tar(src: Path, scratch: Path) -> float:
    dest = scratch / "tar"
    dest.mkdir()
    return timed(["tar", "-xf", str(src), "-C", str(dest)])[0]


def run_go(src: Path, scratch: Path) -> float:
    root = scratch / "go"
    return timed([GO_CLI, "--graph", str(root / "root"), "--run", str(root / "run"), "-s", "vfs",
                  "import-layer", "-f", str(src)])[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-drop-caches", action="store_true")
    ap.add_argument("--inputs", default="tar,tar.gz,tar.zst")
    ap.add_argument("--skip-go", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    inputs = build_inputs()
    drop = not args.no_drop_caches and os.geteuid() == 0
    have_go = not args.skip_go and os.path.exists(GO_CLI)
    n_entries = int(subprocess.run(f"tar -tf {inputs['tar']} | wc -l", shell=True, capture_output=True,
                                   text=True).stdout)
    print(f"workload: {inputs['tar'].stat().st_size / 1e6:.1f} MB tar, {n_entries} entries; "
          f"gz {inputs['tar.gz'].stat().st_size / 1e6:.1f} MB, "
          f"zst {inputs['tar.zst'].stat().st_size / 1e6:.1f} MB; "
          f"runs={args.runs}, drop_caches={drop}")
    results: dict[str, dict[str, float]] = {}
    tar_median = None
    for kind in args.inputs.split(","):
        src = inputs[kind]
        samples: dict[str, list[float]] = {"ours": [], "ours_apply": [], "go": [], "tar": [], "rss_mib": []}
        for _ in range(args.runs):
            tools = ["ours", "tar", "go"] if have_go else ["ours", "tar"]
            if kind != "tar":
                tools.remove("tar")
            for tool in tools:
                with tempfile.TemporaryDirectory(dir=WORK, prefix="run-") as tmp:
                    scratch = Path(tmp)
                    drop_caches(drop)
                    if tool == "ours":
                        wall, apply_s, rss = run_ours(src, scratch)
                        samples["ours"].append(wall)
                        samples["ours_apply"].append(apply_s)
                        samples["rss_mib"].append(rss / 1024)
                    elif tool == "tar":
                        samples["tar"].append(run_tar(src, scratch))
                    else:
                        samples["go"].append(run_go(src, scratch))
        med = {k: statistics.median(v) for k, v in samples.items() if v}
        results[kind] = med
        line = (f"{kind:8s} ours {med['ours']:.3f}s (apply {med['ours_apply']:.3f}s, "
                f"peak RSS {med['rss_mib']:.0f} MiB)")
        if "go" in med:
            line += f" | go {med['go']:.3f}s | ours/go {med['ours'] / med['go']:.2f}"
        if "tar" in med:
            tar_median = med["tar"]
            line += f" | tar -xf {med['tar']:.3f}s | ours/tar {med['ours'] / med['tar']:.2f}"
        elif tar_median:
            line += f" | ours/tar(uncompressed) {med['ours'] / tar_median:.2f}"
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
