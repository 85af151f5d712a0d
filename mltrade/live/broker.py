"""``SeleniumBroker``: a backtrader broker that trades knock-out certificates on a venue's web pages.

A drop-in for :class:`~mltrade.brokers.knockout.KnockoutBroker` in a live
run: the strategy calls ``buy(data=.., product=KnockoutProduct, stake=..,
stop=..)`` and ``sell(..., product=.., exectype=bt.Order.Close)`` exactly as
in a backtest. Orders are sent to the venue at once (like backtrader's
IB/Oanda brokers) and their fills come back through the usual order
notifications; closes carry ``order.info['roundtrip']`` in the
``KnockoutBroker`` format.

The venue is the truth. :meth:`SeleniumBroker.reconcile` (:mod:`mltrade.live.reconciling`) reads its positions
page at start, after every confirmation time-out and once per bar, and brings
the journal and the broker in line: unconfirmed orders are resolved, late fills
adopted, positions stopped or knocked out at the venue closed (with a journal
close row, so the daily loss limit counts them), positions the bot doesn't know
adopted (stop placed, notification sent) or closed (``on_unknown``). Afterwards
venue positions = journal open positions = broker positions
(:meth:`SeleniumBroker.invariant`).

A buy goes submitted -> accepted -> filled -> protected: the stop is a separate
venue action after the fill, retried ``stop_retries`` times; if it still fails the
position is closed or flagged (``on_stop_failure``) with an urgent notification.
A failure after the fill never turns the fill into a rejection, and a fill at a
price <= 0 is a knock-out before execution, not a trade. Every buy carries a
decision key (strategy, session, decision time); the journal refuses a second
order for a key, also when a restarted session replays its decisions.

Safety: **dry run unless** ``live=True`` **and** ``confirm`` equals
:data:`LIVE_CONFIRMATION`. A dry run records the intended actions (and the
journal), never touches the venue, and fills at the model price from the feed.
Risk limits and the kill switch are checked before every new position.
"""
from __future__ import annotations

import collections
import logging
import time
from datetime import date, datetime, timezone
from typing import Any, Dict, List, Optional, Set

import backtrader as bt

from mltrade.brokers.knockout import CertificateCommInfo, CertPosition, order_product
from mltrade.live.closing import Closing
from mltrade.live.credentials import first_line as _first_line, mask
from mltrade.live.journal import UNRESOLVED, DuplicateDecision, OrderJournal
from mltrade.live.journal_reconcile import ReconcileReport
from mltrade.live.logfile import file_only
from mltrade.live.notify import Notifier
from mltrade.live.opening import Opening
from mltrade.live.reconciling import Reconciling
from mltrade.live.risk import RiskGuard, RiskViolation
from mltrade.live.venues.base import OrderRejected, UnreadableNumber, VenueError
from mltrade.products import KnockoutProduct

log = logging.getLogger("mltrade.live")

#: the value ``[live] confirm`` must have for real orders
LIVE_CONFIRMATION = "I understand that real money is at risk"
ON_UNKNOWN = ("adopt", "close")
ON_STOP_FAILURE = ("close", "flag")


def decision_key(owner: Any, data: Any) -> Optional[str]:
    """``strategy|session|decision time`` of an order placed by ``owner`` on the current bar of ``data``."""
    if data is None or not len(data):
        return None
    dt = data.datetime.datetime(0)
    name = type(owner).__name__ if owner is not None else "manual"
    return f"{name}|{dt.date().isoformat()}|{dt.isoformat()}"


