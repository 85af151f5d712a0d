"""The report of a live or paper run: report.html, summary.json and trades.csv, as for a backtest,
with the live-vs-simulation section (the same decisions re-run through ``KnockoutBroker``)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List

log = logging.getLogger("mltrade.live")


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
                      res: Any, days: List[str]) -> Path:
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


def simulation_gap(cfg: dict, strat: Any, res: Any) -> dict:
    """The run's decisions re-run on its bars through ``KnockoutBroker``, compared trade by trade."""
    from mltrade.live.simgap import compare, simulate
    rec = strat.analyzers.decisions
    data = strat.data
    sim = simulate(cfg, rec.frame(), rec.decisions, res.start_value, exchange=data.p.exchange,
                   interval=data.p.interval)
    return compare(res.trades, sim)

