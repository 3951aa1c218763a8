#!/usr/bin/env bash
# Prepare rootless testing (as root): users and a venv they can run. Idempotent.
#   csrootless  - an ordinary user with /etc/subuid and /etc/subgid ranges (as useradd gives them)
#   csnosubids  - a user without any subordinate range
#   /opt/containers-storage-rootless/venv - Debian's python3 with the package's dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

add_user() {  # name, whether to grant subordinate ranges
  local name=$1 subids=$2
  if ! id "$name" >/dev/null 2>&1; then
    if [ "$subids" = yes ]; then
      useradd -m -s /bin/bash "$name"
    else
      useradd -m -s /bin/bash -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$name"
    fi
  fi
  if [ "$subids" = yes ]; then
    # useradd grants ranges itself where login.defs says so; otherwise take a free one.
    if ! grep -q "^$name:" /etc/subuid 2>/dev/null || ! grep -q "^$name:" /etc/subgid 2>/dev/null; then
      local start=300000
      while grep -q ":$start:" /etc/subuid /etc/subgid 2>/dev/null; do start=$((start + 65536)); done
      grep -q "^$name:" /etc/subuid 2>/dev/null || echo "$name:$start:65536" >> /etc/subuid
      grep -q "^$name:" /etc/subgid 2>/dev/null || echo "$name:$start:65536" >> /etc/subgid
    fi
  fi
}
add_user csrootless yes
add_user csnosubids no

# fuse-overlayfs as an unprivileged user opens /dev/fuse itself.  Debian ships the node 0666;
# this VM's is 0600 root-only, which leaves rootless users no FUSE (tests/rootless use it).
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
  chmod 0666 /dev/fuse
fi

venv=/opt/containers-storage-rootless/venv
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
fi
deps=$(.venv/bin/python - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
)
mapfile -t dep_list <<< "$deps"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${dep_list[@]}" >/dev/null
chmod -R a+rX /opt/containers-storage-rootless

# Automatic user namespaces (podman --userns=auto, AutoUserNs) as root take their IDs from the
# ranges /etc/subuid and /etc/subgid grant the user "containers" (root-auto-userns-user); this is
# the entry podman's documentation suggests, far above any range useradd hands out.
for f in /etc/subuid /etc/subgid; do
  grep -q "^containers:" "$f" 2>/dev/null || echo "containers:2147483647:2147483648" >> "$f"
done
