"""Integration: real backtests of ``IntradayMomentum`` with the LLM overlay (dry, record, replay)."""
from __future__ import annotations

import itertools
import json
import re
from datetime import date

import backtrader as bt
import pandas as pd
import pytest

from mltrade.brokers.knockout import KnockoutBroker
from mltrade.feeds.bars import IndexData
from mltrade.feeds.sample import sample_intraday
from mltrade.llm import LLMClient, LLMOverlay, ReplayCache, Responder, build_overlay, price_decision
from mltrade.strategies.reference import IntradayMomentum
from tests.fake_openai import FakeOpenAI

ENV = "MLTRADE_TEST_LLM_KEY"
PRICING = dict(ratio=0.01, spread=0.01, commission=1.0, stake=1000.0)


@pytest.fixture(scope="module")
def bars():
    return sample_intraday("2018-03-05", "2018-03-16")  # 10 sessions of synthetic 5-minute bars


def backtest(df, overlay: LLMOverlay):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.setbroker(KnockoutBroker(cash=10_000.0, commission_fixed=PRICING["commission"]))
    cerebro.adddata(IndexData(dataframe=df, exchange="XNAS", interval=5))
    cerebro.addstrategy(IntradayMomentum, overlay=overlay, spread=PRICING["spread"], ratio=PRICING["ratio"],
                        stake=PRICING["stake"])
    strat = cerebro.run()[0]
    return strat, cerebro.broker.roundtrips


def fingerprint(overlay: LLMOverlay, roundtrips) -> tuple:
    recs = [(r.outcome, r.reason, r.final.direction, r.final.barrier_level()) for r in overlay.records]
    rts = [(t["entry_time"], t["direction"], t["barrier"], t["exit_reason"], round(t["pnl"], 9))
           for t in roundtrips]
    return recs, rts


def test_dry_overlay_drives_the_backtest_and_prices_like_the_broker(bars):
    ov = build_overlay({"llm": {"mode": "dry", "max_leverage": 0}})
    strat, rts = backtest(bars, ov)
    n_sessions = len(set(bars.index.date))
    assert len(ov.records) == len(strat.decisions) == n_sessions
    assert {r.outcome for r in ov.records} <= {"confirmed", "adjusted"}
    assert len(rts) == n_sessions
    by_day = {r.ml.time.date(): r for r in ov.records}
    for dec, rt in zip(strat.decisions, rts):
        rec = by_day[date.fromisoformat(dec["time"][:10])]
        assert dec["direction"] == rec.final.direction and dec["barrier"] == pytest.approx(rec.final.barrier)
        assert rt["barrier"] == pytest.approx(rec.final.barrier)
        priced = price_decision(rec.final, bars, **PRICING)
        assert priced["exit_reason"] == rt["exit_reason"]
        assert priced["pnl"] == pytest.approx(rt["pnl"], rel=1e-9, abs=1e-9)
    s = ov.summary(bars, rts, **PRICING)
    assert s["strategy_trades_pnl"] == pytest.approx(s["overlay_pnl"])
    assert s["sessions_priced"] == n_sessions
    # deterministic: a second run gives the same decisions and trades
    ov2 = build_overlay({"llm": {"mode": "dry", "max_leverage": 0}})
    assert fingerprint(ov2, backtest(bars, ov2)[1]) == fingerprint(ov, rts)


def reverse_wider():
    """Server-side policy: reverse every proposal with a barrier 5 % away; garbage on every third call."""
    calls = itertools.count()

    def answer(body: dict) -> str:
        n = next(calls)
        text = body["messages"][1]["content"] if len(body["messages"]) == 2 else ""
        if not text:  # a repair turn
            return json.dumps({"action": "SKIP", "reasoning": "repaired: no trade"})
        if n % 3 == 2:
            return "Let me think about it... the market looks"
        price = float(re.search(r"Current index price: (\S+)", text).group(1))
        long_ = "Proposed direction: Long" in text
        barrier = round(price * (1.05 if long_ else 0.95), 2)
        position = ["Short" if long_ else "Long", barrier, "contrarian"]
        return json.dumps({"action": "BUY", "position": position})
    return answer


