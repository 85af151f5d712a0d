"""ML-only pricing over a session, overlay summary (overlay vs ML-only) and the report section."""
from __future__ import annotations

import json
import math
from datetime import datetime

import pandas as pd
import pytest

from mltrade.llm import (LLMClient, LLMOverlay, ReplayCache, Responder, build_messages, cache_key,
                         call_key, price_decision, trades_pnl_on_sessions)
from mltrade.llm.contract import LLMRequest
from mltrade.strategies.decision import Decision, DecisionContext

RATIO, SPREAD, FEE, STAKE = 0.01, 0.01, 1.0, 1000.0


def session(rows: list[tuple[float, float, float, float]], day: str = "2018-03-05") -> pd.DataFrame:
    idx = pd.date_range(f"{day} 09:30", periods=len(rows), freq="5min", tz="America/New_York")
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=idx).assign(volume=1.0)


def long_at(barrier: float = 9600.0, stop: float | None = 0.71, day: str = "2018-03-05") -> Decision:
    return Decision(direction=1, price=10000.0, time=datetime.fromisoformat(f"{day} 09:35"), barrier=barrier,
                    stop=stop)


def price(d: Decision, bars: pd.DataFrame) -> dict:
    return price_decision(d, bars, ratio=RATIO, spread=SPREAD, commission=FEE, stake=STAKE)


def expected(entry_underlying: float, exit_value: float, barrier: float = 9600.0, direction: int = 1,
             pct: float = 0.0, stake: float = STAKE, knockout: bool = False):
    """Hand pricing: ask = intrinsic, whole certificates after the fixed fee and the % fee, fee per fill
    ``FEE + pct * n * price`` (none on a knock-out exit, as the broker)."""
    entry = direction * (entry_underlying - barrier) * RATIO
    n = math.floor((stake - FEE) / (entry * (1 + pct)) + 1e-9)
    fees = FEE + pct * n * entry + (0.0 if knockout else FEE + pct * n * exit_value)
    return n, n * (exit_value - entry) - fees


FLAT = [(10000, 10005, 9995, 10000), (10000, 10010, 9990, 10005)]


def test_held_to_session_end_enters_at_next_open():
    bars = session(FLAT + [(10010, 10030, 10000, 10020), (10020, 10050, 10015, 10040)])
    r = price(long_at(), bars)
    n, pnl = expected(10010, (10040 - 9600) * RATIO - SPREAD)
    assert (r["exit_reason"], r["size"], r["entry"]) == ("session_end", n, pytest.approx(4.10))
    assert r["pnl"] == pytest.approx(pnl)


def test_stop_inside_bar_and_on_a_gap():
    bars = session(FLAT + [(10000, 10010, 9850, 9900), (9900, 9950, 9890, 9940)])
    r = price(long_at(), bars)
    assert r["exit_reason"] == "stop" and r["exit"] == pytest.approx(0.71 * 4.0)
    gap = session(FLAT + [(10000, 10010, 9950, 9990), (9870, 9900, 9860, 9890)])
    r = price(long_at(), gap)
    assert r["exit_reason"] == "stop" and r["exit"] == pytest.approx((9870 - 9600) * RATIO - SPREAD)
    assert r["pnl"] == pytest.approx(expected(10000, r["exit"])[1])


def test_knockout_without_stop_and_through_a_gap():
    bars = session(FLAT + [(10000, 10010, 9590, 9700), (9700, 9750, 9690, 9740)])
    r = price(long_at(stop=None), bars)
    assert (r["exit_reason"], r["exit"]) == ("knockout", 0.0)
    assert r["pnl"] == pytest.approx(expected(10000, 0.0, knockout=True)[1])  # no fee on the knock-out
    gap = session(FLAT + [(10000, 10010, 9950, 9990), (9590, 9700, 9580, 9650)])
    r = price(long_at(), gap)  # with a stop, but the open is already through the barrier
    assert (r["exit_reason"], r["exit"]) == ("knockout", 0.0)


