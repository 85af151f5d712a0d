"""The configuration's files: where the shipped defaults live, how a TOML file is read, the error naming it.

Below :mod:`mltrade.config` (merging, validation) and :mod:`mltrade.config_sources` (where each value
came from), which both read files through here; ``mltrade.config`` keeps these names as its face.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

__all__ = ["PACKAGE_DIR", "DEFAULT_FILE", "CONFIG_D", "ConfigError", "read_toml"]

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_FILE = PACKAGE_DIR / "default_config.toml"
CONFIG_D = PACKAGE_DIR / "config.d"


class ConfigError(ValueError):
    """A configuration file or value that does not fit; the message names file and key."""


def read_toml(path: Path, error: type = ConfigError, what: str = "config file") -> dict:
    """Parse a TOML file; a missing or malformed file raises ``error`` naming the file (and the line)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from None
