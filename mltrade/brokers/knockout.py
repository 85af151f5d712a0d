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
from typing import Dict, List, Optional

import backtrader as bt

from mltrade.brokers.bar_walk import BarWalk
from mltrade.brokers.book import CertificateSizing, DefaultBook
from mltrade.brokers.fills import ProductFills
# CertificateCommInfo, broker_close_order and order_product are imported from here by mltrade.live.broker
from mltrade.brokers.positions import (CertificateCommInfo, CertPosition, PositionsByProduct,  # noqa: F401
                                       broker_close_order, order_product)
from mltrade.brokers.product_orders import ProductOrders
from mltrade.brokers.roundtrip import roundtrip_record
from mltrade.products import CertificateSpec, KnockoutProduct


class KnockoutBroker(ProductOrders, BarWalk, ProductFills, bt.BrokerBase):
    """Simulated broker for knock-out certificates on one or more underlying feeds.

    Placing orders: :class:`~mltrade.brokers.product_orders.ProductOrders`; per bar (financing, the bar's
    path, stop-outs, knock-outs): :class:`~mltrade.brokers.bar_walk.BarWalk`; fills:
    :class:`~mltrade.brokers.fills.ProductFills`; positions: :mod:`mltrade.brokers.positions`.
    """

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

    def _fx(self, product: KnockoutProduct) -> float:
        fxd = self.p.fx_data
        return float(fxd.close[0]) if fxd is not None and len(fxd) else product.fx

    # ------------------------------------------------------------------ executions
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
