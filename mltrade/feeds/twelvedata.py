"""TwelveData ``time_series`` client: paging, a credit rate limiter, back-off and clear errors.

Why a thin client on ``requests`` rather than the official ``twelvedata``
package: we use one endpoint (``time_series``) and need control the package
does not give — paging any date range in windows of at most 5000 bars, a
shared credit budget per minute, bounded back-off with jitter on 429 (also
when it arrives as an HTTP-200 error body), 5xx and time-outs — a
``Retry-After`` header on 429/503 (seconds or an HTTP date) replaces the
exponential back-off, capped by ``backoff_max`` — exceptions
that never contain the API key, and a configurable ``base_url`` so tests can
point at a real HTTP server on 127.0.0.1. The official package adds
dependencies (and its own retry/format logic) without covering those needs.
``requests`` is already a dependency of the project.

The key travels in the ``Authorization: apikey <key>`` header (supported by
TwelveData), so it never appears in URLs, logs or exception texts; every
message is also scrubbed of the key as a second line of defence.

The errors live in :mod:`mltrade.feeds.twelvedata_errors`, the bars' pure functions (parsing, merging,
intervals) in :mod:`mltrade.feeds.twelvedata_bars`; both are re-exported here.
"""
from __future__ import annotations

import collections
import datetime
import email.utils
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, Iterator, Optional, Tuple, Union

import pandas as pd
import requests

# the bars' functions and the errors are part of this module's face (mltrade.feeds.cache, twelvedata_feed,
# mltrade.commands.data_fetch and the tests import them from here)
from mltrade.feeds.twelvedata_bars import (INTERVALS, DateLike, _empty_frame, _guess_tz,  # noqa: F401
                                           _localise, _to_local_naive, drop_incomplete, interval_minutes,
                                           merge_bars, parse_time_series)
from mltrade.feeds.twelvedata_errors import (TwelveDataAuthError, TwelveDataError,  # noqa: F401
                                             TwelveDataRateLimitError, TwelveDataRequestError,
                                             TwelveDataServerError, short_reason)
from mltrade.settings import TwelveDataSettings, from_table

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.twelvedata.com"
MAX_OUTPUTSIZE = 5000
_NO_DATA = "no data is available"

