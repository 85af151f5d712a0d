"""Check a live run's whole setup before anything is written, a browser started or a venue contacted.

:func:`validate_live` checks the ``[live]`` numbers and choices, the risk limits, the strategy's
parameters as the run will use them (stake, fractions, stops in (0, 1) or explicitly off, barrier
distances) and, for a venue, its profile with every selector parsed as CSS
(:func:`css_syntax_error`). Each error names the file, the section and the key
(:class:`LiveConfigError`, a ``ValueError``).
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Iterable, List, Optional

_IDENT = r"-?(?:[_a-zA-Z\u00a0-\uffff]|\\.)(?:[-_a-zA-Z0-9\u00a0-\uffff]|\\.)*"
_STRING = r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'"
_ATTR = re.compile(rf"\[\s*(?:{_IDENT}|\*)?\|?{_IDENT}\s*(?:(?:[~|^$*]?=)\s*(?:{_IDENT}|{_STRING}|-?\d+)"
                   rf"\s*(?:[iIsS]\s*)?)?\]")
_SIMPLE = re.compile(rf"#{_IDENT}|\.{_IDENT}|::?{_IDENT}")
_TYPE = re.compile(rf"(?:{_IDENT}|\*)(?:\|(?:{_IDENT}|\*))?")


class LiveConfigError(ValueError):
    """A live setting out of range; the message names the file, the section and the key."""


def css_syntax_error(selector: str) -> Optional[str]:
    """Why ``selector`` is not valid CSS selector syntax (Selectors Level 4 subset), or None if it is."""
    s = selector.strip()
    if not s:
        return "empty selector"
    i, n = 0, len(s)
    expect_compound = True
    while i < n:
        if expect_compound:
            start = i
            m = _TYPE.match(s, i)
            if m:
                i = m.end()
            while i < n:
                if s[i] == "[":
                    m = _ATTR.match(s, i)
                    if not m:
                        return f"bad attribute selector at position {i}: {s[i:i + 20]!r}"
                    i = m.end()
                    continue
                m = _SIMPLE.match(s, i)
                if not m:
                    break
                i = m.end()
                if s[m.start()] == ":" and i < n and s[i] == "(":   # :not(...), :nth-child(2n+1)
                    depth, j = 0, i
                    while j < n:
                        if s[j] == "(":
                            depth += 1
                        elif s[j] == ")":
                            depth -= 1
                            if depth == 0:
                                break
                        j += 1
                    if depth:
                        return f"unbalanced parenthesis after {s[m.start():i]!r}"
                    inner = s[i + 1:j].strip()
                    if not inner:
                        return f"empty argument of {s[m.start():i]!r}"
                    if s[m.start():i].lstrip(":") in ("not", "is", "where", "has"):
                        err = css_syntax_error(inner.lstrip("+>~ "))
                        if err:
                            return f"inside {s[m.start():i]}(): {err}"
                    i = j + 1
            if i == start:
                return f"unexpected {s[i]!r} at position {i}"
            expect_compound = False
            continue
        j = i
        while j < n and s[j] in " \t\n":
            j += 1
        if j >= n:
            break
        if s[j] in ">+~,":
            i = j + 1
            while i < n and s[i] in " \t\n":
                i += 1
            if i >= n:
                return f"selector ends after {s[j]!r}"
            expect_compound = True
        elif j > i:                        # a descendant combinator (white space)
            i = j
            expect_compound = True
        else:
            return f"unexpected {s[j]!r} at position {j}"
    return None


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, section: str, key: str, want: str, got: Any) -> None:
        raise LiveConfigError(f"{self.source}: [{section}] {key}: expected {want}, got {got!r}")

    def positive(self, sec: dict, section: str, key: str, allow_zero: bool = False,
                 integer: bool = False) -> None:
        if key not in sec:
            return
        v = sec[key]
        kind = "a whole number" if integer else "a number"
        want = f"{kind} >= 0 (0 = off)" if allow_zero else f"{kind} > 0"
        if not _num(v) or (integer and float(v) != int(v)) or v < 0 or (v == 0 and not allow_zero):
            self.fail(section, key, want, v)

    def fraction(self, sec: dict, section: str, key: str, off_ok: bool, upper_closed: bool = False) -> None:
        if key not in sec:
            return
        v = sec[key]
        if off_ok and (v is None or v is False or (_num(v) and v == 0)):
            return
        ok = _num(v) and 0 < v and (v <= 1 if upper_closed else v < 1)
        if not ok:
            rng = "(0, 1]" if upper_closed else "(0, 1)"
            self.fail(section, key, f"a fraction in {rng}" + (" or 0 / false = off" if off_ok else ""), v)

    def choice(self, sec: dict, section: str, key: str, options: Iterable[str]) -> None:
        if key in sec and sec[key] not in tuple(options):
            self.fail(section, key, f"one of {tuple(options)}", sec[key])


def validate_strategy_params(params: Dict[str, Any], source: str, section: str = "strategy.params") -> None:
    """Live numbers among a strategy's parameters: stake > 0, fractions in (0, 1], stops in (0, 1) or
    off, barrier distances in (0, 1) (a negative distance puts the barrier on the wrong side)."""
    c = _Checker(source)
    for key, v in params.items():
        k = key.lower()
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            one = {key: x}
            if k == "stake" or k.endswith("_stake"):
                if x is not None and not (_num(x) and x > 0):
                    c.fail(section, key, "an amount > 0 (or unset: stake_fraction / all cash)", x)
            elif "fraction" in k:
                if x is not None:
                    c.fraction(one, section, key, off_ok=False, upper_closed=True)
            elif k == "stop" or k.endswith("_stop"):
                c.fraction(one, section, key, off_ok=True)
            elif "distance" in k:
                if not (_num(x) and 0 < x < 1):
                    c.fail(section, key, "a barrier distance in (0, 1) as a fraction of the index (the "
                                         "barrier below the index for a long, above for a short)", x)


def validate_live(cfg: dict, venue: str, source: str = "config", strategy_params: Optional[dict] = None,
                  profile: bool = True) -> None:
    """Raise :class:`LiveConfigError` (file, section, key) for anything a live run would trip over."""
    from mltrade.live.broker import ON_STOP_FAILURE, ON_UNKNOWN
    c = _Checker(source)
    lv = cfg.get("live", {})
    for key in ("timeout", "confirm_timeout"):
        c.positive(lv, "live", key)
    for key in ("max_stake", "max_leverage", "daily_loss_limit", "close_grace_s", "replay_speed"):
        c.positive(lv, "live", key, allow_zero=True)
    for key in ("max_trades_per_day", "max_open_positions", "stop_retries", "close_retries"):
        c.positive(lv, "live", key, allow_zero=True, integer=True)
    c.fraction(lv, "live", "adopt_stop", off_ok=True)
    if "plausibility_factor" in lv:
        v = lv["plausibility_factor"]
        if not (_num(v) and (v == 0 or v > 1)):
            c.fail("live", "plausibility_factor", "a factor > 1 (0 = off)", v)
    c.choice(lv, "live", "on_unknown", ON_UNKNOWN)
    c.choice(lv, "live", "on_stop_failure", ON_STOP_FAILURE)
    src = str(lv.get("twofa_source", "prompt"))
    if not (src == "prompt" or re.match(r"^(file|command|env):.+", src)):
        c.fail("live", "twofa_source", '"prompt", "file:PATH", "command:CMD" or "env:NAME"', src)
    bt = cfg.get("backtest", {})
    c.positive(bt, "backtest", "cash")
    c.positive(cfg.get("broker", {}), "broker", "commission_fixed", allow_zero=True)
    validate_strategy_params(dict(strategy_params or {}), source)
    if venue != "paper" and profile:
        validate_profile(venue, (lv.get("profiles") or {}).get(venue) or None)


def validate_profile(venue: str, path: Optional[str] = None) -> Any:
    """The venue profile (:func:`~mltrade.live.profiles.load_profile`) with every selector parsed as CSS."""
    from mltrade.live.profiles import ProfileError, load_profile
    prof = load_profile(venue, path)
    for key, css in prof.selectors.items():
        err = css_syntax_error(css)
        if err:
            where = next((s for s in reversed(prof.sources) if _defines(s, key)), prof.sources[-1])
            raise ProfileError(f"{where}: [selectors] {key}: {css!r} is not a valid CSS selector ({err})")
    return prof


def _defines(path: str, key: str) -> bool:
    try:
        from mltrade.config import read_toml
        from pathlib import Path
        return key in read_toml(Path(path)).get("selectors", {})
    except Exception:
        return False


def check_strategy_kwargs(kwargs: Dict[str, Any], defaults: Dict[str, Any], source: str) -> List[str]:
    """Validate the strategy's effective live parameters (class defaults overridden by ``kwargs``)."""
    merged = {k: v for k, v in {**defaults, **kwargs}.items()
              if k in ("stake", "stake_fraction", "stop") or "distance" in k or "fraction" in k
              or k.endswith("_stop") or k.endswith("_stake")}
    validate_strategy_params(merged, source)
    return sorted(merged)
