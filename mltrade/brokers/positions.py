"""Certificate positions of :class:`~mltrade.brokers.knockout.KnockoutBroker` (also used by the live broker):
what is held of one product, the positions by product, the fee-free commission info, the product of an
order, and the sell orders the broker creates itself (stop-outs, knock-outs)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import backtrader as bt

from mltrade.products import KnockoutProduct

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
