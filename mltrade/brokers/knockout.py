"""``KnockoutBroker``: a backtrader broker that simulates knock-out certificates honestly.

Orders are placed on a :class:`~mltrade.products.KnockoutProduct` that
references an underlying data feed (``strategy.buy(data=index, size=..,
product=turbo)``). Per bar, for every certificate the broker walks the bar's
path (see :mod:`mltrade.brokers.intrabar`) and fires, in order: knock-outs
(barrier touched inside the bar; an open beyond the barrier knocks out at the
open), stops on the certificate bid (gap-aware), limit orders and market
orders (next bar's open: ask to buy, bid to sell). Mini futures are financed
daily. Cash, value (marked at bid), fees and financing are tracked per
position; each closed round trip is attached to its closing order as
``order.info['roundtrip']`` so analyzers can read it.

Rules worth knowing:

* ``exectype=bt.Order.Close`` fills at once at the close of the bar the
  strategy just saw (the session-end exit).
* Certificates are bought, never sold short; a short view buys a short
  certificate. Whole certificates unless ``fractional=True``.
* A knock-out pays the residual value (mini future) or 0 (turbo) with no fee.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import backtrader as bt
import numpy as np

from mltrade.brokers.intrabar import (PRIORITY_KNOCKOUT, PRIORITY_LIMIT, PRIORITY_MARKET,
                                      PRIORITY_STOP, Trigger, bar_path, walk_bar)
from mltrade.products import KnockoutProduct, underlying_for_ask, underlying_for_bid, unwind_price

EXIT_REASONS = ("signal", "session_end", "stop", "knockout")


def order_product(broker, cls, data, kwargs: dict) -> KnockoutProduct:
    """The ``product=`` of an order (popped from ``kwargs``); a sell without one takes the only held product."""
    product = kwargs.pop("product", None)
    if product is None:
        held = broker.positions_on(data)
        if cls is bt.SellOrder and len(held) == 1:
            return held[0].product
        raise ValueError(f"product: orders on {type(broker).__name__} need product=KnockoutProduct(...)")
    if not isinstance(product, KnockoutProduct):
        raise ValueError(f"product: expected a KnockoutProduct, got {type(product).__name__}")
    return product


def broker_close_order(broker, pos: "CertPosition", reason: str) -> bt.Order:
    """A sell order the broker itself creates (stop-out, knock-out), owned by the buyer's strategy."""
    order = bt.SellOrder(owner=pos.owner, data=pos.data, size=pos.size,
                         exectype=bt.Order.Stop if reason == "stop" else bt.Order.Market,
                         tradeid=pos.product.id, simulated=False)
    order.addinfo(product=pos.product, stake=None, stop=None, reason=reason)
    order.addcomminfo(broker._comminfo)
    order.submit(broker)
    order.accept(broker)
    return order


class CertificateCommInfo(bt.CommInfoBase):
    """Stock-like accounting in certificate prices; fees are added by the broker itself."""

    params = (("stocklike", True), ("commtype", bt.CommInfoBase.COMM_FIXED), ("commission", 0.0))


@dataclass
class CertPosition:
    """Certificates held of one product."""

    product: KnockoutProduct
    data: Any
    size: float = 0.0
    price: float = 0.0              #: average entry price per certificate (account currency)
    stop_price: Optional[float] = None
    entry_dt: float = 0.0
    entry_underlying: float = 0.0
    entry_strike: float = 0.0
    entry_barrier: float = 0.0
    entry_leverage: float = 0.0
    entry_bar: int = 0
    cost: float = 0.0               #: cash paid for the certificates (excl. fees)
    entry_fees: float = 0.0
    fees: float = 0.0
    financing: float = 0.0          #: financing cost accrued (account currency, + = cost)
    proceeds: float = 0.0           #: cash received from partial exits
    exit_size: float = 0.0
    owner: Any = None               #: the strategy that opened it (receives stop/knock-out orders)


