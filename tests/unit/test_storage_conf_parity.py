"""storage.conf cases Go reads its own way: ``force_mask`` in both places it can be set (types
Go's TOML decoder refuses, with its text), ``driver_priority`` reaching the store, and
``additionallayerstores`` reaching the overlay driver (which refuses it, test_driver_choice.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from containers_storage.config import ConfigError, load_config_file
from containers_storage.drivers.overlay_options import parse_options


def _conf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "storage.conf"
    path.write_text(text)
    return str(path)


HEAD = '[storage]\ndriver = "overlay"\n'


def test_force_mask_integer_becomes_octal_the_driver_accepts(tmp_path: Path) -> None:
    path = _conf(tmp_path, HEAD + "[storage.options]\nforce_mask = 0o700\n")
    options = load_config_file(path, {}).driver_options
    # Once under the driver name as written, once from the overlay rules (Go 1.60 writes the
    # second one as "-rwx------", which its own driver then refuses; current Go writes octal).
    assert options == ["overlay.force_mask=700", "overlay.force_mask=700"]
    assert parse_options(options).force_mask == 0o700


@pytest.mark.parametrize(("value", "mask"), [('"0700"', 0o700), ('"755"', 0o755), ('"shared"', 0o755),
                                             ('"private"', 0o700)])
def test_force_mask_in_the_overlay_section_is_a_string(tmp_path: Path, value: str, mask: int) -> None:
    path = _conf(tmp_path, HEAD + f"[storage.options.overlay]\nforce_mask = {value}\n")
    options = load_config_file(path, {}).driver_options
    assert options == [f"overlay.force_mask={value.strip(chr(34))}"]
    assert parse_options(options).force_mask == mask


def test_the_overlay_section_wins_over_the_generic_force_mask(tmp_path: Path) -> None:
    path = _conf(tmp_path, HEAD + '[storage.options]\nforce_mask = 0o755\n'
                 '[storage.options.overlay]\nforce_mask = "private"\n')
    options = load_config_file(path, {}).driver_options
    assert options == ["overlay.force_mask=755", "overlay.force_mask=private"]
    assert parse_options(options).force_mask == 0o700  # the last one given counts, as in Go


@pytest.mark.parametrize(("text", "message"), [
    (HEAD + "\n[storage.options.overlay]\nforce_mask = 0o700\n",
     'toml: line 5 (last key "storage.options.overlay.force_mask"): incompatible types: TOML value has '
     "type int64; destination has type string"),
    (HEAD + '[storage.options]\nmountopt = "nodev"\nforce_mask = "0700"\n',
     'toml: line 5 (last key "storage.options.force_mask"): incompatible types: TOML value has type '
     "string; destination has type integer"),
    (HEAD + "[storage.options]\nforce_mask = true\n",
     'toml: line 4 (last key "storage.options.force_mask"): incompatible types: TOML value has type '
     "bool; destination has type integer"),
])
def test_force_mask_of_the_wrong_type_is_refused_as_go_does(tmp_path: Path, text: str, message: str) -> None:
    path = _conf(tmp_path, text)
    warnings: list[str] = []
    with pytest.raises(ConfigError) as e:
        load_config_file(path, {}, warnings.append)
    assert str(e.value) == message
    assert warnings == [f"Failed to read {path} {message}\n"]


def test_driver_priority_is_read(tmp_path: Path) -> None:
    path = _conf(tmp_path, '[storage]\ndriver_priority = ["btrfs", "vfs"]\n')
    warnings: list[str] = []
    opts = load_config_file(path, {}, warnings.append)
    assert (opts.driver_name, opts.driver_priority) == ("", ["btrfs", "vfs"])
    assert warnings == []  # a priority list is a choice: no "driver should be set" warning


def test_additional_layer_stores_reach_the_driver(tmp_path: Path) -> None:
    path = _conf(tmp_path, HEAD + '[storage.options]\nadditionallayerstores = ["/als:ref", "/other"]\n')
    assert load_config_file(path, {}).driver_options == [
        "overlay.additionallayerstore=/als:ref", "overlay.additionallayerstore=/other"]