def test_record_then_replay_backtest_is_identical_offline(bars, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "xai-integration-key")
    path = str(tmp_path / "bt.sqlite")

    def overlay(mode: str, url: str) -> LLMOverlay:
        client = LLMClient(base_url=url, model="grok-test", api_key_env=ENV, timeout=2.0, max_retries=0)
        return LLMOverlay(Responder(mode, client, ReplayCache(path)))

    with FakeOpenAI([reverse_wider()]) as srv:
        rec = overlay("record", srv.base_url)
        _, rts1 = backtest(bars, rec)
        calls = srv.calls
    outcomes = {r.outcome for r in rec.records}
    assert {"reversed", "skipped"} <= outcomes and calls == rec.responder.api_calls > len(rec.records)
    assert all(r.final.direction == -r.ml.direction for r in rec.records if r.outcome == "reversed")

    monkeypatch.delenv(ENV)  # replay needs no key and no server
    with FakeOpenAI(["must not be called"]) as srv2:
        rep = overlay("replay", srv2.base_url)
        _, rts2 = backtest(bars, rep)
        assert srv2.calls == 0
    assert rep.responder.api_calls == 0 and rep.responder.cache_hits == calls
    assert fingerprint(rep, rts2) == fingerprint(rec, rts1)
    s = rep.summary(bars, rts2, **PRICING)
    assert s["reversed"] + s["skipped"] == len(rep.records)
    assert s["strategy_trades_pnl"] == pytest.approx(s["overlay_pnl"])


def test_run_backtest_with_overlay_writes_the_llm_section(tmp_path):
    from mltrade.backtest import run_backtest
    from mltrade.config import load_config

    cfg = load_config(None, {"backtest": {"start": "2018-03-05", "end": "2018-03-09", "baselines": False,
                                          "out": str(tmp_path)}, "llm": {"mode": "dry"}})
    ov = build_overlay(cfg)
    res = run_backtest(cfg, run_name="llm", extra_params={"overlay": ov})
    assert len(ov.records) == 5 and len(res.trades) == 5
    html = (tmp_path / "llm" / "report.html").read_text()
    assert "LLM overlay" in html and ("barrier_further" in html or "same_barrier" in html)
    s = ov.summary(strategy=res.strategy)
    assert s["strategy_trades_pnl"] == pytest.approx(float(res.trades["pnl"].sum()))
    assert s["pricing"]["stake"] == 10_000.0 and s["pricing"]["commission"] == 1.0
    assert s["sessions_priced"] == 5


def test_cli_backtest_llm_flag_in_replay_mode_with_an_empty_cache_fails_clearly(tmp_path, capsys):
    from mltrade.cli import main

    conf = tmp_path / "c.toml"
    conf.write_text('[backtest]\nstart = "2018-03-05"\nend = "2018-03-06"\nbaselines = false\n'
                    f'out = "{tmp_path}"\n'
                    f'[llm]\nmode = "replay"\ncache_path = "{tmp_path / "none.sqlite"}"\n')
    assert main(["backtest", "--config", str(conf), "--llm", "--quiet", "--name", "r"]) == 2
    err = capsys.readouterr().err
    assert re.search(r'no stored answer for key [0-9a-f]{64} \(decision 2018-03-05T10:50:00#0\) '
                     r'in .*none.sqlite.*mode = "record"', err), err
    conf.write_text(conf.read_text().replace('mode = "replay"', 'mode = "dry"'))
    assert main(["backtest", "--config", str(conf), "--llm", "--quiet", "--name", "d"]) == 0
    assert "LLM overlay" in (tmp_path / "d" / "report.html").read_text()


