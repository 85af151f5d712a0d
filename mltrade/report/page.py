"""The report page: report.html (self-contained, PNG charts inline) and the files beside it
(summary.json, trades.csv, equity.csv, baseline_trades.csv); ``mltrade report`` rebuilds the page
from those files."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

import pandas as pd

from mltrade.analyzers import TRADE_COLUMNS, export_csv, export_json
from mltrade.io import atomic_write_text
from mltrade.report.figures import _figures, _img, _png, _tearsheet_figures
from mltrade.report.tables import (SUMMARY_FIELDS, SUMMARY_LABELS, baseline_table_html, summary_value,
                                   tearsheet_html, trades_html)


DEFAULT_TITLE = "mltrade backtest"
#: columns of equity.csv beside the strategy's: one value column per baseline
BASELINE_VALUE = "value_{}"

#: the report footer: how every figure is computed (docs/metrics.md says the same at length)
CONVENTIONS = (
    "<h2>How the figures are computed</h2><ul>"
    "<li><b>Daily returns</b> are the returns of the account value at each session's last bar; the first "
    "session's return is taken against the start cash.</li>"
    "<li><b>Sharpe</b> = mean / standard deviation (ddof 1) of the daily returns × √P; <b>Sortino</b> = "
    "mean / downside deviation × √P, the downside deviation being √(Σ min(r, 0)² / n) over all n daily "
    "returns; P = sessions per year of the data's exchange calendar (periods per year in summary.json).</li>"
    "<li><b>Total return</b> = final value / start cash − 1; <b>CAGR</b> = (final / start cash)^(365.25 / "
    "calendar days from the first to the last bar) − 1.</li>"
    "<li><b>Max drawdown</b> = the lowest value / running peak − 1 over every bar (intraday, not only at "
    "session closes). <b>Exposure</b> = share of bars with a position.</li>"
    "<li><b>Significance</b>: 95 % studentized circular-block-bootstrap intervals (Ledoit & Wolf 2008) of the "
    "Sharpe ratio, the total return and the Sharpe difference to each baseline; Hansen's studentized SPA test "
    "(consistent p-value) of the strategy against each baseline on the same sessions, H0: no better than the "
    "baseline (p = 1 when its mean return is not above the baseline's). On the sample, summary.json's "
    "<i>evidence</i> says whether the figures rest on the real daily bars or on the synthetic intraday paths.</li>"
    "<li><b>Files</b>: equity.csv holds every bar's value (strategy and baselines), cash, index close and "
    "position flag, trades.csv every round trip (with the decision's provenance where the strategy gives "
    "it), baseline_trades.csv the baselines' round trips: every figure above can be recomputed from them.</li>"
    "</ul>")


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.6em 1em;border-radius:4px}
.headline{font-size:1.15em}.sig{color:#444}.scope{color:#333}.wide{overflow-x:auto}.trades{font-size:12px}.trades td{white-space:normal}
.heat td{text-align:center;min-width:3.5em}.ts td{min-width:6em}
img{width:100%;height:auto}footer{margin-top:2em;color:#444;font-size:13px}"""


def _baseline_trades_of(run_dir: Path) -> dict:
    path = Path(run_dir) / "baseline_trades.csv"
    if not path.is_file() or path.stat().st_size < 2:
        return {}
    t = pd.read_csv(path)
    return {str(k): g.drop(columns="baseline") for k, g in t.groupby("baseline")} if "baseline" in t else {}


