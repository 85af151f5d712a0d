"""The live loop: sessions by the exchange calendar, restart-safe, logged to a file.

``run_live`` wires a feed, a strategy from the registry and a broker (paper:
:class:`~mltrade.live.paper.PaperBroker`; ig/traderepublic:
:class:`~mltrade.live.broker.SeleniumBroker`) into one backtrader run per
call. ``--feed sample`` replays the embedded sample bar by bar through
:class:`ReplayData` (a fast clock: ``speed`` times real time, 0 = no waiting),
so the whole loop runs offline. Each finished session is written to the
journal's state; a restart resumes with the next session. The paper account
(cash, positions) persists in the journal's file (:mod:`mltrade.live.account`)
unless ``reset``; every run writes report.html, summary.json and trades.csv
for the sessions it traded, like a backtest.
"""
from __future__ import annotations

import logging
import os
import time as _time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, List, Optional

import backtrader as bt
import pandas as pd

from mltrade.calendars import sessions
from mltrade.feeds.bars import IndexData
from mltrade.live.account import Account
from mltrade.live.credentials import SecretFilter, mask, protect_handlers
from mltrade.live.journal import OrderJournal, cursor_key
from mltrade.live.logfile import file_only
from mltrade.live.notify import Notifier
from mltrade.live.risk import RiskGuard, RiskLimits
from mltrade.live.simgap import DecisionRecorder

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
    """Writes each completed session to the journal state (``key``, see :func:`cursor_key`) after the strategy saw it."""

    params = (("journal", None), ("key", "last_session"))

    def start(self) -> None:
        self.done: List[str] = []

    def next(self) -> None:
        d = self.strategy.data
        if int(d.session_left[0]) == 0:
            day = d.datetime.date(0).isoformat()
            if not self.done or self.done[-1] != day:
                self.done.append(day)
                if self.p.journal is not None:
                    self.p.journal.set_state(self.p.key, day)
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
    start_value: float = 0.0
    run_dir: Optional[Path] = None                          #: report.html, summary.json, trades.csv
    refusals: List[tuple] = field(default_factory=list)     #: (day, reason) of risk-limit refusals
    llm_line: Optional[str] = None                          #: the LLM overlay's one-line summary, if on
    simulation_gap: Optional[dict] = None                   #: live vs KnockoutBroker, trade by trade


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


def _loopback(url: str) -> bool:
    from urllib.parse import urlparse
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def report_dir(cfg: dict) -> Path:
    """``[live] report_dir``; when empty ``reports/live/`` in the working directory while the journal is in
    the state directory (so reports stay in sight), else ``reports/`` next to the journal."""
    from mltrade.state import in_state_dir
    lv = cfg["live"]
    if lv.get("report_dir"):
        return Path(lv["report_dir"])
    journal = Path(lv["journal_path"])
    return Path("reports") / "live" if in_state_dir(journal) else journal.parent / "reports"


def report_title(venue: str, live: bool) -> str:
    """The heading of a live run's report: ``mltrade live (paper)``, ``(dry run)`` or ``(LIVE)``."""
    return f"mltrade live ({'paper' if venue == 'paper' else 'LIVE' if live else 'dry run'})"


def write_live_report(cfg: dict, strategy: str, venue: str, feed: str, live: bool, strat: Any,
                      res: LiveResult, days: List[str]) -> Path:
    """report.html, summary.json, trades.csv (and equity.csv) of a live/paper run, as for a backtest
    (with the LLM overlay's section and ``summary["llm"]`` when the overlay reviewed the decisions)."""
    from mltrade.analyzers import performance
    from mltrade.backtest import _extras
    from mltrade.report import write_report

    trades = strat.analyzers.ko_trades.to_frame()
    equity = strat.analyzers.equity.to_frame()
    summary = performance(equity, trades, res.start_value)
    mode = "paper" if venue == "paper" else ("live" if live else "dry run")
    summary.update(strategy=strategy, venue=venue, mode=mode, feed=feed, sessions=list(res.sessions),
                   synthetic_intraday=feed == "sample", data=f"live {feed} feed",
                   refusals=[f"{d} {r}" for d, r in res.refusals])
    overlay = getattr(strat.p, "overlay", None)
    if overlay is not None and hasattr(overlay, "summary"):
        summary["llm"] = overlay.summary(strategy=strat)
    sections, figures = _extras(strat)
    gap = simulation_gap(cfg, strat, res)
    summary["simulation_gap"] = gap
    from mltrade.live.simgap import section
    sections = [section(gap, "paper" if venue == "paper" else "venue")] + list(sections)
    res.simulation_gap = gap
    first, last = res.sessions[0], res.sessions[-1]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = report_dir(cfg) / f"{strategy}-{venue}-{first}_{last}-{stamp}"
    write_report(run_dir, summary, trades, equity, sections, figures, title=report_title(venue, live))
    log.info("report written to %s", run_dir / "report.html")
    return run_dir


