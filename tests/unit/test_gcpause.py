"""gcpause.Paused: the collector off inside, back as it was after, across nesting and threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from containers_storage.gcpause import Paused


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_nested_pauses_end_with_the_outermost() -> None:
    gc.enable()
    with Paused():
        assert not gc.isenabled()
        with Paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_turned_off_stays_off() -> None:
    gc.disable()
    with Paused():
        pass
    assert not gc.isenabled()


def test_an_exception_still_ends_the_pause() -> None:
    gc.enable()
    with pytest.raises(KeyError), Paused():
        raise KeyError("x")
    assert gc.isenabled()


def test_overlapping_pauses_in_two_threads() -> None:
    """The first thread out does not turn the collector on under the second."""
    gc.enable()
    inside, leave = threading.Event(), threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with Paused():
            inside.set()
            leave.wait(5)
            seen.append(gc.isenabled())

    t = threading.Thread(target=other)
    with Paused():
        t.start()
        inside.wait(5)
    assert not gc.isenabled()  # the other thread's pause goes on
    leave.set()
    t.join(5)
    assert seen == [False]
    assert gc.isenabled()