def test_short_and_no_trade_cases():
    bars = session(FLAT + [(10000, 10020, 9990, 9980), (9980, 9990, 9900, 9910)])
    d = Decision(direction=-1, price=10000.0, time=datetime(2018, 3, 5, 9, 35), distance=0.04, stop=0.71)
    r = price(d, bars)
    n, pnl = expected(10000, (10400 - 9910) * RATIO - SPREAD, barrier=10400, direction=-1)
    assert (r["exit_reason"], r["size"]) == ("session_end", n) and r["pnl"] == pytest.approx(pnl)
    assert price(long_at(), session(FLAT))["exit_reason"] == "no_bars"  # decided on the last bar
    assert price(long_at(), session(FLAT + [(9500, 9600, 9400, 9500)]))["exit_reason"] == \
        "knocked_out_before_entry"
    assert price(Decision(0, 10000.0, time=datetime(2018, 3, 5, 9, 35)), bars)["pnl"] == 0.0
    other_day = session(FLAT + [(10000, 10010, 9990, 10005)], day="2018-03-06")
    assert price(long_at(), other_day)["exit_reason"] == "no_bars"


def test_daily_bars_trade_the_next_session_open_to_close():
    idx = pd.DatetimeIndex(["2018-03-05", "2018-03-06", "2018-03-07"])
    bars = pd.DataFrame({"open": [10000.0, 10010.0, 9000.0], "high": [10050.0, 10100.0, 9100.0],
                         "low": [9950.0, 9990.0, 8900.0], "close": [10020.0, 10080.0, 9050.0]}, index=idx)
    d = Decision(direction=1, price=10020.0, time=datetime(2018, 3, 5), barrier=9600.0, stop=0.71)
    r = price(d, bars)
    assert r["exit_reason"] == "session_end"
    assert r["pnl"] == pytest.approx(expected(10010, (10080 - 9600) * RATIO - SPREAD)[1])


def seeded_overlay(tmp_path, answers: list[tuple[Decision, DecisionContext, dict]]) -> LLMOverlay:
    """A replay overlay whose cache holds ``answers`` for exactly these decisions (the real replay path)."""
    client = LLMClient(base_url="http://127.0.0.1:9/v1", model="grok-test")
    cache = ReplayCache(str(tmp_path / "seed.sqlite"))
    for d, ctx, answer in answers:
        msgs = build_messages(LLMRequest.from_decision(d, ctx, 17))
        prompt = cache_key(client.model, msgs, client.parameters())
        # the first review of the decision at this time, first attempt
        cache.put(call_key(f"{d.time.isoformat()}#0", 0, prompt), client.model, {"messages": msgs},
                  json.dumps(answer))
    return LLMOverlay(Responder("replay", client, cache))


def test_summary_compares_overlay_with_ml_only_on_the_same_sessions(tmp_path):
    day1 = session(FLAT + [(10000, 10010, 9850, 9900), (9900, 9950, 9890, 9880)], "2018-03-05")
    day2 = session(FLAT + [(10010, 10030, 10000, 10020), (10020, 10050, 10015, 10040)], "2018-03-06")
    bars = pd.concat([day1, day2])
    d1, d2 = long_at(day="2018-03-05"), long_at(day="2018-03-06")
    c1, c2 = DecisionContext(day1.iloc[:2]), DecisionContext(day2.iloc[:2])
    ov = seeded_overlay(tmp_path, [
        (d1, c1, {"action": "BUY", "position": ["Short", 10500, "<b>falling</b> & weak"]}),
        (d2, c2, {"action": "BUY", "direction": "Long", "barrier": 9500, "reasoning": "wider"}),
    ])
    f1, f2 = ov.review(d1, c1), ov.review(d2, c2)
    assert (f1.direction, f2.barrier) == (-1, 9500.0)
    trades = [{"entry_time": "2018-03-05T09:40:00-05:00", "pnl": 12.5},
              {"entry_time": "2018-03-06T09:40:00-05:00", "pnl": -2.5},
              {"entry_time": "2018-03-07T09:40:00-05:00", "pnl": 100.0}]
    pricing = dict(ratio=RATIO, spread=SPREAD, commission=FEE, stake=STAKE)
    s = ov.summary(bars, trades, **pricing)
    assert (s["reviews"], s["reversed"], s["adjusted"], s["failed"], s["cache_hits"]) == (2, 1, 1, 0, 2)
    ml = price(d1, bars)["pnl"] + price(d2, bars)["pnl"]
    overlay = price(f1, bars)["pnl"] + price(f2, bars)["pnl"]
    assert ml < 0 < overlay  # the stop on day 1 hurt the long; the reversal profited
    assert s["ml_only_pnl"] == pytest.approx(ml) and s["overlay_pnl"] == pytest.approx(overlay)
    assert s["overlay_minus_ml"] == pytest.approx(overlay - ml)
    assert s["strategy_trades_pnl"] == pytest.approx(10.0)
    assert s["by_outcome"]["reversed"]["n"] == 1
    title, html = ov.report_section(bars, trades, **pricing)
    assert title == "LLM overlay"
    assert "&lt;b&gt;falling&lt;/b&gt; &amp; weak" in html and "<b>falling" not in html
    assert "reversed_ok" in html and "barrier_further" in html and f"{ml:.2f}" in html
    assert "Short @ 10500.00" in html
    frame = ov.records_frame()
    assert list(frame["outcome"]) == ["reversed", "adjusted"] and list(frame["llm_barrier"]) == [10500.0, 9500.0]
    assert list(frame["ml_barrier"]) == [9600.0, 9600.0]


