"""The live run: one backtrader run of a strategy on a venue over the next sessions, restart-safe.

:func:`run_live` validates everything first (:func:`preflight`), holds the journal (one process per
account), wires a feed (:mod:`mltrade.live.scheduler`: the replayed sample or the live TwelveData
feed), a strategy from the registry and a broker (paper: :class:`~mltrade.live.paper.PaperBroker`;
ig/traderepublic: :class:`~mltrade.live.broker.SeleniumBroker`) into one cerebro, runs it and writes
the run's report (:mod:`mltrade.live.report`). The paper account (cash, positions) persists in the
journal's file (:mod:`mltrade.live.account`) unless ``reset``; each finished session is written to the
journal's state, so a restart resumes with the next session.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import backtrader as bt

from mltrade.live.account import Account
from mltrade.live.credentials import SecretFilter, mask, protect_handlers
from mltrade.live.journal import OrderJournal, cursor_key
from mltrade.live.logfile import file_only
from mltrade.live.notify import Notifier
from mltrade.live.report import write_live_report
from mltrade.live.risk import RiskGuard, RiskLimits
from mltrade.live.scheduler import SessionCheckpoint, sample_feed, twelvedata_feed
from mltrade.live.simgap import DecisionRecorder

log = logging.getLogger("mltrade.live")
VENUES = ("paper", "ig", "traderepublic")
FEEDS = ("sample", "twelvedata")


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


def _loopback(url: str) -> bool:
    from urllib.parse import urlparse
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


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
    lv = cfg["live"]
    _check_run_args(venue, feed, max_sessions, live, base_url or lv["base_urls"].get(venue, ""))
    cls, kwargs = preflight(cfg, strategy, venue, config_source, strategy_params, reset)
    lock, handler = _hold_journal(lv)
    journal = OrderJournal(lv["journal_path"], venue, run_id=lock.run_id, lock=lock)
    account = Account(lv["journal_path"], venue)
    try:
        log.info("run %s (pid %d) holds the journal lock %s", lock.run_id, os.getpid(), lock.path)
        risk = RiskGuard(RiskLimits.from_config(lv))
        notifier = Notifier.from_config(lv.get("notify", {}))
        _add_overlay(cfg, kwargs, llm, feed)
        if "stake" in dict(cls.params._getitems()) and kwargs.get("stake") is None and risk.limits.max_stake:
            kwargs["stake"] = risk.limits.max_stake     # never ask for more than the risk limit allows
        last = journal.get_state(cursor_key(venue))
        if feed == "sample":
            data, days = sample_feed(cfg, last, max_sessions, speed, on_bar)
        else:
            interval = int(cfg.get("backtest", {}).get("interval", 5))
            data, days = twelvedata_feed(cfg, last, max_sessions, interval, clock, sleep, feed_kwargs or {})
        log.info("live run: strategy %s, venue %s (%s), feed %s, sessions %s (resuming after %s)",
                 strategy, venue, "LIVE" if live else "dry run" if venue != "paper" else "paper", feed,
                 days, f"{last}" if last else "nothing: first run of this venue")
        start_value = _open_paper_account(cfg, account, reset) if venue == "paper" else None
        broker = make_broker(venue, cfg, journal, risk, notifier, live, base_url, code, credentials, account)
        strat = _cerebro(venue, data, broker, live_strategy(cls), kwargs, journal, account).run()[0]
        res = _result(strat, broker, risk, notifier, start_value, Path(lv["log_file"]))
        _after_run(cfg, strategy, venue, feed, live, strat, res, days, account, kwargs.get("overlay"), report)
        return res
    except Exception as e:
        # the log file keeps it; the caller (the CLI's `mltrade: error: ...`) says it on stderr, once
        file_only(logging.ERROR, "live run failed: %s",
                  mask(str(e).splitlines()[0] if str(e) else type(e).__name__))
        raise
    finally:
        _release_journal(lv, journal, account, lock, handler)


def _check_run_args(venue: str, feed: str, max_sessions: int, live: bool, url: str) -> None:
    """The venue, feed and session count asked for; live orders on a real venue need a live feed."""
    if venue not in VENUES:
        raise ValueError(f"venue: expected one of {VENUES}, got {venue!r}")
    if feed not in FEEDS:
        raise ValueError(f"feed: expected one of {FEEDS}, got {feed!r}")
    if max_sessions < 1:
        raise ValueError(f"max_sessions: expected >= 1, got {max_sessions}")
    if live and venue != "paper" and feed == "sample" and not _loopback(url):
        raise ValueError("feed: live orders on a real venue need a live feed (twelvedata), not the replayed "
                         "sample; the sample may only drive the local fake venue (--demo)")


def _hold_journal(lv: dict) -> Tuple[Any, logging.Handler]:
    """Lock the journal for the run (one process per account), back it up and log to ``[live] log_file``."""
    from mltrade.live.journal import backup_journal
    from mltrade.live.runlock import RunLock

    lock = RunLock(lv["journal_path"]).acquire()
    try:
        backup_journal(lv["journal_path"])
        return lock, setup_logging(Path(lv["log_file"]))
    except BaseException:
        lock.release()
        raise


def _release_journal(lv: dict, journal: OrderJournal, account: Account, lock: Any,
                     handler: logging.Handler) -> None:
    """Close the journal and the account, back the journal up (still locked), release the lock and the log."""
    from mltrade.live.journal import backup_journal

    journal.close()
    account.close()
    try:
        backup_journal(lv["journal_path"])     # the backup `check_journal` points to (still locked)
    except Exception as e:
        log.error("journal backup failed: %s", e)
    lock.release()
    log.removeHandler(handler)
    handler.close()


def _add_overlay(cfg: dict, kwargs: dict, llm: Optional[bool], feed: str) -> None:
    """The LLM overlay in the strategy's arguments when asked (``llm``, default ``[llm] enabled``)."""
    if not (llm if llm is not None else bool(cfg.get("llm", {}).get("enabled", False))):
        return
    from mltrade.llm import build_overlay
    kwargs["overlay"] = build_overlay(cfg, live=feed != "sample")   # a missing API key fails here
    kwargs["context_candles"] = int(cfg["llm"]["candles"])
    ov = kwargs["overlay"]
    log.info("llm overlay on: mode %s, prompts %s", ov.responder.mode,
             "anonymized" if ov.anonymize else "with real dates and prices")


