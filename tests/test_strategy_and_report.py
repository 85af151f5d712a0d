"""Reference strategies, analyzers, config, report and the CLI on the sample data."""
from __future__ import annotations

import json

import backtrader as bt
import pandas as pd
import pytest

from mltrade.analyzers import EquityCurve, KnockoutStats, KnockoutTrades
from mltrade.backtest import run_backtest
from mltrade.strategy_run import run_strategy
from mltrade.brokers import KnockoutBroker
from mltrade.cli import main
from mltrade.config import ConfigError, load_config
from mltrade.feeds import IndexData, sample_intraday
from mltrade.strategies import IntradayMomentum, get_strategy
from mltrade.strategies.decision import Decision


@pytest.fixture(scope="module")
def week():
    return sample_intraday("2018-06-04", "2018-06-08")


def _cfg(**backtest):
    cfg = load_config()
    cfg["backtest"].update(backtest)
    return cfg


def test_intraday_momentum_follows_the_original_mechanics(week):
    res = run_strategy(week, IntradayMomentum, {"spread": 0.0}, _cfg())
    trades = res.trades
    assert len(trades) == 5                                    # one trade per session
    for _, t in trades.iterrows():
        day = week[week.index.date == pd.Timestamp(t["entry_time"]).date()]
        assert pd.Timestamp(t["entry_time"]).strftime("%H:%M") == "10:55"   # open of the 18th candle
        assert t["entry_underlying"] == pytest.approx(day["open"].iloc[17])
        up = day["close"].iloc[16] > day["open"].iloc[0]
        assert t["direction"] == ("long" if up else "short")
        decision_close = day["close"].iloc[16]
        assert t["barrier"] == pytest.approx(decision_close * (1 - (0.04 if up else -0.04)))
        if t["exit_reason"] == "session_end":
            assert pd.Timestamp(t["exit_time"]).strftime("%H:%M") == "15:55"
            assert t["exit_underlying"] == pytest.approx(day["close"].iloc[-1])
        else:
            assert t["exit_reason"] in ("stop", "knockout")
    assert res.equity["in_position"].iloc[-1] == False  # noqa: E712 - flat at the end


def test_baseline_direction_rules(week):
    longs = run_strategy(week, IntradayMomentum, {"direction_rule": "long"}, _cfg()).trades
    assert (longs["direction"] == "long").all() and len(longs) == 5
    r1 = run_strategy(week, IntradayMomentum, {"direction_rule": "random", "seed": 1}, _cfg()).trades
    r2 = run_strategy(week, IntradayMomentum, {"direction_rule": "random", "seed": 1}, _cfg()).trades
    assert list(r1["direction"]) == list(r2["direction"])


class _Review:
    """A decision overlay that always flips the direction and doubles the barrier distance."""

    def __init__(self):
        self.seen = []

    def review(self, decision: Decision, context):
        self.seen.append((decision, len(context.candles)))
        return decision.replace(direction=-decision.direction, distance=None,
                                barrier=decision.price * (1 + decision.direction * 0.08), source="test")


def test_overlay_reviews_every_decision_before_it_is_executed(week):
    overlay = _Review()
    res = run_strategy(week, IntradayMomentum, {"overlay": overlay}, _cfg())
    plain = run_strategy(week, IntradayMomentum, {}, _cfg())
    assert len(overlay.seen) == 5 and all(n == 17 for _, n in overlay.seen)
    flipped = {"long": "short", "short": "long"}
    assert list(res.trades["direction"]) == [flipped[d] for d in plain.trades["direction"]]
    assert res.strategy.decisions[0]["source"] == "test"


