#!/usr/bin/env python3
"""Our ``containers-storage`` CLI against Go CLIs, operation by operation, on vfs and overlay.

Usage::

    .venv/bin/python benchmarks/bench.py [--quick] [--reference GO_CLI ...] [--ops OPS]
        [--drivers vfs,overlay] [--fs ext4,tmpfs] [--runs N] [--no-drop-caches] [--update-readme]

``--reference`` may be given several times: every reference runs in the same rounds as ours
(Debian's 1.43 at /usr/bin/containers-storage by default; a Go CLI built from a newer
containers/storage beside it, e.g. ``--reference /usr/bin/containers-storage --reference
/usr/local/bin/go-cs-1.63``).  Each row reports ours/each reference; the targets against Debian's
1.43 and against a newer Go (1.50 and later) differ (see TARGETS).

Workloads (built once under benchmarks/work/, reused by later runs):

- ``rootfs.tar``/``.tar.gz``/``.tar.zst``: a ~175 MB, ~6.8k entry root filesystem (workload.py);
- a store per driver and CLI holding it as layer ``base`` (plus ``child`` on top of it), on the
  disk (``benchmarks/work/bench``) and, for ``--fs tmpfs``, on a tmpfs mounted at
  ``benchmarks/work/tmpfs`` with the inputs copied there: the tools' own cost, without the
  disk's timings (which wander by 30% and more between runs on a VM);
- listing stores of 1,000 and 10,000 layers and named images per driver, written in bulk through
  our library in one process (digests, sizes, a manifest per image) and checked with every CLI;
- ``1k-go``: 1,000 layers and 1,000 images written one CLI call at a time by the newest Go
  reference, as the Go CLI writes them (two names each, no big data).

Operations (``--ops`` takes a comma list of names or prefixes, e.g. ``import-layer,list@1k``):

- ``import-layer:{tar,tar.gz,tar.zst}``, ``applydiff:{...}`` (into an empty layer), ``diff-u`` and
  ``diff-c`` of ``base`` to a file, ``delete-layer`` of an imported copy of it, ``create-layer``
  on top of ``base`` (vfs copies the parent): page cache dropped before each run; the same with
  ``@tmpfs`` (stores and inputs in memory, caches kept: what the tools themselves cost);
- ``create-layer:one-call`` (warm: on top of ``base`` with overlay, an empty layer with vfs) and
  ``mount-unmount`` of ``child``: one CLI call, where start-up is most of the cost;
- ``list@1k:*`` / ``list@1k-go:*`` / ``list@10k:*``: ``layers``, ``layers --json``, ``images``,
  ``images --json``, ``image <name>``, ``exists -i <name>``, ``layer <id>`` (warm caches, as a
  user sees them);
- ``writers``: 4 processes, each creating 100 layers and 100 images at once in a fresh store; the
  wall time of all of it, then every layer and image is checked to be there;
- physical references on the same tree, in the same rounds: GNU ``tar -xf`` (with
  ``import-layer:tar``), ``cp -a`` (with vfs ``create-layer``), ``rm -rf`` (with ``delete-layer``);
- ``import-layer:tar/tools-warm``: the same import and ``tar -xf``, but after the page cache is
  dropped each tool first imports (extracts) a one-file tar, untimed, into a scratch store: the
  input and the store stay cold, the tool's own executable and libraries are loaded, as on a
  machine that uses them.  A cold CPython start reads ~150 ms of files tar never needs.

Our CLI and the references run alternately (the order reverses every round), with the page cache
dropped before every heavy run on the disk, and each operation starts once the machine has
settled (``sync``, then a half second with the CPUs >= 85% idle: the heavy operations leave
seconds of write-back and inode freeing behind them).  Each operation reports the median wall
time of each CLI, the median of the pairwise ratios ours/reference (same round), the peak RSS of
each (GNU time's ``%M``, so child processes count too; ``wait4`` here would count this Python
process's own RSS in every child) and the load average while it ran.  Commands our CLI or driver
lacks are reported as "missing".  Writes benchmarks/results.json and benchmarks/ratios.png
(matplotlib, ``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workload import TREE, WORK, build_inputs, drop_caches  # noqa: E402

REPO = HERE.parent
OURS_CLI = REPO / ".venv" / "bin" / "containers-storage"
BENCH = WORK / "bench"
TMPFS = WORK / "tmpfs"  # --fs tmpfs: a tmpfs mounted here holds the heavy stores and the inputs
IMPLS = ("ours", "go")  # the keys of a run with one reference (bench_rootless.py's)
LIST_SIZES = {"1k": 1000, "1k-go": 1000, "10k": 10000}
WRITERS, PER_WRITER = 4, 100

# Targets: ratio ours/Go (lower is better), against Debian's 1.43 ("old") and against a Go built
# from containers/storage 1.50 or later ("new", issue 16: measured against 1.63-dev).
T_IMPORT, T_DIFF, T_DELETE, T_LIST_1K, T_LIST_10K, T_WRITERS = 0.5, 0.8, 1.0, 0.6, 0.4, 1.0
T_NEW_DELETE_TMPFS, T_NEW_LIST_1K, T_NEW_LIST_10K, T_NEW_ONE_CALL = 0.8, 1.0, 0.4, 2.5
T_TAR = 1.5  # import of the .tar against GNU tar -xf of it
NEW_GO = (1, 50)  # references at this version or later are held to the "new" targets
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
class Reference:
    """A Go CLI we compare with: ``key`` names it in results, ``label`` in the tables."""

    key: str
    binary: str
    version: str
    label: str
    new: bool  # held to the targets against a newer Go


def go_version(binary: str) -> str:
    """The CLI's ``version`` line, else the version of the Debian package that ships it."""
    try:
        proc = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30)
        for line in (proc.stdout + proc.stderr).splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    owner = subprocess.run(["dpkg-query", "-S", os.path.realpath(binary)], capture_output=True, text=True)
    package = owner.stdout.split(":", 1)[0].strip() if owner.returncode == 0 else ""
    if package:
        return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                              text=True).stdout.strip()
    return "unknown"


