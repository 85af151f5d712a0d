"""``KnockoutStrategy``: the base every mltrade strategy builds on.

It turns a view (direction + barrier) into a certificate order on the
broker, handles the session (bar number, last bar, flat at the close) and
passes decisions through an optional overlay (e.g. the LLM overlay) before
they are executed. Subclasses implement :meth:`on_bar` (or override
``next`` and call the helpers themselves).
"""
from __future__ import annotations

from typing import List, Optional

import backtrader as bt
import pandas as pd

from mltrade.products import KnockoutProduct
from mltrade.strategies.decision import Decision, DecisionContext, provenance

#: the parameters of the certificate a strategy trades, shared by all strategies
PRODUCT_PARAMS = (
    ("kind", "turbo"),            # turbo | minifuture
    ("ratio", 0.01),              # certificates per index point
    ("spread", 0.0),              # ask - bid, account currency per certificate
    ("fx", 1.0),                  # account currency per index currency unit
    ("barrier_step", 0.0),        # issuer barrier grid (0 = any level)
    ("barrier_buffer", 0.0),      # mini future: barrier distance from the financing level
    ("financing_rate", 0.0),      # mini future: reference rate p.a.
    ("financing_spread", 0.0),    # mini future: issuer spread p.a.
    ("unwind", "worst"),          # mini future residual: worst | barrier | close
)


