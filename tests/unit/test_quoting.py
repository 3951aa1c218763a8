"""``go_quote`` is Go's strconv.Quote (what ``%q`` prints): one function for every error text
that quotes a name, a key or a path, so ours read as Go's do byte for byte."""

from __future__ import annotations

import pytest

from containers_storage.quoting import go_quote


@pytest.mark.parametrize(("value", "quoted"), [
    ("plain", '"plain"'),
    ("", '""'),
    ('say "hi" \\o/', '"say \\"hi\\" \\\\o/"'),
    # Controls with a short escape, then the others as \xNN (not \u00NN, which Go never writes
    # for them), DEL included.
    ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
    ("a\x01b\x1f\x7f", '"a\\x01b\\x1f\\x7f"'),
    # Printable runes stay as they are, however far from ASCII.
    ("héllo 日本 ☃ \U0001f600", '"héllo 日本 ☃ \U0001f600"'),
    # Unprintable ones: C1 controls, spaces other than ' ', format characters, unassigned.
    ("\x85\xa0\u2028\u200b\ufeff", '"\\u0085\\u00a0\\u2028\\u200b\\ufeff"'),
    ("\U000e0001\U0010ffff", '"\\U000e0001\\U0010ffff"'),
    # Bytes that are not UTF-8 (from argv or file names, as surrogate escapes), each as \xNN.
    ("bad\udcff\udcc3", '"bad\\xff\\xc3"'),
    (b"bad\xff", '"bad\\xff"'),
    (b"\xed\xa0\x80", '"\\xed\\xa0\\x80"'),  # an encoded surrogate is not UTF-8 to Go
    ("\ud800", '"\\xed\\xa0\\x80"'),  # nor is a lone surrogate in a str
    ("caf\u00e9".encode(), '"café"'),
])
def test_go_quote_is_strconv_quote(value: str | bytes, quoted: str) -> None:
    assert go_quote(value) == quoted


def test_store_errors_quote_as_go(tmp_path: object) -> None:
    """The store quoted control characters as \\u0001 where Go writes \\x01."""
    from pathlib import Path

    from containers_storage import errors
    from containers_storage.config import StoreOptions
    from containers_storage.store import get_store

    root = Path(str(tmp_path))
    store = get_store(StoreOptions(graph_root=str(root / "root"), run_root=str(root / "run"),
                                   driver_name="vfs"))
    try:
        layer = store.create_layer()
        with pytest.raises(errors.StorageError) as info:
            store.layer_big_data(layer.id, "a\x01b\udcff\t")
        assert str(info.value) == (f'locating item named "a\\x01b\\xff\\t" for layer with ID '
                                   f'"{layer.id}": file does not exist')
    finally:
        store.close()
