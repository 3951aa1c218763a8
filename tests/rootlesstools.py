"""Running our CLI, our library, Go's tools, podman and skopeo as an unprivileged user.

``scripts/setup-rootless.sh`` (run by ``scripts/setup.sh`` as root) makes the users and a venv of
the package's dependencies from Debian's python3, which they can execute.  Each test session copies
``src/containers_storage`` (with its built C extension) into a directory the users can read, so the
code under test is always what is in the working tree.

Each test gets a fresh home directory and ``$XDG_RUNTIME_DIR`` owned by the user, so that default
paths (``~/.local/share/containers/storage``, ``$XDG_RUNTIME_DIR/containers``) are the test's own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

USER = "csrootless"
NO_SUBIDS_USER = "csnosubids"
VENV_PYTHON = "/opt/containers-storage-rootless/venv/bin/python"
SRC = Path(__file__).resolve().parent.parent / "src" / "containers_storage"
GO_CLI = "/usr/bin/containers-storage"


def subid_range(path: str, name: str) -> tuple[int, int]:
    """The first (start, size) range ``path`` grants ``name``."""
    with open(path) as f:
        for line in f:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] == name:
                return int(parts[1]), int(parts[2])
    raise LookupError(f"{name} has no range in {path}")


class Install:
    """A copy of the package the unprivileged users can import, and a CLI script that runs it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pkg = base / "pkg"
        shutil.copytree(SRC, self.pkg / "containers_storage",
                        ignore=shutil.ignore_patterns("__pycache__"))
        self.cli = base / "bin" / "containers-storage"
        self.cli.parent.mkdir()
        self.cli.write_text(
            f"#!{VENV_PYTHON}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(self.pkg)!r})\n"
            "from containers_storage.cli.main import main\n"
            "sys.exit(main())\n")
        for path in [base, *base.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode | 0o055 if path.is_dir() or mode & 0o100 else mode | 0o044)
        self.cli.chmod(0o755)


class User:
    """One unprivileged user, with a fresh home and runtime directory for the current test."""

    def __init__(self, name: str, install: Install, workdir: Path) -> None:
        entry = pwd.getpwnam(name)
        self.name = name
        self.uid = entry.pw_uid
        self.gid = entry.pw_gid
        self.install = install
        self.home = workdir / "home"
        self.runtime_dir = workdir / "run"
        for d in (self.home, self.runtime_dir):
            d.mkdir(mode=0o700)
            os.chown(d, self.uid, self.gid)
        try:
            self.subuid: tuple[int, int] | None = subid_range("/etc/subuid", name)
            self.subgid: tuple[int, int] | None = subid_range("/etc/subgid", name)
        except LookupError:
            self.subuid = self.subgid = None

    @property
    def graph_root(self) -> Path:
        return self.home / ".local" / "share" / "containers" / "storage"

    @property
    def run_root(self) -> Path:
        return self.runtime_dir / "containers"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
            "PATH": f"{self.install.cli.parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "XDG_RUNTIME_DIR": str(self.runtime_dir), "LANG": "C.UTF-8", "SHELL": "/bin/sh",
            "PYTHONPATH": str(self.install.pkg), "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.update(extra or {})
        return {k: v for k, v in env.items() if v is not None}

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            input: bytes | None = None, check: bool = True, cwd: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user (setpriv: real and effective IDs, its groups)."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]
        proc = subprocess.run(cmd, env=self.env(env), input=input, capture_output=True,
                              cwd=cwd or str(self.home), timeout=timeout)
        result = subprocess.CompletedProcess(
            argv, proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"),
            proc.stderr.decode("utf-8", "replace"))
        if check and proc.returncode != 0:
            raise AssertionError(f"{list(argv)} as {self.name} failed ({proc.returncode}):\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def ours(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Our CLI, as the user, with no flags beyond ``args`` (default paths apply)."""
        return self.run([str(self.install.cli), *args], **kw)  # type: ignore[arg-type]

    def python(self, code: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """A Python program of the user's, importing the package under test."""
        return self.run([VENV_PYTHON, "-c", code], **kw)  # type: ignore[arg-type]

    def podman(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(["podman", "--runtime", "runc", *args], **kw)  # type: ignore[arg-type]

    def skopeo(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(["skopeo", *args], **kw)  # type: ignore[arg-type]

    def host_id(self, container_id: int, kind: str = "uid") -> int:
        """Where ID ``container_id`` of the user's namespace lands on the host."""
        own = self.uid if kind == "uid" else self.gid
        sub = self.subuid if kind == "uid" else self.subgid
        if container_id == 0:
            return own
        assert sub is not None
        return sub[0] + container_id - 1


def _available() -> str | None:
    if os.geteuid() != 0:
        return "rootless tests switch to an unprivileged user: they need root to start"
    if not shutil.which("setpriv") or not shutil.which("newuidmap"):
        return "setpriv and newuidmap (Debian's util-linux and uidmap) are needed"
    try:
        pwd.getpwnam(USER)
        pwd.getpwnam(NO_SUBIDS_USER)
    except KeyError:
        return f"users {USER}/{NO_SUBIDS_USER} are missing: run scripts/setup-rootless.sh as root"
    if not os.access(VENV_PYTHON, os.X_OK):
        return f"{VENV_PYTHON} is missing: run scripts/setup-rootless.sh as root"
    return None


def kill_processes_under(path: Path) -> None:
    """SIGKILL, by PID, every process whose $HOME or $XDG_RUNTIME_DIR lies under ``path``.

    podman leaves a pause process holding its namespace (and conmon, containers) behind.  Tests
    running in parallel, and other sessions on the machine, use the same users at the same time:
    only the processes started for this test (which inherit its environment) may go.
    """
    prefixes = tuple(f"{var}={path}/".encode() for var in ("HOME", "XDG_RUNTIME_DIR"))
    for _ in range(5):  # a process may fork while we look: look again until none is left
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if any(v.startswith(prefixes) for v in env):
                pids.append(int(entry))
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _remove_tree(path: Path) -> None:
    # Files owned by subordinate IDs and read-only directories: root removes them all.
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


@pytest.fixture(scope="session")
def rootless_install() -> Iterator[Install]:
    reason = _available()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="cs-rootless-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield Install(base)
    finally:
        kill_processes_under(base)
        _remove_tree(base)


def _user_fixture(name: str, install: Install) -> Iterator[User]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=install.base))
    workdir.chmod(0o755)
    try:
        yield User(name, install, workdir)
    finally:
        kill_processes_under(workdir)
        _remove_tree(workdir)


@pytest.fixture
def user(rootless_install: Install) -> Iterator[User]:
    """An unprivileged user with subordinate ID ranges, fresh home and runtime directory."""
    yield from _user_fixture(USER, rootless_install)


@pytest.fixture
def user_without_subids(rootless_install: Install) -> Iterator[User]:
    """An unprivileged user that /etc/subuid and /etc/subgid grant nothing."""
    yield from _user_fixture(NO_SUBIDS_USER, rootless_install)


__all__ = ["GO_CLI", "NO_SUBIDS_USER", "USER", "VENV_PYTHON", "Install", "User", "kill_processes_under",
           "rootless_install", "subid_range", "user", "user_without_subids"]