class RateLimiter:
    """Sliding-window limiter: at most ``credits`` credits spent in any ``period`` seconds.

    Thread-safe; ``clock``/``sleep`` are injectable so tests run on virtual time.
    """

    def __init__(self, credits: int, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if credits < 1:
            raise ValueError(f"credits_per_minute: expected a positive integer, got {credits!r}")
        if not period > 0:
            raise ValueError(f"credit_window: expected a positive number of seconds, got {period!r}")
        self.credits, self.period = int(credits), float(period)
        self._clock, self._sleep = clock, sleep
        self._spent: Deque[Tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        self.waited = 0.0  #: total seconds spent waiting

    def _used(self, now: float) -> int:
        while self._spent and self._spent[0][0] <= now - self.period:
            self._spent.popleft()
        return sum(c for _, c in self._spent)

    def acquire(self, cost: int = 1) -> float:
        """Block until ``cost`` credits fit in the window, record them; returns seconds waited."""
        if cost > self.credits:
            raise ValueError(f"cost {cost} exceeds the budget of {self.credits} credits per window")
        waited = 0.0
        with self._lock:
            while True:
                now = self._clock()
                used = self._used(now)
                if used + cost <= self.credits:
                    self._spent.append((now, cost))
                    self.waited += waited
                    return waited
                # wait until enough of the oldest entries leave the window
                need, freed, until = used + cost - self.credits, 0, now
                for t, c in self._spent:
                    freed += c
                    until = t + self.period
                    if freed >= need:
                        break
                delay = max(until - now, 1e-6)
                self._sleep(delay)
                waited += delay

    def penalise(self) -> None:
        """After a 429 without ``Retry-After``: treat the whole budget as spent now (the server knows
        better), so the next request waits out the credit window (``period``)."""
        with self._lock:
            now = self._clock()
            used = self._used(now)
            if used < self.credits:
                self._spent.append((now, self.credits - used))


@dataclass
class FetchStats:
    """Counters of one client: HTTP requests, credits spent, retries, bars returned."""

    requests: int = 0
    credits: int = 0
    retries: int = 0
    bars: int = 0
    rate_wait_s: float = 0.0
    #: seconds slept before each retry, in order (Retry-After or exponential back-off)
    retry_waits: list = field(default_factory=list)
    errors: list = field(default_factory=list)


class TwelveDataClient:
    """Client of the ``time_series`` endpoint; see the module docstring for the design."""

    def __init__(self, api_key: Optional[str] = None, *, base_url: str = DEFAULT_BASE_URL,
                 credits_per_minute: int = 8, timeout: float = 30.0, max_retries: int = 5,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, jitter: float = 0.5,
                 rate_period: float = 60.0, outputsize: int = MAX_OUTPUTSIZE,
                 on_wait: Optional[Callable[[float, str], None]] = None,
                 api_key_env: str = "TWELVEDATA_API_KEY",
                 session: Optional[requests.Session] = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC"),
                 seed: Optional[int] = None) -> None:
        key = api_key if api_key else os.environ.get(api_key_env, "")
        if not key:
            raise TwelveDataAuthError(
                f"no TwelveData API key: set the {api_key_env} environment variable or "
                f"[twelvedata] api_key in the config file")
        if not (1 <= outputsize <= MAX_OUTPUTSIZE):
            raise ValueError(f"outputsize: expected 1..{MAX_OUTPUTSIZE}, got {outputsize!r}")
        if max_retries < 0 or timeout <= 0 or backoff_base < 0:
            raise ValueError("max_retries >= 0, timeout > 0 and backoff_base >= 0 expected")
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.backoff_base, self.backoff_max, self.jitter = float(backoff_base), float(backoff_max), jitter
        self.outputsize = int(outputsize)
        self._sleep, self._now = sleep, now
        #: called with (seconds, reason) before every wait (credit budget, 429, retry back-off)
        self.on_wait = on_wait
        self._penalised = False
        self.limiter = RateLimiter(credits_per_minute, rate_period, clock=clock, sleep=self._limiter_sleep)
        self._rng = random.Random(seed)
        self._http = session or requests.Session()
        self.stats = FetchStats()

    # -- helpers -------------------------------------------------------------
    def _wait(self, seconds: float, reason: str) -> None:
        if self.on_wait is not None:
            self.on_wait(seconds, reason)
        self._sleep(seconds)

    def _limiter_sleep(self, seconds: float) -> None:
        if self._penalised:
            reason = (f"rate limited (HTTP 429 without Retry-After): waiting out the "
                      f"{self.limiter.period:g} s credit window")
        else:
            reason = f"credit budget: {self.limiter.credits} per {self.limiter.period:g} s"
        self._wait(seconds, reason)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        return base * (1.0 + self.jitter * self._rng.random())

    def _retry_after(self, resp: requests.Response) -> Optional[float]:
        """Seconds asked by a ``Retry-After`` header (delta seconds or HTTP date), capped by
        ``backoff_max``; ``None`` when absent or unparseable (then the exponential back-off applies)."""
        raw = (resp.headers.get("Retry-After") or "").strip()
        if not raw:
            return None
        try:
            seconds = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                log.info("ignoring unparseable Retry-After header %r", raw[:60])
                return None
            if when.tzinfo is None:  # RFC 9110: HTTP dates are GMT
                when = when.replace(tzinfo=datetime.timezone.utc)
            seconds = (pd.Timestamp(when) - pd.Timestamp(self._now())).total_seconds()
        if seconds != seconds:  # NaN
            return None
        return min(self.backoff_max, max(0.0, seconds))

    def _fail(self, exc_type: type, message: str) -> TwelveDataError:
        msg = self._scrub(message)
        self.stats.errors.append(msg)
        log.debug(msg)  # the caller reports the exception; a warning here would print it twice
        return exc_type(msg)

    # -- one request -----------------------------------------------------------
    def request(self, endpoint: str, params: dict, cost: int = 1) -> dict:
        """GET ``endpoint`` with retries; returns the decoded JSON body of a successful answer."""
        url = f"{self.base_url}/{endpoint.lstrip('/')}"
        what = f"TwelveData {endpoint} {params.get('symbol', '')} {params.get('interval', '')}".strip()
        last = ""
        wait: Optional[float] = None  # set by a Retry-After header of the previous answer
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
                delay = self._backoff(attempt - 1) if wait is None else wait
                self.stats.retry_waits.append(delay)
                self._wait(delay, f"retry {attempt}/{self.max_retries} after: {self._scrub(last)}")
            wait = None
            self.stats.rate_wait_s += self.limiter.acquire(cost)
            self._penalised = False
            self.stats.requests += 1
            self.stats.credits += cost
            try:
                resp = self._http.get(url, params=params, timeout=self.timeout,
                                      headers={"Authorization": f"apikey {self._key}"})
            except requests.Timeout:
                last = f"{what}: no answer within {self.timeout:g} s (time-out)"
                log.debug("%s; retry %d/%d", last, attempt + 1, self.max_retries)
                continue
            except requests.RequestException as exc:
                last = f"{what}: connection failed ({type(exc).__name__}: {self._scrub(short_reason(exc))})"
                log.debug("%s; retry %d/%d", last, attempt + 1, self.max_retries)
                continue
            body, why, wait = self._answer(resp, what, attempt)
            if body is not None:
                return body
            last = why
        raise self._fail(TwelveDataServerError, f"{last} — gave up after {self.max_retries} retries")

    def _answer(self, resp: requests.Response, what: str, attempt: int) -> tuple:
        """``(body, "", wait)`` of a successful answer, or ``(None, why, wait)`` to retry it (``wait``: the
        seconds of a ``Retry-After`` header, or None); raises on answers a retry cannot change."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        code = resp.status_code
        message = ""
        if isinstance(body, dict) and body.get("status") == "error":
            code = int(body.get("code", code) or code)
            message = str(body.get("message", ""))
        elif code >= 400 and body is None:
            message = resp.text[:200]
        wait = None
        if resp.status_code in (429, 503) or code in (429, 503):
            wait = self._retry_after(resp)
        if code == 429:
            if wait is None:
                self.limiter.penalise()
                self._penalised = True
            last = f"{what}: rate limited (HTTP 429): {message}"
            log.debug("%s; retry %d/%d", self._scrub(last), attempt + 1, self.max_retries)
            if attempt == self.max_retries:
                raise self._fail(TwelveDataRateLimitError,
                                 f"{last} — still limited after {self.max_retries} retries; "
                                 f"lower credits_per_minute")
            return None, last, wait
        if code >= 500:
            last = f"{what}: server error HTTP {code}: {message or resp.text[:200]}"
            log.debug("%s; retry %d/%d", self._scrub(last), attempt + 1, self.max_retries)
            return None, last, wait
        if code in (401, 403):
            raise self._fail(TwelveDataAuthError, f"{what}: HTTP {code} (authentication): {message}")
        if code >= 400:
            if _NO_DATA in message.lower():  # an empty window, not a failure: no warning
                raise TwelveDataRequestError(self._scrub(f"{what}: HTTP {code}: {message}"))
            raise self._fail(TwelveDataRequestError, f"{what}: HTTP {code}: {message}")
        if not isinstance(body, dict):
            last = (f"{what}: malformed answer (expected a JSON object), starts with "
                    f"{resp.text[:80]!r}")
            log.debug("%s; retry %d/%d", self._scrub(last), attempt + 1, self.max_retries)
            return None, last, wait
        return body, "", wait

    # -- time_series -----------------------------------------------------------
    def time_series_page(self, symbol: str, interval: str, start: Optional[pd.Timestamp] = None,
                         end: Optional[pd.Timestamp] = None, outputsize: Optional[int] = None
                         ) -> Tuple[pd.DataFrame, dict]:
        """One ``time_series`` request (start/end naive exchange-local); returns (ascending bars, meta).

        "No data is available on the specified dates" gives an empty frame.
        """
        interval_minutes(interval)
        params = {"symbol": symbol, "interval": interval, "timezone": "Exchange",
                  "outputsize": int(outputsize or self.outputsize), "format": "JSON", "order": "desc"}
        fmt = "%Y-%m-%d %H:%M:%S" if INTERVALS[interval] else "%Y-%m-%d"
        if start is not None:
            params["start_date"] = pd.Timestamp(start).strftime(fmt)
        if end is not None:
            params["end_date"] = pd.Timestamp(end).strftime(fmt)
        try:
            body = self.request("time_series", params)
        except TwelveDataRequestError as exc:
            if _NO_DATA in str(exc).lower():
                return _empty_frame(interval), {}
            raise
        return parse_time_series(body, interval, symbol), dict(body.get("meta") or {})

    def iter_windows(self, symbol: str, interval: str, start: DateLike, end: Optional[DateLike] = None,
                     tz: Optional[str] = None, complete_only: bool = True
                     ) -> Iterator[Tuple[pd.Timestamp, pd.Timestamp, pd.DataFrame]]:
        """Fetch ``[start, end)`` window by window (oldest first); yields ``(w_start, w_end, bars)``.

        Each window spans at most ``outputsize`` bars at the densest plausible
        rate; a page that comes back full is continued backwards until the
        window is covered, so no bar is lost whatever the data density.
        ``start``/``end`` naive are exchange-local (``tz``); aware ones are converted.
        """
        minutes = interval_minutes(interval)
        now = self._now()
        tz = tz or _guess_tz(symbol)
        start_l = _to_local_naive(start, tz)
        now_l = _to_local_naive(now, tz)
        end_l = min(_to_local_naive(end, tz), now_l) if end is not None else now_l
        if minutes:
            # at most 24h of bars per calendar day: such a window never exceeds outputsize
            span = pd.Timedelta(minutes=minutes) * self.outputsize
        else:
            span = pd.Timedelta(days=int(self.outputsize * {"1day": 1, "1week": 7, "1month": 28}[interval]))
        w_start = start_l
        while w_start < end_l:
            w_end = min(w_start + span, end_l)
            bars = self._fetch_window(symbol, interval, w_start, w_end, tz)
            if complete_only and len(bars):
                bars = drop_incomplete(bars, interval, now, tz)
            self.stats.bars += len(bars)
            yield w_start, w_end, bars
            if minutes and len(bars) >= 2:
                # adapt: widen the window to the observed density (sessions cover a fraction of the day)
                density = len(bars) / max((w_end - w_start) / pd.Timedelta(days=1), 1e-9)
                wanted = pd.Timedelta(days=0.8 * self.outputsize / density)
                span = max(span, min(wanted, pd.Timedelta(days=366)))
            w_start = w_end

    def _fetch_window(self, symbol: str, interval: str, w_start: pd.Timestamp, w_end: pd.Timestamp,
                      tz: str) -> pd.DataFrame:
        parts = []
        cur_end = w_end
        while True:
            page, meta = self.time_series_page(symbol, interval, w_start, cur_end)
            parts.append(page)
            if len(page) < self.outputsize:
                break
            oldest = page.index[0]
            oldest_l = oldest.tz_convert(tz).tz_localize(None) if oldest.tz is not None else oldest
            if oldest_l <= w_start:
                break
            # page was truncated: continue backwards from its oldest bar (one second earlier if the
            # server treats end_date as inclusive and the page did not move)
            cur_end = oldest_l if oldest_l < cur_end else oldest_l - pd.Timedelta(seconds=1)
        bars = merge_bars(parts)
        if len(bars):
            idx = bars.index
            lo, hi = _localise(w_start, idx.tz), _localise(w_end, idx.tz)
            bars = bars[(idx >= lo) & (idx < hi)]
        return bars

    def time_series(self, symbol: str, interval: str, start: DateLike, end: Optional[DateLike] = None,
                    tz: Optional[str] = None, complete_only: bool = True) -> pd.DataFrame:
        """All bars in ``[start, end)``: ascending, exchange timezone, duplicates removed."""
        parts = [b for _, _, b in self.iter_windows(symbol, interval, start, end, tz, complete_only)]
        return merge_bars(parts) if parts else _empty_frame(interval)


def client_from_config(cfg: Union[None, dict, TwelveDataSettings] = None, **overrides) -> TwelveDataClient:
    """A client from a loaded config, its ``[twelvedata]`` table or the typed section (and keyword overrides)."""
    table = (cfg or {}).get("twelvedata", {}) if isinstance(cfg, dict) and "twelvedata" in cfg else cfg
    s = table if isinstance(table, TwelveDataSettings) else from_table(TwelveDataSettings, table, "twelvedata")
    kw = dict(api_key=s.api_key or None, api_key_env=s.api_key_env, base_url=s.base_url, timeout=float(s.timeout),
              credits_per_minute=int(s.credits_per_minute), max_retries=int(s.max_retries),
              backoff_base=float(s.backoff_base), backoff_max=float(s.backoff_max),
              rate_period=float(s.credit_window), outputsize=int(s.outputsize))
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return TwelveDataClient(**kw)


__all__ = ["TwelveDataClient", "RateLimiter", "FetchStats", "TwelveDataError", "TwelveDataAuthError",
           "TwelveDataRequestError", "TwelveDataRateLimitError", "TwelveDataServerError",
           "parse_time_series", "merge_bars", "interval_minutes", "client_from_config", "INTERVALS",
           "MAX_OUTPUTSIZE"]
