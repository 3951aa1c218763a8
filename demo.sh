#!/usr/bin/env bash
# Set up, then show the main job on a local store folder: import a tarball as a layer, make an
# image and a container from it, mount the container, show the layer tree, let the Go CLI (when
# installed) read the very same store, then damage a layer and let check find and repair it.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
cs=".venv/bin/containers-storage"
store="$PWD/demo-store"
rm -rf "$store"
opts=(--graph "$store/root" --run "$store/run" --storage-driver vfs)
run() { echo "\$ containers-storage $*" >&2; "$cs" "${opts[@]}" "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/etc" "$work/rootfs/bin"
echo "hello from a layer" > "$work/rootfs/etc/motd"
printf '#!/bin/sh\necho hi\n' > "$work/rootfs/bin/hello" && chmod 755 "$work/rootfs/bin/hello"
tar -C "$work/rootfs" -czf "$work/layer.tar.gz" .

echo "== import a gzip tarball as a layer"
layer=$(run import-layer --name demo-base -f "$work/layer.tar.gz" | head -n1)
echo "$layer"
echo "== a second, empty layer on top, and an image of it"
top=$(run create-layer --name demo-top "$layer" | head -n1)
run create-image --name demo/image:latest "$top"
echo "== a container from the image, mounted"
run create-container --name demo-ctr demo/image:latest
mnt=$(run mount demo-ctr | head -n1)
echo "mounted at $mnt:"; cat "$mnt/etc/motd"
run unmount demo-ctr
echo "== the layer tree"
run layers -t
echo "== the imported layer's digests and sizes"
run layer --json "$layer"
if command -v containers-storage >/dev/null && [ "$(command -v containers-storage)" != "$PWD/$cs" ]; then
  echo "== the Go CLI reads the same store"
  /usr/bin/containers-storage "${opts[@]}" images
fi
echo "== damage the base layer; check finds it, and repair removes what depended on it"
echo "tampered" > "$store/root/vfs/dir/$layer/etc/motd"
run check || echo "(check exit status $?)"
run check --repair --force >/dev/null || true   # -f: containers on damaged layers go too
run check && echo "(clean again)"
run layers -q
echo "demo store left in $store"
