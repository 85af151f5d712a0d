"""The live loop: sessions by the exchange calendar, restart-safe, logged to a file.

``run_live`` wires a feed, a strategy from the registry and a broker (paper:
:class:`~mltrade.live.paper.PaperBroker`; ig/traderepublic:
:class:`~mltrade.live.broker.SeleniumBroker`) into one backtrader run per
call. ``--feed sample`` replays the embedded sample bar by bar through
:class:`ReplayData` (a fast clock: ``speed`` times real time, 0 = no waiting),
so the whole loop runs offline. Each finished session is written to the
journal's state; a restart resumes with the next session.
"""
from __future__ import annotations

import logging
import time as _time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, List, Optional

import backtrader as bt
import pandas as pd

from mltrade.calendars import sessions
from mltrade.feeds.bars import IndexData
from mltrade.live.credentials import SecretFilter, mask
from mltrade.live.journal import OrderJournal
from mltrade.live.notify import Notifier
from mltrade.live.risk import RiskGuard, RiskLimits

log = logging.getLogger("mltrade.live")
VENUES = ("paper", "ig", "traderepublic")
FEEDS = ("sample", "twelvedata")


class ReplayData(IndexData):
    """``IndexData`` delivered bar by bar on a clock (``speed`` × real time; 0 = as fast as possible)."""

    params = (("speed", 0.0), ("sleep", None), ("on_bar", None))

    def islive(self) -> bool:
        return True

    def is_last_bar(self) -> bool:
        """True on the last bar the replay will deliver."""
        return self._pos >= len(self._rows)

    def _load(self) -> bool:
        if self._pos >= len(self._rows):
            return False
        if self.p.speed and self._pos > 0:
            (self.p.sleep or _time.sleep)(float(self.p.interval or 1440) * 60.0 / float(self.p.speed))
        ok = super()._load()
        if ok and self.p.on_bar is not None:
            self.p.on_bar(self)
        return ok


class SessionCheckpoint(bt.Analyzer):
    """Writes each completed session to the journal state (``last_session``) after the strategy saw it."""

    params = (("journal", None),)

    def start(self) -> None:
        self.done: List[str] = []

    def next(self) -> None:
        d = self.strategy.data
        if int(d.session_left[0]) == 0:
            day = d.datetime.date(0).isoformat()
            if not self.done or self.done[-1] != day:
                self.done.append(day)
                if self.p.journal is not None:
                    self.p.journal.set_state("last_session", day)
                log.info("session %s finished", day)


def live_strategy(cls: type) -> type:
    """``cls`` adapted to a live feed: without preloading ``buflen() == len(data)`` on every bar, so
    "last bar of the data" must come from the feed (``is_last_bar()``; never for an endless feed)."""
    def is_last_bar_of_data(self: Any, data: Any = None) -> bool:
        d = data or self.data
        return bool(getattr(d, "is_last_bar", lambda: False)())
    return type(cls.__name__, (cls,), {"is_last_bar_of_data": is_last_bar_of_data,
                                       "__module__": cls.__module__})


@dataclass
class LiveResult:
    """What one ``run_live`` call did."""

    sessions: List[str] = field(default_factory=list)
    trades: List[dict] = field(default_factory=list)
    cash: float = 0.0
    value: float = 0.0
    log_file: Optional[Path] = None
    broker: Any = None


def next_sessions(calendar: str, after: Optional[str], first: str, n: int) -> pd.DataFrame:
    """The next ``n`` sessions (UTC open/close) on or after ``first`` and strictly after ``after``."""
    start = pd.Timestamp(first)
    if after:
        start = max(start, pd.Timestamp(after) + pd.Timedelta(days=1))
    sched = sessions(calendar, start, start + pd.Timedelta(days=10 + 2 * n))
    return sched.iloc[:n]


