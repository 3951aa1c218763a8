"""dedup on file systems with reflinks (loop-mounted btrfs and XFS), vfs and overlay: the bytes
Go would report (every copy after the first of each content, each inode once, only the images'
layers), the same with every hash method and on every run, and extents really shared
afterwards (FIEMAP) with the contents unchanged.  test_dedup_go.py compares with Go's CLI."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from containers_storage.config import StoreOptions
from containers_storage.store import get_store
from dedupcase import OTHER, A, Store, expected, first_extent, populate, tar_file
from storetools import close_store

PARAMS = [("vfs", "btrfs_mount"), ("overlay", "btrfs_mount"), ("vfs", "xfs_mount"), ("overlay", "xfs_mount")]


@pytest.fixture(params=PARAMS, ids=[f"{d}-{fs.split('_')[0]}" for d, fs in PARAMS])
def store(request: pytest.FixtureRequest, on_loop_fs: Callable[[str], str]) -> Store:
    driver, fs = request.param
    base = on_loop_fs(fs)
    s = Store(os.path.join(base, "root"), os.path.join(base, "run"), driver)
    request.addfinalizer(lambda: s.cli("shutdown"))
    return s


def test_dedup_reports_and_shares_what_go_would(store: Store, tmp_path: str) -> None:
    lower, upper, unused = populate(store, str(tmp_path))
    assert first_extent(os.path.join(store.layer_dir(lower), "a")) != \
        first_extent(os.path.join(store.layer_dir(upper), "a2"))
    want = expected(store.driver)
    assert store.cli("dedup") == f"Deduplicated {want} bytes\n"
    for method in ("size", "crc", "sha256", "crc"):
        assert store.cli("dedup", "-j", "--hash-method", method) == f'{{"Deduped":{want}}}\n'
    lower_a = os.path.join(store.layer_dir(lower), "a")
    assert first_extent(lower_a) == first_extent(os.path.join(store.layer_dir(upper), "a2"))
    assert first_extent(os.path.join(store.layer_dir(lower), "b")) == \
        first_extent(os.path.join(store.layer_dir(upper), "sub", "b-copy"))
    # A layer no image uses is left alone, and OTHER only had B's size.
    assert first_extent(os.path.join(store.layer_dir(unused), "a3")) != first_extent(lower_a)
    assert first_extent(os.path.join(store.layer_dir(upper), "other")) != \
        first_extent(os.path.join(store.layer_dir(lower), "b"))
    for path, data in ((lower_a, A), (os.path.join(store.layer_dir(upper), "a2"), A),
                       (os.path.join(store.layer_dir(upper), "other"), OTHER)):
        with open(path, "rb") as f:
            assert f.read() == data


def test_store_dedup_through_the_library(store: Store, tmp_path: str) -> None:
    populate(store, str(tmp_path))
    s = get_store(StoreOptions(graph_root=store.root, run_root=store.run, driver_name=store.driver))
    try:
        result = s.dedup("sha256")
        assert (result.deduped, result.supported) == (expected(store.driver), True)
        assert result.to_json() == {"Deduped": expected(store.driver)}
        with pytest.raises(ValueError, match="invalid hash method: md5"):
            s.dedup("md5")
    finally:
        close_store(s)


def test_dedup_without_images_saves_nothing(store: Store, tmp_path: str) -> None:
    layer = store.cli("create-layer").strip()
    store.cli("applydiff", "-f", tar_file(os.path.join(tmp_path, "t.tar"), {"x": A, "y": A}), layer)
    assert store.cli("dedup") == "Deduplicated 0 bytes\n"
    store.cli("create-image", layer)
    assert store.cli("dedup") == f"Deduplicated {len(A)} bytes\n"
