"""One interface for every venue driver, plus the Selenium helpers they share.

A venue driver turns "buy a long knock-out near barrier B for stake X" into
clicks on the venue's pages. Page URLs, selectors, labels and the number
format come from the venue's profile (:mod:`mltrade.live.profiles`, TOML;
``SELECTORS`` is its lookup dict). Drivers raise the exceptions below and
never log credentials. A driver needs only a :class:`BrowserSession` (the browser,
the base URL, the time-outs); :class:`~mltrade.live.store.SeleniumStore` is one,
which owns the browser and wraps every call with re-login and failure screenshots.
This module imports nothing of the store, so the package reads top-down
(store -> venues -> base).
"""
from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Tuple, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from mltrade.live.profiles import VenueProfile

log = logging.getLogger("mltrade.live")


class VenueError(RuntimeError):
    """Something went wrong on the venue's pages."""


class ElementMissing(VenueError):
    """An expected page element did not appear in time."""


class SessionExpired(VenueError):
    """The venue sent us back to its login page."""


class OrderRejected(VenueError):
    """The venue refused the order; ``reason`` is its message."""

    def __init__(self, reason: str):
        super().__init__(f"order rejected: {reason}")
        self.reason = reason


class TwoFactorRefused(VenueError):
    """The venue refused the 2FA code (wrong or expired code)."""


class ConfirmationTimeout(VenueError):
    """The order was submitted but no confirmation or rejection appeared: outcome unknown."""


class UnreadableNumber(VenueError):
    """A number on the venue's page is not in the profile's locale, or implausible: never guessed.

    The message names the page, the selector and the text; the broker stops new orders on it.
    """

    def __init__(self, message: str, page: str = "", selector: str = "", text: str = ""):
        super().__init__(message)
        self.page, self.selector, self.text = page, selector, text


@dataclass
class VenueFill:
    """A confirmed buy."""

    deal_id: str
    product_id: str
    direction: int
    barrier: float
    size: int
    price: float
    client_ref: str


@dataclass
class VenuePosition:
    """An open position as the venue shows it."""

    deal_id: str
    product_id: str
    direction: int
    barrier: float
    size: int
    entry: float
    bid: float
    pnl: float
    client_ref: str = ""
    stop: Optional[float] = None


@dataclass
class ClosedPosition:
    """A closed position from the venue's history (reason: closed | stop | knockout)."""

    deal_id: str
    client_ref: str
    size: int
    exit: float
    pnl: float
    reason: str


def pick_level(levels: List[float], direction: int, wanted: float, index: Optional[float] = None) -> float:
    """Nearest offered knock-out level on the safe side of ``wanted``.

    Long: the highest level at or below ``wanted``; short: the lowest at or above.
    Raises :class:`VenueError` when the venue offers none on that side, or when ``index`` is given and
    ``wanted`` or the level found is on the wrong side of it (a long's barrier must be below the index,
    a short's above: otherwise the certificate is knocked out already).
    """
    check_side(direction, wanted, index)
    if direction > 0:
        ok = [x for x in levels if x <= wanted + 1e-9]
        if ok:
            return check_side(direction, max(ok), index)
    else:
        ok = [x for x in levels if x >= wanted - 1e-9]
        if ok:
            return check_side(direction, min(ok), index)
    side = "at or below" if direction > 0 else "at or above"
    raise VenueError(f"no knock-out level offered {side} {wanted:.2f} "
                     f"({len(levels)} levels, {min(levels, default=float('nan')):.2f}"
                     f"..{max(levels, default=float('nan')):.2f})")


def check_side(direction: int, level: float, index: Optional[float]) -> float:
    """``level``, or :class:`VenueError` when it is on the wrong side of ``index`` (None: unchecked).

    A long's knock-out level must lie below the index, a short's above (else it is knocked out already).
    """
    if index is not None and math.isfinite(index) and (level >= index if direction > 0 else level <= index):
        raise VenueError(f"knock-out level {level:.2f} is on the wrong side of the index {index:.2f} for a "
                         f"{'long' if direction > 0 else 'short'} (it must be "
                         f"{'below' if direction > 0 else 'above'} the index)")
    return level


def size_for(price: float, stake: Optional[float] = None, cash: Optional[float] = None,
             fee: float = 0.0) -> int:
    """Whole certificates for ``stake`` (or all ``cash`` less the fee) at ``price``."""
    if price <= 0 or not math.isfinite(price):
        raise VenueError(f"price: expected a positive dealable price, got {price!r}")
    budget = stake if stake is not None else (cash or 0.0) - fee
    return max(int(math.floor(budget / price + 1e-9)), 0)