class KnockoutBroker(bt.BrokerBase):
    """Simulated broker for knock-out certificates on one or more underlying feeds."""

    params = (
        ("cash", 10_000.0),
        ("commission_fixed", 0.0),   # per order, account currency
        ("commission_pct", 0.0),     # fraction of the order's notional (size * price)
        ("fractional", False),       # allow fractional certificate counts
        ("fx_data", None),           # optional feed whose close converts index -> account currency
    )

    def __init__(self) -> None:
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        self.cash = float(self.p.cash)
        self.startingcash = self.cash
        self.notifs: collections.deque = collections.deque()
        self.pending: List[bt.Order] = []
        self.positions: Dict[int, CertPosition] = {}
        self.products: Dict[int, KnockoutProduct] = {}
        self.dead: set = set()
        self.roundtrips: List[dict] = []
        self.knockouts: List[dict] = []
        self._comminfo = CertificateCommInfo()
        self._seen_len: Dict[int, int] = {}
        self._financed: Dict[int, int] = {}   #: product id -> UTC day number it was last financed

    # ------------------------------------------------------------------ backtrader API
    def start(self) -> None:
        super().start()
        self._reset()

    def getcash(self) -> float:
        return self.cash

    def setcash(self, cash: float) -> None:
        self.p.cash = self.cash = self.startingcash = float(cash)

    def getvalue(self, datas=None) -> float:
        """Cash plus every position marked at the certificate's bid at the last close."""
        value = 0.0
        for pos in self.positions.values():
            if datas is not None and pos.data not in datas:
                continue
            if len(pos.data):
                value += pos.size * pos.product.bid_scalar(pos.data.close[0], self._fx(pos.product))
        return value if datas is not None else self.cash + value

    def getposition(self, data, product: Optional[KnockoutProduct] = None) -> bt.Position:
        """Certificates held on ``data`` (all products, or one ``product``)."""
        size, cost = 0.0, 0.0
        for pos in self.positions.values():
            if pos.data is data and (product is None or pos.product.id == product.id):
                size += pos.size
                cost += pos.size * pos.price
        return bt.Position(size, cost / size if size else 0.0)

    def positions_on(self, data=None) -> List[CertPosition]:
        """Open certificate positions (on ``data`` if given)."""
        return [p for p in self.positions.values() if data is None or p.data is data]

    def get_notification(self):
        return self.notifs.popleft() if self.notifs else None

    def notify(self, order: bt.Order) -> None:
        self.notifs.append(order.clone())

    def buy(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
            oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True,
            histnotify=False, _checksubmit=True, **kwargs):
        return self._order(bt.BuyOrder, owner, data, size, price, plimit, exectype, valid, kwargs)

    def sell(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
             oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True,
             histnotify=False, _checksubmit=True, **kwargs):
        return self._order(bt.SellOrder, owner, data, size, price, plimit, exectype, valid, kwargs)

    def cancel(self, order: bt.Order, bracket: bool = False) -> bool:
        if order not in self.pending:
            return False
        self.pending.remove(order)
        order.cancel()
        self.notify(order)
        return True

    def set_stop(self, product: KnockoutProduct, price: Optional[float]) -> None:
        """Attach (or remove with ``None``) a stop on the certificate bid to a held product."""
        pos = self.positions.get(product.id)
        if pos is None:
            raise ValueError(f"product: no open position in {product.name}")
        pos.stop_price = price

    # ------------------------------------------------------------------ orders
    def _order(self, cls, owner, data, size, price, plimit, exectype, valid, kwargs):
        product = order_product(self, cls, data, kwargs)
        stake = kwargs.pop("stake", None)
        stop = kwargs.pop("stop", None)
        reason = kwargs.pop("reason", "signal")
        if stake is None and (size is None or size <= 0):
            raise ValueError(f"size: expected a positive number of certificates or stake=, got {size!r}")
        if stake is not None and not stake > 0:
            raise ValueError(f"stake: expected a positive amount, got {stake!r}")
        if stop is not None and not 0 < stop < 1:
            raise ValueError(f"stop: expected a fraction of the entry price in (0, 1), got {stop!r}")
        if reason not in EXIT_REASONS:
            raise ValueError(f"reason: expected one of {EXIT_REASONS}, got {reason!r}")
        self.products.setdefault(product.id, product)
        if len(data):
            self._financed.setdefault(product.id, self._day(data))
        order = cls(owner=owner, data=data, size=size if size else 1, price=price, pricelimit=plimit,
                    exectype=exectype, valid=valid, tradeid=product.id)
        # an order acts on bars after the one it was decided on, also when a live cerebro
        # calls next() again before a new bar arrives
        order.addinfo(product=product, stake=stake, stop=stop, reason=reason, created_len=len(data), **kwargs)
        order.addcomminfo(self._comminfo)
        order.submit(self)
        order.accept(self)
        self.notify(order)
        if product.id in self.dead:
            self._reject(order, "knocked_out")
        elif order.exectype == bt.Order.Close and len(data):
            self._fill_at(order, float(data.close[0]), at_open=True)
        else:
            self.pending.append(order)
        return order

    def _reject(self, order: bt.Order, reason: str) -> None:
        if order in self.pending:
            self.pending.remove(order)
        order.addinfo(reject_reason=reason)
        order.reject(self)
        self.notify(order)

    def _fx(self, product: KnockoutProduct) -> float:
        fxd = self.p.fx_data
        return float(fxd.close[0]) if fxd is not None and len(fxd) else product.fx

    # ------------------------------------------------------------------ per bar
    def next(self) -> None:
        if not self.pending and not self.positions:
            return
        datas = {id(o.data): o.data for o in self.pending}
        datas.update({id(p.data): p.data for p in self.positions.values()})
        for data in datas.values():
            n = len(data)
            if self._seen_len.get(id(data)) == n:
                continue
            self._seen_len[id(data)] = n
            live = sorted({o.info["product"].id for o in self.pending if o.data is data}
                          | {p.product.id for p in self.positions.values() if p.data is data})
            self._finance(data, live)
            if self.pending:
                self._expire(data)
            for pid in live:
                if not self._quiet(pid, data):
                    self._walk(self.products[pid], data)

    def _quiet(self, pid: int, data) -> bool:
        """Fast path: a held certificate with no orders whose barrier and stop the bar did not reach."""
        pos = self.positions.get(pid)
        if pos is None or any(o.info["product"].id == pid for o in self.pending):
            return False
        p = pos.product
        if p.direction > 0:
            worst, level = data.low[0], p.barrier
            if pos.stop_price:
                level = max(level, p.underlying_for_bid_scalar(pos.stop_price, self._fx(p)))
            return worst > level and data.open[0] > level
        worst, level = data.high[0], p.barrier
        if pos.stop_price:
            level = min(level, p.underlying_for_bid_scalar(pos.stop_price, self._fx(p)))
        return worst < level and data.open[0] < level

    @staticmethod
    def _day(data) -> int:
        return int(math.floor(data.datetime[0] + 1e-9))  # UTC calendar day number

    def _finance(self, data, live) -> None:
        """Move each live mini future's financing level by the calendar days since it was last financed."""
        day = self._day(data)
        for pid in live:
            product = self.products[pid]
            if pid in self.dead or product.kind != "minifuture":
                continue
            last = self._financed.setdefault(pid, day)
            if day <= last:
                continue
            self._financed[pid] = day
            dk = product.apply_financing(day - last)
            pos = self.positions.get(pid)
            if pos is not None:
                pos.financing += product.direction * dk * product.ratio * self._fx(product) * pos.size

    def _expire(self, data) -> None:
        now = data.datetime[0]
        for order in [o for o in self.pending if o.data is data and o.valid and now > o.valid]:
            self.pending.remove(order)
            order.expire()
            self.notify(order)

    def _triggers(self, product: KnockoutProduct, data) -> List[Trigger]:
        if product.id in self.dead:
            return []
        fx = self._fx(product)
        d = product.direction
        out = []
        pos = self.positions.get(product.id)
        # orders act from the bar after the one they were decided on (live cerebros re-call next())
        orders = [o for o in self.pending if o.info["product"] is product and o.data is data
                  and len(data) > o.info["created_len"]]
        if pos is None and not orders:
            return out  # nothing of ours depends on this certificate on this bar
        out.append(Trigger("knockout", product.barrier, -d, PRIORITY_KNOCKOUT))
        if pos is not None and pos.stop_price is not None and pos.stop_price > 0:
            lvl = float(underlying_for_bid(d, pos.stop_price, product.strike, product.ratio, fx, product.spread))
            out.append(Trigger(("stop", product.id), lvl, -d, PRIORITY_STOP))
        if not product.in_trading_hours(data.datetime.time(0)):
            return out
        for o in orders:
            et, buy = o.exectype, o.isbuy()
            if et in (None, bt.Order.Market):
                out.append(Trigger(o, None, 0, PRIORITY_MARKET))
            elif et == bt.Order.Limit:
                if buy:   # ask <= limit: the certificate cheapens, i.e. the index moves against it
                    lvl = underlying_for_ask(d, o.price, product.strike, product.ratio, fx, product.spread)
                    out.append(Trigger(o, float(lvl), -d, PRIORITY_LIMIT))
                else:     # bid >= limit
                    lvl = underlying_for_bid(d, o.price, product.strike, product.ratio, fx, product.spread)
                    out.append(Trigger(o, float(lvl), d, PRIORITY_LIMIT))
            elif et == bt.Order.Stop:
                if buy:   # ask >= stop
                    lvl = underlying_for_ask(d, o.price, product.strike, product.ratio, fx, product.spread)
                    out.append(Trigger(o, float(lvl), d, PRIORITY_STOP))
                else:     # bid <= stop
                    lvl = underlying_for_bid(d, o.price, product.strike, product.ratio, fx, product.spread)
                    out.append(Trigger(o, float(lvl), -d, PRIORITY_STOP))
        return out

    def _walk(self, product: KnockoutProduct, data) -> None:
        o, h, lo, c = (float(data.open[0]), float(data.high[0]), float(data.low[0]), float(data.close[0]))
        points = bar_path(product.direction, o, h, lo, c)

        def fire(trig: Trigger, level: float, at_open: bool) -> None:
            if isinstance(trig.key, str):  # "knockout"
                self._knockout(product, data, gapped=at_open)
            elif isinstance(trig.key, tuple):  # attached stop
                self._stop_out(product, data, level, at_open)
            else:
                self._fill_at(trig.key, level, at_open)

        walk_bar(points, lambda: self._triggers(product, data), fire)

    # ------------------------------------------------------------------ executions
    def _price(self, order: bt.Order, underlying: float, at_open: bool) -> float:
        product = order.info["product"]
        fx = self._fx(product)
        market = at_open or order.exectype in (None, bt.Order.Market, bt.Order.Close)
        if market:
            quote = product.ask if order.isbuy() else product.bid
            return float(quote(underlying, fx))
        return float(order.price)

    def _commission(self, size: float, price: float) -> float:
        return self.p.commission_fixed + self.p.commission_pct * abs(size) * price

    def _fill_at(self, order: bt.Order, underlying: float, at_open: bool) -> None:
        product: KnockoutProduct = order.info["product"]
        data = order.data
        price = self._price(order, underlying, at_open)
        if order in self.pending:
            self.pending.remove(order)
        if order.isbuy():
            if price <= 0:
                self._reject(order, "no_quote")
                return
            if order.info["stake"] is not None:
                budget = min(order.info["stake"], self.cash) - self.p.commission_fixed
                n = budget / (price * (1.0 + self.p.commission_pct))
            else:
                n = abs(order.size)
            if not self.p.fractional:
                n = math.floor(n + 1e-9)
            if n <= 0:
                self._reject(order, "insufficient_cash")
                return
            comm = self._commission(n, price)
            if n * price + comm > self.cash + 1e-9:
                self._reject(order, "insufficient_cash")
                return
            self._set_size(order, n)
            self.cash -= n * price + comm
            pos = self.positions.get(product.id)
            if pos is None:
                fx = self._fx(product)
                pos = self.positions[product.id] = CertPosition(
                    product=product, data=data, entry_dt=data.datetime[0], entry_underlying=underlying,
                    entry_strike=product.strike, entry_barrier=product.barrier,
                    entry_leverage=product.leverage(underlying, fx), entry_bar=len(data),
                    owner=order.owner)
            old = pos.size
            pos.size += n
            pos.price = (old * pos.price + n * price) / pos.size
            pos.cost += n * price
            pos.fees += comm
            pos.entry_fees += comm
            if order.info["stop"] is not None:
                pos.stop_price = order.info["stop"] * pos.price
            order.execute(data.datetime[0], n, price, 0, 0.0, 0.0, n, n * price, comm, 0.0, 0.0,
                          pos.size, pos.price)
            self.notify(order)
        else:
            pos = self.positions.get(product.id)
            if pos is None or pos.size <= 0:
                self._reject(order, "no_position")
                return
            n = min(abs(order.size), pos.size)
            self._set_size(order, -n)
            self._close(pos, order, n, price, underlying, order.info["reason"])

    def _set_size(self, order: bt.Order, signed: float) -> None:
        order.size = signed
        order.created.size = signed
        order.created.remsize = signed
        order.executed.remsize = signed

    def _close(self, pos: CertPosition, order: bt.Order, n: float, price: float, underlying: float,
               reason: str, fee: Optional[float] = None) -> None:
        comm = self._commission(n, price) if fee is None else fee
        self.cash += n * price - comm
        entry = pos.price
        pnl = n * (price - entry)
        pos.fees += comm
        pos.proceeds += n * price
        pos.exit_size += n
        pos.size -= n
        order.execute(pos.data.datetime[0], -n, price, -n, n * entry, comm, 0, 0.0, 0.0, 0.0, pnl,
                      pos.size, entry if pos.size else 0.0)
        if pos.size <= 1e-12:
            del self.positions[pos.product.id]
            rt = self._roundtrip(pos, price, underlying, reason)
            self.roundtrips.append(rt)
            order.addinfo(roundtrip=rt)
        self.notify(order)

    def _roundtrip(self, pos: CertPosition, price: float, underlying: float, reason: str) -> dict:
        p = pos.product
        exit_price = pos.proceeds / pos.exit_size if pos.exit_size else price
        pnl = pos.proceeds - pos.cost - pos.fees
        invested = pos.cost + pos.entry_fees
        return {
            "product": p.name, "kind": p.kind, "direction": "long" if p.direction > 0 else "short",
            "strike": pos.entry_strike, "barrier": pos.entry_barrier, "ratio": p.ratio,
            "size": pos.exit_size,
            "entry_time": pos.data.num2date(pos.entry_dt).isoformat(),
            "entry_price": pos.price, "entry_underlying": pos.entry_underlying,
            "exit_time": pos.data.num2date().isoformat(),
            "exit_price": exit_price, "exit_underlying": underlying,
            "fees": pos.fees, "financing": pos.financing, "exit_reason": reason,
            "pnl": pnl, "return": pnl / invested if invested else 0.0,
            "leverage": pos.entry_leverage, "bars": len(pos.data) - pos.entry_bar,
            "invested": invested,
        }

    def _synthetic(self, pos: CertPosition, reason: str) -> bt.Order:
        return broker_close_order(self, pos, reason)

    def _stop_out(self, product: KnockoutProduct, data, level: float, at_open: bool) -> None:
        pos = self.positions[product.id]
        order = self._synthetic(pos, "stop")
        price = float(product.bid(level, self._fx(product))) if at_open else pos.stop_price
        self._close(pos, order, pos.size, price, level, "stop")

    def _knockout(self, product: KnockoutProduct, data, gapped: bool) -> None:
        self.dead.add(product.id)
        o, h, lo, c = (float(data.open[0]), float(data.high[0]), float(data.low[0]), float(data.close[0]))
        unwind = float(unwind_price(product.direction, product.barrier, o, lo, h, c, product.unwind, gapped))
        residual = float(product.residual(unwind, self._fx(product)))
        event = {"product": product.name, "time": data.num2date().isoformat(),
                 "barrier": product.barrier, "gapped": gapped, "unwind": unwind, "residual": residual}
        self.knockouts.append(event)
        for order in [x for x in self.pending if x.info["product"] is product]:
            self._reject(order, "knocked_out")
        pos = self.positions.get(product.id)
        if pos is None:
            return
        order = self._synthetic(pos, "knockout")
        order.addinfo(knockout=event)
        self._close(pos, order, pos.size, residual, unwind, "knockout", fee=0.0)
