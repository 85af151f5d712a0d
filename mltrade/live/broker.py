"""``SeleniumBroker``: a backtrader broker that trades knock-out certificates on a venue's web pages.

A drop-in for :class:`~mltrade.brokers.knockout.KnockoutBroker` in a live
run: the strategy calls ``buy(data=.., product=KnockoutProduct, stake=..,
stop=..)`` and ``sell(..., product=.., exectype=bt.Order.Close)`` exactly as
in a backtest. Orders are sent to the venue at once (like backtrader's
IB/Oanda brokers) and their fills come back through the usual order
notifications; closes carry ``order.info['roundtrip']`` in the
``KnockoutBroker`` format. Stops and knock-outs done by the venue are found
by polling its positions and history.

Safety: **dry run unless** ``live=True`` **and** ``confirm`` equals
:data:`LIVE_CONFIRMATION`. A dry run records the intended actions (and the
journal), never touches the venue, and fills at the model price from the
feed. Before every venue action the journal gets an entry; at ``start()`` it
is reconciled with the venue so a crash between click and confirmation never
sends a second order. Risk limits and the kill switch are checked first.
"""
from __future__ import annotations

import collections
import logging
from datetime import date, datetime, timezone
from typing import Any, Dict, List, Optional

import backtrader as bt

from mltrade.brokers.knockout import CertificateCommInfo, CertPosition, broker_close_order, order_product
from mltrade.live.credentials import mask
from mltrade.live.journal import OrderJournal
from mltrade.live.notify import Notifier, event_for_close
from mltrade.live.risk import RiskGuard, RiskViolation
from mltrade.live.venues.base import ConfirmationTimeout, OrderRejected, VenueError
from mltrade.products import KnockoutProduct

log = logging.getLogger("mltrade.live")

#: the value ``[live] confirm`` must have for real orders
LIVE_CONFIRMATION = "I understand that real money is at risk"


