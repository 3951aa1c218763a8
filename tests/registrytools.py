"""A local registry for partial-pull tests: Debian's ``docker-registry`` (distribution 2.8).

:class:`Registry` writes its own config (filesystem storage under the test's directory, one free
port on 127.0.0.1, text logs with every response's byte count), starts the server and stops it.
What it served is read back from its log: :meth:`Registry.blob_bytes` sums
``http.response.written`` over the GETs of one blob, which is how the tests count what a partial
pull fetched.  Blobs and manifests are pushed with plain HTTP (monolithic uploads), so a test can
publish exactly the bytes and annotations it made.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REGISTRY = shutil.which("docker-registry")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """One ``docker-registry serve`` on 127.0.0.1, for one test module."""

    def __init__(self, workdir: Path) -> None:
        if REGISTRY is None:
            raise RuntimeError("docker-registry is not installed (Debian package docker-registry)")
        self.dir = workdir
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log = workdir / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([REGISTRY or "docker-registry", "serve", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- what it served ----------------------------------------------------------------------
    def _settle(self) -> None:
        """Wait for the log to stop growing: the server logs a response after the client has
        read it, so the last line may come a moment after the pull returned."""
        deadline = time.monotonic() + 5
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.log.stat().st_size
            if size != last:
                last, quiet_since = size, time.monotonic()
            elif time.monotonic() - quiet_since >= 0.2:
                return
            time.sleep(0.02)

    def _responses(self) -> list[dict[str, str]]:
        self._settle()
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if 'msg="response completed"' not in line:
                continue
            fields = dict(re.findall(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)', line))
            out.append({k: v.strip('"') for k, v in fields.items()})
        return out

    def mark(self) -> int:
        """A position in the log; :meth:`blob_bytes` and :meth:`blob_requests` count after it."""
        return len(self._responses())

    def blob_gets(self, digest: str, since: int = 0) -> list[dict[str, str]]:
        return [r for r in self._responses()[since:]
                if r.get("http.request.method") == "GET" and r.get("http.request.uri", "").endswith(
                    f"/blobs/{digest}")]

    def blob_bytes(self, digest: str, since: int = 0) -> int:
        """Bytes of the blob's GET responses the registry wrote (multipart framing included)."""
        return sum(int(r.get("http.response.written", "0")) for r in self.blob_gets(digest, since))

    def blob_requests(self, digest: str, since: int = 0) -> int:
        return len(self.blob_gets(digest, since))

    # -- pushing ------------------------------------------------------------------------------
    def push_blob(self, name: str, data: bytes) -> str:
        digest = sha(data)
        req = urllib.request.Request(f"{self.url}/v2/{name}/blobs/uploads/", method="POST")
        with urllib.request.urlopen(req) as r:
            location = r.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        req = urllib.request.Request(f"{location}{sep}digest={digest}", data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 201, r.status
        return digest

    def push_image(self, name: str, tag: str, layers: list[tuple[bytes, str, dict[str, str]]],
                   diff_ids: list[str]) -> bytes:
        """An image of the given (blob, media type, annotations) layers; returns its manifest."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        descriptors = []
        for blob, media_type, notes in layers:
            d: dict[str, object] = {"mediaType": media_type, "digest": self.push_blob(name, blob),
                                    "size": len(blob)}
            if notes:
                d["annotations"] = notes
            descriptors.append(d)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.push_blob(name, config), "size": len(config)},
            "layers": descriptors}).encode()
        req = urllib.request.Request(f"{self.url}/v2/{name}/manifests/{tag}", data=manifest, method="PUT",
                                     headers={"Content-Type": OCI_MANIFEST})
        with urllib.request.urlopen(req) as r:
            assert r.status == 201, r.status
        return manifest

    def manifest(self, name: str, tag: str) -> dict[str, object]:
        req = urllib.request.Request(f"{self.url}/v2/{name}/manifests/{tag}",
                                     headers={"Accept": OCI_MANIFEST})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def blob(self, name: str, digest: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}/v2/{name}/blobs/{digest}") as r:
            return r.read()  # type: ignore[no-any-return]

    def blob_url(self, name: str, digest: str) -> str:
        return f"{self.url}/v2/{name}/blobs/{digest}"


def skopeo_storage_conf(path: Path, root: Path, run: Path, *, partial: bool = True,
                        extra: str = "") -> Path:
    """A storage.conf for skopeo (CONTAINERS_STORAGE_CONF) with partial pulls enabled."""
    text = (f'[storage]\ndriver = "overlay"\ngraphroot = "{root}"\nrunroot = "{run}"\n'
            "[storage.options]\n")
    if partial:
        text += f'pull_options = {{enable_partial_images = "true"{extra}}}\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def env_with(conf: Path) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}


__all__ = ["GZIP_LAYER", "OCI_MANIFEST", "REGISTRY", "ZSTD_LAYER", "Registry", "env_with", "sha",
           "skopeo_storage_conf"]
