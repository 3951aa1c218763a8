#!/bin/sh
# Build the CLI's launcher (scripts/launcher/containers-storage.c) for a venv and put it in place of
# the console script pip wrote: the same CLI, started without `site` (~0.9 ms less per call).  The
# module path `site` computes for the venv is baked in, so run this again after reinstalling the
# package elsewhere; a later `pip install` simply puts pip's script back.  Without a compiler or
# the Python headers it leaves pip's script alone and says so (exit status 0: it is optional).
#
# Usage: scripts/build-launcher.sh [VENV]   (default: .venv)
set -eu
cd "$(dirname "$0")/.."
venv=${1:-.venv}
python=$venv/bin/python
target=$venv/bin/containers-storage
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# What site makes of the venv (sys.path without the script's directory), and how to link CPython.
"$python" - "$work" <<'EOF'
import json, os, sys, sysconfig

work = sys.argv[1]
paths = [p for p in sys.path if p and os.path.abspath(p) != os.getcwd()]
python = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "python")
if not os.path.exists(python):
    python = sys.executable


def c(text):
    return json.dumps(text, ensure_ascii=False)  # a C string literal for these characters


with open(os.path.join(work, "config.h"), "w", encoding="utf-8") as f:
    f.write(f"#define CS_PYTHON {c(python)}\n#define CS_PATHS {', '.join(c(p) for p in paths)}\n")
var = sysconfig.get_config_var
include = f"-I{sysconfig.get_paths()['include']}"
tail = [*(var("LIBS") or "").split(), *(var("SYSLIBS") or "").split(),
        *(var("LINKFORSHARED") or "").split()]
libdir = var("LIBDIR")
shared = [include, f"-L{libdir}", f"-lpython{var('LDVERSION')}", *tail]
if var("Py_ENABLE_SHARED"):
    shared.append(f"-Wl,-rpath,{libdir}")
builds = {"shared": shared}
# libpython linked into the launcher when the interpreter ships its static archive (Debian's
# python3-dev, pyenv, a plain build): the dynamic loader then has no libpython to map and
# relocate, and calls into it are direct; ~1.8 ms of the ~20 ms of a create-layer.  -no-pie:
# the archive need not be PIC (Debian's is not).
archive = os.path.join(var("LIBPL") or "", var("LIBRARY") or "")
if archive.endswith(".a") and os.path.isfile(archive):
    builds["static"] = [include, "-no-pie", archive, *(var("MODLIBS") or "").split(), *tail]
for name, flags in builds.items():
    with open(os.path.join(work, name), "w") as f:
        f.write("\n".join(flags) + "\n")
EOF

# Static when it builds and runs, else against the shared library.
built=
for kind in static shared; do
  [ -f "$work/$kind" ] || continue
  # shellcheck disable=SC2046 # one flag per line, none with spaces
  if ${CC:-cc} -O2 -Wall -include "$work/config.h" scripts/launcher/containers-storage.c \
        -o "$work/containers-storage" $(cat "$work/$kind") 2>"$work/errors" &&
     "$work/containers-storage" --help >/dev/null 2>&1; then
    built=$kind
    break
  fi
done
if [ -z "$built" ]; then
  echo "build-launcher: no launcher (the console script stays): $(tail -n 3 "$work/errors")" >&2
  exit 0
fi
cp "$work/containers-storage" "$target.new"
chmod 755 "$target.new"
mv -f "$target.new" "$target"
echo "build-launcher: $target is the launcher, libpython linked $built (pip install puts the console script back)"