def write_report(run_dir: Union[str, Path], summary: dict, trades: pd.DataFrame, equity: pd.DataFrame,
                 extra_sections: Sequence[Tuple[str, str]] = (), extra_figures: Iterable[Tuple[str, object]] = (),
                 baselines: Optional[dict] = None, baseline_equity: Optional[dict] = None,
                 baseline_trades: Optional[dict] = None, title: Optional[str] = None) -> Path:
    """Write ``report.html``, ``summary.json``, ``trades.csv``, ``equity.csv`` (and ``baseline_trades.csv``).

    ``equity`` is the per-bar curve (value, cash, close, in_position); ``baselines`` maps a
    baseline's name to its summary, ``baseline_equity`` to its per-bar curve on the same bars
    (written as ``value_<name>`` columns), ``baseline_trades`` to its round trips. ``title`` heads
    the page (default "mltrade backtest"; live runs: "mltrade live (paper)" ...); it is kept in
    summary.json (``report_title``) so ``mltrade report`` rebuilds the same page.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = dict(summary)
    if title:
        summary["report_title"] = str(title)
    if baselines:
        summary["baselines"] = baselines
    bars = equity.copy()
    for name, eq in (baseline_equity or {}).items():
        bars[BASELINE_VALUE.format(name)] = eq["value"].reindex(bars.index).to_numpy()
    bars.index.name = "datetime"
    if len(bars):
        from mltrade.analyzers.tearsheet import tearsheets
        summary["tearsheet"] = tearsheets(bars, float(summary.get("start_cash", bars["value"].iloc[0])), trades,
                                          baseline_trades)
    export_json(summary, run_dir / "summary.json")
    export_csv(trades, run_dir / "trades.csv")
    export_csv(bars, run_dir / "equity.csv")
    if baseline_trades:
        frames = [t.assign(baseline=name) for name, t in baseline_trades.items()]
        export_csv(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                   run_dir / "baseline_trades.csv")
    if extra_sections:
        export_json([list(s) for s in extra_sections], run_dir / "sections.json")
    return render_html(run_dir, summary, trades, bars, extra_sections, extra_figures)


def _evidence_sentence(summary: dict) -> str:
    """The run's ``evidence`` (mltrade.evidence) in one sentence inside the synthetic-data box."""
    ev = summary.get("evidence")
    if not ev:
        return ""
    return (f" <b>This run's evidence: {html.escape(str(ev))}</b> "
            f"({html.escape(str(summary.get('evidence_reason', '')))}).")


def _headline(summary: dict) -> str:
    sig = summary.get("significance") or {}
    parts = [f"Total return <b>{summary.get('total_return', 0.0):+.2%}</b>"]
    if sig.get("return_ci"):
        lo, hi = sig["return_ci"]
        parts.append(f"({sig.get('level', 0.95):.0%} interval {lo:+.1%} .. {hi:+.1%})")
    parts.append(f"· Sharpe <b>{summary.get('sharpe', 0.0):.2f}</b>")
    if sig.get("sharpe_ci"):
        lo, hi = sig["sharpe_ci"]
        parts.append(f"({lo:.2f} .. {hi:.2f})")
    out = f"<p class='headline'>{' '.join(parts)}</p>"
    if sig.get("words"):
        out += f"<p class='sig'>{html.escape(sig['words'])}</p>"
    return out


def _scope(summary: dict) -> str:
    """One sentence on what the figures may be taken as: out of sample, in-sample, a rule, a live run."""
    if summary.get("venue"):
        days = summary.get("sessions") or []
        what = (f"{html.escape(str(summary.get('mode', '')))} run on venue {html.escape(str(summary['venue']))}, "
                f"{html.escape(str(summary.get('feed', '')))} feed, {len(days)} session{'s' if len(days) != 1 else ''}"
                f" ({html.escape(', '.join(map(str, days[:3])))}{' ...' if len(days) > 3 else ''})")
        out = f"<p class='scope'>{what[:1].upper() + what[1:]}: the account's own trades, not a backtest.</p>"
        refusals = summary.get("refusals") or []
        if refusals:
            out += ("<p class='warn'><b>Refused by the risk limits:</b> "
                    + "; ".join(html.escape(str(r)) for r in refusals) + "</p>")
        return out
    if summary.get("out_of_sample") is True:
        return ""      # the out-of-sample sentence follows
    if summary.get("out_of_sample") is None and not summary.get("model_id"):
        return ("<p class='scope'>Rule strategy: no trained model, so no in-sample/out-of-sample split applies. "
                "Parameters chosen on these same dates (for example by a sweep) would make every figure "
                "in-sample.</p>")
    return ""


