"""The report's tables as HTML: the summary's cells, the strategy beside its baselines, the tearsheet
and the trades; how each figure is formatted (returns in %, counts as integers, money with 2 decimals)."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from mltrade.baselines.names import baseline_label


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
