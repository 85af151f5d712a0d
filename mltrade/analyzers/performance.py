"""Analyzers that turn a knock-out backtest into plain data (dicts, DataFrames, JSON, CSV).

* :class:`KnockoutTrades` – one row per round trip (from the broker's closing orders).
* :class:`EquityCurve` – value, cash, index close and exposure per bar.
* :class:`KnockoutStats` – knock-outs, stops, win rate, leverage, exposure, returns,
  drawdown, Sharpe and Sortino.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Union

import backtrader as bt
import numpy as np
import pandas as pd

from mltrade.feeds.bars import _UNIX_ORDINAL
from mltrade.io import atomic_write_text

TRADE_COLUMNS = ["product", "kind", "direction", "strike", "barrier", "ratio", "size", "entry_time",
                 "entry_price", "entry_underlying", "exit_time", "exit_price", "exit_underlying", "fees",
                 "financing", "exit_reason", "pnl", "return", "leverage", "bars"]

#: trades.csv columns that say where a trade's decision came from (filled by
#: :func:`mltrade.strategies.decision.provenance`). Convention: a strategy puts what it knows in
#: ``Decision.info`` under these keys (``model_id``, ``agreement`` = share of ensemble votes for the
#: chosen direction, ``gate_proba`` = the confidence gate's probability, ``p_long`` = a classifier's
#: probability); an overlay records its verdict as ``info["llm"]["outcome"]``. Absent keys: empty cells.
PROVENANCE_COLUMNS = ("decision_source", "model_id", "agreement", "gate_proba", "p_long", "llm_action")


class BacktraderTrades:
    """Round trips from backtrader's own trade notifications, for orders that carry no round-trip info.

    Orders with ``product=`` on a KnockoutBroker close with ``order.info['roundtrip']``; every other
    closed backtrader ``Trade`` (any broker, any strategy) becomes a row of :data:`TRADE_COLUMNS`
    with what the trade knows: direction, size at opening, average entry price, exit price
    (from the P&L), commission as fees, P&L after commission; certificate fields stay empty.
    """

    def __init__(self, strategy) -> None:
        self._strategy = strategy
        self._covered: set = set()      #: (data id, tradeid) whose round trips come from order info
        self._open: dict = {}           #: trade ref -> (size, direction) at opening
        self._reason: dict = {}         #: (data id, tradeid) -> reason of the last closing order
        self._certs: dict = {}          #: (data id, tradeid) -> {direction: certificate of the default product}

    def order(self, order) -> None:
        key = (id(order.data), order.tradeid)
        if "roundtrip" in order.info or "stake" in order.info:
            self._covered.add(key)      # an order with product=: its round trip arrives with the order
        reason = order.info.get("reason")
        if reason:
            self._reason[key] = reason
        for name, direction in (("_cert_long", 1), ("_cert_short", -1)):   # set by KnockoutBroker's book
            if order.info.get(name) is not None:
                self._certs.setdefault(key, {})[direction] = order.info[name]

    def trade(self, trade) -> Optional[dict]:
        key = (id(trade.data), trade.tradeid)
        if key in self._covered:
            return None
        if trade.justopened:
            direction = 1 if trade.long else -1
            self._open[trade.ref] = (abs(trade.size), direction, self._certs.get(key, {}).get(direction))
        if not trade.isclosed:
            return None
        size, direction, cert = self._open.pop(trade.ref, (float("nan"), 1 if trade.long else -1, None))
        entry = float(trade.price)
        exit_ = entry + trade.pnl / (direction * size) if size else float("nan")
        data = trade.data
        invested = size * entry
        return {
            "product": cert.name if cert is not None else data._name or "data",
            "kind": cert.kind if cert is not None else None, "direction": "long" if direction > 0 else "short",
            "strike": cert.strike if cert is not None else np.nan,
            "barrier": cert.barrier if cert is not None else np.nan,
            "ratio": cert.ratio if cert is not None else np.nan, "size": size,
            "entry_time": _stamp(data, trade.dtopen), "entry_price": entry, "entry_underlying": np.nan,
            "exit_time": _stamp(data, trade.dtclose), "exit_price": exit_,
            "exit_underlying": np.nan, "fees": float(trade.commission), "financing": 0.0,
            "exit_reason": self._reason.pop(key, None) or "signal", "pnl": float(trade.pnlcomm),
            "return": float(trade.pnlcomm) / invested if invested else 0.0, "leverage": np.nan,
            "bars": int(trade.barlen),
        }


def _stamp(data, num: float) -> str:
    """A bar time in the feed's own zone, exact for daily stamps at 23:59:59.999989 and intraday ones."""
    return bar_times(data, [num])[0].isoformat()


