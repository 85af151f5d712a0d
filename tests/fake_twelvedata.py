"""A real HTTP server on 127.0.0.1 that answers like TwelveData's ``time_series`` endpoint.

Serves a bars DataFrame newest-first with the ``outputsize`` cap, inclusive
``start_date``/``end_date`` (so clients must de-duplicate window edges), only
bars that have started by the server's clock (the forming bar is served with
provisional values, as the real API does), and a queue of injected faults.
"""
from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Deque, Optional
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

NO_DATA = "No data is available on the specified dates. Try setting different start/end dates."
#: fault names understood by the server (one is consumed per request)
FAULTS = ("429", "429body", "500", "502", "503", "malformed", "401", "400", "slow", "empty200")
#: a fault may carry a Retry-After header: ``"429;retry-after=2"``, ``"503;retry-after=<HTTP date>"``


class FakeTwelveData:
    """``with FakeTwelveData(bars) as srv: srv.url`` -> base URL of a live server."""

    def __init__(self, bars: pd.DataFrame, symbol: str = "NDX", key: str = "test-key-123",
                 interval: str = "5min", now: Optional[Callable[[], pd.Timestamp]] = None,
                 max_outputsize: int = 5000, slow_seconds: float = 1.0,
                 publish_lag: pd.Timedelta = pd.Timedelta(0)) -> None:
        self.bars, self.symbol, self.key, self.interval = bars, symbol, key, interval
        self.tz = str(bars.index.tz) if bars.index.tz is not None else None
        self.now = now
        self.max_outputsize = max_outputsize
        self.slow_seconds = slow_seconds
        self.publish_lag = publish_lag
        self.faults: Deque[str] = collections.deque()
        #: (start, end) UTC: while the server clock is inside, every request fails with HTTP 503
        self.outage: Optional[tuple] = None
        self.requests: list = []
        self.lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "FakeTwelveData":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer._handle(self)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeTwelveData":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- behaviour ---------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, body, raw: bool = False,
              headers: Optional[dict] = None) -> None:
        data = body.encode() if raw else json.dumps(body).encode()
        try:
            h.send_response(status)
            for name, value in (headers or {}).items():
                h.send_header(name, value)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self.lock:
            self.requests.append({"path": url.path, "params": q, "headers": dict(h.headers),
                                  "t": time.monotonic()})
            fault = self.faults.popleft() if self.faults else None
        extra = {}
        if fault and ";retry-after=" in fault:
            fault, value = fault.split(";retry-after=", 1)
            extra["Retry-After"] = value
        if self.outage is not None and self.now is not None and self.outage[0] <= self.now() < self.outage[1]:
            return self._send(h, 503, "<html>Service unavailable</html>", raw=True)
        if fault == "slow":
            time.sleep(self.slow_seconds)
        elif fault == "429":
            return self._send(h, 429, {"code": 429, "status": "error",
                                       "message": "You have run out of API credits for the current minute."},
                              headers=extra)
        elif fault == "429body":
            return self._send(h, 200, {"code": 429, "status": "error",
                                       "message": "You have run out of API credits for the current minute."})
        elif fault in ("500", "502", "503"):
            return self._send(h, int(fault), "<html>Internal error</html>", raw=True, headers=extra)
        elif fault == "malformed":
            return self._send(h, 200, '{"meta": {"symbol": "NDX", "values": [', raw=True)
        elif fault == "400":
            return self._send(h, 200, {"code": 400, "status": "error",
                                       "message": "**interval** parameter is not supported"})
        if url.path != "/time_series":
            return self._send(h, 404, {"code": 404, "status": "error", "message": "Not found"})
        auth = h.headers.get("Authorization", "")
        key = auth[len("apikey "):] if auth.startswith("apikey ") else q.get("apikey", "")
        if fault == "401" or key != self.key:
            return self._send(h, 401, {"code": 401, "status": "error",
                                       "message": "**apikey** parameter is incorrect or not specified."})
        if q.get("symbol") != self.symbol:
            return self._send(h, 200, {"code": 400, "status": "error",
                                       "message": f"**symbol** {q.get('symbol')} not found."})
        size = int(q.get("outputsize", 30))
        if size > self.max_outputsize:
            return self._send(h, 200, {"code": 400, "status": "error",
                                       "message": "**outputsize** must be <= 5000"})
        bars = self._select(q)
        if fault == "empty200" or bars.empty:
            return self._send(h, 200, {"code": 400, "status": "error", "message": NO_DATA})
        bars = bars.iloc[::-1].iloc[:size]  # newest first, capped
        values = [{"datetime": ts.strftime("%Y-%m-%d %H:%M:%S"), "open": f"{r.open:.5f}",
                   "high": f"{r.high:.5f}", "low": f"{r.low:.5f}", "close": f"{r.close:.5f}",
                   "volume": f"{int(r.volume)}"} for ts, r in zip(bars.index, bars.itertuples())]
        meta = {"symbol": self.symbol, "interval": self.interval, "currency": "USD",
                "exchange_timezone": self.tz, "exchange": "NASDAQ", "type": "Index"}
        self._send(h, 200, {"meta": meta, "values": values, "status": "ok"})

    def _select(self, q: dict) -> pd.DataFrame:
        bars = self.bars
        local = bars.index.tz_localize(None) if bars.index.tz is not None else bars.index
        mask = np.ones(len(bars), dtype=bool)
        if "start_date" in q:
            mask &= np.asarray(local >= pd.Timestamp(q["start_date"]))
        if "end_date" in q:
            # inclusive: clients must de-duplicate window edges
            mask &= np.asarray(local <= pd.Timestamp(q["end_date"]))
        if self.now is not None:
            now = self.now()
            mask &= np.asarray(bars.index <= now)  # bars that have started
        out = bars[mask].copy()
        if self.now is not None and len(out):
            from mltrade.feeds.twelvedata import INTERVALS
            step = pd.Timedelta(minutes=INTERVALS[self.interval])
            ends = out.index + step
            # completed bars appear only publish_lag after their close
            out = out[np.asarray((ends > self.now()) | (ends + self.publish_lag <= self.now()))]
            if out.empty:
                return out
            last = out.index[-1]
            if last + step > self.now():  # forming bar: provisional values
                o = out.iloc[-1]["open"]
                out.iloc[-1, out.columns.get_indexer(["high", "low", "close"])] = [o + 1.0, o - 1.0, o + 0.5]
        return out


