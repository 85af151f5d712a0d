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
from mltrade.baselines.names import BASELINE_LABELS, baseline_label  # noqa: E402,F401
from mltrade.io import atomic_write_text  # noqa: E402

SUMMARY_FIELDS = ["strategy", "venue", "mode", "feed", "sessions", "model_id", "out_of_sample", "oos_start", "data",
                  "synthetic_intraday", "evidence", "start", "end", "bars", "start_cash", "final_value", "total_return", "cagr", "max_drawdown", "sharpe",
                  "sortino", "trades", "win_rate", "knockouts", "stops", "session_end_exits", "avg_leverage",
                  "fees", "financing", "exposure", "buy_and_hold_return"]
#: rows of the baseline table; the counts print as integers
BASELINE_ROWS = ["total_return", "cagr", "max_drawdown", "sharpe", "trades", "win_rate", "knockouts"]
COUNT_ROWS = {"trades", "knockouts", "stops", "wins", "bars", "session_end_exits", "signal_exits"}
PERCENT_ROWS = {"total_return", "cagr", "max_drawdown", "win_rate", "exposure", "buy_and_hold_return"}
#: percentages without a sign (shares, not returns)
SHARE_ROWS = {"win_rate", "exposure"}
MONEY_ROWS = {"start_cash", "final_value", "fees", "financing"}
#: how the summary table names its rows (summary.json keeps the keys)
SUMMARY_LABELS = {"model_id": "model", "out_of_sample": "out of sample", "oos_start": "holdout start",
                  "synthetic_intraday": "synthetic intraday bars", "start_cash": "start cash",
                  "final_value": "final value", "total_return": "total return", "cagr": "CAGR",
                  "max_drawdown": "max drawdown", "sharpe": "Sharpe", "sortino": "Sortino",
                  "win_rate": "win rate", "knockouts": "knock-outs", "session_end_exits": "session-end exits",
                  "avg_leverage": "average leverage", "buy_and_hold_return": "index return (buy and hold, no costs)"}
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


def _png(fig) -> str:
    w, h = fig.get_size_inches()
    if w < FIG_WIDTH:   # every chart (strategies' own too) at the page's full width, at its own height
        fig.set_size_inches(FIG_WIDTH, h)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(title: str, b64: str) -> str:
    return f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" src="data:image/png;base64,{b64}"/>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.2f}"
    return html.escape(str(v))


def summary_value(key: str, v) -> str:
    """One summary-table cell: returns and shares in %, counts as integers, money with 2 decimals."""
    if isinstance(v, bool):
        if key == "out_of_sample":
            return "yes" if v else "no: IN-SAMPLE"
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        items = [str(x) for x in v]
        if len(items) > 6:
            items = items[:3] + ["…"] + items[-2:] + [f"({len(v)} in all)"]
        return html.escape(", ".join(items)) or "none"
    if isinstance(v, (int, float, np.integer, np.floating)) and not (isinstance(v, float) and np.isnan(v)):
        if key in PERCENT_ROWS:
            return f"{float(v) * 100:.2f}%" if key in SHARE_ROWS else f"{float(v) * 100:+.2f}%"
        if key in COUNT_ROWS:
            return f"{int(round(float(v))):,d}"
        if key in MONEY_ROWS:
            return f"{float(v):,.2f}"
        if key in ("sharpe", "sortino", "avg_leverage"):
            return f"{float(v):.2f}"
    return _fmt(v)


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


#: chart width in inches (the page shows charts at full width); more trades than this get a window
FIG_WIDTH = 14
MAX_MARKED_TRADES = 300


def _date_axis(ax) -> None:
    ax.set_xlabel("date (exchange time)")
    ax.grid(alpha=0.3)


