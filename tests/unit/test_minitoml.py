"""minitoml, the start-up fast path for storage.conf, against tomllib: same result or a refusal."""

from __future__ import annotations

import glob
import random
import tomllib
from pathlib import Path

import pytest

from containers_storage import minitoml


def _reference(text: str) -> dict[str, object] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def _same_or_declined(text: str) -> dict[str, object] | None:
    ours = minitoml.loads(text)
    if ours is not None:
        assert ours == _reference(text), text  # accepted: must be exactly tomllib's answer
        assert _types(ours) == _types(_reference(text)), text
    return ours


def _types(value: object) -> object:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


STORAGE_CONF = r'''
# A storage.conf as distributions ship it.
[storage]

# Default Storage Driver, Must be set for proper operation.
driver = "overlay"   # trailing comment
runroot = "/run/containers/storage"
graphroot = '/var/lib/containers/storage'
rootless_storage_path = "$HOME/.local/share/containers/storage"
transient_store = false

[storage.options]
additionalimagestores = [
  "/ro/one",   # comment in an array
  '/ro/two',
]
pull_options = {enable_partial_images = "false", use_hard_links = "false", ostree_repos=""}
remap-uids = "0:1668442479:65536"
root-auto-userns-user = "storage"
auto-userns-min-size = 1_024
auto-userns-max-size = 0x10000
force_mask = 0o700

[storage.options.overlay]
mountopt = "nodev,metacopy=on"
ignore_chown_errors = "true"
"quoted key" = "tab\there \u00e9 \"q\" \\"

[storage.options.thinpool]
# empty
[ "spaced" . 'header' ]
list = [[1, 2], ["a"], [], true, -7, +3]
'''


def test_a_realistic_file_is_parsed_by_the_fast_path() -> None:
    assert _same_or_declined(STORAGE_CONF) is not None


@pytest.mark.parametrize("path", sorted(glob.glob("/usr/share/containers/*.conf")
                                        + glob.glob("/etc/containers/*.conf")))
def test_installed_config_files(path: str) -> None:
    text = Path(path).read_text()
    if _reference(text) is None:
        pytest.skip(f"{path} is not valid TOML")
    _same_or_declined(text)


@pytest.mark.parametrize("text", [
    'a.b = 1', 'a = """x"""', "a = '''x'''", "a = 1.5", "a = 1979-05-27", "[[t]]\nx = 1",
    "a = inf", "a = 1e3", 'a = "x" "y"', "a = [1 2]", "a = {x = 1,}", "a = {x = 1\n}",
    "[a]\n[a]", "a = 1\na = 2", "[a]\nb = 1\n[a.b]", "a = {}\n[a]", "a = 01", "a = 0X1",
    "a = 1__0", "a = _1", "a = 'x\ny'", 'a = "\\q"', 'a = "\\ud800"', "a = 1\rb = 2",
    "a =", "= 1", "[a", "a = [", 'a = "x', "a = tru", "a = 0x", "a = +0x1", "\ufeffa = 1",
    "a = 1 # \x01", "k\u00e9 = 1", "a = " + "[" * 5000 + "]" * 5000,
])
def test_outside_the_subset_is_declined_or_matches(text: str) -> None:
    _same_or_declined(text)


def test_declined_cases_really_are_declined() -> None:
    for text in ('a.b = 1', 'a = """x"""', "a = 1.5", "[[t]]\nx = 1", "a = 01", "[a]\n[a]"):
        assert minitoml.loads(text) is None, text


def _random_doc(rng: random.Random) -> str:
    atoms = ['"s"', "'lit'", "1", "-2", "0o17", "0xff", "0b1", "true", "false", '"\\u00e9"',
             "1_000", '"a\\"b"', "''", '""', "[]", "[1, 2,]", '["x", [true]]', "{}", '{a = 1, b = "c"}']
    keys = ["a", "b", "x-y", "k_1", '"q k"', "'lit k'", "1", "true"]
    noise = ["", " ", "\t", " # c", "#", " #\t"]
    lines = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        if kind < 0.2:
            lines.append(f"[{rng.choice(keys)}{rng.choice(['', '.' + rng.choice(keys)])}]{rng.choice(noise)}")
        elif kind < 0.3:
            lines.append(rng.choice(noise))
        else:
            lines.append(f"{rng.choice(keys)}{rng.choice(['', ' '])}={rng.choice(['', ' '])}"
                         f"{rng.choice(atoms)}{rng.choice(noise)}")
    return rng.choice(["\n", "\r\n"]).join(lines) + rng.choice(["", "\n"])


def test_random_documents_and_mutations() -> None:
    rng = random.Random(20261207)
    accepted = 0
    for _ in range(3000):
        text = _random_doc(rng)
        if _same_or_declined(text) is not None:
            accepted += 1
        if text:
            i = rng.randrange(len(text))
            mutated = text[:i] + rng.choice(["", "[", "]", "=", '"', "'", ",", "\n", ".", "#", "{", "}"]) \
                + text[i + rng.randint(0, 2):]
            _same_or_declined(mutated)
    assert accepted > 300  # the generator really exercises the fast path


def test_load_file_falls_back_to_tomllib(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('a.b = 1\n[t]\nx = 1.5\n')
    assert minitoml.load_file(str(path)) == {"a": {"b": 1}, "t": {"x": 1.5}}
    path.write_text('a = [1 2]\n')
    with pytest.raises(tomllib.TOMLDecodeError):
        minitoml.load_file(str(path))