class SeleniumBroker(bt.BrokerBase):
    """Venue-backed broker for knock-out certificates (dry run by default)."""

    params = (
        ("store", None),          # SeleniumStore
        ("journal", None),        # OrderJournal (default: in-memory)
        ("risk", None),           # RiskGuard (default: RiskLimits() defaults)
        ("notifier", None),       # Notifier
        ("live", False),
        ("confirm", ""),          # must equal LIVE_CONFIRMATION together with live=True
        ("cash", 10_000.0),       # dry run starting cash
        ("commission_fixed", 0.0),
        ("poll_every", 1),        # poll venue positions every N bars
    )

    def __init__(self) -> None:
        super().__init__()
        self.is_live = bool(self.p.live) and self.p.confirm == LIVE_CONFIRMATION
        if self.p.live and not self.is_live:
            raise ValueError("live: live=True needs [live] confirm = "
                             f"{LIVE_CONFIRMATION!r} in the config (explicit opt-in)")
        if self.is_live and self.p.store is None:
            raise ValueError("store: a live SeleniumBroker needs a SeleniumStore")
        self.store = self.p.store
        self.journal: OrderJournal = self.p.journal or OrderJournal(
            ":memory:", getattr(self.store, "venue_name", "dry"))
        self.risk: RiskGuard = self.p.risk or RiskGuard()
        self.notifier: Notifier = self.p.notifier or Notifier()
        self.cash = float(self.p.cash)
        self.startingcash = self.cash
        self.notifs: collections.deque = collections.deque()
        self.positions: Dict[int, CertPosition] = {}
        self.refs: Dict[int, str] = {}        # product id -> journal ref of its buy
        self.deals: Dict[int, str] = {}       # product id -> venue deal id
        self.actions: List[dict] = []         # what was (or, in a dry run, would have been) done
        self.roundtrips: List[dict] = []
        self.pending: List[bt.Order] = []
        self.unresolved: List[bt.Order] = []  # submitted, outcome unknown (confirmation timeout)
        self._comminfo = CertificateCommInfo()
        self._data: Any = None
        self._bars = 0
        self._last_len: Optional[int] = None
        self.venue_bids: Dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        super().start()
        if self.is_live:
            self.store.ensure_session()
            self.reconcile()

    def stop(self) -> None:
        super().stop()
        self.notifier.flush(timeout=2.0)

    def setdata(self, data: Any) -> None:
        """The index feed adopted positions (from reconciliation) belong to."""
        self._data = data
        for pos in self.positions.values():
            if pos.data is None:
                pos.data = data

    def reconcile(self) -> Any:
        """Resolve in-flight journal entries with the venue and adopt open positions."""
        venue = self.store.venue
        self.cash, open_, history = self.store.call(venue.snapshot, name="reconcile")
        rep = self.journal.reconcile(open_, history)
        by_ref = {p.client_ref: p for p in open_}
        known = {pos_ref for pos_ref in self.refs.values()}
        for e in self.journal.open_positions():
            if e.ref in known or e.ref not in by_ref:
                continue
            vp = by_ref[e.ref]
            product = KnockoutProduct.turbo(vp.direction, vp.barrier, name=vp.product_id,
                                            **e.info.get("product_kw", {}))
            pos = CertPosition(product=product, data=self._data, size=vp.size, price=vp.entry,
                               entry_barrier=vp.barrier, entry_strike=vp.barrier, cost=vp.size * vp.entry)
            self.positions[product.id] = pos
            self.refs[product.id] = e.ref
            self.deals[product.id] = vp.deal_id
            log.warning("adopted open position %s (%d certificates, ref %s) from the venue",
                        vp.deal_id, vp.size, e.ref)
        return rep

    # ------------------------------------------------------------------ accounting
    def getcash(self) -> float:
        return self.cash

    def setcash(self, cash: float) -> None:
        self.cash = self.startingcash = float(cash)

    def _bid(self, pos: CertPosition) -> float:
        deal = self.deals.get(pos.product.id)
        if self.is_live and deal in self.venue_bids:
            return self.venue_bids[deal]
        if pos.data is not None and len(pos.data):
            return float(pos.product.bid(pos.data.close[0]))
        return pos.price

    def getvalue(self, datas: Any = None) -> float:
        """Cash plus positions at the venue's bid (live) or the model bid (dry run)."""
        v = sum(p.size * self._bid(p) for p in self.positions.values()
                if datas is None or p.data in datas)
        return v if datas is not None else self.cash + v

    def getposition(self, data: Any, product: Optional[KnockoutProduct] = None) -> bt.Position:
        size = sum(p.size for p in self.positions_on(data) if product is None or p.product.id == product.id)
        cost = sum(p.size * p.price for p in self.positions_on(data)
                   if product is None or p.product.id == product.id)
        return bt.Position(size, cost / size if size else 0.0)

    def positions_on(self, data: Any = None) -> List[CertPosition]:
        return [p for p in self.positions.values() if data is None or p.data is data or p.data is None]

    def get_notification(self) -> Optional[bt.Order]:
        return self.notifs.popleft() if self.notifs else None

    def notify(self, order: bt.Order) -> None:
        self.notifs.append(order.clone())

    def cancel(self, order: bt.Order, bracket: bool = False) -> bool:
        return False   # orders are sent at once; nothing waits to be cancelled

    # ------------------------------------------------------------------ orders
    def buy(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
            oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True,
            histnotify=False, _checksubmit=True, **kwargs):
        return self._order(bt.BuyOrder, owner, data, size, price, exectype, kwargs)

    def sell(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
             oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True,
             histnotify=False, _checksubmit=True, **kwargs):
        return self._order(bt.SellOrder, owner, data, size, price, exectype, kwargs)

    def _new_order(self, cls, owner, data, size, price, exectype, product, **info) -> bt.Order:
        order = cls(owner=owner, data=data, size=size if size else 1, price=price, exectype=exectype,
                    tradeid=product.id, simulated=False)
        order.addinfo(product=product, **info)
        order.addcomminfo(self._comminfo)
        order.submit(self)
        order.accept(self)
        self.notify(order)
        return order

    def _reject(self, order: bt.Order, reason: str) -> bt.Order:
        order.addinfo(reject_reason=reason)
        order.reject(self)
        self.notify(order)
        log.warning("order rejected: %s", mask(reason))
        return order

    def _day(self, data: Any) -> date:
        if data is not None and len(data):
            return data.datetime.date(0)
        return datetime.now(timezone.utc).date()

    def _order(self, cls, owner, data, size, price, exectype, kwargs) -> bt.Order:
        if self._data is None:
            self.setdata(data)
        product = order_product(self, cls, data, kwargs)
        stake, stop = kwargs.pop("stake", None), kwargs.pop("stop", None)
        reason = kwargs.pop("reason", "signal")
        order = self._new_order(cls, owner, data, size, price, exectype, product,
                                stake=stake, stop=stop, reason=reason)
        try:
            if order.isbuy():
                self._open(order, product, data, size, stake, stop)
            else:
                self._close_order(order, product, data, reason)
        except RiskViolation as e:
            self._reject(order, f"risk: {e.reason}")
        except OrderRejected as e:
            ref = order.info.get("ref")
            if ref and self.journal.get(ref).status in ("pending", "submitted"):
                self.journal.update(ref, "rejected", error=mask(e.reason))
            self._reject(order, e.reason)
            self.notifier.notify("error", error=f"order rejected: {e.reason}")
        except ConfirmationTimeout as e:
            # clicked, but no answer: leave it in flight; the next bar reconciles with the venue
            self.unresolved.append(order)
            log.error("no confirmation for %s: %s; will reconcile", order.info.get("ref"), mask(str(e)))
            self.notifier.notify("error", error="order sent but not confirmed; reconciling")
        except VenueError as e:
            ref = order.info.get("ref")
            if ref:
                self.journal.update(ref, "failed", error=mask(str(e).splitlines()[0]))
            self._reject(order, f"venue: {str(e).splitlines()[0]}")
            self.notifier.notify("error", error=str(e).splitlines()[0])
        except Exception as e:     # browser crash or the like in the middle of a venue action
            if not (self.is_live and order.isbuy() and order.info.get("ref")):
                raise
            # we may or may not have clicked: treat as unconfirmed and reconcile on the next bar
            self.unresolved.append(order)
            log.error("buy %s interrupted (%s); will reconcile", order.info["ref"],
                      mask(str(e).splitlines()[0] if str(e) else type(e).__name__))
            self.notifier.notify("error", error="order interrupted; reconciling with the venue")
        return order

    def _open(self, order: bt.Order, product: KnockoutProduct, data: Any, size: Optional[float],
              stake: Optional[float], stop: Optional[float]) -> None:
        day = self._day(data)
        if stake is not None:
            size = None      # a stake wins over backtrader's default sizer (as in KnockoutBroker)
        index = float(data.close[0]) if data is not None and len(data) else None
        ask = float(product.ask(index)) if index is not None else None
        budget = stake if stake is not None else (size or 0) * (ask or 0)
        if stake is not None:
            budget = min(stake, self.cash)
        leverage = product.leverage(index) if index is not None else None
        if self.journal.unresolved():
            raise RiskViolation("an earlier order is still unconfirmed; reconcile before trading")
        self.risk.check_open(budget, leverage, day, open_positions=len(self.positions),
                             trades_today=max(self.risk.trades.get(day, 0), self.journal.trades_on(day)),
                             pnl_today=min(self.risk.pnl.get(day, 0.0), self.journal.realized_pnl_on(day)))
        action = {"action": "buy", "direction": product.direction, "barrier": product.barrier,
                  "size": size, "stake": budget if size is None else None, "stop": stop, "index": index,
                  "day": day.isoformat(), "dry_run": not self.is_live}
        ref = self.journal.begin("buy", direction=product.direction, barrier=product.barrier, size=size,
                                 stake=action["stake"], status="pending" if self.is_live else "dry_run",
                                 day=day, stop=stop, index=index)
        order.addinfo(ref=ref)
        self.actions.append(dict(action, ref=ref))
        self.risk.record_open(day)
        if self.is_live:
            fill = self.store.call(self.store.venue.buy, product.direction, product.barrier,
                                   index_price=index,
                                   size=int(size) if size else None, stake=action["stake"], client_ref=ref,
                                   stop_fraction=stop, name="buy")
            self.journal.update(ref, "filled", price=fill.price, size=fill.size, barrier=fill.barrier,
                                deal_id=fill.deal_id, product_id=fill.product_id)
            if abs(fill.barrier - product.barrier) > 1e-9:   # the venue's level (safe side) wins
                product = product.copy(strike=fill.barrier, barrier=fill.barrier, id=product.id, name="")
                order.info["product"] = product
            self.deals[product.id] = fill.deal_id
            n, px = fill.size, fill.price
        else:
            px = ask if ask is not None else 0.0
            n = int(size) if size else int(max(budget - self.p.commission_fixed, 0) // px) if px > 0 else 0
            if n <= 0:
                self.journal.update(ref, "rejected", error="size 0")
                raise OrderRejected(f"size 0 at price {px:.2f}")
            self.journal.update(ref, "dry_run", price=px, size=n)
        self._book_open(order, product, data, n, px, index, stop, ref)

    def _book_open(self, order: bt.Order, product: KnockoutProduct, data: Any, n: float, px: float,
                   index: Optional[float], stop: Optional[float], ref: str) -> None:
        comm = self.p.commission_fixed
        self.cash -= n * px + comm
        pos = CertPosition(product=product, data=data, size=n, price=px,
                           stop_price=stop * px if stop else None,
                           entry_dt=data.datetime[0] if data is not None and len(data) else 0.0,
                           entry_underlying=index or 0.0, entry_strike=product.strike,
                           entry_barrier=product.barrier,
                           entry_leverage=product.leverage(index) if index else 0.0,
                           entry_bar=len(data) if data is not None else 0, cost=n * px, fees=comm,
                           entry_fees=comm, owner=order.owner)
        self.positions[product.id] = pos
        self.refs[product.id] = ref
        order.size = order.created.size = order.created.remsize = order.executed.remsize = n
        order.execute(pos.entry_dt, n, px, 0, 0.0, 0.0, n, n * px, comm, 0.0, 0.0, n, px)
        self.notify(order)
        self.notifier.notify("buy", direction="Long" if product.direction > 0 else "Short",
                             barrier=product.barrier, size=n, price=px)

    def _close_order(self, order: bt.Order, product: KnockoutProduct, data: Any, reason: str) -> None:
        pos = self.positions.get(product.id)
        if pos is None:
            raise OrderRejected("no open position in this product")
        buy_ref = self.refs.get(product.id)
        day = self._day(data)
        ref = self.journal.begin("close", parent=buy_ref, size=pos.size, day=day,
                                 status="pending" if self.is_live else "dry_run",
                                 deal_id=self.deals.get(product.id))
        self.actions.append({"action": "close", "ref": ref, "parent": buy_ref, "size": pos.size,
                             "reason": reason, "dry_run": not self.is_live})
        if self.is_live:
            px = self.store.call(self.store.venue.close, self.deals[product.id], name="close")
        else:
            px = self._bid(pos)
        self._book_close(pos, order, px, reason, ref)

    def _book_close(self, pos: CertPosition, order: bt.Order, px: float, reason: str, ref: str) -> None:
        n = pos.size
        comm = self.p.commission_fixed if reason not in ("knockout",) else 0.0
        self.cash += n * px - comm
        pnl_trade = n * (px - pos.price)
        pos.fees += comm
        pos.proceeds += n * px
        pos.exit_size += n
        pos.size = 0
        data = pos.data
        dt = data.datetime[0] if data is not None and len(data) else 0.0
        order.size = order.created.size = order.created.remsize = order.executed.remsize = -n
        order.execute(dt, -n, px, -n, n * pos.price, comm, 0, 0.0, 0.0, 0.0, pnl_trade, 0, 0.0)
        pid = pos.product.id
        del self.positions[pid]
        index = float(data.close[0]) if data is not None and len(data) else 0.0
        pnl = pos.proceeds - pos.cost - pos.fees
        invested = pos.cost + pos.entry_fees
        rt = {"product": pos.product.name, "kind": pos.product.kind,
              "direction": "long" if pos.product.direction > 0 else "short", "strike": pos.entry_strike,
              "barrier": pos.entry_barrier, "ratio": pos.product.ratio, "size": n,
              "entry_time": (data.num2date(pos.entry_dt).isoformat()
                             if data is not None and pos.entry_dt else ""),
              "entry_price": pos.price, "entry_underlying": pos.entry_underlying,
              "exit_time": data.num2date().isoformat() if data is not None and len(data) else "",
              "exit_price": px, "exit_underlying": index, "fees": pos.fees, "financing": 0.0,
              "exit_reason": reason, "pnl": pnl, "return": pnl / invested if invested else 0.0,
              "leverage": pos.entry_leverage, "bars": (len(data) - pos.entry_bar) if data is not None else 0,
              "invested": invested, "venue_ref": self.refs.get(pid), "dry_run": not self.is_live}
        self.roundtrips.append(rt)
        order.addinfo(roundtrip=rt)
        self.journal.update(ref, "filled" if self.is_live else "dry_run", price=px, pnl=pnl, reason=reason)
        buy_ref = self.refs.pop(pid, None)
        if buy_ref:
            self.journal.update(buy_ref, "closed" if self.is_live else "dry_run", exit=px, pnl=pnl,
                                reason=reason)
        self.deals.pop(pid, None)
        self.risk.record_close(self._day(data), pnl)
        self.notify(order)
        self.notifier.notify(event_for_close(reason, pnl), price=px, pnl=pnl, barrier=pos.entry_barrier)

    def _synthetic_close(self, pos: CertPosition, px: float, reason: str) -> None:
        order = broker_close_order(self, pos, reason)
        ref = self.journal.begin("close", parent=self.refs.get(pos.product.id), size=pos.size,
                                 day=self._day(pos.data), status="pending" if self.is_live else "dry_run",
                                 venue_reason=reason)
        if reason == "knockout":
            order.addinfo(knockout={"product": pos.product.name, "barrier": pos.product.barrier,
                                    "residual": px, "gapped": False,
                                    "time": pos.data.num2date().isoformat() if pos.data is not None else ""})
        self._book_close(pos, order, px, reason, ref)

    # ------------------------------------------------------------------ per bar
    def next(self) -> None:
        # live feeds make cerebro call next() while waiting for a bar: act once per new bar
        n = len(self._data) if self._data is not None else -1
        if n == self._last_len and not self.unresolved:
            return
        self._last_len = n
        self._bars += 1
        if self.is_live:
            busy = self.unresolved or self.positions
            if busy and self._bars % max(1, int(self.p.poll_every)) == 0 or self.unresolved:
                self.poll()
            else:
                self.store.ensure_session()      # keep-alive while flat
        else:
            self._simulate_exits()

    def poll(self) -> None:
        """Read venue positions: resolve unconfirmed orders, detect stops and knock-outs, refresh cash."""
        venue = self.store.venue
        try:
            self.cash, open_, history = self.store.call(venue.snapshot, name="poll")
        except VenueError as e:
            log.error("polling the venue failed: %s", mask(str(e).splitlines()[0]))
            return
        by_ref = {p.client_ref: p for p in open_}
        self.venue_bids = {p.deal_id: p.bid for p in open_}
        for order in list(self.unresolved):
            ref = order.info["ref"]
            vp = by_ref.get(ref)
            self.unresolved.remove(order)
            if vp is None:
                self.journal.update(ref, "absent", reconciled=True)
                self._reject(order, "not executed by the venue (reconciled)")
                continue
            self.journal.update(ref, "filled", price=vp.entry, size=vp.size, deal_id=vp.deal_id,
                                reconciled=True)
            product = order.info["product"]
            self.deals[product.id] = vp.deal_id
            self.cash += vp.size * vp.entry      # the snapshot's cash already paid for it
            self._book_open(order, product, order.data, vp.size, vp.entry, None, order.info.get("stop"), ref)
        closed = {c.deal_id: c for c in history}
        open_deals = {p.deal_id for p in open_}
        for pid, deal in list(self.deals.items()):
            if deal in open_deals:
                continue
            c = closed.get(deal)
            pos = self.positions.get(pid)
            if c is None or pos is None:
                continue
            self.cash -= pos.size * c.exit            # _book_close adds the proceeds the venue already paid
            self._synthetic_close(pos, c.exit, "knockout" if c.reason == "knockout" else
                                  "stop" if c.reason == "stop" else "signal")

    def _simulate_exits(self) -> None:
        """Dry run: knock-outs and stops from the feed's bar, priced by mltrade.products."""
        for pos in list(self.positions.values()):
            data = pos.data
            if data is None or not len(data) or data.datetime[0] == pos.entry_dt:
                continue
            p = pos.product
            lo, hi = float(data.low[0]), float(data.high[0])
            if bool(p.knocked_out_by(lo, hi)):
                self._synthetic_close(pos, 0.0, "knockout")
                continue
            worst = float(p.bid(lo if p.direction > 0 else hi))
            if pos.stop_price is not None and worst <= pos.stop_price:
                self._synthetic_close(pos, pos.stop_price, "stop")
