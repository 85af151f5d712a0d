"""The LLM overlay in live runs: paper venue, a real OpenAI-compatible server on 127.0.0.1
(tests/fake_openai.py), the replayed sample (anonymised: history a model may remember) and the live
TwelveData feed on a virtual clock (real dates and prices), the run's report and the CLI flag."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from mltrade.cli import main
from mltrade.config import load_config
from mltrade.live.runner import run_live
from tests.fake_openai import FakeOpenAI

ENV = "MLTRADE_TEST_LLM_KEY"
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def confirm(body: dict) -> str:
    """Server-side policy: keep the proposed direction and barrier."""
    text = body["messages"][1]["content"]
    barrier = float(re.search(r"Proposed knock-out barrier: (\S+)", text).group(1))
    direction = re.search(r"Proposed direction: (\w+)", text).group(1)
    return json.dumps({"action": "BUY", "direction": direction, "barrier": barrier, "reasoning": "ok"})


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "live-llm-key")
    c = load_config(None)
    c["live"].update(journal_path=str(tmp_path / "j.sqlite"), log_file=str(tmp_path / "live.log"),
                     kill_switch_file=str(tmp_path / "KILL"), screenshots_dir=str(tmp_path / "shots"),
                     report_dir=str(tmp_path / "reports"))
    c["llm"].update(enabled=True, mode="live", api_key_env=ENV, timeout=2.0, max_retries=0)
    return c


def test_paper_run_on_the_replayed_sample_reviews_each_decision_anonymized(cfg):
    with FakeOpenAI([confirm]) as srv:
        cfg["llm"]["base_url"] = srv.base_url
        r = run_live(cfg, "momentum", "paper", "sample", max_sessions=2)
        prompts = [q["body"]["messages"][1]["content"] for q in srv.requests]
    assert r.sessions == ["2018-06-01", "2018-06-04"] and len(r.trades) == 2
    assert srv.calls == 2                                   # one review per decision, no baseline calls
    assert not any(DATE.search(p) or "2018" in p for p in prompts)   # replayed history: anonymised
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert summary["llm"]["mode"] == "live" and summary["llm"]["anonymized"] is True
    assert summary["llm"]["api_calls"] == 2 and summary["llm"]["confirmed"] == 2
    page = (r.run_dir / "report.html").read_text()
    assert "<h1>mltrade live (paper): momentum</h1>" in page and "LLM overlay" in page
    assert "llm overlay (live, anonymized): 2 reviews: 2 confirmed" in r.llm_line
    # off unless asked: the same config with the overlay disabled calls nobody
    cfg["llm"]["enabled"] = False
    with FakeOpenAI([confirm]) as srv2:
        cfg["llm"]["base_url"] = srv2.base_url
        r2 = run_live(cfg, "momentum", "paper", "sample", max_sessions=1)
        assert srv2.calls == 0 and r2.llm_line is None and len(r2.trades) == 1


@pytest.mark.timeout(300)
def test_live_feed_sends_real_dates_and_prices(cfg):
    from mltrade.feeds.twelvedata import TwelveDataClient
    from tests.fake_twelvedata import FakeTwelveData, VirtualClock, random_bars

    bars = random_bars("2024-03-06", days=1, seed=11)
    clock = VirtualClock(pd.Timestamp("2024-03-06 06:00", tz="America/New_York").tz_convert("UTC"))
    with FakeTwelveData(bars, key="k-1", now=clock) as td, FakeOpenAI([confirm]) as srv:
        cfg["llm"]["base_url"] = srv.base_url
        client = TwelveDataClient(api_key="k-1", base_url=td.url, credits_per_minute=1000, rate_period=0.01,
                                  timeout=2.0, max_retries=0, backoff_base=0.0, now=clock, sleep=clock.sleep)
        r = run_live(cfg, "momentum", "paper", "twelvedata", max_sessions=1, clock=clock, sleep=clock.sleep,
                     feed_kwargs={"client": client, "max_wait": 60.0})
        prompts = [q["body"]["messages"][1]["content"] for q in srv.requests]
    assert r.sessions == ["2024-03-06"] and srv.calls == 1 and len(r.trades) == 1
    assert "2024-03-06" in prompts[0]                      # live: nothing to remember, real data
    price = float(re.search(r"Current index price: (\S+)", prompts[0]).group(1))
    decision_bar = bars[bars.index.normalize() == bars.index[0].normalize()].iloc[16]
    assert price == pytest.approx(float(decision_bar["close"]), rel=1e-6)
    assert json.loads((r.run_dir / "summary.json").read_text())["llm"]["anonymized"] is False


def test_cli_live_llm_flag_turns_the_overlay_on(cfg, tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text("[live]\n" + "".join(f'{k} = "{cfg["live"][k]}"\n' for k in
                                         ("journal_path", "log_file", "kill_switch_file", "screenshots_dir",
                                          "report_dir")))
    assert main(["live", "--venue", "paper", "--max-sessions", "1", "--llm", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "llm overlay (dry, anonymized): 1 reviews" in out
    assert main(["live", "--venue", "paper", "--max-sessions", "1", "--config", str(conf)]) == 0
    assert "llm overlay" not in capsys.readouterr().out


def test_missing_api_key_stops_the_live_run_before_the_first_session(cfg, monkeypatch):
    from mltrade.live.journal import OrderJournal
    from mltrade.llm import LLMConfigError

    monkeypatch.delenv(ENV)
    cfg["llm"]["base_url"] = "http://127.0.0.1:9"
    with pytest.raises(LLMConfigError, match=ENV):
        run_live(cfg, "momentum", "paper", "sample", max_sessions=1)
    j = OrderJournal(cfg["live"]["journal_path"], "paper")
    assert j.get_state("last_session") is None and j.entries() == []
    j.close()