def references(binaries: Sequence[str], single_key: bool = False) -> list[Reference]:
    """Name each reference by its version ("Go 1.43", "Go 1.63-dev"); one alone may keep "go"."""
    refs: list[Reference] = []
    for binary in binaries:
        version = go_version(binary)
        m = re.match(r"(\d+)\.(\d+)", version)
        major_minor = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        label = f"{major_minor[0]}.{major_minor[1]}" if m else os.path.basename(binary)
        if "-dev" in version:
            label += "-dev"
        key = "go" if single_key and len(binaries) == 1 else f"go-{label}"
        while key in {r.key for r in refs}:
            key += "'"
            label += "'"
        refs.append(Reference(key, binary, version, label, major_minor >= NEW_GO))
    return refs


@dataclass
class Sample:
    wall: float
    rss_kib: int


@dataclass
class Result:
    op: str
    driver: str
    targets: dict[str, float | None]  # reference key -> target for ours/it
    refs: tuple[str, ...] = ("go",)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # impl -> "missing: ..."/"error: ..."
    load: list[float] = field(default_factory=list)
    note: str = ""
    ref_label: str = ""
    ref_target: float | None = None

    def __post_init__(self) -> None:
        for impl in ("ours", *self.refs, "ref"):
            self.samples.setdefault(impl, [])

    @property
    def target(self) -> float | None:
        return self.targets.get(self.refs[0]) if self.refs else None

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

    def ratio(self, ref: str | None = None) -> float | None:
        """Median of the pairwise ratios ours / the reference (the first one by default)."""
        ref = ref or (self.refs[0] if self.refs else "go")
        if not (self.ok("ours") and self.ok(ref)):
            return None
        pairs = [o.wall / g.wall for o, g in zip(self.samples["ours"], self.samples[ref], strict=False)
                 if g.wall > 0]
        return statistics.median(pairs) if pairs else None

    def misses(self) -> list[str]:
        """The references whose target this row misses."""
        out = []
        for ref in self.refs:
            r, t = self.ratio(ref), self.targets.get(ref)
            if r is not None and t is not None and r > t:
                out.append(ref)
        return out

    def verdict(self, labels: dict[str, str] | None = None) -> str:
        for impl in ("ours", *self.refs):
            if impl in self.status:
                return f"{(labels or {}).get(impl, impl)} {self.status[impl].split(':')[0]}"
        if all(self.ratio(ref) is None for ref in self.refs):
            return "-"
        bad = []
        missed = self.misses()
        if missed:
            bad.append("MISS" + ("" if len(self.refs) == 1 else
                                 " " + ",".join((labels or {}).get(m, m) for m in missed)))
        rss = self.rss_mib("ours")
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
    def __init__(self, args: argparse.Namespace, refs: list[Reference]) -> None:
        self.binaries = {"ours": str(args.ours), **{r.key: r.binary for r in refs}}
        self.impls = ("ours", *(r.key for r in refs))
        # The Go-written store is written by the newest reference (the last one given on a tie).
        ranked = sorted(enumerate(refs), key=lambda ir: (_version_key(ir[1].version), ir[0]))
        self.go_writer = ranked[-1][1].key if ranked else ""
        self.inputs = build_inputs()
        self.drop = not args.no_drop_caches and os.geteuid() == 0
        self._ready: dict[tuple[str, str, str], Cli] = {}
        self._tmpfs_inputs: dict[str, Path] | None = None

    def base_dir(self, fs: str) -> Path:
        return TMPFS if fs == "tmpfs" else BENCH

    def input(self, kind: str, fs: str) -> Path:
        """The workload's tarball, on the tmpfs for ``fs == "tmpfs"`` (copied there once)."""
        if fs != "tmpfs":
            return self.inputs[kind]
        if self._tmpfs_inputs is None:
            mount_tmpfs()
            self._tmpfs_inputs = {}
            for k, path in self.inputs.items():
                dest = TMPFS / path.name
                if not dest.exists() or dest.stat().st_size != path.stat().st_size:
                    shutil.copyfile(path, dest)
                self._tmpfs_inputs[k] = dest
        return self._tmpfs_inputs[kind]

    def cli(self, impl: str, driver: str, kind: str, fs: str = "ext4") -> Cli:
        return Cli(impl, self.binaries[impl], self.base_dir(fs) / kind / f"{driver}-{impl}", driver)

    def heavy(self, impl: str, driver: str, fs: str = "ext4") -> Cli:
        """The store holding ``base`` (the rootfs) and ``child`` on top of it, made once."""
        if (impl, driver, fs) in self._ready:
            return self._ready[(impl, driver, fs)]
        if fs == "tmpfs":
            mount_tmpfs()
        cli = self.cli(impl, driver, "heavy", fs)
        stamp = cli.root / "stamp"
        try:
            if stamp.exists():
                ids = json.loads(stamp.read_text())
                cli.call("layer", ids["base"])
                cli.call("layer", ids["child"])
                cli.ids = ids
                self._ready[(impl, driver, fs)] = cli
                return cli
        except (Skip, ValueError, KeyError):
            pass
        wipe(cli)
        cli.root.mkdir(parents=True)
        print(f"  [setup] {impl}/{driver}/{fs}: importing base layer", file=sys.stderr, flush=True)
        cli.ids = {"base": cli.new_id("import-layer", "-n", "base", "-f", str(self.input("tar", fs)))}
        cli.ids["child"] = cli.new_id("create-layer", "-n", "child", "base")
        stamp.write_text(json.dumps(cli.ids))
        self._ready[(impl, driver, fs)] = cli
        return cli

    def listing(self, driver: str, size: str) -> tuple[dict[str, Cli], dict[str, str]]:
        """The shared store of 1k/10k layers and named images: (a Cli per impl, lookup names)."""
        n = LIST_SIZES[size]
        root = BENCH / "list" / f"{driver}-{size}"
        clis = {impl: Cli(impl, self.binaries[impl], root, driver) for impl in self.impls}
        info_path = root / "info.json"
        checked = root / f"checked-{'-'.join(sorted(os.path.basename(self.binaries[i]) for i in self.impls))}"
        if not info_path.exists():
            if root.exists():
                wipe(clis["ours"])
            if size.endswith("-go"):
                if not self.go_writer:
                    raise Skip("missing", "no Go reference to write the store")
                print(f"  [setup] {self.go_writer} writing a {driver} store of {n} layers and images, "
                      "one call each", file=sys.stderr, flush=True)
                info = build_store_with_cli(clis[self.go_writer], n)
            else:
                print(f"  [setup] building a {driver} store of {n} layers and images", file=sys.stderr,
                      flush=True)
                proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(HERE / "bench.py"),
                                       "--build-store", str(root), driver, str(n)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise Skip("missing" if any(m in proc.stderr for m in MISSING_MARKS) else "error",
                               f"building the {driver} store: {proc.stderr.strip().splitlines()[-1:]}")
                info = json.loads(proc.stdout)
            info_path.write_text(json.dumps(info) + "\n")
        if not checked.exists():
            # Every CLI must see every layer and image.
            for cli in clis.values():
                layers = [ln for ln in cli.call("layers").splitlines() if not ln.startswith("\t")]
                images = [ln for ln in cli.call("images").splitlines() if not ln.startswith("\t")]
                if len(layers) != n or len(images) != n:
                    raise Skip("error", f"{cli.impl} sees {len(layers)} layers, {len(images)} images")
            checked.write_text("ok\n")
        return clis, json.loads(info_path.read_text())


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3]) or (0,)


