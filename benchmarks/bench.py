#!/usr/bin/env python3
"""Our ``containers-storage`` CLI against the Go CLI, operation by operation, on vfs and overlay.

Usage::

    .venv/bin/python benchmarks/bench.py [--quick] [--reference /usr/bin/containers-storage]
        [--ops OPS] [--drivers vfs,overlay] [--runs N] [--no-drop-caches] [--update-readme]

Workloads (built once under benchmarks/work/, reused by later runs):

- ``rootfs.tar``/``.tar.gz``/``.tar.zst``: a ~170 MB, ~6.5k entry root filesystem (workload.py);
- a store per driver and CLI holding it as layer ``base`` (plus ``child`` on top of it);
- listing stores of 1,000 and 10,000 layers and named images per driver, written in bulk through
  our library in one process and checked with the Go CLI (both CLIs read the same store).

Operations (``--ops`` takes a comma list of names or prefixes, e.g. ``import-layer,list@1k``):

- ``import-layer:{tar,tar.gz,tar.zst}``, ``applydiff:{...}`` (into an empty layer), ``diff-u`` and
  ``diff-c`` of ``base`` to a file, ``delete-layer`` of an imported copy of it, ``create-layer``
  on top of ``base`` (vfs copies the parent), ``mount-unmount`` of ``child``;
- ``list@1k:*`` / ``list@10k:*``: ``layers``, ``layers --json``, ``images``, ``images --json``,
  ``image <name>``, ``exists -i <name>``, ``layer <id>`` (warm caches, as a user sees them);
- ``writers``: 4 processes, each creating 100 layers and 100 images at once in a fresh store; the
  wall time of all of it, then every layer and image is checked to be there;
- physical references on the same tree, in the same rounds: GNU ``tar -xf`` (with
  ``import-layer:tar``), ``cp -a`` (with vfs ``create-layer``), ``rm -rf`` (with ``delete-layer``);
- ``import-layer:tar/tools-warm``: the same import and ``tar -xf``, but after the page cache is
  dropped each tool first imports (extracts) a one-file tar, untimed, into a scratch store: the
  input and the store stay cold, the tool's own executable and libraries are loaded, as on a
  machine that uses them.  A cold CPython start reads ~150 ms of files tar never needs.

Our CLI and the reference run alternately (which goes first alternates too), with the page cache
dropped before every heavy run, and each operation starts once the machine has settled (``sync``,
then a half second with the CPUs >= 85% idle: the heavy operations leave seconds of write-back and
inode freeing behind them).  Each operation reports the median wall time of each, the median
of the pairwise ratios ours/reference, and the peak RSS of each (GNU time's ``%M``, so child
processes count too; ``wait4`` here would count this Python process's own RSS in every child).
Commands our CLI or driver lacks are reported as "missing".  Writes
benchmarks/results.json and benchmarks/ratios.png (matplotlib, ``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workload import TREE, WORK, build_inputs, drop_caches  # noqa: E402

REPO = HERE.parent
OURS_CLI = REPO / ".venv" / "bin" / "containers-storage"
BENCH = WORK / "bench"
IMPLS = ("ours", "go")
LIST_SIZES = {"1k": 1000, "10k": 10000}
WRITERS, PER_WRITER = 4, 100

# Targets: ratio ours/Go (lower is better).
T_IMPORT, T_DIFF, T_DELETE, T_LIST_1K, T_LIST_10K, T_WRITERS = 0.5, 0.8, 1.0, 0.6, 0.4, 1.0
T_TAR = 1.5  # import of the .tar against GNU tar -xf of it
RSS_LIMIT_MIB = 100.0
GNU_TIME = shutil.which("time", path="/usr/bin:/bin") or ""  # Debian package "time"
MISSING_MARKS = ("unrecognized command", "driver not supported", "not supported by",
                 "No module named", "unknown driver")


class Skip(Exception):
    """An operation that cannot run for one CLI: ``kind`` is "missing" or "error"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Sample:
    wall: float
    rss_kib: int


