"""The two legs of an execution of :class:`~mltrade.brokers.book.DefaultBook` (orders without ``product=``):
closing certificates held, opening new ones (or refusing to), and recording both on the order and the
position (a mixin of the book: :meth:`DefaultBook._execute` runs the steps)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import backtrader as bt

from mltrade.products import KnockoutProduct

#: stock-like accounting for the strategy's Trade objects (profit = size * price change)
LONG_INFO = bt.CommInfoBase(commission=0.0, percabs=True)
#: a short certificate held in a negative position gains when its price rises: P&L sign flipped
SHORT_INFO = bt.CommInfoBase(commission=0.0, percabs=True, mult=-1.0)


@dataclass
class _Leg:
    """One leg of an execution of :class:`DefaultBook`: certificates closed or opened (signed), their price,
    value and fee, the closed leg's pnl, the opened leg's product or why it was refused."""

    size: float = 0.0
    price: float = 0.0
    value: float = 0.0
    comm: float = 0.0
    pnl: float = 0.0
    product: Optional[KnockoutProduct] = None
    refused: Optional[str] = None


class BookLegs:
    """Closing, opening and recording the legs of an execution (mixin of ``DefaultBook``)."""

    def _close_leg(self, order, data, closed: float, old_size: float, old_price: float, level: float,
                   cash: float, pseudo: bool) -> tuple:
        """``(leg, cash)``: the ``closed`` certificates sold at their bid (a tracker's short covered at the ask)
        at index ``level``, with the first fee."""
        leg = _Leg(size=closed)
        if not closed:
            return leg, cash
        spec = self.spec is not None
        n = abs(closed)
        held = self._held.get(data) or self._product_for(order, 1 if old_size > 0 else -1, data)
        fx = self._fx(held)
        if old_size > 0 or spec:      # certificates sold at their bid
            leg.price = held.bid_scalar(level, fx)
            cash += n * leg.price
            leg.pnl = n * (leg.price - old_price)
        else:                         # a tracker's short covered at the ask
            leg.price = held.fair_scalar(level, fx)
            cash -= n * leg.price
            leg.pnl = n * (old_price - leg.price)
        leg.value = -closed * old_price if not spec else n * old_price
        leg.comm = self._fee(n, leg.price, True)
        cash -= leg.comm
        if not pseudo:
            self.cash = cash
        return leg, cash

    def _open_leg(self, order, data, opened: float, level: float, cash: float, pseudo: bool,
                  first: bool) -> tuple:
        """``(leg, cash)``: the ``opened`` certificates bought at index ``level`` (a tracker sold short at its
        bid), or refused (``leg.size`` 0, ``leg.refused`` the reason; None: not enough cash)."""
        leg = _Leg(size=opened)
        if not opened:
            return leg, cash
        spec = self.spec is not None
        n = abs(opened)
        direction = 1 if opened > 0 else -1
        product = leg.product = self._product_for(order, direction, data)
        fx = self._fx(product)
        short_sale = not spec and direction < 0
        if short_sale and not product.is_tracker:
            leg.refused = "no_short_certificate"
        elif (not spec and self._dead_fixed) or (direction * product.direction > 0 and (
                level <= product.barrier if product.direction > 0 else level >= product.barrier)):
            leg.refused = "knocked_out"
        if leg.refused is None:
            op = leg.price = product.bid_scalar(level, fx) if short_sale else product.fair_scalar(level, fx)
            if op <= 0 and not short_sale:
                leg.refused = "no_quote"
        if leg.refused is not None:
            leg.size = 0
        else:
            leg.value = opened * op if not spec else n * op
            cash += n * op if short_sale else -n * op
            leg.comm = self._fee(n, op, first)
            cash -= leg.comm
            if cash < 0.0:
                leg.size = 0
                leg.value = leg.comm = 0.0
            elif not pseudo:
                self.cash = cash
        return leg, cash

    def _record_execution(self, order, ago, dtcoc, pos, close: "_Leg", open_: "_Leg", old_size: float) -> None:
        """Update the position and execute ``order`` with its closing and opening legs (two executions where
        their prices differ), then notify."""
        data = order.data
        closed, opened, cp, op = close.size, open_.size, close.price, open_.price
        dt = dtcoc or data.datetime[ago]
        when = data.datetime.datetime()
        short_closed = self.spec is not None and closed and old_size < 0
        if closed:
            pos.update(closed, cp, when)
            if not pos.size:
                self._held.pop(data, None)
        if opened:
            pos.update(opened, op, when)
            self._held[data] = open_.product
            self._owners[data] = order.owner
        if closed or opened:
            if closed and opened and cp != op:
                order.execute(dt, closed, cp, closed, close.value, close.comm, 0, 0.0, 0.0,
                              None, close.pnl, 0, 0.0)
                order.execute(dt, opened, op, 0, 0.0, 0.0, opened, open_.value, open_.comm,
                              None, 0.0, pos.size, pos.price)
            else:
                order.execute(dt, closed + opened, cp if closed else op, closed, close.value, close.comm,
                              opened, open_.value, open_.comm, None, close.pnl, pos.size, pos.price)
            order.addcomminfo(SHORT_INFO if short_closed or (self.spec is not None and opened < 0 and not closed)
                              else LONG_INFO)
            self.notify(order)
            self._ococheck(order)

    def _refuse_opening(self, order, refused: Optional[str]) -> None:
        """An order whose opening leg was refused: Rejected with the reason, or Margin (not enough cash)."""
        if refused is not None:
            order.addinfo(reject_reason=refused)
            order.reject()
        else:
            order.margin()
        self.notify(order)
        self._ococheck(order)
        self._bracketize(order, cancel=True)
