"""A logger made on its first message.

``logging`` costs ~10 ms of a CLI call's start-up (it imports threading, traceback, string,
weakref...), and the archive engine logs only about odd input; most runs log nothing.
"""

from __future__ import annotations

from . import TYPE_CHECKING

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable


# A program that shows messages itself sets this (the CLI prints them as Go's logrus lines): it
# then receives (level, formatted message) for warnings and errors, and ``logging`` is not used.
sink: Callable[[str, str], None] | None = None


class LazyLogger:
    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: logging.Logger | None = None

    def _get(self) -> logging.Logger:
        if self._logger is None:
            import logging

            self._logger = logging.getLogger(self._name)
        return self._logger

    def debug(self, msg: str, *args: object) -> None:
        self._get().debug(msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self._get().info(msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        if sink is not None:
            sink("warning", msg % args if args else msg)
            return
        self._get().warning(msg, *args)

    def error(self, msg: str, *args: object) -> None:
        if sink is not None:
            sink("error", msg % args if args else msg)
            return
        self._get().error(msg, *args)
