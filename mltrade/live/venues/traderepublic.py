"""Trade Republic driver: knock-out list searched by the finder, buy ticket, positions.

The certificate list is sorted by knock-out level (long: descending, short:
ascending) and loads lazily while scrolling in 800 px steps. :class:`PageRowSource`
exposes it to :class:`~mltrade.live.finder.KnockoutFinder`, which bisects the
scroll positions. Numbers are printed in German format. Selectors: :data:`SELECTORS`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

from mltrade.live.finder import Certificate, FinderRules, KnockoutFinder
from mltrade.live.formats import format_number, parse_number
from mltrade.live.venues.base import (OrderRejected, PositionsPageMixin, Venue, VenueError, VenueFill,
                                      size_for)

log = logging.getLogger("mltrade.live")

SELECTORS = {
    "login_page": "/tr/login",
    "username": "#phone", "password": "#pin", "login_button": "#login-btn", "login_error": "#login-error",
    "code": "#code", "verify_button": "#verify-btn",
    "list_page": "/tr/list?side={side}",
    "list": "#list", "cert_row": ".cert-row", "ko_cell": ".ko", "price_cell": ".price", "lev_cell": ".lev",
    "buy_page": "/tr/buy?isin={isin}",
    "ask": "#ask", "ko": "#ko", "size": "#size", "limit_price": "#limit-price", "client_ref": "#client-ref",
    "buy_button": "#buy-btn", "review": "#review", "confirm_button": "#confirm-btn",
    "buy_done": "#buy-done", "deal_id": "#deal-id", "fill_price": "#fill-price",
    "rejection": "#rejection", "reject_reason": "#reject-reason",
    "positions_page": "/tr/positions",
    "cash": "#cash",
    "position_row": "#positions tr.position-row",
    "pos_ref": ".pos-ref", "pos_product": ".pos-product", "pos_dir": ".pos-dir", "pos_level": ".pos-level",
    "pos_size": ".pos-size", "pos_entry": ".pos-entry", "pos_bid": ".pos-bid", "pos_pnl": ".pos-pnl",
    "pos_stop": ".pos-stop",
    "stop_input": ".stop-input", "stop_button": ".stop-btn", "stop_done": "#stop-done",
    "stop_value": "#stop-value",
    "close_button": ".close-btn", "close_done": "#sell-done", "close_price": "#sell-price",
    "history_row": "#history tr.history-row",
    "h_ref": ".h-ref", "h_size": ".h-size", "h_exit": ".h-exit", "h_pnl": ".h-pnl", "h_reason": ".h-reason",
}

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
        return [Certificate(index=int(i), isin=isin, barrier=parse_number(ko, "de", "tr.ko"),
                            price=parse_number(pr, "de", "tr.price"), leverage=parse_number(lv, "de",
                                                                                            "tr.leverage"))
                for i, isin, ko, pr, lv in raw]


class TradeRepublicVenue(PositionsPageMixin, Venue):
    """Drives Trade Republic's web app (here: the local fake venue pages)."""

    name = "traderepublic"
    SELECTORS = SELECTORS
    number_locale = "de"

    def __init__(self, store: Any, rules: Optional[FinderRules] = None, linear: bool = False):
        super().__init__(store)
        self.rules = rules or FinderRules()
        self.linear = linear
        self.last_search: Optional[Any] = None

    def login(self, username: str, password: str, code: Callable[[], str]) -> None:
        self.submit_credentials(username, password)
        self.type_into("code", code())
        self.click("verify_button")
        self.wait_js("return location.pathname.startsWith('/tr/positions') && "
                     "document.body.dataset.loaded === '1'",
                     "the portfolio after 2FA")

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
            size: Optional[int] = None, stake: Optional[float] = None, client_ref: str = "",
            stop_fraction: Optional[float] = None) -> VenueFill:
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
        self.type_into("limit_price", format_number(ask, 2, "de"))
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
        if stop_fraction:
            self.place_stop(fill.deal_id, fill.price * stop_fraction)
        return fill
