"""Reading and acting on a venue's positions page: cash, open positions, history, stops and closes.

:class:`PositionsPageMixin` serves every driver whose positions page is laid out as rows with per-cell
selectors from its profile (IG and Trade Republic).
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from mltrade.live.venues.base import ClosedPosition, ElementMissing, OrderRejected, VenuePosition


class PositionsPageMixin:
    """Reads and acts on a positions page laid out as rows with per-cell selectors.

    Needs SELECTORS keys: ``positions_page``, ``position_row``, ``pos_*`` cells,
    ``history_row``, ``h_*`` cells, ``cash``, ``stop_input``, ``stop_button``,
    ``stop_done``, ``close_button``, ``close_done``, ``close_price``.
    """

    def _positions_page(self: Any) -> None:
        self.open(self.sel("positions_page"), ready="loaded")

    def _num(self: Any, text: Optional[str], field: str, row: str = "position_row",
             integer: bool = False) -> float:
        cell = ("pos_" if row == "position_row" else "h_") + field
        css = f"{self.sel(row)} {self.sel(cell)}" if cell in self.SELECTORS else self.sel(row)
        return self.read_number(text, field, css, integer=integer)

    def cash(self: Any) -> float:
        self._positions_page()
        return self.number("cash")

    def snapshot(self: Any) -> Tuple[float, List[VenuePosition], List[ClosedPosition]]:
        """Cash, open positions and closed positions from one load of the positions page."""
        self._positions_page()
        return self.number("cash"), self._read_positions(), self._read_history()

    def positions(self: Any) -> List[VenuePosition]:
        self._positions_page()
        return self._read_positions()

    def history(self: Any) -> List[ClosedPosition]:
        self._positions_page()
        return self._read_history()

    def _read_positions(self: Any) -> List[VenuePosition]:
        cells = {k[4:]: self.sel(k) for k in self.SELECTORS if k.startswith("pos_")}
        out = []
        for r in self.table("position_row", cells):
            out.append(VenuePosition(
                deal_id=r["dealId"], product_id=r["product"],
                direction=1 if (r["dir"] or "").strip() in self.profile.label("long") else -1,
                barrier=self._num(r["level"], "level"), size=int(self._num(r["size"], "size", integer=True)),
                entry=self._num(r["entry"], "entry"), bid=self._num(r["bid"], "bid"),
                pnl=self._num(r["pnl"], "pnl"), client_ref=r["ref"] or "",
                stop=self._num(r["stop"], "stop") if r["stop"] else None))
        return out

    def _read_history(self: Any) -> List[ClosedPosition]:
        cells = {k[2:]: self.sel(k) for k in self.SELECTORS if k.startswith("h_")}
        h = "history_row"
        return [ClosedPosition(deal_id=r["dealId"], client_ref=r["ref"] or "",
                               size=int(self._num(r["size"], "size", h, integer=True)),
                               exit=self._num(r["exit"], "exit", h), pnl=self._num(r["pnl"], "pnl", h),
                               reason=r["reason"]) for r in self.table("history_row", cells)]

    def _row_button(self: Any, deal_id: str, key: str) -> Any:
        from selenium.webdriver.common.by import By
        css = f"{self.sel('position_row')}[data-deal-id='{deal_id}'] {self.sel(key)}"
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        if not found:
            raise ElementMissing(f"{self.name}: no {key} for position {deal_id} ({css})")
        return found[0]

    def place_stop(self: Any, deal_id: str, stop_price: float) -> float:
        from mltrade.live.formats import format_number
        self._positions_page()
        inp = self._row_button(deal_id, "stop_input")
        inp.clear()
        inp.send_keys(format_number(stop_price, 2, self.number_locale))
        self._row_button(deal_id, "stop_button").click()
        if self.first_of(["stop_done", "stop_error"], self.store.timeout) == "stop_error":
            raise OrderRejected(f"stop {stop_price:.2f} on {deal_id}: {self.text('stop_error_reason')}")
        return self.number("stop_value")

    def close(self: Any, deal_id: str) -> float:
        self._positions_page()
        self._row_button(deal_id, "close_button").click()
        self.first_of(["close_done"], self.store.confirm_timeout)
        return self.number("close_price")
