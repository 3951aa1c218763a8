"""Benchmark: CLI start-up plus listing (``layers``, ``images``, ``--json``), ours vs the Go CLI.

Builds synthetic stores (vfs, records only: the listings never look at layer contents) with 300,
1,000 and 10,000 layers — every tenth layer the top of an image, every other image in use by a
container — under ``benchmarks/work/cli/``, checks once that both CLIs print the same bytes, then
runs the two binaries alternately and reports the median and minimum wall time of each and the
ratio ours/Go (lower is better).  Interleaving keeps background load from favouring either side.

Usage: python benchmarks/bench_cli.py [--runs N] [--sizes 300,1000,10000] [--commands layers,...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "cli"
GO_CLI = "/usr/bin/containers-storage"
OURS = str(Path(sys.executable).parent / "containers-storage")


def _stamp(rng: random.Random) -> str:
    ns = time.time_ns() - rng.randint(0, 10**15)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9))
    return base + "." + f"{ns % 10**9:09d}".rstrip("0") + "Z"


def build_store(root: Path, n: int) -> None:
    """Write layers.json/images.json/containers.json as Go would, with lock files present."""
    if (root / "done").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(n)

    def new_id() -> str:
        return f"{rng.getrandbits(256):064x}"

    def sha(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    layers: list[dict[str, object]] = []
    parent = ""
    for i in range(n):
        layer: dict[str, object] = {"id": new_id()}
        if i % 3 == 0:
            layer["names"] = [f"layer-{i}"]
        if i % 10:
            layer["parent"] = parent
        layer.update({"created": _stamp(rng), "compressed-diff-digest": sha(f"c{i}"),
                      "compressed-size": rng.randint(1000, 10**8), "diff-digest": sha(f"u{i}"),
                      "diff-size": rng.randint(1000, 10**8), "compression": 2, "uidset": [0],
                      "gidset": [0]})
        layers.append(layer)
        parent = str(layer["id"])
    images: list[dict[str, object]] = []
    for i in range(9, n, 10):
        digest = sha(f"m{i}")
        images.append({"id": new_id(), "digest": digest, "names": [f"docker.io/library/img{i}:latest"],
                       "layer": layers[i]["id"], "big-data-names": ["manifest", "config"],
                       "big-data-sizes": {"config": 1234, "manifest": 567},
                       "big-data-digests": {"config": sha(f"cfg{i}"), "manifest": digest},
                       "created": _stamp(rng)})
    containers: list[dict[str, object]] = []
    for j, image in enumerate(images[::2]):
        layer = {"id": new_id(), "parent": image["layer"], "created": _stamp(rng)}
        layers.append(layer)
        containers.append({"id": new_id(), "names": [f"ctr{j}"], "image": image["id"], "layer": layer["id"],
                           "metadata": "{}", "created": _stamp(rng),
                           "flags": {"MountLabel": "", "ProcessLabel": ""}})
    graph, run = root / "root", root / "run"
    for d in ("vfs", "vfs-layers", "vfs-images", "vfs-containers"):
        (graph / d).mkdir(parents=True, exist_ok=True)
    (run / "vfs-layers").mkdir(parents=True, exist_ok=True)
    for name, records in (("vfs-layers/layers.json", layers), ("vfs-images/images.json", images),
                          ("vfs-containers/containers.json", containers)):
        (graph / name).write_text(json.dumps(records, separators=(",", ":")))
    # Let the Go CLI create its lock files and directories once.
    subprocess.run([GO_CLI, *store_args(root), "layers"], check=True, capture_output=True)
    (root / "done").touch()


def store_args(root: Path) -> list[str]:
    return ["-g", str(root / "root"), "-R", str(root / "run"), "-s", "vfs"]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--sizes", default="300,1000,10000")
    parser.add_argument("--commands", default="layers,layers --json,images,containers")
    args = parser.parse_args()
    if not os.access(GO_CLI, os.X_OK):
        print(f"{GO_CLI} is missing: apt-get install containers-storage", file=sys.stderr)
        return 1
    # Byte-compile our package once, as an installed package would be.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "src")], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"{'layers':>7} {'command':<16} {'Go median':>10} {'ours median':>12} {'Go min':>8} "
          f"{'ours min':>9} {'ratio':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        root = WORK / f"store{size}"
        build_store(root, size)
        for command in args.commands.split(","):
            words = command.split()
            go = [GO_CLI, *store_args(root), *words]
            ours = [OURS, *store_args(root), *words]
            a = subprocess.run(go, capture_output=True).stdout
            b = subprocess.run(ours, capture_output=True).stdout
            if a != b and not (words == ["layers", "--json"] and a == b"[]\n" and b == b"null\n"):
                print(f"output differs for {command!r} at {size} layers", file=sys.stderr)
            for _ in range(3):
                timed(go)
                timed(ours)
            go_t: list[float] = []
            ours_t: list[float] = []
            for _ in range(args.runs):
                go_t.append(timed(go))
                ours_t.append(timed(ours))
            gm, om = statistics.median(go_t), statistics.median(ours_t)
            print(f"{size:>7} {command:<16} {gm * 1e3:>8.1f}ms {om * 1e3:>10.1f}ms {min(go_t) * 1e3:>6.1f}ms "
                  f"{min(ours_t) * 1e3:>7.1f}ms {om / gm:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
