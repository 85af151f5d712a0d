"""ML-only pricing over a session, for :meth:`mltrade.llm.overlay.LLMOverlay.summary`: the P&L of a certificate
bought for a decision and held over the rest of its session (:func:`price_decision`, small on purpose), the
settings that match a strategy and its broker (:func:`pricing_for`), and the P&L of a strategy's own round
trips on given sessions (:func:`trades_pnl_on_sessions`)."""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd

from mltrade.products import KnockoutProduct
from mltrade.strategies.decision import Decision


def pricing_for(strategy: Any) -> dict:
    """:func:`price_decision` settings matching a ``KnockoutStrategy`` and its ``KnockoutBroker``.

    ``stake``: the strategy's fixed ``stake`` (``compound`` False) or, when it stakes its
    cash (all of it, or ``stake_fraction`` of it), the broker's starting cash with
    ``compound`` True so :meth:`LLMOverlay.summary` carries the cash from session to session.
    ``commission``/``commission_pct``: the broker's fixed and proportional fees.
    """
    p, broker = strategy.p, strategy.broker
    fixed_stake = getattr(p, "stake", None)
    stake = fixed_stake or getattr(broker, "startingcash", None) or broker.getcash()
    bp = getattr(broker, "p", None)
    out = {"ratio": float(p.ratio), "spread": float(p.spread), "fx": float(p.fx),
           "commission": float(getattr(bp, "commission_fixed", 0.0) or 0.0),
           "commission_pct": float(getattr(bp, "commission_pct", 0.0) or 0.0), "stake": float(stake),
           "kind": getattr(p, "kind", "turbo"), "barrier_buffer": float(getattr(p, "barrier_buffer", 0.0)),
           "compound": not fixed_stake}
    fraction = getattr(p, "stake_fraction", None)
    if not fixed_stake and fraction:
        out["stake_fraction"] = float(fraction)
    return out


def strategy_inputs(strategy: Any, bars: Optional[pd.DataFrame], trades: Any, pricing: dict):
    """``(bars, trades, pricing)`` for :meth:`LLMOverlay.summary`, missing ones taken from ``strategy``."""
    if strategy is None:
        return bars, trades, pricing
    if bars is None:
        bars = getattr(strategy.data.p, "dataframe", None)
    if trades is None:
        trades = getattr(strategy.broker, "roundtrips", None)
    return bars, trades, {**pricing_for(strategy), **pricing}


def price_decision(decision: Decision, bars: pd.DataFrame, *, ratio: float = 0.01, spread: float = 0.01,
                   fx: float = 1.0, commission: float = 1.0, stake: float = 1000.0,
                   stop: Optional[float] = None, kind: str = "turbo", barrier_buffer: float = 0.0,
                   commission_pct: float = 0.0) -> dict:
    """P&L of a certificate bought for ``decision`` and held over the rest of its session.

    Entry: the open of the first bar after ``decision.time`` on the same date (at
    the ask), whole certificates ``floor((stake - commission) / (ask * (1 + commission_pct)))``
    as the ``KnockoutBroker`` sizes a stake. Exit, bar
    by bar: knock-out (open through the barrier, or no stop and the bar's worst
    price touches it: paid 0), stop (certificate bid at or below ``stop * entry``:
    at the open's bid if it gapped below, else at the stop level), or the
    session's last close at the bid. Each fill pays the broker's fee ``commission +
    commission_pct * size * price``; a knock-out pays none (as the broker).
    ``stop`` defaults to ``decision.stop``. On daily bars (naive dates) the
    trade is the next session, from its open to its close. A mini future (``kind``) pays its
    residual at the bar's worst price after a knock-out; financing is ignored
    within a session.
    """
    none = {"pnl": 0.0, "entry": None, "exit": None, "size": 0, "fees": 0.0, "exit_reason": "no_trade"}
    if not decision.direction or decision.time is None:
        return none
    barrier = decision.barrier_level()
    if barrier is None:
        return none
    session = session_after(decision.time, bars)
    if session.empty:
        return {**none, "exit_reason": "no_bars"}
    stop = decision.stop if stop is None else stop
    o, h, lo, c = (session[k].to_numpy(float) for k in ("open", "high", "low", "close"))
    d = decision.direction
    if (d > 0 and o[0] <= barrier) or (d < 0 and o[0] >= barrier):
        return {**none, "exit_reason": "knocked_out_before_entry"}
    product = KnockoutProduct.for_index(d, float(o[0]), barrier=barrier, ratio=ratio, spread=spread, fx=fx,
                                        kind=kind, barrier_buffer=barrier_buffer)
    entry = float(product.ask(o[0]))
    size = math.floor((stake - commission) / (entry * (1.0 + commission_pct)) + 1e-9) if entry > 0 else 0
    if size <= 0:
        return {**none, "entry": entry, "exit_reason": "stake_too_small"}
    worst = lo if d > 0 else h
    exit_price, reason = session_exit(product, o, h, lo, c, worst, None if not stop else stop * entry)
    fees = commission + commission_pct * size * entry
    if reason != "knockout":
        fees += commission + commission_pct * size * exit_price
    pnl = size * (exit_price - entry) - fees
    return {"pnl": float(pnl), "entry": entry, "exit": exit_price, "size": size, "fees": float(fees),
            "exit_reason": reason}