def _figures(equity: pd.DataFrame, trades: pd.DataFrame, start_cash: float, label=lambda t: t):
    daily = equity.groupby(equity.index.normalize()).tail(1)   # session closes, at their last bar's time
    figs = []
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 4.5))
    others = [c for c in daily.columns if c.startswith("value_")]
    # returns in % of the start cash, so stakes and compounding do not hide the shape
    ax.plot(daily.index, (daily["value"] / start_cash - 1) * 100, label="strategy", lw=1.4, color="black")
    for c in others:
        ax.plot(daily.index, (daily[c] / start_cash - 1) * 100, label=baseline_label(c[len("value_"):]),
                lw=0.9, alpha=0.8)
    if not others:
        ax.plot(daily.index, (daily["close"] / daily["close"].iloc[0] - 1) * 100, label="index (buy and hold)",
                lw=1.0, alpha=0.8)
    values = daily[["value"] + others] / start_cash
    if values.min().min() > 0 and values.max().max() / values.min().min() > 20:
        ax.set_yscale("symlog", linthresh=10)   # growth over decades: keep losses readable beside gains
    ax.set_ylabel("cumulative return (% of start cash)")
    ax.axhline(0, color="grey", lw=0.6)
    ax.legend(fontsize=8)
    _date_axis(ax)
    figs.append((label("Cumulative return vs the baselines (session closes)" if others else
                       "Cumulative return vs the index (session closes)"), fig))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3))
    dd = drawdown(equity["value"])
    ddd = dd.groupby(dd.index.normalize()).min()
    ax.fill_between(ddd.index, ddd.values * 100, 0, color="tab:red", alpha=0.35, label="strategy")
    for c in others:
        b = drawdown(equity[c].dropna())
        b = b.groupby(b.index.normalize()).min()
        ax.plot(b.index, b.values * 100, lw=0.9, alpha=0.85, label=baseline_label(c[len("value_"):]))
    ax.set_ylabel("drawdown (% below peak)")
    ax.legend(fontsize=8, loc="lower left")
    _date_axis(ax)
    figs.append((label("Drawdown (per bar, daily minimum)" + (", strategy and baselines" if others else "")), fig))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 4.5))
    window = ""
    t = trades.copy()
    line = equity
    if len(t):
        t["entry_time"] = pd.to_datetime(t["entry_time"])
        t["exit_time"] = pd.to_datetime(t["exit_time"])
        if len(t) > MAX_MARKED_TRADES:   # thousands of markers are a band: show the last trades at full detail
            t = t.tail(MAX_MARKED_TRADES // 3)
            lo = t["entry_time"].min().normalize()
            line = equity[equity.index >= lo]
            window = (f" (last {len(t)} of {len(trades):,} trades, from {lo.date()}; "
                      f"trades per month below)")
    line = line if len(line) <= 20_000 else line.groupby(line.index.normalize()).tail(1)
    ax.plot(line.index, line["close"], color="black", lw=0.8, label="index close")
    if len(t):
        for d, marker, color in (("long", "^", "tab:green"), ("short", "v", "tab:orange")):
            sel = t[t["direction"] == d]
            ax.scatter(sel["entry_time"], sel["entry_underlying"], marker=marker, s=22, color=color,
                       label=f"{d} entry", zorder=3)
        ex = t[t["exit_reason"].isin(["signal", "session_end", "stop"])]
        ax.scatter(ex["exit_time"], ex["exit_underlying"], marker="x", s=14, color="tab:blue", label="exit",
                   zorder=3)
        ko = t[t["exit_reason"] == "knockout"]
        ax.scatter(ko["exit_time"], ko["exit_underlying"], marker="X", s=50, color="tab:red",
                   label="knock-out", zorder=4)
    ax.set_ylabel("index level")
    ax.legend(fontsize=8, ncol=5)
    _date_axis(ax)
    figs.append((label("Index with entries, exits and knock-outs" + window), fig))
    if window:
        fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3))
        a = trades.assign(month=pd.to_datetime(trades["exit_time"]).dt.to_period("M").dt.to_timestamp())
        counts = a.pivot_table(index="month", columns="exit_reason", values="pnl", aggfunc="count").fillna(0)
        bottom = np.zeros(len(counts))
        for reason in counts.columns:
            ax.bar(counts.index, counts[reason].to_numpy(), width=25, bottom=bottom,
                   label=str(reason).replace("_", " "))
            bottom += counts[reason].to_numpy()
        ax.set_ylabel("trades per month")
        ax.legend(fontsize=8, ncol=4)
        _date_axis(ax)
        figs.append((label("Trades per month by exit reason"), fig))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3))
    if len(trades):
        r = pd.to_numeric(trades["return"], errors="coerce").dropna() * 100
        if len(r):
            lo, hi = np.percentile(r, [0.5, 99.5])
            ax.hist(r.clip(lo, hi), bins=min(80, max(10, len(r) // 5)), color="tab:blue", alpha=0.8)
    else:
        ax.text(0.5, 0.5, "no trades", transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("return per trade (% of the stake; outer 0.5 % of trades drawn at the edges)")
    ax.set_ylabel("trades")
    ax.grid(alpha=0.3)
    figs.append((label("Return per trade"), fig))
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
    cols = ["strategy"] + [baseline_label(b) for b in bases]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in BASELINE_ROWS:
        vals = [summary.get(row)] + [b.get(row) for b in bases.values()]
        body.append(f"<tr><th>{SUMMARY_LABELS.get(row, row.replace('_', ' '))}</th>"
                    + "".join(f"<td>{_cell(row, v)}</td>" for v in vals) + "</tr>")
    for key, what in (("spa_pvalue", "strategy better"), ("spa_pvalue_baseline_better", "baseline better")):
        ps = sig.get(key) or {}
        if any(v is not None for v in ps.values()):
            body.append(f"<tr><th>SPA p ({what}?)</th><td></td>" + "".join(
                f"<td>{'' if ps.get(k) is None else f'{ps[k]:.3f}'}</td>" for k in bases) + "</tr>")
    diffs = sig.get("sharpe_diff") or {}
    if any(v for v in diffs.values()):
        def _d(v):
            return "" if not v else f"{v['difference']:+.2f} [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}], p={v['pvalue']:.3f}"
        body.append(f"<tr><th>Sharpe difference, strategy − baseline ({sig.get('level', 0.95):.0%} interval, "
                    f"Ledoit-Wolf)</th><td></td>" + "".join(f"<td>{_d(diffs.get(k))}</td>" for k in bases) + "</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.6em 1em;border-radius:4px}
.headline{font-size:1.15em}.sig{color:#444}.scope{color:#333}.wide{overflow-x:auto}.trades{font-size:12px}.trades td{white-space:normal}
.heat td{text-align:center;min-width:3.5em}.ts td{min-width:6em}
img{width:100%;height:auto}footer{margin-top:2em;color:#444;font-size:13px}"""


#: tearsheet rows: (summary.json key, label, format) — "pct" fractions as %, "num" 2 decimals, "int", "h" hours
TEARSHEET_ROWS = [("calmar", "Calmar (CAGR / |max drawdown|)", "num"), ("volatility", "volatility (annualised)", "pct"),
                  ("skew", "skew (daily returns)", "num"), ("kurtosis", "excess kurtosis (daily returns)", "num"),
                  ("var_95", "daily VaR 95 % (historical)", "pct"), ("cvar_95", "daily CVaR 95 % (expected shortfall)", "pct"),
                  ("best_session", "best session", "pct"), ("worst_session", "worst session", "pct"),
                  ("positive_sessions", "sessions with a gain", "share"),
                  ("beta", "beta to the index", "num"), ("alpha", "alpha to the index (annualised)", "pct"),
                  ("correlation", "correlation with the index", "num"),
                  ("profit_factor", "profit factor (gross win / gross loss)", "num"),
                  ("expectancy", "expectancy (mean P&L per trade)", "money"),
                  ("expectancy_return", "expectancy (mean return per trade)", "pct"),
                  ("avg_win_return", "average win (return)", "pct"), ("avg_loss_return", "average loss (return)", "pct"),
                  ("avg_win", "average win (P&L)", "money"), ("avg_loss", "average loss (P&L)", "money"),
                  ("best_trade", "best trade (return)", "pct"), ("worst_trade", "worst trade (return)", "pct"),
                  ("max_win_streak", "longest winning streak (trades)", "int"),
                  ("max_loss_streak", "longest losing streak (trades)", "int"),
                  ("avg_trade_hours", "average trade duration (hours)", "h"),
                  ("median_trade_hours", "median trade duration (hours)", "h"),
                  ("max_trade_hours", "longest trade (hours)", "h")]


def _ts_cell(fmt: str, v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    v = float(v)
    return {"pct": f"{v * 100:+.2f}%", "share": f"{v * 100:.1f}%", "int": f"{int(round(v)):,d}",
            "money": f"{v:+,.2f}", "h": f"{v:,.1f}"}.get(fmt, f"{v:.2f}")


def tearsheet_html(sheets: dict) -> str:
    """The tearsheet table (strategy beside each baseline), the yearly returns and the worst drawdowns."""
    names = list(sheets)
    head = "".join(f"<th>{html.escape('strategy' if n == 'strategy' else baseline_label(n))}</th>" for n in names)
    rows = "".join(f"<tr><th>{html.escape(lab)}</th>" + "".join(
        f"<td>{_ts_cell(fmt, sheets[n].get(key))}</td>" for n in names) + "</tr>" for key, lab, fmt in TEARSHEET_ROWS)
    out = f"<table class='ts'><tr><th></th>{head}</tr>{rows}</table>"
    years = sorted({y for n in names for y in (sheets[n].get("yearly_returns") or {})})
    if years:
        yrows = "".join(f"<tr><th>{y}</th>" + "".join(
            f"<td>{_ts_cell('pct', (sheets[n].get('yearly_returns') or {}).get(y))}</td>" for n in names) + "</tr>"
            for y in years)
        out += f"<h3>Yearly returns</h3><table class='ts'><tr><th>year</th>{head}</tr>{yrows}</table>"
    for n in names:
        dds = sheets[n].get("drawdowns") or []
        if not dds:
            continue
        who = "strategy" if n == "strategy" else baseline_label(n)
        body = "".join(
            f"<tr><td>{i}</td><td>{html.escape(d['start'][:16])}</td><td>{html.escape(d['trough'][:16])}</td>"
            f"<td>{html.escape(d['recovery'][:16]) if d.get('recovery') else 'not recovered'}</td>"
            f"<td>{d['depth'] * 100:.2f}%</td><td>{d['length']:,d}</td><td>{d.get('sessions', 0):,d}</td></tr>"
            for i, d in enumerate(dds, 1))
        out += (f"<h3>Worst drawdowns: {html.escape(who)}</h3><table class='ts'><tr><th>#</th><th>start (peak)</th>"
                f"<th>trough</th><th>recovery</th><th>depth</th><th>length (days)</th><th>sessions</th></tr>"
                f"{body}</table>")
    return out


def _tearsheet_figures(bars: pd.DataFrame, start_cash: float, label=lambda t: t):
    """Rolling Sharpe and volatility (strategy and baselines) and the monthly returns heatmap."""
    from mltrade.analyzers.tearsheet import ROLLING_WINDOW, period_returns, rolling_stats

    figs = []
    cols = ["value"] + [c for c in bars.columns if c.startswith("value_")]
    sessions = int(bars.index.normalize().nunique())
    # about six months; a shorter run gets a quarter of its sessions (at least 10) so the chart exists
    window = ROLLING_WINDOW if sessions >= 2 * ROLLING_WINDOW else max(10, sessions // 4)
    rolls = {c: rolling_stats(bars[c], start_cash, window) for c in cols} if sessions >= 30 else {}
    if any(r["sharpe"].notna().any() for r in rolls.values()):
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(FIG_WIDTH, 5), sharex=True)
        for c, r in rolls.items():
            name = "strategy" if c == "value" else baseline_label(c[len("value_"):])
            kw = {"lw": 1.3, "color": "black"} if c == "value" else {"lw": 0.9, "alpha": 0.8}
            a1.plot(r.index, r["sharpe"], label=name, **kw)
            a2.plot(r.index, r["volatility"] * 100, label=name, **kw)
        a1.axhline(0, color="grey", lw=0.6)
        a1.set_ylabel("Sharpe (annualised)")
        a2.set_ylabel("volatility (% a year)")
        a1.legend(fontsize=8, ncol=4)
        a1.grid(alpha=0.3)
        _date_axis(a2)
        figs.append((label(f"Rolling Sharpe and volatility ({window} sessions)"), fig))
    m = period_returns(bars["value"], start_cash, "ME")
    if len(m):
        grid = pd.DataFrame({"y": m.index.year, "m": m.index.month, "r": m.values * 100}).pivot(
            index="y", columns="m", values="r").reindex(columns=range(1, 13))
        fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.8 + 0.42 * len(grid)))
        lim = max(float(np.nanpercentile(np.abs(grid.to_numpy()), 95)), 0.5)
        im = ax.imshow(grid.to_numpy(), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
        for (i, j), v in np.ndenumerate(grid.to_numpy()):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
        ax.set_yticks(range(len(grid)), [str(y) for y in grid.index])
        ax.set_xlabel("month")
        ax.set_ylabel("year")
        fig.colorbar(im, ax=ax, label="monthly return (%)", fraction=0.02)
        figs.append((label("Monthly returns (%, strategy)"), fig))
    return figs


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


#: the trade table's columns on the page (trades.csv holds them all) and their headings
TRADE_VIEW = [("entry_time", "entry"), ("direction", "direction"), ("kind", "product"), ("barrier", "barrier"),
              ("size", "size"), ("entry_price", "bought at"), ("exit_time", "exit"), ("exit_price", "sold at"),
              ("exit_reason", "exit reason"), ("fees", "fees"), ("pnl", "P&L"), ("return", "return"),
              ("leverage", "leverage"), ("decision_source", "decided by"), ("agreement", "agreement"),
              ("llm_action", "LLM")]


def trades_html(trades: pd.DataFrame) -> str:
    """The report's trade table: readable columns, times without the ISO 'T', sizes as counts, P&L in money."""
    cols = [(c, h) for c, h in TRADE_VIEW if c in trades.columns and trades[c].notna().any()
            and not (trades[c].astype(str) == "").all()]

    def cell(c: str, v) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if c in ("entry_time", "exit_time"):
            return html.escape(str(v).replace("T", " ")[:16])
        if c == "size":
            f = float(v)
            return f"{f:,.0f}" if f.is_integer() else f"{f:,.4f}"
        if c == "return":
            return f"{float(v) * 100:+.2f}%"
        if c == "pnl":
            return f"{float(v):+,.2f}"
        if c in ("barrier", "fees", "entry_price", "exit_price", "leverage"):
            return f"{float(v):,.2f}"
        if c == "agreement":
            return f"{float(v) * 100:.0f}%"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in cols)
    rows = "".join("<tr>" + "".join(f"<td>{cell(c, r[c])}</td>" for c, _ in cols) + "</tr>"
                   for _, r in trades.iterrows())
    return f"<table class='trades'><tr>{head}</tr>{rows}</table>"


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
