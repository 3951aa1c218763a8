"""The records engine (recordindex) and the store layout (layout): the rules every reader shares."""

from __future__ import annotations

from typing import Any

import pytest

from containers_storage.layout import IMAGE_STORE, STABLE, VOLATILE, Layout, big_data_file_name
from containers_storage.recordindex import (
    PackedIndex,
    RecordIndex,
    image_digests,
    layer_chain,
    plain_ids,
    read_records,
)

A, B, C = "a" * 64, "ab" + "0" * 62, "c" * 64


def _load(*files: list[dict[str, Any]]) -> RecordIndex[dict[str, Any]]:
    return RecordIndex.load(list(files))


def test_first_id_wins_across_and_within_files() -> None:
    first, again, later = {"id": A, "names": ["x"]}, {"id": A, "names": ["y"]}, {"id": A}
    index = _load([first, {"id": C}, again], [later])
    assert index.records == [first, {"id": C}]
    assert index.by_id[A] is first
    assert index.lookup("x") is first and index.lookup("y") is None
    assert not index.damaged


def test_a_later_name_claim_wins_and_the_loser_drops_the_name() -> None:
    older, newer = {"id": A, "names": ["n", "keep"]}, {"id": C, "names": ["n"]}
    index = _load([older], [newer])
    assert index.lookup("n") is newer
    assert older["names"] == ["keep"]  # what a writer then saves
    assert index.damaged
    # A record that lists a name twice claims it once: no damage.
    assert not _load([{"id": A, "names": ["n", "n"]}]).damaged


def test_references_are_ids_then_names_then_unique_prefixes() -> None:
    named_like_an_id = {"id": C, "names": [A]}
    index = _load([{"id": A}, {"id": B}, named_like_an_id])

    def found(ref: str) -> str | None:
        rec = index.lookup(ref)
        return None if rec is None else str(rec["id"])

    assert found(A) == A  # an ID beats a name
    assert found("c") == C
    assert found("a") is None  # two IDs start with it
    assert found("ab") == B
    assert found("") is None and found("a b") is None
    for _ in range(5):  # later lookups go through the sorted index: same answers
        assert found("ab") == B and found("a") is None


def test_ids_that_are_not_strings_are_irregular() -> None:
    index = _load([{"id": 7}, {"names": ["no-id"]}])
    assert index.irregular
    assert index.lookup("7") == {"id": 7} and index.lookup("no-id") == {"names": ["no-id"]}
    with pytest.raises(ValueError, match="array of objects"):
        _load(["not an object"])  # type: ignore[list-item]


def test_made_records_carry_their_file_locations() -> None:
    index = RecordIndex.load([[{"id": A}], [{"id": C}]], lambda raw, loc: (raw["id"], loc),
                             [STABLE, VOLATILE])
    assert index.records == [(A, STABLE), (C, VOLATILE)]
    index.remove(index.records[0], A, [])
    index.add((B, STABLE), B, ["b"])
    assert index.lookup("b") == (B, STABLE) and index.lookup(A) is None


def test_read_records_treats_missing_and_empty_files_as_no_records(tmp_path: Any) -> None:
    (tmp_path / "empty.json").write_bytes(b" \n")
    (tmp_path / "null.json").write_bytes(b"null")
    (tmp_path / "bad.json").write_bytes(b"{}")
    import json

    paths = [str(tmp_path / n) for n in ("missing.json", "empty.json", "null.json")]
    assert read_records(paths, lambda data, path: json.loads(data)) == [[], [], []]
    with pytest.raises(ValueError, match=r"bad\.json.*expected a JSON array"):
        read_records([str(tmp_path / "bad.json")], lambda data, path: json.loads(data))


def test_image_digests_and_layer_chains_as_go() -> None:
    image: dict[str, Any] = {
        "big-data-digests": {"config": "sha256:c", "manifest-1": "sha256:m1", "manifest": "sha256:m0"}}
    assert image_digests(image) == ["sha256:m1", "sha256:m0"]
    assert image["digest"] == "sha256:m1"  # Go fills in the first when none was fixed
    parents = {"top": "mid", "mapped": "mid", "mid": "base", "base": ""}
    assert list(layer_chain(["top", "", "mapped"], parents.__getitem__)) == ["top", "mapped", "mid", "base"]


def _packed(records: list[dict[str, Any]]) -> PackedIndex:
    products = PackedIndex.pack(records)
    assert products is not None

    def read(name: str, start: int, end: int) -> bytes:
        return products[name][start:end]

    return PackedIndex(products[PackedIndex.IDS], products[PackedIndex.NAMES], read)


