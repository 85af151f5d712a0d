"""Paper trading: the lead's ``KnockoutBroker`` filling against live prices, plus the live safety layer.

``PaperBroker`` adds what a live run has around the broker: risk limits and
the kill switch before every new position, notifications on fills, stops and
knock-outs, an audit trail in the order journal (status ``paper``; a close row's
``parent`` is its buy) and, with an :class:`~mltrade.live.account.Account`, a
persistent account: cash and open positions are saved after every fill and
restored by the next run.
"""
from __future__ import annotations

import logging
from datetime import date
from typing import Any, Dict, List, Optional

import backtrader as bt

from mltrade.brokers.knockout import CertPosition, KnockoutBroker
from mltrade.live.account import Account, SavedPosition, product_from_dict, product_to_dict
from mltrade.live.journal import OrderJournal
from mltrade.live.logfile import file_only
from mltrade.live.notify import Notifier, event_for_close
from mltrade.live.risk import RiskGuard, RiskViolation

log = logging.getLogger("mltrade.live")


class PaperBroker(KnockoutBroker):
    """``KnockoutBroker`` with risk checks, notifications and journal entries (paper mode)."""

    params = (("risk", None), ("notifier", None), ("journal", None), ("account", None))

    def __init__(self) -> None:
        super().__init__()
        self.risk: RiskGuard = self.p.risk or RiskGuard()
        self.notifier: Notifier = self.p.notifier or Notifier()
        self.journal: Optional[OrderJournal] = self.p.journal
        self.account: Optional[Account] = self.p.account
        self.risk_rejections: list = []
        self.refs: Dict[int, str] = {}          #: product id -> journal ref of the buy that opened it
        self._data: Any = None
        state = self.account.load() if self.account is not None else None
        self._saved: List[SavedPosition] = list(state.positions) if state is not None else []
        if state is not None:
            self.p.cash = state.cash

    def setdata(self, data: Any) -> None:
        """The index feed that positions carried over from an earlier run belong to."""
        self._data = data

    def start(self) -> None:
        super().start()
        self.refs = {}
        if self._saved and self._data is None:
            raise ValueError("paper account: open positions from an earlier run need setdata(data) "
                             "before the run starts")
        for sp in self._saved:
            product = product_from_dict(sp.product)
            self.products[product.id] = product
            self.refs[product.id] = sp.ref
            self.positions[product.id] = CertPosition(
                product=product, data=self._data, size=sp.size, price=sp.price, stop_price=sp.stop_price,
                entry_dt=sp.entry_dt, entry_underlying=sp.entry_underlying, entry_strike=product.strike,
                entry_barrier=product.barrier if product.barrier is not None else product.strike,
                entry_leverage=sp.entry_leverage, cost=sp.cost, entry_fees=sp.entry_fees, fees=sp.fees,
                financing=sp.financing)
            log.info("paper: position %s (%g certificates, barrier %.2f) carried over from the last run",
                     sp.ref, sp.size, product.barrier or product.strike)

    def saved_positions(self) -> List[SavedPosition]:
        """The open positions as the account stores them."""
        out = []
        for pid, pos in self.positions.items():
            when = pos.data.num2date(pos.entry_dt).isoformat() if pos.data is not None else ""
            out.append(SavedPosition(
                ref=self.refs.get(pid, ""), product=product_to_dict(pos.product), size=pos.size,
                price=pos.price, entry_dt=pos.entry_dt, entry_time=when,
                entry_underlying=pos.entry_underlying,
                stop_price=pos.stop_price, entry_leverage=pos.entry_leverage, cost=pos.cost,
                entry_fees=pos.entry_fees, fees=pos.fees, financing=pos.financing))
        return out

    def save_account(self) -> None:
        """Store cash and open positions (one transaction); no-op without an account."""
        if self.account is not None:
            self.account.save(self.cash, self.saved_positions())

    def set_stop(self, product: Any, price: Optional[float]) -> None:
        super().set_stop(product, price)
        self.save_account()

    def _day_stats(self, day: Optional[date]) -> tuple:
        """Buys and realised P&L of ``day`` from the journal (they survive restarts)."""
        if self.journal is None or day is None:
            return None, None
        rows = [e for e in self.journal.entries() if e.day == day.isoformat() and e.status == "paper"]
        buys = sum(e.action == "buy" for e in rows)
        pnl = sum(float(e.info.get("pnl") or 0.0) for e in rows if e.action == "close")
        return max(buys, self.risk.trades.get(day, 0)), pnl

    def _order(self, cls, owner, data, size, price, plimit, exectype, valid, kwargs):
        if cls is bt.BuyOrder:
            product = kwargs.get("product")
            stake = kwargs.get("stake")
            index = float(data.close[0]) if len(data) else None
            day = data.datetime.date(0) if len(data) else None
            if product is not None and index is not None:
                ask = float(product.ask(index))
                budget = min(stake, self.cash) if stake is not None else (size or 0) * ask
                trades_today, pnl_today = self._day_stats(day)
                try:
                    self.risk.check_open(budget, product.leverage(index), day,
                                         open_positions=len(self.positions), trades_today=trades_today,
                                         pnl_today=pnl_today)
                except RiskViolation as e:
                    self.risk_rejections.append(e.reason)
                    order = cls(owner=owner, data=data, size=size if size else 1, price=price,
                                exectype=exectype, tradeid=product.id)
                    order.addinfo(product=product, stake=stake, stop=kwargs.get("stop"),
                                  reason=kwargs.get("reason", "signal"))
                    order.addcomminfo(self._comminfo)
                    order.submit(self)
                    order.accept(self)
                    self.notify(order)
                    self._reject(order, f"risk: {e.reason}")
                    file_only(logging.WARNING, "paper: order refused by risk limits: %s", e.reason)
                    return order
        return super()._order(cls, owner, data, size, price, plimit, exectype, valid, kwargs)

    def notify(self, order: bt.Order) -> None:
        super().notify(order)
        if order.status != order.Completed:
            return
        product = order.info.get("product")
        data = order.data
        day = data.datetime.date(0) if data is not None and len(data) else None
        if order.isbuy():
            self.risk.record_open(day)
            if self.journal is not None:
                self.refs[product.id] = self.journal.begin(
                    "buy", direction=product.direction, barrier=product.barrier, size=order.executed.size,
                    price=order.executed.price, status="paper", day=day)
            self.notifier.notify("buy", direction="Long" if product.direction > 0 else "Short",
                                 barrier=product.barrier, size=order.executed.size,
                                 price=order.executed.price)
        elif "roundtrip" in order.info:
            rt = order.info["roundtrip"]
            self.risk.record_close(day, rt["pnl"])
            if self.journal is not None:
                self.journal.begin("close", size=rt["size"], price=rt["exit_price"], status="paper", day=day,
                                   parent=self.refs.pop(product.id, None), pnl=rt["pnl"],
                                   reason=rt["exit_reason"])
            self.notifier.notify(event_for_close(rt["exit_reason"], rt["pnl"]), price=rt["exit_price"],
                                 pnl=rt["pnl"], barrier=rt["barrier"])
        self.save_account()
