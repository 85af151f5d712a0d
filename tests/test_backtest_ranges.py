"""`mltrade backtest` date ranges as a user meets them: a CSV outside the sample's 2014-2018 default
range runs on its own dates, and a bad --start/--end says which field and what was expected."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mltrade.cli import main
from mltrade.feeds.sample import sample_intraday


@pytest.fixture(scope="module")
def csv_2019(tmp_path_factory):
    """A week of bars dated June 2019 (the sample's June 2018 week moved by 52 weeks), local offsets."""
    bars = sample_intraday("2018-06-04", "2018-06-08")
    bars.index = bars.index + pd.Timedelta(weeks=52)
    path = tmp_path_factory.mktemp("csv") / "bars2019.csv"
    out = bars[["open", "high", "low", "close", "volume"]].copy()
    out.index = [t.isoformat() for t in out.index]
    out.index.name = "datetime"
    out.to_csv(path)
    return path


def test_a_csv_after_2018_runs_on_its_own_dates_without_start_and_end(csv_2019, tmp_path, capsys):
    assert main(["backtest", "--data", str(csv_2019), "--no-baselines", "--quiet", "--out", str(tmp_path),
                 "--name", "all"]) == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert s["start"].startswith("2019-06-03") and s["end"].startswith("2019-06-07") and s["trades"] == 5
    # --start alone: the packaged end (2018-12-31, the sample's) does not cut the file off
    assert main(["backtest", "--data", str(csv_2019), "--start", "2019-06-05", "--no-baselines", "--quiet",
                 "--out", str(tmp_path), "--name", "from"]) == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "from" / "summary.json").read_text())
    assert s["start"].startswith("2019-06-05") and s["end"].startswith("2019-06-07") and s["trades"] == 3


@pytest.mark.parametrize("args, message", [
    (["--start", "garbage"], "backtest.start: expected a date (YYYY-MM-DD), got 'garbage'"),
    (["--start", "2018-03-01", "--end", "2018-02-01"], "backtest.start/end: the start 2018-03-01 is after "
                                                        "the end 2018-02-01"),
])
def test_bad_dates_name_the_field(args, message, tmp_path, capsys):
    assert main(["backtest", *args, "--no-baselines", "--quiet", "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_buyhold_strategy_equals_the_buy_and_hold_baseline_to_the_cent(tmp_path):
    """`--strategy buyhold` is the same fully invested tracker as the baseline beside it: the [product]
    section (a turbo's ratio and spread) does not turn it into another bet."""
    from mltrade.backtest import run_backtest
    from mltrade.config import load_config

    cfg = load_config(None, {"backtest": {"start": "2018-06-04", "end": "2018-06-08", "out": str(tmp_path)},
                             "strategy": {"name": "buyhold"}})
    res = run_backtest(cfg, report=False, significance_reps=50)
    assert res.summary["params"].get("ratio") is None and res.summary["exposure"] > 0.99
    assert res.summary["final_value"] == pytest.approx(res.baselines["buy_and_hold"]["final_value"], abs=0.005)
