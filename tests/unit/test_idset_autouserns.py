"""Automatic user namespaces without a store: which IDs, how many, which ranges."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers_storage import errors
from containers_storage.autouserns import (
    AutoUserNsOptions,
    allocate,
    available_ids,
    group_size,
    namespace_size,
    passwd_size,
    user_files_size,
)
from containers_storage.idset import IDSet
from containers_storage.idtools import IDMap


# -- allocate ------------------------------------------------------------------------------------
def test_first_container_gets_the_start_of_the_range() -> None:
    avail = IDSet([(100000, 165536)])
    uids, gids = allocate(1024, avail, IDSet([(200000, 265536)]), [], [])
    assert uids == [IDMap(0, 100000, 1024)]
    assert gids == [IDMap(0, 200000, 1024)]


def test_ranges_of_existing_containers_are_skipped_first_fit() -> None:
    avail = IDSet([(100000, 200000)])
    used = [IDMap(0, 100000, 1000), IDMap(0, 101500, 500), IDMap(0, 103000, 10)]
    uids, _ = allocate(400, avail, avail, used, [])
    assert uids == [IDMap(0, 101000, 400)]  # the 500-ID gap after the first one fits
    uids, _ = allocate(600, avail, avail, used, [])
    # Too big for the first gap: Go takes the lowest free IDs even when they are split.
    assert uids == [IDMap(0, 101000, 500), IDMap(500, 102000, 100)]
    assert IDSet.of_host_ids(uids).isdisjoint(IDSet.of_host_ids(used))


def test_uid_and_gid_sides_are_independent() -> None:
    avail = IDSet([(0, 10000)])
    uids, gids = allocate(100, avail, avail, [IDMap(0, 0, 50)], [IDMap(0, 0, 5000)])
    assert uids == [IDMap(0, 50, 100)]
    assert gids == [IDMap(0, 5000, 100)]


def test_additional_maps_are_kept_and_their_ids_left_out() -> None:
    avail = IDSet([(100000, 200000)])
    extra = [IDMap(1000, 100010, 5)]  # container 1000-1004 -> host 100010-100014
    uids, gids = allocate(2000, avail, avail, [], [], extra, [])
    assert uids[-1] == extra[0]
    auto = uids[:-1]
    # Container IDs 0..1999 except 1000..1004 come from the automatic part ...
    assert IDSet.of_container_ids(auto) == IDSet([(0, 1000), (1005, 2000)])
    # ... on host IDs that skip those of the additional map.
    assert IDSet.of_host_ids(auto).isdisjoint(IDSet([(100010, 100015)]))
    assert auto[0] == IDMap(0, 100000, 10)
    assert sum(m.size for m in auto) == 1995
    assert gids == [IDMap(0, 100000, 2000)]


def test_not_enough_ids() -> None:
    avail = IDSet([(100000, 101000)])
    with pytest.raises(errors.NoAvailableIDs, match=r"^not enough unused IDs in user namespace$"):
        allocate(600, avail, avail, [IDMap(0, 100000, 500)], [])
    with pytest.raises(errors.NoAvailableIDs):
        allocate(1, IDSet(), IDSet(), [], [])


# -- namespace_size ------------------------------------------------------------------------------
def test_size_rules() -> None:
    assert namespace_size(AutoUserNsOptions(), 0, 0) == 1024
    assert namespace_size(AutoUserNsOptions(), 0, 0, image_needs=3001) == 3001
    assert namespace_size(AutoUserNsOptions(initial_size=5000), 0, 0, image_needs=3001) == 5000
    assert namespace_size(AutoUserNsOptions(), 10, 0, image_needs=2) == 10
    # An explicit size wins over everything, the maximum included (as in Go).
    assert namespace_size(AutoUserNsOptions(size=7), 1024, 0, image_needs=3001) == 7
    assert namespace_size(AutoUserNsOptions(size=100000), 0, 0) == 100000
    with pytest.raises(errors.StorageError) as info:
        namespace_size(AutoUserNsOptions(), 0, 0, image_needs=70000)
    assert str(info.value) == ("the container needs a user namespace with size 70000 that is bigger "
                               "than the maximum value allowed with userns=auto 65536")
    with pytest.raises(errors.StorageError, match=r"size 2048 .* userns=auto 2000$"):
        namespace_size(AutoUserNsOptions(initial_size=2048), 0, 2000)


def test_options_validate_sizes() -> None:
    with pytest.raises(ValueError, match="size"):
        AutoUserNsOptions(size=-1)
    with pytest.raises(ValueError, match="initial_size"):
        AutoUserNsOptions(initial_size=1 << 32)
    opts = AutoUserNsOptions(size=5, additional_uid_maps=[(1, 2, 3)])  # type: ignore[list-item]
    assert opts.additional_uid_maps == [IDMap(1, 2, 3)]
    assert "size=5" in repr(opts)


# -- passwd and group files ----------------------------------------------------------------------
def _p(text: str) -> int:
    return passwd_size(io.BytesIO(text.encode()))


def _g(text: str) -> int:
    return group_size(io.BytesIO(text.encode()))


def test_passwd_largest_uid_or_gid_plus_one() -> None:
    assert _p("root:x:0:0:root:/root:/bin/sh\n") == 1
    assert _p("root:x:0:0::/:\napp:x:3000:3001::/:/bin/sh\n") == 3002
    assert _p("a:x:3000:10\nb:x:3001:10\n") == 3002  # Go's ">" would stop at 3001
    assert _p("") == 0


def test_passwd_leaves_nobody_out() -> None:
    text = ("root:x:0:0::/:\nnobody:x:65534:65534::/:\nnogroup:x:70000:70000::/:\n"
            "other:x:65534:12::/:\n")
    assert _p(text) == 13  # 65534 is skipped by number, "nobody"/"nogroup" by name


def test_passwd_parses_as_go() -> None:
    assert _p("  app:x:+41:0  \r\n") == 42  # trimmed; Go's Atoi takes a sign
    assert _p("app:x:4 2:0\nb:x:0x10:0\nc:x:-5:-7\n") == 1  # not numbers: 0
    assert _p("app:x:500\n") == 501  # missing fields are 0
    assert _p("#app:x:900:0\n") == 901  # Go's passwd parser has no comments
    assert _p("app:x:٣٣:0\n") == 1  # only ASCII digits are digits


def test_passwd_with_an_overlong_line_counts_for_nothing() -> None:
    # Go's scanner fails on a line of 64 KiB or more, and the whole file is then ignored.
    long_gecos = "g" * 70000
    assert _p(f"app:x:3000:0\nb:x:1:1:{long_gecos}:/:\n") == 0
    assert _p(f"app:x:3000:0\nb:x:1:1:{'g' * 1000}:/:\n") == 3001


def test_group_largest_gid_plus_one() -> None:
    text = "root:x:0:\nnogroup:x:65534:\nnobody:x:9000:\napp:x:3001:a,b\n#c:x:8000:\n\n"
    assert _g(text) == 3002
    assert _g("x:y:65534:\n") == 0
    assert _g("grp:x:12") == 13  # last line without a newline
    # A member list of any length is read past (Go reads group lines of any length).
    assert _g(f"big:x:77:{','.join(['m'] * 50000)}\nafter:x:88:\n") == 89


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both ways of confining a lookup: the kernel's openat2, and the O_NOFOLLOW walk."""
    from containers_storage.archive.confine import have_openat2, set_openat2_enabled

    if request.param == "openat2" and not have_openat2():
        pytest.skip("this kernel has no openat2")
    set_openat2_enabled(request.param == "openat2")
    try:
        yield request.param
    finally:
        set_openat2_enabled(None)


