"""``SeleniumStore``: one headless Chromium session per venue (backtrader's store pattern).

The store owns the browser, logs in (credentials from the environment or the
OS keyring, 2FA code from a prompt, a file or a command), keeps the session
alive, logs in again when the venue expires it, and saves a screenshot plus
the page source (credentials masked) on every failure. ``getbroker()`` returns
a :class:`~mltrade.live.broker.SeleniumBroker` bound to this store.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, TypeVar

from mltrade.live.credentials import Credentials, code_source, load_credentials, mask, register_secret
from mltrade.live.venues.base import ConfirmationTimeout, SessionExpired, Venue

log = logging.getLogger("mltrade.live")
T = TypeVar("T")

#: incognito: no form history, autofill, saved passwords or session restore on disk (the 2FA code typed
#: into the page is never written to the profile)
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               "--window-size=1280,1000", "--incognito", "--disable-save-password-bubble",
               "--disable-features=AutofillServerCommunication,PasswordManagerOnboarding")
#: Chromium preferences: autofill and password saving off
CHROME_PREFS = {"autofill.profile_enabled": False, "autofill.credit_card_enabled": False,
                "autofill.enabled": False, "credentials_enable_service": False,
                "profile.password_manager_enabled": False, "profile.password_manager_leak_detection": False}


def profiles_root() -> Path:
    """Where the browser profiles of runs live (``$TMPDIR/mltrade-chromium``): one ``<pid>-*`` per run."""
    return Path(tempfile.gettempdir()) / "mltrade-chromium"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_profiles(root: Optional[Path] = None) -> List[Path]:
    """Remove the browser profiles of runs that are no longer alive (a crash leaves one behind)."""
    root = root or profiles_root()
    removed = []
    if not root.is_dir():
        return removed
    for d in root.iterdir():
        head = d.name.split("-", 1)[0]
        if d.is_dir() and head.isdigit() and not _pid_alive(int(head)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
            log.info("removed the browser profile %s of a run that is gone", d)
    return removed


def venue_class(name: str) -> type:
    """Venue driver class for ``ig`` or ``traderepublic``."""
    if name == "ig":
        from mltrade.live.venues.ig import IGVenue
        return IGVenue
    if name in ("traderepublic", "tr"):
        from mltrade.live.venues.traderepublic import TradeRepublicVenue
        return TradeRepublicVenue
    raise ValueError(f"venue: expected 'ig' or 'traderepublic', got {name!r}")


class SeleniumStore:
    """Browser session for one venue; ``SeleniumStore.instance(venue, ...)`` returns the singleton."""

    _instances: ClassVar[Dict[Tuple[str, str], "SeleniumStore"]] = {}
    _ilock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, venue: str, base_url: str, *, credentials: Optional[Credentials] = None,
                 code: str | Callable[[], str] = "prompt", driver_path: str = "/usr/bin/chromedriver",
                 chromium_path: str = "/usr/bin/chromium", headless: bool = True, undetected: bool = False,
                 timeout: float = 10.0, confirm_timeout: float = 15.0, keepalive_s: float = 240.0,
                 screenshots_dir: str | Path = ".mltrade/live/screenshots",
                 venue_kwargs: Optional[dict] = None,
                 driver: Any = None):
        self.venue_name = venue
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._code = code if callable(code) else code_source(code)
        self.driver_path, self.chromium_path = driver_path, chromium_path
        self.headless, self.undetected = headless, undetected
        self.timeout, self.confirm_timeout = float(timeout), float(confirm_timeout)
        self.keepalive_s = float(keepalive_s)
        self.screenshots_dir = Path(screenshots_dir)
        self.venue: Venue = venue_class(venue)(self, **(venue_kwargs or {}))
        self._driver: Any = driver            # an existing WebDriver may be shared (tests)
        self._owns_driver = driver is None
        self._profile: Optional[str] = None
        self._logged_in = False
        self._last_activity = 0.0
        self.logins = 0
        self.failures: list[Path] = []
        self.lock = threading.RLock()
        if credentials is not None:
            register_secret(credentials.username)
            register_secret(credentials.password)

    @classmethod
    def instance(cls, venue: str, base_url: str, **kw: Any) -> "SeleniumStore":
        """The one store for ``(venue, base_url)``; created on first use."""
        with cls._ilock:
            key = (venue, base_url.rstrip("/"))
            if key not in cls._instances:
                cls._instances[key] = cls(venue, base_url, **kw)
            return cls._instances[key]

    # -- browser -----------------------------------------------------------
    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = load_credentials(self.venue_name)
        return self._credentials

    @property
    def driver(self) -> Any:
        if self._driver is None:
            self._driver = self._start_browser()
        return self._driver

    def _start_browser(self) -> Any:
        root = profiles_root()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        clean_stale_profiles(root)
        self._profile = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
        if self.undetected:
            try:
                import undetected_chromedriver as uc  # type: ignore[import-not-found]
            except ImportError as e:
                raise RuntimeError("undetected: the optional package 'undetected-chromedriver' is not "
                                   "installed (pip install undetected-chromedriver)") from e
            opts = uc.ChromeOptions()
            for a in CHROME_ARGS:
                opts.add_argument(a)
            opts.add_argument(f"--user-data-dir={self._profile}")
            opts.add_experimental_option("prefs", dict(CHROME_PREFS))
            return uc.Chrome(options=opts, driver_executable_path=self.driver_path,
                             browser_executable_path=self.chromium_path)
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        if not Path(self.driver_path).exists():
            raise RuntimeError(f"driver_path: chromedriver not found at {self.driver_path!r} "
                               "(install chromium-driver or set [live] driver_path)")
        opts = webdriver.ChromeOptions()
        if self.chromium_path:
            opts.binary_location = self.chromium_path
        for a in CHROME_ARGS:
            if a == "--headless=new" and not self.headless:
                continue
            opts.add_argument(a)
        opts.add_argument(f"--user-data-dir={self._profile}")
        opts.add_experimental_option("prefs", dict(CHROME_PREFS))
        d = webdriver.Chrome(service=Service(self.driver_path), options=opts)
        d.set_page_load_timeout(max(self.timeout, 5.0) * 3)
        log.info("%s: browser started", self.venue_name)
        return d

    def close(self) -> None:
        """Quit the browser and forget the singleton."""
        with self.lock:
            if self._driver is not None:
                try:
                    if self._owns_driver:
                        self._driver.quit()
                finally:
                    self._driver = None
            if self._profile:
                shutil.rmtree(self._profile, ignore_errors=True)
                self._profile = None
            self._logged_in = False
        with self._ilock:
            for k, v in list(self._instances.items()):
                if v is self:
                    del self._instances[k]

    # -- session -----------------------------------------------------------
    def login(self) -> None:
        """Log in with 2FA (the venue driver knows the pages)."""
        with self.lock:
            c = self.credentials
            log.info("%s: logging in as %s", self.venue_name, c.username)
            try:
                self.venue.login(c.username, c.password, self._code)
            except Exception as e:
                self.capture_failure("login", e)
                raise
            self._logged_in = True
            self.logins += 1
            self._last_activity = time.monotonic()

    def ensure_session(self) -> None:
        """Log in if needed; ping the venue when idle longer than ``keepalive_s``."""
        if not self._logged_in:
            self.login()
        elif time.monotonic() - self._last_activity > self.keepalive_s:
            self.call(self.venue.ping, name="keepalive")

    def call(self, fn: Callable[..., T], *args: Any, name: Optional[str] = None, **kw: Any) -> T:
        """Run a venue action; on session expiry log in again and retry once; capture failures."""
        name = name or getattr(fn, "__name__", "action")
        with self.lock:
            if not self._logged_in:
                self.login()
            for attempt in (1, 2):
                try:
                    out = fn(*args, **kw)
                    self._last_activity = time.monotonic()
                    return out
                except SessionExpired as e:
                    if attempt == 2:
                        self.capture_failure(name, e)
                        raise
                    log.warning("%s: session expired during %s; logging in again", self.venue_name, name)
                    self._logged_in = False
                    self.login()
                except ConfirmationTimeout as e:
                    # no confirmation: never sent again blindly (the caller reconciles with the venue
                    # first); if the venue expired the session meanwhile, log in again for that
                    self.capture_failure(name, e)
                    if not self._browser_dead() and self._on_login_page():
                        log.warning("%s: session expired during the confirmation of %s; logging in again",
                                    self.venue_name, name)
                        self._logged_in = False
                        try:
                            self.login()
                        except Exception as le:
                            log.error("%s: logging in again failed: %s", self.venue_name,
                                      mask(str(le).splitlines()[0] if str(le) else type(le).__name__))
                    raise
                except Exception as e:
                    if self._browser_dead():
                        log.error("%s: the browser died during %s; a new one starts on the next call",
                                  self.venue_name, name)
                        self._discard_browser()
                    else:
                        self.capture_failure(name, e)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- venue operations (each through call(): a new login on expiry, a screenshot on failure) ------
    def snapshot(self, name: str = "reconcile") -> Tuple[float, list, list]:
        """Cash, open positions and closed positions from the venue's positions page."""
        return self.call(self.venue.snapshot, name=name)

    def cash(self, name: str = "cash") -> float:
        """The account's cash at the venue."""
        return self.call(self.venue.cash, name=name)

    def positions(self, name: str = "positions") -> list:
        """The open positions at the venue."""
        return self.call(self.venue.positions, name=name)

    def buy(self, direction: int, barrier: float, **kw: Any) -> Any:
        """Buy the venue's knock-out nearest ``barrier`` (see the venue driver's ``buy``): its fill."""
        return self.call(self.venue.buy, direction, barrier, name="buy", **kw)

    def place_stop(self, deal_id: str, price: float) -> float:
        """Place (or move) the stop of position ``deal_id``; returns the stop the venue shows."""
        return self.call(self.venue.place_stop, deal_id, price, name="stop")

    def close_position(self, deal_id: str) -> float:
        """Sell position ``deal_id`` at the venue; returns the exit price."""
        return self.call(self.venue.close, deal_id, name="close")

    def _on_login_page(self) -> bool:
        try:
            return bool(self.venue.on_login_page())
        except Exception:
            return False

    def _browser_dead(self) -> bool:
        if self._driver is None:
            return False
        try:
            self._driver.current_url
            return False
        except Exception:
            return True

    def _discard_browser(self) -> None:
        try:
            if self._owns_driver:
                self._driver.quit()
        except Exception:
            pass
        self._driver = None
        self._owns_driver = True
        self._logged_in = False

    # -- failures ----------------------------------------------------------
    def capture_failure(self, name: str, exc: Optional[BaseException] = None) -> Optional[Path]:
        """Save a screenshot and the page source (secrets masked) under ``screenshots_dir``."""
        if self._driver is None:
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        base = self.screenshots_dir / f"{self.venue_name}-{name}-{stamp}"
        try:
            self.screenshots_dir.mkdir(parents=True, exist_ok=True)
            secrets = [s for s in (self._credentials.username, self._credentials.password)
                       if s] if self._credentials else []
            # blank typed secrets and any echo of them before the screenshot
            self._driver.execute_script(
                "for (const i of document.querySelectorAll('input')) { if (arguments[0].includes(i.value)"
                " || i.type === 'password') i.value = ''; }"
                "const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);"
                "while (w.nextNode()) { let t = w.currentNode.nodeValue;"
                " for (const s of arguments[0]) t = t.split(s).join('***'); w.currentNode.nodeValue = t; }",
                secrets)
            self._driver.save_screenshot(str(base.with_suffix(".png")))
            tmp = base.with_suffix(".html.tmp")
            tmp.write_text(mask(self._driver.page_source), encoding="utf-8")
            tmp.replace(base.with_suffix(".html"))
            self.failures.append(base)
            log.error("%s: %s failed (%s); screenshot %s.png", self.venue_name, name,
                      mask(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) if exc else "", base)
            return base
        except Exception as e:  # never let the capture hide the original error
            log.error("%s: could not save failure screenshot: %s", self.venue_name, mask(str(e)))
            return None

    def getbroker(self, **kw: Any) -> Any:
        """A :class:`~mltrade.live.broker.SeleniumBroker` trading through this store."""
        from mltrade.live.broker import SeleniumBroker
        return SeleniumBroker(store=self, **kw)
