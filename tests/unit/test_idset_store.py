"""Store.create_container(auto_userns=...) as root, with subordinate ID files of the test's own.

Root is needed: the containers' files are re-owned to the IDs chosen (and overlay mounts).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers_storage import autouserns, errors
from containers_storage.autouserns import AutoUserNsOptions
from containers_storage.config import StoreOptions
from containers_storage.idset import IDSet
from containers_storage.idtools import IDMap
from containers_storage.store import Store, get_store
from storetools import close_store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="re-owning layer files needs root")

UID_BASE, GID_BASE = 100000, 500000
SUBUID = f"containers:{UID_BASE}:70000\nbuilder:900000:3000\n"
SUBGID = f"containers:{GID_BASE}:70000\nbuilder:900000:3000\n"
SRC = str(Path(__file__).resolve().parents[2] / "src")


def layer_tar(files: dict[str, tuple[bytes, int, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted({os.path.dirname(n) for n in files} - {""}):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        for name, (data, uid, gid) in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.uid, ti.gid, ti.mode = len(data), uid, gid, 0o644
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


PASSWD = b"root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:2000:2500::/:/bin/sh\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\napp:x:2500:\n"


@pytest.fixture
def subids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    uid_file, gid_file = tmp_path / "subuid", tmp_path / "subgid"
    uid_file.write_text(SUBUID)
    gid_file.write_text(SUBGID)
    monkeypatch.setattr(autouserns, "SUBUID_FILE", str(uid_file))
    monkeypatch.setattr(autouserns, "SUBGID_FILE", str(gid_file))
    return uid_file, gid_file


def _open(tmp_path: Path, driver: str, **kw: object) -> Store:
    return get_store(StoreOptions(graph_root=str(tmp_path / "root"), run_root=str(tmp_path / "run"),
                                  driver_name=driver, **kw))  # type: ignore[arg-type]


@pytest.fixture(params=["vfs", "overlay"])
def store(request: pytest.FixtureRequest, tmp_path: Path, subids: tuple[Path, Path]) -> Iterator[Store]:
    s = _open(tmp_path, request.param)
    try:
        yield s
    finally:
        close_store(s)


def make_image(s: Store, name: str = "img", passwd: bytes = PASSWD, group: bytes = GROUP,
               extra_owner: int = 1000) -> str:
    """Two layers: a base with a file owned by ``extra_owner``, and /etc/passwd and /etc/group."""
    base = s.put_layer(io.BytesIO(layer_tar({
        "data/owned": (b"x", extra_owner, extra_owner), "data/root": (b"r", 0, 0)}))).layer
    top = s.put_layer(io.BytesIO(layer_tar({
        "etc/passwd": (passwd, 0, 0), "etc/group": (group, 0, 0)})), parent=base.id).layer
    return s.create_image(top.id, names=[name]).id


def test_ranges_follow_each_other_and_files_are_owned_accordingly(store: Store) -> None:
    image = make_image(store)
    layers_before = {layer.id for layer in store.layers()}
    first = store.create_container("img", names=["c1"], auto_userns=AutoUserNsOptions())
    # max(1024, largest ID 2500 of the image + 1): group 2500 of /etc/group and passwd decide.
    assert first.uid_map == [IDMap(0, UID_BASE, 2501)]
    assert first.gid_map == [IDMap(0, GID_BASE, 2501)]
    second = store.create_container(image, names=["c2"], auto_userns=AutoUserNsOptions(size=10))
    assert second.uid_map == [IDMap(0, UID_BASE + 2501, 10)]
    assert second.gid_map == [IDMap(0, GID_BASE + 2501, 10)]
    # Written as Go writes them, and read back by a fresh load.
    with open(os.path.join(store.graph_root, f"{store.driver_name}-containers", "containers.json")) as f:
        records = {c["names"][0]: c for c in json.load(f)}
    assert records["c1"]["uidmap"] == [{"container_id": 0, "host_id": UID_BASE, "size": 2501}]
    assert records["c2"]["gidmap"] == [{"container_id": 0, "host_id": GID_BASE + 2501, "size": 10}]
    # The temporary layer that was mounted to read /etc/passwd is gone; the container layers
    # (and the ID-mapped copies of the top layer, where the driver cannot shift) remain.
    created = {layer.id for layer in store.layers()} - layers_before
    assert {first.layer, second.layer} <= created
    assert all(store.mounted(lid) == 0 for lid in created)
    mapped = store.image(image).mapped_top_layers
    assert created == {first.layer, second.layer, *mapped}
    # The container's files carry the host IDs of its namespace.
    path = store.mount(first.id)
    try:
        st = os.stat(os.path.join(path, "data", "owned"))
        assert (st.st_uid, st.st_gid) == (UID_BASE + 1000, GID_BASE + 1000)
        st = os.stat(os.path.join(path, "etc", "passwd"))
        assert (st.st_uid, st.st_gid) == (UID_BASE, GID_BASE)
    finally:
        store.unmount(first.id, force=True)


def test_existing_containers_are_never_overlapped(store: Store) -> None:
    make_image(store)
    # A container with an explicit map in the middle of the range, as a Go tool could make.
    fixed = store.create_container("img", names=["fixed"], uid_map=[IDMap(0, UID_BASE + 1500, 100)],
                                   gid_map=[IDMap(0, GID_BASE, 5)])
    a = store.create_container("img", names=["a"], auto_userns=AutoUserNsOptions(size=2000))
    assert a.uid_map == [IDMap(0, UID_BASE, 1500), IDMap(1500, UID_BASE + 1600, 500)]
    assert a.gid_map == [IDMap(0, GID_BASE + 5, 2000)]
    b = store.create_container("img", names=["b"], auto_userns=AutoUserNsOptions(size=100))
    assert b.uid_map == [IDMap(0, UID_BASE + 2100, 100)]
    used = [IDSet.of_host_ids(c.uid_map) for c in (fixed, a, b)]
    assert sum(u.size() for u in used) == IDSet().union(used[0]).union(used[1]).union(used[2]).size()
    # A deleted container's range is free again: first fit hands it out next.
    store.delete_container(a.id)
    c = store.create_container("img", names=["c"], auto_userns=AutoUserNsOptions(size=1500))
    assert c.uid_map == [IDMap(0, UID_BASE, 1500)]


def test_sizes_min_initial_max_and_refusals(tmp_path: Path, subids: tuple[Path, Path]) -> None:
    s = _open(tmp_path, "vfs", auto_ns_min_size=3000, auto_ns_max_size=4000)
    try:
        make_image(s)
        assert s.create_container("img", auto_userns=AutoUserNsOptions()).uid_map[0].size == 3000
        c = s.create_container("img", auto_userns=AutoUserNsOptions(initial_size=3500))
        assert c.uid_map == [IDMap(0, UID_BASE + 3000, 3500)]
        count = len(s.containers())
        with pytest.raises(errors.StorageError) as info:
            s.create_container("img", auto_userns=AutoUserNsOptions(initial_size=4001))
        assert str(info.value) == ("the container needs a user namespace with size 4001 that is "
                                   "bigger than the maximum value allowed with userns=auto 4000")
        # An image that lists a high ID needs more than the maximum.
        make_image(s, "big", passwd=b"app:x:5000:5000\n")
        with pytest.raises(errors.StorageError, match=r"with size 5001 that is bigger"):
            s.create_container("big", auto_userns=AutoUserNsOptions())
        # The remaining 70000 - 6500 IDs are not enough for 64000.
        with pytest.raises(errors.NoAvailableIDs):
            s.create_container("img", auto_userns=AutoUserNsOptions(size=64000))
        assert len(s.containers()) == count  # refusals leave no container or layer behind
        assert all(s.mounted(layer.id) == 0 for layer in s.layers())
    finally:
        close_store(s)


def test_owners_recorded_in_layers_count_too(store: Store) -> None:
    make_image(store, "plain", passwd=b"root:x:0:0\n", group=b"root:x:0:\n", extra_owner=4242)
    c = store.create_container("plain", auto_userns=AutoUserNsOptions())
    assert c.uid_map == [IDMap(0, UID_BASE, 4243)]


def test_no_image_and_additional_maps(store: Store) -> None:
    extra = [IDMap(5000, 10, 1)]
    c = store.create_container(auto_userns=AutoUserNsOptions(initial_size=6000, additional_uid_maps=extra))
    assert c.uid_map == [IDMap(0, UID_BASE, 5000), IDMap(5001, UID_BASE + 5000, 999), extra[0]]
    assert c.gid_map == [IDMap(0, GID_BASE, 6000)]


def test_root_auto_userns_user_from_the_options(tmp_path: Path, subids: tuple[Path, Path]) -> None:
    s = _open(tmp_path, "vfs", root_auto_ns_user="builder")
    try:
        c = s.create_container(auto_userns=AutoUserNsOptions())
        assert c.uid_map == [IDMap(0, 900000, 1024)]
        with pytest.raises(errors.NoAvailableIDs):
            s.create_container(auto_userns=AutoUserNsOptions(size=3000))
    finally:
        close_store(s)


def test_without_a_subordinate_range_nothing_is_available(
        tmp_path: Path, subids: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    subids[0].write_text("someone:100000:65536\n")
    s = _open(tmp_path, "vfs")
    try:
        with pytest.raises(errors.NoAvailableIDs, match=r"^not enough unused IDs in user namespace$"):
            s.create_container(auto_userns=AutoUserNsOptions())
        assert 'Cannot find mappings for user "containers"' in caplog.text
        assert s.containers() == []
    finally:
        close_store(s)


def _hold_lock_in_another_process(path: str) -> subprocess.Popen[bytes]:
    code = textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
    return proc


@pytest.mark.parametrize("how", ["auto", "explicit"])
def test_creation_waits_for_userns_lock(tmp_path: Path, subids: tuple[Path, Path], how: str) -> None:
    s = _open(tmp_path, "vfs")
    try:
        kw: dict[str, object] = ({"auto_userns": AutoUserNsOptions(size=5)} if how == "auto"
                                 else {"uid_map": [IDMap(0, 1000, 5)], "gid_map": [IDMap(0, 1000, 5)]})
        holder = _hold_lock_in_another_process(os.path.join(s.graph_root, "userns.lock"))
        done = threading.Event()
        result: list[object] = []

        def create() -> None:
            try:
                result.append(s.create_container(names=["waiting"], **kw))  # type: ignore[arg-type]
            except BaseException as e:
                result.append(e)
            done.set()

        t = threading.Thread(target=create, daemon=True)
        t.start()
        # Cannot finish while another process holds userns.lock (a slow machine only makes
        # this check weaker, never wrong) ...
        assert not done.wait(1.0)
        holder.communicate(b"")
        # ... and finishes once it is released.
        assert done.wait(60)
        assert len(result) == 1 and not isinstance(result[0], BaseException), result
        # Without maps no lock is needed: this one does not wait.
        holder = _hold_lock_in_another_process(os.path.join(s.graph_root, "userns.lock"))
        try:
            s.create_container(names=["plain"])
        finally:
            holder.communicate(b"")
    finally:
        close_store(s)


def test_processes_allocating_at_once_never_share_ids(tmp_path: Path, subids: tuple[Path, Path]) -> None:
    s = _open(tmp_path, "vfs")
    close_store(s)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r})
        from containers_storage import autouserns
        autouserns.SUBUID_FILE, autouserns.SUBGID_FILE = {str(subids[0])!r}, {str(subids[1])!r}
        from containers_storage.autouserns import AutoUserNsOptions
        from containers_storage.config import StoreOptions
        from containers_storage.store import get_store
        s = get_store(StoreOptions(graph_root={str(tmp_path / "root")!r},
                                   run_root={str(tmp_path / "run")!r}, driver_name="vfs"))
        for _ in range(5):
            s.create_container(auto_userns=AutoUserNsOptions(size=1000))
        s.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    s = _open(tmp_path, "vfs")
    try:
        containers = s.containers()
        assert len(containers) == 20
        total = IDSet()
        for c in containers:
            mine = IDSet.of_host_ids(c.uid_map)
            assert mine.size() == 1000 and mine.isdisjoint(total), c.uid_map
            total = total | mine
        assert total == IDSet([(UID_BASE, UID_BASE + 20000)])
    finally:
        close_store(s)


def test_a_mapping_that_maps_an_id_twice_is_refused(store: Store) -> None:
    make_image(store)
    layers = {layer.id for layer in store.layers()}
    with pytest.raises(errors.InvalidMappings) as info:
        store.create_container("img", names=["twice"],
                               uid_map=[IDMap(0, 300000, 10), IDMap(5, 400000, 10)],
                               gid_map=[IDMap(0, 300000, 20)])
    assert str(info.value) == ("the specified UID and/or GID mapping 5:400000:10 conflicts with other "
                               "mappings: invalid mappings specified")
    # Additional maps that clash with each other on the host side are refused the same way.
    with pytest.raises(errors.InvalidMappings, match=r"mapping 3000:77:5 conflicts"):
        store.create_container("img", names=["extra"], auto_userns=AutoUserNsOptions(
            additional_gid_maps=[IDMap(2900, 75, 5), IDMap(3000, 77, 5)]))
    assert store.containers() == []
    # Nothing is left behind but the ID-mapped copies of the image's top layer, which stay
    # with the image for the next container with the same maps (as in Go).
    left = {layer.id for layer in store.layers()} - layers
    assert left <= set(store.image("img").mapped_top_layers)