@dataclass
class Result:
    op: str
    driver: str
    target: float | None
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {i: [] for i in (*IMPLS, "ref")})
    status: dict[str, str] = field(default_factory=dict)  # impl -> "missing: ..."/"error: ..."
    load: list[float] = field(default_factory=list)
    note: str = ""
    ref_label: str = ""
    ref_target: float | None = None

    def ref_ratio(self) -> float | None:
        """Median of the pairwise ratios ours / physical reference, from the same rounds."""
        pairs = [o.wall / r.wall for o, r in zip(self.samples["ours"], self.samples["ref"], strict=False)
                 if r.wall > 0]
        return statistics.median(pairs) if pairs and self.ok("ours") else None

    def ok(self, impl: str) -> bool:
        return impl not in self.status and bool(self.samples[impl])

    def median(self, impl: str) -> float | None:
        s = self.samples[impl]
        return statistics.median(x.wall for x in s) if s and self.ok(impl) else None

    def rss_mib(self, impl: str) -> float | None:
        s = self.samples[impl]
        return max(x.rss_kib for x in s) / 1024 if s and self.ok(impl) else None

    def ratio(self) -> float | None:
        if not (self.ok("ours") and self.ok("go")):
            return None
        pairs = [o.wall / g.wall for o, g in zip(self.samples["ours"], self.samples["go"], strict=False)
                 if g.wall > 0]
        return statistics.median(pairs) if pairs else None

    def verdict(self) -> str:
        for impl in IMPLS:
            if impl in self.status:
                return f"{impl} {self.status[impl].split(':')[0]}"
        r = self.ratio()
        rss = self.rss_mib("ours")
        if r is None:
            return "-"
        bad = []
        if self.target is not None and r > self.target:
            bad.append("MISS")
        if rss is not None and rss >= RSS_LIMIT_MIB:
            bad.append("RSS")
        return " ".join(bad) or "ok"


# -- running commands ----------------------------------------------------------------------------
def run(cmd: list[str], *, stdin: Path | None = None, stdout: Path | None = None,
        env: dict[str, str] | None = None) -> tuple[float, int, int, str, str]:
    """Run ``cmd``; returns (wall seconds, peak RSS KiB of it and its children, rc, stdout, stderr).

    The peak RSS comes from GNU time: ``wait4`` here would report at least this (large) Python
    process's own RSS, which a vforked child carries until its exec.
    """
    out_path = stdout or BENCH / f".out-{os.getpid()}"
    err_path = BENCH / f".err-{os.getpid()}"
    rss_path = BENCH / f".rss-{os.getpid()}"
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *cmd] if GNU_TIME else cmd
    with open(out_path, "wb") as out, open(err_path, "wb") as err, \
            open(stdin or os.devnull, "rb") as inp:
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdin=inp, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss
    if GNU_TIME:
        lines = rss_path.read_text().split()
        rss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    text = "" if stdout else out_path.read_text(errors="replace")
    return wall, rss, proc.returncode, text, err_path.read_text(errors="replace")


def settle(limit: float = 60.0) -> float:
    """Sync, then wait (up to ``limit`` s) for a half second in which the CPUs are >= 85% idle.

    The heavy operations leave seconds of write-back and inode freeing behind them; a 20 ms
    listing measured in that wake is mostly measuring the kernel's clean-up.  Returns the wait.
    """
    os.sync()
    t0 = time.perf_counter()

    def cpu() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3], sum(fields)  # idle, total

    while time.perf_counter() - t0 < limit:
        idle0, total0 = cpu()
        time.sleep(0.5)
        idle1, total1 = cpu()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= 0.85:
            break
    return time.perf_counter() - t0


def check(impl: str, cmd: list[str], rc: int, out: str, err: str) -> None:
    if rc == 0:
        return
    message = (err.strip() or out.strip() or f"exit {rc}").splitlines()[-1][:300]
    kind = "missing" if impl == "ours" and any(m in err + out for m in MISSING_MARKS) else "error"
    raise Skip(kind, f"{shlex.join(cmd[3:])[:120]}: {message}")


@dataclass
class Cli:
    """One CLI bound to one store."""

    impl: str
    binary: str
    root: Path
    driver: str
    ids: dict[str, str] = field(default_factory=dict)

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--graph", str(self.root / "root"), "--run", str(self.root / "run"),
                "--storage-driver", self.driver, *args]

    def call(self, *args: str, stdin: Path | None = None) -> str:
        cmd = self.argv(*args)
        _, _, rc, out, err = run(cmd, stdin=stdin)
        check(self.impl, cmd, rc, out, err)
        return out

    def new_id(self, *args: str) -> str:
        out = self.call(*args)
        words = out.split()
        if not words:
            raise Skip("error", f"{args[0]}: printed no ID")
        return words[0]