def mount_tmpfs() -> None:
    """A tmpfs at TMPFS (root only), left mounted for later runs; its stores are rebuilt after a
    reboot (their stamps vanish with them)."""
    TMPFS.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(TMPFS):
        return
    if os.geteuid() != 0:
        raise Skip("missing", f"mounting a tmpfs at {TMPFS} needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12g,mode=0755", "tmpfs", str(TMPFS)], check=True)


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


def build_store_with_cli(cli: Cli, n: int) -> dict[str, str]:
    """n layers (every fifth without a parent) and n images on them, each with two names, written
    one ``create-layer``/``create-image`` call at a time: the records exactly as that CLI writes
    them (no digests, sizes or big data)."""
    cli.root.mkdir(parents=True, exist_ok=True)
    layer_ids: list[str] = []
    parent = ""
    for i in range(n):
        args = ["create-layer", "-n", f"go-layer-{i:05d}", "-n", f"go-layer-{i:05d}-b"]
        parent = cli.new_id(*args, *([parent] if i % 5 and parent else []))
        layer_ids.append(parent)
    names = []
    for i, lid in enumerate(layer_ids):
        name = f"registry.example.com/go/app{i:05d}:latest"
        cli.new_id("create-image", "-n", name, "-n", f"localhost/go/app{i:05d}:v1", lid)
        names.append(name)
    mid = n // 2
    return {"image": names[mid], "layer": layer_ids[mid]}


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
        # One write at the end instead of one per layer (the store saves its records as it goes).
        write = rl._write_records
        rl._write_records = lambda locations: None  # type: ignore[method-assign]
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
        del rl._write_records
        write(1)
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
Prepare = Callable[[str], tuple[list[list[str]], Callable[[], None]]]


