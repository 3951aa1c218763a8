"""Images in and out: our ``load``/``save`` against ``skopeo copy``, same machine, same run.

The workload is the benchmark's ~175 MB root filesystem (``workload.py``) split by directory
into a five-layer image, each layer a ``gzip -6`` blob, in an OCI layout built once under
``benchmarks/work/images/``.  Operations, each run alternately for ours and skopeo, page cache
dropped before every run, stores made afresh:

- ``load-oci`` (overlay, vfs): our ``containers-storage load -q -i LAYOUT`` against
  ``skopeo copy oci:LAYOUT:big containers-storage:[DRIVER@ROOT+RUN]example.com/big:v1``;
- ``save-oci`` (overlay): our ``containers-storage save --format oci-dir`` against
  ``skopeo copy containers-storage:...example.com/big:v1 oci:OUT:big``, from the same store.

Prints medians, the median of the pairwise ratios ours/skopeo, and peak RSS (GNU time's
``%M``); writes ``benchmarks/results-images.json``; ``--update-readme`` refreshes the README
table between ``<!-- bench-images-table -->`` markers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (update_readme)
from workload import TREE, build_inputs, drop_caches  # noqa: E402

WORK = HERE / "work" / "images"
LAYOUT = WORK / "five-layer"
OURS = str(Path(sys.executable).with_name("containers-storage"))
SKOPEO = shutil.which("skopeo") or "skopeo"
NAME = "example.com/big:v1"
TARGETS = {("load-oci", "overlay"): 0.5, ("load-oci", "vfs"): 0.6, ("save-oci", "overlay"): 0.5}
RSS_TARGET_MIB = 150


def groups(tree: Path) -> list[list[str]]:
    """Five layers: /etc and /var, /usr/bin, /usr/lib and /usr/share, the largest other /usr
    directory, and the rest of /usr."""
    usr = sorted(os.listdir(tree / "usr"))
    sizes = {d: sum(f.stat().st_size for f in (tree / "usr" / d).rglob("*") if f.is_file())
             for d in usr if d not in ("bin", "lib", "share") and (tree / "usr" / d).is_dir()}
    biggest = max(sizes, key=lambda d: sizes[d])
    rest = [f"usr/{d}" for d in usr if d not in ("bin", "lib", "share", biggest)]
    return [["etc", "var"], ["usr/bin"], ["usr/lib", "usr/share"], [f"usr/{biggest}"], rest]


def build_layout() -> Path:
    """The five-layer OCI layout, built once (``.stamp`` marks it complete)."""
    build_inputs()
    stamp = LAYOUT / ".stamp"
    if stamp.exists():
        return LAYOUT
    shutil.rmtree(LAYOUT, ignore_errors=True)
    blobs = LAYOUT / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest

    layers, diff_ids = [], []
    for paths in groups(TREE):
        tar = subprocess.run(["tar", "--numeric-owner", "--sort=name", "-cf", "-", "-C", str(TREE),
                              *paths], check=True, capture_output=True).stdout
        blob = subprocess.run(["gzip", "-6", "-n"], input=tar, check=True, capture_output=True).stdout
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(blob),
                       "size": len(blob)})
    config = json.dumps({"created": "2024-01-02T03:04:05Z", "architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(config), "size": len(config)},
                           "layers": layers}).encode()
    digest = put(manifest)
    (LAYOUT / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "big"}}]}))
    (LAYOUT / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    stamp.write_text("ok\n")
    return LAYOUT


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB, children included) of ``cmd``, which must succeed."""
    drop_caches()
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr}")
    return elapsed, int(proc.stderr.strip().splitlines()[-1])