def bar_times(data, nums) -> pd.DatetimeIndex:
    """Exchange-local (naive) times of backtrader date numbers of ``data``'s bars.

    IndexData stamps are converted from UTC to the exchange's zone and rounded to the second; any
    other feed goes through its own ``num2date`` (its time zone), daily bars keep their date
    (backtrader stamps them 23:59:59.999989: never the next midnight) and intraday bars are rounded
    to the second.
    """
    from mltrade.feeds.bars import IndexData

    nums = np.asarray(nums, dtype=float)
    if isinstance(data, IndexData):
        utc = pd.to_datetime((nums - _UNIX_ORDINAL) * 86_400e3, unit="ms", utc=True).round("s")
        tz = getattr(data, "_tz", None)
        zone = getattr(tz, "zone", None) or "UTC"
        return pd.DatetimeIndex(utc.tz_convert(zone).tz_localize(None), name="datetime")
    local = pd.DatetimeIndex([data.num2date(n).replace(tzinfo=None) for n in nums], name="datetime")
    if getattr(data, "_timeframe", bt.TimeFrame.Minutes) >= bt.TimeFrame.Days:
        return local.normalize()
    return local.round("s")


class KnockoutTrades(bt.Analyzer):
    """Round trips: product, direction, strike, barrier, ratio, size, entry/exit, fees, financing, reason, pnl.

    Orders with ``product=`` give the certificate's round trip; other trades (a plain backtrader
    strategy, orders on the broker's default product) come from backtrader's trade notifications.
    """

    def start(self) -> None:
        self.rows: list = []
        self._prov: dict = {}   #: product id -> provenance of the order that opened it
        self._bt = BacktraderTrades(self.strategy)

    def notify_order(self, order) -> None:
        if order.status != order.Completed:
            return
        self._bt.order(order)
        product = order.info.get("product")
        if order.isbuy() and isinstance(order.info.get("provenance"), dict) and product is not None:
            self._prov[product.id] = order.info["provenance"]
        if "roundtrip" in order.info:
            row = dict(order.info["roundtrip"])
            prov = self._prov.pop(product.id, None) if product is not None else None
            row.update({k: (prov or {}).get(k) for k in PROVENANCE_COLUMNS})
            self.rows.append(row)

    def notify_trade(self, trade) -> None:
        row = self._bt.trade(trade)
        if row is not None:
            row.update({k: None for k in PROVENANCE_COLUMNS})
            self.rows.append(row)

    def get_analysis(self) -> dict:
        cols = TRADE_COLUMNS + list(PROVENANCE_COLUMNS)
        return {"trades": [{k: r.get(k) for k in cols} for r in self.rows]}

    def to_frame(self) -> pd.DataFrame:
        """Round trips (:data:`TRADE_COLUMNS`) plus the opening decision's provenance columns."""
        return pd.DataFrame(self.get_analysis()["trades"], columns=TRADE_COLUMNS + list(PROVENANCE_COLUMNS))


def trades_frame(rows: list) -> pd.DataFrame:
    """Round trips as a DataFrame with :data:`TRADE_COLUMNS`."""
    return pd.DataFrame(rows, columns=TRADE_COLUMNS)


class EquityCurve(bt.Analyzer):
    """Per bar: exchange-local time, account value, cash, index close and whether a position is open."""

    def start(self) -> None:
        self._t, self._v, self._c, self._px, self._pos = [], [], [], [], []

    def next(self) -> None:
        broker = self.strategy.broker
        self._t.append(self.data.datetime[0])
        self._v.append(broker.getvalue())
        self._c.append(broker.getcash())
        self._px.append(self.data.close[0])
        held = broker.positions_on(self.data) if hasattr(broker, "positions_on") else None
        self._pos.append(bool(held) if held is not None else bool(broker.getposition(self.data).size))

    def to_frame(self) -> pd.DataFrame:
        """The curve as a DataFrame indexed by exchange-local (naive) time."""
        idx = bar_times(self.data, self._t)
        return pd.DataFrame({"value": self._v, "cash": self._c, "close": self._px,
                             "in_position": self._pos}, index=idx)

    def get_analysis(self) -> dict:
        f = self.to_frame()
        return {"time": [t.isoformat() for t in f.index], **{c: f[c].tolist() for c in f.columns}}


def daily_returns(session_values: pd.Series, start_cash: float) -> pd.Series:
    """Returns of the session-close values; the first session's against the start cash."""
    prev = session_values.shift(1)
    if len(prev):
        prev.iloc[0] = start_cash
    return (session_values / prev - 1.0).dropna()


