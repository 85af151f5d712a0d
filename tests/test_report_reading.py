"""What a reader of report.html sees: readable baseline names, formatted figures, the run's scope,
a title that says what ran (backtest or live), charts whose session closes sit at the sessions' ends.
Real backtrader runs on two weeks of the sample."""
from __future__ import annotations

import html as _html
import json
import re

import matplotlib.dates as mdates
import pandas as pd
import pytest

from mltrade.backtest import run_backtest
from mltrade.config import load_config
from mltrade.report import _figures, rebuild, write_report


def _text(page: str) -> str:
    """The visible text of a page (tags and inline images removed)."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return _html.unescape(re.sub(r"<[^>]+>", " ", page))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    cfg = load_config(None, {"backtest": {"start": "2018-06-04", "end": "2018-06-15", "out": str(out)}})
    return run_backtest(cfg, run_name="r", significance_reps=200)


def test_report_names_baselines_readably_and_formats_figures(run):
    text = _text((run.run_dir / "report.html").read_text())
    for raw in ("buy_and_hold", "always_long", "random_direction", "total_return", "start_cash"):
        assert raw not in text, raw          # keys stay in summary.json, the page reads as prose
    assert "buy-and-hold" in text and "always-long" in text and "random direction" in text
    s = run.summary
    assert f"{s['total_return'] * 100:+.2f}%" in text and f"{s['final_value']:,.2f}" in text
    # the significance sentence beside the headline uses the same names (summary.json keeps the keys)
    assert set(s["significance"]["spa_pvalue"]) == {"buy_and_hold", "always_long", "random_direction"}
    assert "buy-and-hold at 5%" in s["significance"]["words"] and s["significance"]["words"] in text
    # a rule strategy has no model: the page says what that means for in/out of sample
    assert "no in-sample/out-of-sample split" in text


def test_title_parameter_heads_the_page_and_survives_a_rebuild(run, tmp_path):
    from mltrade.live.report import report_title

    assert [report_title("paper", False), report_title("ig", False), report_title("ig", True)] == [
        "mltrade live (paper)", "mltrade live (dry run)", "mltrade live (LIVE)"]
    d = tmp_path / "live"
    write_report(d, dict(run.summary, venue="paper", mode="paper", feed="sample",
                         sessions=["2018-06-04", "2018-06-05"], refusals=["2018-06-05 kill switch engaged"]),
                 run.trades, run.equity, title="mltrade live (paper)")
    page = (d / "report.html").read_text()
    assert "<h1>mltrade live (paper): momentum</h1>" in page and "mltrade backtest" not in page
    text = _text(page)
    assert "venue paper" in text and "kill switch engaged" in text
    assert "Cumulative return vs the index" in text          # no baselines in that run: the chart says what it shows
    assert json.loads((d / "summary.json").read_text())["report_title"] == "mltrade live (paper)"
    (d / "report.html").unlink()
    rebuild(d)
    assert "<h1>mltrade live (paper): momentum</h1>" in (d / "report.html").read_text()
    # the default stays a backtest's
    assert "<h1>mltrade backtest: momentum</h1>" in (run.run_dir / "report.html").read_text()


def test_session_closes_are_plotted_at_the_sessions_last_bar(run):
    figs = dict(_figures(run.equity, run.trades, 10_000.0))
    xs = figs["Cumulative return vs the index (session closes)"].axes[0].lines[0].get_xdata()
    times = pd.to_datetime([mdates.num2date(x) if isinstance(x, float) else x for x in xs])
    assert len(times) == 10 and all((t.hour, t.minute) == (15, 55) for t in times)
    # short runs draw the index bar by bar, so entries and exits sit on the line
    idx_line = figs["Index with entries, exits and knock-outs"].axes[0].lines[0]
    assert len(idx_line.get_xdata()) == len(run.equity)


def test_trade_table_reads_like_a_statement(run):
    page = (run.run_dir / "report.html").read_text()
    table = page[page.index("<table class='trades'>"):]
    table = table[:table.index("</table>")]
    text = _text(table)
    t = run.trades.iloc[-1]
    assert "sold at" in text and "exit reason" in text and "entry_underlying" not in text
    assert str(t["entry_time"]).replace("T", " ")[:16] in text and "T10:" not in text
    assert f" {int(t['size']):,d} " in text and f"{t['pnl']:+,.2f}" in text
