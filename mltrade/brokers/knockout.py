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

Orders without ``product=`` need a default: ``KnockoutBroker(product=KnockoutProduct.tracker())``
(the index one-to-one: BackBroker's figures) or ``product=CertificateSpec(distance=.., kind=..)``
(a long certificate for a long position, a short one for a short position). They run through
backtrader's own order engine (every order type, brackets, OCO, cheat-on-open/close), see
:mod:`mltrade.brokers.book`. Orders with ``product=`` support Market, Close, Limit and Stop;
anything else (OCO, brackets, trailing or stop-limit orders) raises at submit.

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
from mltrade.brokers.book import CertificateSizing, DefaultBook
from mltrade.brokers.roundtrip import roundtrip_record
from mltrade.products import (CertificateSpec, KnockoutProduct, underlying_for_ask, underlying_for_bid,
                              unwind_price)

EXIT_REASONS = ("signal", "session_end", "stop", "knockout")


def order_product(broker, cls, data, kwargs: dict) -> KnockoutProduct:
    """The ``product=`` of an order (popped from ``kwargs``); a sell without one takes the only held product."""
    product = kwargs.pop("product", None)
    if product is None:
        held = broker.positions_on(data)
        if cls is bt.SellOrder and len(held) == 1:
            return held[0].product
        raise ValueError(f"product: orders on {type(broker).__name__} need product=KnockoutProduct(...), or a "
                         f"default for orders without one: {type(broker).__name__}(product=KnockoutProduct."
                         f"tracker()) or product=CertificateSpec(distance=...)")
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


class PositionsByProduct(dict):
    """Open certificate positions by product id; indexed by a data feed it gives ``getposition(data)``.

    backtrader's ``Strategy.positions[data]`` and ``positionsbyname`` read the broker's
    ``positions`` by data feed: they get backtrader's position, the dict stays keyed by product.
    """

    def __init__(self, broker) -> None:
        super().__init__()
        self._broker = broker

    def __missing__(self, key):
        if isinstance(key, bt.AbstractDataBase):
            return self._broker.getposition(key)
        raise KeyError(key)


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
        ("product", None),           # default for orders without product=: KnockoutProduct or CertificateSpec
        ("coc", False),              # cheat-on-close: market orders fill at the close they were decided on
        ("coo", False),              # cheat-on-open: market orders from next_open fill at that bar's open
    )

    #: the order features orders with product= support (all others: orders without product=)
    LEGACY_EXECTYPES = (None, bt.Order.Market, bt.Order.Close, bt.Order.Limit, bt.Order.Stop)

    def __init__(self) -> None:
        super().__init__()
        self._comm_unit = 0.0        #: fee per certificate (setcommission with a stock-like fixed commission)
        self._book: Optional[DefaultBook] = None
        default = self.p.product
        if default is not None:
            if not isinstance(default, (KnockoutProduct, CertificateSpec)):
                raise ValueError(f"product: expected a KnockoutProduct or a CertificateSpec, "
                                 f"got {type(default).__name__}")
            self._book = DefaultBook(self, default)
            self._sizing = CertificateSizing(book=self._book)
            self._book.p.coc, self._book.p.coo = self.p.coc, self.p.coo
        self._reset()

    def _reset(self) -> None:
        self.cash = float(self.p.cash)
        self.startingcash = self.cash
        self.notifs: collections.deque = collections.deque()
        self.pending: List[bt.Order] = []
        self.positions: Dict[int, CertPosition] = PositionsByProduct(self)
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
        if self._book is not None:
            self._book.start()

    def getcash(self) -> float:
        return self.cash

    def setcash(self, cash: float) -> None:
        self.p.cash = self.cash = self.startingcash = float(cash)
        if self._book is not None:
            self._book.p.cash = self._book.startingcash = float(cash)

    get_cash = getcash
    set_cash = setcash

    def getvalue(self, datas=None) -> float:
        """Cash plus every position marked at the certificate's bid at the last close.

        With ``datas``: the positions' value only, a short position without product= negative.
        """
        value = 0.0
        for pos in self.positions.values():
            if datas is not None and pos.data not in datas:
                continue
            if len(pos.data):
                value += pos.size * pos.product.bid_scalar(pos.data.close[0], self._fx(pos.product))
        book = self._book
        if book is not None and book.used:
            if datas is not None:
                value += sum(book.position_value(d) for d in datas)
            else:
                value += book.positions_value()
        return value if datas is not None else self.cash + value

    def get_value(self, datas=None, mkt=False, lever=False) -> float:
        """backtrader's name for :meth:`getvalue` (no leverage: ``mkt``/``lever`` change nothing)."""
        return self.getvalue(datas)

    def set_coc(self, coc: bool) -> None:
        """Cheat-on-close: market orders fill at the close of the bar they were decided on."""
        self.p.coc = bool(coc)
        if self._book is not None:
            self._book.set_coc(bool(coc))

    def set_coo(self, coo: bool) -> None:
        """Cheat-on-open: market orders placed in ``next_open`` fill at that bar's open."""
        self.p.coo = bool(coo)
        if self._book is not None:
            self._book.set_coo(bool(coo))

    def setcommission(self, commission=0.0, margin=None, mult=1.0, commtype=None, percabs=True,
                      stocklike=False, interest=0.0, interest_long=False, leverage=1.0, automargin=False,
                      name=None) -> None:
        """backtrader's commission call mapped onto the certificate fees (stock-like ones only)."""
        info = bt.CommInfoBase(commission=commission, margin=margin, mult=mult, commtype=commtype,
                               stocklike=stocklike, percabs=percabs, interest=interest,
                               interest_long=interest_long, leverage=leverage, automargin=automargin)
        self.addcommissioninfo(info, name)

    def addcommissioninfo(self, comminfo, name=None) -> None:
        """A backtrader ``CommInfoBase`` as the certificate fee: percent of the notional or fixed per certificate.

        Futures-like schemes (margin, multiplier, leverage, interest) have no meaning for
        certificates and are refused, as are per-data schemes (``name=``).
        """
        p = comminfo.p
        where = "setcommission"
        if not comminfo.stocklike or p.margin or p.automargin:
            raise ValueError(f"{where}: futures-like commissions (margin=, automargin=, or stocklike=False with "
                             f"a commtype) are not supported on certificates: give a percent (commission=0.001) "
                             f"or commtype=COMM_FIXED with stocklike=True")
        for key, neutral in (("mult", 1.0), ("leverage", 1.0), ("interest", 0.0)):
            if getattr(p, key) != neutral:
                raise ValueError(f"{where}: {key}={getattr(p, key)!r} is not supported on certificates "
                                 f"(only {neutral!r})")
        if name is not None:
            raise ValueError(f"{where}: name={name!r}: per-data commissions are not supported; one fee model "
                             f"applies to every certificate")
        if comminfo._commtype == bt.CommInfoBase.COMM_PERC:
            self.p.commission_pct, self._comm_unit = float(p.commission), 0.0
        else:
            self.p.commission_pct, self._comm_unit = 0.0, float(p.commission)

    def getcommissioninfo(self, data):
        """Sizes ``order_target_value``/``percent`` orders in certificates of the default product."""
        if self._book is not None:
            return self._sizing
        return super().getcommissioninfo(data)

    def get_orders_open(self, safe: bool = False) -> list:
        orders = list(self.pending) + (list(self._book.pending) if self._book is not None else [])
        return [o.clone() for o in orders] if safe else orders

    def add_order_history(self, orders, notify=False):
        raise ValueError("add_order_history: historical orders are not supported on KnockoutBroker")

    def set_fund_history(self, fund):
        raise ValueError("set_fund_history: fund history is not supported on KnockoutBroker")

    def set_fundmode(self, fundmode, fundstartval=None):
        if fundmode:
            raise ValueError("set_fundmode: fund mode is not supported on KnockoutBroker")

    def set_filler(self, filler):
        if filler is not None:
            raise ValueError("set_filler: volume fillers are not supported on KnockoutBroker (orders fill whole)")

    def _book_position(self, data) -> Optional[bt.Position]:
        """The signed position of orders without product= on ``data`` (None: use the certificates with product=)."""
        book = self._book
        if book is None:
            return None
        pos = book.positions[data]
        if not pos.size and any(p.data is data for p in self.positions.values()):
            return None
        return pos

    def getposition(self, data, product: Optional[KnockoutProduct] = None) -> bt.Position:
        """Certificates held on ``data`` (all products, or one ``product``).

        With a default product (``product=`` on the broker) and no ``product`` here: backtrader's
        signed position of the orders without product= (short certificates count negative).
        """
        if product is None:
            pos = self._book_position(data)
            if pos is not None:
                return pos
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
        if self.notifs:
            return self.notifs.popleft()
        return self._book.get_notification() if self._book is not None else None

    def notify(self, order: bt.Order) -> None:
        self.notifs.append(order.clone())

    def buy(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
            oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True,
            histnotify=False, _checksubmit=True, **kwargs):
        if self._to_book(bt.BuyOrder, data, kwargs):
            return self._book_order(self._book.buy, owner, data, size, price, plimit, exectype, valid, tradeid,
                                    oco, trailamount, trailpercent, parent, transmit, kwargs)
        self._refuse(tradeid, plimit, exectype, oco, trailamount, trailpercent, parent, transmit)
        return self._order(bt.BuyOrder, owner, data, size, price, plimit, exectype, valid, kwargs)

    def sell(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
             oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True,
             histnotify=False, _checksubmit=True, **kwargs):
        if self._to_book(bt.SellOrder, data, kwargs):
            return self._book_order(self._book.sell, owner, data, size, price, plimit, exectype, valid, tradeid,
                                    oco, trailamount, trailpercent, parent, transmit, kwargs)
        self._refuse(tradeid, plimit, exectype, oco, trailamount, trailpercent, parent, transmit)
        return self._order(bt.SellOrder, owner, data, size, price, plimit, exectype, valid, kwargs)

    def _to_book(self, cls, data, kwargs: dict) -> bool:
        """Whether an order goes to the default product's book (no product=, a default configured)."""
        if self._book is None or kwargs.get("product") is not None:
            return False
        # a sell closing the only certificate bought with product= stays with it (KnockoutStrategy's exits)
        return not (cls is bt.SellOrder and not self._book.positions[data].size
                    and len(self.positions_on(data)) == 1)

    def _book_order(self, place, owner, data, size, price, plimit, exectype, valid, tradeid, oco,
                    trailamount, trailpercent, parent, transmit, kwargs):
        for key in ("stake", "stop"):
            if kwargs.get(key) is not None:
                raise ValueError(f"{key}: needs product= (orders on the broker's default product take "
                                 f"size=, and stops as Stop orders)")
        if exectype == bt.Order.Historical:
            raise ValueError("exectype: Historical orders are not supported on KnockoutBroker")
        if size is None or not size > 0:
            raise ValueError(f"size: expected a positive number of certificates, got {size!r}")
        if not self.p.fractional and not float(size).is_integer():
            raise ValueError(f"size: whole certificates only (fractional=False), got {size!r}")
        return place(owner, data, size, price=price, plimit=plimit, exectype=exectype, valid=valid,
                     tradeid=tradeid, oco=oco, trailamount=trailamount, trailpercent=trailpercent,
                     parent=parent, transmit=transmit, **kwargs)

    def _refuse(self, tradeid, plimit, exectype, oco, trailamount, trailpercent, parent, transmit) -> None:
        """Features orders with product= do not support: raise at submit, naming them."""
        bad = []
        if exectype not in self.LEGACY_EXECTYPES:
            bad.append(f"exectype={bt.Order.ExecTypes[exectype]}")
        for name, value in (("oco", oco), ("trailamount", trailamount), ("trailpercent", trailpercent),
                            ("parent", parent), ("plimit", plimit)):
            if value is not None:
                bad.append(name)
        if not transmit:
            bad.append("transmit=False")
        if tradeid:
            bad.append("tradeid (each product is its own trade)")
        if bad:
            raise ValueError(f"{', '.join(bad)}: not supported on orders with product= on "
                             f"{type(self).__name__} (Market, Close, Limit and Stop only); place the order "
                             f"without product= on a broker with a default product "
                             f"(KnockoutBroker(product=...)) for brackets, OCO, trailing and stop-limit orders")

    def cancel(self, order: bt.Order, bracket: bool = False) -> bool:
        book = self._book
        if book is not None and (order in book.pending or order in book.submitted):
            return book.cancel(order, bracket)
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
        self.notify(order)
        order.accept(self)
        self.notify(order)
        if product.id in self.dead:
            self._reject(order, "knocked_out")
        elif len(data) and (order.exectype == bt.Order.Close
                            or self.p.coc and order.exectype in (None, bt.Order.Market)):
            self._fill_at(order, float(data.close[0]), at_open=True)
        else:
            self.pending.append(order)
        return order

    def _reject(self, order: bt.Order, reason: str) -> None:
        if order in self.pending:
            self.pending.remove(order)
        order.addinfo(reject_reason=reason)
        if reason == "insufficient_cash":
            order.margin()          # backtrader's status for an order the cash does not cover
        else:
            order.reject(self)
        self.notify(order)

    def _fx(self, product: KnockoutProduct) -> float:
        fxd = self.p.fx_data
        return float(fxd.close[0]) if fxd is not None and len(fxd) else product.fx

    # ------------------------------------------------------------------ per bar
    def next(self) -> None:
        if self._book is not None and self._book.used:
            self._book.next()
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
        n, coo = len(data), self.p.coo   # cheat-on-open: market orders from next_open act on their bar
        orders = [o for o in self.pending if o.info["product"] is product and o.data is data
                  and (n > o.info["created_len"] or coo and n == o.info["created_len"]
                       and o.exectype in (None, bt.Order.Market))]
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
        return self.p.commission_fixed + (self.p.commission_pct * price + self._comm_unit) * abs(size)

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
        return roundtrip_record(pos, size=pos.exit_size, exit_time=pos.data.num2date().isoformat(),
                                entry_time=pos.data.num2date(pos.entry_dt).isoformat(),
                                exit_price=pos.proceeds / pos.exit_size if pos.exit_size else price,
                                exit_underlying=underlying, reason=reason, bars=len(pos.data) - pos.entry_bar)

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
