"""Session-by-session knock-out trade simulation: what the daily learners train on and are scored by.

One turbo trade per session: bought at the ask at ``entry`` (index level), held
over a path of bars (open/high/low/close), sold at the stop, knocked out at the
barrier, or sold at the bid at the last close. All certificate prices come from
:mod:`mltrade.products`. The budget simulation buys whole certificates,
``n = int((min(budget, max_stake) - fee) / ask)``, and pays ``fee`` per executed
order (no sell order, hence no fee, after a knock-out).

The baselines on the same sessions (buy-and-hold, always long, random direction) are
:mod:`mltrade.baselines.daily`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from mltrade import products as P
from mltrade.annualise import DEFAULT_PERIODS, sharpe

__all__ = ["REASON_NONE", "REASON_CLOSE", "REASON_STOP", "REASON_KNOCKOUT", "REASONS", "TradeCosts",
           "trade_outcomes", "daily_ohlc", "session_outcome_table", "step_budget", "simulate_budget", "summarize",
           "decisions_result"]

REASON_NONE, REASON_CLOSE, REASON_STOP, REASON_KNOCKOUT = 0, 1, 2, 3
REASONS = {REASON_NONE: "none", REASON_CLOSE: "session_end", REASON_STOP: "stop",
           REASON_KNOCKOUT: "knockout"}


@dataclass(frozen=True)
class TradeCosts:
    """Certificate and account parameters of the simulation (the original's defaults)."""

    ratio: float = 0.01
    spread: float = 0.01
    fx: float = 1.0
    fee: float = 1.0
    stop: float = 0.71          #: stop at ``stop * entry price``; 0 disables it
    barrier_step: float = 0.0
    budget: float = 1000.0
    floor: float = 25.0
    max_stake: float = 750_000.0
    kind: str = "turbo"
    #: day session barrier reference: "entry" (the open, as the original) or "previous_close"
    #: (the last price before the open, as the backtrader strategy that decides at the close)
    barrier_reference: str = "entry"

    def __post_init__(self) -> None:
        if self.barrier_reference not in ("entry", "previous_close"):
            raise ValueError(f"barrier_reference: expected 'entry' or 'previous_close', "
                             f"got {self.barrier_reference!r}")
        if self.kind != "turbo":
            raise ValueError(f"kind: the session simulation supports 'turbo' only, got {self.kind!r}")
        for name in ("ratio", "fx", "budget", "max_stake"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)!r}")
        for name in ("spread", "fee", "barrier_step", "floor"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a non-negative number, got {getattr(self, name)!r}")
        if not 0 <= self.stop < 1:
            raise ValueError(f"stop: expected a fraction in [0, 1), got {self.stop!r}")


def trade_outcomes(direction: np.ndarray, distance: np.ndarray, entry: float, opens: np.ndarray,
                   highs: np.ndarray, lows: np.ndarray, closes: np.ndarray,
                   costs: TradeCosts, barrier_ref: Optional[float] = None) -> tuple:
    """Entry ask, exit price and exit reason for candidate trades ``(A,)`` over one bar path ``(B,)``.

    ``direction`` 0 means no trade (entry 0). The barrier lies ``distance`` from
    ``barrier_ref`` (default: the entry level). The stop fills at ``stop*entry``
    inside a bar, or at the bid at the bar's open when the bar gaps through it.
    """
    d = np.asarray(direction, float).reshape(-1)
    dist = np.broadcast_to(np.asarray(distance, float), d.shape)
    o, h, lo, c = (np.asarray(x, float).reshape(-1) for x in (opens, highs, lows, closes))
    trade = d != 0
    dd = np.where(trade, d, 1.0)
    ref = entry if barrier_ref is None else barrier_ref
    barrier = P.round_barrier_safe(P.barrier_from_distance(ref, dd, dist), dd, costs.barrier_step)
    strike = barrier
    ask = P.ask_price(dd, entry, strike, costs.ratio, costs.fx, costs.spread)
    trade &= (ask > 0) & (dd * (entry - barrier) > 0)
    ko = P.is_knocked_out(dd[:, None], lo[None, :], h[None, :], barrier[:, None])      # (A,B)
    gap_ko = dd[:, None] * (o[None, :] - barrier[:, None]) <= 0
    if costs.stop > 0:
        stop_px = costs.stop * ask
        stop_u = P.underlying_for_bid(dd, stop_px, strike, costs.ratio, costs.fx, costs.spread)
        worst = np.where(dd[:, None] > 0, lo[None, :], h[None, :])
        hit = dd[:, None] * (worst - stop_u[:, None]) <= 0
        gap_stop = dd[:, None] * (o[None, :] - stop_u[:, None]) <= 0
    else:
        stop_px = np.zeros_like(ask)
        hit = np.zeros_like(ko)
        gap_stop = hit
    event = ko | hit
    any_event = event.any(axis=1)
    first = np.argmax(event, axis=1)
    rows = np.arange(len(d))
    bid_close = P.bid_price(dd, c[-1], strike, costs.ratio, costs.fx, costs.spread)
    bid_open = P.bid_price(dd, o[first], strike, costs.ratio, costs.fx, costs.spread)
    is_gap_ko = gap_ko[rows, first]
    is_hit = hit[rows, first]
    is_gap_stop = gap_stop[rows, first]
    exit_px = np.where(~any_event, bid_close,
                       np.where(is_gap_ko, 0.0,
                                np.where(is_hit, np.where(is_gap_stop, bid_open, stop_px), 0.0)))
    reason = np.where(~any_event, REASON_CLOSE,
                      np.where(is_gap_ko, REASON_KNOCKOUT, np.where(is_hit, REASON_STOP, REASON_KNOCKOUT)))
    entry_px = np.where(trade, ask, 0.0)
    return entry_px, np.where(trade, exit_px, 0.0), np.where(trade, reason, REASON_NONE)


def daily_ohlc(daily: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """The open, high, low and close columns of daily bars as float arrays (a missing one raises)."""
    missing = [c for c in ("open", "high", "low", "close") if c not in daily.columns]
    if missing:
        raise ValueError(f"daily bars: missing column(s) {missing}; expected open, high, low, close")
    return tuple(daily[c].to_numpy(float) for c in ("open", "high", "low", "close"))


def session_outcome_table(daily: pd.DataFrame, directions: Sequence[int], distances: Sequence[float],
                          costs: TradeCosts, session: str = "day") -> tuple[np.ndarray, ...]:
    """Entry/exit/reason matrices ``(T, A)`` for every session and candidate action.

    ``session="day"``: buy at the open, path = the day's bar. ``"night"``: buy at
    the previous close, path = the next open only (no overnight path is known:
    a stop or knock-out can only be seen as a gap at the open). Row 0 of the night
    session has no previous close and is left untraded.
    """
    if session not in ("day", "night"):
        raise ValueError(f"session: expected 'day' or 'night', got {session!r}")
    o, h, lo, c = daily_ohlc(daily)
    d = np.asarray(directions, float)
    dist = np.asarray(distances, float)
    T, A = len(o), len(d)
    entry = np.zeros((T, A))
    exit_ = np.zeros((T, A))
    reason = np.zeros((T, A), dtype=np.int8)
    for t in range(T):
        if session == "day":
            ref = _day_ref(o, c, t, costs)
            if ref is None:
                continue
            e, x, r = trade_outcomes(d, dist, o[t], o[t:t + 1], h[t:t + 1], lo[t:t + 1], c[t:t + 1], costs,
                                     barrier_ref=ref)
        else:
            if t == 0:
                continue
            p = o[t:t + 1]
            e, x, r = trade_outcomes(d, dist, c[t - 1], p, p, p, p, costs)
        entry[t], exit_[t], reason[t] = e, x, r
    return entry, exit_, reason


def _day_ref(opens: np.ndarray, closes: np.ndarray, t: int, costs: TradeCosts) -> Optional[float]:
    """Barrier reference of day session ``t`` (None: no previous close to refer to)."""
    if costs.barrier_reference == "entry":
        return float(opens[t])
    return float(closes[t - 1]) if t > 0 else None


def step_budget(budget: float, entry: float, exit_: float, costs: TradeCosts) -> tuple[float, int]:
    """Budget after one trade and the number of certificates bought (0 = no trade)."""
    if entry <= 0:
        return budget, 0
    n = int((min(budget, costs.max_stake) - costs.fee) / entry)
    if n < 1:
        return budget, 0
    fees = costs.fee * (2 if exit_ > 0 else 1)
    return budget + n * (exit_ - entry) - fees, n


def simulate_budget(entry: np.ndarray, exit_: np.ndarray, costs: TradeCosts) -> pd.DataFrame:
    """Run the budget through per-session trades; stops trading below the floor."""
    budget = costs.budget
    rows = []
    for e, x in zip(np.asarray(entry, float), np.asarray(exit_, float)):
        before = budget
        n = 0
        if budget >= costs.floor:
            budget, n = step_budget(budget, e, x, costs)
        rows.append((before, budget, n, (budget / before - 1.0) if before > 0 else 0.0))
    return pd.DataFrame(rows, columns=["budget_before", "budget_after", "size", "ret"])


def summarize(sim: pd.DataFrame, costs: TradeCosts, periods_per_year: float = DEFAULT_PERIODS) -> Dict[str, float]:
    """Total return, trades, win rate, annualised Sharpe and maximum drawdown of a budget run."""
    if len(sim) == 0:
        return {"total_return": 0.0, "trades": 0, "win_rate": float("nan"), "sharpe": float("nan"),
                "max_drawdown": 0.0, "final_budget": costs.budget, "sessions": 0}
    eq = np.concatenate([[costs.budget], sim["budget_after"].to_numpy(float)])
    traded = sim["size"].to_numpy() > 0
    r = sim["ret"].to_numpy(float)
    peak = np.maximum.accumulate(eq)
    sd = r.std(ddof=1) if len(r) > 1 else 0.0
    return {"total_return": float(eq[-1] / eq[0] - 1.0), "trades": int(traded.sum()),
            "win_rate": float((r[traded] > 0).mean()) if traded.any() else float("nan"),
            "mean_trade_return": float(r[traded].mean()) if traded.any() else float("nan"),
            "sharpe": sharpe(r, periods_per_year) if sd > 0 else float("nan"),
            "max_drawdown": float((eq / peak - 1.0).min()), "final_budget": float(eq[-1]),
            "sessions": int(len(r))}


def decisions_result(daily: pd.DataFrame, direction: np.ndarray, distance: np.ndarray,
                     costs: TradeCosts, session: str = "day") -> tuple[Dict[str, float], pd.DataFrame]:
    """Summary and per-session frame of one decision per session (direction 0 = no trade)."""
    d = np.asarray(direction, float)
    dist = np.asarray(distance, float)
    entry = np.zeros(len(d))
    exit_ = np.zeros(len(d))
    reason = np.zeros(len(d), dtype=np.int8)
    o, h, lo, c = daily_ohlc(daily)
    for t in range(len(d)):
        if d[t] == 0 or (session == "night" and t == 0):
            continue
        if session == "day":
            ref = _day_ref(o, c, t, costs)
            if ref is None:
                continue
            e, x, r = trade_outcomes(d[t:t + 1], dist[t:t + 1], o[t], o[t:t + 1], h[t:t + 1],
                                     lo[t:t + 1], c[t:t + 1], costs, barrier_ref=ref)
        else:
            p = o[t:t + 1]
            e, x, r = trade_outcomes(d[t:t + 1], dist[t:t + 1], c[t - 1], p, p, p, p, costs)
        entry[t], exit_[t], reason[t] = e[0], x[0], r[0]
    sim = simulate_budget(entry, exit_, costs)
    sim.index = daily.index
    sim["direction"] = d
    sim["distance"] = dist
    sim["entry"] = entry
    sim["exit"] = exit_
    sim["exit_reason"] = [REASONS[int(x)] for x in reason]
    return summarize(sim, costs), sim