def _llm_note(summary: dict) -> str:
    llm = summary.get("llm")
    if not isinstance(llm, dict):
        return ""
    anon = (f"prompts anonymized (no dates, prices rescaled, seed {llm.get('anonymize_seed')})"
            if llm.get("anonymized") else "prompts with real dates and prices (anonymize off)")
    return (f"<p class='scope'>LLM overlay on: mode <b>{html.escape(str(llm.get('mode', '?')))}</b>, {anon}; "
            f"{llm.get('reviews', 0)} reviews, {llm.get('api_calls', 0)} API calls (details below).</p>")


def _warnings(summary: dict, in_sample: bool) -> list:
    """What the page says before any figure: an in-sample run, the model's holdout, synthetic intraday data."""
    parts = []
    if in_sample:
        parts.append(f"<p class='warn'><b>In-sample run.</b> The range reaches into the data model "
                     f"{html.escape(str(summary.get('model_id')))} was trained, validated or selected on (its "
                     f"holdout starts {html.escape(str(summary.get('oos_start')))}). These figures are not "
                     f"evidence of an edge.</p>")
    elif summary.get("model_id"):
        parts.append(f"<p>Out of sample: model {html.escape(str(summary['model_id']))}, holdout from "
                     f"{html.escape(str(summary.get('oos_start')))}; the baselines trade the same sessions.</p>")
    if summary.get("synthetic_intraday"):
        parts.append("<p class='warn'><b>Synthetic intraday data.</b> The daily bars are the real NASDAQ "
                     "Composite; the 5-minute bars inside each day are generated (seeded) to match each day's "
                     "real open, high, low and close by Brownian bridges, which add no intraday pattern of their own "
                     "but inherit each real day's shape (a day that closes at its high was, on the simulated path, "
                     "mostly rising all day). An intraday rule can profit from that knowledge of the close, "
                     "which no trader has: intraday results are illustrations, not evidence (docs/data.md)."
                 + _evidence_sentence(summary) + "</p>")
    return parts


def render_html(run_dir: Path, summary: dict, trades: pd.DataFrame, equity: pd.DataFrame,
                extra_sections: Sequence[Tuple[str, str]] = (),
                extra_figures: Iterable[Tuple[str, object]] = ()) -> Path:
    """Render report.html from a run's summary, trades and per-bar equity (strategy and baseline values)."""
    in_sample = summary.get("out_of_sample") is False

    def label(title: str) -> str:
        return f"In-sample: {title}" if in_sample else title

    name = html.escape(str(summary.get("strategy", "")))
    title = str(summary.get("report_title") or DEFAULT_TITLE)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}: {name}"
             f"{' (in-sample)' if in_sample else ''}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(label(title))}: {name}</h1>", str(summary.get("lead") or ""), _scope(summary)]
    parts += _warnings(summary, in_sample)
    parts.append(_llm_note(summary))
    parts.append(_headline(summary))
    rows = "".join(f"<tr><th>{html.escape(SUMMARY_LABELS.get(k, k.replace('_', ' ')))}</th>"
                   f"<td>{summary_value(k, summary[k])}</td></tr>"
                   for k in SUMMARY_FIELDS if summary.get(k) is not None)
    parts.append(f"<h2>{label('Summary')}</h2><table>{rows}</table>")
    if summary.get("baselines"):
        kind = summary.get("session_kind") or "intraday"
        parts.append(f"<h2>{label('Strategy beside baselines')} (same sessions, same certificates, "
                     f"{html.escape(kind)} sessions)</h2>" + baseline_table_html(summary))
    cash0 = float(summary.get("start_cash", equity["value"].iloc[0]))
    figs = _figures(equity, trades, cash0, label)
    sheets = summary.get("tearsheet")
    if not sheets and len(equity):
        from mltrade.analyzers.tearsheet import tearsheets
        sheets = tearsheets(equity, cash0, trades, _baseline_trades_of(run_dir))
    if sheets:
        parts.append(f"<h2>{label('Tearsheet')} (daily returns of session closes; definitions in docs/metrics.md)"
                     f"</h2>" + tearsheet_html(sheets))
    for title, fig in list(figs) + _tearsheet_figures(equity, cash0, label) + [(label(t), f) for t, f in extra_figures]:
        parts.append(_img(title, _png(fig)))
    for title, body in extra_sections:
        parts.append(f"<h2>{html.escape(label(title))}</h2>\n{body}")
    if len(trades):
        shown = f"last 50 of {len(trades):,}" if len(trades) > 50 else f"all {len(trades)}"
        parts.append(f"<h2>{label(f'Trades ({shown}; every column in trades.csv)')}</h2>"
                     f"<div class='wide'>{trades_html(trades.tail(50))}</div>")
    parts.append(f"<footer>{CONVENTIONS}</footer></body></html>")
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path


