"""The state directory: where mltrade keeps what it writes for itself (journal, logs, caches, models).

Default ``.mltrade`` in the working directory; ``$MLTRADE_STATE_DIR`` moves all of it. Every packaged
config default under ``.mltrade/`` follows it (:func:`relocate_defaults`); a path set in a config file
always wins. Reports a person reads (``reports/``) stay in the working directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STATE_ENV = "MLTRADE_STATE_DIR"
DEFAULT_STATE_DIR = ".mltrade"


def state_dir() -> Path:
    """``$MLTRADE_STATE_DIR`` (``~`` expanded) or ``.mltrade`` (relative to the working directory)."""
    env = os.environ.get(STATE_ENV, "").strip()
    return Path(os.path.expanduser(env)) if env else Path(DEFAULT_STATE_DIR)


def relocate(value: str) -> str:
    """``value`` with a leading ``.mltrade/`` replaced by :func:`state_dir` (other strings unchanged)."""
    if value == DEFAULT_STATE_DIR:
        return str(state_dir())
    prefix = DEFAULT_STATE_DIR + "/"
    if not value.startswith(prefix):
        return value
    return str(state_dir() / value[len(prefix):])


def relocate_defaults(cfg: Any) -> Any:
    """A copy of the config tree ``cfg`` with every string default under ``.mltrade/`` relocated."""
    if isinstance(cfg, dict):
        return {k: relocate_defaults(v) for k, v in cfg.items()}
    if isinstance(cfg, str):
        return relocate(cfg)
    return cfg


def in_state_dir(path: str | Path) -> bool:
    """Whether ``path`` lies inside :func:`state_dir`."""
    try:
        Path(path).resolve().relative_to(state_dir().resolve())
        return True
    except ValueError:
        return False