def simulation_gap(cfg: dict, strat: Any, res: LiveResult) -> dict:
    """The run's decisions re-run on its bars through ``KnockoutBroker``, compared trade by trade."""
    from mltrade.live.simgap import compare, simulate
    rec = strat.analyzers.decisions
    data = strat.data
    sim = simulate(cfg, rec.frame(), rec.decisions, res.start_value, exchange=data.p.exchange,
                   interval=data.p.interval)
    return compare(res.trades, sim)


def setup_logging(log_file: Path) -> logging.Handler:
    """Log ``mltrade.live`` to ``log_file`` (secrets masked, also in the root logger's handlers)."""
    protect_handlers()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    from mltrade.live.logfile import LiveLogFile
    h = LiveLogFile(log_file, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    h.addFilter(SecretFilter())
    log.addHandler(h)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return h


def make_store(venue: str, cfg: dict, base_url: Optional[str] = None, code: Any = None,
               credentials: Any = None) -> Any:
    """The SeleniumStore of ``venue`` set from ``[live]`` (its profile from ``[live.profiles]``)."""
    from mltrade.live.profiles import load_profile
    from mltrade.live.store import SeleniumStore
    lv = cfg["live"]
    url = base_url or lv["base_urls"][venue]
    profile = load_profile(venue, lv.get("profiles", {}).get(venue) or None)
    return SeleniumStore.instance(
        venue, url, credentials=credentials, code=code or lv["twofa_source"], driver_path=lv["driver_path"],
        chromium_path=lv["chromium_path"], headless=lv["headless"], timeout=lv["timeout"],
        confirm_timeout=lv["confirm_timeout"], screenshots_dir=lv["screenshots_dir"],
        venue_kwargs={"profile": profile})


def make_broker(venue: str, cfg: dict, journal: OrderJournal, risk: RiskGuard, notifier: Notifier,
                live: bool, base_url: Optional[str] = None, code: Any = None, credentials: Any = None,
                account: Any = None) -> Any:
    """Paper broker (on ``account``, an :class:`~mltrade.live.account.Account`) or a SeleniumBroker."""
    lv = cfg["live"]
    cash = float(cfg.get("backtest", {}).get("cash", 10_000.0))
    fee = float(cfg.get("broker", {}).get("commission_fixed", 0.0))
    if venue == "paper":
        from mltrade.live.paper import PaperBroker
        b = cfg.get("broker", {})
        return PaperBroker(cash=cash, commission_fixed=fee,
                           commission_pct=float(b.get("commission_pct", 0.0)),
                           fractional=bool(b.get("fractional", False)), risk=risk, notifier=notifier,
                           journal=journal, account=account)
    store = make_store(venue, cfg, base_url, code, credentials)
    return store.getbroker(journal=journal, risk=risk, notifier=notifier, live=live, confirm=lv["confirm"],
                           cash=cash, commission_fixed=fee, on_unknown=lv["on_unknown"],
                           adopt_stop=float(lv["adopt_stop"]), stop_retries=int(lv["stop_retries"]),
                           on_stop_failure=lv["on_stop_failure"],
                           plausibility_factor=float(lv.get("plausibility_factor", 4.0)),
                           close_retries=int(lv.get("close_retries", 2)))


def preflight(cfg: dict, strategy: str, venue: str, source: str = "config",
              strategy_params: Optional[dict] = None, reset: bool = False) -> tuple:
    """Everything checked before a live run touches anything: the config's live numbers, the venue
    profile (selectors as CSS), the strategy's parameters and the journal (``reset``, paper: a damaged
    journal is set aside). Returns the strategy class and its keyword arguments."""
    from mltrade.backtest import strategy_kwargs
    from mltrade.live.journal import JournalError, check_journal, set_aside
    from mltrade.live.validate import check_strategy_kwargs, validate_live
    from mltrade.strategies.registry import get_strategy

    cls = get_strategy(strategy)
    kwargs = strategy_kwargs(cls, cfg, strategy_params)
    validate_live(cfg, venue, source)
    check_strategy_kwargs(kwargs, dict(cls.params._getitems()), source)
    path = cfg["live"]["journal_path"]
    try:
        check_journal(path, venue)
    except JournalError:
        if not (reset and venue == "paper"):
            raise
        set_aside(path)          # --reset: a new account; the damaged file is kept
    return cls, kwargs


def run_live(cfg: dict, strategy: str, venue: str = "paper", feed: str = "sample", max_sessions: int = 1,
             live: bool = False, speed: Optional[float] = None, base_url: Optional[str] = None,
             code: Any = None, credentials: Any = None, on_bar: Optional[Callable[[Any], None]] = None,
             strategy_params: Optional[dict] = None, clock: Optional[Callable[[], Any]] = None,
             sleep: Optional[Callable[[float], None]] = None,
             feed_kwargs: Optional[dict] = None, reset: bool = False, report: bool = True,
             llm: Optional[bool] = None, config_source: str = "config") -> LiveResult:
    """Run ``max_sessions`` sessions of ``strategy`` on ``venue`` with ``feed``; resumes after restarts.

    ``clock``/``sleep``/``feed_kwargs`` (e.g. ``client=``) reach the live TwelveData feed (tests use
    a virtual clock and a loopback server). ``reset`` starts the paper account afresh; ``report``
    writes report.html, summary.json and trades.csv into ``[live] report_dir``. ``llm`` (default
    ``[llm] enabled``) passes every decision through the LLM overlay: with real dates and prices on
    a live feed; on the replayed sample (history a model may remember) ``[llm] anonymize`` holds.

    Before anything is written, a browser started or a venue contacted: the whole setup is validated
    (:func:`~mltrade.live.validate.validate_live`, errors name ``config_source``, section and key), the
    journal checked (:func:`~mltrade.live.journal.check_journal`: never a silent reset) and locked for
    the run (:class:`~mltrade.live.runlock.RunLock`: one process per account), and backed up at the
    start and the end of the run (``<journal>.bak``).
    """
    from mltrade.analyzers import EquityCurve, KnockoutTrades
    from mltrade.backtest import strategy_kwargs
    from mltrade.strategies.registry import get_strategy

    if venue not in VENUES:
        raise ValueError(f"venue: expected one of {VENUES}, got {venue!r}")
    if feed not in FEEDS:
        raise ValueError(f"feed: expected one of {FEEDS}, got {feed!r}")
    if max_sessions < 1:
        raise ValueError(f"max_sessions: expected >= 1, got {max_sessions}")
    lv = cfg["live"]
    if live and venue != "paper" and feed == "sample" and not _loopback(base_url or lv["base_urls"][venue]):
        raise ValueError("feed: live orders on a real venue need a live feed (twelvedata), not the replayed "
                         "sample; the sample may only drive the local fake venue (--demo)")
    from mltrade.live.journal import backup_journal
    from mltrade.live.runlock import RunLock
    cls, kwargs = preflight(cfg, strategy, venue, config_source, strategy_params, reset)
    lock = RunLock(lv["journal_path"]).acquire()
    try:
        backup_journal(lv["journal_path"])
        log_file = Path(lv["log_file"])
        handler = setup_logging(log_file)
    except BaseException:
        lock.release()
        raise
    journal = OrderJournal(lv["journal_path"], venue, run_id=lock.run_id, lock=lock)
    account = Account(lv["journal_path"], venue)
    try:
        log.info("run %s (pid %d) holds the journal lock %s", lock.run_id, os.getpid(), lock.path)
        risk = RiskGuard(RiskLimits.from_config(lv))
        notifier = Notifier.from_config(lv.get("notify", {}))
        if llm if llm is not None else bool(cfg.get("llm", {}).get("enabled", False)):
            from mltrade.llm import build_overlay
            kwargs["overlay"] = build_overlay(cfg, live=feed != "sample")   # a missing API key fails here
            kwargs["context_candles"] = int(cfg["llm"]["candles"])
            ov = kwargs["overlay"]
            log.info("llm overlay on: mode %s, prompts %s", ov.responder.mode,
                     "anonymized" if ov.anonymize else "with real dates and prices")
        if "stake" in dict(cls.params._getitems()) and kwargs.get("stake") is None and risk.limits.max_stake:
            kwargs["stake"] = risk.limits.max_stake     # never ask for more than the risk limit allows
        exchange = cfg.get("backtest", {}).get("exchange", "XNAS")
        interval = int(cfg.get("backtest", {}).get("interval", 5))
        last = journal.get_state(cursor_key(venue))
        if feed == "sample":
            from mltrade.feeds.sample import load_daily, sample_intraday
            todo = next_sessions(exchange, last, lv["replay_start"], max_sessions)
            sample_end = load_daily().index[-1]
            todo = todo[todo.index <= sample_end]
            if todo.empty:
                if not last:
                    raise ValueError(f"live.replay_start: expected a date up to the replayed sample's end "
                                     f"{sample_end.date()}, got {lv['replay_start']}")
                raise ValueError(f"live.replay_start: the replayed sample ends {sample_end.date()} and the journal "
                                 f"{lv['journal_path']} has traded up to {last}: point [live] journal_path at a "
                                 f"new file to replay it again")
            if len(todo) < max_sessions:
                log.warning("the replayed sample ends %s: %d of the %d sessions asked for are left",
                            sample_end.date(), len(todo), max_sessions)
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
                 days, f"{last}" if last else "nothing: first run of this venue")
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(data, name="index")
        start_value: Optional[float] = None
        if venue == "paper":
            state = account.open(float(cfg.get("backtest", {}).get("cash", 10_000.0)), reset=reset)
            start_value = state.cash + sum(p.size * p.price for p in state.positions)   # at cost
            log.info("paper account: cash %.2f, %d open positions%s", state.cash, len(state.positions),
                     " (reset)" if reset else "")
        broker = make_broker(venue, cfg, journal, risk, notifier, live, base_url, code, credentials, account)
        if venue != "paper" and hasattr(broker, "venue_cash"):
            seen = account.load()      # the cash last seen at the venue: the plausibility guard's start
            broker.venue_cash = seen.cash if seen is not None else None
        if hasattr(broker, "setdata"):
            broker.setdata(data)
        cerebro.broker = broker
        cerebro.addstrategy(live_strategy(cls), **kwargs)
        cerebro.addanalyzer(KnockoutTrades, _name="ko_trades")
        cerebro.addanalyzer(EquityCurve, _name="equity")
        cerebro.addanalyzer(SessionCheckpoint, _name="sessions", journal=journal, key=cursor_key(venue))
        cerebro.addanalyzer(DecisionRecorder, _name="decisions")
        strat = cerebro.run()[0]
        if start_value is None:     # a venue broker learns its cash when it starts
            curve = strat.analyzers.equity.to_frame()
            start_value = float(curve["value"].iloc[0]) if len(curve) else float(broker.getcash())
        notifier.flush(timeout=5.0)
        trades = [dict(rt) for rt in getattr(broker, "roundtrips", [])]
        res = LiveResult(sessions=list(strat.analyzers.sessions.done), trades=trades, cash=broker.getcash(),
                         value=broker.getvalue(), log_file=log_file, broker=broker, start_value=start_value,
                         refusals=list(risk.refusals))
        if venue != "paper" and getattr(broker, "is_live", False):
            account.save(broker.getcash())        # the cash last seen at the venue, for `live status`
        overlay = kwargs.get("overlay")
        if overlay is not None and hasattr(overlay, "summary_line"):
            res.llm_line = overlay.summary_line()
            log.info(res.llm_line)
        for day, reason in res.refusals:      # the CLI sums them up on stdout, once
            file_only(logging.WARNING, "refused by the risk limits on %s: %s", day, reason)
        if report and res.sessions:
            res.run_dir = write_live_report(cfg, strategy, venue, feed, live, strat, res, days)
        log.info("live run finished: %d sessions, %d round trips, value %.2f", len(res.sessions),
                 len(trades), res.value)
        return res
    except Exception as e:
        # the log file keeps it; the caller (the CLI's `mltrade: error: ...`) says it on stderr, once
        file_only(logging.ERROR, "live run failed: %s",
                  mask(str(e).splitlines()[0] if str(e) else type(e).__name__))
        raise
    finally:
        journal.close()
        account.close()
        try:
            backup_journal(lv["journal_path"])     # the backup `check_journal` points to (still locked)
        except Exception as e:
            log.error("journal backup failed: %s", e)
        lock.release()
        log.removeHandler(handler)
        handler.close()
