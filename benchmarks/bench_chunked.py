"""Partial layers (zstd:chunked): applying one whole, and pulling one that shares most files.

Workload: the benchmark's ~175 MB root filesystem (``workload.py``) as a zstd:chunked blob made
by our writer (``rootfs.zstd-chunked``), and a second version of it with every 30th regular file
rewritten (``rootfs2``), both built once under ``benchmarks/work/chunked/``.  Every run is a fresh
interpreter on a fresh overlay store, page cache dropped first; the two sides alternate.

- ``apply-whole``: our partial pull of the whole blob from a local file (nothing in the store to
  reuse) against our plain import of ``rootfs.tar.zst`` (``put_layer``).  Target <= 1.1.
- ``pull-second``: with the first version in the store, our partial pull of the second one from
  Debian's ``docker-registry`` on 127.0.0.1 against our full pull of it (the whole blob over
  HTTP, then the import).  Target < 1.0; the bytes the registry served for the blob (from its
  log) against the blob's size, target <= 0.15.
- ``skopeo-second`` (context, no target): skopeo 1.9.3's partial pull of the same second image
  into a store holding the first, against ours: time, and the bytes each was served.

Prints medians and ratios; writes ``benchmarks/results-chunked.json``; ``--update-readme``
refreshes the README table between ``<!-- bench-chunked-table -->`` markers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))
import bench  # noqa: E402  (update_readme)
from workload import TAR, build_inputs, drop_caches  # noqa: E402

WORK = HERE / "work" / "chunked"
PYTHON = sys.executable
SKOPEO = shutil.which("skopeo")
TARGETS = {"apply-whole": 1.1, "pull-second": 1.0}
BYTES_TARGET = 0.15

# One timed operation in a fresh interpreter: prints its wall time (and what it fetched).
_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from containers_storage.config import StoreOptions
from containers_storage.store import get_store
from containers_storage.archive.chunked import FileBlobSource, HTTPBlobSource, pull_layer
op, root, arg = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
store = get_store(StoreOptions(graph_root=root + "/root", run_root=root + "/run", driver_name="overlay",
                               pull_options={"enable_partial_images": arg.get("partial", "true")}))
store.driver
t = time.perf_counter()
if op == "import":
    with open(arg["path"], "rb") as f:
        store.put_layer(f)
    fetched = 0
else:
    source = FileBlobSource(arg["path"]) if "path" in arg else HTTPBlobSource(arg["url"])
    r = pull_layer(store, source, digest=arg["digest"], size=arg["size"], annotations=arg["annotations"],
                   parent=arg.get("parent") or None)
    assert r.partial == (arg.get("partial", "true") == "true"), r
    fetched = r.fetched_bytes
elapsed = time.perf_counter() - t
store.shutdown(force=True)
print(json.dumps({"time": elapsed, "fetched": fetched}))
"""


