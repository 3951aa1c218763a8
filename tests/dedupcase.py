"""The dedup scenario shared by tests/drivers/test_dedup.py and tests/compat/test_dedup_go.py:
layers with repeated contents, an image of some of them, and what Go would report for it."""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from typing import Protocol


class CLIStore(Protocol):
    driver: str

    def cli(self, *args: str) -> str: ...


SCRIPT = shutil.which("containers-storage", path=os.path.dirname(sys.executable)) or "containers-storage"
A = os.urandom(65536)  # read through mmap (Go maps files of 4 KiB and more)
B = os.urandom(40960)
OTHER = os.urandom(len(B))  # B's size, other bytes: the kernel refuses to share them
SMALL = os.urandom(100)  # read whole


@dataclass
class Store:
    root: str
    run: str
    driver: str

    def cli(self, *args: str) -> str:
        cmd = [SCRIPT, "--graph", self.root, "--run", self.run, "--storage-driver", self.driver, *args]
        env = {**os.environ, "STORAGE_OPTS": ""}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, f"{args}: {proc.stderr}{proc.stdout}"
        return proc.stdout

    def layer_dir(self, id: str) -> str:
        if self.driver == "vfs":
            return os.path.join(self.root, "vfs", "dir", id)
        return os.path.join(self.root, "overlay", id, "diff")


def tar_file(path: str, files: dict[str, bytes], links: dict[str, str] | None = None) -> str:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tf.addfile(info)
    return path


FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 1


def first_extent(path: str) -> int:
    """Physical address of the file's first extent (FIEMAP)."""
    buf = bytearray(struct.pack("=QQIIII", 0, 2**64 - 1, FIEMAP_FLAG_SYNC, 0, 1, 0) + bytes(56))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf, True)
    assert struct.unpack_from("=I", buf, 20)[0] == 1, "no extent mapped"
    physical: int = struct.unpack_from("=Q", buf, 32 + 8)[0]
    return physical


def populate(s: CLIStore, tmp: str) -> tuple[str, str, str]:
    """lower (a, b, small, an empty file, h = hard link of a), upper (copies of a and b, and
    OTHER of b's size) and an unused layer holding a copy of a; an image of upper."""
    lower = s.cli("create-layer").strip()
    s.cli("applydiff", "-f", tar_file(os.path.join(tmp, "lower.tar"),
                                      {"a": A, "b": B, "small": SMALL, "empty": b""}, {"h": "a"}), lower)
    upper = s.cli("create-layer", lower).strip()
    s.cli("applydiff", "-f", tar_file(os.path.join(tmp, "upper.tar"),
                                      {"a2": A, "sub/b-copy": B, "other": OTHER, "small2": SMALL}), upper)
    unused = s.cli("create-layer").strip()
    s.cli("applydiff", "-f", tar_file(os.path.join(tmp, "unused.tar"), {"a3": A}), unused)
    s.cli("create-image", upper)
    return lower, upper, unused


def expected(driver: str) -> int:
    # overlay's upper holds only its own files: a2, b-copy and small2 repeat lower's.
    if driver == "overlay":
        return len(A) + len(B) + len(SMALL)
    # vfs's upper is a copy of lower plus its own: a, b, small again (h is a's inode), then
    # a2, b-copy and small2 once more.
    return 2 * (len(A) + len(B) + len(SMALL))