# -- stores ----------------------------------------------------------------------------------------
class Stores:
    def __init__(self, args: argparse.Namespace) -> None:
        self.binaries = {"ours": str(args.ours), "go": str(args.reference)}
        self.inputs = build_inputs()
        self.drop = not args.no_drop_caches and os.geteuid() == 0
        self._ready: dict[tuple[str, str], Cli] = {}

    def cli(self, impl: str, driver: str, kind: str) -> Cli:
        return Cli(impl, self.binaries[impl], BENCH / kind / f"{driver}-{impl}", driver)

    def heavy(self, impl: str, driver: str) -> Cli:
        """The store holding ``base`` (the rootfs) and ``child`` on top of it, made once."""
        if (impl, driver) in self._ready:
            return self._ready[(impl, driver)]
        cli = self.cli(impl, driver, "heavy")
        stamp = cli.root / "stamp"
        try:
            if stamp.exists():
                ids = json.loads(stamp.read_text())
                cli.call("layer", ids["base"])
                cli.call("layer", ids["child"])
                cli.ids = ids
                self._ready[(impl, driver)] = cli
                return cli
        except (Skip, ValueError, KeyError):
            pass
        wipe(cli)
        cli.root.mkdir(parents=True)
        print(f"  [setup] {impl}/{driver}: importing base layer", file=sys.stderr, flush=True)
        cli.ids = {"base": cli.new_id("import-layer", "-n", "base", "-f", str(self.inputs["tar"]))}
        cli.ids["child"] = cli.new_id("create-layer", "-n", "child", "base")
        stamp.write_text(json.dumps(cli.ids))
        self._ready[(impl, driver)] = cli
        return cli

    def listing(self, driver: str, size: str) -> tuple[Cli, Cli, dict[str, str]]:
        """The shared store of 1k/10k layers and named images: (ours, go, lookup names)."""
        n = LIST_SIZES[size]
        root = BENCH / "list" / f"{driver}-{size}"
        clis = [Cli(impl, self.binaries[impl], root, driver) for impl in IMPLS]
        info_path = root / "info.json"
        if not info_path.exists():
            print(f"  [setup] building a {driver} store of {n} layers and images", file=sys.stderr,
                  flush=True)
            if root.exists():
                wipe(clis[0])
            proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(HERE / "bench.py"),
                                   "--build-store", str(root), driver, str(n)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise Skip("missing" if any(m in proc.stderr for m in MISSING_MARKS) else "error",
                           f"building the {driver} store: {proc.stderr.strip().splitlines()[-1:]}")
            # Both CLIs must see every layer and image.
            for cli in clis:
                layers = [ln for ln in cli.call("layers").splitlines() if not ln.startswith("\t")]
                images = [ln for ln in cli.call("images").splitlines() if not ln.startswith("\t")]
                if len(layers) != n or len(images) != n:
                    raise Skip("error", f"{cli.impl} sees {len(layers)} layers, {len(images)} images")
            info_path.write_text(proc.stdout)
        return clis[0], clis[1], json.loads(info_path.read_text())


def wipe(cli: Cli) -> None:
    """Remove a store, unmounting whatever is still mounted beneath it first."""
    if not cli.root.exists():
        return
    prefix = str(cli.root) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(cli.root, ignore_errors=True)


def build_store(root: str, driver: str, n: int) -> None:
    """(--build-store) n layers and n named images through our library, saved once each."""
    import hashlib

    from containers_storage.config import StoreOptions
    from containers_storage.store import get_store

    store = get_store(StoreOptions(graph_root=os.path.join(root, "root"),
                                   run_root=os.path.join(root, "run"), driver_name=driver))
    rl = store.layer_store
    layer_ids: list[str] = []
    with rl.writing():
        save = rl._save
        rl._save = lambda locations: None  # type: ignore[method-assign]
        parent = None
        for i in range(n):
            lid = hashlib.sha256(f"layer-{i}".encode()).hexdigest()
            layer, _ = rl.create(lid, parent if i % 5 else None, [], "", None, False)
            d = layer.raw
            d["compressed-diff-digest"] = "sha256:" + hashlib.sha256(f"c{i}".encode()).hexdigest()
            d["compressed-size"] = 1000 + i
            d["diff-digest"] = "sha256:" + hashlib.sha256(f"u{i}".encode()).hexdigest()
            d["diff-size"] = 3000 + i
            d["compression"] = 2
            d["uidset"] = [0]
            d["gidset"] = [0]
            parent = layer
            layer_ids.append(lid)
        del rl._save
        save(1)
    ims = store.image_store
    names: list[str] = []
    with ims.writing():
        ims.save = lambda locations=None: None  # type: ignore[method-assign]
        for i, lid in enumerate(layer_ids):
            name = f"registry.example.com/bench/app{i:05d}:latest"
            manifest = json.dumps({"schemaVersion": 2, "layers": [{"digest": f"sha256:{i:064x}"}]}).encode()
            ims.create(hashlib.sha256(f"image-{i}".encode()).hexdigest(), [name], lid,
                       metadata='{"signatures-sizes":{}}',
                       digest="sha256:" + hashlib.sha256(manifest).hexdigest(),
                       big_data=[("manifest", manifest, "")])
            names.append(name)
        del ims.save
        ims.save()
    mid = n // 2
    print(json.dumps({"image": names[mid], "layer": layer_ids[mid]}))


