"""IG driver: account selection, CALL/PUT knock-out levels, limit order, stop, market close.

Page URLs, selectors, the account type and the number format (English) come from the venue
profile ``mltrade/live/profiles/ig.toml`` (user overrides: :mod:`mltrade.live.profiles`).
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional

from mltrade.live.venues.base import (OrderRejected, Venue, VenueError, VenueFill,
                                      pick_level, size_for)
from mltrade.live.venues.positions import PositionsPageMixin

log = logging.getLogger("mltrade.live")

class IGVenue(PositionsPageMixin, Venue):
    """Drives IG's web platform (here: the local fake venue pages)."""

    name = "ig"

    @property
    def account_type(self) -> str:
        """data-type of the account row to select (profile label ``account_type``)."""
        return str(self.profile.label("account_type"))

    def login(self, username: str, password: str, code: Callable[[], str]) -> None:
        self.submit_credentials(username, password)
        self.submit_code(code)
        self.select_account()

    def select_account(self) -> None:
        """Pick the knock-out account in the account list."""
        from urllib.parse import urlparse

        from selenium.webdriver.common.by import By
        rows = self.driver.find_elements(By.CSS_SELECTOR, self.sel("account_row"))
        for r in rows:
            if r.get_attribute("data-type") == self.account_type:
                acc = r.get_attribute("data-account-id")
                r.find_element(By.CSS_SELECTOR, self.sel("account_select")).click()
                self.wait_js("return location.pathname.startsWith(arguments[0])", "the markets page",
                             args=(urlparse(self.sel("markets_page")).path,))
                log.info("ig: account %s selected", acc)
                return
        raise VenueError(f"ig: no account of type {self.account_type!r} in the account list "
                         f"({len(rows)} rows)")

    def levels(self, direction: int) -> List[dict]:
        """Offered knock-out levels on the CALL (long) or PUT (short) tab."""
        self.open(self.sel("markets_page"))
        self.click("tab_call" if direction > 0 else "tab_put")
        side = "CALL" if direction > 0 else "PUT"
        self.wait_js(f"return document.body.dataset.tab === '{side}'", f"the {side} tab")
        rows = self.table("level_row", {"level": self.sel("level_cell"), "bid": self.sel("bid_cell"),
                                        "offer": self.sel("offer_cell")})
        row = self.sel("level_row")
        return [{"id": r["productId"], "level": self.read_number(r["level"], "level",
                                                                f"{row} {self.sel('level_cell')}"),
                 "bid": self.read_number(r["bid"], "bid", f"{row} {self.sel('bid_cell')}"),
                 "offer": self.read_number(r["offer"], "offer", f"{row} {self.sel('offer_cell')}")}
                for r in rows]

    def buy(self, direction: int, barrier: float, *, index_price: Optional[float] = None,
            size: Optional[int] = None, stake: Optional[float] = None, client_ref: str = "") -> VenueFill:
        from selenium.webdriver.common.by import By
        rows = self.levels(direction)
        level = pick_level([r["level"] for r in rows], direction, barrier, index_price)
        row = next(r for r in rows if r["level"] == level)
        if size is None:
            size = size_for(row["offer"], stake=stake,
                            cash=None if stake is not None else self._cash_cached())
            if stake is None:
                self.levels(direction)      # back on the markets page after reading the cash
        if size <= 0:
            raise OrderRejected(f"size 0 at offer {row['offer']:.2f} (stake {stake})")
        css = f"{self.sel('level_row')}[data-product-id='{row['id']}'] {self.sel('deal_button')}"
        self.driver.find_element(By.CSS_SELECTOR, css).click()
        self.wait("ticket")
        self.type_into("limit_price", f"{row['offer']:.2f}")
        self.type_into("size", str(int(size)))
        self.type_into("client_ref", client_ref)
        log.info("ig: submitting %s level %.2f size %d limit %.2f ref %s",
                 "CALL" if direction > 0 else "PUT", level, size, row["offer"], client_ref)
        self.click("submit_order")
        got = self.first_of(["confirmation", "rejection"], self.store.confirm_timeout)
        if got == "rejection":
            raise OrderRejected(self.text("reject_reason"))
        fill = VenueFill(deal_id=self.text("deal_id"), product_id=row["id"], direction=direction,
                         barrier=self.number("fill_level"), size=int(self.number("fill_size", integer=True)),
                         price=self.number("fill_price"), client_ref=client_ref)
        return fill      # the stop is a separate action (place_stop): a failed stop never hides the fill

    def _cash_cached(self) -> float:
        return self.cash()