def test_the_packed_index_resolves_references_as_the_index_does() -> None:
    records: list[dict[str, Any]] = [
        {"id": A, "names": ["app:1", "ünï cödé", "tab-free"]}, {"id": B, "names": [C[:12]]},
        {"id": C, "names": []}, {"id": "short"}, {"id": "with space", "names": ["a b"]},
        {"id": "x\udcff", "names": ["n\ud800"]},  # surrogates: names from argv bytes, escapes
    ]
    assert plain_ids(records) is not None
    index, packed = _load([dict(r) for r in records]), _packed(records)
    refs = [A, B, C, "app:1", "ünï cödé", "tab-free", C[:12], "a", "ab", "c", "cc", "s", "short", "sh",
            "", " ", "with", "with space", "a b", "x", "x\udcff", "n\ud800", "n", "app", "app:1\t0",
            "a\tb", "\n", "0", "\t", "nosuch", A + "0", A[:-1]]
    for ref in refs:
        assert packed.lookup(ref) == index.lookup(ref), ref
        assert packed.get(ref) == index.get(ref), ref
    assert packed.record(3) == {"id": "short"}


@pytest.mark.parametrize("records", [
    [{"id": "a\tb"}], [{"id": "a\nb"}], [{"id": "a", "names": ["x\ty"]}], [{"id": "a", "names": ["\n"]}],
    [{"id": "a", "names": [1]}], [{"id": 5}],
])
def test_keys_the_lines_cannot_hold_are_not_packed(records: list[dict[str, Any]]) -> None:
    assert PackedIndex.pack(records) is None


def test_plain_ids_changes_nothing() -> None:
    older, newer = {"id": A, "names": ["n"]}, {"id": C, "names": ["n"]}
    assert plain_ids([older, newer]) is None
    assert older == {"id": A, "names": ["n"]}
    assert plain_ids([{"id": A}, {"id": A}]) is None and plain_ids([{"id": 1}]) is None
    assert plain_ids([{"id": A, "names": ["n"]}, {"id": C}]) == [A, C]


def test_layout_names_go_s_paths() -> None:
    layout = Layout("/g", "/r", "vfs", image_store="/i", transient=True,
                    additional_image_stores=["/ro"])
    assert (layout.storage_lock, layout.userns_lock, layout.driver_home) == (
        "/g/storage.lock", "/g/userns.lock", "/g/vfs")
    layers = layout.layers()
    assert (layers.directory, layers.lock) == ("/g/vfs-layers", "/g/vfs-layers/layers.lock")
    assert layers.json == ((STABLE, "/g/vfs-layers/layers.json"), (IMAGE_STORE, "/i/vfs-layers/layers.json"),
                           (VOLATILE, "/r/vfs-layers/volatile-layers.json"))
    assert (layout.mountpoints_json, layout.mountpoints_lock) == (
        "/r/vfs-layers/mountpoints.json", "/r/vfs-layers/mountpoints.lock")
    assert layers.tar_split_path(A) == f"/g/vfs-layers/{A}.tar-split.gz"
    [ro_layers] = layout.additional_layers()
    assert ro_layers.read_only and ro_layers.paths == ["/ro/vfs-layers/layers.json",
                                                       "/ro/vfs-layers/volatile-layers.json"]
    assert layout.images().paths == ["/i/vfs-images/images.json"]
    # The graph root's own images stay writable when images live in the image store.
    assert [(f.directory, f.read_only) for f in layout.additional_images()] == [
        ("/g/vfs-images", False), ("/ro/vfs-images", True)]
    containers = layout.containers()
    assert containers.lock == "/r/vfs-containers/containers.lock"
    assert containers.paths == ["/g/vfs-containers/containers.json",
                                "/r/vfs-containers/volatile-containers.json"]
    assert containers.big_data_path(C, "State") == f"/g/vfs-containers/{C}/=U3RhdGU="
    assert layout.container_dirs(C) == (f"/g/vfs-containers/{C}", f"/r/vfs-containers/{C}")
    assert layout.image_userdata("/r", A) == f"/r/vfs-images/{A}/userdata"
    assert big_data_file_name("manifest-sha256:abc") == "=bWFuaWZlc3Qtc2hhMjU2OmFiYw=="
    assert big_data_file_name("bad\udcff") == "=YmFk/w=="  # the key's bytes, as Go's