def fresh(path: Path) -> None:
    if not path.exists():
        return
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for mount in sorted((m for m in mounts if m.startswith(str(path) + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(path)


def run(op: str, root: Path, arg: dict[str, object]) -> dict[str, float]:
    drop_caches()
    proc = subprocess.run([PYTHON, "-c", _CHILD, str(REPO / "src"), op, str(root), json.dumps(arg)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{op} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def build() -> dict[str, dict[str, object]]:
    """The two tarballs and their zstd:chunked blobs (made once)."""
    from containers_storage.archive.chunked import compress

    build_inputs()
    WORK.mkdir(parents=True, exist_ok=True)
    second = WORK / "rootfs2.tar"
    if not second.exists():
        with tarfile.open(TAR) as src, tarfile.open(second.with_suffix(".tmp"), "w",
                                                     format=tarfile.PAX_FORMAT) as dst:
            n = 0
            for info in src:
                data = src.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
                if data is not None:
                    n += 1
                    if n % 30 == 0:
                        data = os.urandom(len(data))
                dst.addfile(info, io.BytesIO(data) if data is not None else None)
        second.with_suffix(".tmp").rename(second)
    blobs: dict[str, dict[str, object]] = {}
    for name, tar in (("one", TAR), ("two", second)):
        blob = WORK / f"{name}.zstd-chunked"
        meta = WORK / f"{name}.json"
        if not meta.exists():
            with open(tar, "rb") as f, open(blob, "wb") as out:
                r = compress(f, out)
            meta.write_text(json.dumps({"digest": r.digest, "size": r.size, "annotations": r.annotations,
                                        "diff_id": r.diff_id}))
        blobs[name] = {"path": str(blob), **json.loads(meta.read_text())}
    return blobs


def median_row(op: str, ours: list[float], theirs: list[float], ratios: list[float], **extra: object
               ) -> dict[str, object]:
    ratio = statistics.median(ratios)
    target = TARGETS.get(op)
    ok = target is None or (ratio <= target if op == "apply-whole" else ratio < target)
    row: dict[str, object] = {"operation": op, "ours": statistics.median(ours),
                              "reference": statistics.median(theirs), "ratio": ratio, "target": target,
                              "runs": len(ratios), **extra}
    fraction = extra.get("fetched_fraction")
    if isinstance(fraction, float) and fraction > BYTES_TARGET:
        ok = False
    row["status"] = "ok" if ok else "MISS"
    print(json.dumps(row), flush=True)
    return row


def bench_apply_whole(blobs: dict[str, dict[str, object]], runs: int) -> dict[str, object]:
    store = WORK / "store"
    ours, theirs, ratios = [], [], []
    one = {k: blobs["one"][k] for k in ("path", "digest", "size", "annotations")}
    for _ in range(runs):
        fresh(store)
        o = run("pull", store, one)["time"]
        fresh(store)
        t = run("import", store, {"path": f"{TAR}.zst"})["time"]
        ours.append(o)
        theirs.append(t)
        ratios.append(o / t)
    fresh(store)
    return median_row("apply-whole", ours, theirs, ratios, reference_name="import of rootfs.tar.zst")


def _registry() -> object:
    from registrytools import ZSTD_LAYER, Registry

    reg = Registry(WORK / "registry")
    shutil.rmtree(WORK / "registry", ignore_errors=True)
    (WORK / "registry").mkdir(parents=True)
    reg.start()
    return reg, ZSTD_LAYER


def bench_pull_second(blobs: dict[str, dict[str, object]], runs: int) -> list[dict[str, object]]:
    reg, media_type = _registry()
    rows = []
    try:
        for name in ("one", "two"):
            b = blobs[name]
            reg.push_image("rootfs", name, [(Path(str(b["path"])).read_bytes(), media_type,  # type: ignore[attr-defined]
                                              b["annotations"])], [str(b["diff_id"])])
        two = blobs["two"]
        url = reg.blob_url("rootfs", str(two["digest"]))  # type: ignore[attr-defined]
        arg = {"url": url, "digest": two["digest"], "size": two["size"], "annotations": two["annotations"]}
        first = {"url": reg.blob_url("rootfs", str(blobs["one"]["digest"])),  # type: ignore[attr-defined]
                 "digest": blobs["one"]["digest"], "size": blobs["one"]["size"],
                 "annotations": blobs["one"]["annotations"]}
        store = WORK / "store"
        ours, theirs, ratios, fractions = [], [], [], []
        for _ in range(runs):
            fresh(store)
            run("pull", store, first)
            mark = reg.mark()  # type: ignore[attr-defined]
            o = run("pull", store, arg)["time"]
            served = reg.blob_bytes(str(two["digest"]), mark)  # type: ignore[attr-defined]
            fresh(store)
            run("pull", store, first)
            t = run("pull", store, {**arg, "partial": "false"})["time"]
            ours.append(o)
            theirs.append(t)
            ratios.append(o / t)
            fractions.append(served / int(str(two["size"])))
        fresh(store)
        rows.append(median_row("pull-second", ours, theirs, ratios, reference_name="full pull (ours)",
                               fetched_fraction=statistics.median(fractions)))
        if SKOPEO:
            rows.append(bench_skopeo_second(reg, two, runs, ours))
    finally:
        reg.stop()  # type: ignore[attr-defined]
    return rows


def bench_skopeo_second(reg: object, two: dict[str, object], runs: int, ours: list[float]
                        ) -> dict[str, object]:
    from registrytools import env_with, skopeo_storage_conf

    base = WORK / "skopeo"
    times, fractions = [], []
    for _ in range(runs):
        fresh(base)
        base.mkdir(parents=True)
        conf = skopeo_storage_conf(base / "storage.conf", base / "root", base / "run")

        def copy(tag: str, conf: Path = conf) -> float:
            drop_caches()
            start = time.perf_counter()
            subprocess.run([SKOPEO or "skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                            f"docker://{reg.host}/rootfs:{tag}",  # type: ignore[attr-defined]
                            f"containers-storage:example.com/rootfs:{tag}"], env=env_with(conf), check=True)
            return time.perf_counter() - start

        copy("one")
        mark = reg.mark()  # type: ignore[attr-defined]
        times.append(copy("two"))
        fractions.append(reg.blob_bytes(str(two["digest"]), mark) / int(str(two["size"])))  # type: ignore[attr-defined]
    fresh(base)
    ratios = [o / t for o, t in zip(ours, times, strict=False)]
    return median_row("skopeo-second", ours, times, ratios, reference_name="skopeo 1.9.3 partial pull",
                      skopeo_fetched_fraction=statistics.median(fractions))


def markdown(doc: dict[str, object]) -> str:
    rows = doc["results"]
    assert isinstance(rows, list)
    lines = [
        f"Run {doc['time']} on {doc['cpus']} CPUs, kernel {doc['kernel']}, Python {doc['python']}; "
        f"{doc['workload']}. Command:",
        "",
        "```",
        str(doc.get("command", ".venv/bin/python benchmarks/bench_chunked.py")),
        "```",
        "",
        "| operation | ours (s) | against | it (s) | ours/it | target | bytes served / blob | status |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        target = f"{r['target']:.2f}" if r["target"] is not None else "-"
        served = r.get("fetched_fraction", r.get("skopeo_fetched_fraction"))
        served_text = f"{served:.3f}" if isinstance(served, float) else "-"
        if r["operation"] == "skopeo-second":
            served_text += " (skopeo's)"
        lines.append(f"| {r['operation']} | {r['ours']:.3f} | {r['reference_name']} | {r['reference']:.3f} | "
                     f"**{r['ratio']:.2f}** | {target} | {served_text} | {r['status']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ops", default="apply-whole,pull-second")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    blobs = build()
    ops = args.ops.split(",")
    results: list[dict[str, object]] = []
    if "apply-whole" in ops:
        results.append(bench_apply_whole(blobs, args.runs))
    if "pull-second" in ops:
        results.extend(bench_pull_second(blobs, args.runs))
    command = ".venv/bin/python benchmarks/bench_chunked.py"
    if args.runs != parser.get_default("runs"):
        command += f" --runs {args.runs}"
    if args.ops != parser.get_default("ops"):
        command += f" --ops {args.ops}"
    doc = {
        "command": command,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
        "workload": (f"rootfs {TAR.stat().st_size / 1e6:.0f} MB as zstd:chunked "
                     f"{int(str(blobs['one']['size'])) / 1e6:.0f} MB (.tar.zst "
                     f"{Path(f'{TAR}.zst').stat().st_size / 1e6:.0f} MB), second version: every 30th file "
                     f"rewritten, {int(str(blobs['two']['size'])) / 1e6:.0f} MB"),
        "results": results,
    }
    (HERE / "results-chunked.json").write_text(json.dumps(doc, indent=1) + "\n")
    block = markdown(doc)
    print(block)
    if args.update_readme:
        start, end = bench.readme_markers("bench-chunked-table")
        print(bench.update_readme(f"{start}\n{block}\n{end}", "bench-chunked-table"))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
