"""A library's log records as details: passed on at DEBUG only, so our own lines tell the story at INFO.

asyncua logs every publish response at INFO, a warning for each value a server revises
and a traceback when a server goes away; with the gateway logging at INFO that is a
flood in which the one line a field engineer needs is lost. The level a library logs at
is not ours to change, so :func:`demote` takes its records off the normal path and hands
them on, re-levelled DEBUG, through one of our loggers: at INFO they vanish, with
``--log-level DEBUG`` (or a DEBUG root logger) every one of them is there, traceback
included, under the library's own logger name.
"""

from __future__ import annotations

import logging


class DebugOnly(logging.Handler):
    """Hands every record on at DEBUG through ``via`` (its handlers, then its ancestors')."""

    def __init__(self, via: logging.Logger) -> None:
        super().__init__(logging.NOTSET)
        self.via = via

    def emit(self, record: logging.LogRecord) -> None:
        if not self.via.isEnabledFor(logging.DEBUG):
            return
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        self.via.handle(record)


def demote(library: str, via: logging.Logger) -> None:
    """Make the ``library`` logger (and its children) speak at DEBUG only, through ``via``. Safe twice."""
    logger = logging.getLogger(library)
    if any(isinstance(h, DebugOnly) for h in logger.handlers):
        return
    logger.addHandler(DebugOnly(via))
    logger.propagate = False
