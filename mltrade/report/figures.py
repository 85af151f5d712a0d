"""The report's charts: cumulative return and drawdown beside the baselines, the index with the trades,
trades per month, returns per trade, rolling Sharpe and volatility, monthly returns; PNG encoding."""
from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mltrade.baselines.names import baseline_label  # noqa: E402


#: chart width in inches (the page shows charts at full width); more trades than this get a window
FIG_WIDTH = 14
MAX_MARKED_TRADES = 300


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


def _date_axis(ax) -> None:
    ax.set_xlabel("date (exchange time)")
    ax.grid(alpha=0.3)


def _figures(equity: pd.DataFrame, trades: pd.DataFrame, start_cash: float, label=lambda t: t):
    """``[(title, figure)]`` of a run: cumulative return and drawdown (beside the baselines' ``value_*``
    columns of ``equity``), the index with the trades (and trades per month when windowed), return per trade."""
    daily = equity.groupby(equity.index.normalize()).tail(1)   # session closes, at their last bar's time
    others = [c for c in daily.columns if c.startswith("value_")]
    figs = [_cumulative_figure(daily, others, start_cash, label), _drawdown_figure(equity, others, label)]
    figs += _trades_figures(equity, trades, label)
    figs.append(_returns_figure(trades, label))
    return figs


def _cumulative_figure(daily: pd.DataFrame, others: list, start_cash: float, label):
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 4.5))
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
    return (label("Cumulative return vs the baselines (session closes)" if others else
                  "Cumulative return vs the index (session closes)"), fig)


def _drawdown_figure(equity: pd.DataFrame, others: list, label):
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
    return (label("Drawdown (per bar, daily minimum)" + (", strategy and baselines" if others else "")), fig)


def _trades_figures(equity: pd.DataFrame, trades: pd.DataFrame, label) -> list:
    """The index with entries, exits and knock-outs; past :data:`MAX_MARKED_TRADES` trades, the last
    third of them and a chart of trades per month."""
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
    figs = [(label("Index with entries, exits and knock-outs" + window), fig)]
    if window:
        figs.append(_monthly_count_figure(trades, label))
    return figs


def _monthly_count_figure(trades: pd.DataFrame, label):
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
    return (label("Trades per month by exit reason"), fig)


def _returns_figure(trades: pd.DataFrame, label):
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
    return (label("Return per trade"), fig)


def drawdown(values: pd.Series) -> pd.Series:
    """Per-bar drawdown: value / running peak - 1."""
    return values / values.cummax() - 1.0


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