# -- operations ----------------------------------------------------------------------------------
@dataclass
class Op:
    """One benchmarked operation: ``prepare`` (untimed) returns the timed command lists and a cleanup."""

    name: str
    driver: str
    target: float | None
    heavy: bool
    prepare: Callable[[str], tuple[list[list[str]], Callable[[], None]]]
    note: str = ""
    # A physical reference run in the same rounds (same prepare protocol, impl "ref").
    ref: Callable[[str], tuple[list[list[str]], Callable[[], None]]] | None = None
    ref_label: str = ""
    ref_target: float | None = None
    # Untimed commands run after the page cache is dropped, before the timed ones (impl -> argv list).
    warm: Callable[[str], list[list[str]]] | None = None


def heavy_ops(stores: Stores, driver: str, with_refs: bool = True) -> list[Op]:
    ops: list[Op] = []
    out_file = BENCH / "diff-out.tar"

    def import_op(kind: str) -> Callable[[str], tuple[list[list[str]], Callable[[], None]]]:
        def prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
            cli = stores.heavy(impl, driver)
            cmd = cli.argv("import-layer", "-f", str(stores.inputs[kind]))
            return [cmd], lambda: delete_last(cli)
        return prepare

    def applydiff_op(kind: str) -> Callable[[str], tuple[list[list[str]], Callable[[], None]]]:
        def prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
            cli = stores.heavy(impl, driver)
            lid = cli.new_id("create-layer")

            def cleanup() -> None:
                cli.call("delete-layer", lid)
            return [cli.argv("applydiff", "-f", str(stores.inputs[kind]), lid)], cleanup
        return prepare

    def diff_op(flag: str) -> Callable[[str], tuple[list[list[str]], Callable[[], None]]]:
        def prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
            cli = stores.heavy(impl, driver)
            return [cli.argv("diff", flag, "-f", str(out_file), "base")], lambda: out_file.unlink(True)
        return prepare

    def delete_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        cli = stores.heavy(impl, driver)
        lid = cli.new_id("import-layer", "-f", str(stores.inputs["tar"]))
        return [cli.argv("delete-layer", lid)], lambda: None

    def create_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        cli = stores.heavy(impl, driver)
        return [cli.argv("create-layer", "base")], lambda: delete_last(cli)

    def mount_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        cli = stores.heavy(impl, driver)
        child = cli.ids["child"]  # Go's mount takes an ID, not a name
        return [cli.argv("mount", child), cli.argv("unmount", child)], lambda: None

    refs = ref_callables(stores) if with_refs else {}
    for kind in ("tar", "tar.gz", "tar.zst"):
        ops.append(Op(f"import-layer:{kind}", driver, T_IMPORT, True, import_op(kind)))
    if refs:
        ops[0].ref, ops[0].ref_label, ops[0].ref_target = refs["tar -xf"], "GNU tar -xf rootfs.tar", T_TAR
        ops.append(Op("import-layer:tar/tools-warm", driver, T_IMPORT, True, import_op("tar"),
                      "each tool warmed on a one-file tar after the caches are dropped",
                      ref=refs["tar -xf"], ref_label="GNU tar -xf rootfs.tar (tools warm)",
                      ref_target=T_TAR, warm=warm_tools(stores, driver)))
    for kind in ("tar", "tar.gz", "tar.zst"):
        ops.append(Op(f"applydiff:{kind}", driver, T_IMPORT, True, applydiff_op(kind)))
    ops.append(Op("diff-u", driver, T_DIFF, True, diff_op("-u")))
    ops.append(Op("diff-c", driver, T_DIFF, True, diff_op("-c")))
    ops.append(Op("delete-layer", driver, T_DELETE, True, delete_prepare, ref=refs.get("rm -rf"),
                  ref_label="rm -rf of the extracted tree"))
    ops.append(Op("create-layer", driver, None, True, create_prepare,
                  "on top of base" + (" (copies it)" if driver == "vfs" else ""),
                  ref=refs.get("cp -a") if driver == "vfs" else None, ref_label="cp -a of the tree"))
    ops.append(Op("mount-unmount", driver, None, False, mount_prepare))
    return ops


