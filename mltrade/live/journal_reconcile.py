"""Reconciling the order journal with the venue, whose positions page is the truth.

:meth:`Reconciliation.reconcile` (a part of :class:`~mltrade.live.journal.OrderJournal`) runs at start,
after a confirmation time-out and once per bar:

* unresolved entries (``pending``: we may or may not have clicked; ``submitted``: clicked, no
  confirmation seen) are matched with the venue by the client reference typed into the ticket (buys)
  or by deal id (closes, stops): a crash between click and confirmation ends as ``filled`` or
  ``absent``, never as a second order; a buy whose confirmation just timed out (``keep_pending``)
  stays in flight until the next reconciliation;
* a *late fill* (a buy marked ``absent``/``failed``/``rejected`` that the venue shows after all)
  becomes ``filled`` again;
* an open journal position the venue no longer has is closed with a ``close`` row (the venue's exit
  price and reason: stop, knock-out, closed at the venue), so the daily loss limit counts it; one whose
  size, entry, direction or product differ is booked at the venue's figures;
* venue positions the journal doesn't know are reported (the broker adopts or closes them).

Rows of another live run holding the journal's lock are left alone.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set

log = logging.getLogger("mltrade.live")

#: buy statuses that say "no position", which a venue position with the same client ref overrides
NOT_EXECUTED = ("absent", "failed", "rejected", "knocked_out")


@dataclass
class ReconcileReport:
    """Outcome of :meth:`OrderJournal.reconcile`."""

    filled: List[str] = field(default_factory=list)     #: unresolved buys found on the venue
    absent: List[str] = field(default_factory=list)     #: unresolved buys the venue never executed
    pending: List[str] = field(default_factory=list)    #: unresolved buys kept in flight (just timed out)
    late: List[str] = field(default_factory=list)       #: buys given up on that the venue filled after all
    closed: List[str] = field(default_factory=list)     #: journal positions no longer open at the venue
    close_filled: List[str] = field(default_factory=list)   #: unconfirmed closes the venue executed
    close_absent: List[str] = field(default_factory=list)   #: unconfirmed closes the venue did not execute
    unknown_positions: List[str] = field(default_factory=list)  #: venue positions not in the journal (refs)
    unknown: List[Any] = field(default_factory=list)    #: ... the venue position objects themselves
    #: (ref, {field: [journal, venue]}) of open positions whose size, entry, direction or product differ
    #: at the venue; the journal row now holds the venue's figures (``venue_diff`` notes the difference)
    mismatched: List[Any] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.filled or self.absent or self.late or self.closed or self.close_filled
                    or self.close_absent or self.mismatched)


@dataclass
class VenueView:
    """One read of the venue's positions page, indexed for matching (and the run that owns foreign rows)."""

    positions: List[Any]
    history: List[Any]
    keep: Set[str] = field(default_factory=set)
    foreign: Optional[str] = None       #: the run id of another live process holding the journal

    def __post_init__(self) -> None:
        self.open_by_ref = {p.client_ref: p for p in self.positions if getattr(p, "client_ref", "")}
        self.open_by_deal = {p.deal_id: p for p in self.positions}
        self.closed_by_ref = {c.client_ref: c for c in self.history if getattr(c, "client_ref", "")}
        self.closed_by_deal = {c.deal_id: c for c in self.history}

    def theirs(self, e: Optional[Any]) -> bool:
        """True for a row another live process (alive, holding the lock) owns: not ours to judge."""
        return bool(self.foreign) and e is not None and e.info.get("run") == self.foreign