def session_after(time: Any, bars: pd.DataFrame) -> pd.DataFrame:
    """The bars a decision at ``time`` trades: the rest of its session (intraday bars), or the next session
    (daily bars: naive dates)."""
    t = pd.Timestamp(time)
    idx = bars.index
    local = idx.tz_localize(None) if getattr(idx, "tz", None) is not None else idx
    if t.tzinfo is not None:
        tz = getattr(idx, "tz", None)
        t = t.tz_convert(tz).tz_localize(None) if tz is not None else t.tz_localize(None)
    if getattr(idx, "tz", None) is None and bool((local == local.normalize()).all()):
        return bars.loc[local > t].iloc[:1]  # daily bars: the next session, open to close
    return bars.loc[(local > t) & (local.normalize() == t.normalize())]


def session_exit(product: KnockoutProduct, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                 worst: np.ndarray, stop_level: Optional[float]) -> tuple:
    """``(exit price, reason)`` of a certificate held bar by bar from the first open: knock-out (residual at the
    bar's ``worst`` price), stop on the bid at ``stop_level`` (gap-aware), else the last close at the bid."""
    exit_price, reason = float(product.bid(c[-1])), "session_end"
    for i in range(len(o)):
        if bool(product.knocked_out_by(o[i], o[i])):
            exit_price, reason = float(product.residual(worst[i])), "knockout"
            break
        if stop_level is not None:
            if float(product.bid(o[i])) <= stop_level:
                exit_price, reason = float(product.bid(o[i])), "stop"
                break
            if float(product.bid(worst[i])) <= stop_level:
                exit_price, reason = stop_level, "stop"
                break
        if bool(product.knocked_out_by(lo[i], h[i])):
            exit_price, reason = float(product.residual(worst[i])), "knockout"
            break
    return exit_price, reason


def trades_pnl_on_sessions(trades: Any, sessions: Iterable[Any]) -> float:
    """Sum of closed trades' P&L whose entry falls on one of ``sessions`` (dates).

    ``trades``: a DataFrame or list of dicts with an entry time column
    (``entry_time``/``open_time``/``dt_open``/``entry_dt``) and a P&L column
    (``pnl_net``/``pnlcomm``/``pnl``).
    """
    df = trades if isinstance(trades, pd.DataFrame) else pd.DataFrame(list(trades))
    if df.empty:
        return 0.0
    tcol = next((c for c in ("entry_time", "open_time", "dt_open", "entry_dt", "opened") if c in df.columns),
                None)
    pcol = next((c for c in ("pnl_net", "pnlcomm", "net_pnl", "pnl") if c in df.columns), None)
    if tcol is None or pcol is None:
        raise ValueError(f"trades: expected an entry time column and a P&L column, got {list(df.columns)}")
    wanted = {s for s in sessions if s is not None}
    dates = pd.to_datetime(df[tcol]).map(lambda x: x.date())
    return float(df.loc[dates.isin(wanted), pcol].astype(float).sum())
