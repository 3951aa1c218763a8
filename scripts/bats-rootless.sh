#!/usr/bin/env bash
# Run containers/storage's upstream bats suite as an unprivileged user, against our CLI or a Go one.
#
#   scripts/bats-rootless.sh [-u USER] [-d "vfs overlay"] [-n] [-k] BATS_TESTS_DIR [BINARY]
#
# BATS_TESTS_DIR  the upstream tests/ directory (holding helpers.bash and *.bats), e.g. from
#                   git -C /work/.mirror/containers+storage/repo archive HEAD tests | tar -x -C DIR
#                 (then pass DIR/tests).  It is copied: the user needs no access to it.
# BINARY          "ours" (default: this checkout's src/containers_storage, run through a wrapper
#                 with the rootless venv's Python, as tests/rootlesstools.py does) or the path of
#                 a Go containers-storage binary (e.g. /usr/local/bin/go-cs-1.60).
# -u USER         the user to run as (default csrootless, made by scripts/setup-rootless.sh)
# -d DRIVERS      the STORAGE_DRIVER values to run (default "vfs overlay")
# -n              run bats itself inside a user namespace (`podman unshare`), as a user works with
#                 mounts; without it every CLI call enters (and leaves) its own namespace, so the
#                 suite's shell cannot write into layers or see mounts (issue 11 measured that way)
# -k              keep the work directory (bats output per driver) instead of removing it
#
# Run it as root (it switches to USER with setpriv) or as USER itself.  As issue 11 does, it leaves
# out check, idmaps, split-store, dedup and overlay-recreate; it prints, per driver, how many tests
# passed (bats counts a test that skips itself as passed) and failed, and the failures' names.  A developer tool: CI never needs it, and the
# bats files are not part of this repository.
set -euo pipefail

user=csrootless
drivers="vfs overlay"
keep=no
inside=no
while getopts "u:d:nkh" opt; do
  case $opt in
    u) user=$OPTARG ;;
    d) drivers=$OPTARG ;;
    n) inside=yes ;;
    k) keep=yes ;;
    *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 [-u USER] [-d DRIVERS] [-n] [-k] BATS_TESTS_DIR [ours|BINARY]" >&2
  exit 2
fi
src_tests=$(readlink -f "$1")
binary=${2:-ours}
[ -f "$src_tests/helpers.bash" ] || { echo "$src_tests has no helpers.bash" >&2; exit 2; }
command -v bats >/dev/null || { echo "bats is not installed (Debian package bats)" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
venv_python=/opt/containers-storage-rootless/venv/bin/python
excluded="check idmaps split-store dedup overlay-recreate"

uid=$(id -u "$user")
gid=$(id -g "$user")
if [ "$(id -u)" != 0 ] && [ "$(id -u)" != "$uid" ]; then
  echo "run this as root or as $user" >&2
  exit 2
fi

# Everything the user touches lives here: the suite, the CLI, HOME, XDG_RUNTIME_DIR and bats'
# TMPDIR (helpers.bash makes each test's --graph/--run under $BATS_TMPDIR).
work=$(mktemp -d /tmp/bats-rootless.XXXXXX)
chmod 755 "$work"
cleanup() {
  if [ "$(id -u)" = 0 ]; then
    # bats' teardown runs `rm -fr` outside the namespace: root removes what subordinate IDs own.
    if [ $keep = yes ]; then
      find "$work" -mindepth 1 -maxdepth 1 ! -name '*.tap' -exec rm -rf --one-file-system {} +
    else
      rm -rf --one-file-system "$work"
    fi
  else
    [ $keep = yes ] || rm -rf "$work" 2>/dev/null || echo "left behind (owned by subordinate IDs): $work" >&2
  fi
}
trap cleanup EXIT

cp -r "$src_tests" "$work/tests"
if [ "$binary" = ours ]; then
  [ -x "$venv_python" ] || { echo "$venv_python is missing: run scripts/setup-rootless.sh" >&2; exit 2; }
  mkdir "$work/pkg" "$work/bin"
  cp -r "$here/src/containers_storage" "$work/pkg/"
  find "$work/pkg" -name __pycache__ -prune -exec rm -rf {} +
  "$venv_python" -m compileall -q "$work/pkg" >/dev/null  # the user cannot write .pyc files there
  cat > "$work/bin/containers-storage" <<EOF
#!$venv_python
import sys
sys.path.insert(0, "$work/pkg")
from containers_storage.cli.main import main
sys.exit(main())
EOF
  chmod 755 "$work/bin/containers-storage"
  storage_binary=$work/bin/containers-storage
else
  storage_binary=$(readlink -f "$(command -v "$binary")")
fi
chmod -R a+rX "$work"

run_as_user() {
  local home=$1; shift
  if [ "$(id -u)" = 0 ]; then
    (cd "$home" && setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@")
  else
    (cd "$home" && "$@")
  fi
}

files=()
for f in "$work"/tests/*.bats; do
  name=$(basename "$f" .bats)
  case " $excluded " in *" $name "*) continue ;; esac
  files+=("$f")
done

ns=()
mode="each call in its own namespace"
if [ $inside = yes ]; then
  ns=(podman unshare)
  mode="inside podman unshare"
fi

summary=""
for driver in $drivers; do
  d=$work/$driver
  mkdir -p "$d/home" "$d/run" "$d/tmp"
  chmod 700 "$d/home" "$d/run"
  chmod 1777 "$d/tmp"
  if [ "$(id -u)" = 0 ]; then chown "$uid:$gid" "$d/home" "$d/run"; fi
  tap=$work/$driver.tap
  # bats exits non-zero when a test fails: that is the measurement, not an error here.
  run_as_user "$d/home" env -i HOME="$d/home" USER="$user" LOGNAME="$user" \
    PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" LANG=C.UTF-8 \
    XDG_RUNTIME_DIR="$d/run" TMPDIR="$d/tmp" BATS_TMPDIR="$d/tmp" \
    STORAGE_BINARY="$storage_binary" STORAGE_DRIVER="$driver" \
    "${ns[@]}" bats --tap "${files[@]}" > "$tap" 2>&1 || true
  if [ -f "$d/run/libpod/tmp/pause.pid" ]; then
    kill -KILL "$(cat "$d/run/libpod/tmp/pause.pid")" 2>/dev/null || true  # podman's pause process
  fi
  passed=$(grep -c '^ok ' "$tap" || true)
  skipped=$(grep -c '^ok .* # skip' "$tap" || true)
  failed=$(grep -c '^not ok ' "$tap" || true)
  planned=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$tap" | head -1)
  line="$driver: $passed passed ($skipped of them skipped themselves), $failed failed, of ${planned:-?}"
  if [ "$((passed + failed))" != "${planned:-?}" ]; then
    line+=" - INCOMPLETE: $((${planned:-0} - passed - failed)) did not run (see $tap)"
  fi
  summary+="$line [$binary, $mode]"$'\n'
  echo "== $line [$binary, $mode]"
  grep '^not ok ' "$tap" | sed 's/^not ok [0-9]* /  FAIL /' || true
done
if [ $keep = yes ]; then echo "bats output kept in $work/*.tap"; fi
printf '%s' "$summary"