def random_bars(start: str = "2024-01-02", days: int = 10, seed: int = 0, tz: str = "America/New_York",
                interval: int = 5, calendar: str = "XNAS") -> pd.DataFrame:
    """Random-walk session bars (regular XNAS sessions) in the exchange timezone."""
    from mltrade.calendars import sessions

    sched = sessions(calendar, start, pd.Timestamp(start) + pd.Timedelta(days=days * 2 + 7)).iloc[:days]
    idx = []
    for o, c in zip(sched["open"], sched["close"]):
        idx.append(pd.date_range(o, c, freq=f"{interval}min", inclusive="left"))
    index = idx[0].append(idx[1:]).tz_convert(tz)
    rng = np.random.default_rng(seed)
    close = 15000 * np.exp(np.cumsum(rng.normal(0, 0.001, len(index))))
    open_ = np.r_[15000, close[:-1]]
    spread = np.abs(rng.normal(0, 0.0007, len(index))) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    df = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                       "volume": rng.integers(0, 1000, len(index)).astype(float)}, index=index)
    df = df.round(5)
    df.index.name = "datetime"
    return df


class VirtualClock:
    """UTC clock advanced by the feed's sleep calls (no real waiting)."""

    def __init__(self, start: pd.Timestamp) -> None:
        self.t = start

    def __call__(self) -> pd.Timestamp:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += pd.Timedelta(seconds=seconds)
