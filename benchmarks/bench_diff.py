"""Benchmark: rebuilding a layer tarball from tar-split (``diff -u``), ours vs the Go CLI.

Generates a synthetic rootfs-shaped tree (~170 MB, ~6.5k entries) under ``benchmarks/work/``,
imports it as a layer with the Go CLI (vfs driver), then times, with the page cache dropped before
every run, Go's ``containers-storage diff -u`` against a Python process that calls our
``reassemble()`` on the same tar-split and layer directory.  Both write to a file on the same
disk and both are whole processes, so interpreter start-up counts against us as it would for the
CLI.  Prints medians and the ratio ours/Go (lower is better); the outputs are compared byte for
byte once.

Ours runs twice per round: as the CLI would (CRC-64 verified, as Go does) and with
``verify_crc=False`` (sizes still checked; big files go out by sendfile).

Usage: python benchmarks/bench_diff.py [--runs N] [--warm]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "diff"
GO_CLI = "/usr/bin/containers-storage"
PY = sys.executable

TARGET_BYTES = 150 * 1024 * 1024  # file data; the tarball comes out at ~170 MB
N_FILES = 5600
N_DIRS = 650
N_SYMLINKS = 300
N_HARDLINKS = 40

OURS = r"""
import sys
from containers_storage.archive.tarsplit import reassemble
ts, root, dst, verify = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
with open(ts, "rb") as src, open(dst, "wb") as out:
    reassemble(src, root, out, verify_crc=verify)
"""


def make_tree(dest: Path, seed: int = 1) -> None:
    """A deterministic tree shaped like a distro rootfs: many small files, a heavy tail of big ones."""
    rnd = random.Random(seed)
    tops = ["usr/bin", "usr/lib", "usr/share/doc", "usr/share/locale", "usr/include", "etc", "var/lib",
            "usr/lib/python3/dist-packages", "usr/share/man/man1", "opt/app/lib"]
    dirs = [dest]
    for top in tops:
        d = dest / top
        d.mkdir(parents=True, exist_ok=True)
        dirs.append(d)
    while len(dirs) < N_DIRS:
        parent = rnd.choice(dirs)
        d = parent / f"d{len(dirs)}-{rnd.randrange(1 << 20):x}"
        d.mkdir(exist_ok=True)
        dirs.append(d)
    sizes = [min(int(rnd.lognormvariate(8.3, 1.7)), 24 << 20) for _ in range(N_FILES)]
    scale = TARGET_BYTES / sum(sizes)
    files = []
    for i, size in enumerate(sizes):
        f = rnd.choice(dirs) / f"f{i}.{rnd.choice(['so', 'py', 'txt', 'gz', 'h', 'conf', ''])}"
        f.write_bytes(rnd.randbytes(int(size * scale)))
        os.chmod(f, rnd.choice([0o644, 0o755, 0o600]))
        files.append(f)
    for i in range(N_SYMLINKS):
        link = rnd.choice(dirs) / f"l{i}"
        os.symlink(os.path.relpath(rnd.choice(files), link.parent), link)
    for i in range(N_HARDLINKS):
        os.link(rnd.choice(files), rnd.choice(dirs) / f"h{i}")


def setup() -> tuple[Path, Path, Path, str]:
    """Build (once) the tree, the tarball and the Go store holding it as a layer."""
    tree, tar_path, graph, run = WORK / "tree", WORK / "layer.tar", WORK / "root", WORK / "run"
    id_file = WORK / "layer.id"
    if id_file.exists():
        return tar_path, graph, run, id_file.read_text().strip()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    print("generating tree ...", flush=True)
    make_tree(tree)
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(tree, arcname=".")
    print(f"importing {tar_path.stat().st_size / 1e6:.0f} MB into the Go store ...", flush=True)
    out = subprocess.run([GO_CLI, "--graph", str(graph), "--run", str(run), "-s", "vfs", "import-layer",
                          "-f", str(tar_path)], check=True, capture_output=True, text=True)
    layer_id = out.stdout.split()[-1]
    id_file.write_text(layer_id)
    shutil.rmtree(tree)
    return tar_path, graph, run, layer_id


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        sys.exit(f"cannot drop caches ({e}); run as root or pass --warm")


def timed(cmd: list[str], warm: bool) -> float:
    if not warm:
        drop_caches()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warm", action="store_true", help="keep the page cache between runs")
    args = ap.parse_args()
    if not os.path.exists(GO_CLI):
        sys.exit(f"{GO_CLI} not found (Debian package containers-storage)")

    tar_path, graph, run, layer_id = setup()
    ts = graph / "vfs-layers" / f"{layer_id}.tar-split.gz"
    layer_dir = graph / "vfs" / "dir" / layer_id
    go_out, py_out = WORK / "go.tar", WORK / "py.tar"
    go_cmd = [GO_CLI, "--graph", str(graph), "--run", str(run), "-s", "vfs", "diff", "-u", "-f", str(go_out),
              layer_id]
    py_cmd = [PY, "-c", OURS, str(ts), str(layer_dir), str(py_out), "1"]
    py_fast_cmd = [*py_cmd[:-1], "0"]
    with tarfile.open(tar_path) as tf:
        entries = len(tf.getmembers())
    print(f"layer {layer_id[:12]}: {tar_path.stat().st_size / 1e6:.1f} MB, {entries} entries, "
          f"{'warm' if args.warm else 'cold'} cache, {args.runs} runs each")

    times: dict[str, list[float]] = {"go diff -u": [], "py reassemble": [], "py reassemble, no CRC": []}
    for _ in range(args.runs):  # interleaved so drift hits all alike
        for label, cmd in zip(times, (go_cmd, py_cmd, py_fast_cmd), strict=True):
            times[label].append(timed(cmd, args.warm))
            if label != "go diff -u" and not filecmp.cmp(go_out, py_out, shallow=False):
                sys.exit(f"{label}: output differs from Go's!")
    if not filecmp.cmp(go_out, tar_path, shallow=False):
        sys.exit("Go's output differs from the imported tarball!")
    go_med = statistics.median(times["go diff -u"])
    for label, ts_ in times.items():
        med = statistics.median(ts_)
        runs = ", ".join(f"{t * 1000:.0f}" for t in ts_)
        print(f"{label:22s} median {med * 1000:7.1f} ms  ratio/Go {med / go_med:.2f}  (runs: {runs})")


if __name__ == "__main__":
    main()