@dataclass
class Op:
    """One benchmarked operation: ``prepare`` (untimed) returns the timed command lists and a cleanup."""

    name: str
    driver: str
    target: float | None  # against Debian's 1.43 (and any reference older than NEW_GO)
    heavy: bool  # drop the page cache before each run
    prepare: Prepare
    note: str = ""
    # A physical reference run in the same rounds (same prepare protocol, impl "ref").
    ref: Prepare | None = None
    ref_label: str = ""
    ref_target: float | None = None
    # Untimed commands run after the page cache is dropped, before the timed ones (impl -> argv list).
    warm: Callable[[str], list[list[str]]] | None = None
    target_new: float | None = None  # against a Go at NEW_GO or later


def heavy_ops(stores: Stores, driver: str, with_refs: bool = True, fs: str = "ext4") -> list[Op]:
    """The layer-content operations; with ``fs == "tmpfs"`` their stores and inputs sit in memory
    and the caches stay warm (the row names end in ``@tmpfs``)."""
    ops: list[Op] = []
    out_file = stores.base_dir(fs) / "diff-out.tar"
    cold = fs != "tmpfs"
    at = "" if cold else "@tmpfs"

    def import_op(kind: str) -> Prepare:
        def prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
            cli = stores.heavy(impl, driver, fs)
            cmd = cli.argv("import-layer", "-f", str(stores.input(kind, fs)))
            return [cmd], lambda: delete_last(cli)
        return prepare

    def applydiff_op(kind: str) -> Prepare:
        def prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
            cli = stores.heavy(impl, driver, fs)
            lid = cli.new_id("create-layer")

            def cleanup() -> None:
                cli.call("delete-layer", lid)
            return [cli.argv("applydiff", "-f", str(stores.input(kind, fs)), lid)], cleanup
        return prepare

    def diff_op(flag: str) -> Prepare:
        def prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
            cli = stores.heavy(impl, driver, fs)
            return [cli.argv("diff", flag, "-f", str(out_file), "base")], lambda: out_file.unlink(True)
        return prepare

    def delete_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        cli = stores.heavy(impl, driver, fs)
        lid = cli.new_id("import-layer", "-f", str(stores.input("tar", fs)))
        return [cli.argv("delete-layer", lid)], lambda: None

    def create_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        cli = stores.heavy(impl, driver, fs)
        return [cli.argv("create-layer", "base")], lambda: delete_last(cli)

    refs = ref_callables(stores, fs) if with_refs else {}
    for kind in ("tar", "tar.gz", "tar.zst"):
        ops.append(Op(f"import-layer:{kind}{at}", driver, T_IMPORT, cold, import_op(kind)))
    if refs:
        ops[0].ref, ops[0].ref_label, ops[0].ref_target = refs["tar -xf"], "GNU tar -xf rootfs.tar" + (
            "" if cold else " (tmpfs)"), T_TAR
        if cold:
            ops.append(Op("import-layer:tar/tools-warm", driver, T_IMPORT, True, import_op("tar"),
                          "each tool warmed on a one-file tar after the caches are dropped",
                          ref=refs["tar -xf"], ref_label="GNU tar -xf rootfs.tar (tools warm)",
                          ref_target=T_TAR, warm=warm_tools(stores, driver)))
    if cold:
        for kind in ("tar", "tar.gz", "tar.zst"):
            ops.append(Op(f"applydiff:{kind}", driver, T_IMPORT, True, applydiff_op(kind)))
    ops.append(Op(f"diff-u{at}", driver, T_DIFF, cold, diff_op("-u")))
    ops.append(Op(f"diff-c{at}", driver, T_DIFF, cold, diff_op("-c")))
    ops.append(Op(f"delete-layer{at}", driver, T_DELETE, cold, delete_prepare, ref=refs.get("rm -rf"),
                  ref_label="rm -rf of the extracted tree" + ("" if cold else " (tmpfs)"),
                  target_new=None if cold else T_NEW_DELETE_TMPFS))
    if driver == "vfs" or cold:
        ops.append(Op(f"create-layer{at}", driver, None, cold, create_prepare,
                      "on top of base" + (" (copies it)" if driver == "vfs" else ""),
                      ref=refs.get("cp -a") if driver == "vfs" else None,
                      ref_label="cp -a of the tree" + ("" if cold else " (tmpfs)")))
    return ops


