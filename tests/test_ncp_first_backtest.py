"""The README's ML path from a fresh folder (issue 17): ``mltrade backtest --strategy ncp`` as the first
command trains the default model (a progress bar, no bare epoch lines) and backtests it; a model the
registry refuses is one line saying why and what to run, never a missing-file error; the backtest's
holdout figure agrees with the training's on the same sessions (one truth)."""
from __future__ import annotations

import json

import pytest

from mltrade.cli import main
from mltrade.feeds.loader import write_csv
from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market


def _config(tmp_path, csv, hist, threshold: float, epochs: int = 6) -> str:
    path = tmp_path / f"cfg-{threshold}.toml"
    path.write_text(f"""
[backtest]
data = "{csv}"
out = "{tmp_path / 'reports'}"
[strategy]
name = "ncp"
[ncp]
data = "{csv}"
daily_history = "{hist}"
start = ""
end = ""
cell = "cfc"
threshold = {threshold}
n_folds = 2
train_sessions = 80
val_sessions = 25
score_sessions = 40
holdout_sessions = 60
max_epochs = {epochs}
patience = 2
seeds = 1
adapt = false
""")
    return str(path)


@pytest.mark.slow
def test_first_backtest_trains_refuses_in_one_line_then_backtests(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "bars.csv"
    hist = tmp_path / "daily.csv"
    bars = synthetic_market("2012-01-01", 340, planted=True, seed=11)
    write_csv(bars, csv)
    write_csv(synthetic_daily_history(bars, 260, seed=11), hist)
    # a threshold no probability reaches: the model never trades, the registry refuses it (0.99 is reached:
    # the NCP starts as a logistic regression, confident on the planted sessions)
    rc = main(["backtest", "--strategy", "ncp", "--config", _config(tmp_path, csv, hist, 0.9999999, epochs=1),
               "--no-baselines"])
    out, err = capsys.readouterr()
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("mltrade: error:")]
    assert len(lines) == 1, err
    assert "not kept" in lines[0] and "never trades" in lines[0] and "mltrade optimize ncp" in lines[0]
    assert "not found" not in err + out
    assert "epoch 1: loss" not in out + err
    # defaults that trade: trained, kept, then backtested from the model's holdout start
    rc = main(["backtest", "--strategy", "ncp", "--config", _config(tmp_path, csv, hist, 0.5), "--no-baselines",
               "--name", "first"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "epoch 1: loss" not in out + err
    assert "beats the best simple learner" in out       # the ladder's verdict line
    assert "out of sample" in out
    summary = json.loads((tmp_path / "reports" / "first" / "summary.json").read_text())
    lad = summary["ncp"]["ladder"]
    assert {"always_long", "always_short", "random", "rule", "logistic", "hgb", "ncp"} <= set(lad["rungs"])
    chk = summary["ncp"]["holdout_check"]
    assert chk["sessions"] == chk["training_sessions"] == 60
    # the training's own decisions priced by this run are the training figure (same pricing) ...
    assert chk["training_decisions_repriced"] == pytest.approx(chk["training_log_product"], abs=1e-6)
    # ... and the backtest's figure equals it unless it chose otherwise on some sessions (shown, counted)
    if chk["sessions_with_other_direction"] == 0:
        assert chk["backtest_log_product"] == pytest.approx(chk["training_log_product"], abs=1e-6)
    assert chk["sessions_with_other_direction"] is not None
    print("holdout check", chk)
    html = (tmp_path / "reports" / "first" / "report.html").read_text()
    assert "NCP learner ladder" in html and "training vs this backtest" in html
