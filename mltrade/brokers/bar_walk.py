"""Per bar of :class:`~mltrade.brokers.knockout.KnockoutBroker`: mini futures' financing, expiry of orders,
the walk along the bar's path (:mod:`mltrade.brokers.intrabar`) with its triggers in order (knock-out,
stop, limit, market), and the stop-outs and knock-outs it fires (a mixin of the broker)."""
from __future__ import annotations

import math
from typing import List

import backtrader as bt

from mltrade.brokers.intrabar import (PRIORITY_KNOCKOUT, PRIORITY_LIMIT, PRIORITY_MARKET,
                                      PRIORITY_STOP, Trigger, bar_path, walk_bar)
from mltrade.products import KnockoutProduct, underlying_for_ask, underlying_for_bid, unwind_price


class BarWalk:
    """What happens to the broker's certificates and orders on each bar (mixin of ``KnockoutBroker``)."""

    def next(self) -> None:
        if self._book is not None and self._book.used:
            self._book.next()
        if not self.pending and not self.positions:
            return
        datas = {id(o.data): o.data for o in self.pending}
        datas.update({id(p.data): p.data for p in self.positions.values()})
        for data in datas.values():
            n = len(data)
            if self._seen_len.get(id(data)) == n:
                continue
            self._seen_len[id(data)] = n
            live = sorted({o.info["product"].id for o in self.pending if o.data is data}
                          | {p.product.id for p in self.positions.values() if p.data is data})
            self._finance(data, live)
            if self.pending:
                self._expire(data)
            for pid in live:
                if not self._quiet(pid, data):
                    self._walk(self.products[pid], data)

    def _quiet(self, pid: int, data) -> bool:
        """Fast path: a held certificate with no orders whose barrier and stop the bar did not reach."""
        pos = self.positions.get(pid)
        if pos is None or any(o.info["product"].id == pid for o in self.pending):
            return False
        p = pos.product
        if p.direction > 0:
            worst, level = data.low[0], p.barrier
            if pos.stop_price:
                level = max(level, p.underlying_for_bid_scalar(pos.stop_price, self._fx(p)))
            return worst > level and data.open[0] > level
        worst, level = data.high[0], p.barrier
        if pos.stop_price:
            level = min(level, p.underlying_for_bid_scalar(pos.stop_price, self._fx(p)))
        return worst < level and data.open[0] < level

    @staticmethod
    def _day(data) -> int:
        return int(math.floor(data.datetime[0] + 1e-9))  # UTC calendar day number

    def _finance(self, data, live) -> None:
        """Move each live mini future's financing level by the calendar days since it was last financed."""
        day = self._day(data)
        for pid in live:
            product = self.products[pid]
            if pid in self.dead or product.kind != "minifuture":
                continue
            last = self._financed.setdefault(pid, day)
            if day <= last:
                continue
            self._financed[pid] = day
            dk = product.apply_financing(day - last)
            pos = self.positions.get(pid)
            if pos is not None:
                pos.financing += product.direction * dk * product.ratio * self._fx(product) * pos.size

    def _expire(self, data) -> None:
        now = data.datetime[0]
        for order in [o for o in self.pending if o.data is data and o.valid and now > o.valid]:
            self.pending.remove(order)
            order.expire()
            self.notify(order)

    def _triggers(self, product: KnockoutProduct, data) -> List[Trigger]:
        if product.id in self.dead:
            return []
        fx = self._fx(product)
        d = product.direction
        out = []
        pos = self.positions.get(product.id)
        # orders act from the bar after the one they were decided on (live cerebros re-call next())
        n, coo = len(data), self.p.coo   # cheat-on-open: market orders from next_open act on their bar
        orders = [o for o in self.pending if o.info["product"] is product and o.data is data
                  and (n > o.info["created_len"] or coo and n == o.info["created_len"]
                       and o.exectype in (None, bt.Order.Market))]
        if pos is None and not orders:
            return out  # nothing of ours depends on this certificate on this bar
        out.append(Trigger("knockout", product.barrier, -d, PRIORITY_KNOCKOUT))
        if pos is not None and pos.stop_price is not None and pos.stop_price > 0:
            lvl = float(underlying_for_bid(d, pos.stop_price, product.strike, product.ratio, fx, product.spread))
            out.append(Trigger(("stop", product.id), lvl, -d, PRIORITY_STOP))
        if not product.in_trading_hours(data.datetime.time(0)):
            return out
        for o in orders:
            et, buy = o.exectype, o.isbuy()
            if et in (None, bt.Order.Market):
                out.append(Trigger(o, None, 0, PRIORITY_MARKET))
            elif et == bt.Order.Limit:
                if buy:   # ask <= limit: the certificate cheapens, i.e. the index moves against it
                    lvl = underlying_for_ask(d, o.price, product.strike, product.ratio, fx, product.spread)
                    out.append(Trigger(o, float(lvl), -d, PRIORITY_LIMIT))
                else:     # bid >= limit
                    lvl = underlying_for_bid(d, o.price, product.strike, product.ratio, fx, product.spread)
                    out.append(Trigger(o, float(lvl), d, PRIORITY_LIMIT))
            elif et == bt.Order.Stop:
                if buy:   # ask >= stop
                    lvl = underlying_for_ask(d, o.price, product.strike, product.ratio, fx, product.spread)
                    out.append(Trigger(o, float(lvl), d, PRIORITY_STOP))
                else:     # bid <= stop
                    lvl = underlying_for_bid(d, o.price, product.strike, product.ratio, fx, product.spread)
                    out.append(Trigger(o, float(lvl), -d, PRIORITY_STOP))
        return out

    def _walk(self, product: KnockoutProduct, data) -> None:
        o, h, lo, c = (float(data.open[0]), float(data.high[0]), float(data.low[0]), float(data.close[0]))
        points = bar_path(product.direction, o, h, lo, c)

        def fire(trig: Trigger, level: float, at_open: bool) -> None:
            if isinstance(trig.key, str):  # "knockout"
                self._knockout(product, data, gapped=at_open)
            elif isinstance(trig.key, tuple):  # attached stop
                self._stop_out(product, data, level, at_open)
            else:
                self._fill_at(trig.key, level, at_open)

        walk_bar(points, lambda: self._triggers(product, data), fire)

    def _stop_out(self, product: KnockoutProduct, data, level: float, at_open: bool) -> None:
        pos = self.positions[product.id]
        order = self._synthetic(pos, "stop")
        price = float(product.bid(level, self._fx(product))) if at_open else pos.stop_price
        self._close(pos, order, pos.size, price, level, "stop")

    def _knockout(self, product: KnockoutProduct, data, gapped: bool) -> None:
        self.dead.add(product.id)
        o, h, lo, c = (float(data.open[0]), float(data.high[0]), float(data.low[0]), float(data.close[0]))
        unwind = float(unwind_price(product.direction, product.barrier, o, lo, h, c, product.unwind, gapped))
        residual = float(product.residual(unwind, self._fx(product)))
        event = {"product": product.name, "time": data.num2date().isoformat(),
                 "barrier": product.barrier, "gapped": gapped, "unwind": unwind, "residual": residual}
        self.knockouts.append(event)
        for order in [x for x in self.pending if x.info["product"] is product]:
            self._reject(order, "knocked_out")
        pos = self.positions.get(product.id)
        if pos is None:
            return
        order = self._synthetic(pos, "knockout")
        order.addinfo(knockout=event)
        self._close(pos, order, pos.size, residual, unwind, "knockout", fee=0.0)
