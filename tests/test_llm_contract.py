"""Decision contract: parsing of the model's answer and the rules enforced in code."""
from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrade.llm.contract import (ContractError, ContractRules, LLMRequest, LLMResponse, extract_json,
                                  leverage, parse_text, validate)
from mltrade.llm.prompt import build_messages, repair_messages
from mltrade.strategies.decision import Decision, DecisionContext


def candles(n: int = 20, start: float = 15000.0, step: float = 2.0) -> pd.DataFrame:
    idx = pd.date_range("2018-03-05 09:30", periods=n, freq="5min", tz="America/New_York")
    close = start + step * pd.Series(range(1, n + 1), index=idx, dtype=float)
    return pd.DataFrame({"open": close - step, "high": close + 3, "low": close - step - 3, "close": close,
                         "volume": 100.0}, index=idx)


def request(direction: int = 1, price: float = 10000.0, distance: float = 0.04) -> LLMRequest:
    return LLMRequest(direction=direction, barrier=price * (1 - direction * distance), price=price)


# -- parsing -----------------------------------------------------------------
def test_original_shape_is_parsed():
    r = parse_text('{"action": "BUY", "position": ["Short", 10450.5, "overbought"]}')
    assert r == LLMResponse("BUY", -1, 10450.5, "overbought")


def test_flat_shape_with_unknown_fields_is_parsed():
    r = parse_text('{"action": "buy", "direction": "Long", "barrier": "9,600.0", "reasoning": "trend",'
                   ' "confidence": 0.9, "extra": {"x": 1}}')
    assert (r.direction, r.barrier, r.reasoning) == (1, 9600.0, "trend")


def test_json_in_prose_and_fences():
    text = ('Looking at the candles, the trend is up.\n```json\n{"action": "BUY", "position": '
            '["Long", 9500, "higher lows"]}\n```\nGood luck!')
    assert parse_text(text).barrier == 9500
    prose = 'My answer is {"action": "SELL", "direction": "Short", "barrier": 10400} as requested.'
    assert parse_text(prose).direction == -1


def test_skip_needs_no_position():
    assert parse_text('{"action": "SKIP", "reasoning": "choppy"}').direction == 0


@pytest.mark.parametrize("text,code", [
    ('{"action": "BUY", "position": ["Long", 9500', "invalid_json"),
    ("no json here at all", "invalid_json"),
    ("", "empty_answer"),
    ('{"position": ["Long", 9500, "x"]}', "missing_field"),
    ('{"action": "BUY", "direction": "Long"}', "missing_field"),
    ('{"action": "BUY", "position": ["Long"]}', "missing_field"),
    ('{"action": "MAYBE", "position": ["Long", 9500, "x"]}', "invalid_value"),
    ('{"action": "BUY", "position": ["Sideways", 9500, "x"]}', "invalid_value"),
    ('{"action": "BUY", "position": ["Long", "far away", "x"]}', "invalid_value"),
    ('{"action": "BUY", "position": ["Long", -5, "x"]}', "invalid_value"),
    ('{"action": "BUY", "position": ["Long", true, "x"]}', "invalid_value"),
    ('["BUY", "Long"]', "invalid_json"),
])
def test_bad_answers_are_refused_with_a_code(text, code):
    with pytest.raises(ContractError) as e:
        parse_text(text)
    assert e.value.code == code


def test_extract_json_prefers_first_complete_object():
    assert extract_json('x {"a": 1} y {"b": 2}') == {"a": 1}


# -- rules -------------------------------------------------------------------
def test_confirm_adjust_reverse():
    req = request(1, 10000.0, 0.04)  # ML: long, barrier 9600
    v = validate(req, LLMResponse("BUY", 1, 9600.0))
    assert (v.accepted, v.outcome, v.reason, v.barrier) == (True, "confirmed", "same_barrier", 9600.0)
    v = validate(req, LLMResponse("BUY", 1, 9400.0))
    assert (v.outcome, v.reason, v.barrier) == ("adjusted", "barrier_further", 9400.0)
    v = validate(req, LLMResponse("BUY", -1, 10500.0))
    assert (v.outcome, v.reason, v.direction, v.barrier) == ("reversed", "reversed_ok", -1, 10500.0)
    v = validate(req, LLMResponse("SKIP", 0, None))
    assert (v.accepted, v.outcome, v.reason) == (True, "skipped", "model_skip")


@pytest.mark.parametrize("direction,barrier", [(1, 10100.0), (1, 10000.0), (-1, 9900.0), (-1, 10000.0)])
def test_wrong_side_is_refused(direction, barrier):
    req = request(direction, 10000.0)
    v = validate(req, LLMResponse("BUY", direction, barrier), ContractRules(closer_barrier="clamp"))
    assert (v.accepted, v.reason) == (False, "wrong_side")


def test_closer_barrier_refused_or_clamped():
    req = request(-1, 10000.0, 0.04)  # ML: short, barrier 10400
    v = validate(req, LLMResponse("BUY", -1, 10200.0), ContractRules(closer_barrier="refuse"))
    assert (v.accepted, v.reason) == (False, "closer_barrier")
    v = validate(req, LLMResponse("BUY", -1, 10200.0), ContractRules(closer_barrier="clamp"))
    assert (v.accepted, v.outcome, v.reason, v.barrier) == (True, "confirmed", "closer_clamped", 10400.0)


