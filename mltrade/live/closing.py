"""Closing positions: the sell side of :class:`~mltrade.live.broker.SeleniumBroker`.

A close is journaled, sent, and booked at the venue's exit price; without a confirmation the venue
decides (reconciliation), and a close the venue did not execute is retried until the position is gone
or the run ends. Stops and knock-outs found at the venue (or simulated in a dry run) are booked as
closes the broker reports itself.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import backtrader as bt

from mltrade.brokers.knockout import CertPosition, broker_close_order
from mltrade.brokers.roundtrip import roundtrip_record
from mltrade.live.credentials import first_line as _first_line, mask
from mltrade.live.notify import event_for_close
from mltrade.live.venues.base import OrderRejected
from mltrade.products import KnockoutProduct

log = logging.getLogger("mltrade.live")


class Closing:
    """SeleniumBroker's closes: by the strategy, retried, found at the venue, simulated (dry run)."""

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
            px = self.store.close_position(self.deals[pos.product.id])
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
