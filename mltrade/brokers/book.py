"""Orders without ``product=`` on a ``KnockoutBroker``: backtrader's own order engine, priced on certificates.

A :class:`KnockoutBroker` built with ``product=`` (a :class:`~mltrade.products.KnockoutProduct` or a
:class:`~mltrade.products.CertificateSpec`) hands every order that names no product to a
:class:`DefaultBook`, a subclass of backtrader's ``BackBroker``. Order handling — Market, Close,
Limit, Stop, StopLimit, StopTrail, StopTrailLimit, brackets, OCO, ``valid``/DAY expiry, cancel,
cheat-on-close/open, the Margin check at submission and at execution, Submitted/Accepted
notifications — is backtrader's, unchanged. What changes is the execution:

* Order prices (``price``, ``plimit``, ``trailamount``) are index levels, as on BackBroker, so a
  strategy written for the index runs unchanged. An order triggers when the index reaches its
  level, which is the same as the certificate's bid (ask) reaching the certificate price at that
  level; it fills at the certificate's **ask** when certificates are bought and at their **bid**
  when they are sold, at the index level where BackBroker would fill it.
* A fixed product is held as one signed position. Only a tracker (strike 0, see
  :meth:`KnockoutProduct.tracker`) can be sold short (cash credited as on BackBroker); selling any
  other fixed certificate beyond the holding is rejected (``info['reject_reason'] = 'no_short_certificate'``).
* A spec holds a long position in a long certificate and a short position in a short certificate,
  each chosen from the index close when the order that opens it was placed. ``getposition()``
  is signed like backtrader's (short certificates count negative, ``price`` is the certificate's
  average entry price); ``sell(3)`` holding 1 sells the long certificate and buys 2 short ones (two
  executions of one order). Cash pays for certificates in both directions.
* Knock-out precedence: on a bar whose range reaches the held certificate's barrier, the bar is
  read as open → barrier → rest. Orders that fill at the open (Market, limits already through at the
  open, stops gapped through) and closing Stop/StopTrail orders whose level lies between the open
  and the barrier fill first; then the certificate is knocked out (mini future: residual at the
  issuer's unwind level, turbo: 0, no fee); every other order of that bar on the side that would
  have reduced it is cancelled (``info['reject_reason'] = 'knocked_out'``). An open beyond the barrier
  knocks out before anything. A certificate whose barrier lies at or beyond the fill level is not
  bought (the order is Rejected, ``'knocked_out'``); one bought during a bar is knocked out by that
  bar when its range reaches the barrier (pessimistic: the fill is taken to come first).
* Sizes are whole certificates unless the broker has ``fractional=True``; ``Historical`` orders,
  ``stake=``/``stop=`` (features of orders with ``product=``), volume fillers and fund mode raise.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Union

import backtrader as bt

from mltrade.brokers.book_legs import LONG_INFO, SHORT_INFO, BookLegs
from mltrade.products import CertificateSpec, KnockoutProduct, unwind_price

Default = Union[KnockoutProduct, CertificateSpec]


class CertificateSizing(bt.CommInfoBase):
    """``getsize`` in certificates: cash divided by the default certificate's ask at an index price.

    backtrader's ``order_target_value``/``order_target_percent`` size orders with it.
    """

    params = (("stocklike", True), ("commtype", bt.CommInfoBase.COMM_PERC), ("percabs", True),
              ("book", None))

    def getsize(self, price, cash):
        unit = self.p.book.unit_price(price)
        return int(cash // unit) if unit > 0 else 0


class DefaultBook(BookLegs, bt.brokers.BackBroker):
    """backtrader's BackBroker for one KnockoutBroker's orders without ``product=`` (see the module doc)."""

    def __init__(self, owner, default: Default) -> None:
        self._kb = owner            # set first: BackBroker.__init__ writes ``cash``
        self.default = default
        self.spec = default if isinstance(default, CertificateSpec) else None
        super().__init__()
        self.p.cash = owner.p.cash
        self._fresh()

    def _fresh(self) -> None:
        self._held: Dict[Any, KnockoutProduct] = {}     #: data -> certificate held in its position
        self._owners: Dict[Any, Any] = {}               #: data -> strategy that opened it
        self._due: Dict[Any, list] = {}                 #: data -> [product, gapped, done] this bar
        self._ko_side: Dict[Any, int] = {}              #: data -> side knocked out this bar
        self._ko_len: Dict[Any, int] = {}
        self._financed: Dict[int, int] = {}
        self._dead_fixed = False
        self.used = False

    # cash is the KnockoutBroker's: one account for orders with and without product=
    @property
    def cash(self) -> float:
        return self._kb.cash

    @cash.setter
    def cash(self, value: float) -> None:
        self._kb.cash = value

    def start(self) -> None:
        self.p.cash = self._kb.p.cash
        super().start()
        self._fresh()

    def getcommissioninfo(self, data):
        return LONG_INFO

    # ------------------------------------------------------------------ pricing
    def _fx(self, product: KnockoutProduct) -> float:
        return self._kb._fx(product)

    def unit_price(self, index: float) -> float:
        """What one certificate of the current default costs at ``index`` (for sizing)."""
        product = self.default if self.spec is None else self.spec.product_for(1, float(index))
        return product.fair_scalar(float(index), self._fx(product))

    def _product_for(self, order, direction: int, data) -> Optional[KnockoutProduct]:
        held = self._held.get(data)
        pos = self.positions[data]
        if held is not None and pos.size and (pos.size > 0) == (direction > 0):
            return held
        if self.spec is None:
            return self.default
        key = "_cert_long" if direction > 0 else "_cert_short"
        product = order.info.get(key)
        if product is None:
            product = self.spec.product_for(direction, float(order.created.pclose))
            order.info[key] = product
        return product

    def position_value(self, data, signed: bool = True) -> float:
        """The position on ``data`` marked at the certificate's bid at the last close."""
        pos = self.positions.get(data)
        if pos is None or not pos.size or not len(data):
            return 0.0
        product = self._held[data]
        close = float(data.close[0])
        fx = self._fx(product)
        if self.spec is None:   # one signed position: a tracker's short is marked at the ask, as a stock's
            return pos.size * (product.bid_scalar(close, fx) if pos.size > 0 else product.fair_scalar(close, fx))
        value = abs(pos.size) * product.bid_scalar(close, fx)
        return -value if signed and pos.size < 0 else value

    def positions_value(self) -> float:
        """All positions at their bid (short certificates are assets too)."""
        return sum(self.position_value(d, signed=self.spec is None) for d in self.positions)

    def _fee(self, n: float, price: float, first: bool) -> float:
        kb = self._kb
        return (kb.p.commission_fixed if first else 0.0) + kb.p.commission_pct * n * price + kb._comm_unit * n

    # ------------------------------------------------------------------ orders
    def buy(self, owner, data, size, *args, **kwargs):
        self.used = True
        return super().buy(owner, data, size, *args, **kwargs)

    def sell(self, owner, data, size, *args, **kwargs):
        self.used = True
        return super().sell(owner, data, size, *args, **kwargs)

    def _execute(self, order, ago=None, price=None, cash=None, position=None, dtcoc=None):
        """backtrader's execution (``ago is None``: the Margin check at submission, returning the cash left)
        priced on certificates: the closing leg, then the opening leg, recorded on the order and position."""
        if ago is not None and price is None:
            return None
        size = order.executed.remsize
        data = order.data
        pseudo = ago is None
        if pseudo:
            level = order.created.price
            if self.p.coo and order.exectype == bt.Order.Market:
                level = data.open[0]
            pos = position
        else:
            level = price
            pos = self.positions[data]
            cash = self.cash
        level = float(level)
        old_size, old_price = pos.size, pos.price
        _, _, opened, closed = bt.Position(old_size, old_price).update(size, level)
        close, cash = self._close_leg(order, data, closed, old_size, old_price, level, cash, pseudo)
        open_, cash = self._open_leg(order, data, opened, level, cash, pseudo, first=not closed)
        if pseudo:
            return cash   # a refusal is reported at execution, with its reason
        self._record_execution(order, ago, dtcoc, pos, close, open_, old_size)
        if opened and not open_.size:
            self._refuse_opening(order, open_.refused)
        return None

    # ------------------------------------------------------------------ knock-outs
    def _get_value(self, datas=None, lever=False):
        """Unused: the KnockoutBroker values positions itself (BackBroker would mark at the index)."""
        return self.cash

    def next(self) -> None:
        if self.spec is None and self.default.is_tracker:    # never knocked out, never financed
            super().next()
            return
        self._due, self._ko_side = {}, {}
        for data, product in list(self._held.items()):
            n = len(data)
            if not n or self._ko_len.get(data) == n:
                continue
            if product.kind == "minifuture":
                self._finance(product, data)
            if product.is_tracker:
                continue
            o, h, lo = float(data.open[0]), float(data.high[0]), float(data.low[0])
            b = product.barrier
            if (lo <= b) if product.direction > 0 else (h >= b):
                gapped = (o <= b) if product.direction > 0 else (o >= b)
                self._due[data] = [product, gapped, False]
        for data, due in self._due.items():
            if due[1]:
                self._knockout(data, due)
        super().next()
        for data, due in self._due.items():
            if not due[2]:
                self._knockout(data, due)
        # certificates bought on this bar whose barrier the bar reaches (pessimistic: after the fill)
        for data, product in list(self._held.items()):
            if data in self._due or product.is_tracker or not len(data):
                continue
            if self._ko_len.get(data) == len(data):
                continue
            b = product.barrier
            if (float(data.low[0]) <= b) if product.direction > 0 else (float(data.high[0]) >= b):
                self._knockout(data, [product, False, False])
        self._due = {}

    def _finance(self, product: KnockoutProduct, data) -> None:
        day = int(math.floor(data.datetime[0] + 1e-9))
        last = self._financed.setdefault(product.id, day)
        if day > last:
            self._financed[product.id] = day
            product.apply_financing(day - last)

    def _first_on_path(self, order, product: KnockoutProduct) -> bool:
        """Whether ``order`` would fill before the barrier on the bar (at the open or on the way to it)."""
        et = order.exectype
        if et == bt.Order.Market:
            return True
        data = order.data
        o = float(data.open[0])
        closing = order.issell() if product.direction > 0 else order.isbuy()
        level = order.created.price
        if et == bt.Order.Limit:
            return (level >= o) if order.isbuy() else (level <= o)
        if et in (bt.Order.Stop, bt.Order.StopTrail):
            if (level >= o) if order.isbuy() else (level <= o):
                return True        # gapped through at the open
            b = product.barrier
            return closing and ((level > b) if product.direction > 0 else (level < b))
        return False

    def _try_exec(self, order):
        data = order.data
        due = self._due.get(data)
        if due is not None and not due[2] and not self._first_on_path(order, due[0]):
            self._knockout(data, due)
        side = self._ko_side.get(data)
        if side is not None and (order.issell() if side > 0 else order.isbuy()):
            order.addinfo(reject_reason="knocked_out")
            order.cancel()
            self.notify(order)
            self._ococheck(order)
            self._bracketize(order, cancel=True)
            return
        super()._try_exec(order)

    def _knockout(self, data, due: list) -> None:
        product, gapped = due[0], due[1]
        due[2] = True
        pos = self.positions[data]
        self._ko_len[data] = len(data)
        if self._held.get(data) is not product or not pos.size:
            return
        fx = self._fx(product)
        o, h, lo, c = (float(data.open[0]), float(data.high[0]), float(data.low[0]), float(data.close[0]))
        unwind = float(unwind_price(product.direction, product.barrier, o, lo, h, c, product.unwind, gapped))
        residual = float(product.residual(unwind, fx))
        event = {"product": product.name, "time": data.num2date().isoformat(),
                 "barrier": product.barrier, "gapped": gapped, "unwind": unwind, "residual": residual}
        self._kb.knockouts.append(event)
        n, closed = abs(pos.size), -pos.size
        cls = bt.SellOrder if pos.size > 0 else bt.BuyOrder
        order = cls(owner=self._owners.get(data), data=data, size=n, exectype=bt.Order.Market)
        order.addinfo(reason="knockout", knockout=event, product=product)
        order.submit(self)
        order.accept(self)
        entry = pos.price
        self.cash += n * residual
        pos.update(closed, residual, data.datetime.datetime())
        self._held.pop(data, None)
        if self.spec is None:
            self._dead_fixed = True
        order.execute(data.datetime[0], closed, residual, closed, n * entry, 0.0, 0, 0.0, 0.0,
                      None, n * (residual - entry), 0, 0.0)
        order.addcomminfo(SHORT_INFO if closed > 0 and self.spec is not None else LONG_INFO)
        self.notify(order)
        self._ko_side[data] = 1 if closed < 0 else -1