class Reconciliation:
    """The journal's reconciliation with the venue, in steps (see the module docstring)."""

    def reconcile(self, venue_positions: Iterable[Any], closed: Iterable[Any] = (), *,
                  day: Optional[date] = None, keep_pending: Iterable[str] = ()) -> ReconcileReport:
        """Bring the journal in line with the venue (the truth); see the module docstring.

        ``venue_positions``/``closed`` are objects with ``client_ref`` and ``deal_id`` (positions also
        ``size``/``entry``/``barrier``/``bid``; closed ones ``exit``/``pnl``/``reason``). ``day`` dates
        the close rows of positions closed at the venue (default: the buy's day). Unresolved buys in
        ``keep_pending`` stay in flight when the venue doesn't show them yet (a confirmation that just
        timed out); any other unresolved buy the venue doesn't show is ``absent``.
        """
        v = VenueView(list(venue_positions), list(closed), set(keep_pending), self._running_elsewhere())
        rep = ReconcileReport()
        self._resolve_unconfirmed(v, rep)
        self._late_fills(v, rep)
        self._check_open_positions(v, rep, day)
        known = {e.deal_id for e in self.open_positions()}
        rep.unknown = [p for p in v.positions if p.deal_id not in known
                       and not v.theirs(self.get(p.client_ref) if getattr(p, "client_ref", "") else None)]
        rep.unknown_positions = [getattr(p, "client_ref", "") or p.deal_id for p in rep.unknown]
        if rep.changed:
            log.warning("journal reconciled: %d in-flight buys found filled, %d absent, %d late fills, "
                        "%d closed at the venue, closes %d done / %d not done",
                        len(rep.filled), len(rep.absent), len(rep.late), len(rep.closed),
                        len(rep.close_filled), len(rep.close_absent))
        return rep

    def _fill_from(self, e: Any, p: Any, **extra: Any) -> None:
        """Mark the journal entry ``e`` filled with the venue's figures of position (or closed record) ``p``."""
        size = getattr(p, "size", e.size)
        entry = getattr(p, "entry", None)
        if entry is None and getattr(p, "exit", None) is not None and size:
            entry = p.exit - (p.pnl or 0.0) / size       # a closed record: entry from exit and P&L
        self.update(e.ref, "filled", deal_id=p.deal_id, size=size,
                    price=entry if entry is not None else e.price,
                    barrier=getattr(p, "barrier", None) or e.barrier,
                    product_id=getattr(p, "product_id", None) or e.info.get("product_id"),
                    reconciled=True, **extra)

    def _resolve_unconfirmed(self, v: VenueView, rep: ReconcileReport) -> None:
        """Every pending or submitted row of ours: filled, absent or kept in flight, by the venue."""
        for e in self.unresolved():
            if v.theirs(e):          # another process (alive, holding the lock) owns it: not ours to judge
                log.warning("journal: %s %s belongs to run %s, which is still running; left alone",
                            e.action, e.ref, v.foreign)
                continue
            if e.action == "buy":
                self._resolve_buy(e, v, rep)
            elif e.action == "close":
                self._resolve_close(e, v, rep)
            else:
                self._resolve_stop(e, v)

    def _resolve_buy(self, e: Any, v: VenueView, rep: ReconcileReport) -> None:
        p = v.open_by_ref.get(e.ref) or v.closed_by_ref.get(e.ref)
        if p is not None:
            self._fill_from(e, p)
            rep.filled.append(e.ref)
        elif e.ref in v.keep:
            rep.pending.append(e.ref)
        else:
            self.update(e.ref, "absent", reconciled=True)
            rep.absent.append(e.ref)

    def _resolve_close(self, e: Any, v: VenueView, rep: ReconcileReport) -> None:
        parent = self.get(e.parent) if e.parent else None
        deal = e.deal_id or (parent.deal_id if parent else None)
        if deal in v.open_by_deal or parent is None or parent.status != "filled":
            self.update(e.ref, "absent", reconciled=True)       # still open: the close never ran
            rep.close_absent.append(e.ref)
            return
        c = v.closed_by_deal.get(deal)
        exit_ = c.exit if c is not None else parent.info.get("last_bid", parent.price or 0.0)
        reason = e.info.get("reason", "signal")
        if c is not None and c.reason in ("stop", "knockout"):
            reason = c.reason           # the venue got there before our close
        self.close_position(parent.ref, close_ref=e.ref, price=exit_,
                            pnl=c.pnl if c is not None else None, reason=reason, reconciled=True)
        rep.close_filled.append(e.ref)

    def _resolve_stop(self, e: Any, v: VenueView) -> None:
        """A stop whose outcome is unknown: the venue's position row says."""
        parent = self.get(e.parent) if e.parent else None
        vp = v.open_by_deal.get(e.deal_id or (parent.deal_id if parent else None))
        if vp is not None and getattr(vp, "stop", None):
            self.update(e.ref, "filled", price=vp.stop, reconciled=True)
        else:
            self.update(e.ref, "absent", reconciled=True)

    def _late_fills(self, v: VenueView, rep: ReconcileReport) -> None:
        """Buys we had given up on that the venue executed after all: ``filled`` again (``late``).

        An open venue position overrides any "not executed"; a closed record only absent/failed ones
        (a product knocked out at 0.00 is settled at once and was no trade)."""
        candidates = [(p, NOT_EXECUTED) for p in v.positions] + [(c, ("absent", "failed")) for c in v.history]
        for p, late_ok in candidates:
            ref = getattr(p, "client_ref", "")
            e = self.get(ref) if ref else None
            if e is not None and e.action == "buy" and e.status in late_ok and not v.theirs(e):
                self._fill_from(e, p, late=True, status_before=e.status)
                rep.late.append(ref)
                log.error("late fill: order %s (%s) was executed by the venue after all (deal %s)",
                          ref, e.status, p.deal_id)

    def _check_open_positions(self, v: VenueView, rep: ReconcileReport, day: Optional[date]) -> None:
        """Open journal positions: at the venue's figures where they differ; closed where the venue no
        longer has them (stopped out, knocked out or closed there)."""
        for e in self.open_positions():
            if v.theirs(e):
                continue
            vp = v.open_by_deal.get(e.deal_id) if e.deal_id else v.open_by_ref.get(e.ref)
            if vp is not None:
                self._book_differences(e, vp, rep)
                continue
            c = v.closed_by_deal.get(e.deal_id) or v.closed_by_ref.get(e.ref)
            if c is not None:
                reason = c.reason if c.reason in ("stop", "knockout") else "venue_close"
                exit_, pnl = c.exit, c.pnl
            else:   # gone without a trace in the history: the last price we saw
                reason, exit_, pnl = "venue_gone", e.info.get("last_bid", e.price or 0.0), None
            self.close_position(e.ref, price=exit_, pnl=pnl, reason=reason,
                                day=day or date.fromisoformat(e.day), venue_close=True)
            rep.closed.append(e.ref)
            log.warning("position %s (deal %s) was closed at the venue (%s at %.2f)", e.ref, e.deal_id,
                        reason, exit_)

    def _book_differences(self, e: Any, vp: Any, rep: ReconcileReport) -> None:
        """The venue's size, entry, direction and product are the truth; its last bid is noted."""
        diff = self._differences(e, vp)
        if diff:
            fix = {"size": "size", "price": "price", "direction": "direction", "barrier": "barrier",
                   "product_id": "product_id"}
            self.update(e.ref, "filled", **{fix[k]: v[1] for k, v in diff.items()},
                        venue_diff=diff, corrections=e.info.get("corrections", 0) + 1)
            rep.mismatched.append((e.ref, diff))
            log.error("position %s (deal %s) differs at the venue: %s; booked at the venue's figures",
                      e.ref, e.deal_id, ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items()))
        bid = getattr(vp, "bid", None)
        if bid is not None and bid != e.info.get("last_bid"):
            self.update(e.ref, "filled", last_bid=bid)

    def _running_elsewhere(self) -> Optional[str]:
        """The run id of another live process holding this journal's lock (None: none, or it is ours)."""
        if self.lock is not None or self.path == ":memory:":
            return None
        import fcntl
        lock = Path(self.path + ".lock")
        if not lock.exists():
            return None
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            try:
                return json.loads(lock.read_text(encoding="utf-8") or "{}").get("run")
            except (OSError, ValueError):
                return None
        finally:
            os.close(fd)

    @staticmethod
    def _differences(e: Any, vp: Any) -> Dict[str, list]:
        """Fields of the open journal position ``e`` that differ from the venue position ``vp``."""
        out: Dict[str, list] = {}
        for name, mine, theirs in (("size", e.size, getattr(vp, "size", None)),
                                   ("price", e.price, getattr(vp, "entry", None)),
                                   ("direction", e.direction, getattr(vp, "direction", None)),
                                   ("barrier", e.barrier, getattr(vp, "barrier", None)),
                                   ("product_id", e.info.get("product_id"), getattr(vp, "product_id", None))):
            if mine is None or theirs is None or theirs == "":
                continue
            if isinstance(theirs, str) or isinstance(mine, str):
                if str(mine) != str(theirs):
                    out[name] = [mine, theirs]
            elif abs(float(mine) - float(theirs)) > 1e-6:
                out[name] = [mine, theirs]
        return out
