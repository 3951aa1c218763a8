"""``contextmanager`` and a small ``ExitStack``, without importing ``contextlib``.

Every write command of the CLI takes locks through context managers, and ``contextlib`` (with the
``collections``/``functools`` it pulls in) costs several milliseconds of a ~20 ms start-up.  These
cover exactly what the store uses: generator-based managers, and entering a varying number of
managers that are left in reverse order.
"""

from __future__ import annotations

from . import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager as ContextManager
    from types import TracebackType
    from typing import ParamSpec, TypeVar

    P = ParamSpec("P")
    T = TypeVar("T")


class _GeneratorManager:
    """The generator runs up to its ``yield`` on enter and from there on exit."""

    __slots__ = ("_gen",)

    def __init__(self, gen: Iterator[object]) -> None:
        self._gen = gen

    def __enter__(self) -> object:
        try:
            return next(self._gen)
        except StopIteration:
            raise RuntimeError("generator didn't yield") from None

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> bool:
        gen = self._gen
        if value is None:
            try:
                next(gen)
            except StopIteration:
                return False
            raise RuntimeError("generator didn't stop")
        try:
            gen.throw(value)  # type: ignore[attr-defined]
        except StopIteration as e:
            return e is not value  # the generator swallowed the exception
        except BaseException as e:
            if e is value:
                return False  # re-raised as is: let the original traceback stand
            raise
        raise RuntimeError("generator didn't stop after throw()")


def contextmanager(func: Callable[P, Iterator[T]]) -> Callable[P, ContextManager[T]]:
    """``contextlib.contextmanager`` for generators that yield once."""

    def make(*args: P.args, **kwargs: P.kwargs) -> ContextManager[T]:
        return _GeneratorManager(func(*args, **kwargs))  # type: ignore[return-value]

    make.__name__ = func.__name__
    make.__doc__ = func.__doc__
    return make


class ExitStack:
    """Managers entered one by one and exited in reverse, each seeing the exception in flight.

    Unlike contextlib's, it never suppresses an exception: the store's managers are locks.
    """

    def __init__(self) -> None:
        self._exits: list[Callable[[type[BaseException] | None, BaseException | None,
                                    TracebackType | None], bool | None]] = []

    def enter_context(self, cm: ContextManager[T]) -> T:
        value = cm.__enter__()
        self._exits.append(cm.__exit__)
        return value

    def __enter__(self) -> ExitStack:
        return self

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        pending = value
        while self._exits:
            exit_ = self._exits.pop()
            try:
                exit_(type(pending) if pending else None, pending,
                      pending.__traceback__ if pending else None)
            except BaseException as e:  # later exits see the newer exception, as in contextlib
                if pending is not None and e is not pending:
                    e.__context__ = pending
                pending = e
        if pending is not None and pending is not value:
            raise pending
