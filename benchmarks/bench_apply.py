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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workload import WORK, build_inputs, drop_caches  # noqa: E402

REPO = HERE.parent
PYTHON = sys.executable
GO_CLI = shutil.which("containers-storage") or "/usr/bin/containers-storage"

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
