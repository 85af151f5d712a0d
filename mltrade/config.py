"""One TOML configuration for every command: defaults, user overrides, validation.

Defaults come from ``mltrade/default_config.toml`` plus every file in
``mltrade/config.d/`` (one per capability). A user file overrides any subset;
unknown sections or keys, and values of the wrong type, are rejected with the
file, the key and what was expected.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional, Union

# the files and their errors live one room down, in config_files, so that config_sources (which
# load_config calls to check values) needs nothing from here: no import circle
from mltrade.config_files import CONFIG_D, DEFAULT_FILE, PACKAGE_DIR, ConfigError, read_toml  # noqa: F401

#: tables whose keys are free-form (checked later by their consumer)
FREE_TABLES = {"strategy.params"}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def default_config() -> dict:
    """The documented defaults: default_config.toml merged with config.d/*.toml."""
    cfg = read_toml(DEFAULT_FILE)
    if CONFIG_D.is_dir():
        for extra in sorted(CONFIG_D.glob("*.toml")):
            cfg = _merge(cfg, read_toml(extra))
    from mltrade.state import relocate_defaults
    return relocate_defaults(cfg)      # `.mltrade/...` defaults follow $MLTRADE_STATE_DIR


def _validate(user: dict, defaults: dict, source: str, prefix: str = "") -> None:
    for key, value in user.items():
        name = f"{prefix}{key}"
        if prefix.rstrip(".") in FREE_TABLES:
            continue
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "(none)"
            where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
            raise ConfigError(f"{source}: unknown key '{name}'; valid keys in {where}: {valid}")
        ref = defaults[key]
        if isinstance(ref, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{name}' must be a table, got {value!r}")
            _validate(value, ref, source, f"{name}.")
        elif not _same_type(ref, value):
            raise ConfigError(f"{source}: '{name}' expects {type(ref).__name__} "
                              f"(default {ref!r}), got {value!r}")


def _same_type(ref, value) -> bool:
    if isinstance(ref, bool) or isinstance(value, bool):
        return isinstance(ref, bool) and isinstance(value, bool)
    if isinstance(ref, (int, float)):
        return isinstance(value, (int, float))
    if ref is None:
        return True
    return isinstance(value, type(ref))


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[dict] = None,
                check: bool = True) -> dict:
    """Defaults, then the user file at ``path``, then ``overrides`` (e.g. from CLI flags); validated
    (``check=False``: keys and types only, not the values' ranges — for ``mltrade config show``)."""
    defaults = default_config()
    cfg = defaults
    layers = []
    if path is not None:
        layers.append((read_toml(Path(path)), str(path)))
    if overrides:
        layers.append((overrides, "command line"))
    for layer, source in layers:
        _validate(layer, defaults, source)
        strat = layer.get("strategy", {})
        if "name" in strat and strat["name"] != cfg["strategy"]["name"]:
            # another strategy: the previous strategy's parameters do not apply to it
            cfg["strategy"]["params"] = {}
        cfg = _merge(cfg, layer)
    if layers and check:   # values the user set: checked here, so a bad one names its file before anything runs
        from mltrade.config_sources import check_values, sources
        check_values(cfg, sources(path, overrides))
    return cfg
