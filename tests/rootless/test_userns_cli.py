"""The CLI as an ordinary user: default paths, configuration, entering the user namespace."""

from __future__ import annotations

import os

from rootlesstools import User


def test_status_shows_the_users_store(user: User) -> None:
    err = user.ours("status").stderr
    assert f"Root: {user.graph_root}\n" in err
    assert f"Run Root: {user.run_root}\n" in err
    assert "Driver Name: overlay\n" in err  # kernel >= 5.13 (or fuse-overlayfs): Go picks overlay
    assert user.graph_root.is_dir()
    # Made inside the namespace, as uid 0 there: the user's own on the host.
    assert (user.graph_root / "overlay").stat().st_uid == user.uid


def test_unshare_shows_the_subordinate_range(user: User) -> None:
    assert user.subuid is not None and user.subgid is not None
    out = user.ours("unshare", "cat", "/proc/self/uid_map", "/proc/self/gid_map").stdout.split()
    assert out == ["0", str(user.uid), "1", "1", str(user.subuid[0]), str(user.subuid[1]),
                   "0", str(user.gid), "1", "1", str(user.subgid[0]), str(user.subgid[1])]


def test_unshare_tells_children_who_the_user_is(user: User) -> None:
    out = user.ours("unshare", "sh", "-c",
                    "id -u; echo $_CONTAINERS_USERNS_CONFIGURED $_CONTAINERS_ROOTLESS_UID").stdout
    assert out.split() == ["0", "done", str(user.uid)]
    # Our CLI run inside sees the same store, and does not nest another namespace.
    inner = user.ours("unshare", "sh", "-c", "containers-storage status 2>&1; cat /proc/self/uid_map")
    assert f"Root: {user.graph_root}\n" in inner.stdout
    assert inner.stdout.count("\n") == 10 + 2  # status lines, then the two-line map


def test_unshare_runs_the_shell_and_passes_failures(user: User) -> None:
    result = user.ours("unshare", input=b"echo in-$((40+2))\n")
    assert result.stdout == "in-42\n"
    failed = user.ours("unshare", "sh", "-c", "exit 3", check=False)
    assert (failed.returncode, failed.stderr) == (1, "exit status 3\n")


def test_no_subordinate_ids_gives_a_single_mapping_and_warnings(user_without_subids: User) -> None:
    u = user_without_subids
    result = u.ours("unshare", "cat", "/proc/self/uid_map")
    assert result.stdout.split() == ["0", str(u.uid), "1"]
    warnings = [line for line in result.stderr.splitlines() if "level=warning" in line]
    assert any(f'Found no UID ranges set aside for user \\"{u.name}\\" in /etc/subuid.' in w
               for w in warnings), result.stderr
    assert any(f'Found no GID ranges set aside for user \\"{u.name}\\" in /etc/subgid.' in w
               for w in warnings), result.stderr


def test_users_storage_conf_is_honoured(user: User) -> None:
    conf = user.home / ".config" / "containers"
    user.run(["mkdir", "-p", str(conf)])
    graph = user.home / "elsewhere"
    text = f'[storage]\ndriver = "vfs"\ngraphroot = "{graph}"\n'
    user.run(["sh", "-c", f"cat > {conf}/storage.conf"], input=text.encode())
    err = user.ours("status").stderr
    assert f"Root: {graph}\n" in err and "Driver Name: vfs\n" in err
    assert f"Run Root: {user.run_root}\n" in err  # not named in the file: the user's default


def test_runtime_dir_fallback_without_xdg_runtime_dir(user: User) -> None:
    # No $XDG_RUNTIME_DIR and no writable /run/user/$UID: Go 1.60 uses /tmp/storage-run-$UID.
    if os.path.isdir(f"/run/user/{user.uid}"):
        import pytest

        pytest.skip(f"/run/user/{user.uid} exists on this machine")
    tmp = user.home / "tmp"
    user.run(["mkdir", str(tmp)])
    err = user.ours("status", env={"XDG_RUNTIME_DIR": None, "TMPDIR": str(tmp)}).stderr
    assert f"Run Root: {tmp}/storage-run-{user.uid}/containers\n" in err


def test_unshare_false_outside_the_namespace(user: User) -> None:
    # -U=false: no namespace.  Reading records works; setting a driver up says what is missing.
    # (Go 1.60 forgets a -U=false given before the command and enters the namespace anyway.)
    assert user.ours("--unshare=false", "layers").stdout == ""
    failed = user.ours("--unshare=false", "status", check=False)
    assert failed.returncode == 1
    assert failed.stdout.startswith("error initializing: setting up the overlay driver in "), failed.stdout
    assert "a rootless process needs a user namespace for this" in failed.stdout
    # `unshare` enters one itself.
    result = user.ours("--unshare=false", "unshare", "cat", "/proc/self/uid_map")
    assert result.stdout.split()[:3] == ["0", str(user.uid), "1"]


def test_python_program_enters_the_namespace(user: User) -> None:
    code = (
        "import os\n"
        "from containers_storage import userns\n"
        "print(userns.is_rootless(), userns.needs_user_namespace())\n"
        "print(userns.enter_user_namespace())\n"
        "print(os.geteuid(), userns.needs_user_namespace(), userns.in_user_namespace())\n"
        "print(open('/proc/self/uid_map').read().split())\n"
        "print(userns.enter_user_namespace())\n"
    )
    lines = user.python(code).stdout.splitlines()
    assert lines[:3] == ["True True", "True", "0 False True"]
    assert user.subuid is not None
    assert lines[3] == str(["0", str(user.uid), "1", "1", str(user.subuid[0]), str(user.subuid[1])])
    assert lines[4] == "False"  # already inside


def test_python_program_with_threads_gets_a_clear_error(user: User) -> None:
    code = (
        "import threading, time\n"
        "from containers_storage import userns\n"
        "threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
        "try:\n"
        "    userns.enter_user_namespace()\n"
        "except userns.UserNamespaceError as e:\n"
        "    print('refused:', e)\n"
    )
    out = user.python(code).stdout
    assert out.startswith("refused: cannot enter a user namespace: the process runs 2 threads"), out


def test_unshare_errors_as_go_prints_them(user: User) -> None:
    missing = user.ours("unshare", "no-such-command", check=False)
    assert (missing.returncode, missing.stderr) == (
        1, 'exec: "no-such-command": executable file not found in $PATH\n')
    killed = user.ours("unshare", "sh", "-c", "kill -9 $$", check=False)
    assert (killed.returncode, killed.stderr) == (1, "signal: killed\n")
