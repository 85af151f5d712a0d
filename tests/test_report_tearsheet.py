"""The tearsheet (mltrade/analyzers/tearsheet.py): hand-computed cases, every summary.json figure recomputed
from the files a real backtest wrote, agreement with quantstats / empyrical where they are installed, and
the report's charts with thousands of trades."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mltrade.analyzers.tearsheet import (daily_returns, drawdown_periods, index_returns, session_closes,
                                         tearsheet, trade_stats)
from mltrade.backtest import run_backtest
from mltrade.config import load_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ts")
    cfg = load_config(None, {"backtest": {"start": "2018-01-02", "end": "2018-05-31", "out": str(out)}})
    return run_backtest(cfg, run_name="ts", progress=False)


def test_drawdown_periods_by_hand():
    idx = pd.date_range("2020-01-01", periods=9, freq="D")
    v = pd.Series([100, 110, 99, 88, 110, 120, 108, 114, 119.0], index=idx)
    dds = drawdown_periods(v)
    assert len(dds) == 2
    a, b = dds
    assert a == {"start": str(idx[1]), "trough": str(idx[3]), "recovery": str(idx[4]), "depth": pytest.approx(-0.2),
                 "length": 3, "sessions": 3}
    assert b["start"] == str(idx[5]) and b["trough"] == str(idx[6]) and b["recovery"] is None   # still under water
    assert b["depth"] == pytest.approx(108 / 120 - 1) and b["length"] == 3


def test_trade_statistics_by_hand():
    t = pd.DataFrame({"pnl": [10.0, 20.0, -5.0, -5.0, -5.0, 30.0],
                      "return": [0.1, 0.2, -0.05, -0.05, -0.05, 0.3],
                      "entry_time": pd.to_datetime(["2020-01-02 10:00"] * 6),
                      "exit_time": pd.to_datetime(["2020-01-02 11:00"] * 3 + ["2020-01-02 13:00"] * 3),
                      "bars": [12, 12, 12, 36, 36, 36]})
    s = trade_stats(t)
    assert s["profit_factor"] == pytest.approx(60 / 15)
    assert s["expectancy"] == pytest.approx(45 / 6)
    assert s["avg_win"] == pytest.approx(20) and s["avg_loss"] == pytest.approx(-5)
    assert s["avg_win_return"] == pytest.approx(0.2) and s["avg_loss_return"] == pytest.approx(-0.05)
    assert (s["best_trade"], s["worst_trade"]) == (pytest.approx(0.3), pytest.approx(-0.05))
    assert (s["max_win_streak"], s["max_loss_streak"]) == (2, 3)
    assert s["avg_trade_hours"] == pytest.approx(2.0) and s["max_trade_hours"] == pytest.approx(3.0)
    assert trade_stats(t.iloc[:0])["profit_factor"] is None     # no trade: undefined, not 0


def test_summary_json_tearsheet_recomputed_from_the_written_files(run):
    d = run.run_dir
    summary = json.loads((d / "summary.json").read_text())
    sheets = summary["tearsheet"]
    assert set(sheets) == {"strategy", "buy_and_hold", "always_long", "random_direction"}
    eq = pd.read_csv(d / "equity.csv", index_col=0, parse_dates=True)
    trades = pd.read_csv(d / "trades.csv")
    base = pd.read_csv(d / "baseline_trades.csv")
    cash = summary["start_cash"]
    idx = eq["close"].groupby(eq.index.normalize()).last()
    m = (idx / idx.shift(1).fillna(eq["close"].iloc[0]) - 1)
    for name, col, t in [("strategy", "value", trades)] + [
            (n, f"value_{n}", base[base.baseline == n]) for n in ("buy_and_hold", "always_long", "random_direction")]:
        s = sheets[name]
        closes = eq[col].groupby(eq.index.normalize()).last()
        r = closes / closes.shift(1).fillna(cash) - 1
        assert s["sessions"] == len(r)
        assert s["volatility"] == pytest.approx(r.std() * math.sqrt(252), rel=1e-12)
        assert s["best_session"] == pytest.approx(r.max()) and s["worst_session"] == pytest.approx(r.min())
        assert s["var_95"] == pytest.approx(np.percentile(r, 5), rel=1e-12)
        k = int((len(r) - 1) * 0.05)
        assert s["cvar_95"] == pytest.approx(np.sort(r)[:k + 1].mean(), rel=1e-12)
        c = np.cov(r, m)
        assert s["beta"] == pytest.approx(c[0, 1] / c[1, 1], rel=1e-9)
        assert s["alpha"] == pytest.approx((r.mean() - s["beta"] * m.mean()) * 252, rel=1e-9, abs=1e-12)
        dd = (eq[col] / eq[col].cummax() - 1).min()
        assert s["drawdowns"][0]["depth"] == pytest.approx(dd, rel=1e-12)
        years = (eq.index[-1] - eq.index[0]).days / 365.25
        cagr = (eq[col].iloc[-1] / cash) ** (1 / years) - 1
        assert s["calmar"] == pytest.approx(cagr / abs(dd), rel=1e-9)
        assert s["yearly_returns"] == {"2018": pytest.approx(eq[col].iloc[-1] / cash - 1, rel=1e-12)}
        wins = t["pnl"] > 0
        if len(t):
            lost = -t.pnl[~wins].sum()
            assert s["profit_factor"] == (pytest.approx(t.pnl[wins].sum() / lost, rel=1e-12) if lost > 0 else None)
            assert s["expectancy"] == pytest.approx(t.pnl.mean(), rel=1e-12)
            assert s["best_trade"] == pytest.approx(t["return"].max(), rel=1e-12)
    # strategy and baselines: shown side by side on the page, with the worst-drawdowns tables
    page = (d / "report.html").read_text()
    assert "Tearsheet" in page and "Worst drawdowns: strategy" in page and "Worst drawdowns: buy-and-hold" in page
    assert "Rolling Sharpe and volatility" in page and "Monthly returns (%, strategy)" in page
    assert "None" not in page.replace("NoneType", "")


def test_agrees_with_quantstats_and_empyrical(run):
    qs = pytest.importorskip("quantstats")
    ep = pytest.importorskip("empyrical")
    eq = run.equity
    cash = run.summary["start_cash"]
    r = daily_returns(session_closes(eq["value"]), cash)
    m = index_returns(eq["close"])
    s = tearsheet(eq["value"], cash, run.trades, eq["close"])
    assert s["volatility"] == pytest.approx(qs.stats.volatility(r, periods=252), abs=1e-9)
    assert s["skew"] == pytest.approx(qs.stats.skew(r), abs=1e-9)
    assert s["kurtosis"] == pytest.approx(qs.stats.kurtosis(r), abs=1e-9)
    assert s["var_95"] == pytest.approx(ep.value_at_risk(r.to_numpy(), cutoff=0.05), abs=1e-9)
    assert s["cvar_95"] == pytest.approx(ep.conditional_value_at_risk(r.to_numpy(), cutoff=0.05), abs=1e-9)
    assert s["best_session"] == pytest.approx(qs.stats.best(r), abs=1e-9)
    assert s["worst_session"] == pytest.approx(qs.stats.worst(r), abs=1e-9)
    g = qs.stats.greeks(r, m, periods=252)
    assert s["beta"] == pytest.approx(g["beta"], abs=1e-9)
    assert s["alpha"] == pytest.approx(g["alpha"], abs=1e-9)
    assert s["beta"] == pytest.approx(ep.beta(r.to_numpy(), m.to_numpy()), abs=1e-9)
    pnl = pd.Series(run.trades["pnl"].to_numpy(float), index=pd.date_range("2000-01-01", periods=len(run.trades)))
    assert s["profit_factor"] == pytest.approx(qs.stats.profit_factor(pnl, prepare_returns=False), abs=1e-9)
    closes = session_closes(eq["value"])
    assert drawdown_periods(closes)[0]["depth"] == pytest.approx(qs.stats.max_drawdown(closes), abs=1e-9)
    assert s["max_win_streak"] == qs.stats.consecutive_wins(pnl, prepare_returns=False)
    assert s["max_loss_streak"] == qs.stats.consecutive_losses(
        pnl.where(pnl > 0, -1.0), prepare_returns=False)


def test_thousands_of_trades_get_a_window_and_a_monthly_count(run):
    from mltrade.report import MAX_MARKED_TRADES, _figures

    t = pd.concat([run.trades] * (1 + 2 * MAX_MARKED_TRADES // max(len(run.trades), 1)), ignore_index=True)
    assert len(t) > MAX_MARKED_TRADES
    eq = pd.read_csv(run.run_dir / "equity.csv", index_col=0, parse_dates=True)   # with the baselines' values
    figs = dict(_figures(eq, t, 10_000.0))
    title = next(k for k in figs if k.startswith("Index with entries"))
    assert f"of {len(t):,} trades" in title
    marked = sum(len(c.get_offsets()) for c in figs[title].axes[0].collections)
    assert marked <= 2 * (MAX_MARKED_TRADES // 3)          # entries and exits of the window only
    assert "Trades per month by exit reason" in figs
    hist = figs["Return per trade"].axes[0]
    assert "%" in hist.get_xlabel() and hist.get_ylabel() == "trades"
    dd = next(v for k, v in figs.items() if k.startswith("Drawdown"))
    assert len(dd.axes[0].get_legend().get_texts()) == 4        # strategy and three baselines