def warm_tools(stores: Stores, driver: str) -> Callable[[str], list[list[str]]]:
    """Untimed: each tool extracts a one-file tar into a scratch place (see tools-warm above)."""
    tiny = BENCH / "tiny.tar"
    if not tiny.exists():
        import io
        import tarfile

        tiny.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tiny, "w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("etc/hostname")
            info.size = 6
            tf.addfile(info, io.BytesIO(b"bench\n"))

    def commands(impl: str) -> list[list[str]]:
        if impl == "ref":
            dest = BENCH / "warm" / "tar"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            return [["tar", "-xf", str(tiny), "-C", str(dest)]]
        cli = stores.cli(impl, driver, "warm")
        return [cli.argv("import-layer", "-n", "warm", "-f", str(tiny)), cli.argv("delete-layer", "warm")]
    return commands


_LAST_OUTPUT: dict[str, str] = {}


def delete_last(cli: Cli) -> None:
    """Delete the layer the timed command just created (its ID is the first word it printed)."""
    words = _LAST_OUTPUT.get(cli.impl, "").split()
    if words:
        cli.call("delete-layer", words[0])


def listing_ops(stores: Stores, driver: str, size: str) -> list[Op]:
    target = T_LIST_1K if size == "1k" else T_LIST_10K
    commands: list[tuple[str, Callable[[dict[str, str]], list[str]]]] = [
        ("layers", lambda i: ["layers"]),
        ("layers--json", lambda i: ["layers", "--json"]),
        ("images", lambda i: ["images"]),
        ("images--json", lambda i: ["images", "--json"]),
        ("image", lambda i: ["image", i["image"]]),
        ("exists-i", lambda i: ["exists", "-i", i["image"]]),
        ("layer", lambda i: ["layer", i["layer"]]),
    ]
    ops = []
    for name, args in commands:
        def prepare(impl: str, args: Callable[[dict[str, str]], list[str]] = args
                    ) -> tuple[list[list[str]], Callable[[], None]]:
            ours, go, info = stores.listing(driver, size)
            return [(ours if impl == "ours" else go).argv(*args(info))], lambda: None
        ops.append(Op(f"list@{size}:{name}", driver, target, False, prepare))
    return ops


WRITER_SCRIPT = r"""
set -e
w=$1; shift
i=0
while [ $i -lt {n} ]; do
  id=$("$@" create-layer)
  "$@" create-image -n "w$w-$i" "$id" >/dev/null
  i=$((i + 1))
done
"""


def writers_op(stores: Stores, driver: str) -> Op:
    def prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        cli = stores.cli(impl, driver, "writers")
        wipe(cli)
        cli.root.mkdir(parents=True)
        cli.call("layers")  # the driver's one-time set-up is not what this measures
        script = WRITER_SCRIPT.replace("{n}", str(PER_WRITER))
        shell = ["sh", "-c", script, "sh"]
        workers = [[*shell, str(w), *cli.argv()] for w in range(WRITERS)]
        return [["__parallel__", json.dumps(workers)]], lambda: verify_writers(cli)
    return Op("writers", driver, T_WRITERS, False, prepare,
              f"{WRITERS} processes x {PER_WRITER} create-layer + create-image")


def verify_writers(cli: Cli) -> None:
    """No error, nothing lost: every writer's every image is there, on a distinct layer."""
    root = cli.root / "root"
    layers = json.loads((root / f"{cli.driver}-layers" / "layers.json").read_text())
    images = json.loads((root / f"{cli.driver}-images" / "images.json").read_text())
    want = {f"w{w}-{i}" for w in range(WRITERS) for i in range(PER_WRITER)}
    got = {n for img in images for n in img.get("names", [])}
    tops = {img.get("layer") for img in images}
    if len(layers) != len(want) or got != want or len(tops) != len(want):
        raise Skip("error", f"lost writes: {len(layers)} layers, {len(got & want)}/{len(want)} images")
    wipe(cli)