def write_strategy_report(run_dir: Union[str, Path], strategy, name: Optional[str] = None,
                          title: Optional[str] = None) -> Path:
    """The report of any finished backtrader run (any broker) that had mltrade's analyzers.

    ``strategy`` is what ``cerebro.run()`` returned; it needs an ``EquityCurve`` (or
    ``KnockoutStats``) and a ``KnockoutTrades`` analyzer. Writes the same files as
    ``mltrade backtest``, so ``mltrade report <run_dir>`` rebuilds the page from them.
    """
    from mltrade.analyzers.performance import EquityCurve, KnockoutTrades, performance

    found = {type(a): a for a in strategy.analyzers}
    curve = next((a for a in strategy.analyzers if isinstance(a, EquityCurve)), None)
    trades = found.get(KnockoutTrades)
    if curve is None or trades is None:
        raise ValueError("strategy: the run needs cerebro.addanalyzer(EquityCurve) and "
                         "cerebro.addanalyzer(KnockoutTrades) for a report")
    equity, rows = curve.to_frame(), trades.to_frame()
    start_cash = float(getattr(strategy.broker, "startingcash", equity["value"].iloc[0]))
    summary = performance(equity, rows, start_cash)
    summary["strategy"] = name or type(strategy).__name__
    return write_report(run_dir, summary, rows, equity, title=title)


def read_trades(path: Union[str, Path]) -> pd.DataFrame:
    """trades.csv of a run (the round-trip columns first, provenance columns kept)."""
    t = pd.read_csv(path)
    first = [c for c in TRADE_COLUMNS if c in t.columns]
    return t[first + [c for c in t.columns if c not in first]]


def rebuild(run_dir: Union[str, Path]) -> Path:
    """Re-render ``report.html`` from the summary.json, trades.csv and equity.csv a run left."""
    run_dir = Path(run_dir)
    need = [run_dir / n for n in ("summary.json", "trades.csv", "equity.csv")]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: not a run folder, missing {', '.join(missing)}")
    try:
        summary = json.loads(need[0].read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{need[0]}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    trades = read_trades(need[1])
    equity = pd.read_csv(need[2], index_col=0, parse_dates=True)
    sections = []
    if (run_dir / "sections.json").is_file():
        sections = [tuple(s) for s in json.loads((run_dir / "sections.json").read_text())]
    return render_html(run_dir, summary, trades, equity, sections)


def backtrader_plot(cerebro, path: Union[str, Path], **kwargs) -> Path:
    """Save backtrader's own chart of a finished run as PNG, headless.

    ``backtrader.plot`` switches matplotlib to TkAgg when imported, which fails
    without a display; this wrapper imports it, switches back to Agg and saves
    the first figure instead of showing it. (backtrader's BuySell observer marks
    fills at the certificate price, off the index's scale: use ``report.html``'s
    entry/exit chart for those.)
    """
    import warnings

    import backtrader.plot as btplot
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg", force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "FigureCanvasAgg is non-interactive"
        figs = cerebro.plot(plotter=btplot.Plot(**kwargs), iplot=False)
    fig = figs[0][0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close("all")
    return path
