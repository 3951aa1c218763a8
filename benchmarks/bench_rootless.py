#!/usr/bin/env python3
"""Our CLI against a Go CLI as an unprivileged user, on the user's own store (issue 11).

Usage (as root; the user and its venv come from scripts/setup-rootless.sh)::

    .venv/bin/python benchmarks/bench_rootless.py --reference /path/to/go/containers-storage
        [--quick] [--runs N] [--drivers vfs,overlay] [--update-readme]

The reference must be a Go CLI that enters a user namespace itself, i.e. one built from
containers/storage 1.45 or newer (Debian's 1.43 does not).  Both CLIs run as user ``csrootless``
through ``setpriv``, with no flags: default paths from ``$HOME`` and ``$XDG_RUNTIME_DIR`` and the
driver from ``$STORAGE_DRIVER``, so every call reads storage.conf and enters a namespace as on a
workstation.  Operations, each per driver:

- ``unshare-true``: ``unshare true``, the cost of entering the namespace (and of starting
  ``true`` in it): what every other rootless call pays on top of its work;
- ``list@1k:layers`` / ``list@1k:images`` / ``list@1k:image``: a store of 1,000 layers and named
  images (bench.py's listing store, written as root, then given to the user);
- ``import-layer:tar``: the benchmark root filesystem (~175 MB, ~6.8k entries) into an empty
  layer of the user's store, page cache dropped first; files land owned by the namespace's IDs.

Runs alternate between the two CLIs (as bench.py does) and the report gives medians and the
median of the pairwise ratios ours/Go.  No targets: bench.py's are against Debian's 1.43, and this
reference is a newer, faster Go (issue 16 sets the targets against it).  Results go to
benchmarks/results-rootless.json and, with ``--update-readme``, to README.md between the
bench-rootless markers.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (the runner, timing and report helpers of the main benchmark)

REPO = HERE.parent
USER = "csrootless"
VENV_PYTHON = "/opt/containers-storage-rootless/venv/bin/python"
AREA = Path("/var/tmp/cs-bench-rootless")  # the user must reach it: not under /root
README_START, README_END = bench.readme_markers("bench-rootless-table")


class Rootless:
    """The user, our install it can run, and one home (hence one store) per CLI and driver."""

    def __init__(self, binaries: dict[str, str]) -> None:
        entry = pwd.getpwnam(USER)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.binaries = binaries
        AREA.mkdir(parents=True, exist_ok=True)
        AREA.chmod(0o755)
        self.ours = self._install()
        self.binaries["ours"] = str(self.ours)
        self.tar = AREA / "rootfs.tar"
        source = bench.build_inputs()["tar"]
        if not self.tar.exists() or self.tar.stat().st_size != source.stat().st_size:
            shutil.copyfile(source, self.tar)
        self.tar.chmod(0o644)

    def _install(self) -> Path:
        """A copy of src/ with compiled bytecode, and a script that runs it with the user's venv."""
        base = AREA / "install"
        shutil.rmtree(base, ignore_errors=True)
        (base / "bin").mkdir(parents=True)
        shutil.copytree(REPO / "src" / "containers_storage", base / "pkg" / "containers_storage",
                        ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([VENV_PYTHON, "-m", "compileall", "-q", str(base / "pkg")], check=True)
        script = base / "bin" / "containers-storage"
        script.write_text(f"#!{VENV_PYTHON}\nimport sys\nsys.path.insert(0, {str(base / 'pkg')!r})\n"
                          "from containers_storage.cli.console import main\nsys.exit(main())\n")
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        script.chmod(0o755)
        return script

    def home(self, name: str, fresh: bool = False) -> Path:
        home = AREA / "homes" / name
        if fresh and home.exists():
            self.remove(home)
        for d in (home, home / "run"):
            if not d.exists():
                d.mkdir(parents=True, mode=0o700)
                os.chown(d, self.uid, self.gid)
        return home

    def remove(self, path: Path) -> None:
        # Files owned by subordinate IDs: root removes them; mounts die with their namespaces.
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)

    def argv(self, impl: str, home: Path, driver: str, *args: str) -> list[str]:
        env = [f"HOME={home}", f"XDG_RUNTIME_DIR={home / 'run'}", f"USER={USER}", f"LOGNAME={USER}",
               "PATH=/usr/local/bin:/usr/bin:/bin", f"STORAGE_DRIVER={driver}", "LANG=C.UTF-8"]
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--",
                "env", "-i", *env, self.binaries[impl], *args]

    def call(self, impl: str, home: Path, driver: str, *args: str) -> str:
        cmd = self.argv(impl, home, driver, *args)
        _, _, rc, out, err = bench.run(cmd)
        bench.check(impl, cmd, rc, out, err)
        return out


def listing_store(r: Rootless, driver: str) -> tuple[Path, dict[str, str]]:
    """bench.py's 1k store, built as root into the user's default graph root, then theirs."""
    home = r.home(f"list-{driver}")
    info_path = home.parent / f"list-{driver}.json"
    graph = home / ".local" / "share" / "containers" / "storage"
    if not info_path.exists():
        print(f"  [setup] a {driver} store of 1000 layers and images for {USER}", file=sys.stderr)
        r.remove(home)
        home = r.home(f"list-{driver}")
        scratch = AREA / f"build-{driver}"
        r.remove(scratch)
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(HERE / "bench.py"),
                               "--build-store", str(scratch), driver, "1000"],
                              capture_output=True, text=True, check=True)
        graph.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(scratch / "root"), graph)
        r.remove(scratch)
        subprocess.run(["chown", "-R", f"{r.uid}:{r.gid}", str(home / ".local")], check=True)
        for impl in r.binaries:  # both must see all of it, as the user
            out = r.call(impl, home, driver, "images", "-q")
            if len(out.split()) != 1000:
                raise SystemExit(f"{impl} sees {len(out.split())} images in the rootless store")
        info_path.write_text(proc.stdout)
    return home, json.loads(info_path.read_text())


