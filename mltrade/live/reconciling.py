"""Reconciliation: the venue's positions page is the truth for :class:`~mltrade.live.broker.SeleniumBroker`.

:meth:`Reconciling.reconcile` reads the page (at start, after every confirmation time-out and once per
bar), has the journal resolve unconfirmed orders, adopt late fills and close positions gone at the
venue (:meth:`~mltrade.live.journal.OrderJournal.reconcile`), then brings the broker in line: unknown
venue positions adopted or closed, positions booked at the venue's figures, missing stops placed, cash
from the venue. Afterwards venue positions = journal open positions = broker positions.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterable, List, Optional, Set

from mltrade.brokers.knockout import CertPosition, broker_close_order
from mltrade.live.credentials import first_line as _first_line
from mltrade.live.formats import ImplausibleNumber, check_plausible
from mltrade.live.journal import UNRESOLVED, JournalEntry
from mltrade.live.journal_reconcile import ReconcileReport
from mltrade.live.venues.base import UnreadableNumber
from mltrade.products import KnockoutProduct

log = logging.getLogger("mltrade.live")


class Reconciling:
    """SeleniumBroker's reconciliation with the venue and the invariant it keeps."""

    def reconcile(self, keep_pending: Iterable[str] = ()) -> ReconcileReport:
        """Make journal and broker match the venue's positions page (the truth); returns the journal report.

        ``keep_pending``: refs of buys that just timed out and may still be filled (kept in flight).
        """
        self._last_reconcile = time.monotonic()
        self._venue_closed = False
        self._reconciling = True
        try:
            return self._reconcile(keep_pending)
        finally:
            self._reconciling = False

    def _reconcile(self, keep_pending: Iterable[str]) -> ReconcileReport:
        cash, open_, history = self.store.snapshot()
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
        self.cash = self.store.cash() if self._venue_closed else cash
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
        open_ = self.store.positions(name="invariant")
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
