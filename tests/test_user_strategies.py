"""A user's own backtrader strategy from the CLI and the config: ``--strategy package.module:Class``."""
from __future__ import annotations

import json
import textwrap

import pytest

from mltrade.cli import main
from mltrade.strategies.registry import get_strategy

USER_MODULE = textwrap.dedent('''
    import backtrader as bt


    class SmaCross(bt.Strategy):
        """Long above the SMA, short below it: a plain backtrader strategy, no mltrade import."""

        params = (("period", 20), ("size", 100))

        def __init__(self):
            self.cross = bt.ind.CrossOver(self.data.close, bt.ind.SMA(period=self.p.period))
            self.closed = 0

        def next(self):
            if self.cross[0] > 0:
                self.order_target_size(target=self.p.size)
            elif self.cross[0] < 0:
                self.order_target_size(target=-self.p.size)

        def notify_trade(self, trade):
            self.closed += trade.isclosed


    NotAStrategy = 42
''')


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cross.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_backtest_runs_a_user_class_on_certificates(user_pkg, capsys):
    rc = main(["backtest", "--strategy", "userpkg.cross:SmaCross", "--start", "2018-06-04", "--end", "2018-06-08",
               "--no-baselines", "--quiet", "--out", str(user_pkg / "reports"), "--name", "mine"])
    out = capsys.readouterr().out
    assert rc == 0 and "strategy userpkg.cross:SmaCross" in out
    summary = json.loads((user_pkg / "reports" / "mine" / "summary.json").read_text())
    assert summary["trades"] > 0 and summary["final_value"] != summary["start_cash"]
    trades = (user_pkg / "reports" / "mine" / "trades.csv").read_text().splitlines()
    assert len(trades) - 1 == summary["trades"]
    assert {"long", "short"} <= {line.split(",")[2] for line in trades[1:]}   # short certificates too


def test_config_strategy_name_takes_a_path_and_params(user_pkg, capsys):
    cfg = user_pkg / "mine.toml"
    cfg.write_text('[strategy]\nname = "userpkg.cross:SmaCross"\n\n[strategy.params]\nperiod = 50\n\n'
                   '[backtest]\nstart = "2018-06-04"\nend = "2018-06-05"\nbaselines = false\n')
    assert main(["backtest", "--config", str(cfg), "--quiet", "--out", str(user_pkg / "r"), "--name", "c"]) == 0
    summary = json.loads((user_pkg / "r" / "c" / "summary.json").read_text())
    assert summary["params"] == {"period": 50}


def test_bad_paths_are_named(user_pkg, capsys):
    for path, words in (("userpkg.cross:Missing", "has no 'Missing'"), ("nopkg.x:Y", "cannot import module"),
                        ("userpkg.cross:NotAStrategy", "not a backtrader Strategy")):
        with pytest.raises(ValueError, match=words):
            get_strategy(path)
    assert main(["backtest", "--strategy", "userpkg.cross:Missing", "--quiet"]) == 2
    assert "userpkg.cross:Missing" in capsys.readouterr().err


def test_strategies_command_lists_classes_and_params(user_pkg, capsys):
    assert main(["strategies", "userpkg.cross:SmaCross"]) == 0
    out = capsys.readouterr().out
    assert "momentum  (mltrade.strategies.reference:IntradayMomentum)" in out
    assert "decision_bar = 17" in out
    assert "userpkg.cross:SmaCross  (userpkg.cross:SmaCross)" in out and "period = 20" in out
