"""Fills of orders with ``product=`` on :class:`~mltrade.brokers.knockout.KnockoutBroker`: the price (ask to
buy, bid to sell at market; the limit or stop price otherwise), the fee, and the buy that opens or adds to a
position or the sell that closes it (a mixin of the broker)."""
from __future__ import annotations

import math

import backtrader as bt

from mltrade.brokers.positions import CertPosition
from mltrade.products import KnockoutProduct


class ProductFills:
    """Pricing and filling the broker's orders (mixin of ``KnockoutBroker``)."""

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
            self._fill_buy(order, product, data, price, underlying)
        else:
            pos = self.positions.get(product.id)
            if pos is None or pos.size <= 0:
                self._reject(order, "no_position")
                return
            n = min(abs(order.size), pos.size)
            self._set_size(order, -n)
            self._close(pos, order, n, price, underlying, order.info["reason"])

    def _fill_buy(self, order: bt.Order, product: KnockoutProduct, data, price: float, underlying: float) -> None:
        """Buy ``order``'s certificates at ``price`` (its stake's worth or its size) into the product's position."""
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
