"""Orders with ``product=`` on :class:`~mltrade.brokers.knockout.KnockoutBroker`: placing them (orders
without ``product=`` go to the default product's book), refusing what they do not support, cancelling,
rejecting and attaching stops (a mixin of the broker: it reads the broker's state)."""
from __future__ import annotations

from typing import Optional

import backtrader as bt

from mltrade.brokers.positions import EXIT_REASONS, order_product
from mltrade.products import KnockoutProduct


class ProductOrders:
    """Placing, refusing, cancelling and rejecting the broker's orders (mixin of ``KnockoutBroker``)."""

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
