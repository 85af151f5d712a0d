"""The overlay against a real HTTP server on 127.0.0.1 through the real ``openai`` client."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime

import pandas as pd
import pytest

from mltrade.llm import REASONS, ContractRules, LLMClient, LLMConfigError, LLMOverlay, Responder
from mltrade.strategies.decision import Decision, DecisionContext
from tests.fake_openai import FakeOpenAI, Reply

KEY = "xai-SECRET-test-key-0123456789abcdef"
ENV = "MLTRADE_TEST_LLM_KEY"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def session_candles(n: int = 17, start: float = 10000.0, step: float = 2.0) -> pd.DataFrame:
    idx = pd.date_range("2018-03-05 09:30", periods=n, freq="5min", tz="America/New_York")
    close = start + step * pd.Series(range(1, n + 1), index=idx, dtype=float)
    return pd.DataFrame({"open": close - step, "high": close + 3, "low": close - step - 3, "close": close,
                         "volume": 100.0}, index=idx)


def ml_decision(direction: int = 1, distance: float = 0.04) -> tuple[Decision, DecisionContext]:
    df = session_candles()
    price = 10000.0
    d = Decision(direction=direction, price=price, time=datetime(2018, 3, 5, 10, 50),
                 barrier=price * (1 - direction * distance), stop=0.71, info={"p": 0.61})
    return d, DecisionContext(candles=df)


def overlay_for(server: FakeOpenAI, *, timeout: float = 2.0, max_retries: int = 0, on_failure: str = "ml",
                closer: str = "refuse", max_leverage: float | None = 50.0) -> LLMOverlay:
    client = LLMClient(base_url=server.base_url, model="grok-test", api_key_env=ENV, timeout=timeout,
                       max_retries=max_retries)
    rules = ContractRules(closer_barrier=closer, max_leverage=max_leverage)
    return LLMOverlay(Responder("live", client), rules, on_failure=on_failure)


def ans(direction: str, barrier: float, reasoning: str = "r", action: str = "BUY") -> str:
    return json.dumps({"action": action, "direction": direction, "barrier": barrier, "reasoning": reasoning})


def test_valid_answer_confirms_and_sends_the_contract():
    with FakeOpenAI([ans("Long", 9600.0, "uptrend intact")]) as srv:
        ov = overlay_for(srv)
        d, ctx = ml_decision(1)
        out = ov.review(d, ctx)
    assert (out.direction, out.barrier, out.source) == (1, 9600.0, "llm")
    assert out.info["llm"]["outcome"] == "confirmed" and out.info["p"] == 0.61
    assert out.stop == 0.71
    rec = ov.records[-1]
    assert (rec.outcome, rec.reason, rec.reasoning, rec.answers) == ("confirmed", "same_barrier",
                                                                     "uptrend intact", 1)
    req = srv.requests[0]
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "grok-test" and body["temperature"] == 0.7 and body["max_tokens"] == 1024
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["action", "direction", "barrier",
                                                                            "reasoning"]
    assert "Proposed knock-out barrier: 9600.0" in body["messages"][1]["content"]


def test_original_shape_in_prose_adjusts_barrier():
    text = 'I would widen the barrier. {"action": "BUY", "position": ["Long", 9450, "volatile open"]} Done.'
    with FakeOpenAI([text]) as srv:
        ov = overlay_for(srv)
        out = ov.review(*ml_decision(1))
    assert (out.direction, out.barrier, ov.records[-1].outcome) == (1, 9450.0, "adjusted")


def test_code_fenced_reversal():
    text = "```json\n" + ans("Short", 10450.0, "lower highs") + "\n```"
    with FakeOpenAI([text]) as srv:
        ov = overlay_for(srv)
        out = ov.review(*ml_decision(1))
    assert (out.direction, out.barrier) == (-1, 10450.0)
    assert (ov.records[-1].outcome, ov.records[-1].reason) == ("reversed", "reversed_ok")


def test_truncated_json_then_good_repair():
    with FakeOpenAI(['{"action": "BUY", "position": ["Long", 96', ans("Long", 9550.0)]) as srv:
        ov = overlay_for(srv)
        out = ov.review(*ml_decision(1))
    assert srv.calls == 2
    msgs = srv.requests[1]["body"]["messages"]
    assert msgs[2] == {"role": "assistant", "content": '{"action": "BUY", "position": ["Long", 96'}
    assert "could not be used" in msgs[3]["content"]
    assert (out.barrier, ov.records[-1].outcome, ov.records[-1].answers) == (9550.0, "adjusted", 2)


@pytest.mark.parametrize("on_failure", ["ml", "skip"])
def test_garbage_twice_falls_back_or_skips(on_failure):
    with FakeOpenAI(["I cannot decide.", "Still no JSON, sorry."]) as srv:
        ov = overlay_for(srv, on_failure=on_failure)
        d, ctx = ml_decision(-1)
        out = ov.review(d, ctx)
    assert srv.calls == 2
    rec = ov.records[-1]
    assert rec.reason == "invalid_json" and rec.failed
    if on_failure == "ml":
        assert (out.direction, out.barrier, rec.outcome) == (-1, d.barrier, "fallback")
        assert out.info["llm"]["reason"] == "invalid_json"
    else:
        assert (out.direction, rec.outcome) == (0, "skipped")


def test_wrong_side_barrier_falls_back_without_repair():
    with FakeOpenAI([ans("Long", 10100.0)]) as srv:
        ov = overlay_for(srv)
        d, ctx = ml_decision(1)
        out = ov.review(d, ctx)
    assert srv.calls == 1
    assert (out.direction, out.barrier) == (1, d.barrier)
    assert (ov.records[-1].outcome, ov.records[-1].reason) == ("fallback", "wrong_side")


def test_leverage_increase_refused_or_clamped():
    with FakeOpenAI([ans("Long", 9800.0)]) as srv:  # ML 9600 -> 9800 = twice the leverage
        ov = overlay_for(srv, closer="refuse")
        out = ov.review(*ml_decision(1))
    rec = ov.records[-1]
    assert (out.barrier, rec.outcome, rec.reason) == (9600.0, "fallback", "closer_barrier")
    with FakeOpenAI([ans("Long", 9800.0)]) as srv:
        ov = overlay_for(srv, closer="clamp")
        out = ov.review(*ml_decision(1))
    assert (out.barrier, out.source) == (9600.0, "llm")
    assert (ov.records[-1].outcome, ov.records[-1].reason) == ("confirmed", "closer_clamped")


def test_reversal_too_close_refused_or_clamped():
    with FakeOpenAI([ans("Short", 10150.0)]) as srv:  # ML distance 4 %, reversal at 1.5 %
        ov = overlay_for(srv, closer="refuse")
        out = ov.review(*ml_decision(1))
    assert (out.direction, ov.records[-1].reason) == (1, "reversal_too_close")
    with FakeOpenAI([ans("Short", 10150.0)]) as srv:
        ov = overlay_for(srv, closer="clamp")
        out = ov.review(*ml_decision(1))
    assert out.direction == -1 and out.barrier == pytest.approx(10400.0)
    assert ov.records[-1].reason == "reversal_clamped"


def test_rate_limit_then_success_is_retried():
    with FakeOpenAI([Reply(status=429, content="slow down"), ans("Long", 9600.0)]) as srv:
        ov = overlay_for(srv, max_retries=2)
        out = ov.review(*ml_decision(1))
    assert srv.calls == 2 and ov.records[-1].outcome == "confirmed" and out.source == "llm"


def test_rate_limit_exhausted():
    with FakeOpenAI([Reply(status=429, content="slow down")]) as srv:
        ov = overlay_for(srv, max_retries=1)
        out = ov.review(*ml_decision(1))
    assert srv.calls == 2 and ov.records[-1].reason == "rate_limited" and out.source == "strategy"


def test_server_error_falls_back_to_ml():
    with FakeOpenAI([Reply(status=500, content="boom")]) as srv:
        ov = overlay_for(srv, max_retries=1)
        d, ctx = ml_decision(1)
        out = ov.review(d, ctx)
    assert srv.calls == 2  # one retry
    assert (out.direction, out.barrier) == (d.direction, d.barrier)
    assert (ov.records[-1].outcome, ov.records[-1].reason) == ("fallback", "http_error")


def test_slow_answer_times_out():
    with FakeOpenAI([Reply(content=ans("Long", 9600.0), delay=1.5)]) as srv:
        ov = overlay_for(srv, timeout=0.5, max_retries=0, on_failure="skip")
        t0 = time.monotonic()
        out = ov.review(*ml_decision(1))
        elapsed = time.monotonic() - t0
    assert elapsed < 1.4
    assert (out.direction, ov.records[-1].outcome, ov.records[-1].reason) == (0, "skipped", "timeout")


def test_refusal_falls_back():
    with FakeOpenAI([Reply(refusal="I can't help with trading decisions.")]) as srv:
        ov = overlay_for(srv)
        out = ov.review(*ml_decision(1))
    assert (out.source, ov.records[-1].reason) == ("strategy", "refusal")


def test_server_without_structured_output_gets_json_in_text_and_is_remembered():
    with FakeOpenAI([ans("Long", 9500.0), ans("Short", 10500.0)], reject_response_format=True) as srv:
        ov = overlay_for(srv)
        out1 = ov.review(*ml_decision(1))
        out2 = ov.review(*ml_decision(1))
    assert (out1.barrier, out2.direction) == (9500.0, -1)
    assert ["response_format" in r["body"] for r in srv.requests] == [True, False, False]
    assert ov.responder.client.structured is False


def test_bad_request_unrelated_to_structured_output_is_an_http_error():
    with FakeOpenAI([Reply(status=400, content="context length exceeded")]) as srv:
        ov = overlay_for(srv)
        out = ov.review(*ml_decision(1))
    assert ["response_format" in r["body"] for r in srv.requests] == [True, False]
    assert (out.source, ov.records[-1].reason) == ("strategy", "http_error")
    assert ov.responder.client.structured is True


def test_missing_key_names_the_variable_when_the_overlay_is_built(monkeypatch):
    monkeypatch.delenv(ENV)
    client = LLMClient(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=ENV)
    for mode in ("live", "record"):
        with pytest.raises(LLMConfigError, match=rf"{ENV} is not set: .*mode '{mode}'.*\[llm\] api_key_env"):
            Responder(mode, client, None if mode == "live" else object())
    Responder("replay", client, object())  # replay and dry need no key


def test_client_rejects_bad_settings():
    with pytest.raises(LLMConfigError, match="base_url"):
        LLMClient(base_url="api.x.ai")
    with pytest.raises(LLMConfigError, match="temperature"):
        LLMClient(temperature=3)
    with pytest.raises(LLMConfigError, match="timeout"):
        LLMClient(timeout=0)


def test_key_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "mltrade.llm"):
        caplog.set_level(logging.DEBUG, logger=name)
    script = [Reply(status=500, content="boom"), "garbage", ans("Long", 9500.0),
              Reply(status=401, content=f"Incorrect API key provided: {KEY}"), ans("Long", 9600.0)]
    with FakeOpenAI(script) as srv:
        ov = overlay_for(srv, max_retries=0)
        for _ in range(4):
            ov.review(*ml_decision(1))
        text = repr(ov) + repr(ov.responder.client) + str(ov.responder.client)
    assert srv.calls == 5 and all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in srv.requests)
    lines = [r.getMessage() for r in caplog.records]
    assert any(r.name.startswith("openai") for r in caplog.records), "openai debug logs were not captured"
    assert any(r.name.startswith("mltrade.llm") for r in caplog.records)
    assert not [ln for ln in lines if KEY in ln or KEY[-12:] in ln]
    assert KEY not in text and "value hidden" in text
    assert all(KEY not in (rec.detail or "") for rec in ov.records)
    assert [r.reason for r in ov.records] == ["http_error", "barrier_further", "http_error", "same_barrier"]


_COMPLETION = {"id": "x", "object": "chat.completion", "created": 1, "model": "grok-test"}


@pytest.mark.parametrize("reply, reason", [
    # truncated
    (Reply(raw='{"id": "x", "choices": [{"index": 0, "message": {"role": "assis'), "malformed_answer"),
    (Reply(raw=""), "malformed_answer"),                                                  # empty body
    (Reply(raw="null"), "malformed_answer"),
    (Reply(raw="<html>proxy page</html>"), "malformed_answer"),
    (Reply(raw=json.dumps({**_COMPLETION, "choices": [{"index": 0, "finish_reason": "stop"}]})),
     "malformed_answer"),                                                                 # no message
    (Reply(raw=json.dumps({**_COMPLETION, "choices": [{"index": 0, "message": None}]})), "malformed_answer"),
    (Reply(message={"role": "assistant", "content": 123}), "malformed_answer"),           # non-string content
    (Reply(message={"role": "assistant", "content": {"action": "BUY"}}), "malformed_answer"),
    (Reply(raw=json.dumps(_COMPLETION)), "malformed_answer"),                             # missing choices
    (Reply(raw=json.dumps({**_COMPLETION, "choices": None})), "malformed_answer"),
    (Reply(raw=json.dumps({**_COMPLETION, "choices": "abc"})), "malformed_answer"),
    (Reply(raw=json.dumps({**_COMPLETION, "choices": []})), "empty_answer"),
])
@pytest.mark.parametrize("on_failure", ["ml", "skip"])
def test_malformed_200_bodies_fall_back_like_any_failure(reply, reason, on_failure):
    with FakeOpenAI([reply]) as srv:
        ov = overlay_for(srv, on_failure=on_failure)
        d, ctx = ml_decision(1)
        out = ov.review(d, ctx)
        assert srv.calls == 1  # an unusable body is a failed call: no repair turn
    rec = ov.records[-1]
    assert rec.failed and rec.reason == reason and rec.reason in REASONS
    if on_failure == "ml":
        assert (out.direction, out.barrier, out.source, rec.outcome) == (1, d.barrier, "strategy", "fallback")
    else:
        assert (out.direction, rec.outcome) == (0, "skipped")


def test_text_content_parts_are_read_as_text():
    text = ans("Long", 9500.0)
    parts = [{"type": "text", "text": text[:20]}, {"type": "text", "text": text[20:]}]
    with FakeOpenAI([Reply(message={"role": "assistant", "content": parts})]) as srv:
        ov = overlay_for(srv)
        out = ov.review(*ml_decision(1))
    assert (out.barrier, ov.records[-1].outcome) == (9500.0, "adjusted")


@pytest.mark.parametrize("mode", ["clamp", "refuse"])
def test_leverage_cap_applies_on_the_fallback_path(mode):
    with FakeOpenAI([Reply(status=500, content="down")]) as srv:
        client = LLMClient(base_url=srv.base_url, model="grok-test", api_key_env=ENV, timeout=2.0,
                           max_retries=0)
        ov = LLMOverlay(Responder("live", client), ContractRules(max_leverage=50.0, leverage_mode=mode))
        d, ctx = ml_decision(1, distance=0.01)  # the strategy's own barrier: leverage 100
        out = ov.review(d, ctx)
        d2, ctx2 = ml_decision(1, distance=0.04)  # leverage 25: under the cap, untouched
        out2 = ov.review(d2, ctx2)
    assert [r.reason for r in ov.records] == ["http_error", "http_error"]
    if mode == "clamp":
        assert out.direction == 1 and out.barrier == pytest.approx(10000.0 * (1 - 1 / 50.0))
        assert ov.records[0].outcome == "fallback" and out.info["llm"]["leverage"] == "clamped"
    else:
        assert out.direction == 0 and ov.records[0].outcome == "skipped"
    assert (out2.direction, out2.barrier, ov.records[1].outcome) == (1, d2.barrier, "fallback")


def test_no_info_line_per_call(caplog):
    caplog.set_level(logging.INFO)  # the CLI's level without -v
    with FakeOpenAI([ans("Long", 9600.0), "garbage", ans("Long", 9500.0), Reply(status=500)]) as srv:
        ov = overlay_for(srv)
        for _ in range(3):
            ov.review(*ml_decision(1))
        assert srv.calls == 4
    assert [r.outcome for r in ov.records] == ["confirmed", "adjusted", "fallback"]
    assert [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.INFO] == []