def wait_until_open(calendar: str, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                    sleep: Callable[[float], None] = _time.sleep, lead_s: float = 60.0) -> pd.Timestamp:
    """Sleep until ``lead_s`` before the next session opens (returns its UTC open; no wait if open now)."""
    t = pd.Timestamp(now())
    sched = sessions(calendar, t.tz_convert(None).normalize() - pd.Timedelta(days=1),
                     t.tz_convert(None).normalize() + pd.Timedelta(days=10))
    for _, row in sched.iterrows():
        if row["close"] > t:
            wait = (row["open"] - t).total_seconds() - lead_s
            if wait > 0:
                log.info("next session opens %s; sleeping %.0f s", row["open"], wait)
                sleep(wait)
            return row["open"]
    raise RuntimeError(f"calendar {calendar}: no session in the next 10 days")


def _twelvedata_feed(cfg: dict, last: Optional[str], max_sessions: int, interval: int,
                     clock: Optional[Callable[[], Any]], sleep: Optional[Callable[[float], None]],
                     feed_kwargs: dict) -> tuple:
    """The live TwelveData feed for the next ``max_sessions`` sessions (waits for the next open)."""
    from mltrade.calendars import calendar_for_symbol, timezone_of
    from mltrade.feeds.twelvedata import client_from_config
    from mltrade.feeds.twelvedata_feed import TwelveDataFeed

    lv = cfg["live"]
    exchange = calendar_for_symbol(lv["symbol"])
    kw = dict(feed_kwargs)
    kw.setdefault("poll_delay", float(cfg.get("twelvedata", {}).get("poll_delay", 2.0)))
    client = kw.pop("client", None) or client_from_config(cfg)     # fails early without an API key
    now = clock or (lambda: pd.Timestamp.now(tz="UTC"))
    opened = wait_until_open(exchange, now=now, sleep=sleep or _time.sleep)
    first = opened.tz_convert(timezone_of(exchange)).date().isoformat()
    todo = next_sessions(exchange, last, first, max_sessions)
    feed = TwelveDataFeed(symbol=lv["symbol"], td_interval=f"{interval}min", live=True, client=client,
                          clock=clock, sleep=sleep, start=todo["open"].iloc[0],
                          live_until=todo["close"].iloc[-1]
                          + pd.Timedelta(seconds=float(lv["close_grace_s"])),
                          **kw)
    return feed, [d.date().isoformat() for d in todo.index]


def setup_logging(log_file: Path) -> logging.Handler:
    """Log ``mltrade.live`` to ``log_file`` (secrets masked)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    h = logging.FileHandler(log_file, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    h.addFilter(SecretFilter())
    log.addHandler(h)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return h


def make_broker(venue: str, cfg: dict, journal: OrderJournal, risk: RiskGuard, notifier: Notifier,
                live: bool, base_url: Optional[str] = None, code: Any = None, credentials: Any = None) -> Any:
    """Paper broker or a SeleniumBroker on the venue's store."""
    lv = cfg["live"]
    cash = float(cfg.get("backtest", {}).get("cash", 10_000.0))
    fee = float(cfg.get("broker", {}).get("commission_fixed", 0.0))
    if venue == "paper":
        from mltrade.live.paper import PaperBroker
        return PaperBroker(cash=cash, commission_fixed=fee, risk=risk, notifier=notifier, journal=journal)
    from mltrade.live.store import SeleniumStore
    url = base_url or lv["base_urls"][venue]
    store = SeleniumStore.instance(
        venue, url, credentials=credentials, code=code or lv["twofa_source"], driver_path=lv["driver_path"],
        chromium_path=lv["chromium_path"], headless=lv["headless"], timeout=lv["timeout"],
        confirm_timeout=lv["confirm_timeout"], screenshots_dir=lv["screenshots_dir"])
    return store.getbroker(journal=journal, risk=risk, notifier=notifier, live=live, confirm=lv["confirm"],
                           cash=cash, commission_fixed=fee, on_unknown=lv["on_unknown"],
                           adopt_stop=float(lv["adopt_stop"]), stop_retries=int(lv["stop_retries"]),
                           on_stop_failure=lv["on_stop_failure"])