def one_call_ops(stores: Stores, driver: str) -> list[Op]:
    """Single CLI calls with warm caches, where interpreter start-up is most of what we pay."""
    def create_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        cli = stores.heavy(impl, driver)
        parent = ["base"] if driver != "vfs" else []  # vfs would copy 175 MB: an empty layer there
        return [cli.argv("create-layer", *parent)], lambda: delete_last(cli)

    def mount_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        cli = stores.heavy(impl, driver)
        child = cli.ids["child"]  # Go's mount takes an ID, not a name
        return [cli.argv("mount", child), cli.argv("unmount", child)], lambda: None

    return [Op("create-layer:one-call", driver, None, False, create_prepare,
               "warm; on top of base" if driver != "vfs" else "warm; an empty layer",
               target_new=T_NEW_ONE_CALL if driver != "vfs" else None),
            Op("mount-unmount", driver, None, False, mount_prepare)]


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
    # The Go-written store came with issue 16, whose targets are against a newer Go only.
    target = T_LIST_10K if size == "10k" else None if size.endswith("-go") else T_LIST_1K
    target_new = T_NEW_LIST_10K if size == "10k" else T_NEW_LIST_1K
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
            clis, info = stores.listing(driver, size)
            return [clis[impl].argv(*args(info))], lambda: None
        ops.append(Op(f"list@{size}:{name}", driver, target, False, prepare,
                      "records as the Go CLI writes them" if size.endswith("-go") else "",
                      target_new=target_new))
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


def ref_callables(stores: Stores, fs: str = "ext4") -> dict[str, Prepare]:
    """Physical references on the same tree, run in the same rounds as the operation they frame."""
    base = stores.base_dir(fs)
    dest = base / "ref"

    def tree() -> Path:
        """The extracted workload (copied to the tmpfs once for ``fs == "tmpfs"``)."""
        if fs != "tmpfs":
            return TREE
        mount_tmpfs()
        if not (base / "rootfs.stamp").exists():
            shutil.rmtree(base / "rootfs", ignore_errors=True)
            subprocess.run(["cp", "-a", str(TREE), str(base / "rootfs")], check=True)
            (base / "rootfs.stamp").write_text("ok\n")
        return base / "rootfs"

    def fresh() -> None:
        shutil.rmtree(dest, ignore_errors=True)

    def tar_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        fresh()
        dest.mkdir(parents=True)
        return [["tar", "-xf", str(stores.input("tar", fs)), "-C", str(dest)]], fresh

    def cp_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        fresh()
        return [["cp", "-a", str(tree()), str(dest)]], fresh

    def rm_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        fresh()
        dest.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(stores.input("tar", fs)), "-C", str(dest)], check=True)
        return [["rm", "-rf", str(dest)]], fresh

    return {"tar -xf": tar_prepare, "cp -a": cp_prepare, "rm -rf": rm_prepare}


def measure(op: Op, runs: int, warmup: int, stores: Any, impls: Sequence[str] = IMPLS,
            refs: Sequence[Reference] = ()) -> Result:
    """Run ``op`` for ``impls`` (ours first, then the references) alternately, ``warmup`` untimed
    rounds first; the order reverses every round."""
    by_key = {r.key: r for r in refs}
    targets = {key: (op.target_new if by_key[key].new else op.target) if key in by_key else op.target
               for key in impls[1:]}
    res = Result(op.name, op.driver, targets, tuple(impls[1:]), note=op.note, ref_label=op.ref_label,
                 ref_target=op.ref_target)
    all_impls: tuple[str, ...] = tuple(impls) + (("ref",) if op.ref is not None else ())
    for r in range(warmup + runs):
        order = all_impls if r % 2 == 0 else tuple(reversed(all_impls))
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