def fresh(path: Path) -> None:
    """Remove a store (or output), unmounting what a driver left mounted in it (overlay's home
    is a private bind mount, as Go makes it)."""
    if not path.exists():
        return
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for mount in sorted((m for m in mounts if m.startswith(str(path) + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(path)


def ours_store(driver: str, root: Path) -> list[str]:
    return [OURS, "--graph", str(root / "root"), "--run", str(root / "run"), "--storage-driver", driver]


def skopeo_store(driver: str, root: Path) -> str:
    return f"containers-storage:[{driver}@{root / 'root'}+{root / 'run'}]"


def bench_load(driver: str, runs: int) -> dict[str, object]:
    store = WORK / f"store-{driver}"
    ours, theirs, ratios = [], [], []
    for _ in range(runs):
        fresh(store)
        o = timed([*ours_store(driver, store), "load", "-q", "-i", str(LAYOUT)])
        fresh(store)
        t = timed([SKOPEO, "--insecure-policy", "copy", "-q", f"oci:{LAYOUT}:big",
                   skopeo_store(driver, store) + NAME])
        ours.append(o)
        theirs.append(t)
        ratios.append(o[0] / t[0])
    fresh(store)
    return summary("load-oci", driver, ours, theirs, ratios)


def bench_save(driver: str, runs: int) -> dict[str, object]:
    store = WORK / f"store-{driver}"
    out = WORK / "saved"
    fresh(store)
    subprocess.run([SKOPEO, "--insecure-policy", "copy", "-q", f"oci:{LAYOUT}:big",
                    skopeo_store(driver, store) + NAME], check=True)
    ours, theirs, ratios = [], [], []
    for _ in range(runs):
        fresh(out)
        o = timed([*ours_store(driver, store), "save", "-q", "--format", "oci-dir", "-o", str(out), NAME])
        fresh(out)
        t = timed([SKOPEO, "--insecure-policy", "copy", "-q", skopeo_store(driver, store) + NAME,
                   f"oci:{out}:big"])
        ours.append(o)
        theirs.append(t)
        ratios.append(o[0] / t[0])
    fresh(out)
    fresh(store)
    return summary("save-oci", driver, ours, theirs, ratios)


def summary(op: str, driver: str, ours: list[tuple[float, int]], theirs: list[tuple[float, int]],
            ratios: list[float]) -> dict[str, object]:
    ratio = statistics.median(ratios)
    rss = max(r for _, r in ours) / 1024
    target = TARGETS.get((op, driver))
    ok = (target is None or ratio <= target) and rss <= RSS_TARGET_MIB
    row = {"operation": op, "driver": driver, "ours": statistics.median(t for t, _ in ours),
           "skopeo": statistics.median(t for t, _ in theirs), "ratio": ratio, "target": target,
           "ours_rss_mib": rss, "skopeo_rss_mib": max(r for _, r in theirs) / 1024,
           "status": "ok" if ok else "MISS", "runs": len(ratios)}
    print(f"{op:9} {driver:8} ours {row['ours']:.3f}s skopeo {row['skopeo']:.3f}s ratio {ratio:.2f} "
          f"rss {rss:.0f}/{row['skopeo_rss_mib']:.0f} MiB {row['status']}", flush=True)
    return row


def markdown(doc: dict[str, object]) -> str:
    rows = doc["results"]
    assert isinstance(rows, list)
    lines = [
        f"Run {doc['time']} on {doc['cpus']} CPUs, kernel {doc['kernel']}, Python {doc['python']}, "
        f"against {doc['skopeo']}; image: {doc['image']}. Command:",
        "",
        "```",
        ".venv/bin/python benchmarks/bench_images.py",
        "```",
        "",
        "| operation | driver | ours (s) | skopeo (s) | ours/skopeo | target | ours peak RSS (MiB) "
        "| skopeo peak RSS (MiB) | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        target = f"{r['target']:.2f}" if r["target"] is not None else "-"
        lines.append(f"| {r['operation']} | {r['driver']} | {r['ours']:.3f} | {r['skopeo']:.3f} | "
                     f"**{r['ratio']:.2f}** | {target} | {r['ours_rss_mib']:.0f} | "
                     f"{r['skopeo_rss_mib']:.0f} | {r['status']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    build_layout()
    results = [bench_load("overlay", args.runs), bench_load("vfs", args.runs),
               bench_save("overlay", args.runs)]
    total = sum(p.stat().st_size for p in (LAYOUT / "blobs" / "sha256").iterdir())
    doc = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
        "skopeo": subprocess.run([SKOPEO, "--version"], capture_output=True, text=True).stdout.strip(),
        "image": f"five gzip layers, {total / 1e6:.0f} MB of blobs, {TREE.name} tree split by directory",
        "results": results,
    }
    (HERE / "results-images.json").write_text(json.dumps(doc, indent=1) + "\n")
    block = markdown(doc)
    print(block)
    if args.update_readme:
        start, end = bench.readme_markers("bench-images-table")
        print(bench.update_readme(f"{start}\n{block}\n{end}", "bench-images-table"))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