def test_cli_backtest_llm_online_against_a_compatible_server(tmp_path, monkeypatch):
    from mltrade.cli import main

    monkeypatch.setenv(ENV, "xai-cli-key")
    with FakeOpenAI([reverse_wider()]) as srv:
        conf = tmp_path / "live.toml"
        conf.write_text('[backtest]\nstart = "2018-03-05"\nend = "2018-03-07"\nbaselines = false\n'
                        f'out = "{tmp_path}"\n[llm]\nmode = "record"\nbase_url = "{srv.base_url}"\n'
                        f'model = "any-model"\napi_key_env = "{ENV}"\ntimeout = 2.0\nmax_retries = 0\n'
                        f'cache_path = "{tmp_path / "rec.sqlite"}"\n')
        assert main(["backtest", "--config", str(conf), "--llm", "--quiet", "--name", "online"]) == 0
        assert srv.calls >= 3 and {r["body"]["model"] for r in srv.requests} == {"any-model"}
    assert len(ReplayCache(str(tmp_path / "rec.sqlite"))) == srv.calls
    html = (tmp_path / "online" / "report.html").read_text()
    assert "LLM overlay" in html and "reversed_ok" in html and "Prompts <b>anonymized</b>" in html
    # replay (anonymised prompts, no key, no server) reproduces the recorded run trade for trade
    monkeypatch.delenv(ENV)
    conf.write_text(conf.read_text().replace('mode = "record"', 'mode = "replay"'))
    assert main(["backtest", "--config", str(conf), "--llm", "--quiet", "--name", "replayed"]) == 0
    rec, rep = (pd.read_csv(tmp_path / n / "trades.csv") for n in ("online", "replayed"))
    assert len(rec) > 0
    pd.testing.assert_frame_equal(rec, rep)


def echo(factor: float = 1.0, answers: list | None = None):
    """Server-side policy: keep the direction, barrier ``factor`` times as far from the shown price."""
    def answer(body: dict) -> str:
        text = body["messages"][1]["content"]
        price = float(re.search(r"Current index price: (\S+)", text).group(1))
        barrier = float(re.search(r"Proposed knock-out barrier: (\S+)", text).group(1))
        direction = re.search(r"Proposed direction: (\w+)", text).group(1)
        shown = round(price - factor * (price - barrier), 4)
        if answers is not None:
            answers.append(shown)
        return json.dumps({"action": "BUY", "direction": direction, "barrier": shown, "reasoning": "ok"})
    return answer


def online_config(tmp_path, url: str, **llm) -> dict:
    from mltrade.config import load_config

    return load_config(None, {"backtest": {"start": "2018-03-05", "end": "2018-03-09", "out": str(tmp_path),
                                           "baselines": llm.pop("baselines", False)},
                              "llm": {"mode": "live", "base_url": url, "api_key_env": ENV, "timeout": 2.0,
                                      "max_retries": 0, **llm}})


def test_baselines_do_not_go_through_the_overlay(tmp_path, monkeypatch):
    from mltrade.backtest import run_backtest

    monkeypatch.setenv(ENV, "xai-key")
    with FakeOpenAI([echo()]) as srv:
        cfg = online_config(tmp_path, srv.base_url, baselines=True)
        ov = build_overlay(cfg)
        res = run_backtest(cfg, run_name="b", extra_params={"overlay": ov})
        calls = srv.calls
    assert set(res.baselines) == {"buy_and_hold", "always_long", "random_direction"}
    decided = [d for d in res.strategy.decisions if d["ml_direction"]]
    # one review per strategy decision, none for the baselines
    assert calls == len(decided) == len(ov.records) == 5
    assert res.summary["llm"]["reviews"] == res.summary["llm"]["sessions_priced"] == 5
    assert ov.summary(strategy=res.strategy)["reviews"] == 5  # what the report's LLM section shows


WEEKDAYS = r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(day|sday|nesday|rsday|urday)?\b"