def test_stats_analyzer_agrees_with_trades(week):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=week))
    cerebro.broker = KnockoutBroker(cash=10_000.0, commission_fixed=1.0)
    cerebro.addstrategy(IntradayMomentum, stop=0.9, distance=0.01)
    cerebro.addanalyzer(KnockoutTrades, _name="t")
    cerebro.addanalyzer(KnockoutStats, _name="s")
    cerebro.addanalyzer(EquityCurve, _name="e")
    strat = cerebro.run()[0]
    trades = strat.analyzers.t.to_frame()
    stats = strat.analyzers.s.get_analysis()
    assert stats["trades"] == len(trades) == 5
    assert stats["stops"] == (trades["exit_reason"] == "stop").sum()
    assert stats["knockouts"] == (trades["exit_reason"] == "knockout").sum()
    assert stats["final_value"] == pytest.approx(10_000 + trades["pnl"].sum())
    assert stats["avg_leverage"] == pytest.approx(trades["leverage"].mean())
    assert stats["avg_leverage"] > 50                       # 1 % barrier distance -> ~100x
    assert 0 < stats["exposure"] < 1
    json.dumps(stats)                                        # plain, exportable


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[broker]\ncommision_fixed = 2.0\n")
    with pytest.raises(ConfigError, match=r"unknown key 'broker.commision_fixed'.*commission_fixed"):
        load_config(bad)
    bad.write_text("[backtest]\ncash = 'lots'\n")
    with pytest.raises(ConfigError, match=r"'backtest.cash' expects float"):
        load_config(bad)
    bad.write_text("[backtest\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    good = tmp_path / "g.toml"
    good.write_text("[strategy]\nname = 'buyhold'\n[backtest]\ncash = 5000\n")
    cfg = load_config(good)
    assert cfg["backtest"]["cash"] == 5000 and cfg["strategy"]["params"] == {}


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="valid: .*momentum"):
        get_strategy("nope")


def test_unknown_strategy_param_is_refused(tmp_path):
    cfg = load_config()
    cfg["strategy"]["params"]["decision_barr"] = 3
    with pytest.raises(ConfigError, match="decision_barr.*valid: .*decision_bar"):
        run_backtest(cfg, report=False)


def test_cli_backtest_on_sample_writes_report(tmp_path, capsys):
    rc = main(["backtest", "--start", "2018-06-04", "--end", "2018-06-29", "--out", str(tmp_path),
               "--name", "run1", "--quiet"])
    assert rc == 0
    run = tmp_path / "run1"
    for name in ("report.html", "summary.json", "trades.csv", "equity.csv"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0
    summary = json.loads((run / "summary.json").read_text())
    for key in ("total_return", "max_drawdown", "sharpe", "sortino", "trades", "knockouts", "stops",
                "win_rate", "avg_leverage", "exposure", "buy_and_hold_return", "synthetic_intraday"):
        assert key in summary
    assert summary["synthetic_intraday"] is True and summary["trades"] == 20
    assert set(summary["baselines"]) == {"buy_and_hold", "always_long", "random_direction"}
    trades = pd.read_csv(run / "trades.csv")
    assert len(trades) == 20 and set(trades["exit_reason"]) <= {"session_end", "stop", "knockout", "signal"}
    html = (run / "report.html").read_text()
    assert "Synthetic intraday data" in html and html.count("data:image/png;base64,") >= 4
    assert "Monthly returns" in html
    out = capsys.readouterr().out
    assert "report:" in out
    # an intraday rule on the sample: its figures are the synthetic paths', said first (issue 19)
    assert summary["evidence"] == "synthetic intraday paths"
    assert summary["significance"]["words"].startswith("On synthetic intraday bars: ")
    assert out.splitlines()[1].strip().startswith("On synthetic intraday bars: ")
    assert "This run&#x27;s evidence: synthetic intraday paths" in html or "This run's evidence" in html
    assert "Sharpe difference, strategy − baseline" in html
    # `mltrade report` rebuilds the HTML from the files
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["backtest", "--strategy", "nope", "--out", str(tmp_path)]) == 2
    assert "valid:" in capsys.readouterr().err
    missing = tmp_path / "nope.csv"
    assert main(["backtest", "--data", str(missing), "--out", str(tmp_path), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_data_sample_and_backtest_on_csv(tmp_path):
    csv = tmp_path / "s.csv"
    assert main(["data", "sample", "--out", str(csv), "--start", "2018-06-04", "--end", "2018-06-05"]) == 0
    assert main(["backtest", "--data", str(csv), "--out", str(tmp_path), "--name", "csv", "--quiet",
                 "--no-baselines", "--start", "", "--end", ""]) == 0
    s = json.loads((tmp_path / "csv" / "summary.json").read_text())
    # the sample's synthetic bars stay marked through the CSV (sidecar s.csv.meta.json): the report says so
    assert s["trades"] == 2 and s["synthetic_intraday"] is True and s["evidence"] == "synthetic intraday paths"
    assert "Synthetic intraday data" in (tmp_path / "csv" / "report.html").read_text()


def test_backtrader_own_plot_works_headless(tmp_path, week):
    from mltrade.report import backtrader_plot

    cerebro = bt.Cerebro()
    cerebro.adddata(IndexData(dataframe=week.iloc[:200]))
    cerebro.broker = KnockoutBroker()
    cerebro.addstrategy(IntradayMomentum)
    cerebro.run()
    path = backtrader_plot(cerebro, tmp_path / "bt.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