def _labels(results: list[Result], labels: dict[str, str] | None) -> dict[str, str]:
    refs = results[0].refs if results else ("go",)
    return {key: (labels or {}).get(key, "go" if key == "go" else key) for key in refs}


def table(results: list[Result], labels: dict[str, str] | None = None) -> str:
    """The console table: a time, ratio and target column per reference."""
    names = _labels(results, labels)
    head = f"{'operation':30s} {'driver':7s} {'ours s':>8s}"
    for label in names.values():
        head += f" {label[:10] + ' s':>12s} {'ratio':>6s} {'target':>6s}"
    head += f" {'ours MiB':>9s}  status"
    lines = [head, "-" * len(head)]
    for r in results:
        line = f"{r.op:30s} {r.driver:7s} {fmt(r.median('ours'), '8.3f')}"
        for key in names:
            line += (f" {fmt(r.median(key), '12.3f')} {fmt(r.ratio(key), '6.2f')}"
                     f" {fmt(r.targets.get(key), '6.2f')}")
        lines.append(line + f" {fmt(r.rss_mib('ours'), '9.1f')}  {r.verdict(names)}")
    return "\n".join(lines)


def markdown(results: list[Result], refs: dict[str, str], labels: dict[str, str] | None = None) -> str:
    """The README table: per reference its time, ours/it and the target; the peak RSS of each."""
    rows = [r for r in results if not r.op.startswith("ref:")]
    names = _labels(rows, labels)
    one = len(names) == 1
    head = "| operation | driver | ours (s) |"
    rule = "|---|---|---:|"
    for label in names.values():
        go = "Go" if one and label == "go" else f"Go {label}"
        head += f" {go} (s) | ours/{'Go' if one and label == 'go' else label} | target |"
        rule += "---:|---:|---:|"
    if one:
        head += " ours peak RSS (MiB) | Go peak RSS (MiB) | status |"
        rule += "---:|---:|---|"
    else:
        head += " peak RSS (MiB) ours / " + " / ".join(names.values()) + " | status |"
        rule += "---:|---|"
    lines = [head, rule]
    for r in rows:
        line = f"| {r.op} | {r.driver} | {fmt(r.median('ours'), '.3f')} |"
        for key in names:
            line += (f" {fmt(r.median(key), '.3f')} | **{fmt(r.ratio(key), '.2f')}** |"
                     f" {fmt(r.targets.get(key), '.2f')} |")
        if one:
            line += f" {fmt(r.rss_mib('ours'), '.0f')} | {fmt(r.rss_mib(next(iter(names))), '.0f')} |"
        else:
            line += " " + " / ".join(fmt(r.rss_mib(i), ".0f") for i in ("ours", *names)) + " |"
        lines.append(line + f" {r.verdict(names)} |")
    if refs:
        lines += ["", "| physical reference | time (s) | ours | ours / reference |", "|---|---:|---|---:|"]
        lines += [v for v in refs.values()]
    return "\n".join(lines)


def physical(results: list[Result]) -> dict[str, str]:
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


def chart(results: list[Result], path: Path, labels: dict[str, str] | None = None) -> str:
    rows = [r for r in results if any(r.ratio(k) is not None for k in r.refs) and not r.op.startswith("ref:")]
    if not rows:
        return "no ratios to plot"
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    names = _labels(rows, labels)
    keys = list(names)
    height = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(9.5, 0.3 * len(rows) * max(1, len(keys) * 0.75) + 1.6))
    ys = list(range(len(rows)))[::-1]
    shades = [("#2e7d32", "#c62828", "#9e9e9e"), ("#81c784", "#ef9a9a", "#d0d0d0")]
    ratios_all: list[float] = []
    for k, key in enumerate(keys):
        ok, miss, none = shades[k % len(shades)]
        for y, r in zip(ys, rows, strict=True):
            ratio = r.ratio(key)
            if ratio is None:
                continue
            ratios_all.append(ratio)
            target = r.targets.get(key)
            color = none if target is None else ok if ratio <= target else miss
            yy = y + 0.4 - height * (k + 0.5)
            ax.barh(yy, ratio, color=color, height=height * 0.9)
            if target is not None:
                ax.plot([target, target], [yy - height / 2, yy + height / 2], color="black", lw=1.2)
            ax.text(ratio * 1.02, yy, f"{ratio:.2f} ({names[key]})", va="center", fontsize=6)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(0.1, min(ratios_all) * 0.8), max(2.0, max(ratios_all) * 2.2))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r.op} [{r.driver}]" for r in rows], fontsize=7)
    ax.set_xlabel("time ours / Go, log scale (lower is better; one bar per Go version, darker = "
                  f"{names[keys[0]]}; black tick = target; green meets it, red misses it, grey has none)",
                  fontsize=7)
    ax.set_title("containers-storage: Python CLI vs Go CLIs, median of pairwise ratios", fontsize=9)
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