def test_counts_without_bars_and_trades_validation():
    ov = LLMOverlay(Responder("dry"))
    assert ov.summary()["reviews"] == 0 and "ml_only_pnl" not in ov.summary()
    assert ov.records_frame().empty and "outcome" in ov.records_frame().columns
    assert ov.review(Decision(0, 100.0), DecisionContext(pd.DataFrame())).direction == 0
    assert ov.records == []
    with pytest.raises(ValueError, match="entry time column"):
        trades_pnl_on_sessions([{"when": 1, "pnl": 2}], [])


# -- broker fees (commission_pct) and compounding ------------------------------------------------------
PCT = 0.01


def test_commission_pct_sizes_and_charges_like_the_broker():
    bars = session(FLAT + [(10010, 10030, 10000, 10020), (10020, 10050, 10015, 10040)])
    r = price_decision(long_at(), bars, ratio=RATIO, spread=SPREAD, commission=FEE, stake=STAKE,
                       commission_pct=PCT)
    # by hand: ask 4.10, 999 / (4.10 * 1.01) = 241.2 -> 241 (243 without the % fee); exit bid 4.39
    assert (r["size"], r["entry"], r["exit"]) == (241, pytest.approx(4.10), pytest.approx(4.39))
    fees = (1.0 + 0.01 * 241 * 4.10) + (1.0 + 0.01 * 241 * 4.39)
    assert r["fees"] == pytest.approx(fees) and r["pnl"] == pytest.approx(241 * (4.39 - 4.10) - fees)
    assert (r["size"], r["pnl"]) == (pytest.approx(expected(10010, 4.39, pct=PCT)[0]),
                                     pytest.approx(expected(10010, 4.39, pct=PCT)[1]))
    ko = session(FLAT + [(10000, 10010, 9590, 9700), (9700, 9750, 9690, 9740)])
    r = price_decision(long_at(stop=None), ko, ratio=RATIO, spread=SPREAD, commission=FEE, stake=STAKE,
                       commission_pct=PCT)
    n = math.floor(999 / (4.00 * 1.01))  # 247
    assert (r["exit_reason"], r["size"]) == ("knockout", n)
    assert r["pnl"] == pytest.approx(-n * 4.00 - (1.0 + 0.01 * n * 4.00))  # entry fee only


def two_session_overlay(tmp_path):
    day1 = session(FLAT + [(10000, 10010, 9850, 9900), (9900, 9950, 9890, 9880)], "2018-03-05")
    day2 = session(FLAT + [(10010, 10030, 10000, 10020), (10020, 10050, 10015, 10040)], "2018-03-06")
    d1, d2 = long_at(day="2018-03-05"), long_at(day="2018-03-06")
    c1, c2 = DecisionContext(day1.iloc[:2]), DecisionContext(day2.iloc[:2])
    ov = seeded_overlay(tmp_path, [
        (d2, c2, {"action": "BUY", "direction": "Long", "barrier": 9500, "reasoning": "wider"}),
        (d1, c1, {"action": "BUY", "position": ["Short", 10500, "falling"]}),
    ])
    ov.review(d2, c2)  # reviewed out of order: compounding must follow the decision times
    ov.review(d1, c1)
    return ov, pd.concat([day1, day2])