@runtime_checkable
class BrowserSession(Protocol):
    """What a venue driver needs from its owner: a WebDriver, the venue's base URL and time-outs (s)."""

    driver: Any
    base_url: str
    timeout: float
    confirm_timeout: float


class Venue(ABC):
    """Interface of a venue driver (IG, Trade Republic, ...)."""

    name: str = "venue"

    def __init__(self, store: BrowserSession, profile: Optional["VenueProfile"] = None):
        from mltrade.live.profiles import load_profile
        self.store = store
        self.profile: "VenueProfile" = profile or load_profile(self.name)
        self.SELECTORS: Dict[str, str] = self.profile.lookup()
        self.number_locale: str = self.profile.locale

    # -- shared Selenium helpers -------------------------------------------
    @property
    def driver(self) -> Any:
        return self.store.driver

    def sel(self, key: str) -> str:
        """The profile's selector (or URL path) ``key``."""
        return self.profile.sel(key)

    def on_login_page(self) -> bool:
        """True when the browser shows the venue's login page (the session has expired)."""
        from urllib.parse import urlparse
        login = urlparse(self.sel("login_page")).path
        return urlparse(self.driver.current_url).path.startswith(login)

    def open(self, path: str, ready: Optional[str] = None) -> None:
        """Load ``base_url + path``; raise :class:`SessionExpired` if the venue shows its login page."""
        self.driver.get(self.store.base_url + path)
        if self.on_login_page() and path != self.sel("login_page"):
            raise SessionExpired(f"{self.name}: redirected to the login page when opening {path}")
        if ready:
            self.wait_js(f"return document.body && document.body.dataset.{ready} === '1'",
                         f"page {path} to finish loading")

    def wait(self, key: str, timeout: Optional[float] = None, visible: bool = True) -> Any:
        """Wait for the element ``SELECTORS[key]``; raise :class:`ElementMissing` naming it."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        css = self.sel(key)
        cond = EC.visibility_of_element_located if visible else EC.presence_of_element_located
        try:
            return WebDriverWait(self.driver, timeout or self.store.timeout, poll_frequency=0.05).until(
                cond((By.CSS_SELECTOR, css)))
        except TimeoutException:
            if self.on_login_page():
                raise SessionExpired(f"{self.name}: on the login page while waiting for {key}") from None
            raise ElementMissing(f"{self.name}: element {key!r} ({css}) did not appear within "
                                 f"{timeout or self.store.timeout:.1f} s "
                                 f"on {self.driver.current_url}") from None

    def wait_js(self, script: str, what: str, timeout: Optional[float] = None,
                args: Tuple[Any, ...] = ()) -> Any:
        """Poll ``script`` (called with ``args``) until it returns a truthy value."""
        end = time.monotonic() + (timeout or self.store.timeout)
        while True:
            v = self.driver.execute_script(script, *args)
            if v:
                return v
            if time.monotonic() > end:
                if self.on_login_page():
                    raise SessionExpired(f"{self.name}: on the login page while waiting for {what}")
                raise ElementMissing(f"{self.name}: timed out waiting for {what}")
            time.sleep(0.05)

    def first_of(self, keys: List[str], timeout: float) -> str:
        """Wait until one of the elements ``keys`` is visible; return its key."""
        end = time.monotonic() + timeout
        script = ("const s = arguments[0]; for (let i = 0; i < s.length; i++) {"
                  " const e = document.querySelector(s[i]); if (e && e.offsetParent !== null) return i + 1; }"
                  " return 0;")
        while True:
            i = self.driver.execute_script(script, [self.sel(k) for k in keys])
            if i:
                return keys[i - 1]
            if time.monotonic() > end:
                raise ConfirmationTimeout(f"{self.name}: none of {keys} appeared within {timeout:.1f} s")
            time.sleep(0.05)

    def submit_credentials(self, username: str, password: str) -> None:
        """Fill and submit the login form; wait for the 2FA field or raise on a login error."""
        self.open(self.sel("login_page"))
        self.type_into("username", username)
        self.type_into("password", password)
        self.click("login_button")
        step = self.wait_js(
            "const e = document.querySelector(arguments[0]), c = document.querySelector(arguments[1]);"
            "if (e && e.textContent.trim()) return 'error'; if (c && c.offsetParent !== null) return 'code';"
            "return null;".replace("arguments[0]", repr(self.sel("login_error"))).replace(
                "arguments[1]", repr(self.sel("code"))), "the 2FA step after login")
        if step == "error":
            raise VenueError(f"{self.name}: login refused (check the credentials)")

    def submit_code(self, code: Callable[[], str]) -> None:
        """Type the 2FA code and submit it; wait for the ``after_login`` page.

        Raises :class:`TwoFactorRefused` when the venue shows its 2FA error (wrong or expired code).
        """
        from urllib.parse import urlparse

        from mltrade.live.credentials import register_secret
        value = code()
        register_secret(value)
        self.type_into("code", value)
        self.click("verify_button")
        landing = urlparse(self.sel("after_login")).path
        step = self.wait_js(
            "const e = document.querySelector(arguments[0]);"
            "if (e && e.textContent.trim()) return 'error';"
            "if (location.pathname.startsWith(arguments[1]) && document.body"
            " && document.body.dataset.loaded === '1') return 'ok'; return null;",
            "the page after 2FA", args=(self.sel("twofa_error"), landing))
        if step == "error":
            msg = self.driver.execute_script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : '';",
                self.sel("twofa_error"))
            raise TwoFactorRefused(f"{self.name}: the 2FA code was refused by the venue "
                                   f"(the page says: {msg[:80]!r}); check [live] twofa_source")

    def type_into(self, key: str, text: str) -> None:
        e = self.wait(key)
        e.clear()
        e.send_keys(text)

    def click(self, key: str) -> None:
        self.wait(key).click()

    def text(self, key: str) -> str:
        return self.wait(key).text

    def number(self, key: str, integer: bool = False) -> float:
        """The number shown by element ``key`` (strictly in the profile's locale)."""
        return self.read_number(self.text(key), key, self.sel(key), integer=integer)

    def read_number(self, text: Optional[str], field: str, selector: str, integer: bool = False) -> float:
        """``text`` read from ``selector`` as a number; :class:`UnreadableNumber` (page, selector, text)."""
        from mltrade.live.formats import NumberFormatError, parse_number
        try:
            return parse_number(text, self.number_locale, field=f"{self.name}.{field}", integer=integer)
        except NumberFormatError as e:
            try:
                page = self.driver.current_url
            except Exception:
                page = "?"
            raise UnreadableNumber(f"{self.name}: unreadable number on page {page}, selector {selector!r}: "
                                   f"{e}", page=page, selector=selector, text=str(text)) from None

    def table(self, row_key: str, cells: Dict[str, str]) -> List[Dict[str, str]]:
        """Read rows ``SELECTORS[row_key]``: for each, ``{name: text of cell selector}`` plus data-*."""
        script = ("const rows = document.querySelectorAll(arguments[0]); const cells = arguments[1];"
                  "return Array.from(rows).map(r => { const o = Object.assign({}, r.dataset);"
                  " for (const [k, s] of Object.entries(cells)) { const c = r.querySelector(s);"
                  "  o[k] = c ? c.textContent : null; } return o; });")
        return self.driver.execute_script(script, self.sel(row_key), cells)

    # -- the interface -------------------------------------------------------
    @abstractmethod
    def login(self, username: str, password: str, code: Callable[[], str]) -> None:
        """Log in, pass 2FA, and land on the trading account."""

    @abstractmethod
    def cash(self) -> float:
        """Available cash in account currency."""

    @abstractmethod
    def positions(self) -> List[VenuePosition]:
        """Open positions with current bid and P&L."""

    @abstractmethod
    def history(self) -> List[ClosedPosition]:
        """Closed positions (closed, stopped out, knocked out)."""

    @abstractmethod
    def buy(self, direction: int, barrier: float, *, index_price: Optional[float] = None,
            size: Optional[int] = None, stake: Optional[float] = None, client_ref: str = "") -> VenueFill:
        """Buy the certificate nearest ``barrier`` on the safe side (no stop: see :meth:`place_stop`)."""

    @abstractmethod
    def place_stop(self, deal_id: str, stop_price: float) -> float:
        """Set a stop (sell) order on position ``deal_id``; returns the accepted stop price.

        Raises :class:`OrderRejected` when the venue refuses it.
        """

    @abstractmethod
    def close(self, deal_id: str) -> float:
        """Sell position ``deal_id`` at market; returns the exit price."""

    def snapshot(self) -> Tuple[float, List[VenuePosition], List[ClosedPosition]]:
        """Cash, open positions and closed positions (drivers may read them in one page load)."""
        return self.cash(), self.positions(), self.history()

    def ping(self) -> None:
        """Keep the session alive (loads a cheap authenticated page)."""
        self.cash()
