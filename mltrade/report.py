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

from mltrade.analyzers import export_csv, export_json, trades_frame  # noqa: E402
from mltrade.io import atomic_write_text  # noqa: E402

SUMMARY_FIELDS = ["strategy", "data", "synthetic_intraday", "start", "end", "bars", "start_cash",
                  "final_value", "total_return", "cagr", "max_drawdown", "sharpe", "sortino", "trades",
                  "win_rate", "knockouts", "stops", "session_end_exits", "avg_leverage", "fees",
                  "financing", "exposure", "buy_and_hold_return"]


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


def _figures(equity: pd.DataFrame, trades: pd.DataFrame, start_cash: float):
    daily = equity.groupby(equity.index.normalize()).last()
    figs = []
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(daily.index, daily["value"], label="strategy", lw=1.2)
    ax.plot(daily.index, start_cash * daily["close"] / daily["close"].iloc[0], label="buy and hold (index)",
            lw=1.0, alpha=0.8)
    ax.set_ylabel("account value")
    ax.set_yscale("log" if daily["value"].min() > 0 else "linear")
    ax.legend()
    ax.grid(alpha=0.3)
    figs.append(("Equity vs buy-and-hold of the index", fig))
    fig, ax = plt.subplots(figsize=(10, 2.5))
    dd = equity["value"] / equity["value"].cummax() - 1.0
    ddd = dd.groupby(dd.index.normalize()).min()
    ax.fill_between(ddd.index, ddd.values * 100, 0, color="tab:red", alpha=0.4)
    ax.set_ylabel("drawdown %")
    ax.grid(alpha=0.3)
    figs.append(("Drawdown", fig))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(daily.index, daily["close"], color="black", lw=0.8, label="index close")
    if len(trades):
        t = trades.copy()
        t["entry_time"] = pd.to_datetime(t["entry_time"])
        t["exit_time"] = pd.to_datetime(t["exit_time"])
        for d, marker, color in (("long", "^", "tab:green"), ("short", "v", "tab:orange")):
            s = t[t["direction"] == d]
            ax.scatter(s["entry_time"], s["entry_underlying"], marker=marker, s=14, color=color,
                       label=f"{d} entry", zorder=3)
        ex = t[t["exit_reason"].isin(["signal", "session_end", "stop"])]
        ax.scatter(ex["exit_time"], ex["exit_underlying"], marker="x", s=10, color="tab:blue", label="exit",
                   zorder=3)
        ko = t[t["exit_reason"] == "knockout"]
        ax.scatter(ko["exit_time"], ko["exit_underlying"], marker="X", s=40, color="tab:red",
                   label="knock-out", zorder=4)
    ax.legend(fontsize=8, ncol=5)
    ax.grid(alpha=0.3)
    figs.append(("Index with entries, exits and knock-outs", fig))
    fig, ax = plt.subplots(figsize=(10, 3))
    if len(trades):
        ax.hist(trades["pnl"], bins=min(60, max(10, len(trades) // 5)), color="tab:blue", alpha=0.8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("P&L per trade")
    figs.append(("P&L per trade", fig))
    return figs


def _table(df: pd.DataFrame, pct: bool = False) -> str:
    if pct:
        return df.to_html(float_format=lambda v: f"{v * 100:.2f}%", na_rep="", border=0)
    return df.to_html(float_format=lambda v: f"{v:,.4f}", na_rep="", border=0)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.6em 1em;border-radius:4px}
img{max-width:100%}"""


def write_report(run_dir: Union[str, Path], summary: dict, trades: pd.DataFrame, equity: pd.DataFrame,
                 extra_sections: Sequence[Tuple[str, str]] = (), extra_figures: Iterable[Tuple[str, object]] = (),
                 baselines: Optional[dict] = None) -> Path:
    """Write ``report.html``, ``summary.json``, ``trades.csv`` and ``equity.csv`` into ``run_dir``.

    ``equity`` is the per-bar curve (value, cash, close, in_position); ``baselines`` maps a
    baseline's name to its summary (shown beside the strategy).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = dict(summary)
    if baselines:
        summary["baselines"] = baselines
    export_json(summary, run_dir / "summary.json")
    export_csv(trades, run_dir / "trades.csv")
    daily = equity.groupby(equity.index.normalize()).last()
    daily.index.name = "date"
    export_csv(daily, run_dir / "equity.csv")
    if extra_sections:
        export_json([list(s) for s in extra_sections], run_dir / "sections.json")
    return render_html(run_dir, summary, trades, equity, extra_sections, extra_figures)


def render_html(run_dir: Path, summary: dict, trades: pd.DataFrame, equity: pd.DataFrame,
                extra_sections: Sequence[Tuple[str, str]] = (),
                extra_figures: Iterable[Tuple[str, object]] = ()) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mltrade report: "
             f"{html.escape(str(summary.get('strategy', '')))}</title><style>{CSS}</style></head><body>",
             f"<h1>mltrade backtest: {html.escape(str(summary.get('strategy', '')))}</h1>"]
    if summary.get("synthetic_intraday"):
        parts.append("<p class='warn'><b>Synthetic intraday data.</b> The daily bars are the real NASDAQ "
                     "Composite; the 5-minute bars inside each day are generated (seeded) to match each day's "
                     "real open, high, low and close. Intraday results are illustrations, not evidence.</p>")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(summary[k])}</td></tr>"
                   for k in SUMMARY_FIELDS if k in summary)
    parts.append(f"<h2>Summary</h2><table>{rows}</table>")
    if summary.get("baselines"):
        keys = ["total_return", "cagr", "max_drawdown", "sharpe", "trades", "win_rate", "knockouts"]
        table = pd.DataFrame({"strategy": {k: summary.get(k) for k in keys},
                              **{n: {k: b.get(k) for k in keys} for n, b in summary["baselines"].items()}})
        parts.append("<h2>Strategy beside baselines (same period, same certificates)</h2>" + _table(table))
    figs = _figures(equity, trades, float(summary.get("start_cash", equity["value"].iloc[0])))
    for title, fig in list(figs) + list(extra_figures):
        parts.append(_img(title, _png(fig)))
    parts.append("<h2>Monthly returns</h2>" + _table(monthly_returns(equity), pct=True))
    for title, body in extra_sections:
        parts.append(f"<h2>{html.escape(title)}</h2>\n{body}")
    if len(trades):
        parts.append(f"<h2>Trades (last 50 of {len(trades)}; all in trades.csv)</h2>" + trades.tail(50).to_html(
            index=False, border=0, float_format=lambda v: f"{v:,.4f}"))
    parts.append("</body></html>")
    path = Path(run_dir) / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path


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
    trades = trades_frame(pd.read_csv(need[1]).to_dict("records"))
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