def test_user_files_are_opened_beneath_the_root(tmp_path: Path, resolver: str) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:60000:60000\n")
    (outside / "group").write_text("evil:x:61000:\n")
    # Absolute and relative links that would leave the root resolve inside it instead.
    os.symlink(str(outside / "passwd"), root / "etc" / "passwd")
    os.symlink("../../outside/group", root / "etc" / "group")
    assert user_files_size(str(root)) == 0
    # The same targets, planted inside the root, are what is read.
    inside = root / str(outside).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "passwd").write_text("app:x:3000:3000\n")
    (root / "outside").mkdir()
    (root / "outside" / "group").write_text("app:x:4000:\n")
    assert user_files_size(str(root)) == 4001


def test_user_files_that_are_not_regular_files_are_not_read(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.mkfifo(root / "etc" / "passwd")  # reading a FIFO would block forever
    (root / "etc" / "group").mkdir()
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(user_files_size(str(root))), daemon=True)
    t.start()
    t.join(30)
    assert done == [0]


def test_user_files_given_on_the_host_replace_the_images(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("app:x:3000:3000\n")
    (root / "etc" / "group").write_text("app:x:3000:\n")
    host_passwd = tmp_path / "passwd"
    host_passwd.write_text("vol:x:5000:5000\n")
    assert user_files_size(str(root)) == 3001
    assert user_files_size(str(root), passwd_file=str(host_passwd)) == 5001
    host_group = tmp_path / "group"
    host_group.write_text("vol:x:10:\n")
    assert user_files_size(str(root), str(host_passwd), str(host_group)) == 5001
    assert user_files_size(str(root), group_file=str(host_group)) == 3001
    assert user_files_size(str(root), passwd_file=str(tmp_path / "missing")) == 3001


# -- available IDs -------------------------------------------------------------------------------
@pytest.fixture
def subid_files(tmp_path: Path) -> tuple[str, str]:
    uid_file = tmp_path / "subuid"
    gid_file = tmp_path / "subgid"
    uid_file.write_text("# comment\nalice:100000:65536\ncontainers:2147483647:2147483648\n"
                        "builder:300000:1000\nbuilder:400000:500\n")
    gid_file.write_text("alice:100000:65536\ncontainers:1000000:5000\nbuilder:300000:20\n")
    return str(uid_file), str(gid_file)


def test_root_takes_the_containers_users_ranges(subid_files: tuple[str, str]) -> None:
    uids, gids = available_ids("", rootless=False, subuid_file=subid_files[0],
                               subgid_file=subid_files[1])
    assert uids == IDSet([(2147483647, 4294967295)])
    assert gids == IDSet([(1000000, 1005000)])


def test_root_auto_userns_user_chooses_the_entry(subid_files: tuple[str, str]) -> None:
    uids, gids = available_ids("builder", rootless=False, subuid_file=subid_files[0],
                               subgid_file=subid_files[1])
    assert uids == IDSet([(300000, 301000), (400000, 400500)])
    assert gids == IDSet([(300000, 300020)])


def test_missing_entry_leaves_nothing_and_says_why(
        subid_files: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        uids, gids = available_ids("nosuchuser", rootless=False, subuid_file=subid_files[0],
                                   subgid_file=subid_files[1])
    assert (uids, gids) == (IDSet(), IDSet())
    assert ('Cannot find mappings for user "nosuchuser": no subuid ranges found for user '
            f'"nosuchuser" in {subid_files[0]}') in caplog.text
    with pytest.raises(errors.NoAvailableIDs):
        allocate(1024, uids, gids, [], [])


def test_rootless_ranges_are_renumbered_from_one(
        subid_files: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "builder")
    # root-auto-userns-user does not apply to a rootless user: its own entries do.
    uids, gids = available_ids("containers", rootless=True, subuid_file=subid_files[0],
                               subgid_file=subid_files[1])
    assert uids == IDSet([(1, 1501)])
    assert gids == IDSet([(1, 21)])
    monkeypatch.setenv("USER", "alice")
    uids, _ = available_ids(rootless=True, subuid_file=subid_files[0], subgid_file=subid_files[1])
    assert uids == IDSet([(1, 65537)])
    assert allocate(1024, uids, uids, [], [])[0] == [IDMap(0, 1, 1024)]
