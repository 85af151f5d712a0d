"""Records for the live log file only, for what the command line already says once on its own.

An error the CLI prints (``mltrade: error: ...``) or a refusal it sums up at the end goes to the live
log file (:func:`mltrade.live.runner.setup_logging`) through :func:`file_only`, not to stderr again.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("mltrade.live")


class LiveLogFile(logging.FileHandler):
    """The live run's log file handler (the one :func:`file_only` writes to)."""


def file_only(level: int, msg: str, *args: Any) -> None:
    """Log ``msg % args`` at ``level`` to the live log file(s) of ``mltrade.live`` only (none: dropped)."""
    if not log.isEnabledFor(level):
        return
    record = log.makeRecord(log.name, level, "(live)", 0, msg, args, None)
    if not log.filter(record):         # the logger's SecretFilter masks typed secrets
        return
    for h in log.handlers:
        if isinstance(h, LiveLogFile) and level >= h.level:
            h.handle(record)
