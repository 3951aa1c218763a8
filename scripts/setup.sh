#!/usr/bin/env bash
# Prepare a fresh machine: the Debian tools the tests compare against, and a venv with the package.
set -euo pipefail
cd "$(dirname "$0")/.."

# containers-storage: Debian's Go CLI, the reference our compat tests run against.
# fuse-overlayfs: the overlay driver's mount_program. bats: the upstream CLI suite runner.
# skopeo, podman (+ runc, busybox-static for a runnable image): Go's image tools, which must
# read and run what we store.
# gcc: builds the package's C extension (archive/_fastapply.c); its libasan/libubsan serve the
# sanitizer test. python3-dev only when the interpreter that makes the venv lacks its headers.
# uidmap (newuidmap/newgidmap) and python3-venv: rootless tests, which run as an unprivileged
# user with a venv made from Debian's python3 (the user cannot execute an interpreter under /root).
# btrfs-progs, xfsprogs: loop-mounted btrfs and XFS for the btrfs driver, dedup and quota tests;
# libbtrfs-dev: its version.h holds the libbtrfs versions btrfs' status prints, as Go's does.
# docker-registry (distribution 2.8): a registry on 127.0.0.1 that serves blob ranges, for partial
# (zstd:chunked) pulls beside skopeo; the tests start it with their own config and stop it.
debs=(containers-storage fuse-overlayfs bats skopeo podman runc busybox-static gcc uidmap python3-venv
      btrfs-progs xfsprogs libbtrfs-dev docker-registry)
# The venv's interpreter: Debian's python3 when the machine has it.  Debian builds it with PGO and
# LTO and links libpython into the binary; a pyenv or --enable-shared build is neither, and every
# CLI call pays for that in its start-up (the launcher below links the same static libpython).
python=python3
if [ -x /usr/bin/python3 ]; then
  python=/usr/bin/python3
fi
if ! "$python" -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  debs+=(python3-dev)
fi
missing=()
for d in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: not root; skipping Debian packages: ${missing[*]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    python=python3  # Debian's without python3-venv (setup not run as root): whichever python3 there is
  fi
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test,docs]'
# The C loop of layer apply is an optional extension (the package works without it), but the
# tests and benchmarks are meant to run it: a failed build must not pass unnoticed here.
if ! .venv/bin/python -c 'import containers_storage.archive._fastapply, containers_storage._userns, containers_storage.archive.chunked._rollsum, containers_storage.archive.chunked._tocmatch, containers_storage._removetree' 2>/dev/null; then
  echo "setup: the C extensions (_fastapply, _userns, _rollsum, _tocmatch, _removetree) did not build (gcc and the Python headers?)" >&2
  exit 1
fi
# Every CLI call starts an interpreter: setuptools' distutils-precedence.pth (Python 3.11's venv
# installs setuptools; 3.12's does not) costs each start ~1 ms, and nothing needs it at run time
# (pip builds the package in an isolated environment).
.venv/bin/python -m pip uninstall -y -q setuptools >/dev/null 2>&1 || true
# Byte-compile now: this environment may set PYTHONDONTWRITEBYTECODE, and every CLI call would
# otherwise recompile the modules it imports.
.venv/bin/python -m compileall -q -j 0 src/containers_storage >/dev/null
# The CLI's launcher in place of pip's console script: the same CLI started without `site`.
./scripts/build-launcher.sh .venv

# Rootless tests (tests/rootless): an unprivileged user with subordinate ID ranges, and a second
# one without any; a venv of the package's dependencies made with Debian's python3, which they can
# execute (the tests put a copy of src/ on its path, so it always runs the code under test).
if [ "$(id -u)" = 0 ]; then
  ./scripts/setup-rootless.sh
fi