def test_compound_carries_cash_from_session_to_session(tmp_path):
    ov, bars = two_session_overlay(tmp_path)
    pricing = dict(ratio=RATIO, spread=SPREAD, commission=FEE, stake=STAKE, commission_pct=PCT)
    # ML-only, by hand. Day 1: long 4.00, stopped at 0.71 * 4.00 = 2.84. Day 2: long 4.10 -> bid 4.39.
    n1, pnl1 = expected(10000, 2.84, pct=PCT)
    n2, pnl2 = expected(10010, 4.39, pct=PCT, stake=STAKE + pnl1)
    # overlay: day 1 short, barrier 10500: ask 5.00, held to the close 9880 -> bid 6.19; day 2 long 9500
    m1, q1 = expected(10000, (10500 - 9880) * RATIO - SPREAD, barrier=10500, direction=-1, pct=PCT)
    m2, q2 = expected(10010, (10040 - 9500) * RATIO - SPREAD, barrier=9500, pct=PCT, stake=STAKE + q1)
    assert pnl1 < 0 < q1 and n2 < n1 and m2 > m1  # the loss shrinks ML's day-2 stake, the gain grows the overlay's

    s = ov.summary(bars, **pricing, compound=True)
    assert s["ml_only_pnl"] == pytest.approx(pnl1 + pnl2)
    assert s["overlay_pnl"] == pytest.approx(q1 + q2)
    assert s["ml_only_final_cash"] == pytest.approx(STAKE + pnl1 + pnl2)
    assert s["overlay_final_cash"] == pytest.approx(STAKE + q1 + q2)
    assert s["pricing"]["compound"] is True and s["pricing"]["commission_pct"] == PCT

    flat = ov.summary(bars, **pricing)  # default: every session stakes the starting cash
    assert flat["ml_only_pnl"] == pytest.approx(pnl1 + expected(10010, 4.39, pct=PCT)[1])
    assert flat["pricing"]["compound"] is False and "ml_only_final_cash" not in flat

    half = ov.summary(bars, **pricing, compound=True, stake_fraction=0.5)
    h1 = expected(10000, 2.84, pct=PCT, stake=STAKE / 2)[1]
    assert half["ml_only_pnl"] == pytest.approx(h1 + expected(10010, 4.39, pct=PCT, stake=(STAKE + h1) / 2)[1])
    with pytest.raises(ValueError, match="stake_fraction"):
        ov.summary(bars, **pricing, compound=True, stake_fraction=1.5)


def test_pricing_for_an_all_cash_strategy_matches_the_broker_to_the_cent():
    """A real backtest staking all its cash with a % fee: the compounded overlay pricing equals the
    broker's realised P&L."""
    import backtrader as bt

    from mltrade.brokers.knockout import KnockoutBroker
    from mltrade.feeds.bars import IndexData
    from mltrade.feeds.sample import sample_intraday
    from mltrade.llm import build_overlay, pricing_for
    from mltrade.strategies.reference import IntradayMomentum

    bars = sample_intraday("2018-03-05", "2018-03-16")
    ov = build_overlay({"llm": {"mode": "dry", "max_leverage": 0}})
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.setbroker(KnockoutBroker(cash=10_000.0, commission_fixed=1.5, commission_pct=0.002))
    cerebro.adddata(IndexData(dataframe=bars, exchange="XNAS", interval=5))
    cerebro.addstrategy(IntradayMomentum, overlay=ov, spread=SPREAD, ratio=RATIO)
    strat = cerebro.run()[0]
    rts = cerebro.broker.roundtrips
    assert len(rts) >= 5
    p = pricing_for(strat)
    assert (p["compound"], p["stake"], p["commission"], p["commission_pct"]) == (True, 10_000.0, 1.5, 0.002)
    s = ov.summary(strategy=strat)
    realised = sum(t["pnl"] for t in rts)
    assert s["overlay_pnl"] == pytest.approx(realised, abs=0.005)
    assert s["strategy_trades_pnl"] == pytest.approx(realised)
    assert s["overlay_final_cash"] == pytest.approx(cerebro.broker.getcash(), abs=0.005)
    # what the old pricing did (starting cash every session, fixed fee only) is off by far more than a cent
    old = ov.summary(strategy=strat, compound=False, commission_pct=0.0)
    assert abs(old["overlay_pnl"] - realised) > 1.0
