"""Records serialize as Go's encoding/json does and keep what they do not understand."""

from __future__ import annotations

import orjson

from containers_storage.records import (
    Container,
    Image,
    Layer,
    big_data_file_name,
    dumps_records,
    format_time_ns,
    parse_time_ns,
)


def test_layer_field_order_and_omitempty() -> None:
    layer = Layer({
        "gidset": [0], "id": "a" * 64, "created": "2024-01-02T03:04:05.123456789Z",
        "names": [], "parent": "", "diff-size": 10, "diff-digest": "sha256:" + "b" * 64,
        "flags": {"z": 1, "a": True}, "compression": 0,
    })
    text = dumps_records([layer]).decode()
    assert text == (
        '[{"id":"' + "a" * 64 + '","created":"2024-01-02T03:04:05.123456789Z",'
        '"diff-digest":"sha256:' + "b" * 64 + '","diff-size":10,"gidset":[0],'
        '"flags":{"a":true,"z":1}}]'
    )


def test_unknown_keys_survive_a_round_trip() -> None:
    data = {"id": "c" * 64, "created": "2024-01-02T03:04:05Z", "future-field": {"x": [1, 2]}}
    out = orjson.loads(dumps_records([Layer(dict(data))]))
    assert out[0]["future-field"] == {"x": [1, 2]}


def test_container_always_has_image_and_layer() -> None:
    out = orjson.loads(dumps_records([Container({"id": "d" * 64})]))
    assert list(out[0]) == ["id", "image", "layer", "created"]
    assert out[0]["created"] == "0001-01-01T00:00:00Z"


def test_go_html_escaping_in_strings() -> None:
    image = Image({"id": "e" * 64, "metadata": "<a&b>\u2028", "created": "2024-01-02T03:04:05Z"})
    raw = dumps_records([image])
    assert b"\\u003ca\\u0026b\\u003e\\u2028" in raw
    assert orjson.loads(raw)[0]["metadata"] == "<a&b>\u2028"


def test_image_digests_follow_manifest_big_data() -> None:
    image = Image({"id": "f" * 64, "big-data-digests": {"manifest-sha256:1": "sha256:11",
                                                        "config": "sha256:22", "manifest": "sha256:33"}})
    image.recompute_digests()
    assert image.digest == "sha256:11"
    assert image.digests == ["sha256:11", "sha256:33"]


def test_big_data_file_names_match_go() -> None:
    assert big_data_file_name("manifest") == "manifest"
    assert big_data_file_name("sha256.abc") == "sha256.abc"
    assert big_data_file_name("manifest-sha256:abc") == "=bWFuaWZlc3Qtc2hhMjU2OmFiYw=="
    assert big_data_file_name("Config") == "=Q29uZmln"


def test_timestamps_keep_nanoseconds() -> None:
    ns = 1_700_000_000_123_456_789
    text = format_time_ns(ns)
    assert text == "2023-11-14T22:13:20.123456789Z"
    assert parse_time_ns(text) == ns
    assert format_time_ns(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert parse_time_ns("2023-11-14T23:13:20.5+01:00") == 1_700_000_000_500_000_000


def test_records_already_in_go_form_serialize_as_themselves_and_the_rest_are_rebuilt() -> None:
    canonical = {"id": "e" * 64, "names": ["n"], "created": "2024-01-02T03:04:05Z",
                 "diff-size": 3, "flags": {"a": 1, "b": 2}}
    layer = Layer(canonical)
    assert layer.to_json() is canonical  # nothing to rebuild
    # Each of these breaks Go's form in one way and must come out exactly as Go writes it.
    want = ('{"id":"' + "e" * 64 + '","names":["n"],"created":"2024-01-02T03:04:05Z",'
            '"diff-size":3,"flags":{"a":1,"b":2}}')
    variants = [
        {**canonical, "flags": {"b": 2, "a": 1}},  # map keys out of order (a set_flag)
        {"created": canonical["created"], **{k: v for k, v in canonical.items() if k != "created"}},
        {**canonical, "parent": ""},  # an empty omitempty field
        {k: v for k, v in canonical.items() if k != "diff-size"} | {"diff-size": 3, "parent": ""},
    ]
    for data in variants:
        rebuilt = Layer(data).to_json()
        assert rebuilt is not data
        assert dumps_records([Layer(data)]).decode() == "[" + want + "]"
    # A required field missing is filled in, not passed through.
    bare = {"id": "f" * 64}
    assert Layer(bare).to_json() == {"id": "f" * 64, "created": "0001-01-01T00:00:00Z"}