def run_parallel(workers: list[list[str]]) -> tuple[float, int, int, str, str]:
    """Start every worker at once; wall time until the last ends, the largest peak RSS."""
    rss_paths = [BENCH / f".rss-{os.getpid()}-{i}" for i in range(len(workers))]
    if GNU_TIME:
        workers = [[GNU_TIME, "-f", "%M", "-o", str(p), *w] for p, w in zip(rss_paths, workers, strict=True)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(w, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for w in workers]
    rss, rc, errs = 0, 0, []
    for p, rss_path in zip(procs, rss_paths, strict=True):
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if GNU_TIME:
            words = rss_path.read_text().split()
            rss = max(rss, int(words[-1]) if words and words[-1].isdigit() else 0)
        else:
            rss = max(rss, usage.ru_maxrss)
        rc = rc or p.returncode
        assert p.stderr is not None
        errs.append(p.stderr.read().decode(errors="replace"))
        p.stderr.close()
    return time.perf_counter() - t0, rss, rc, "", "".join(errs)


def ref_callables(stores: Stores) -> dict[str, Callable[[str], tuple[list[list[str]], Callable[[], None]]]]:
    """Physical references on the same tree, run in the same rounds as the operation they frame."""
    dest = BENCH / "ref"

    def fresh() -> None:
        shutil.rmtree(dest, ignore_errors=True)

    def tar_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        fresh()
        dest.mkdir(parents=True)
        return [["tar", "-xf", str(stores.inputs["tar"]), "-C", str(dest)]], fresh

    def cp_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        fresh()
        return [["cp", "-a", str(TREE), str(dest)]], fresh

    def rm_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        fresh()
        dest.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(stores.inputs["tar"]), "-C", str(dest)], check=True)
        return [["rm", "-rf", str(dest)]], fresh

    return {"tar -xf": tar_prepare, "cp -a": cp_prepare, "rm -rf": rm_prepare}


def measure(op: Op, runs: int, warmup: int, stores: Stores) -> Result:
    res = Result(op.name, op.driver, op.target, note=op.note, ref_label=op.ref_label,
                 ref_target=op.ref_target)
    impls: tuple[str, ...] = IMPLS + (("ref",) if op.ref is not None else ())
    for r in range(warmup + runs):
        order = impls if r % 2 == 0 else tuple(reversed(impls))
        for impl in order:
            if impl in res.status:
                continue
            try:
                if impl == "ref":
                    assert op.ref is not None
                    cmds, cleanup = op.ref(impl)
                else:
                    cmds, cleanup = op.prepare(impl)
                if op.heavy:
                    drop_caches(stores.drop)
                for cmd in op.warm(impl) if op.warm is not None else ():
                    _, _, rc, out, err = run(cmd)
                    check(impl, cmd, rc, out, err)
                wall, rss = 0.0, 0
                for cmd in cmds:
                    if cmd[0] == "__parallel__":
                        w, m, rc, out, err = run_parallel(json.loads(cmd[1]))
                    else:
                        w, m, rc, out, err = run(cmd)
                    check(impl, cmd, rc, out, err)
                    _LAST_OUTPUT[impl] = out
                    wall, rss = wall + w, max(rss, m)
                cleanup()
            except Skip as e:
                res.status[impl] = f"{e.kind}: {e}"
                continue
            if r >= warmup:
                res.samples[impl].append(Sample(wall, rss))
        res.load.append(os.getloadavg()[0])
    return res


# -- report ----------------------------------------------------------------------------------------
def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(results: list[Result]) -> str:
    head = (f"{'operation':26s} {'driver':7s} {'ours s':>8s} {'go s':>8s} {'ours/go':>8s} {'target':>7s} "
            f"{'ours MiB':>9s} {'go MiB':>7s}  status")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.op:26s} {r.driver:7s} {fmt(r.median('ours'), '8.3f')} {fmt(r.median('go'), '8.3f')} "
            f"{fmt(r.ratio(), '8.2f')} {fmt(r.target, '7.2f')} {fmt(r.rss_mib('ours'), '9.1f')} "
            f"{fmt(r.rss_mib('go'), '7.1f')}  {r.verdict()}")
    return "\n".join(lines)