def _open_paper_account(cfg: dict, account: Account, reset: bool) -> float:
    """Open (or ``reset``) the paper account; its value at cost at the start."""
    state = account.open(float(cfg.get("backtest", {}).get("cash", 10_000.0)), reset=reset)
    log.info("paper account: cash %.2f, %d open positions%s", state.cash, len(state.positions),
             " (reset)" if reset else "")
    return state.cash + sum(p.size * p.price for p in state.positions)   # at cost


def _cerebro(venue: str, data: Any, broker: Any, cls: type, kwargs: dict, journal: OrderJournal,
             account: Account) -> bt.Cerebro:
    """One cerebro: the feed, the broker (a venue broker starts from the cash last seen at the venue),
    the strategy, and the analyzers the report and the session checkpoints read."""
    from mltrade.analyzers import EquityCurve, KnockoutTrades

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data, name="index")
    if venue != "paper" and hasattr(broker, "venue_cash"):
        seen = account.load()      # the cash last seen at the venue: the plausibility guard's start
        broker.venue_cash = seen.cash if seen is not None else None
    if hasattr(broker, "setdata"):
        broker.setdata(data)
    cerebro.broker = broker
    cerebro.addstrategy(cls, **kwargs)
    cerebro.addanalyzer(KnockoutTrades, _name="ko_trades")
    cerebro.addanalyzer(EquityCurve, _name="equity")
    cerebro.addanalyzer(SessionCheckpoint, _name="sessions", journal=journal, key=cursor_key(venue))
    cerebro.addanalyzer(DecisionRecorder, _name="decisions")
    return cerebro


def _result(strat: Any, broker: Any, risk: RiskGuard, notifier: Notifier, start_value: Optional[float],
            log_file: Path) -> LiveResult:
    """What the run did (a venue broker learns its starting cash when it starts)."""
    if start_value is None:
        curve = strat.analyzers.equity.to_frame()
        start_value = float(curve["value"].iloc[0]) if len(curve) else float(broker.getcash())
    notifier.flush(timeout=5.0)
    trades = [dict(rt) for rt in getattr(broker, "roundtrips", [])]
    return LiveResult(sessions=list(strat.analyzers.sessions.done), trades=trades, cash=broker.getcash(),
                      value=broker.getvalue(), log_file=log_file, broker=broker, start_value=start_value,
                      refusals=list(risk.refusals))


def _after_run(cfg: dict, strategy: str, venue: str, feed: str, live: bool, strat: Any, res: LiveResult,
               days: List[str], account: Account, overlay: Any, report: bool) -> None:
    """Save the venue's cash for `live status`, log the overlay's line and the refusals, write the report."""
    if venue != "paper" and getattr(res.broker, "is_live", False):
        account.save(res.broker.getcash())        # the cash last seen at the venue, for `live status`
    if overlay is not None and hasattr(overlay, "summary_line"):
        res.llm_line = overlay.summary_line()
        log.info(res.llm_line)
    for day, reason in res.refusals:      # the CLI sums them up on stdout, once
        file_only(logging.WARNING, "refused by the risk limits on %s: %s", day, reason)
    if report and res.sessions:
        res.run_dir = write_live_report(cfg, strategy, venue, feed, live, strat, res, days)
    log.info("live run finished: %d sessions, %d round trips, value %.2f", len(res.sessions),
             len(res.trades), res.value)
