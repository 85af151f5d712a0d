"""Where each configuration value comes from, and value checks that name that place.

``mltrade config show`` prints every value beside the file (or "command line") that set it; a value
that fails a check names its file, ``[section]`` and key and what was expected, before anything runs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from mltrade.config_files import CONFIG_D, DEFAULT_FILE, ConfigError, read_toml

Key = Tuple[str, str]   #: (section, key); nested tables as "strategy.params"


def layers(path: Optional[Union[str, Path]] = None, overrides: Optional[dict] = None) -> List[Tuple[dict, str]]:
    """The layers ``load_config`` merges, lowest first: ``[(table, source)]``."""
    out = [(read_toml(DEFAULT_FILE), str(DEFAULT_FILE))]
    if CONFIG_D.is_dir():
        out += [(read_toml(f), str(f)) for f in sorted(CONFIG_D.glob("*.toml"))]
    if path is not None:
        out.append((read_toml(Path(path)), str(path)))
    if overrides:
        out.append((overrides, "command line"))
    return out


def _flat(table: dict, prefix: str = "") -> Iterator[Tuple[Key, object]]:
    for k, v in table.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}.{k}" if prefix else k)
        else:
            yield (prefix, k), v


def sources(path: Optional[Union[str, Path]] = None, overrides: Optional[dict] = None) -> Dict[Key, str]:
    """``{(section, key): source}``: the last layer that set each value."""
    out: Dict[Key, str] = {}
    for table, src in layers(path, overrides):
        strat = table.get("strategy", {}) if isinstance(table.get("strategy"), dict) else {}
        if "name" in strat and src != str(DEFAULT_FILE):
            out = {k: v for k, v in out.items() if k[0] != "strategy.params"}   # as load_config drops them
        for key, _ in _flat(table):
            out[key] = src
    return out


def where(section: str, key: str, srcs: Dict[Key, str]) -> str:
    """``FILE [section] key`` (or ``--flag`` style for the command line)."""
    src = srcs.get((section, key), "defaults")
    return f"{src} [{section}] {key}" if src != "command line" else f"command line ({section}.{key})"


def locate(name: str, srcs: Dict[Key, str], user_only: bool = True) -> Optional[str]:
    """The place of the key called ``name`` (last component), preferring the user's file or flags."""
    defaults = {str(DEFAULT_FILE)} | {str(f) for f in CONFIG_D.glob("*.toml")}
    hits = [k for k in srcs if k[1] == name]
    mine = [k for k in hits if srcs[k] not in defaults]
    pick = mine or ([] if user_only else hits)
    return where(*pick[0], srcs) if len(pick) == 1 else None


#: value checks: (section, key) -> (test, what is expected)
CHECKS = {
    ("backtest", "cash"): (lambda v: v > 0, "a positive amount"),
    ("backtest", "interval"): (lambda v: v > 0, "a positive number of minutes"),
    ("product", "ratio"): (lambda v: v > 0, "a positive number (certificates per index point)"),
    ("product", "fx"): (lambda v: v > 0, "a positive number"),
    ("product", "spread"): (lambda v: v >= 0, "a non-negative number"),
    ("product", "barrier_step"): (lambda v: v >= 0, "a non-negative number of index points"),
    ("product", "barrier_buffer"): (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("broker", "commission_fixed"): (lambda v: v >= 0, "a non-negative amount"),
    ("broker", "commission_pct"): (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("strategy.params", "distance"): (lambda v: 0 < v < 1, "a fraction of the index in (0, 1), e.g. 0.04"),
    ("strategy.params", "stop"): (lambda v: 0 < v < 1, "a fraction of the entry price in (0, 1), e.g. 0.71"),
    ("strategy.params", "stake_fraction"): (lambda v: 0 < v <= 1, "a fraction of the account in (0, 1]"),
    ("strategy.params", "decision_bar"): (lambda v: v >= 1 and float(v).is_integer(), "a whole number of bars >= 1"),
}


def check_values(cfg: dict, srcs: Dict[Key, str]) -> None:
    """Raise :class:`ConfigError` naming file, section and key for the first value of :data:`CHECKS` that fails."""
    for (section, key), (ok, expected) in CHECKS.items():
        table = cfg
        for part in section.split("."):
            table = table.get(part, {}) if isinstance(table, dict) else {}
        if key not in table:
            continue
        v = table[key]
        good = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        try:
            good = good and bool(ok(v))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f"{where(section, key, srcs)}: expected {expected}, got {v!r}")
