"""The run root's cache of parsed records files: used only for the exact bytes it was made from,
so every change to a store shows in the next listing, whoever made it and however small."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clitools import CLI, run_inprocess, run_script
from containers_storage import recordcache
from containers_storage.cli import main as cli_main
from containers_storage.gojson import go_form
from gocli import GO_CLI, go_cli

BIG = "m" * (recordcache.MIN_SIZE + 1000)  # one layer's metadata makes layers.json big enough


def _cache_dir(cli: CLI) -> Path:
    return Path(cli.run_root) / recordcache.CACHE_DIR


def _layers_file(cli: CLI) -> Path:
    return Path(cli.root) / "vfs-layers" / "layers.json"


def _fast_and_slow(cli: CLI, monkeypatch: pytest.MonkeyPatch, *argv: str) -> bytes:
    fast = run_script([*cli.globals, *argv])
    with monkeypatch.context() as m:
        m.setattr(cli_main, "_FAST", frozenset())
        m.setattr(cli_main, "_FAST_LOOKUPS", frozenset())
        slow = run_inprocess([*cli.globals, *argv])
    assert fast.code == slow.code == 0, (fast.err, slow.err)
    assert fast.raw == slow.raw, argv
    return fast.raw


def _big_store(cli: CLI) -> str:
    base = cli.ok("create-layer", "-n", "base").lines[0]
    cli.ok("set-metadata", "-m", BIG, base)
    assert _layers_file(cli).stat().st_size > recordcache.MIN_SIZE
    return base


def test_listing_follows_every_change(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    _big_store(cli_sub)
    first = _fast_and_slow(cli_sub, monkeypatch, "layers", "--json")
    cached = list(_cache_dir(cli_sub).iterdir())
    assert [p.name for p in cached] == [str(_layers_file(cli_sub)).replace("/", "%2F")]
    assert _fast_and_slow(cli_sub, monkeypatch, "layers", "--json") == first

    cli_sub.ok("create-layer", "-n", "second", "base")
    listed = json.loads(_fast_and_slow(cli_sub, monkeypatch, "layers", "--json"))
    assert [layer.get("names") for layer in listed] == [["base"], ["second"]]

    # A same-size edit in place, same mtime: only the bytes tell it apart.  (Not compared with
    # the in-process Store, which like Go's reloads only when a writer bumps the lock file.)
    path = _layers_file(cli_sub)
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b'"second"', b'"secont"'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    listed = json.loads(run_script([*cli_sub.globals, "layers", "--json"]).raw)
    assert [layer.get("names") for layer in listed] == [["base"], ["secont"]]
    assert b"secont" in run_script([*cli_sub.globals, "layers"]).raw
    assert run_script([*cli_sub.globals, "exists", "-l", "secont"]).code == 0
    assert run_script([*cli_sub.globals, "exists", "-l", "second"]).code == 1


def _plant(where: str, data: bytes, **products: object) -> None:
    """A cache entry for ``data`` holding ``products`` (as another process would have left it)."""
    entry = recordcache.Entry(data, where)
    for name, value in products.items():
        entry.put(name, value)
    entry.save()
    entry.close()


def test_a_hit_is_the_cached_parse(tmp_path: Path) -> None:
    """Proof that the cache is read at all: a marked entry for the same bytes comes back."""
    data = json.dumps([{"id": "a", "metadata": BIG}], separators=(",", ":")).encode()
    (tmp_path / "run").mkdir()
    where = str(tmp_path / "run" / recordcache.CACHE_DIR / "records")
    parsed = recordcache.parse(data, where)
    assert parsed.value == [{"id": "a", "metadata": BIG}] and parsed.go_form == "go"
    _plant(where, data, value=["marked"], form="other")
    hit = recordcache.parse(data, where)
    assert (hit.value, hit.go_form) == (["marked"], "other")
    # One byte different, same length: parsed afresh, and the entry replaced.
    other = data.replace(b'"a"', b'"b"')
    assert recordcache.parse(other, where).value == [{"id": "b", "metadata": BIG}]
    assert recordcache.parse(other, where).value == [{"id": "b", "metadata": BIG}]
    assert recordcache.parse(data, where).value == [{"id": "a", "metadata": BIG}]


def test_products_are_kept_read_apart_and_in_parts(tmp_path: Path) -> None:
    data = json.dumps([{"id": "a", "metadata": BIG}]).encode()
    where = str(tmp_path / "records")
    _plant(where, data, big=b"0123456789" * 1000, small={"k": [1, 2]})
    entry = recordcache.Entry(data, where)
    assert entry.get("missing") is recordcache.MISSING
    assert entry.holds_bytes("big") and not entry.holds_bytes("small") and not entry.holds_bytes("missing")
    assert entry.read("big", 5, 12) == b"5678901"
    with pytest.raises(ValueError):
        entry.read("big", 9990, 10010)  # past its end
    assert entry.get("small") == {"k": [1, 2]}
    entry.put("more", "text")
    entry.save()  # what was there stays, read or not
    entry.close()
    again = recordcache.Entry(data, where)
    assert (again.get("big"), again.get("small"), again.get("more")) == (b"0123456789" * 1000, {"k": [1, 2]},
                                                                         "text")
    again.close()
    # Another file's bytes see none of it.
    other = recordcache.Entry(data.replace(b'"a"', b'"b"'), where)
    assert other.get("big") is recordcache.MISSING
    other.close()


def test_small_files_keep_their_products_in_memory_only(tmp_path: Path) -> None:
    where = tmp_path / "records"
    entry = recordcache.Entry(b'[{"id":"a"}]', str(where))
    assert entry.value() == [{"id": "a"}] and entry.go_form is None
    entry.put("x", 1)
    entry.save()
    assert entry.get("x") == 1 and not where.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other-magic", "bad-form", "bad-table"])
def test_damaged_entries_are_ignored_and_replaced(tmp_path: Path, damage: str) -> None:
    data = json.dumps([{"id": "a", "metadata": BIG}]).encode()
    where = tmp_path / "records"
    recordcache.parse(data, str(where))
    blob = where.read_bytes()
    header = blob[:recordcache._HEADER + len(data)]
    if damage == "bad-form":
        _plant(str(where), data, value=["x"], form="yes")
    else:
        where.write_bytes({
            "truncated": blob[:-10],
            "garbage": header + bytes(range(256)) * 2,
            "empty": b"",
            "other-magic": b"X" + blob[1:],
            "bad-table": header + len(blob).to_bytes(8, "big") + blob[len(header) + 8:],
        }[damage])
    parsed = recordcache.parse(data, str(where))
    assert parsed.value == [{"id": "a", "metadata": BIG}]
    assert where.read_bytes() == blob


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the entry another owner")
def test_an_entry_owned_by_someone_else_is_not_read(tmp_path: Path) -> None:
    data = json.dumps([{"id": "a", "metadata": BIG}]).encode()
    where = tmp_path / "records"
    _plant(str(where), data, value=["planted"], form="go")
    os.chown(where, 4321, 4321)
    assert recordcache.parse(data, str(where)).value == [{"id": "a", "metadata": BIG}]


def test_an_unwritable_run_root_costs_only_time(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    _big_store(cli_sub)
    _cache_dir(cli_sub).write_text("a file where the cache directory would be")
    listed = json.loads(_fast_and_slow(cli_sub, monkeypatch, "layers", "--json"))
    assert listed[0]["metadata"] == BIG
    assert _cache_dir(cli_sub).is_file()


def test_small_files_are_not_cached(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_sub.ok("create-layer", "-n", "small")
    _fast_and_slow(cli_sub, monkeypatch, "layers", "--json")
    assert not _cache_dir(cli_sub).exists()


@pytest.mark.parametrize(("data", "form"), [
    (b'[{"id":"a","names":["x\\u003cy"]}]\n', "go"),
    (b'[{"id":"a","names":["x<y"]}]', "escape"),
    (b'[{"id":"a","names":["\\u2028\\u0001"]}]', "go"),
    (b'[{"id": "a"}]', "other"),
    (b'[{"id":"a\\/b"}]', "other"),
    (b'[{"id":"\\u00e9"}]', "other"),
    (b'{"id":"a"}', "other"),
])
def test_go_form(data: bytes, form: str) -> None:
    assert go_form(data) == form


@pytest.mark.compat
@pytest.mark.skipif(GO_CLI is None, reason="Debian's containers-storage (Go CLI) is not installed")
def test_go_writes_are_seen_and_go_ignores_the_cache(cli_sub: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _big_store(cli_sub)
    _fast_and_slow(cli_sub, monkeypatch, "layers", "--json")
    assert any(_cache_dir(cli_sub).iterdir())
    go_cli(cli_sub.root, cli_sub.run_root, "create-layer", "-n", "from-go", base)
    ours = _fast_and_slow(cli_sub, monkeypatch, "layers", "--json")
    assert ours == go_cli(cli_sub.root, cli_sub.run_root, "layers", "--json").stdout
    assert [layer.get("names") for layer in json.loads(ours)] == [["base"], ["from-go"]]
