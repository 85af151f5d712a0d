"""Paper trading: the lead's ``KnockoutBroker`` filling against live prices, plus the live safety layer.

``PaperBroker`` adds what a live run has around the broker: risk limits and
the kill switch before every new position, notifications on fills, stops and
knock-outs, and an audit trail in the order journal (status ``paper``).
"""
from __future__ import annotations

import logging
from typing import Optional

import backtrader as bt

from mltrade.brokers.knockout import KnockoutBroker
from mltrade.live.journal import OrderJournal
from mltrade.live.notify import Notifier, event_for_close
from mltrade.live.risk import RiskGuard, RiskViolation

log = logging.getLogger("mltrade.live")


class PaperBroker(KnockoutBroker):
    """``KnockoutBroker`` with risk checks, notifications and journal entries (paper mode)."""

    params = (("risk", None), ("notifier", None), ("journal", None))

    def __init__(self) -> None:
        super().__init__()
        self.risk: RiskGuard = self.p.risk or RiskGuard()
        self.notifier: Notifier = self.p.notifier or Notifier()
        self.journal: Optional[OrderJournal] = self.p.journal
        self.risk_rejections: list = []

    def _order(self, cls, owner, data, size, price, plimit, exectype, valid, kwargs):
        if cls is bt.BuyOrder:
            product = kwargs.get("product")
            stake = kwargs.get("stake")
            index = float(data.close[0]) if len(data) else None
            day = data.datetime.date(0) if len(data) else None
            if product is not None and index is not None:
                ask = float(product.ask(index))
                budget = min(stake, self.cash) if stake is not None else (size or 0) * ask
                try:
                    self.risk.check_open(budget, product.leverage(index), day,
                                         open_positions=len(self.positions))
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
                    log.warning("paper: order refused by risk limits: %s", e.reason)
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
                self.journal.begin("buy", direction=product.direction, barrier=product.barrier,
                                   size=order.executed.size, price=order.executed.price, status="paper",
                                   day=day)
            self.notifier.notify("buy", direction="Long" if product.direction > 0 else "Short",
                                 barrier=product.barrier, size=order.executed.size,
                                 price=order.executed.price)
        elif "roundtrip" in order.info:
            rt = order.info["roundtrip"]
            self.risk.record_close(day, rt["pnl"])
            if self.journal is not None:
                self.journal.begin("close", size=rt["size"], price=rt["exit_price"], status="paper", day=day,
                                   pnl=rt["pnl"], reason=rt["exit_reason"])
            self.notifier.notify(event_for_close(rt["exit_reason"], rt["pnl"]), price=rt["exit_price"],
                                 pnl=rt["pnl"], barrier=rt["barrier"])