def prepare_launcher(ours: str) -> str:
    """Our CLI as scripts/setup.sh installs it: the launcher (scripts/build-launcher.sh), built
    again here in case a later ``pip install`` put the console script back.  Returns which."""
    if Path(ours).resolve() == OURS_CLI.resolve():
        subprocess.run([str(REPO / "scripts" / "build-launcher.sh"), str(OURS_CLI.parent.parent)],
                       check=False)
    with open(ours, "rb") as f:
        return "the console script" if f.read(2) == b"#!" else "the launcher (scripts/build-launcher.sh)"


def results_from_json(doc: dict[str, Any]) -> list[Result]:
    out = []
    refs = tuple(r["key"] for r in doc.get("references") or []) or ("go",)
    for d in doc["results"]:
        targets = d.get("targets") or {refs[0]: d.get("target")}
        r = Result(d["op"], d["driver"], targets, refs, note=d.get("note", ""))
        for impl, samples in d["samples"].items():
            r.samples[impl] = [Sample(w, rss) for w, rss in samples]
        r.status = dict(d.get("problems") or {})
        out.append(r)
    return out


def readme_markers(table: str) -> tuple[str, str]:
    """The HTML comments around a benchmark table in README.md."""
    return f"<!-- {table} -->", f"<!-- /{table} -->"


README_START, README_END = readme_markers("bench-table")