class KnockoutStrategy(bt.Strategy):
    """Base strategy: certificate orders, session helpers, overlay, flat at the session end."""

    params = PRODUCT_PARAMS + (
        ("distance", 0.04),           # default barrier distance from the index (fraction)
        ("stop", 0.71),               # stop at this fraction of the entry price (None = no stop)
        ("stake", None),              # cash per trade (None: stake_fraction, else all available cash)
        ("stake_fraction", None),     # fraction of the account value per trade (e.g. 0.25)
        ("overlay", None),            # DecisionOverlay reviewing each decision (e.g. LLMOverlay)
        ("context_candles", 17),      # candles handed to the overlay
        ("flat_at_session_end", True),  # close everything at the close of the last session bar
    )

    #: the parameter space for optimisation sweeps: name -> (low, high[, step]) or list of choices
    param_space: dict = {}
    #: what its decisions read: "intraday" (bars inside the session) or "daily" (earlier sessions'
    #: daily bars only); with entries at opens/closes it decides whether the sample's figures are
    #: evidence from the real daily bars (:mod:`mltrade.evidence`)
    decision_data: str = "intraday"

    def __init__(self) -> None:
        self.decisions: List[dict] = []
        self.knockout_events: List[dict] = []

    # ------------------------------------------------------------------ session helpers
    def session_bar(self, data=None) -> int:
        """0-based number of the current bar in its session (-1 outside a session)."""
        return int((data or self.data).session_bar[0])

    def session_left(self, data=None) -> int:
        """Bars left after the current one until the session closes (0 on the last bar)."""
        return int((data or self.data).session_left[0])

    def is_last_bar_of_session(self, data=None) -> bool:
        return self.session_left(data) == 0

    def is_last_bar_of_data(self, data=None) -> bool:
        """True on the last bar of a preloaded (historical) feed; never for live or streamed feeds."""
        d = data or self.data
        if d.islive() or not getattr(self.cerebro, "_dopreload", False):
            return False
        return d.buflen() > 0 and len(d) == d.buflen()

    def recent_candles(self, n: int, data=None) -> pd.DataFrame:
        """The last ``n`` bars (oldest first) as a DataFrame indexed by exchange-local time."""
        d = data or self.data
        n = min(n, len(d))
        rows = [(d.datetime.datetime(-i), d.open[-i], d.high[-i], d.low[-i], d.close[-i], d.volume[-i])
                for i in range(n - 1, -1, -1)]
        return pd.DataFrame(rows, columns=["datetime", "open", "high", "low", "close", "volume"]).set_index(
            "datetime")

    # ------------------------------------------------------------------ products and orders
    def make_product(self, direction: int, barrier: Optional[float] = None,
                     distance: Optional[float] = None, price: Optional[float] = None,
                     data=None) -> KnockoutProduct:
        """Certificate of this strategy's kind with its barrier at ``barrier`` or ``distance`` from the index."""
        d = data or self.data
        price = float(d.close[0]) if price is None else price
        if barrier is None and distance is None:
            distance = self.p.distance
        return KnockoutProduct.for_index(
            direction, price, barrier=barrier, distance=distance, kind=self.p.kind, ratio=self.p.ratio,
            spread=self.p.spread, fx=self.p.fx, barrier_step=self.p.barrier_step,
            barrier_buffer=self.p.barrier_buffer, financing_rate=self.p.financing_rate,
            financing_spread=self.p.financing_spread, unwind=self.p.unwind)

    def open_knockout(self, direction: int, barrier: Optional[float] = None, distance: Optional[float] = None,
                      stake: Optional[float] = None, size: Optional[float] = None, stop: Optional[float] = None,
                      product: Optional[KnockoutProduct] = None, data=None, **kwargs) -> Optional[bt.Order]:
        """Buy a certificate (long or short view) at the next bar's open; ``stop`` defaults to the param.

        Without ``size``/``stake`` the stake comes from the params; with no cash left, no order (``None``).
        """
        d = data or self.data
        if product is None:
            product = self.make_product(direction, barrier=barrier, distance=distance, data=d)
        stop = self.p.stop if stop is None else stop
        if size is None and stake is None:
            if self.p.stake is not None:
                stake = self.p.stake
            elif self.p.stake_fraction:
                stake = min(self.p.stake_fraction * self.broker.getvalue(), self.broker.getcash())
            else:
                stake = self.broker.getcash()
            if stake <= 0:
                return None  # nothing left to stake: no order
        return self.buy(data=d, size=size, product=product, stake=stake, stop=stop, **kwargs)

    def open_overnight(self, direction: int, barrier: Optional[float] = None, distance: Optional[float] = None,
                       stake: Optional[float] = None, size: Optional[float] = None, stop: Optional[float] = None,
                       product: Optional[KnockoutProduct] = None, data=None, **kwargs) -> Optional[bt.Order]:
        """Night session: buy at this bar's close and queue the sale at the next bar's open."""
        d = data or self.data
        order = KnockoutStrategy.open_knockout(self, direction, barrier, distance, stake, size, stop, product, d,
                                               exectype=bt.Order.Close, **kwargs)
        prod = order.info.get("product") if order is not None else None
        for pos in self.broker.positions_on(d):
            if prod is not None and pos.product.id == prod.id:
                self.sell(data=d, size=pos.size, product=prod, reason="signal")
        return order

    def close_knockout(self, product: Optional[KnockoutProduct] = None, at_close: bool = False,
                       reason: str = "signal", data=None) -> List[bt.Order]:
        """Sell held certificates (all on the data, or one product); ``at_close`` fills at this bar's close.

        Pending orders on those products are cancelled first.
        """
        d = data or self.data
        orders = []
        positions = [p for p in self.broker.positions_on(d) if product is None or p.product.id == product.id]
        ids = {p.product.id for p in positions} | ({product.id} if product is not None else set())
        for o in list(getattr(self.broker, "pending", [])):
            if o.owner is self and o.info.get("product") is not None and o.info["product"].id in ids:
                self.broker.cancel(o)
        for pos in positions:
            orders.append(self.sell(data=d, size=pos.size, product=pos.product, reason=reason,
                                    exectype=bt.Order.Close if at_close else bt.Order.Market))
        return orders

    def cancel_pending(self, data=None) -> int:
        """Cancel this strategy's unfilled orders on the data; returns how many."""
        d = data or self.data
        mine = [o for o in list(getattr(self.broker, "pending", [])) if o.owner is self and o.data is d]
        return sum(bool(self.broker.cancel(o)) for o in mine)

    def has_position(self, data=None) -> bool:
        return bool(self.broker.positions_on(data or self.data))

    def submit_decision(self, decision: Decision, data=None) -> Optional[bt.Order]:
        """Run ``decision`` through the overlay (if any), record it, and open it unless it says no trade.

        The opening order carries ``info["provenance"]`` (:func:`~mltrade.strategies.decision.provenance`),
        which ``KnockoutTrades`` copies into the round trip's row."""
        d = data or self.data
        original = decision
        if self.p.overlay is not None:
            ctx = DecisionContext(candles=self.recent_candles(self.p.context_candles, d),
                                  session=str(d.datetime.date(0)))
            decision = self.p.overlay.review(decision, ctx)
        record = {"time": str(d.datetime.datetime(0)), "price": decision.price,
                  "ml_direction": original.direction, "ml_barrier": original.barrier_level(),
                  "direction": decision.direction, "barrier": decision.barrier_level(),
                  "source": decision.source, **{f"info_{k}": v for k, v in decision.info.items()
                                                if isinstance(v, (int, float, str, bool))}}
        self.decisions.append(record)
        if not decision.direction:
            return None
        barrier = decision.barrier_level()
        return self.open_knockout(decision.direction, barrier=barrier,
                                  distance=None if barrier is not None else self.p.distance,
                                  stop=decision.stop, data=d, provenance=provenance(decision))

    # ------------------------------------------------------------------ event loop
    def next(self) -> None:
        if self.p.flat_at_session_end and (self.is_last_bar_of_session() or self.is_last_bar_of_data()):
            self.cancel_pending()  # nothing may open overnight
            if self.has_position():
                self.close_knockout(at_close=True, reason="session_end")
            return
        self.on_bar()

    def on_bar(self) -> None:
        """Strategy logic for one bar (not called on the session's last bar when flattening)."""

    def notify_knockout(self, product: KnockoutProduct, event: dict) -> None:
        """Called when a held certificate is knocked out (``event``: time, barrier, gapped, residual)."""

    def _addnotification(self, order, quicknotify=False):
        super()._addnotification(order, quicknotify=quicknotify)
        if order.status == order.Completed and order.info.get("reason") == "knockout":
            event = dict(order.info.get("knockout", {}))
            self.knockout_events.append(event)
            self.notify_knockout(order.info["product"], event)

    def stop(self) -> None:
        # deliver fills made on the very last bar (e.g. the session-end exit), which
        # backtrader would otherwise drop because no broker notification round follows
        delivered = False
        while (order := self.broker.get_notification()) is not None:
            (order.owner or self)._addnotification(order)
            delivered = True
        if delivered:
            self._notify()
            self.clear()
