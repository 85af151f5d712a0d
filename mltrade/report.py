"""The backtest report: one self-contained HTML file with PNG plots, plus summary.json and trades.csv.

``write_report`` is called at the end of every backtest and by ``mltrade report RUN_DIR``
(which rebuilds the HTML from the files a run left). Strategies and overlays add
their own tables and plots through ``extra_sections`` and ``extra_figures``.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mltrade.analyzers import TRADE_COLUMNS, export_csv, export_json  # noqa: E402
from mltrade.io import atomic_write_text  # noqa: E402

SUMMARY_FIELDS = ["strategy", "model_id", "out_of_sample", "oos_start", "data", "synthetic_intraday", "start",
                  "end", "bars", "start_cash", "final_value", "total_return", "cagr", "max_drawdown", "sharpe",
                  "sortino", "trades", "win_rate", "knockouts", "stops", "session_end_exits", "avg_leverage",
                  "fees", "financing", "exposure", "buy_and_hold_return"]
#: rows of the baseline table; the counts print as integers
BASELINE_ROWS = ["total_return", "cagr", "max_drawdown", "sharpe", "trades", "win_rate", "knockouts"]
COUNT_ROWS = {"trades", "knockouts", "stops", "wins", "bars"}
PERCENT_ROWS = {"total_return", "cagr", "max_drawdown", "win_rate", "exposure", "buy_and_hold_return"}
#: columns of equity.csv beside the strategy's: one value column per baseline
BASELINE_VALUE = "value_{}"

#: the report footer: how every figure is computed (docs/metrics.md says the same at length)
CONVENTIONS = (
    "<h2>How the figures are computed</h2><ul>"
    "<li><b>Daily returns</b> are the returns of the account value at each session's last bar; the first "
    "session's return is taken against the start cash.</li>"
    "<li><b>Sharpe</b> = mean / standard deviation (ddof 1) of the daily returns × √252; <b>Sortino</b> = "
    "mean / downside deviation × √252, the downside deviation being √(Σ min(r, 0)² / n) over all n daily "
    "returns.</li>"
    "<li><b>Total return</b> = final value / start cash − 1; <b>CAGR</b> = (final / start cash)^(365.25 / "
    "calendar days from the first to the last bar) − 1.</li>"
    "<li><b>Max drawdown</b> = the lowest value / running peak − 1 over every bar (intraday, not only at "
    "session closes). <b>Exposure</b> = share of bars with a position.</li>"
    "<li><b>Significance</b>: 95 % stationary-bootstrap intervals (Politis–Romano, Politis–White block "
    "length) of the Sharpe ratio and the total return of the daily returns; Hansen's SPA test (consistent "
    "p-value) of the strategy against each baseline on the same sessions, H0: no better than the baseline.</li>"
    "<li><b>Files</b>: equity.csv holds every bar's value (strategy and baselines), cash, index close and "
    "position flag, trades.csv every round trip (with the decision's provenance where the strategy gives "
    "it), baseline_trades.csv the baselines' round trips: every figure above can be recomputed from them.</li>"
    "</ul>")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(title: str, b64: str) -> str:
    return f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" src="data:image/png;base64,{b64}"/>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.2f}"
    return html.escape(str(v))


def monthly_returns(equity: pd.DataFrame) -> pd.DataFrame:
    """Monthly returns (rows: years, columns: months 1..12, plus the year)."""
    month_end = equity["value"].resample("ME").last().dropna()
    first = equity["value"].iloc[0]
    rets = month_end.pct_change()
    rets.iloc[0] = month_end.iloc[0] / first - 1.0
    table = pd.DataFrame({"year": rets.index.year, "month": rets.index.month, "ret": rets.values})
    out = table.pivot(index="year", columns="month", values="ret").reindex(columns=range(1, 13))
    yearly = equity["value"].resample("YE").last()
    out["year"] = (yearly / yearly.shift(1).fillna(first) - 1.0).values
    return out


def _figures(equity: pd.DataFrame, trades: pd.DataFrame, start_cash: float, label=lambda t: t):
    daily = equity.groupby(equity.index.normalize()).last()
    figs = []
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(daily.index, daily["value"], label="strategy", lw=1.2)
    others = [c for c in daily.columns if c.startswith("value_")]
    for c in others:
        ax.plot(daily.index, daily[c], label=c[len("value_"):].replace("_", " "), lw=0.9, alpha=0.8)
    if not others:
        ax.plot(daily.index, start_cash * daily["close"] / daily["close"].iloc[0], label="buy and hold (index)",
                lw=1.0, alpha=0.8)
    ax.set_ylabel("account value")
    lows = daily[["value"] + others].min().min()
    ax.set_yscale("log" if lows > 0 else "linear")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figs.append((label("Equity vs the baselines (session closes)"), fig))
    fig, ax = plt.subplots(figsize=(10, 2.5))
    dd = drawdown(equity["value"])
    ddd = dd.groupby(dd.index.normalize()).min()
    ax.fill_between(ddd.index, ddd.values * 100, 0, color="tab:red", alpha=0.4)
    ax.set_ylabel("drawdown %")
    ax.grid(alpha=0.3)
    figs.append((label("Drawdown (per bar, daily minimum)"), fig))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(daily.index, daily["close"], color="black", lw=0.8, label="index close")
    if len(trades):
        t = trades.copy()
        t["entry_time"] = pd.to_datetime(t["entry_time"])
        t["exit_time"] = pd.to_datetime(t["exit_time"])
        for d, marker, color in (("long", "^", "tab:green"), ("short", "v", "tab:orange")):
            sel = t[t["direction"] == d]
            ax.scatter(sel["entry_time"], sel["entry_underlying"], marker=marker, s=14, color=color,
                       label=f"{d} entry", zorder=3)
        ex = t[t["exit_reason"].isin(["signal", "session_end", "stop"])]
        ax.scatter(ex["exit_time"], ex["exit_underlying"], marker="x", s=10, color="tab:blue", label="exit",
                   zorder=3)
        ko = t[t["exit_reason"] == "knockout"]
        ax.scatter(ko["exit_time"], ko["exit_underlying"], marker="X", s=40, color="tab:red",
                   label="knock-out", zorder=4)
    ax.legend(fontsize=8, ncol=5)
    ax.grid(alpha=0.3)
    figs.append((label("Index with entries, exits and knock-outs"), fig))
    fig, ax = plt.subplots(figsize=(10, 3))
    if len(trades):
        ax.hist(trades["pnl"], bins=min(60, max(10, len(trades) // 5)), color="tab:blue", alpha=0.8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("P&L per trade")
    figs.append((label("P&L per trade"), fig))
    return figs


def drawdown(values: pd.Series) -> pd.Series:
    """Per-bar drawdown: value / running peak - 1."""
    return values / values.cummax() - 1.0


def _table(df: pd.DataFrame, pct: bool = False) -> str:
    if pct:
        return df.to_html(float_format=lambda v: f"{v * 100:.2f}%", na_rep="", border=0)
    return df.to_html(float_format=lambda v: f"{v:,.4f}", na_rep="", border=0)


def _cell(row: str, v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if row in COUNT_ROWS:
        return f"{int(round(float(v))):d}"
    if row in PERCENT_ROWS:
        return f"{float(v) * 100:+.2f}%" if row != "win_rate" else f"{float(v) * 100:.1f}%"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):,.3f}"
    return html.escape(str(v))


def baseline_table_html(summary: dict) -> str:
    """The one table of the strategy beside its baselines (counts as integers, SPA p-values)."""
    bases = summary.get("baselines") or {}
    sig = summary.get("significance") or {}
    cols = ["strategy"] + list(bases)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in BASELINE_ROWS:
        vals = [summary.get(row)] + [b.get(row) for b in bases.values()]
        body.append(f"<tr><th>{row.replace('_', ' ')}</th>" + "".join(f"<td>{_cell(row, v)}</td>" for v in vals)
                    + "</tr>")
    if sig.get("spa_pvalue"):
        ps = sig["spa_pvalue"]
        body.append("<tr><th>SPA p (strategy better?)</th><td></td>" + "".join(
            f"<td>{'' if ps.get(k) is None else f'{ps[k]:.3f}'}</td>" for k in bases) + "</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.6em 1em;border-radius:4px}
.headline{font-size:1.15em}.sig{color:#444}
img{max-width:100%}footer{margin-top:2em;color:#444;font-size:13px}"""


