"""Trade Republic driver: knock-out list searched by the finder, buy ticket, positions.

The certificate list is sorted by knock-out level (long: descending, short:
ascending) and loads lazily while scrolling in 800 px steps. :class:`PageRowSource`
exposes it to :class:`~mltrade.live.finder.KnockoutFinder`, which bisects the
scroll positions. Numbers are printed in German format. URLs, selectors and the number format
come from the venue profile ``mltrade/live/profiles/traderepublic.toml`` (:mod:`mltrade.live.profiles`).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

from mltrade.live.finder import Certificate, FinderRules, KnockoutFinder
from mltrade.live.formats import format_number
from mltrade.live.venues.base import (OrderRejected, Venue, VenueError, VenueFill,
                                      check_side, size_for)
from mltrade.live.venues.positions import PositionsPageMixin

log = logging.getLogger("mltrade.live")

_READ_VIEW = """
const rows = document.querySelectorAll(arguments[0]); const s = arguments[1]; const out = [];
for (const r of rows) {
  const b = r.getBoundingClientRect();
  if (b.top >= -1 && b.bottom <= window.innerHeight + 1)
    out.push([parseInt(r.dataset.index), r.dataset.isin, r.querySelector(s[0]).textContent,
              r.querySelector(s[1]).textContent, r.querySelector(s[2]).textContent]);
}
out.sort((a, b) => a[0] - b[0]); return out;
"""


class PageRowSource:
    """The venue's lazily loaded list as a :class:`~mltrade.live.finder.RowSource`.

    One probe = one scroll step (``step_px``) plus the lazy load it triggers.
    """

    def __init__(self, venue: "TradeRepublicVenue", step_px: int = 800):
        self.venue = venue
        self.step_px = int(step_px)
        d = venue.driver
        venue.wait_js(f"return document.querySelector('{venue.sel('list')}').offsetHeight > 0 && "
                      "!document.body.dataset.loading", "the certificate list")
        self.row_height = float(d.execute_script(
            f"return document.querySelector('{venue.sel('cert_row')}').offsetHeight"))
        box = d.execute_script("const e = document.querySelector(arguments[0]);"
                               "return [e.offsetTop, e.offsetHeight];", venue.sel("list"))
        self.list_top, self.height = float(box[0]), float(box[1])
        self.rows_per_position = max(1, int(round(self.step_px / self.row_height)))
        self.steps = 0

    def n_positions(self) -> int:
        return max(1, -(-int(round(self.height / self.row_height)) // self.rows_per_position))

    def rows_at(self, position: int) -> List[Certificate]:
        v = self.venue
        self.steps += 1
        y = int(self.list_top + position * self.step_px)
        v.driver.execute_script("window.scrollTo(0, arguments[0]);", y)
        v.wait_js("return document.body.dataset.view === String(window.scrollY) && "
                  "!document.body.dataset.loading",
                  f"rows at scroll position {position}")
        raw = v.driver.execute_script(_READ_VIEW, v.sel("cert_row"),
                                      [v.sel("ko_cell"), v.sel("price_cell"), v.sel("lev_cell")])
        row = v.sel("cert_row")
        return [Certificate(index=int(i), isin=isin,
                            barrier=v.read_number(ko, "ko", f"{row} {v.sel('ko_cell')}"),
                            price=v.read_number(pr, "price", f"{row} {v.sel('price_cell')}"),
                            leverage=v.read_number(lv, "leverage", f"{row} {v.sel('lev_cell')}"))
                for i, isin, ko, pr, lv in raw]


class TradeRepublicVenue(PositionsPageMixin, Venue):
    """Drives Trade Republic's web app (here: the local fake venue pages)."""

    name = "traderepublic"

    def __init__(self, store: Any, rules: Optional[FinderRules] = None, linear: bool = False,
                 profile: Optional[Any] = None):
        super().__init__(store, profile)
        self.rules = rules or FinderRules()
        self.linear = linear
        self.last_search: Optional[Any] = None

    def login(self, username: str, password: str, code: Callable[[], str]) -> None:
        self.submit_credentials(username, password)
        self.submit_code(code)

    def find(self, direction: int, barrier: float, index_price: Optional[float] = None) -> Any:
        """Run the knock-out finder on the list page; returns its :class:`FinderResult`."""
        self.open(self.sel("list_page").format(side="long" if direction > 0 else "short"))
        source = PageRowSource(self)
        finder = KnockoutFinder(source, direction, self.rules)
        res = finder.find(barrier, index_price, linear=self.linear)
        self.last_search = res
        log.info("traderepublic: finder took %d scroll steps (%d target moves) for barrier %.2f -> %s",
                 res.steps, res.moves, barrier, res.certificate.isin if res.certificate else None)
        return res

    def buy(self, direction: int, barrier: float, *, index_price: Optional[float] = None,
            size: Optional[int] = None, stake: Optional[float] = None, client_ref: str = "") -> VenueFill:
        check_side(direction, barrier, index_price)
        cash = self.cash() if (size is None and stake is None) else None
        res = self.find(direction, barrier, index_price)
        cert = res.certificate
        if cert is None:
            raise VenueError(f"traderepublic: no acceptable certificate near {barrier:.2f} "
                             f"(skipped {res.skipped}, moved target {res.moves} times)")
        self.open(self.sel("buy_page").format(isin=cert.isin), ready="loaded")
        ask = self.number("ask")
        if size is None:
            size = size_for(ask, stake=stake, cash=cash)
        if size <= 0:
            raise OrderRejected(f"size 0 at price {ask:.2f} (stake {stake})")
        self.type_into("size", str(int(size)))
        self.type_into("limit_price", format_number(ask, 2, self.number_locale))
        self.type_into("client_ref", client_ref)
        self.click("buy_button")
        self.wait("review")
        log.info("traderepublic: confirming %s KO %.2f size %d limit %.2f ref %s",
                 cert.isin, cert.barrier, size, ask, client_ref)
        self.click("confirm_button")
        got = self.first_of(["buy_done", "rejection"], self.store.confirm_timeout)
        if got == "rejection":
            raise OrderRejected(self.text("reject_reason"))
        fill = VenueFill(deal_id=self.text("deal_id"), product_id=cert.isin, direction=direction,
                         barrier=cert.barrier, size=int(size), price=self.number("fill_price"),
                         client_ref=client_ref)
        return fill      # the stop is a separate action (place_stop): a failed stop never hides the fill