def markdown(results: list[Result], refs: dict[str, str]) -> str:
    lines = ["| operation | driver | ours (s) | Go (s) | ours/Go | target | ours peak RSS (MiB) | "
             "Go peak RSS (MiB) | status |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r.op.startswith("ref:"):
            continue
        lines.append(
            f"| {r.op} | {r.driver} | {fmt(r.median('ours'), '.3f')} | {fmt(r.median('go'), '.3f')} | "
            f"**{fmt(r.ratio(), '.2f')}** | {fmt(r.target, '.2f')} | {fmt(r.rss_mib('ours'), '.0f')} | "
            f"{fmt(r.rss_mib('go'), '.0f')} | {r.verdict()} |")
    if refs:
        lines += ["", "| physical reference | time (s) | ours | ours / reference |", "|---|---:|---|---:|"]
        lines += [v for v in refs.values()]
    return "\n".join(lines)


def references(results: list[Result]) -> dict[str, str]:
    """Ours against the physical references measured in the same rounds."""
    out = {}
    for r in results:
        ref_t = statistics.median(x.wall for x in r.samples["ref"]) if r.samples["ref"] else None
        if ref_t is None:
            continue
        ratio = r.ref_ratio()
        target = f" (target {r.ref_target})" if r.ref_target else ""
        out[f"{r.op}/{r.driver}"] = (f"| {r.ref_label} | {ref_t:.3f} | {r.op} ({r.driver}): "
                                     f"{fmt(r.median('ours'), '.3f')} s | {fmt(ratio, '.2f')}{target} |")
    return out


def chart(results: list[Result], path: Path) -> str:
    rows = [r for r in results if r.ratio() is not None and not r.op.startswith("ref:")]
    if not rows:
        return "no ratios to plot"
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    labels = [f"{r.op} [{r.driver}]" for r in rows]
    ratios = [r.ratio() or 0.0 for r in rows]
    colors = ["#9e9e9e" if r.target is None else "#2e7d32" if r.verdict() == "ok"
              else "#c62828" if "MISS" in r.verdict() else "#f9a825" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.26 * len(rows) + 1.4))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, ratios, color=colors, height=0.7)
    for yy, r in zip(y, rows, strict=True):
        if r.target is not None:
            ax.plot([r.target, r.target], [yy - 0.42, yy + 0.42], color="black", lw=1.5)
        ax.text((r.ratio() or 0) + 0.01, yy, f"{r.ratio():.2f}", va="center", fontsize=7)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(0.1, min(ratios) * 0.8), max(2.0, max(ratios) * 1.6))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("time ours / Go, log scale (lower is better; black tick = target; green meets it, "
                  "red misses it, grey has none)", fontsize=8)
    ax.set_title("containers-storage: Python CLI vs Go CLI, median of pairwise ratios", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    go_version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "containers-storage"],
                                capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu,
            "python": platform.python_version(), "go_package": go_version,
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


# -- main --------------------------------------------------------------------------------------------
def prepare_bytecode(ours: str) -> None:
    """Run our CLI as an installed package runs: with its modules' bytecode compiled and cached.

    A wheel install compiles it; an editable checkout under PYTHONDONTWRITEBYTECODE=1 (a common
    CI setting) would recompile every changed module in every CLI call instead.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    python = Path(ours).parent / "python"
    if not python.exists():
        return
    where = subprocess.run([str(python), "-c", "import containers_storage, os; "
                            "print(os.path.dirname(containers_storage.__file__))"],
                           capture_output=True, text=True).stdout.strip()
    if where:
        subprocess.run([str(python), "-m", "compileall", "-q", where], check=False)


def results_from_json(doc: dict[str, Any]) -> list[Result]:
    out = []
    for d in doc["results"]:
        r = Result(d["op"], d["driver"], d["target"], note=d.get("note", ""))
        for impl, samples in d["samples"].items():
            r.samples[impl] = [Sample(w, rss) for w, rss in samples]
        r.status = dict(d.get("problems") or {})
        out.append(r)
    return out


README_START, README_END = "<!-- bench-table -->", "<!-- /bench-table -->"


def readme_block(doc: dict[str, Any], chart_path: str) -> str:
    """The generated part of README.md's Benchmarks section: where, how, the table, the chart."""
    m = doc["machine"]
    rel_chart = os.path.relpath(chart_path, REPO)
    return "\n".join([
        README_START,
        f"Run {doc['date']} on {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB, kernel {m['kernel']}, "
        f"Python {m['python']}, against Debian's containers-storage {m['go_package']}; workload "
        f"{doc['workload']['tar_mb']} MB / {doc['workload']['entries']} entries. Command:",
        "",
        "```",
        f".venv/bin/{doc['command']}",
        "```",
        "",
        doc["markdown"],
        "",
        f"![ours/Go per operation]({rel_chart})",
        README_END,
    ])


def update_readme(block: str) -> str:
    readme = REPO / "README.md"
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < 0:
        return "README.md has no bench-table markers: not updated"
    readme.write_text(text[:start] + block + text[end + len(README_END):])
    return "README.md: benchmark table updated"


