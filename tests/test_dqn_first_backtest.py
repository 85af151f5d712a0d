"""`mltrade backtest --strategy dqn` as the first command of a fresh checkout: it trains the default model
(a progress bar, no bare epoch lines) and backtests it; when the registry refuses the model it says why in
one line and which command changes the outcome (never a missing-file error)."""
from __future__ import annotations

import re

import pytest

from mltrade.cli import main

TINY = ('[dqn]\nstart = "2012-06-01"\nend = "2013-06-28"\nsessions = ["day"]\ntrain_days = 150\n'
        'val_days = 60\ntest_days = 40\nembargo = 2\nagents = 1\ncandidates = 1\nsteps = 200\n'
        'episode_length = 100\n\n[backtest]\nend = "2013-06-28"\n')


def _run(tmp_path, monkeypatch, capsys, extra: str = "", steps: int = 200) -> tuple:
    monkeypatch.chdir(tmp_path)
    cfg = TINY.replace("steps = 200", f"steps = {steps}").replace("[backtest]", extra + "\n[backtest]")
    (tmp_path / "cfg.toml").write_text(cfg)
    rc = main(["backtest", "--strategy", "dqn", "--config", "cfg.toml", "--no-baselines"])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_first_backtest_trains_with_a_progress_bar_then_trades(tmp_path, monkeypatch, capsys):
    rc, out, err = _run(tmp_path, monkeypatch, capsys)
    assert rc == 0, err
    assert "training the default model first" in out and "trained and kept" in out
    assert re.search(r"fold 0 day agents: .*\d+%\|", err)              # tqdm's bar, not log lines
    assert not re.search(r"^\s*epoch \d", out + err, re.M)
    assert "strategy dqn (out of sample)" in out
    assert (tmp_path / ".mltrade" / "models" / "dqn" / "current" / "day" / "ensemble.json").exists()
    assert list((tmp_path / "reports").glob("dqn-*/report.html"))


@pytest.mark.slow
def test_a_refused_model_says_why_and_what_to_run(tmp_path, monkeypatch, capsys):
    # a drawdown gate that blocks every trade: the validation outputs are constant, the registry refuses
    # (120 steps: what the agents learn does not matter, the gate refuses every trade)
    rc, out, err = _run(tmp_path, monkeypatch, capsys, "drawdown_limit = 1000000.0\n",
                        steps=120)
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.startswith("mltrade: error:")]
    assert len(lines) == 1, err
    msg = lines[0]
    assert "did not keep" in msg and "degenerate" in msg and "gates refuse" in msg
    assert "drawdown_limit" in msg and "`mltrade train dqn --config FILE`" in msg
    assert "not found" not in err and "FileNotFoundError" not in err
    assert not (tmp_path / ".mltrade" / "models" / "dqn" / "current").exists()
