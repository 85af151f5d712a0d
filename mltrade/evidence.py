"""What a run's figures are evidence of: real data, the sample's real daily bars, or its synthetic paths.

The embedded sample (:mod:`mltrade.feeds.sample`) has real daily bars and synthetic 5-minute bars
that meet each day's real open, high, low and close exactly and have no gaps inside the session.
A trade on it is priced by the real daily bars alone when

* it was **decided from earlier sessions' daily bars** (the strategy declares
  ``decision_data = "daily"``: the DQN day and night ensembles, the session baselines, buy-and-hold),
  not from bars inside the session;
* it **entered** at a session's first open (a market order placed at the previous session's last
  bar) or at a session's last close;
* it **exited** at a session's last close (session end, or a signal at the close), at a session's
  first open (the night session's sale), at its **stop** (whether the day's real low — high for a
  short — reaches the stop level is a daily fact, and without gaps inside the session the stop
  fills at its level; a gap at the real open fills at the real open), or at the **knock-out** of a
  turbo (it pays nothing) or of a mini future unwound at the barrier (``unwind = "barrier"``; the
  default ``"worst"`` unwinds at the knock-out bar's low, a synthetic figure).

The stop comes before the knock-out on the way from the open (or the other way round) by their
levels alone, since the path is continuous inside the session. Anything else — a decision or a fill
inside the session, a take-profit or a trailing stop (whether its level is reached before the stop
depends on the order of the day's high and low), a mini future's "worst"/"close" unwind — depends
on the synthetic paths. The run's per-bar drawdown (intraday lows of the equity) is a path figure in
every case; daily returns, the Sharpe ratio, the total return and the significance are not, when
every trade is priced by the daily bars.

:func:`classify` returns ``{"evidence", "evidence_reason"}`` for ``summary.json``;
:func:`qualify_words` rewrites the significance sentence on synthetic evidence.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import pandas as pd

__all__ = ["REAL_DATA", "REAL_DAILY", "SYNTHETIC", "EVIDENCE_KINDS", "trade_dependencies", "classify",
           "qualify_words"]

REAL_DATA = "real data"
REAL_DAILY = "real daily bars"
SYNTHETIC = "synthetic intraday paths"
EVIDENCE_KINDS = (REAL_DATA, REAL_DAILY, SYNTHETIC)

#: exits priced by the day's real bars whatever the path (at their level, or at a real open/close)
_LEVEL_EXITS = {"stop"}


def _sessions(bars: pd.DataFrame) -> tuple[dict, dict]:
    """First and last bar of each session: {naive local time: price} for the first opens and last closes."""
    idx = bars.index.tz_localize(None) if bars.index.tz is not None else bars.index
    day = idx.normalize()
    first = ~pd.Index(day).duplicated(keep="first")
    last = ~pd.Index(day).duplicated(keep="last")
    opens = dict(zip(idx[first], bars["open"].to_numpy(dtype=float)[first]))
    closes = dict(zip(idx[last], bars["close"].to_numpy(dtype=float)[last]))
    return opens, closes


def _naive(col: pd.Series) -> pd.Series:
    t = pd.to_datetime(col)
    return t.dt.tz_localize(None) if t.dt.tz is not None else t


def _at(times: dict, t, level: float) -> bool:
    p = times.get(t)
    return p is not None and bool(np.isclose(level, p, rtol=1e-9, atol=1e-9))


def trade_dependencies(trades: pd.DataFrame, bars: pd.DataFrame, unwind: str = "worst") -> list[str]:
    """Why the round trips in ``trades`` depend on the intraday path (empty: each is priced by the
    sessions' real first opens, last closes, stops and knock-outs alone). ``unwind``: the mini
    futures' knock-out unwind mode."""
    if trades is None or len(trades) == 0:
        return []
    opens, closes = _sessions(bars)
    out: list[str] = []
    entry_t, exit_t = _naive(trades["entry_time"]), _naive(trades["exit_time"])
    inside_entry = inside_exit = 0
    reasons: list[str] = []
    for i in range(len(trades)):
        row = trades.iloc[i]
        e_lvl, x_lvl = float(row["entry_underlying"]), float(row["exit_underlying"])
        if not (_at(opens, entry_t.iloc[i], e_lvl) or _at(closes, entry_t.iloc[i], e_lvl)):
            inside_entry += 1
        why = str(row["exit_reason"])
        if why in _LEVEL_EXITS:
            continue
        if why == "knockout":
            if str(row.get("kind", "turbo")) == "turbo" or unwind == "barrier":
                continue
            note = f"knock-outs of mini futures unwound at the knock-out bar's {unwind} price"
            if note not in reasons:
                reasons.append(note)
            continue
        if not (_at(closes, exit_t.iloc[i], x_lvl) or _at(opens, exit_t.iloc[i], x_lvl)):
            inside_exit += 1
    if inside_entry:
        out.append(f"{inside_entry} of {len(trades)} entries fill inside a session")
    if inside_exit:
        out.append(f"{inside_exit} of {len(trades)} exits fill inside a session (not at a stop, knock-out, "
                   f"first open or last close)")
    return out + reasons


def classify(bars: pd.DataFrame, trades: Optional[pd.DataFrame] = None, decision_data: str = "intraday",
             unwind: str = "worst", take_profit: bool = False) -> dict:
    """``{"evidence", "evidence_reason"}`` of a run on ``bars``: :data:`REAL_DATA` unless the bars are
    the sample's synthetic intraday bars; then :data:`REAL_DAILY` when the strategy decides from
    earlier sessions' daily bars (``decision_data="daily"``), uses no take-profit or trailing stop
    and every round trip in ``trades`` is priced by the real daily bars (:func:`trade_dependencies`),
    else :data:`SYNTHETIC`."""
    if not bars.attrs.get("synthetic_intraday", False):
        return {"evidence": REAL_DATA, "evidence_reason": f"bars from {bars.attrs.get('source') or 'the data'}"}
    why = []
    if decision_data != "daily":
        why.append("the strategy decides on bars inside the session")
    if take_profit:
        why.append("take-profit or trailing-stop exits depend on the order of the day's high and low")
    why += trade_dependencies(trades, bars, unwind)
    if why:
        return {"evidence": SYNTHETIC, "evidence_reason": "; ".join(why)}
    return {"evidence": REAL_DAILY,
            "evidence_reason": ("decided from earlier sessions' daily bars; every entry at a session's first open "
                                "or last close, every exit at a last close, first open, stop or knock-out: "
                                "priced by each day's real open, high, low and close alone")}


def _fmt_p(p: float) -> str:
    return f"= {p:.3f}" if p >= 0.001 else "< 0.001"


def qualify_words(sig: Mapping, evidence: str, labels: Optional[Mapping[str, str]] = None) -> str:
    """The significance sentence, said for what it is: on :data:`SYNTHETIC` evidence it starts "on
    synthetic intraday bars: SPA p = 0.005 against buy-and-hold is a property of the sample, not
    evidence about the market"; on :data:`REAL_DAILY` it says the figures rest on the real daily bars."""
    words = str(sig.get("words") or "")
    if evidence == REAL_DAILY:
        return f"On the sample's real daily bars (every trade priced by real daily OHLC): {words}"
    if evidence != SYNTHETIC:
        return words
    labels = dict(labels or {})
    alpha = float(sig.get("alpha", 0.05))
    claims = [f"SPA p {_fmt_p(p)} against {labels.get(k, k)}" for k, p in (sig.get("spa_pvalue") or {}).items()
              if p is not None and p < alpha]
    what = (" and ".join(claims) + (" is" if len(claims) == 1 else " are")) if claims else "every figure here is"
    return (f"On synthetic intraday bars: {what} a property of the sample, not evidence about the market. "
            f"({words})")