def run_live(cfg: dict, strategy: str, venue: str = "paper", feed: str = "sample", max_sessions: int = 1,
             live: bool = False, speed: Optional[float] = None, base_url: Optional[str] = None,
             code: Any = None, credentials: Any = None, on_bar: Optional[Callable[[Any], None]] = None,
             strategy_params: Optional[dict] = None, clock: Optional[Callable[[], Any]] = None,
             sleep: Optional[Callable[[float], None]] = None,
             feed_kwargs: Optional[dict] = None) -> LiveResult:
    """Run ``max_sessions`` sessions of ``strategy`` on ``venue`` with ``feed``; resumes after restarts.

    ``clock``/``sleep``/``feed_kwargs`` (e.g. ``client=``) reach the live TwelveData feed (tests use
    a virtual clock and a loopback server).
    """
    from mltrade.analyzers import KnockoutTrades
    from mltrade.backtest import strategy_kwargs
    from mltrade.strategies.registry import get_strategy

    if venue not in VENUES:
        raise ValueError(f"venue: expected one of {VENUES}, got {venue!r}")
    if feed not in FEEDS:
        raise ValueError(f"feed: expected one of {FEEDS}, got {feed!r}")
    if max_sessions < 1:
        raise ValueError(f"max_sessions: expected >= 1, got {max_sessions}")
    lv = cfg["live"]
    log_file = Path(lv["log_file"])
    handler = setup_logging(log_file)
    journal = OrderJournal(lv["journal_path"], venue)
    try:
        risk = RiskGuard(RiskLimits.from_config(lv))
        notifier = Notifier.from_config(lv.get("notify", {}))
        cls = get_strategy(strategy)
        kwargs = strategy_kwargs(cls, cfg, strategy_params)
        if "stake" in dict(cls.params._getitems()) and kwargs.get("stake") is None and risk.limits.max_stake:
            kwargs["stake"] = risk.limits.max_stake     # never ask for more than the risk limit allows
        exchange = cfg.get("backtest", {}).get("exchange", "XNAS")
        interval = int(cfg.get("backtest", {}).get("interval", 5))
        last = journal.get_state("last_session")
        if feed == "sample":
            from mltrade.feeds.sample import sample_intraday
            todo = next_sessions(exchange, last, lv["replay_start"], max_sessions)
            if todo.empty:
                raise ValueError(f"live.replay_start: no sample sessions left after {last}")
            days = [d.date().isoformat() for d in todo.index]
            bars = sample_intraday(days[0], days[-1], seed=int(cfg.get("backtest", {}).get("seed", 42)),
                                   interval=interval)
            data = ReplayData(dataframe=bars, exchange=exchange, interval=interval,
                              speed=lv["replay_speed"] if speed is None else speed, on_bar=on_bar)
        else:
            data, days = _twelvedata_feed(cfg, last, max_sessions, interval, clock, sleep, feed_kwargs or {})
            exchange = data.p.exchange
        log.info("live run: strategy %s, venue %s (%s), feed %s, sessions %s (resuming after %s)",
                 strategy, venue, "LIVE" if live else "dry run" if venue != "paper" else "paper", feed,
                 days, last)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(data, name="index")
        broker = make_broker(venue, cfg, journal, risk, notifier, live, base_url, code, credentials)
        if hasattr(broker, "setdata"):
            broker.setdata(data)
        cerebro.broker = broker
        cerebro.addstrategy(live_strategy(cls), **kwargs)
        cerebro.addanalyzer(KnockoutTrades, _name="ko_trades")
        cerebro.addanalyzer(SessionCheckpoint, _name="sessions", journal=journal)
        strat = cerebro.run()[0]
        notifier.flush(timeout=5.0)
        trades = [dict(rt) for rt in getattr(broker, "roundtrips", [])]
        res = LiveResult(sessions=list(strat.analyzers.sessions.done), trades=trades, cash=broker.getcash(),
                         value=broker.getvalue(), log_file=log_file, broker=broker)
        log.info("live run finished: %d sessions, %d round trips, value %.2f", len(res.sessions),
                 len(trades), res.value)
        return res
    except Exception as e:
        log.error("live run failed: %s", mask(str(e).splitlines()[0] if str(e) else type(e).__name__))
        raise
    finally:
        journal.close()
        log.removeHandler(handler)
        handler.close()