def performance(equity: pd.DataFrame, trades: pd.DataFrame, start_cash: float,
                periods: Optional[float] = None) -> dict:
    """Figures for one run from its equity curve (per bar) and its round trips (docs/metrics.md).

    ``periods``: sessions per year of the data's calendar (annualises Sharpe and Sortino); default
    :func:`mltrade.significance.sessions_per_year` of the equity's dates."""
    from mltrade.annualise import sessions_per_year

    if periods is None:
        periods = sessions_per_year(equity.index) if len(equity) else 252.0
    ann = math.sqrt(periods)
    daily = equity["value"].groupby(equity.index.normalize()).last()
    rets = daily_returns(daily, start_cash)
    final = float(equity["value"].iloc[-1]) if len(equity) else start_cash
    days = max((equity.index[-1] - equity.index[0]).days, 1) if len(equity) else 1
    years = days / 365.25
    total = final / start_cash - 1.0
    # in log space, capped: a short run's growth to the power 365/days would overflow a float
    cagr = math.expm1(min(math.log(final / start_cash) / years, 700.0)) if final > 0 and years > 0 else -1.0
    peak = equity["value"].cummax()
    dd = equity["value"] / peak - 1.0
    sd = rets.std(ddof=1)
    downside = rets[rets < 0]
    dsd = math.sqrt((downside ** 2).sum() / len(rets)) if len(rets) else 0.0
    bench = equity["close"]
    n = len(trades)
    wins = int((trades["pnl"] > 0).sum()) if n else 0
    return {
        "start_cash": start_cash, "final_value": final, "total_return": total, "cagr": cagr,
        "max_drawdown": float(dd.min()) if len(dd) else 0.0,
        "sharpe": float(rets.mean() / sd * ann) if len(rets) > 1 and sd > 0 else 0.0,
        "sortino": float(rets.mean() / dsd * ann) if dsd > 0 else 0.0, "periods_per_year": float(periods),
        "trades": n, "wins": wins, "win_rate": wins / n if n else 0.0,
        "knockouts": int((trades["exit_reason"] == "knockout").sum()) if n else 0,
        "stops": int((trades["exit_reason"] == "stop").sum()) if n else 0,
        "session_end_exits": int((trades["exit_reason"] == "session_end").sum()) if n else 0,
        "signal_exits": int((trades["exit_reason"] == "signal").sum()) if n else 0,
        "avg_leverage": _mean_or_none(trades["leverage"]) if n else 0.0,
        "fees": float(trades["fees"].sum()) if n else 0.0,
        "financing": float(trades["financing"].sum()) if n else 0.0,
        "exposure": float(equity["in_position"].mean()) if len(equity) else 0.0,
        "buy_and_hold_return": float(bench.iloc[-1] / bench.iloc[0] - 1.0) if len(bench) else 0.0,
        "bars": int(len(equity)), "start": str(equity.index[0]) if len(equity) else None,
        "end": str(equity.index[-1]) if len(equity) else None,
    }


def _mean_or_none(values: pd.Series) -> Optional[float]:
    """Mean of the finite values; None where there are none (trades of plain backtrader orders)."""
    v = pd.to_numeric(values, errors="coerce").replace(np.inf, np.nan)
    return float(v.mean()) if v.notna().any() else None


class KnockoutStats(EquityCurve):
    """Knock-outs, stops, win rate, average leverage at entry, exposure, returns, drawdown, Sharpe, Sortino."""

    def start(self) -> None:
        super().start()
        self._rows: list = []
        self._cash0 = self.strategy.broker.getcash()
        self._bt = BacktraderTrades(self.strategy)

    def notify_order(self, order) -> None:
        if order.status == order.Completed:
            self._bt.order(order)
            if "roundtrip" in order.info:
                self._rows.append(dict(order.info["roundtrip"]))

    def notify_trade(self, trade) -> None:
        row = self._bt.trade(trade)
        if row is not None:
            self._rows.append(row)

    def get_analysis(self) -> dict:
        return performance(self.to_frame(), trades_frame(self._rows), self._cash0)


def export_json(analysis: dict, path: Union[str, Path]) -> None:
    """Write an analysis dict as JSON (atomically)."""
    atomic_write_text(path, json.dumps(analysis, indent=2, default=_jsonable))


def export_csv(frame: pd.DataFrame, path: Union[str, Path]) -> None:
    """Write a table as CSV (atomically)."""
    atomic_write_text(path, frame.to_csv(index=frame.index.name is not None))


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (pd.Timestamp,)):
        return o.isoformat()
    return str(o)