def ops(r: Rootless, driver: str) -> list[bench.Op]:
    out: list[bench.Op] = []

    def unshare_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        home = r.home(f"{impl}-{driver}")
        return [r.argv(impl, home, driver, "unshare", "true")], lambda: None
    out.append(bench.Op("rootless:unshare-true", driver, None, False, unshare_prepare,
                        "entering the user namespace"))

    for name, args in (("layers", ()), ("images", ()), ("image", ("image",))):
        def list_prepare(impl: str, name: str = name, args: tuple[str, ...] = args
                         ) -> tuple[list[list[str]], Callable[[], None]]:
            home, info = listing_store(r, driver)
            extra = [info[a] for a in args]
            return [r.argv(impl, home, driver, name, *extra)], lambda: None
        out.append(bench.Op(f"rootless:list@1k:{name}", driver, None, False, list_prepare))

    def import_prepare(impl: str) -> tuple[list[list[str]], Callable[[], None]]:
        home = r.home(f"{impl}-{driver}")
        r.call(impl, home, driver, "layers")  # the store and its driver exist before timing

        def cleanup() -> None:
            words = bench._LAST_OUTPUT.get(impl, "").split()
            if words:
                r.call(impl, home, driver, "delete-layer", words[0])
        return [r.argv(impl, home, driver, "import-layer", "-f", str(r.tar))], cleanup
    out.append(bench.Op("rootless:import-layer:tar", driver, None, True, import_prepare))
    return out


class _Stores:
    def __init__(self, drop: bool) -> None:
        self.drop = drop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", default=shutil.which("go-cs-1.60") or "",
                    help="a Go CLI that enters user namespaces itself (containers/storage >= 1.45)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=0)
    ap.add_argument("--drivers", default="vfs,overlay")
    ap.add_argument("--ops", default="", help="comma list of operation names or prefixes")
    ap.add_argument("--no-drop-caches", action="store_true")
    ap.add_argument("--results", default=str(HERE / "results-rootless.json"))
    ap.add_argument("--update-readme", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it sets the user's stores up and switches to the user")
    if not args.reference or not os.access(args.reference, os.X_OK):
        sys.exit("--reference: a Go containers-storage CLI built from containers/storage >= 1.45")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        sys.exit(f"no user {USER}: run scripts/setup-rootless.sh")
    bench.BENCH.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([args.reference, "version"], capture_output=True, text=True)
    ref_version = next((ln.split(":", 1)[1].strip() for ln in (version.stdout + version.stderr).splitlines()
                        if ln.startswith("Version")), "unknown")
    r = Rootless({"ours": "", "go": args.reference})
    heavy_runs = args.runs or (3 if args.quick else 5)
    list_runs = args.runs or (5 if args.quick else 21)
    patterns = [p for p in args.ops.split(",") if p]
    plan = [(op, heavy_runs if op.heavy else list_runs, 0 if op.heavy else 1)
            for driver in args.drivers.split(",") if driver
            for op in bench.select(ops(r, driver), patterns)]
    stores = _Stores(not args.no_drop_caches)
    results = []
    for op, runs, warmup in plan:
        bench.settle()
        res = bench.measure(op, runs, warmup, stores)  # type: ignore[arg-type]
        results.append(res)
        print(f"{op.name:26s} {op.driver:7s} ours {bench.fmt(res.median('ours'), '.4f')} s  "
              f"go {bench.fmt(res.median('go'), '.4f')} s  ratio {bench.fmt(res.ratio(), '.2f')}  "
              f"{res.verdict()}" + "".join(f"\n    {k}: {v}" for k, v in res.status.items()), flush=True)
    print()
    print(bench.table(results))
    info = bench.machine()
    command = "python benchmarks/bench_rootless.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if a != "--update-readme")
    doc = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": info,
        "reference": args.reference, "reference_version": ref_version, "command": command,
        "results": [{"op": x.op, "driver": x.driver, "ours_s": x.median("ours"), "go_s": x.median("go"),
                     "ratio": x.ratio(), "status": x.verdict(),
                     "samples": {i: [round(s.wall, 4) for s in x.samples[i]] for i in bench.IMPLS}}
                    for x in results],
        "markdown": bench.markdown(results, {}),
    }
    Path(args.results).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nresults: {args.results}")
    if args.update_readme:
        m = info
        block = "\n".join([
            README_START,
            f"Run {doc['date']} as an unprivileged user (`{USER}`, default paths, every call entering a "
            f"user namespace) on {m['nproc']} CPUs, kernel {m['kernel']}, against a Go CLI built from "
            f"containers/storage {ref_version} (Debian's 1.43 does not enter namespaces). Command "
            "(as root):",
            "", "```", f".venv/bin/{command.strip()}", "```", "", doc["markdown"], README_END])
        print(bench.update_readme(block, "bench-rootless-table"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
