"""Running the CLI in-process (``main([...])``) and as the installed console script (shared by tests)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from containers_storage.cli.main import main

SCRIPT = shutil.which("containers-storage", path=os.path.dirname(sys.executable)) or "containers-storage"


@dataclass
class Result:
    code: int
    out: str
    err: str
    raw: bytes = b""

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def run_inprocess(argv: list[str], stdin: bytes = b"") -> Result:
    """``main(argv)`` with stdout/stderr/stdin swapped for byte buffers (so ``.buffer`` works)."""
    out_b, err_b = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_b, encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(err_b, encoding="utf-8", write_through=True)
    inp = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr, sys.stdin = out, err, inp
    try:
        code = main(argv)
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
        out.flush()
        err.flush()
    raw = out_b.getvalue()
    return Result(code, raw.decode("utf-8", "surrogateescape"), err_b.getvalue().decode("utf-8", "replace"),
                  raw)


def run_script(argv: list[str], stdin: bytes = b"") -> Result:
    """The console script as a separate process (the fast listing path, real exit codes)."""
    env = {**os.environ, "STORAGE_OPTS": ""}
    env.pop("STORAGE_DRIVER", None)
    proc = subprocess.run([SCRIPT, *argv], input=stdin, capture_output=True, env=env)
    return Result(proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"),
                  proc.stderr.decode("utf-8", "replace"), proc.stdout)


class CLI:
    """One store, driven through the command line; ``mode`` picks in-process or subprocess."""

    def __init__(self, root: str, run: str, mode: str) -> None:
        self.root = root
        self.run_root = run
        self.mode = mode

    @property
    def globals(self) -> list[str]:
        return ["--graph", self.root, "--run", self.run_root, "--storage-driver", "vfs"]

    def __call__(self, *args: str, stdin: bytes = b"") -> Result:
        argv = [*self.globals, *args]
        if self.mode == "script":
            return run_script(argv, stdin)
        return run_inprocess(argv, stdin)

    def ok(self, *args: str, stdin: bytes = b"") -> Result:
        result = self(*args, stdin=stdin)
        assert result.code == 0, f"{args}: exit {result.code}: {result.err}{result.out}"
        return result

    def fails(self, *args: str, stdin: bytes = b"", code: int = 1) -> Result:
        result = self(*args, stdin=stdin)
        assert result.code == code, f"{args}: exit {result.code}, wanted {code}: {result.err}{result.out}"
        return result

    def new_layer(self, *args: str) -> str:
        return self.ok("create-layer", *args).lines[0]

    def snapshot(self) -> dict[str, str]:
        """Digest of every record file and big data file, to prove a failure changed nothing."""
        found: dict[str, str] = {}
        for base in (self.root, self.run_root):
            for dirpath, _, files in os.walk(base):
                for name in files:
                    if name.endswith(".lock"):
                        continue  # readers take locks; writers' tokens change only on writes
                    path = os.path.join(dirpath, name)
                    with open(path, "rb") as f:
                        found[path] = hashlib.sha256(f.read()).hexdigest()
        return found
