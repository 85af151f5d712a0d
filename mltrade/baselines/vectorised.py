"""The backtest baselines as frames without backtrader: per-bar equity and round trips, equal to its runs.

* ``buy_and_hold``: the index held fully invested with the same cash: a tracker
  certificate (strike 0, no barrier, no spread, ratio 1e-4 so that whole
  certificates leave under 0.01 % uninvested) bought at the close of the first
  bar and sold at the close of the last; its return equals the index's up to
  the two order fees.
* ``always_long`` / ``random_direction``: the strategy's own certificates
  (barrier distance, stop, ratio, spread, stake, costs) in the strategy's
  session kind: ``intraday`` (decide after the strategy's decision candles, as
  ``IntradayMomentum``), ``day`` (bought at the session's open) or ``night``
  (bought at a session's close, sold at the next open), on the same bars.

Intraday rule baselines run on the vectorised sweep engine
(:mod:`mltrade.brokers.vectorised`, equal to the broker to the cent) and are turned
back into the frames a backtrader run gives (:func:`sweep_frames`); buy-and-hold
is computed in closed form (:func:`buy_and_hold_frames`). Both are checked
against backtrader runs in the tests; ``engine="backtrader"`` runs everything
through backtrader (the reference, and the fallback when the bars have gaps).

The sweep engine is imported inside :func:`sweep_frames` and :func:`rule_sweep` only: it sits on a
higher floor (``mltrade.sweep``) until its kernel moves down beside the brokers.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import pandas as pd

from mltrade.analyzers import trades_frame
from mltrade.products import KnockoutProduct, bid_price
from mltrade.settings import settings_of

#: tracker ratio of the buy-and-hold baseline (certificates per index point)
TRACKER_RATIO = 1e-4


def _local_index(times_utc: np.ndarray, tz: str) -> pd.DatetimeIndex:
    utc = pd.DatetimeIndex(times_utc).tz_localize("UTC")
    return pd.DatetimeIndex(utc.tz_convert(tz).tz_localize(None), name="datetime")


def sweep_frames(res, i: int = 0) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """(per-bar equity, round trips) of set ``i`` of a :class:`~mltrade.brokers.vectorised.SweepResult`.

    The equity is what :class:`~mltrade.analyzers.EquityCurve` records on the same run: cash before
    the entry bar, cash plus the position at the bid of each bar's close while it is held, the cash
    after the exit from the exit bar on.
    """
    from mltrade.brokers.vectorised import EXIT_REASONS, TRADED

    g = res.grid
    p = res.params
    cash0 = float(p["cash"][i, 0])
    n_s, width = g.close.shape
    present = ~np.isnat(g.times)
    col = np.broadcast_to(np.arange(width)[None, :], (n_s, width))
    after = res.cash[i]
    before = np.r_[cash0, after[:-1]]
    traded = res.status[i] == TRADED
    e = np.where(traded, res.entry_bar[i], width + 1)[:, None]
    x = np.where(traded, res.exit_bar[i], width + 1)[:, None]
    held = (col >= e) & (col < x)
    d = np.where(res.direction[i] > 0, 1.0, -1.0)[:, None]
    ratio, fx, spread = float(p["ratio"][i, 0]), float(p["fx"][i, 0]), float(p["spread"][i, 0])
    size = res.size[i][:, None]
    strike = np.nan_to_num(res.strike[i])[:, None]
    entry_px = np.nan_to_num(res.entry_price[i])[:, None]
    comm_in = float(p["commission_fixed"][i, 0]) + float(p["commission_pct"][i, 0]) * size * entry_px
    with np.errstate(invalid="ignore"):
        mark = bid_price(d, g.close, strike, ratio, fx, spread)
    in_cash = before[:, None] - (size * entry_px + comm_in)
    value = np.where(held, in_cash + size * mark, np.where(col >= x, after[:, None], before[:, None]))
    equity = pd.DataFrame({"value": value[present], "cash": np.where(held, in_cash, value)[present],
                           "close": g.close[present], "in_position": held[present]},
                          index=_local_index(g.times[present], g.tz))
    return equity, _round_trips(res, i, np.flatnonzero(traded), EXIT_REASONS)


def _round_trips(res, i: int, sets: np.ndarray, exit_reasons) -> pd.DataFrame:
    """The round trips (:data:`~mltrade.analyzers.TRADE_COLUMNS`) of set ``i`` in the sessions ``sets``
    (``exit_reasons``: the engine's exit reason names by code)."""
    g = res.grid
    p = res.params
    ratio, fx = float(p["ratio"][i, 0]), float(p["fx"][i, 0])
    rows = []
    for k in sets:
        ent, ext = int(res.entry_bar[i, k]), int(res.exit_bar[i, k])
        ent_t = _local_index(g.times[k:k + 1, ent], g.tz)[0]
        ext_t = _local_index(g.times[k:k + 1, ext], g.tz)[0]
        n, px = float(res.size[i, k]), float(res.entry_price[i, k])
        fees = float(res.fees[i, k])
        cin = float(p["commission_fixed"][i, 0]) + float(p["commission_pct"][i, 0]) * n * px
        pnl = float(res.pnl[i, k])
        under = float(res.entry_underlying[i, k])
        fair = px  # the ask is the fair value
        rows.append({
            "product": "", "kind": "minifuture" if bool(p["is_mini"][i, 0]) else "turbo",
            "direction": "long" if res.direction[i, k] > 0 else "short", "strike": float(res.strike[i, k]),
            "barrier": float(res.barrier[i, k]), "ratio": ratio, "size": n,
            "entry_time": ent_t.isoformat(), "entry_price": px, "entry_underlying": under,
            "exit_time": ext_t.isoformat(), "exit_price": float(res.exit_price[i, k]),
            "exit_underlying": float(res.exit_underlying[i, k]), "fees": fees, "financing": 0.0,
            "exit_reason": exit_reasons[int(res.exit_reason[i, k])], "pnl": pnl,
            "return": pnl / (n * px + cin) if n * px + cin else 0.0,
            "leverage": under * ratio * fx / fair if fair > 0 else math.inf, "bars": ext - ent,
        })
    return trades_frame(rows)


def rule_sweep(bars: pd.DataFrame, kwargs: dict, cfg: dict, rule: str, decision_bar: int):
    """Evaluate the ``rule`` baseline (``long`` or ``random``) on the sweep engine (one parameter set)."""
    from mltrade.brokers.vectorised import DEFAULTS, evaluate, session_grid

    s = settings_of(cfg)
    b, run = s.broker, s.backtest
    if b.fractional:
        raise ValueError("fractional certificates: the sweep engine buys whole certificates")
    ps = {k: kwargs[k] for k in DEFAULTS if k in kwargs and k not in ("direction_rule", "seed", "min_move",
                                                                      "decision_bar")}
    ps.update(decision_bar=int(decision_bar), direction_rule=rule, seed=int(run.baseline_seed),
              cash=float(run.cash), commission_fixed=float(b.commission_fixed), commission_pct=float(b.commission_pct))
    ps = {k: (np.nan if v is None else v) for k, v in ps.items()}
    grid = session_grid(bars, bars.attrs.get("calendar", run.exchange), int(run.interval or 5))
    return evaluate(grid, [ps])


def buy_and_hold_frames(bars: pd.DataFrame, cash: float, commission_fixed: float, commission_pct: float,
                        fractional: bool = False) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """(per-bar equity, round trip) of :class:`~mltrade.strategies.reference.BuyAndHold` in closed form."""
    close = bars["close"].to_numpy(float)
    idx = bars.index
    if idx.tz is not None:
        idx = idx.tz_convert(idx.tz).tz_localize(None)
    idx = pd.DatetimeIndex(idx, name="datetime")
    prod = KnockoutProduct.for_index(1, close[0], barrier=0.0, kind="turbo", ratio=TRACKER_RATIO, spread=0.0)
    ask = float(prod.ask(close[0], 1.0))
    n = (cash - commission_fixed) / (ask * (1.0 + commission_pct))
    if not fractional:
        n = math.floor(n + 1e-9)
    comm_in = commission_fixed + commission_pct * n * ask
    left = cash - (n * ask + comm_in)
    value = left + n * bid_price(1.0, close, prod.strike, TRACKER_RATIO, 1.0, 0.0)
    held = np.ones(len(close), bool)
    exit_px = float(prod.bid_scalar(close[-1], 1.0))
    comm_out = commission_fixed + commission_pct * n * exit_px
    final = left + (n * exit_px - comm_out)
    value[-1] = final
    held[-1] = False
    cash_col = np.where(held, left, final)
    if len(close) == 1:
        held[:] = False
    equity = pd.DataFrame({"value": value, "cash": cash_col, "close": close, "in_position": held}, index=idx)
    pnl = n * exit_px - n * ask - (comm_in + comm_out)
    trades = trades_frame([{
        "product": prod.name, "kind": "turbo", "direction": "long", "strike": prod.strike, "barrier": prod.barrier,
        "ratio": TRACKER_RATIO, "size": float(n), "entry_time": idx[0].isoformat(), "entry_price": ask,
        "entry_underlying": float(close[0]), "exit_time": idx[-1].isoformat(), "exit_price": exit_px,
        "exit_underlying": float(close[-1]), "fees": comm_in + comm_out, "financing": 0.0,
        "exit_reason": "session_end", "pnl": pnl, "return": pnl / (n * ask + comm_in),
        "leverage": prod.leverage(close[0], 1.0), "bars": len(close) - 1}])
    return equity, trades


def session_values(equity: pd.DataFrame) -> pd.Series:
    """Account value at each session's last bar (the series daily returns are computed from)."""
    return equity["value"].groupby(equity.index.normalize()).last()


def aligned_returns(strategy: pd.Series, baseline: pd.Series, start_cash: float) -> Tuple[np.ndarray, np.ndarray]:
    """Daily returns of two session-close value series on their common sessions (first against the cash)."""
    common = strategy.index.intersection(baseline.index)
    out = []
    for s in (strategy, baseline):
        v = s.reindex(common).to_numpy(float)
        out.append(np.diff(np.r_[start_cash, v]) / np.r_[start_cash, v[:-1]] if len(v) else np.zeros(0))
    return out[0], out[1]
