"""ctx.contextmanager and ctx.ExitStack must behave as contextlib's do for the store's locks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from containers_storage.ctx import ExitStack, contextmanager


def test_generator_runs_around_the_body() -> None:
    events: list[str] = []

    @contextmanager
    def held(name: str) -> Iterator[str]:
        events.append("enter " + name)
        try:
            yield name.upper()
        finally:
            events.append("exit " + name)

    with held("a") as value:
        events.append("body " + value)
    assert events == ["enter a", "body A", "exit a"]
    assert held.__name__ == "held"


def test_exception_reaches_the_generator_and_propagates() -> None:
    seen: list[BaseException] = []

    @contextmanager
    def watch() -> Iterator[None]:
        try:
            yield
        except KeyError as e:
            seen.append(e)
            raise

    with pytest.raises(KeyError, match="boom"), watch():
        raise KeyError("boom")
    assert len(seen) == 1


def test_generator_may_swallow_or_replace_an_exception() -> None:
    @contextmanager
    def swallow() -> Iterator[None]:
        try:
            yield
        except ValueError:
            pass

    with swallow():
        raise ValueError("gone")

    @contextmanager
    def translate() -> Iterator[None]:
        try:
            yield
        except ValueError as e:
            raise RuntimeError("translated") from e

    with pytest.raises(RuntimeError, match="translated"), translate():
        raise ValueError("x")


def test_generator_that_does_not_yield_or_yields_twice_is_an_error() -> None:
    @contextmanager
    def never() -> Iterator[None]:
        if False:
            yield

    with pytest.raises(RuntimeError, match="didn't yield"), never():
        pass

    @contextmanager
    def twice() -> Iterator[None]:
        yield
        yield

    with pytest.raises(RuntimeError, match="didn't stop"), twice():
        pass


class _Recorder:
    def __init__(self, name: str, log: list[str], fail_on_exit: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail_on_exit

    def __enter__(self) -> str:
        self.log.append("+" + self.name)
        return self.name

    def __exit__(self, typ: object, value: BaseException | None, tb: object) -> None:
        self.log.append(f"-{self.name}:{type(value).__name__ if value else ''}")
        if self.fail:
            raise OSError("exit of " + self.name)


def test_exit_stack_leaves_in_reverse_order() -> None:
    log: list[str] = []
    with ExitStack() as stack:
        assert stack.enter_context(_Recorder("a", log)) == "a"
        stack.enter_context(_Recorder("b", log))
    assert log == ["+a", "+b", "-b:", "-a:"]


def test_exit_stack_passes_the_exception_to_every_exit() -> None:
    log: list[str] = []
    with pytest.raises(KeyError), ExitStack() as stack:
        stack.enter_context(_Recorder("a", log))
        stack.enter_context(_Recorder("b", log))
        raise KeyError("k")
    assert log == ["+a", "+b", "-b:KeyError", "-a:KeyError"]


def test_exit_stack_failing_exit_still_runs_the_rest_and_raises_the_newest() -> None:
    log: list[str] = []
    with pytest.raises(OSError, match="exit of b") as info, ExitStack() as stack:
        stack.enter_context(_Recorder("a", log))
        stack.enter_context(_Recorder("b", log, fail_on_exit=True))
        raise KeyError("k")
    assert log == ["+a", "+b", "-b:KeyError", "-a:OSError"]
    assert isinstance(info.value.__context__, KeyError)