def test_reversal_too_close_refused_or_clamped():
    req = request(1, 10000.0, 0.04)  # ML: long at 9600 (4 %)
    v = validate(req, LLMResponse("BUY", -1, 10100.0), ContractRules(closer_barrier="refuse"))
    assert (v.accepted, v.reason) == (False, "reversal_too_close")
    v = validate(req, LLMResponse("BUY", -1, 10100.0), ContractRules(closer_barrier="clamp"))
    assert (v.outcome, v.reason, v.direction) == ("reversed", "reversal_clamped", -1)
    assert v.barrier == pytest.approx(10400.0)


def test_leverage_cap_clamp_and_refuse():
    req = request(1, 10000.0, 0.01)  # ML itself at 100x
    v = validate(req, LLMResponse("BUY", 1, 9900.0), ContractRules(max_leverage=25, leverage_mode="clamp"))
    assert (v.outcome, v.reason) == ("adjusted", "leverage_clamped")
    assert leverage(10000.0, v.barrier) == pytest.approx(25.0)
    v = validate(req, LLMResponse("BUY", 1, 9900.0), ContractRules(max_leverage=25, leverage_mode="refuse"))
    assert (v.accepted, v.reason) == (False, "leverage_cap")
    v = validate(req, LLMResponse("BUY", 1, 9900.0), ContractRules(max_leverage=None))
    assert (v.outcome, v.barrier) == ("confirmed", 9900.0)


def test_rules_reject_bad_settings():
    with pytest.raises(ValueError, match="closer_barrier"):
        ContractRules(closer_barrier="allow")
    with pytest.raises(ValueError, match="max_leverage"):
        ContractRules(max_leverage=0.5)


@settings(max_examples=300, deadline=None)
@given(direction=st.sampled_from([1, -1]), rdir=st.sampled_from([1, -1]),
       ml_dist=st.floats(0.002, 0.2), ans_dist=st.floats(-0.3, 0.3),
       mode=st.sampled_from(["refuse", "clamp"]), lev_mode=st.sampled_from(["refuse", "clamp"]),
       cap=st.one_of(st.none(), st.floats(2, 200)))
def test_accepted_answers_always_obey_the_rules(direction, rdir, ml_dist, ans_dist, mode, lev_mode, cap):
    price = 12000.0
    req = request(direction, price, ml_dist)
    barrier = price * (1 - rdir * ans_dist)
    if barrier <= 0:
        return
    rules = ContractRules(closer_barrier=mode, max_leverage=cap, leverage_mode=lev_mode)
    v = validate(req, LLMResponse("BUY", rdir, barrier), rules)
    if not v.accepted:
        assert v.reason in ("wrong_side", "closer_barrier", "reversal_too_close", "leverage_cap")
        return
    assert v.direction == rdir
    assert (v.barrier < price) if rdir > 0 else (v.barrier > price)
    if cap is not None:
        assert leverage(price, v.barrier) <= cap * (1 + 1e-6)
    # never more leverage than the ML proposal (unless the cap forced it further, which only lowers it)
    assert abs(price - v.barrier) >= abs(price - req.barrier) * (1 - 1e-6)
    assert v.outcome == "reversed" if rdir != direction else v.outcome in ("confirmed", "adjusted")


# -- request and prompt ------------------------------------------------------
def test_request_from_decision_and_prompt():
    df = candles(25)
    price = float(df["close"].iloc[-1])
    d = Decision(direction=-1, price=price, time=datetime(2018, 3, 5, 11, 30), distance=0.03, stop=0.71)
    req = LLMRequest.from_decision(d, DecisionContext(candles=df, extra={"atr": 12.5}), n_candles=17)
    assert len(req.candles) == 17 and req.candles[-1].close == price
    assert req.barrier == pytest.approx(price * 1.03) and req.distance == pytest.approx(0.03)
    msgs = build_messages(req)
    assert msgs[0]["role"] == "system" and "below the current price" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert "Proposed direction: Short" in user and "Last 17 candles" in user and '"atr": 12.5' in user
    assert user.count("\n2018-03-05T") == 17
    rep = repair_messages(msgs, "{broken", "invalid_json: no object")
    assert [m["role"] for m in rep] == ["system", "user", "assistant", "user"]
    assert rep[2]["content"] == "{broken" and "invalid_json" in rep[3]["content"]
    json.dumps(req.to_payload())  # JSON-able


def test_request_rejects_bad_decisions():
    with pytest.raises(ValueError, match="direction"):
        LLMRequest.from_decision(Decision(direction=0, price=100.0, distance=0.04))
    with pytest.raises(ValueError, match="barrier or a distance"):
        LLMRequest.from_decision(Decision(direction=1, price=100.0))
    with pytest.raises(ContractError, match="wrong_side"):
        LLMRequest.from_decision(Decision(direction=1, price=100.0, barrier=101.0))
    with pytest.raises(ValueError, match="missing column"):
        LLMRequest.from_decision(Decision(direction=1, price=100.0, distance=0.04),
                                 DecisionContext(candles=pd.DataFrame({"close": [1.0]})))
