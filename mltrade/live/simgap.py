"""Live beside its simulation: the same sessions and the same decisions re-run through ``KnockoutBroker``.

During a live or paper run :class:`DecisionRecorder` records the bars the strategy saw and every
order the strategy itself placed (bar, side, certificate, stake/size, stop, reason; stops,
knock-outs and closes the broker made on its own are not decisions). :func:`simulate` replays those
decisions on those bars through the backtest's ``KnockoutBroker`` with the config's costs, and
:func:`compare` lines the live round trips up with the simulated ones, trade by trade: entry and exit
price (certificate terms) at the venue vs simulated, sizes, fees, P&L and the running gap. A paper
run is a ``KnockoutBroker`` run, so its gap is exactly 0; a venue's spread, fill delay or partial
fills show up as the gap.
"""
from __future__ import annotations

import html
from typing import Any, Dict, List, Optional, Tuple

import backtrader as bt
import pandas as pd


class DecisionRecorder(bt.Analyzer):
    """Bars (OHLCV) and the strategy's own orders, for :func:`simulate`."""

    def start(self) -> None:
        self.bars: List[tuple] = []
        self.decisions: List[dict] = []
        self._seen: set = set()

    def next(self) -> None:
        d = self.strategy.data
        self.bars.append((d.datetime.datetime(0), float(d.open[0]), float(d.high[0]), float(d.low[0]),
                          float(d.close[0]), float(d.volume[0])))

    def notify_order(self, order: bt.Order) -> None:
        if order.ref in self._seen:
            return
        self._seen.add(order.ref)
        if order.status not in (bt.Order.Submitted, bt.Order.Accepted):
            return         # first seen completed/rejected: the broker's own (stop, knock-out, retry)
        product = order.info.get("product")
        if product is None:
            return
        d = order.data
        self.decisions.append({
            "time": d.num2date(order.created.dt).replace(tzinfo=None) if order.created.dt else None,
            "side": "buy" if order.isbuy() else "sell", "product": product, "pid": product.id,
            "stake": order.info.get("stake"), "size": None if order.info.get("stake") else abs(order.size),
            "stop": order.info.get("stop"), "reason": order.info.get("reason", "signal"),
            "exectype": order.exectype})

    def frame(self) -> pd.DataFrame:
        """The recorded bars as an ``IndexData`` frame (naive UTC index)."""
        df = pd.DataFrame(self.bars, columns=["datetime", "open", "high", "low", "close", "volume"])
        return df.set_index("datetime")


class _Replay(bt.Strategy):
    params = (("decisions", ()),)

    def __init__(self) -> None:
        self.by_time: Dict[Any, List[dict]] = {}
        for dec in self.p.decisions:
            self.by_time.setdefault(dec["time"], []).append(dec)
        self.products: Dict[int, Any] = {}
        self.done: List[Tuple[dict, Any]] = []

    def next(self) -> None:
        t = self.data.datetime.datetime(0)
        for dec in self.by_time.get(t, []):
            if dec["side"] == "buy":
                p = dec["product"].copy()
                self.products[dec["pid"]] = p
                o = self.buy(data=self.data, size=dec["size"], product=p, stake=dec["stake"],
                             stop=dec["stop"])
            else:
                p = self.products.get(dec["pid"])
                held = self.broker.getposition(self.data, product=p).size if p is not None else 0
                if not held:
                    continue       # already stopped or knocked out in the simulation
                o = self.sell(data=self.data, size=held, product=p, exectype=bt.Order.Close,
                              reason=dec["reason"])
            self.done.append((dec, o))


def simulate(cfg: dict, bars: pd.DataFrame, decisions: List[dict], cash: float,
             exchange: Optional[str] = None, interval: Optional[int] = None) -> List[dict]:
    """Round trips of ``decisions`` replayed on ``bars`` through ``KnockoutBroker`` (config costs)."""
    from mltrade.brokers.knockout import KnockoutBroker
    from mltrade.feeds.bars import IndexData

    if bars.empty or not decisions:
        return []
    b = cfg.get("broker", {})
    cerebro = bt.Cerebro(stdstats=False)
    bcfg = cfg.get("backtest", {})
    cerebro.adddata(IndexData(dataframe=bars, exchange=exchange or bcfg.get("exchange", "XNAS"),
                              interval=interval or int(bcfg.get("interval", 5))), name="index")
    cerebro.broker = KnockoutBroker(cash=float(cash), commission_fixed=float(b.get("commission_fixed", 0.0)),
                                    commission_pct=float(b.get("commission_pct", 0.0)),
                                    fractional=bool(b.get("fractional", False)))
    cerebro.addstrategy(_Replay, decisions=list(decisions))
    cerebro.run()
    return list(cerebro.broker.roundtrips)


