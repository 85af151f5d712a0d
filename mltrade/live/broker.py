"""``SeleniumBroker``: a backtrader broker that trades knock-out certificates on a venue's web pages.

A drop-in for :class:`~mltrade.brokers.knockout.KnockoutBroker` in a live
run: the strategy calls ``buy(data=.., product=KnockoutProduct, stake=..,
stop=..)`` and ``sell(..., product=.., exectype=bt.Order.Close)`` exactly as
in a backtest. Orders are sent to the venue at once (like backtrader's
IB/Oanda brokers) and their fills come back through the usual order
notifications; closes carry ``order.info['roundtrip']`` in the
``KnockoutBroker`` format.

The venue is the truth. :meth:`SeleniumBroker.reconcile` reads its positions
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
from typing import Any, Dict, Iterable, List, Optional, Set

import backtrader as bt

from mltrade.brokers.knockout import CertificateCommInfo, CertPosition, broker_close_order, order_product
from mltrade.brokers.roundtrip import roundtrip_record
from mltrade.live.credentials import mask
from mltrade.live.journal import UNRESOLVED, DuplicateDecision, JournalEntry, OrderJournal, ReconcileReport
from mltrade.live.notify import Notifier, event_for_close
from mltrade.live.logfile import file_only
from mltrade.live.risk import RiskGuard, RiskViolation
from mltrade.live.formats import ImplausibleNumber, check_plausible
from mltrade.live.venues.base import ConfirmationTimeout, OrderRejected, UnreadableNumber, VenueError
from mltrade.products import KnockoutProduct

log = logging.getLogger("mltrade.live")

#: the value ``[live] confirm`` must have for real orders
LIVE_CONFIRMATION = "I understand that real money is at risk"
ON_UNKNOWN = ("adopt", "close")
ON_STOP_FAILURE = ("close", "flag")


def _first_line(e: BaseException) -> str:
    return mask(str(e).splitlines()[0] if str(e) else type(e).__name__)


def decision_key(owner: Any, data: Any) -> Optional[str]:
    """``strategy|session|decision time`` of an order placed by ``owner`` on the current bar of ``data``."""
    if data is None or not len(data):
        return None
    dt = data.datetime.datetime(0)
    name = type(owner).__name__ if owner is not None else "manual"
    return f"{name}|{dt.date().isoformat()}|{dt.isoformat()}"


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

    # ------------------------------------------------------------------ reconciliation
    def reconcile(self, keep_pending: Iterable[str] = ()) -> ReconcileReport:
        """Make journal and broker match the venue's positions page (the truth); returns the journal report.

        ``keep_pending``: refs of buys that just timed out and may still be filled (kept in flight).
        """
        venue = self.store.venue
        self._last_reconcile = time.monotonic()
        self._venue_closed = False
        self._reconciling = True
        try:
            return self._reconcile(venue, keep_pending)
        finally:
            self._reconciling = False

    def _reconcile(self, venue: Any, keep_pending: Iterable[str]) -> ReconcileReport:
        cash, open_, history = self.store.call(venue.snapshot, name="reconcile")
        self._plausible(cash, open_)
        rep = self.journal.reconcile(open_, history, day=self._today(), keep_pending=keep_pending)
        self.last_report = rep
        for vp in rep.unknown:
            self._unknown_position(vp)
        self._sync()
        self._correct(rep)
        self.venue_bids = {p.deal_id: p.bid for p in open_}
        by_deal = {p.deal_id: p for p in open_}
        for pid in list(self.positions):
            vp = by_deal.get(self.deals.get(pid))
            if vp is None or vp.stop is not None or pid not in self.positions:
                continue
            e = self.journal.get(self.refs[pid])
            frac = e.info.get("stop") if e is not None else None
            if not frac and e is not None and e.info.get("adopted"):
                frac = self.p.adopt_stop
            if frac:
                self._protect(pid, float(frac))
        self.cash = self.store.call(venue.cash, name="cash") if self._venue_closed else cash
        self.venue_cash = self.cash
        self._check_invariant(None if self._venue_closed else open_)
        return rep

    def _plausible(self, cash: float, open_: List[Any]) -> None:
        """Refuse a venue read whose cash, bids, entries or sizes jump beyond ``plausibility_factor``."""
        f = float(self.p.plausibility_factor or 0.0)
        try:
            check_plausible("cash", cash, self.venue_cash, f)
            by_deal = {e.deal_id: e for e in self.journal.open_positions()}
            for p in open_:
                check_plausible(f"bid of {p.deal_id}", p.bid, self.venue_bids.get(p.deal_id), f)
                e = by_deal.get(p.deal_id)
                if e is not None:
                    check_plausible(f"entry of {p.deal_id}", p.entry, e.price, f)
                    check_plausible(f"size of {p.deal_id}", p.size, e.size, f)
        except ImplausibleNumber as e:
            raise UnreadableNumber(f"{getattr(self.store, 'venue_name', 'venue')}: positions page: {e}",
                                   text=e.text) from None

    def _correct(self, rep: ReconcileReport) -> None:
        """Book positions whose size, entry, direction or product differ at the venue at its figures."""
        for ref, diff in rep.mismatched:
            pid = next((k for k, r in self.refs.items() if r == ref), None)
            e = self.journal.get(ref)
            if pid is None or e is None or pid not in self.positions:
                continue
            pos = self.positions[pid]
            pos.size = float(e.size or 0)
            pos.price = float(e.price or 0.0)
            pos.cost = pos.size * pos.price
            if "direction" in diff or "barrier" in diff:
                pos.product = pos.product.copy(direction=int(e.direction or pos.product.direction),
                                               strike=float(e.barrier), barrier=float(e.barrier),
                                               id=pos.product.id, name="")
                pos.entry_barrier = pos.entry_strike = float(e.barrier)
            what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items())
            self.corrections.append({"ref": ref, "deal_id": e.deal_id, "diff": diff})
            self._alert(f"position {e.deal_id} (ref {ref}) differs at the venue ({what}); booked at the "
                        "venue's figures")

    def _reconcile_safe(self, keep_pending: Iterable[str] = ()) -> Optional[ReconcileReport]:
        if self._reconciling:      # a venue action inside a reconciliation: the next one resolves it
            return None
        try:
            return self.reconcile(keep_pending)
        except UnreadableNumber as e:   # never guessed: no new orders; the next bar reads again
            self._halt(e)
            log.error("reconciling with the venue failed: %s; will retry on the next bar", _first_line(e))
            return None
        except Exception as e:     # the venue is unreachable: the next bar tries again
            log.error("reconciling with the venue failed: %s; will retry on the next bar", _first_line(e))
            return None

    def _check_invariant(self, venue_positions: Optional[list]) -> bool:
        journal = {e.deal_id for e in self.journal.open_positions()}
        broker = {self.deals.get(pid) for pid in self.positions}
        venue = {p.deal_id for p in venue_positions} if venue_positions is not None else journal
        ok = journal == broker == venue
        if not ok:
            log.error("reconciliation invariant broken: venue %s, journal %s, broker %s",
                      sorted(p.deal_id for p in venue_positions) if venue_positions is not None else "?",
                      sorted(journal), sorted(broker))
        return ok

    def invariant(self) -> Dict[str, Set[str]]:
        """Deal ids open at the venue (read now), in the journal and in the broker; all equal when in sync."""
        open_ = self.store.call(self.store.venue.positions, name="invariant")
        return {"venue": {p.deal_id for p in open_},
                "journal": {e.deal_id for e in self.journal.open_positions()},
                "broker": {self.deals.get(pid) for pid in self.positions}}

    def _unknown_position(self, vp: Any) -> None:
        """A venue position the bot doesn't know: journal it as adopted, then close it if configured."""
        ref = self.journal.begin("buy", direction=vp.direction, barrier=vp.barrier, size=vp.size,
                                 price=vp.entry, deal_id=vp.deal_id, status="filled", day=self._today(),
                                 adopted=True, client_ref=vp.client_ref, product_id=vp.product_id, stop=None)
        if self.p.on_unknown == "close":
            pos = self._adopt(self.journal.get(ref), quiet=True)
            order = broker_close_order(self, pos, "unknown_position")
            order.addinfo(ref=self.journal.begin("close", parent=ref, size=vp.size, deal_id=vp.deal_id,
                                                 day=self._today(), reason="unknown_position"), buy_ref=ref)
            self._alert(f"unknown venue position {vp.deal_id} ({vp.size} x {vp.product_id}): closing it")
            self._close_live(order, pos, "unknown_position")
        else:
            self._alert(f"unknown venue position {vp.deal_id} ({vp.size} x {vp.product_id}, "
                        f"ref {vp.client_ref or '-'}) adopted; placing its stop")

    def _sync(self) -> None:
        """Broker positions and in-flight orders from the (reconciled) journal."""
        for o in list(self.unresolved):
            e = self.journal.get(o.info.get("ref"))
            if e is not None and e.status in UNRESOLVED:
                continue
            self.unresolved.remove(o)
            if o.isbuy():
                if e is not None and e.status in ("filled", "closed"):
                    product = o.info["product"]
                    if e.barrier is not None and abs(e.barrier - product.barrier) > 1e-9:
                        product = product.copy(strike=e.barrier, barrier=e.barrier, id=product.id, name="")
                        o.info["product"] = product
                    self.deals[product.id] = e.deal_id
                    self._book_open(o, product, o.data, e.size, e.price, e.info.get("index"), e.ref)
                else:
                    self._reject(o, f"not executed by the venue ({e.status if e else 'unknown'}, reconciled)")
            else:
                pos = self._position_of(o.info.get("buy_ref"))
                if e is not None and e.status == "filled" and pos is not None:
                    self._book_close(pos, o, float(e.price or 0.0), e.info.get("reason", "signal"), e.ref,
                                     journal_done=True)
                elif pos is None:
                    self._reject(o, "position already closed (reconciled)")
                else:
                    self._reject(o, "close not executed by the venue; the position is still open")
        jopen = {e.ref: e for e in self.journal.open_positions()}
        for pid, ref in list(self.refs.items()):
            if ref in jopen or pid not in self.positions:
                continue
            e = self.journal.get(ref)
            info = e.info if e is not None else {}
            self._synthetic_close(self.positions[pid], float(info.get("exit") or 0.0),
                                  info.get("reason", "venue_close"), journal_done=True)
        held = set(self.refs.values())
        for ref, e in jopen.items():
            if ref not in held:
                self._adopt(e)

    def _position_of(self, buy_ref: Optional[str]) -> Optional[CertPosition]:
        for pid, ref in self.refs.items():
            if ref == buy_ref:
                return self.positions.get(pid)
        return None

    def _adopt(self, e: JournalEntry, quiet: bool = False) -> CertPosition:
        """A broker position for the open journal entry ``e`` (restart, late fill, unknown position)."""
        data = self._data
        product = KnockoutProduct.turbo(int(e.direction or 1), float(e.barrier or 0.0),
                                        ratio=float(e.info.get("ratio") or 0.01),
                                        name=str(e.info.get("product_id") or ""))
        pos = CertPosition(product=product, data=data, size=float(e.size or 0), price=float(e.price or 0.0),
                           stop_price=e.info.get("stop_price"),
                           entry_dt=data.datetime[0] if data is not None and len(data) else 0.0,
                           entry_barrier=product.barrier, entry_strike=product.strike,
                           entry_bar=len(data) if data is not None else 0,
                           cost=float(e.size or 0) * float(e.price or 0.0))
        self.positions[product.id] = pos
        self.refs[product.id] = e.ref
        self.deals[product.id] = e.deal_id
        log.warning("adopted open position %s (%d certificates at %.2f, ref %s) from the venue",
                    e.deal_id, pos.size, pos.price, e.ref)
        if not quiet and not e.info.get("adopted"):
            what = "filled late (after its confirmation timed out)" if e.info.get("late") else "found open"
            self._alert(f"venue position {e.deal_id} of order {e.ref} {what}; adopted")
        return pos

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

    def _open(self, order: bt.Order, product: KnockoutProduct, data: Any, size: Optional[float],
              stake: Optional[float], stop: Optional[float], key: Optional[str]) -> None:
        day = self._day(data)
        if stake is not None:
            size = None      # a stake wins over backtrader's default sizer (as in KnockoutBroker)
        index = float(data.close[0]) if data is not None and len(data) else None
        ask = float(product.ask(index)) if index is not None else None
        budget = stake if stake is not None else (size or 0) * (ask or 0)
        if stake is not None:
            budget = min(stake, self.cash)
        leverage = product.leverage(index) if index is not None else None
        if key is not None:
            seen = self.journal.by_decision(key)
            if seen is not None:
                raise DuplicateDecision(key, seen)
        if self.halted:
            raise RiskViolation(f"new orders stopped after an unreadable number ({self.halted})")
        if self.journal.unresolved():
            raise RiskViolation("an earlier order is still unconfirmed; reconcile before trading")
        self.risk.check_open(budget, leverage, day, open_positions=len(self.positions),
                             trades_today=max(self.risk.trades.get(day, 0), self.journal.trades_on(day)),
                             pnl_today=min(self.risk.pnl.get(day, 0.0), self.journal.realized_pnl_on(day)))
        action = {"action": "buy", "direction": product.direction, "barrier": product.barrier,
                  "size": size, "stake": budget if size is None else None, "stop": stop, "index": index,
                  "day": day.isoformat(), "decision": key, "dry_run": not self.is_live}
        ref = self.journal.begin("buy", direction=product.direction, barrier=product.barrier, size=size,
                                 stake=action["stake"], status="pending" if self.is_live else "dry_run",
                                 day=day, stop=stop, index=index, decision=key, ratio=product.ratio)
        order.addinfo(ref=ref, decision=key)
        self.actions.append(dict(action, ref=ref))
        self.risk.record_open(day)
        if not self.is_live:
            px = ask if ask is not None else 0.0
            n = int(size) if size else int(max(budget - self.p.commission_fixed, 0) // px) if px > 0 else 0
            if n <= 0:
                self.journal.update(ref, "rejected", error="size 0")
                raise OrderRejected(f"size 0 at price {px:.2f}")
            self.journal.update(ref, "dry_run", price=px, size=n)
            self._book_open(order, product, data, n, px, index, ref)
            return
        try:
            fill = self.store.call(self.store.venue.buy, product.direction, product.barrier,
                                   index_price=index, size=int(size) if size else None, stake=action["stake"],
                                   client_ref=ref, name="buy")
        except OrderRejected:
            raise
        except Exception as e:     # no confirmation, a crash mid-ticket: the venue decides (reconcile)
            if isinstance(e, UnreadableNumber):
                self._halt(e)
            timeout = isinstance(e, ConfirmationTimeout)
            self.journal.update(ref, "submitted", error=_first_line(e))
            self.unresolved.append(order)
            log.error("buy %s: %s; reconciling with the venue", ref, _first_line(e))
            self.notifier.notify("error", error="order sent but not confirmed; reconciling")
            self._reconcile_safe(keep_pending=(ref,) if timeout else ())
            return
        if fill.price <= 0:        # a knocked-out product "fills" at 0.00: no trade
            self.journal.update(ref, "knocked_out", price=fill.price, size=fill.size, deal_id=fill.deal_id,
                                product_id=fill.product_id)
            self.notifier.notify("knockout", barrier=fill.barrier, pnl=0.0)
            raise OrderRejected(f"knocked out before execution (fill at {fill.price:.2f}, level "
                                f"{fill.barrier:.2f})")
        try:
            if size and fill.size > int(size):
                raise ImplausibleNumber(f"fill size {fill.size} above the {int(size)} ordered", "size")
            if stake is not None and budget:
                check_plausible("fill cost", fill.size * fill.price, budget,
                                float(self.p.plausibility_factor))
        except ImplausibleNumber as e:   # filled, but its figures can't be trusted: the positions page says
            self._halt(UnreadableNumber(f"buy {ref}: confirmation: {e}"))
            self.journal.update(ref, "submitted", error=_first_line(e), deal_id=fill.deal_id)
            self.unresolved.append(order)
            self._reconcile_safe()
            return
        self.journal.update(ref, "filled", price=fill.price, size=fill.size, barrier=fill.barrier,
                            deal_id=fill.deal_id, product_id=fill.product_id)
        if abs(fill.barrier - product.barrier) > 1e-9:   # the venue's level (safe side) wins
            product = product.copy(strike=fill.barrier, barrier=fill.barrier, id=product.id, name="")
            order.info["product"] = product
        self.deals[product.id] = fill.deal_id
        self._book_open(order, product, data, fill.size, fill.price, index, ref)
        if stop:
            self._protect(product.id, stop)

    def _protect(self, pid: int, fraction: float) -> bool:
        """Place the stop of position ``pid`` at ``fraction`` × entry; retry, then close or flag it."""
        pos, ref, deal = self.positions[pid], self.refs[pid], self.deals[pid]
        stop_px = round(pos.price * fraction, 2)
        if stop_px <= 0:
            return False
        sref = self.journal.begin("stop", parent=ref, deal_id=deal, price=stop_px,
                                  day=self._day(pos.data), fraction=fraction)
        tries = 1 + max(0, int(self.p.stop_retries))
        last: Optional[BaseException] = None
        for attempt in range(1, tries + 1):
            try:
                got = self.store.call(self.store.venue.place_stop, deal, stop_px, name="stop")
            except Exception as e:
                last = e
                log.warning("stop for %s (deal %s), attempt %d/%d failed: %s", ref, deal, attempt, tries,
                            _first_line(e))
                continue
            self.journal.update(sref, "filled", price=got, attempts=attempt)
            self.journal.update(ref, "filled", stop_price=got, protected=True)
            pos.stop_price = got
            return True
        self.journal.update(sref, "failed", error=_first_line(last) if last else "", attempts=tries)
        self.journal.update(ref, "filled", protected=False)
        close = self.p.on_stop_failure == "close"
        text = (f"stop for position {deal} (ref {ref}) failed {tries} times ({_first_line(last)}); "
                + ("closing the position" if close else "position is UNPROTECTED (flagged)"))
        if close or ref not in self._flagged:
            self._alert(text)
            self._flagged.add(ref)
        else:                      # flagged and notified before: retried every bar, logged
            log.error("%s", text)
        if close:
            order = broker_close_order(self, pos, "unprotected")
            order.addinfo(ref=self.journal.begin("close", parent=ref, size=pos.size, deal_id=deal,
                                                 day=self._day(pos.data), reason="unprotected"), buy_ref=ref)
            try:
                self._close_live(order, pos, "unprotected")
            except Exception as e:
                self.journal.update(order.info["ref"], "failed", error=_first_line(e))
                self._reject(order, f"venue: {_first_line(e)}")
                self._alert(f"closing unprotected position {deal} failed too ({_first_line(e)}); "
                            "retrying on the next bar")
        return False

    def _book_open(self, order: bt.Order, product: KnockoutProduct, data: Any, n: float, px: float,
                   index: Optional[float], ref: str) -> None:
        comm = self.p.commission_fixed
        self.cash -= n * px + comm
        pos = CertPosition(product=product, data=data, size=n, price=px,
                           entry_dt=data.datetime[0] if data is not None and len(data) else 0.0,
                           entry_underlying=index or 0.0, entry_strike=product.strike,
                           entry_barrier=product.barrier,
                           entry_leverage=product.leverage(index) if index else 0.0,
                           entry_bar=len(data) if data is not None else 0, cost=n * px, fees=comm,
                           entry_fees=comm, owner=order.owner)
        if not self.is_live and order.info.get("stop"):
            pos.stop_price = order.info["stop"] * px
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
        if any(o.issell() and o.info.get("buy_ref") == buy_ref for o in self.unresolved):
            raise OrderRejected("a close of this position is still unconfirmed")
        day = self._day(data)
        ref = self.journal.begin("close", parent=buy_ref, size=pos.size, day=day,
                                 status="pending" if self.is_live else "dry_run",
                                 deal_id=self.deals.get(product.id), reason=reason)
        order.addinfo(ref=ref, buy_ref=buy_ref)
        self.actions.append({"action": "close", "ref": ref, "parent": buy_ref, "size": pos.size,
                             "reason": reason, "dry_run": not self.is_live})
        if self.is_live:
            self._close_live(order, pos, reason)
        else:
            self._book_close(pos, order, self._bid(pos), reason, ref)

    def _close_live(self, order: bt.Order, pos: CertPosition, reason: str, retry: bool = True) -> None:
        """Sell ``pos`` at the venue for ``order`` (its journal close row is ``order.info['ref']``).

        Without a confirmation the venue decides (reconcile); a close the venue did not execute is
        retried ``close_retries`` times at once, then on every bar until the position is gone or the
        run ends (:meth:`stop` then notifies; the venue stop stays in place).
        """
        ref = order.info["ref"]
        if order.info.get("buy_ref"):
            self._want_close[order.info["buy_ref"]] = reason
        self._venue_closed = True
        try:
            px = self.store.call(self.store.venue.close, self.deals[pos.product.id], name="close")
        except OrderRejected as e:
            self.journal.update(ref, "rejected", error=mask(e.reason))
            raise
        except Exception as e:     # no confirmation or a crash: the positions page decides
            self.journal.update(ref, "submitted", error=_first_line(e))
            self.unresolved.append(order)
            log.error("close %s: %s; reconciling with the venue", ref, _first_line(e))
            self._reconcile_safe()
            if retry and not self._reconciling:
                self._retry_closes()
            return
        self._book_close(pos, order, px, reason, ref)

    def _retry_closes(self) -> None:
        """Send again the closes the venue has not executed (``close_retries`` rounds)."""
        for _ in range(max(0, int(self.p.close_retries))):
            todo = [(pid, ref) for pid, ref in self.refs.items()
                    if ref in self._want_close and pid in self.positions
                    and not any(o.issell() and o.info.get("buy_ref") == ref for o in self.unresolved)]
            if not todo:
                return
            for pid, ref in todo:
                pos, reason = self.positions[pid], self._want_close[ref]
                order = broker_close_order(self, pos, reason)
                cref = self.journal.begin("close", parent=ref, size=pos.size, deal_id=self.deals.get(pid),
                                          day=self._day(pos.data), reason=reason, retry=True)
                order.addinfo(ref=cref, buy_ref=ref)
                log.warning("close of %s (deal %s) not executed by the venue; sending it again", ref,
                            self.deals.get(pid))
                try:
                    self._close_live(order, pos, reason, retry=False)
                except Exception as e:
                    self.journal.update(order.info["ref"], "failed", error=_first_line(e))
                    self._reject(order, f"venue: {_first_line(e)}")
                    log.error("retried close of %s failed: %s", ref, _first_line(e))

    def _book_close(self, pos: CertPosition, order: bt.Order, px: float, reason: str, ref: Optional[str],
                    journal_done: bool = False) -> None:
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
        buy_ref = self.refs.pop(pid, None)
        self._want_close.pop(buy_ref, None)
        rt = roundtrip_record(
            pos, size=n, exit_time=data.num2date().isoformat() if data is not None and len(data) else "",
            entry_time=data.num2date(pos.entry_dt).isoformat() if data is not None and pos.entry_dt else "",
            exit_price=px, exit_underlying=index, reason=reason,
            bars=(len(data) - pos.entry_bar) if data is not None else 0,
            venue_ref=buy_ref, close_ref=ref, dry_run=not self.is_live)
        pnl = rt["pnl"]
        self.roundtrips.append(rt)
        order.addinfo(roundtrip=rt)
        if not journal_done and buy_ref:
            if self.is_live:
                self.journal.close_position(buy_ref, close_ref=ref, price=px, pnl=pnl, reason=reason,
                                            day=self._day(data))
            else:
                if ref:
                    self.journal.update(ref, "dry_run", price=px, pnl=pnl, reason=reason)
                self.journal.update(buy_ref, "dry_run", exit=px, pnl=pnl, reason=reason)
        self.deals.pop(pid, None)
        self.risk.record_close(self._day(data), pnl)
        self.notify(order)
        self.notifier.notify(event_for_close(reason, pnl), price=px, pnl=pnl, barrier=pos.entry_barrier)

    def _synthetic_close(self, pos: CertPosition, px: float, reason: str, journal_done: bool = False) -> None:
        """A close the broker reports itself: stop or knock-out (dry run) or one found at the venue."""
        order = broker_close_order(self, pos, reason)
        ref = None
        if not journal_done:
            ref = self.journal.begin("close", parent=self.refs.get(pos.product.id), size=pos.size,
                                     day=self._day(pos.data), status="pending" if self.is_live else "dry_run",
                                     venue_reason=reason)
        if reason == "knockout":
            order.addinfo(knockout={"product": pos.product.name, "barrier": pos.product.barrier,
                                    "residual": px, "gapped": False,
                                    "time": pos.data.num2date().isoformat()
                                    if pos.data is not None and len(pos.data) else ""})
        self._book_close(pos, order, px, reason, ref, journal_done=journal_done)

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
