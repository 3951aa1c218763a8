"""The public API as a Python user meets it: the package's exports, docstrings, keyword
arguments, results, record reprs, errors that are LookupErrors carrying the reference, and
open_store (storage.conf, overrides, context manager, user namespaces)."""

from __future__ import annotations

import inspect
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import containers_storage
from containers_storage import (
    NameOperation,
    PutLayerResult,
    Store,
    errors,
    open_store,
)
from containers_storage.records import Container, Image, Layer, Record

# The Store, the records and every class the package exports (the errors included).
PUBLIC_CLASSES: tuple[type, ...] = (Store, PutLayerResult, Record, Layer, Image, Container, NameOperation,
                                    *(obj for name in containers_storage.__all__
                                      if inspect.isclass(obj := getattr(containers_storage, name))))


def _lacking_docstrings(cls: type) -> list[str]:
    """Public methods and properties of ``cls`` (its own and inherited ones of ours) whose
    definition has no docstring of its own.  ``__init__`` is left out: the class docstring
    documents the constructor (as the API reference shows it)."""
    lacking: list[str] = []
    for name in sorted(dir(cls)):
        if name.startswith("_") and name not in ("__enter__", "__exit__", "__repr__"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not owner.__module__.startswith("containers_storage"):
            continue  # object's, Enum's, str's
        attr = vars(owner)[name]
        if isinstance(attr, classmethod | staticmethod):
            attr = attr.__func__
        documentable = isinstance(attr, property) or inspect.isfunction(attr)
        if documentable and not (attr.__doc__ or "").strip():
            lacking.append(f"{owner.__name__}.{name}")
    return lacking


def test_every_public_method_has_a_docstring() -> None:
    lacking = sorted({m for cls in PUBLIC_CLASSES for m in _lacking_docstrings(cls)})
    assert lacking == []


def test_every_export_and_error_class_has_a_docstring() -> None:
    lacking = [name for name in containers_storage.__all__
               if not (getattr(containers_storage, name).__doc__ or "").strip()]
    lacking += [name for name in errors.__all__ if not (getattr(errors, name).__doc__ or "").strip()]
    assert lacking == []


def test_the_package_exports_lazily_what_all_lists() -> None:
    assert sorted(containers_storage.__all__) == sorted(containers_storage._EXPORTS)
    for name in containers_storage.__all__:
        assert getattr(containers_storage, name) is not None
    assert set(containers_storage.__all__) <= set(dir(containers_storage))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        containers_storage.nothing  # noqa: B018
    # Importing the package (every CLI call does) loads none of the modules it exports from.
    code = ("import sys, containers_storage; "
            "print(sorted(m for m in sys.modules if m.startswith('containers_storage.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_modules_list_what_they_export() -> None:
    import importlib

    for module in ("store", "errors", "records", "nameops", "config", "idtools", "userns",
                   "autouserns", "check"):
        mod = importlib.import_module(f"containers_storage.{module}")
        assert mod.__all__, module
        for name in mod.__all__:
            assert hasattr(mod, name), (module, name)


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def test_put_layer_says_what_it_made(store: Store) -> None:
    diff = _tar({"f": b"data"})
    made = store.put_layer(diff, names=["base"])
    assert isinstance(made, PutLayerResult)
    assert made.size == len(diff.getvalue())
    assert made.layer.names == ["base"]
    empty = store.put_layer(parent="base")
    assert empty.size is None  # no diff (Go's -1)
    assert empty.layer.parent == made.layer.id
    assert repr(empty) == f"PutLayerResult(layer={empty.layer!r}, size=None)"


def test_store_methods_take_keywords_with_none_for_unset(store: Store) -> None:
    layer = store.create_layer(id=None, parent=None, names=None, mount_label=None)
    image = store.create_image(layer.id, names=["img"], metadata=None, digest=None)
    ctr = store.create_container("img", id=None, names=["c"], layer=None, metadata="m")
    assert (ctr.image, ctr.metadata, image.top_layer) == (image.id, "m", layer.id)
    # Go's positional order is gone: an old-style call fails loudly instead of misreading.
    with pytest.raises(TypeError):
        store.create_layer("", "")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        store.diff("", layer.id, io.BytesIO())  # type: ignore[call-arg, arg-type]


def test_records_print_their_kind_short_id_and_names(store: Store) -> None:
    layer = store.create_layer(names=["base", "other"])
    image = store.create_image(layer.id)
    assert repr(layer) == f"<Layer {layer.id[:12]} names=['base', 'other']>"
    assert repr(image) == f"<Image {image.id[:12]}>"
    assert repr(store).startswith(f"Store(graph_root={store.graph_root!r}, ")


@pytest.mark.parametrize("operation", [*NameOperation, "add"])
def test_name_operations(store: Store, operation: NameOperation | str) -> None:
    layer = store.create_layer(names=["a", "b"])
    store.update_names(layer.id, ["c", "a"], operation)
    expected = {"set": ["c", "a"], "add": ["c", "a", "b"], "remove": ["b"]}[str(operation)]
    assert store.names(layer.id) == expected


def test_name_operations_are_the_strings_go_uses(store: Store) -> None:
    assert [str(op) for op in NameOperation] == ["set", "add", "remove"]
    assert NameOperation("add") is NameOperation.ADD
    with pytest.raises(ValueError, match="invalid update name operation"):
        store.update_names("x", [], "rename")


def test_unknown_references_raise_lookup_errors_that_carry_them(store: Store) -> None:
    cases: list[tuple[type[errors.NotKnown], object, str]] = [
        (errors.LayerUnknown, lambda: store.layer("no-layer"), "layer not known"),
        (errors.ImageUnknown, lambda: store.image("no-image"),
         'locating image with ID "no-image": image not known'),
        (errors.ContainerUnknown, lambda: store.container("no-ctr"), "container not known"),
        (errors.NotALayer, lambda: store.delete_layer("no-layer"), "identifier is not a layer"),
        (errors.NotAnImage, lambda: store.delete_image("no-image"), "identifier is not an image"),
        (errors.NotAContainer, lambda: store.delete_container("no-ctr"),
         "identifier is not a container"),
        (errors.NotAnID, lambda: store.metadata("nothing"),
         "identifier is not a layer, image, or container"),
        (errors.LayerUnknown, lambda: store.create_layer(parent="no-parent"), "layer not known"),
    ]
    for kind, call, text in cases:
        with pytest.raises(kind) as info:
            call()  # type: ignore[operator]
        assert isinstance(info.value, LookupError) and isinstance(info.value, errors.StorageError)
        assert str(info.value) == text  # Go's text, which the CLI prints
        assert (info.value.ref is not None and info.value.ref.startswith("no")) or \
            info.value.ref == "nothing", (kind, info.value.ref)


def test_a_missing_big_data_item_names_the_record_and_the_key(store: Store) -> None:
    image = store.create_image(store.create_layer().id)
    with pytest.raises(errors.BigDataUnknown) as info:
        store.image_big_data(image.id, "manifest")
    assert (info.value.ref, info.value.key) == (image.id, "manifest")
    assert str(info.value).endswith("(consider removing the image to resolve the issue): file does not exist")
    assert isinstance(info.value, LookupError)


def test_other_errors_are_storage_errors_but_not_lookup_errors(store: Store) -> None:
    store.create_layer(names=["same"], id="a" * 64)
    with pytest.raises(errors.DuplicateID) as info:
        store.create_layer(id="a" * 64)
    assert isinstance(info.value, errors.StorageError) and not isinstance(info.value, LookupError)


def test_errors_pickle_with_their_reference() -> None:
    import pickle

    e = errors.ImageUnknown.after('locating image with ID "x"', ref="x")
    again = pickle.loads(pickle.dumps(e))
    assert (type(again), str(again), again.ref) == (errors.ImageUnknown, str(e), "x")


def test_store_is_a_context_manager_that_closes(tmp_path: Path) -> None:
    def reopen() -> Store:
        return open_store(graph_root=tmp_path / "root", run_root=tmp_path / "run", driver="vfs",
                          use_config=False)

    with reopen() as s:
        assert reopen() is s  # one per process
        s.create_layer(names=["kept"])
    with reopen() as again:
        assert again is not s  # closing forgot the handle; the store on disk stays
        assert [layer.names for layer in again.layers()] == [["kept"]]
        again.free()  # Go's name for close()
        assert reopen() is not again


def test_open_store_without_roots_or_config_is_refused() -> None:
    with pytest.raises(errors.IncompleteOptions):
        open_store(use_config=False, driver="vfs")


def _write_conf(path: Path, graph: Path, run: Path, driver: str, extra: str = "") -> None:
    path.write_text(f'[storage]\ndriver = "{driver}"\ngraphroot = "{graph}"\nrunroot = "{run}"\n{extra}')


def test_open_store_opens_what_storage_conf_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "storage.conf"
    _write_conf(conf, tmp_path / "graph", tmp_path / "run", "vfs")
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    monkeypatch.delenv("STORAGE_DRIVER", raising=False)
    monkeypatch.delenv("STORAGE_OPTS", raising=False)
    with open_store() as s:
        assert (s.graph_root, s.run_root, s.driver_name) == (str(tmp_path / "graph"), str(tmp_path / "run"),
                                                              "vfs")
        assert s.options.config_file == str(conf)


def test_open_store_arguments_override_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The configuration's driver options are overlay's; naming another driver (or root) drops
    # them, as podman's --storage-driver and --root do, so that vfs does not refuse them.
    conf = tmp_path / "storage.conf"
    _write_conf(conf, tmp_path / "graph", tmp_path / "run", "overlay",
                '[storage.options.overlay]\nmountopt = "nodev"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    monkeypatch.delenv("STORAGE_DRIVER", raising=False)
    monkeypatch.delenv("STORAGE_OPTS", raising=False)
    with open_store(graph_root=tmp_path / "mine", driver="vfs", transient=True) as s:
        assert (s.graph_root, s.run_root, s.driver_name) == (str(tmp_path / "mine"), str(tmp_path / "run"),
                                                              "vfs")
        assert s.options.driver_options == [] and s.transient
        s.create_layer()  # the driver is set up
    with open_store(graph_root=tmp_path / "mine", driver="vfs",
                    driver_options=["vfs.ignore_chown_errors=true"]) as s:
        assert s.options.driver_options == ["vfs.ignore_chown_errors=true"]


def test_open_store_lists_additional_image_stores(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    with open_store(graph_root=shared, run_root=tmp_path / "run-shared", driver="vfs",
                    use_config=False) as ro:
        ro.create_image(ro.create_layer().id, names=["shared/image"])
    with open_store(graph_root=tmp_path / "root", run_root=tmp_path / "run", driver="vfs",
                    additional_image_stores=[shared], use_config=False) as s:
        (image,) = s.images()
        assert image.names == ["shared/image"] and image.read_only
        ctr = s.create_container("shared/image")
        assert ctr.image == image.id


@pytest.mark.parametrize("enter", [True, False])
def test_open_store_enters_a_user_namespace_only_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enter: bool) -> None:
    from containers_storage import userns

    entered: list[bool] = []
    monkeypatch.setattr(userns, "needs_user_namespace", lambda: True)  # a rootless caller
    def fake_enter() -> bool:
        entered.append(True)
        return True

    monkeypatch.setattr(userns, "enter_user_namespace", fake_enter)
    with open_store(graph_root=tmp_path / "root", run_root=tmp_path / "run", driver="vfs",
                    use_config=False, enter_user_namespace=enter):
        pass
    assert entered == ([True] if enter else [])


def test_the_user_namespace_error_says_how_to_enter_one() -> None:
    from containers_storage.userns import UserNamespaceRequired

    text = str(UserNamespaceRequired("mounting"))
    assert "open_store(enter_user_namespace=True)" in text and "enter_user_namespace()" in text


def test_open_store_takes_path_like_roots(tmp_path: Path) -> None:
    with open_store(graph_root=tmp_path / "r", run_root=os.fspath(tmp_path / "s"), driver="vfs",
                    use_config=False) as s:
        assert s.graph_root == str(tmp_path / "r")