def write_report(run_dir: Union[str, Path], summary: dict, trades: pd.DataFrame, equity: pd.DataFrame,
                 extra_sections: Sequence[Tuple[str, str]] = (), extra_figures: Iterable[Tuple[str, object]] = (),
                 baselines: Optional[dict] = None, baseline_equity: Optional[dict] = None,
                 baseline_trades: Optional[dict] = None) -> Path:
    """Write ``report.html``, ``summary.json``, ``trades.csv``, ``equity.csv`` (and ``baseline_trades.csv``).

    ``equity`` is the per-bar curve (value, cash, close, in_position); ``baselines`` maps a
    baseline's name to its summary, ``baseline_equity`` to its per-bar curve on the same bars
    (written as ``value_<name>`` columns), ``baseline_trades`` to its round trips.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = dict(summary)
    if baselines:
        summary["baselines"] = baselines
    export_json(summary, run_dir / "summary.json")
    export_csv(trades, run_dir / "trades.csv")
    bars = equity.copy()
    for name, eq in (baseline_equity or {}).items():
        bars[BASELINE_VALUE.format(name)] = eq["value"].reindex(bars.index).to_numpy()
    bars.index.name = "datetime"
    export_csv(bars, run_dir / "equity.csv")
    if baseline_trades:
        frames = [t.assign(baseline=name) for name, t in baseline_trades.items()]
        export_csv(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                   run_dir / "baseline_trades.csv")
    if extra_sections:
        export_json([list(s) for s in extra_sections], run_dir / "sections.json")
    return render_html(run_dir, summary, trades, bars, extra_sections, extra_figures)


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


def render_html(run_dir: Path, summary: dict, trades: pd.DataFrame, equity: pd.DataFrame,
                extra_sections: Sequence[Tuple[str, str]] = (),
                extra_figures: Iterable[Tuple[str, object]] = ()) -> Path:
    """Render report.html from a run's summary, trades and per-bar equity (strategy and baseline values)."""
    in_sample = summary.get("out_of_sample") is False

    def label(title: str) -> str:
        return f"In-sample: {title}" if in_sample else title

    name = html.escape(str(summary.get("strategy", "")))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mltrade report: {name}"
             f"{' (in-sample)' if in_sample else ''}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(label('mltrade backtest'))}: {name}</h1>"]
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
                     "real open, high, low and close. Intraday results are illustrations, not evidence.</p>")
    parts.append(_headline(summary))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(summary[k])}</td></tr>"
                   for k in SUMMARY_FIELDS if summary.get(k) is not None)
    parts.append(f"<h2>{label('Summary')}</h2><table>{rows}</table>")
    if summary.get("baselines"):
        kind = summary.get("session_kind") or "intraday"
        parts.append(f"<h2>{label('Strategy beside baselines')} (same sessions, same certificates, "
                     f"{html.escape(kind)} sessions)</h2>" + baseline_table_html(summary))
    figs = _figures(equity, trades, float(summary.get("start_cash", equity["value"].iloc[0])), label)
    for title, fig in list(figs) + [(label(t), f) for t, f in extra_figures]:
        parts.append(_img(title, _png(fig)))
    parts.append(f"<h2>{label('Monthly returns')}</h2>" + _table(monthly_returns(equity), pct=True))
    for title, body in extra_sections:
        parts.append(f"<h2>{html.escape(label(title))}</h2>\n{body}")
    if len(trades):
        parts.append(f"<h2>{label(f'Trades (last 50 of {len(trades)}; all in trades.csv)')}</h2>" +
                     trades.tail(50).to_html(index=False, border=0, float_format=lambda v: f"{v:,.4f}"))
    parts.append(f"<footer>{CONVENTIONS}</footer></body></html>")
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path


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