class SeleniumBroker(Reconciling, Opening, Closing, bt.BrokerBase):
    """Venue-backed broker for knock-out certificates (dry run by default).

    Its parts: :class:`~mltrade.live.reconciling.Reconciling` (the venue is the truth),
    :class:`~mltrade.live.opening.Opening` (buys and their stops), :class:`~mltrade.live.closing.Closing`
    (closes, retried; stops and knock-outs); here the lifecycle, accounting, order entry and the bar."""

    params = (
        ("store", None),          # SeleniumStore
        ("journal", None),        # OrderJournal (default: in-memory)
        ("risk", None),           # RiskGuard (default: RiskLimits() defaults)
        ("notifier", None),       # Notifier
        ("live", False),
        ("confirm", ""),          # must equal LIVE_CONFIRMATION together with live=True
        ("cash", 10_000.0),       # dry run starting cash
        ("commission_fixed", 0.0),
        ("poll_every", 1),        # reconcile with the venue every N bars
        ("on_unknown", "adopt"),  # a venue position the bot doesn't know: "adopt" (stop it) or "close" it
        ("on_stop_failure", "close"),  # stop still failing after the retries: "close" or "flag" the position
        ("stop_retries", 2),      # extra attempts to place a stop
        ("adopt_stop", 0.71),     # stop (fraction of entry) for adopted positions without one; 0 = none
        ("retry_s", 2.0),         # least seconds between reconciles on one bar while an order is unresolved
        ("plausibility_factor", 4.0),  # a price/cash/size beyond this factor of its last known value: refused
        ("close_retries", 2),     # extra close attempts in one go (then every bar, until the session ends)
    )

    def __init__(self) -> None:
        super().__init__()
        self.is_live = bool(self.p.live) and self.p.confirm == LIVE_CONFIRMATION
        if self.p.live and not self.is_live:
            raise ValueError("live: live=True needs [live] confirm = "
                             f"{LIVE_CONFIRMATION!r} in the config (explicit opt-in)")
        if self.is_live and self.p.store is None:
            raise ValueError("store: a live SeleniumBroker needs a SeleniumStore")
        if self.p.on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown: expected one of {ON_UNKNOWN}, got {self.p.on_unknown!r}")
        if self.p.on_stop_failure not in ON_STOP_FAILURE:
            raise ValueError(f"on_stop_failure: expected one of {ON_STOP_FAILURE}, "
                             f"got {self.p.on_stop_failure!r}")
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
        self.unresolved: List[bt.Order] = []  # sent, outcome unknown (confirmation time-out, crash)
        self.alerts: List[str] = []           # urgent notifications sent
        self.last_report: Optional[ReconcileReport] = None
        self._flagged: Set[str] = set()      # unprotected positions already notified about
        self._comminfo = CertificateCommInfo()
        self._data: Any = None
        self._bars = 0
        self._last_len: Optional[int] = None
        self._last_reconcile = 0.0
        self._venue_closed = False
        self._reconciling = False
        self.venue_bids: Dict[str, float] = {}
        self.halted: Optional[str] = None     # why new orders are stopped (an unreadable number)
        self.venue_cash: Optional[float] = None   # cash as last read at the venue
        self._want_close: Dict[str, str] = {}     # buy ref -> reason of a close that has not landed yet
        self.corrections: List[dict] = []     # positions booked at the venue's figures (partial fill, ...)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        super().start()
        if self.is_live:
            self.store.ensure_session()
            self.reconcile()

    def stop(self) -> None:
        """End of the run: retry closes that have not landed, reconcile last (cash = venue cash, fees
        included), and shout about any position still open at the venue."""
        super().stop()
        if self.is_live:
            self._reconcile_safe()
            self._retry_closes()
            self._reconcile_safe()
            for pid, pos in list(self.positions.items()):
                ref = self.refs.get(pid)
                if ref in self._want_close:
                    stop = f"protected by its venue stop at {pos.stop_price:.2f}" if pos.stop_price else \
                        "UNPROTECTED (no stop at the venue)"
                    self._alert(f"close of position {self.deals.get(pid)} (ref {ref}) did not land before "
                                f"the run ended; it stays open at the venue, tracked in the journal, {stop}")
        self.notifier.flush(timeout=2.0)

    def _halt(self, e: BaseException) -> None:
        """Stop new orders after an unreadable or implausible number (urgent notification, once)."""
        if self.halted is None:
            self.halted = _first_line(e)
            self._alert(f"new orders stopped: {self.halted}")

    def setdata(self, data: Any) -> None:
        """The index feed adopted positions (from reconciliation) belong to."""
        self._data = data
        for pos in self.positions.values():
            if pos.data is None:
                pos.data = data

    def _alert(self, text: str) -> None:
        """An urgent notification (and an error in the log)."""
        text = mask(text)
        self.alerts.append(text)
        log.error("URGENT: %s", text)
        self.notifier.notify("error", error=f"URGENT: {text}")

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
        if reason.startswith("risk: "):     # risk refusals: summed up once by the CLI (LiveResult.refusals)
            file_only(logging.WARNING, "order rejected: %s", mask(reason))
        else:
            log.warning("order rejected: %s", mask(reason))
        return order

    def _day(self, data: Any) -> date:
        if data is not None and len(data):
            return data.datetime.date(0)
        return datetime.now(timezone.utc).date()

    def _today(self) -> Optional[date]:
        """The current bar's session day (None before the first bar: close rows then take the buy's day)."""
        d = self._data
        return d.datetime.date(0) if d is not None and len(d) else None

    def _order(self, cls, owner, data, size, price, exectype, kwargs) -> bt.Order:
        if self._data is None:
            self.setdata(data)
        key = kwargs.pop("decision", None)
        product = order_product(self, cls, data, kwargs)
        stake, stop = kwargs.pop("stake", None), kwargs.pop("stop", None)
        reason = kwargs.pop("reason", "signal")
        order = self._new_order(cls, owner, data, size, price, exectype, product,
                                stake=stake, stop=stop, reason=reason)
        try:
            if order.isbuy():
                self._open(order, product, data, size, stake, stop, key or decision_key(owner, data))
            else:
                self._close_order(order, product, data, reason)
        except Exception as e:
            if order.status == bt.Order.Completed or order in self.unresolved:
                # filled (or in flight) already: a later failure never turns that into a rejection
                log.error("after %s %s: %s", "buy" if order.isbuy() else "close", order.info.get("ref"),
                          _first_line(e))
                return order
            if isinstance(e, DuplicateDecision):
                self._reject(order, f"duplicate decision: {e}")
            elif isinstance(e, RiskViolation):
                self._reject(order, f"risk: {e.reason}")
            elif isinstance(e, OrderRejected):
                ref = order.info.get("ref")
                if ref and self.journal.get(ref).status in UNRESOLVED:
                    self.journal.update(ref, "rejected", error=mask(e.reason))
                self._reject(order, e.reason)
                self.notifier.notify("error", error=f"order rejected: {e.reason}")
            elif isinstance(e, VenueError) or self.is_live:
                if isinstance(e, UnreadableNumber):
                    self._halt(e)
                ref = order.info.get("ref")
                if ref and self.journal.get(ref).status in UNRESOLVED:
                    self.journal.update(ref, "failed", error=_first_line(e))
                self._reject(order, f"venue: {_first_line(e)}")
                self.notifier.notify("error", error=_first_line(e))
            else:
                raise
        return order

    # ------------------------------------------------------------------ per bar
    def next(self) -> None:
        # live feeds make cerebro call next() while waiting for a bar: act once per new bar, and
        # retry unresolved orders at most every retry_s seconds
        n = len(self._data) if self._data is not None else -1
        new_bar = n != self._last_len
        if not new_bar and not (self.unresolved and self.is_live
                                and time.monotonic() - self._last_reconcile >= self.p.retry_s):
            return
        self._last_len = n
        if not self.is_live:
            self._bars += 1
            self._simulate_exits()
            return
        if new_bar:
            self._bars += 1
        if self.unresolved or self._want_close or self._bars % max(1, int(self.p.poll_every)) == 0:
            self._reconcile_safe()
            if self._want_close:
                self._retry_closes()
        else:
            try:
                self.store.ensure_session()      # keep-alive between reconciles
            except Exception as e:
                log.error("keep-alive failed: %s", _first_line(e))

    def poll(self) -> Optional[ReconcileReport]:
        """Reconcile now (kept for callers of the former polling API)."""
        return self._reconcile_safe()

