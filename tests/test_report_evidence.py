"""Honest evidence in reports: fair baselines, out-of-sample scope, significance, files that reproduce
every figure, trade provenance, the I/O module (real backtrader runs, real sample data)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from mltrade.backtest import bars_for, baseline_results, baseline_runs, run_strategy, strategy_kwargs
from mltrade.cli import main
from mltrade.config import load_config
from mltrade.strategies.decision import Decision
from mltrade.strategies.reference import BuyAndHold, IntradayMomentum, SessionBaseline
from mltrade.strategies.registry import get_strategy


@pytest.fixture(scope="module")
def month():
    return bars_for("sample", "2018-05-01", "2018-05-31")


def _cfg(**backtest):
    cfg = load_config()
    cfg["backtest"].update(backtest)
    return cfg


# ------------------------------------------------------------------ baselines
def test_vectorised_baselines_equal_backtrader_runs_to_the_cent(month):
    cfg = _cfg()
    cls = get_strategy("momentum")
    kw = strategy_kwargs(cls, cfg)
    fast = baseline_results(month, cls, kw, cfg)
    ref = baseline_results(month, cls, kw, cfg, engine="backtrader")
    assert set(fast) == set(ref) == {"buy_and_hold", "always_long", "random_direction"}
    for name in fast:
        a, b = fast[name], ref[name]
        assert a.equity.index.equals(b.equity.index)
        np.testing.assert_array_equal(a.equity["value"].to_numpy(), b.equity["value"].to_numpy())
        np.testing.assert_array_equal(a.equity["in_position"].to_numpy(), b.equity["in_position"].to_numpy())
        for key, v in b.summary.items():
            if isinstance(v, float):
                assert a.summary[key] == pytest.approx(v, rel=1e-12, abs=1e-9), (name, key)
            else:
                assert a.summary[key] == v, (name, key)
        cols = ["direction", "size", "entry_time", "exit_time", "exit_reason", "bars"]
        pd.testing.assert_frame_equal(a.trades[cols], b.trades[cols])
        np.testing.assert_allclose(a.trades[["pnl", "fees", "leverage", "entry_price", "exit_price"]],
                                   b.trades[["pnl", "fees", "leverage", "entry_price", "exit_price"]], rtol=1e-12)
    assert fast["always_long"].summary["trades"] == 22


def test_buy_and_hold_is_fully_invested_and_earns_the_index_return(month):
    cfg = _cfg()
    res = run_strategy(month, BuyAndHold, {}, cfg)
    index = month["close"].iloc[-1] / month["close"].iloc[0] - 1.0
    cash = cfg["backtest"]["cash"]
    # two 1.00 fees and at most one tracker certificate (~0.7) of cash left over
    assert abs(res.summary["total_return"] - index) < (2.0 + 1.0) / cash
    assert res.trades.iloc[0]["entry_underlying"] == pytest.approx(month["close"].iloc[0])
    assert res.summary["exposure"] > 0.99


def test_baselines_take_the_strategys_certificates_and_decision_time(month):
    cfg = _cfg()
    cls = get_strategy("momentum")
    kw = strategy_kwargs(cls, cfg, {"decision_bar": 30, "distance": 0.02, "stop": 0.5})
    runs = baseline_results(month, cls, kw, cfg)
    t = runs["always_long"].trades
    assert baseline_runs(month, cls, kw, cfg)["always_long"] == runs["always_long"].summary   # summaries
    assert (pd.to_datetime(t["entry_time"]).dt.strftime("%H:%M") == "12:00").all()   # open of the 31st bar
    assert np.allclose(1 - t["barrier"] / (t["entry_underlying"]), 0.02, atol=0.003)


@pytest.mark.parametrize("session", ["day", "night"])
def test_session_baselines_trade_the_daily_strategys_session_kind(month, session):
    res = run_strategy(month, SessionBaseline, {"session": session, "stop": None}, _cfg())
    t = res.trades
    sessions = sorted(set(month.index.date))
    assert len(t) == len(sessions) - 1                   # no decision before the first session's close
    entry = pd.to_datetime(t["entry_time"]).dt.strftime("%H:%M")
    exit_ = pd.to_datetime(t["exit_time"]).dt.strftime("%H:%M")
    if session == "day":                                 # bought at the open, sold at the close
        assert (entry == "09:30").all() and set(exit_) <= {"15:55"}
    else:                                                # bought at the close, sold at the next open
        assert (entry == "15:55").all() and (exit_ == "09:30").all()
    assert (t["direction"] == "long").all()


# ------------------------------------------------------------------ files reproduce every figure
def _sessions_per_year(index) -> float:
    """The annualisation factor as docs/metrics.md defines it: XNAS sessions per calendar year of the run."""
    import exchange_calendars as xcals

    years = sorted({t.year for t in pd.DatetimeIndex(index)})
    cal = xcals.get_calendar("XNAS", start="1990-01-01")
    n = len(cal.sessions_in_range(f"{years[0]}-01-01", f"{years[-1]}-12-31"))
    return n / len(years)


def _figures_from_files(run) -> dict:
    """Recompute summary figures from equity.csv / trades.csv alone, as docs/metrics.md defines them."""
    eq = pd.read_csv(run / "equity.csv", index_col=0, parse_dates=True)
    cash = json.loads((run / "summary.json").read_text())["start_cash"]
    per_year = _sessions_per_year(eq.index)

    def figures(values: pd.Series, trades: pd.DataFrame) -> dict:
        close = values.groupby(values.index.normalize()).last().to_numpy()
        r = np.diff(np.r_[cash, close]) / np.r_[cash, close[:-1]]
        rets = r
        days = (values.index[-1] - values.index[0]).days
        final = values.iloc[-1]
        down = np.minimum(rets, 0.0)
        n = len(trades)
        return {
            "final_value": final, "total_return": final / cash - 1,
            "cagr": (final / cash) ** (365.25 / days) - 1,
            "max_drawdown": (values / values.cummax() - 1).min(),
            "sharpe": rets.mean() / rets.std(ddof=1) * math.sqrt(per_year),
            "sortino": rets.mean() / math.sqrt((down ** 2).sum() / len(rets)) * math.sqrt(per_year),
            "trades": n, "win_rate": (trades["pnl"] > 0).sum() / n if n else 0.0,
            "knockouts": int((trades["exit_reason"] == "knockout").sum()),
            "stops": int((trades["exit_reason"] == "stop").sum()),
            "fees": trades["fees"].sum(),
            "avg_leverage": trades["leverage"].mean() if n else 0.0,
            "_returns": rets,
        }

    out = {"strategy": figures(eq["value"], pd.read_csv(run / "trades.csv"))}
    out["strategy"]["exposure"] = eq["in_position"].mean()
    out["strategy"]["buy_and_hold_return"] = eq["close"].iloc[-1] / eq["close"].iloc[0] - 1
    bt = pd.read_csv(run / "baseline_trades.csv")
    for c in [c for c in eq.columns if c.startswith("value_")]:
        name = c[len("value_"):]
        out[name] = figures(eq[c], bt[bt["baseline"] == name])
    return out


def test_every_summary_figure_recomputes_from_the_written_files(tmp_path):
    from mltrade.significance import significance

    assert main(["backtest", "--start", "2018-06-04", "--end", "2018-07-31", "--out", str(tmp_path),
                 "--name", "r", "--quiet"]) == 0
    run = tmp_path / "r"
    s = json.loads((run / "summary.json").read_text())
    got = _figures_from_files(run)
    eq = pd.read_csv(run / "equity.csv")
    assert len(eq) == s["bars"]                                       # one row per bar, not per day
    for key in ("final_value", "total_return", "cagr", "max_drawdown", "sharpe", "sortino", "trades",
                "win_rate", "knockouts", "stops", "fees", "avg_leverage", "exposure", "buy_and_hold_return"):
        assert got["strategy"][key] == pytest.approx(s[key], rel=1e-9, abs=1e-12), key
    assert set(s["baselines"]) == {"buy_and_hold", "always_long", "random_direction"}
    for name, b in s["baselines"].items():
        for key in ("final_value", "total_return", "cagr", "max_drawdown", "sharpe", "trades", "win_rate",
                    "knockouts"):
            assert got[name][key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), (name, key)
    sig = s["significance"]
    idx = pd.RangeIndex(len(got["strategy"]["_returns"]))
    again = significance(pd.Series(got["strategy"]["_returns"], idx),
                         {k: pd.Series(got[k]["_returns"], idx) for k in s["baselines"]},
                         periods=_sessions_per_year(pd.read_csv(run / "equity.csv", index_col=0,
                                                                parse_dates=True).index))
    assert s["periods_per_year"] == 251.0                              # XNAS 2018 (closed 5 December)
    assert sig["n_sessions"] == len(idx) == 41 and sig["sharpe_ci"] == pytest.approx(again["sharpe_ci"])
    assert sig["return_ci"] == pytest.approx(again["return_ci"])
    assert sig["spa_pvalue"] == pytest.approx(again["spa_pvalue"])
    html = (run / "report.html").read_text()
    assert sig["words"] in html.replace("&#x27;", "'")                 # the words beside the headline
    assert "interval" in html and "How the figures are computed" in html and "ddof 1" in html
    # counts are integers in the baseline table
    table = html[html.index("Strategy beside baselines"):]
    table = table[:table.index("</table>")]
    trades_row = table[table.index("<th>trades</th>"):].split("</tr>")[0]
    assert f"<td>{s['trades']}</td>" in trades_row and ".0" not in trades_row
    # `mltrade report` rebuilds from the per-bar files
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0 and "Strategy beside baselines" in (run / "report.html").read_text()


# ------------------------------------------------------------------ provenance
class _Flip:
    """An overlay that keeps the decision and records an LLM-like verdict."""

    def review(self, decision: Decision, context):
        info = dict(decision.info, llm={"outcome": "approve"})
        return decision.replace(info=info, source="llm")


class _Tagged(IntradayMomentum):
    def submit_decision(self, decision, data=None):
        decision.info.update(model_id="m/v-1", agreement=0.7, gate_proba=0.61)
        return super().submit_decision(decision, data)


def test_trades_carry_the_decisions_provenance(month):
    cfg = _cfg()
    res = run_strategy(month, _Tagged, {"overlay": _Flip()}, cfg)
    t = res.trades
    assert len(t) == 22
    assert (t["model_id"] == "m/v-1").all() and (t["agreement"] == 0.7).all()
    assert (t["gate_proba"] == 0.61).all() and (t["llm_action"] == "approve").all()
    assert (t["decision_source"] == "llm").all()
    plain = run_strategy(month, IntradayMomentum, {}, cfg).trades
    assert plain["agreement"].isna().all() and (plain["decision_source"] == "momentum").all()


# ------------------------------------------------------------------ out of sample by construction
@pytest.fixture(scope="module")
def ncp_world(tmp_path_factory):
    from mltrade.feeds.loader import write_csv
    from mltrade.models.ncp.adapt import ATRAdaptation
    from mltrade.models.ncp.artifact import write_artifact
    from mltrade.models.ncp.dataset import build_inputs
    from mltrade.models.ncp.model import NCPConfig, build_model
    from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market

    root = tmp_path_factory.mktemp("oos")
    bars = synthetic_market("2017-01-03", 24, planted=True, seed=11)
    hist = synthetic_daily_history(bars, 260, seed=12)
    write_csv(bars, root / "bars.csv")
    write_csv(hist, root / "daily.csv")
    inp = build_inputs(bars, 17, 0.04, daily_history=hist)
    model = build_model(NCPConfig(n_daily=inp.daily.shape[1], cell="cfc", dense_units=(8,), ltc_units=6,
                                  ltc_units2=5, seed=4), inp.daily, inp.seq)
    dates = [str(pd.Timestamp(d).date()) for d in inp.dates]
    meta = {"settings": {"n_candles": 17, "seq_distance": 0.04, "threshold": 0.5, "objective": "product"},
            "adaptation": ATRAdaptation.identity().to_dict(),
            "metrics": {"holdout": [dates[-8], dates[-1]], "train": [dates[0], dates[-12]],
                        "val": [dates[-11], dates[-10]]},
            "config": {"cell": "cfc"}, "feature_names": ["x"] * inp.daily.shape[1]}
    (root / "models" / "ncp").mkdir(parents=True)
    write_artifact(model, meta, str(root / "models" / "ncp" / "v-1"))
    os.symlink("v-1", root / "models" / "ncp" / "current")
    (root / "c.toml").write_text(
        f'[backtest]\ndata = "{root / "bars.csv"}"\nout = "{root / "reports"}"\n'
        f'[strategy]\nname = "ncp"\n[strategy.params]\nmodel_path = "{root / "models" / "ncp" / "current"}"\n'
        f'daily_history = "{root / "daily.csv"}"\n')
    return root, dates


def test_model_scope_reads_the_holdout_and_the_in_sample_end(ncp_world):
    from mltrade.strategies.model_info import model_scope

    root, dates = ncp_world
    sc = model_scope("ncp", {"model_path": str(root / "models" / "ncp" / "current")})
    assert sc.model_id == "ncp/v-1" and sc.oos_start == dates[-8] and sc.in_sample_end == dates[-10]
    assert sc.session == "intraday" and sc.decision_bar == 17
    assert model_scope("ncp", {"model_path": str(root / "nothing")}).missing
    dqn = root / "dqnreg" / "dqn" / "v-7" / "night"
    dqn.mkdir(parents=True)
    (dqn / "settings.json").write_text(json.dumps({"val_end": "2016-12-20", "test_start": "2016-12-29"}))
    os.symlink("v-7", root / "dqnreg" / "dqn" / "current")
    sc = model_scope("dqn", {"registry": str(root / "dqnreg"), "session": "night"})
    assert (sc.model_id, sc.oos_start, sc.in_sample_end, sc.session) == ("dqn/v-7", "2016-12-29",
                                                                          "2016-12-20", "night")


def test_ml_backtest_starts_at_the_holdout_and_refuses_in_sample_ranges(ncp_world, capsys):
    root, dates = ncp_world
    cfg = str(root / "c.toml")
    assert main(["backtest", "--config", cfg, "--name", "oos", "--quiet", "--end", ""]) == 0
    out = capsys.readouterr().out
    assert f"holdout start {dates[-8]}" in out and "(out of sample)" in out
    s = json.loads((root / "reports" / "oos" / "summary.json").read_text())
    assert (s["out_of_sample"], s["oos_start"], s["model_id"]) == (True, dates[-8], "ncp/v-1")
    assert s["start"][:10] == dates[-8]                       # the run starts at the holdout
    assert s["baselines"]["always_long"]["trades"] == 8      # the baselines trade the same 8 sessions
    # a range reaching into training/validation is refused, naming the holdout start
    assert main(["backtest", "--config", cfg, "--start", dates[-11], "--end", "", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"holdout starts {dates[-8]}" in err and "--allow-in-sample" in err
    # ... unless allowed, and then every figure, table and chart says in-sample
    assert main(["backtest", "--config", cfg, "--start", dates[0], "--end", "", "--quiet", "--name", "ins",
                 "--allow-in-sample"]) == 0
    assert "IN-SAMPLE" in capsys.readouterr().out
    run = root / "reports" / "ins"
    s = json.loads((run / "summary.json").read_text())
    assert s["out_of_sample"] is False and s["oos_start"] == dates[-8]
    html = (run / "report.html").read_text()
    heads = [h.split("</h2>")[0] for h in html.split("<h2>")[1:] if "How the figures" not in h[:40]]
    alts = [a.split('"')[0] for a in html.split('alt="')[1:]]
    assert heads and all(h.startswith("In-sample") for h in heads)
    assert alts and all(a.startswith("In-sample") for a in alts)


def test_rule_strategies_have_no_model_scope(tmp_path):
    assert main(["backtest", "--start", "2018-06-04", "--end", "2018-06-08", "--out", str(tmp_path),
                 "--name", "m", "--quiet", "--no-baselines"]) == 0
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert s["out_of_sample"] is None and s["model_id"] is None and "significance" not in s


@pytest.mark.slow
def test_a_fresh_checkout_ml_backtest_trains_the_default_model_first(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[dqn]\nstart = "2012-01-01"\nend = "2014-03-31"\ntrain_days = 300\nval_days = 100\ntest_days = 60\n'
        'embargo = 2\nagents = 2\ncandidates = 2\nsteps = 200\nepisode_length = 100\nsessions = ["day"]\n'
        f'registry = "{tmp_path / "models"}"\n'
        f'[backtest]\nend = "2014-03-31"\nout = "{tmp_path / "reports"}"\n'
        f'[strategy]\nname = "dqn"\n[strategy.params]\nregistry = "{tmp_path / "models"}"\n')
    assert main(["backtest", "--strategy", "dqn", "--config", str(cfg), "--quiet", "--name", "first"]) == 0
    out = capsys.readouterr().out
    assert "no DQN model" in out and "training the default model first" in out
    s = json.loads((tmp_path / "reports" / "first" / "summary.json").read_text())
    assert s["out_of_sample"] is True and s["model_id"].startswith("dqn/v-")
    assert s["start"][:10] >= s["oos_start"] and s["session_kind"] == "day"


# ------------------------------------------------------------------ the house
def test_io_writes_atomically_and_the_old_faces_still_import(tmp_path, monkeypatch):
    from mltrade import io
    from mltrade.analyzers import EquityCurve, KnockoutTrades, performance  # noqa: F401
    from mltrade.feeds.loader import atomic_write_text as old_face

    assert old_face is io.atomic_write_text
    p = tmp_path / "a.json"
    io.atomic_write_json(p, {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("mltrade.io.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_bytes(p, b"half")
    assert json.loads(p.read_text()) == {"x": 1} and os.listdir(tmp_path) == ["a.json"]