def select(ops: list[Op], patterns: list[str]) -> list[Op]:
    if not patterns:
        return ops
    return [op for op in ops if any(op.name == p or op.name.startswith(p) for p in patterns)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs (3 heavy, 5 listing, 1 writers)")
    ap.add_argument("--reference", default="/usr/bin/containers-storage",
                    help="the Go CLI to compare with (Debian's containers-storage)")
    ap.add_argument("--ours", default=str(OURS_CLI), help="our CLI")
    ap.add_argument("--ops", default="", help="comma list of operation names or prefixes")
    ap.add_argument("--drivers", default="vfs,overlay")
    ap.add_argument("--runs", type=int, default=0, help="runs per operation (overrides the defaults)")
    ap.add_argument("--no-drop-caches", action="store_true")
    ap.add_argument("--no-refs", action="store_true", help="skip the physical references")
    ap.add_argument("--results", default=str(HERE / "results.json"))
    ap.add_argument("--chart", default=str(HERE / "ratios.png"))
    ap.add_argument("--update-readme", action="store_true",
                    help="replace the table between README.md's bench-table markers")
    ap.add_argument("--readme-only", action="store_true",
                    help="only write README.md's table from --results (an earlier run)")
    ap.add_argument("--build-store", nargs=3, metavar=("ROOT", "DRIVER", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_store:
        build_store(args.build_store[0], args.build_store[1], int(args.build_store[2]))
        return 0
    if args.readme_only:  # the README table (and the chart) from an earlier run's results
        doc = json.loads(Path(args.results).read_text())
        print(chart(results_from_json(doc), Path(args.chart)))
        print(update_readme(readme_block(doc, args.chart)))
        return 0
    if not os.path.exists(args.reference):
        sys.exit(f"{args.reference}: not found (Debian package containers-storage, or --reference)")
    BENCH.mkdir(parents=True, exist_ok=True)
    prepare_bytecode(args.ours)
    stores = Stores(args)
    patterns = [p for p in args.ops.split(",") if p]
    drivers = [d for d in args.drivers.split(",") if d]

    heavy_runs = args.runs or (3 if args.quick else 5)
    list_runs = args.runs or (5 if args.quick else 21)
    writer_runs = args.runs or (1 if args.quick else 3)
    plan: list[tuple[Op, int, int]] = []
    for driver in drivers:
        plan += [(op, heavy_runs, 0) for op in select(heavy_ops(stores, driver, not args.no_refs), patterns)]
    for size in LIST_SIZES:
        for driver in drivers:
            plan += [(op, list_runs, 1) for op in select(listing_ops(stores, driver, size), patterns)]
    for driver in drivers:
        plan += [(op, writer_runs, 0) for op in select([writers_op(stores, driver)], patterns)]

    info = machine()
    tar_mb = stores.inputs["tar"].stat().st_size / 1e6
    entries = int(subprocess.run(f"tar -tf {stores.inputs['tar']} | wc -l", shell=True, capture_output=True,
                                 text=True).stdout or 0)
    print(f"ours: {args.ours}\nreference: {args.reference} ({info['go_package']})\n"
          f"machine: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}; "
          f"load {os.getloadavg()[0]:.2f}\nworkload: {tar_mb:.0f} MB tar, {entries} entries; "
          f"drop caches: {stores.drop}\n", flush=True)
    results: list[Result] = []
    for op, runs, warmup in plan:
        waited = settle()
        if waited > 5:
            print(f"  (waited {waited:.0f} s for the machine to settle)", flush=True)
        t0 = time.perf_counter()
        res = measure(op, runs, warmup, stores)
        results.append(res)
        print(f"{op.name:26s} {op.driver:7s} ours {fmt(res.median('ours'), '.3f')} s  "
              f"go {fmt(res.median('go'), '.3f')} s  ratio {fmt(res.ratio(), '.2f')}  "
              f"rss {fmt(res.rss_mib('ours'), '.0f')}/{fmt(res.rss_mib('go'), '.0f')} MiB  "
              f"{res.verdict()}  ({time.perf_counter() - t0:.0f} s, load {max(res.load or [0]):.1f})"
              + "".join(f"\n    {k}: {v}" for k, v in res.status.items()), flush=True)

    print()
    print(table([r for r in results if not r.op.startswith("ref:")]))
    refs = references(results)
    if refs:
        print("\nphysical references (same rounds):")
        for v in refs.values():
            print("  " + v.strip("| ").replace(" | ", "  "))
    command = "python benchmarks/bench.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if a != "--update-readme")
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command.strip(),
        "machine": info, "workload": {"tar_mb": round(tar_mb, 1), "entries": entries},
        "reference": args.reference, "rss_limit_mib": RSS_LIMIT_MIB,
        "results": [{
            "op": r.op, "driver": r.driver, "target": r.target, "note": r.note,
            "ours_s": r.median("ours"), "go_s": r.median("go"), "ratio": r.ratio(),
            "ours_rss_mib": r.rss_mib("ours"), "go_rss_mib": r.rss_mib("go"), "status": r.verdict(),
            "problems": r.status, "load": r.load,
            "samples": {i: [[round(s.wall, 4), s.rss_kib] for s in r.samples[i]] for i in (*IMPLS, "ref")},
            "reference": r.ref_label, "ours_per_reference": r.ref_ratio(),
        } for r in results],
        "markdown": markdown(results, refs),
    }
    Path(args.results).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nresults: {args.results}\n{chart(results, Path(args.chart))}")
    if args.update_readme:
        print(update_readme(readme_block(doc, args.chart)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