def compare(live: List[dict], sim: List[dict]) -> Dict[str, Any]:
    """Trade-by-trade gap (live minus simulated, in the order the trades were opened) and its total."""
    rows, running = [], 0.0
    n = max(len(live), len(sim))
    for i in range(n):
        a = live[i] if i < len(live) else None
        s = sim[i] if i < len(sim) else None
        pnl_live = round(float(a["pnl"]), 2) if a else 0.0
        pnl_sim = round(float(s["pnl"]), 2) if s else 0.0
        gap = round(pnl_live - pnl_sim, 2)
        running = round(running + gap, 2)
        rows.append({
            "trade": i + 1, "direction": (a or s)["direction"], "barrier": (a or s)["barrier"],
            "entry_time": (a or s)["entry_time"],
            "size_live": a["size"] if a else 0, "size_sim": s["size"] if s else 0,
            "entry_live": a["entry_price"] if a else None, "entry_sim": s["entry_price"] if s else None,
            "exit_live": a["exit_price"] if a else None, "exit_sim": s["exit_price"] if s else None,
            "exit_time_live": a["exit_time"] if a else "", "exit_time_sim": s["exit_time"] if s else "",
            "exit_reason_live": a["exit_reason"] if a else "",
            "exit_reason_sim": s["exit_reason"] if s else "",
            "fees_live": round(float(a["fees"]), 2) if a else 0.0,
            "fees_sim": round(float(s["fees"]), 2) if s else 0.0,
            "pnl_live": pnl_live, "pnl_sim": pnl_sim, "gap": gap, "running_gap": running})
    return {"trades": rows, "total": running, "live_pnl": round(sum(r["pnl_live"] for r in rows), 2),
            "sim_pnl": round(sum(r["pnl_sim"] for r in rows), 2), "n_live": len(live), "n_sim": len(sim)}


def section(gap: Dict[str, Any], mode: str) -> Tuple[str, str]:
    """``(title, html)`` of the live-vs-simulation table for the report."""
    def f(x: Any, nd: int = 2) -> str:
        return "-" if x is None else (f"{x:,.{nd}f}" if isinstance(x, (int, float)) else html.escape(str(x)))
    head = ("<tr><th>#</th><th>entry</th><th>dir</th><th>barrier</th><th>size live / sim</th>"
            "<th>entry live / sim</th><th>exit live / sim</th><th>exit reason</th><th>fees live / sim</th>"
            "<th>P&amp;L live</th><th>P&amp;L sim</th><th>gap</th><th>running gap</th></tr>")
    body = "".join(
        f"<tr><td>{r['trade']}</td><td>{html.escape(str(r['entry_time']))}</td><td>{r['direction']}</td>"
        f"<td>{f(r['barrier'])}</td><td>{f(r['size_live'], 0)} / {f(r['size_sim'], 0)}</td>"
        f"<td>{f(r['entry_live'])} / {f(r['entry_sim'])}</td>"
        f"<td>{f(r['exit_live'])} / {f(r['exit_sim'])}</td>"
        f"<td>{html.escape(r['exit_reason_live'])} / {html.escape(r['exit_reason_sim'])}</td>"
        f"<td>{f(r['fees_live'])} / {f(r['fees_sim'])}</td><td>{f(r['pnl_live'])}</td>"
        f"<td>{f(r['pnl_sim'])}</td>"
        f"<td>{f(r['gap'])}</td><td>{f(r['running_gap'])}</td></tr>" for r in gap["trades"])
    text = (f"<p>The same sessions and the same decisions re-run through the simulated KnockoutBroker "
            f"(config costs). {mode} P&amp;L {gap['live_pnl']:,.2f}, simulated {gap['sim_pnl']:,.2f}: "
            f"gap {gap['total']:+,.2f} ({gap['n_live']} live, {gap['n_sim']} simulated round trips).</p>")
    return ("Live beside its simulation", text + f"<table>{head}{body}</table>")