def readme_block(doc: dict[str, Any], chart_path: str) -> str:
    """The generated part of README.md's Benchmarks section: where, how, the table, the chart."""
    m = doc["machine"]
    rel_chart = os.path.relpath(chart_path, REPO)
    refs = doc.get("references") or [{"label": "1.43", "version": m["go_package"],
                                      "binary": doc.get("reference", "")}]
    against = "; ".join(f"Go {r['label']} = `{r['binary']}` ({r['version']})" for r in refs)
    loads = [x for r in doc["results"] for x in r.get("load") or []]
    load = (f" Load average during the runs: median {statistics.median(loads):.2f}, "
            f"max {max(loads):.2f}." if loads else "")
    return "\n".join([
        README_START,
        f"Run {doc['date']} on {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB, kernel {m['kernel']}, "
        f"Python {m['python']} (our CLI: {m.get('ours', 'the console script')}), against {against}; workload "
        f"{doc['workload']['tar_mb']} MB / {doc['workload']['entries']} entries.{load} Command:",
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


def update_readme(block: str, table: str = "bench-table") -> str:
    """Replace README.md's ``table`` (markers included) with ``block``, which carries them too."""
    readme = REPO / "README.md"
    text = readme.read_text()
    start_marker, end_marker = readme_markers(table)
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < 0:
        return f"README.md has no {table} markers: not updated"
    readme.write_text(text[:start] + block + text[end + len(end_marker):])
    return f"README.md: {table} updated"


def select(ops: list[Op], patterns: list[str]) -> list[Op]:
    if not patterns:
        return ops
    return [op for op in ops if any(op.name == p or op.name.startswith(p) for p in patterns)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs (3 heavy, 5 listing, 1 writers)")
    ap.add_argument("--reference", action="append", default=[],
                    help="a Go CLI to compare with; repeat for several (default: Debian's "
                         "/usr/bin/containers-storage)")
    ap.add_argument("--ours", default=str(OURS_CLI), help="our CLI")
    ap.add_argument("--ops", default="", help="comma list of operation names or prefixes")
    ap.add_argument("--drivers", default="vfs,overlay")
    ap.add_argument("--fs", default="ext4,tmpfs",
                    help="where the heavy operations run: ext4 (the disk, caches dropped), tmpfs")
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
        labels = {r["key"]: r["label"] for r in doc.get("references") or []}
        print(chart(results_from_json(doc), Path(args.chart), labels))
        print(update_readme(readme_block(doc, args.chart)))
        return 0
    binaries = args.reference or ["/usr/bin/containers-storage"]
    for binary in binaries:
        if not os.path.exists(binary):
            sys.exit(f"{binary}: not found (Debian package containers-storage, or --reference)")
    BENCH.mkdir(parents=True, exist_ok=True)
    prepare_bytecode(args.ours)
    launcher = prepare_launcher(args.ours)
    refs = references(binaries)
    labels = {r.key: r.label for r in refs}
    stores = Stores(args, refs)
    patterns = [p for p in args.ops.split(",") if p]
    drivers = [d for d in args.drivers.split(",") if d]
    filesystems = [f for f in args.fs.split(",") if f]

    heavy_runs = args.runs or (3 if args.quick else 5)
    # On a tmpfs a run takes a fraction of a second and its spread is the tools' own, not the
    # disk's: more runs there make the medians of the rows closest to the targets steady.
    tmpfs_runs = args.runs or (3 if args.quick else 11)
    list_runs = args.runs or (5 if args.quick else 21)
    writer_runs = args.runs or (1 if args.quick else 3)
    plan: list[tuple[Op, int, int]] = []
    for fs in filesystems:
        for driver in drivers:
            ops = heavy_ops(stores, driver, not args.no_refs, fs)
            runs = tmpfs_runs if fs == "tmpfs" else heavy_runs
            plan += [(op, runs, 0 if op.heavy else 1) for op in select(ops, patterns)]
    for driver in drivers:
        plan += [(op, list_runs, 1) for op in select(one_call_ops(stores, driver), patterns)]
    for size in LIST_SIZES:
        for driver in drivers:
            plan += [(op, list_runs, 1) for op in select(listing_ops(stores, driver, size), patterns)]
    for driver in drivers:
        plan += [(op, writer_runs, 0) for op in select([writers_op(stores, driver)], patterns)]

    info = machine()
    info["ours"] = launcher
    tar_mb = stores.inputs["tar"].stat().st_size / 1e6
    entries = int(subprocess.run(f"tar -tf {stores.inputs['tar']} | wc -l", shell=True, capture_output=True,
                                 text=True).stdout or 0)
    print(f"ours: {args.ours} ({launcher})\n"
          + "".join(f"reference {r.label}: {r.binary} ({r.version})\n" for r in refs)
          + f"machine: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}; "
          f"load {os.getloadavg()[0]:.2f}\nworkload: {tar_mb:.0f} MB tar, {entries} entries; "
          f"drop caches: {stores.drop}\n", flush=True)
    results: list[Result] = []
    for op, runs, warmup in plan:
        waited = settle()
        if waited > 5:
            print(f"  (waited {waited:.0f} s for the machine to settle)", flush=True)
        t0 = time.perf_counter()
        res = measure(op, runs, warmup, stores, stores.impls, refs)
        results.append(res)
        per_ref = "  ".join(f"{labels[k]} {fmt(res.median(k), '.3f')} s ratio {fmt(res.ratio(k), '.2f')}"
                            for k in res.refs)
        print(f"{op.name:30s} {op.driver:7s} ours {fmt(res.median('ours'), '.3f')} s  {per_ref}  "
              f"rss {fmt(res.rss_mib('ours'), '.0f')} MiB  {res.verdict(labels)}  "
              f"({time.perf_counter() - t0:.0f} s, load {max(res.load or [0]):.1f})"
              + "".join(f"\n    {k}: {v}" for k, v in res.status.items()), flush=True)

    print()
    print(table([r for r in results if not r.op.startswith("ref:")], labels))
    phys = physical(results)
    if phys:
        print("\nphysical references (same rounds):")
        for v in phys.values():
            print("  " + v.strip("| ").replace(" | ", "  "))
    command = "python benchmarks/bench.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if a != "--update-readme")
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command.strip(),
        "machine": info, "workload": {"tar_mb": round(tar_mb, 1), "entries": entries},
        "reference": binaries[0], "rss_limit_mib": RSS_LIMIT_MIB,
        "references": [{"key": r.key, "binary": r.binary, "version": r.version, "label": r.label,
                        "new": r.new} for r in refs],
        "results": [{
            "op": r.op, "driver": r.driver, "target": r.target, "targets": r.targets, "note": r.note,
            "ours_s": r.median("ours"), "go_s": r.median(r.refs[0]), "ratio": r.ratio(),
            "medians": {i: r.median(i) for i in stores.impls},
            "ratios": {k: r.ratio(k) for k in r.refs},
            "ours_rss_mib": r.rss_mib("ours"), "rss_mib": {i: r.rss_mib(i) for i in stores.impls},
            "status": r.verdict(labels), "problems": r.status, "load": r.load,
            "samples": {i: [[round(s.wall, 4), s.rss_kib] for s in r.samples[i]]
                        for i in (*stores.impls, "ref")},
            "reference": r.ref_label, "ours_per_reference": r.ref_ratio(),
        } for r in results],
        "markdown": markdown(results, phys, labels),
    }
    Path(args.results).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nresults: {args.results}\n{chart(results, Path(args.chart), labels)}")
    if args.update_readme:
        print(update_readme(readme_block(doc, args.chart)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
