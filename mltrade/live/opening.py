"""Opening a position at the venue: the buy side of :class:`~mltrade.live.broker.SeleniumBroker`.

A buy goes sized -> checked (decision key, halt, unconfirmed orders, risk limits) -> journaled ->
sent -> filled -> protected (its stop, a separate venue action). Without a confirmation the venue
decides (reconciliation); a fill whose figures can't be trusted is left to the positions page too.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import backtrader as bt

from mltrade.brokers.knockout import CertPosition, broker_close_order
from mltrade.live.credentials import first_line as _first_line
from mltrade.live.formats import ImplausibleNumber, check_plausible
from mltrade.live.journal import DuplicateDecision
from mltrade.live.risk import RiskViolation
from mltrade.live.venues.base import ConfirmationTimeout, OrderRejected, UnreadableNumber, VenueFill
from mltrade.products import KnockoutProduct

log = logging.getLogger("mltrade.live")


class Opening:
    """SeleniumBroker's buys: :meth:`_open` and its steps, the stop (:meth:`_protect`), the booking."""

    def _open(self, order: bt.Order, product: KnockoutProduct, data: Any, size: Optional[float],
              stake: Optional[float], stop: Optional[float], key: Optional[str]) -> None:
        """Buy ``product`` for ``order``: size, check, journal, then fill (dry run) or send it."""
        day = self._day(data)
        if stake is not None:
            size = None      # a stake wins over backtrader's default sizer (as in KnockoutBroker)
        index = float(data.close[0]) if data is not None and len(data) else None
        ask = float(product.ask(index)) if index is not None else None
        budget = min(stake, self.cash) if stake is not None else (size or 0) * (ask or 0)
        self._check_open(key, budget, product.leverage(index) if index is not None else None, day)
        ref = self._journal_buy(order, product, day, size, budget if size is None else None, stop, index, key)
        if not self.is_live:
            self._fill_dry_run(order, product, data, size, budget, ask, index, ref)
            return
        fill = self._send_buy(order, product, index, size, budget if size is None else None, ref)
        if fill is None or not self._fill_trusted(order, ref, fill, size, stake, budget):
            return                 # the venue decides (the next reconciliation)
        self._book_fill(order, product, data, fill, index, ref, stop)

    def _check_open(self, key: Optional[str], budget: float, leverage: Optional[float], day: Any) -> None:
        """Refuse a second order for a decision key, new orders after a halt or while one is unconfirmed,
        and anything beyond the risk limits."""
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

    def _journal_buy(self, order: bt.Order, product: KnockoutProduct, day: Any, size: Optional[float],
                     stake: Optional[float], stop: Optional[float], index: Optional[float],
                     key: Optional[str]) -> str:
        """Write the buy to the journal before it touches the venue (and to ``actions``); its ref."""
        action = {"action": "buy", "direction": product.direction, "barrier": product.barrier,
                  "size": size, "stake": stake, "stop": stop, "index": index,
                  "day": day.isoformat(), "decision": key, "dry_run": not self.is_live}
        ref = self.journal.begin("buy", direction=product.direction, barrier=product.barrier, size=size,
                                 stake=stake, status="pending" if self.is_live else "dry_run",
                                 day=day, stop=stop, index=index, decision=key, ratio=product.ratio)
        order.addinfo(ref=ref, decision=key)
        self.actions.append(dict(action, ref=ref))
        self.risk.record_open(day)
        return ref

    def _fill_dry_run(self, order: bt.Order, product: KnockoutProduct, data: Any, size: Optional[float],
                      budget: float, ask: Optional[float], index: Optional[float], ref: str) -> None:
        """Dry run: fill at the model's ask from the feed."""
        px = ask if ask is not None else 0.0
        n = int(size) if size else int(max(budget - self.p.commission_fixed, 0) // px) if px > 0 else 0
        if n <= 0:
            self.journal.update(ref, "rejected", error="size 0")
            raise OrderRejected(f"size 0 at price {px:.2f}")
        self.journal.update(ref, "dry_run", price=px, size=n)
        self._book_open(order, product, data, n, px, index, ref)

    def _send_buy(self, order: bt.Order, product: KnockoutProduct, index: Optional[float],
                  size: Optional[float], stake: Optional[float], ref: str) -> Optional[VenueFill]:
        """Send the buy; its fill, or None without a confirmation (then in flight, reconciled). A fill at
        a price <= 0 is a knock-out before execution: no trade."""
        try:
            fill = self.store.buy(product.direction, product.barrier, index_price=index,
                                  size=int(size) if size else None, stake=stake, client_ref=ref)
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
            return None
        if fill.price <= 0:        # a knocked-out product "fills" at 0.00: no trade
            self.journal.update(ref, "knocked_out", price=fill.price, size=fill.size, deal_id=fill.deal_id,
                                product_id=fill.product_id)
            self.notifier.notify("knockout", barrier=fill.barrier, pnl=0.0)
            raise OrderRejected(f"knocked out before execution (fill at {fill.price:.2f}, level "
                                f"{fill.barrier:.2f})")
        return fill

    def _fill_trusted(self, order: bt.Order, ref: str, fill: VenueFill, size: Optional[float],
                      stake: Optional[float], budget: float) -> bool:
        """False (new orders halted, the buy left to the positions page) for a confirmation whose size
        exceeds the order or whose cost jumps beyond ``plausibility_factor`` of the stake."""
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
            return False
        return True

    def _book_fill(self, order: bt.Order, product: KnockoutProduct, data: Any, fill: VenueFill,
                   index: Optional[float], ref: str, stop: Optional[float]) -> None:
        """Journal and book a confirmed fill (the venue's level wins), then place its stop."""
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
                got = self.store.place_stop(deal, stop_px)
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
        self._stop_failed(pos, ref, deal, tries, last)
        return False

    def _stop_failed(self, pos: CertPosition, ref: str, deal: str, tries: int,
                     last: Optional[BaseException]) -> None:
        """The stop still failed after the retries: notify, then close the position or flag it."""
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