def test_anonymized_prompts_hide_dates_and_levels_and_barriers_map_back(tmp_path, monkeypatch):
    from mltrade.backtest import run_backtest
    from mltrade.feeds.source import load_bars

    monkeypatch.setenv(ENV, "xai-key")
    answers: list = []
    with FakeOpenAI([echo(1.5, answers)]) as srv:
        cfg = online_config(tmp_path, srv.base_url)  # anonymize: on by default in backtests
        ov = build_overlay(cfg)
        res = run_backtest(cfg, run_name="anon", extra_params={"overlay": ov})
        prompts = ["\n".join(m["content"] for m in r["body"]["messages"]) for r in srv.requests]
        plain = online_config(tmp_path, srv.base_url, anonymize=False)
        run_backtest(plain, run_name="plain", extra_params={"overlay": build_overlay(plain)})
        plain_prompts = [r["body"]["messages"][1]["content"] for r in srv.requests[len(prompts):]]
    bars = load_bars(cfg)
    real = {f"{x:.2f}" for x in bars[["open", "high", "low", "close"]].to_numpy().ravel()}
    real |= {f"{d['ml_barrier']:.2f}" for d in res.strategy.decisions} | {f"{d['price']:.2f}" for d in
                                                                          res.strategy.decisions}
    assert len(prompts) == 5
    for text in prompts:
        assert not re.search(r"\d{4}-\d\d-\d\d|(?<![\d.])(19|20)\d\d(?![\d.])", text), text
        assert not re.search(WEEKDAYS, text) and "Mar" not in text
        shown = {f"{float(x):.2f}" for x in re.findall(r"\d+\.\d+", text)}
        assert not shown & real, shown & real
    # the same check finds the dates and levels when anonymize is off
    assert all(re.search(r"2018-03-0\d", t) for t in plain_prompts)
    assert any({f"{float(x):.2f}" for x in re.findall(r"\d+\.\d+", t)} & real for t in plain_prompts)
    s = res.summary["llm"]
    assert s["anonymized"] is True and s["price_scale"] == ov.prices.scale and s["anonymize_seed"] == 0
    assert not (0.79 < ov.prices.to_prompt(bars["close"].iloc[0]) / bars["close"].iloc[0] < 1.26)
    # barriers map back: 1.5x as far on the shown scale is 1.5x as far in index points
    for rec, shown in zip(ov.records, answers):
        assert rec.outcome == "adjusted"
        assert rec.final.barrier == pytest.approx(ov.prices.to_real(shown), rel=1e-12)
        assert abs(rec.ml.price - rec.final.barrier) == pytest.approx(
            1.5 * abs(rec.ml.price - rec.ml.barrier_level()), rel=1e-5)
    assert list(res.trades["barrier"]) == pytest.approx([r.final.barrier for r in ov.records], rel=1e-12)


def test_llm_run_logs_one_summary_line_and_per_review_lines_at_debug(tmp_path, caplog):
    import logging

    from mltrade.backtest import run_backtest
    from mltrade.config import load_config

    caplog.set_level(logging.DEBUG, logger="mltrade.llm")
    cfg = load_config(None, {"backtest": {"start": "2018-03-05", "end": "2018-03-09", "baselines": False,
                                          "out": str(tmp_path)}, "llm": {"mode": "dry"}})
    run_backtest(cfg, run_name="log", extra_params={"overlay": build_overlay(cfg)})
    mine = [r for r in caplog.records if r.name == "mltrade.llm"]
    info = [r.getMessage() for r in mine if r.levelno >= logging.INFO]
    assert len(info) == 1 and info[0].startswith("llm overlay (dry, anonymized): 5 reviews: "), info
    assert len([r for r in mine if r.levelno == logging.DEBUG]) >= 5


def test_missing_api_key_fails_at_start_naming_the_variable(tmp_path, monkeypatch, capsys):
    from mltrade.cli import main

    monkeypatch.delenv(ENV, raising=False)
    conf = tmp_path / "rec.toml"
    conf.write_text(f'[backtest]\nout = "{tmp_path}"\n[llm]\nmode = "record"\napi_key_env = "{ENV}"\n'
                    f'base_url = "http://127.0.0.1:9/v1"\ncache_path = "{tmp_path / "c.sqlite"}"\n')
    assert main(["backtest", "--config", str(conf), "--llm", "--quiet", "--name", "nokey"]) == 2
    err = capsys.readouterr().err
    assert f"environment variable {ENV} is not set" in err and "[llm] api_key_env" in err
    assert not (tmp_path / "nokey").exists() and not (tmp_path / "c.sqlite").exists()  # nothing ran
