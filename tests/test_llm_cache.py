"""Replay cache and modes: record, replay (zero server calls), replay misses, dry policy, concurrency."""
from __future__ import annotations

import json
import multiprocessing as mp
import re
import threading
from datetime import datetime

import pandas as pd
import pytest

from mltrade.llm import (LLMClient, LLMOverlay, ReplayCache, ReplayMiss, Responder, build_messages,
                         build_overlay, cache_key, dry_answer, parse_text)
from mltrade.llm.contract import LLMRequest
from mltrade.strategies.decision import Decision, DecisionContext
from tests.fake_openai import FakeOpenAI, Reply
from tests.test_llm_client import ENV, KEY, ans, ml_decision, session_candles


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def test_cache_key_is_canonical_and_sensitive():
    m = [{"role": "user", "content": "hi"}]
    k = cache_key("grok", m, {"temperature": 0.7, "max_tokens": 10})
    assert k == cache_key("grok", [{"content": "hi", "role": "user"}], {"max_tokens": 10, "temperature": 0.7})
    assert len(k) == 64
    assert k != cache_key("grok-2", m, {"temperature": 0.7, "max_tokens": 10})
    assert k != cache_key("grok", m, {"temperature": 0.2, "max_tokens": 10})
    assert k != cache_key("grok", [{"role": "user", "content": "hi!"}],
                          {"temperature": 0.7, "max_tokens": 10})


def decisions(n: int = 4) -> list[tuple[Decision, DecisionContext]]:
    out = []
    for i in range(n):
        df = session_candles(17, start=10000.0 + 10 * i, step=(-1) ** i * 2.0)
        price = float(df["close"].iloc[-1])
        d = Decision(direction=(-1) ** i, price=price, time=datetime(2018, 3, 5 + i, 10, 50), distance=0.04,
                     stop=0.71)
        out.append((d, DecisionContext(candles=df)))
    return out


def overlay(mode: str, base_url: str, path) -> LLMOverlay:
    client = LLMClient(base_url=base_url, model="grok-test", api_key_env=ENV, timeout=2.0, max_retries=0)
    return LLMOverlay(Responder(mode, client, ReplayCache(str(path))))


def summary_of(ov: LLMOverlay, outs) -> list:
    return [(o.direction, o.barrier, r.outcome, r.reason, r.reasoning) for o, r in zip(outs, ov.records)]


def test_record_then_replay_is_identical_with_zero_server_calls(tmp_path):
    path = tmp_path / "cache.sqlite"
    script = [json.dumps({"action": "BUY", "position": ["Long", 9500.0, "a"]}),
              "garbage",
              json.dumps({"action": "BUY", "direction": "Long", "barrier": 9400.0, "reasoning": "b"}),
              Reply(status=500, content="down"),
              json.dumps({"action": "SKIP", "reasoning": "choppy"})]
    with FakeOpenAI(script) as srv:
        rec = overlay("record", srv.base_url, path)
        outs1 = [rec.review(d, c) for d, c in decisions()]
        recorded_calls = srv.calls
    assert recorded_calls == 5 and rec.responder.api_calls == 5
    assert [r.outcome for r in rec.records] == ["adjusted", "reversed", "fallback", "skipped"]
    assert len(ReplayCache(str(path))) == 5

    with FakeOpenAI(["should never be asked"]) as srv2:
        rep = overlay("replay", srv2.base_url, path)
        outs2 = [rep.review(d, c) for d, c in decisions()]
        assert srv2.calls == 0
    assert rep.responder.api_calls == 0 and rep.responder.cache_hits == 5
    assert summary_of(rec, outs1) == summary_of(rep, outs2)
    assert [r.reason for r in rep.records] == [r.reason for r in rec.records]


def test_replay_miss_names_the_key_and_how_to_record(tmp_path):
    ov = overlay("replay", "http://127.0.0.1:9/v1", tmp_path / "empty.sqlite")
    d, c = ml_decision(1)
    with pytest.raises(ReplayMiss) as e:
        ov.review(d, c)
    msg = str(e.value)
    assert e.value.key in msg and len(e.value.key) == 64
    assert 'mode = "record"' in msg and "empty.sqlite" in msg


def test_modes_need_what_they_use(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        Responder("online")
    with pytest.raises(ValueError, match="client"):
        Responder("live")
    with pytest.raises(ValueError, match="cache_path"):
        Responder("replay", LLMClient(base_url="http://127.0.0.1:9/v1"))


def test_dry_mode_is_deterministic_and_needs_no_api(monkeypatch):
    monkeypatch.delenv(ENV)
    ov1, ov2 = LLMOverlay(Responder("dry")), LLMOverlay(Responder("dry"))
    outs1 = [ov1.review(d, c) for d, c in decisions()]
    outs2 = [ov2.review(d, c) for d, c in decisions()]
    assert summary_of(ov1, outs1) == summary_of(ov2, outs2)
    assert ov1.responder.api_calls == 0


def test_dry_policy_confirms_agreeing_candles_and_widens_otherwise():
    up = session_candles(17, step=2.0)
    price = float(up["close"].iloc[-1])
    req = LLMRequest.from_decision(Decision(1, price, distance=0.04), DecisionContext(up))
    assert parse_text(dry_answer(req)).barrier == pytest.approx(round(req.barrier, 4))
    req_short = LLMRequest.from_decision(Decision(-1, price, distance=0.04), DecisionContext(up))
    ans = parse_text(dry_answer(req_short))
    assert ans.direction == -1 and ans.barrier == pytest.approx(price * (1 + 0.06), rel=1e-6)


def test_build_overlay_from_config(tmp_path):
    ov = build_overlay({"llm": {"mode": "replay", "cache_path": str(tmp_path / "c.sqlite"), "model": "grok-x",
                                "closer_barrier": "clamp", "max_leverage": 0, "on_failure": "skip"}})
    assert ov.responder.mode == "replay" and ov.responder.client.model == "grok-x"
    assert ov.rules.closer_barrier == "clamp" and ov.rules.max_leverage is None and ov.on_failure == "skip"
    assert (tmp_path / "c.sqlite").exists()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['modle'\]; valid keys: .*'model'"):
        build_overlay({"modle": "x"})
    with pytest.raises(ValueError, match="mode"):
        build_overlay({"mode": "cloud"})
    with pytest.raises(ValueError, match="on_failure"):
        build_overlay({"on_failure": "panic"})


def _writer(path: str, start: int, n: int) -> None:
    c = ReplayCache(path)
    for i in range(start, start + n):
        c.put(f"k{i}", "m", {"i": i}, f"answer {i}")


def test_concurrent_writers_from_threads_and_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ReplayCache(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 1000 * p, 40)) for p in range(2)]
    threads = [threading.Thread(target=_writer, args=(path, 10000 + 1000 * t, 40)) for t in range(3)]
    for w in procs + threads:
        w.start()
    for w in procs + threads:
        w.join(60)
    assert all(p.exitcode == 0 for p in procs)
    c = ReplayCache(path)
    assert len(c) == 200
    assert c.get("k1039") == "answer 1039" and c.get("k12000") == "answer 12000"


def twin_decisions() -> list[tuple[Decision, DecisionContext]]:
    """Two sessions whose anonymised prompts are identical (same candles and price, different dates)."""
    df = session_candles(17, start=10000.0, step=2.0)
    price = float(df["close"].iloc[-1])
    out = []
    for day in (5, 6):
        ctx = DecisionContext(candles=df.set_axis(df.index + pd.Timedelta(days=day - 5)))
        out.append((Decision(1, price, time=datetime(2018, 3, day, 10, 50), distance=0.04), ctx))
    return out


def test_repeated_prompts_with_different_answers_replay_answer_for_answer(tmp_path):
    path = tmp_path / "twins.sqlite"
    def rel(direction: str, distance: float):
        """Answer with a barrier ``distance`` from the price the prompt shows (anonymised scale)."""
        def reply(body: dict) -> str:
            shown = float(re.search(r"Current index price: (\S+)", body["messages"][1]["content"]).group(1))
            return ans(direction, round(shown * (1 - (1 if direction == "Long" else -1) * distance), 4))
        return reply

    script = [rel("Long", 0.05), rel("Short", 0.06), rel("Long", 0.07), "garbage",
              json.dumps({"action": "SKIP", "reasoning": "no"})]

    def run(mode: str, url: str) -> tuple[LLMOverlay, list]:
        client = LLMClient(base_url=url, model="grok-test", api_key_env=ENV, timeout=2.0, max_retries=0)
        ov = LLMOverlay(Responder(mode, client, ReplayCache(str(path))), anonymize=True, seed=3)
        twins = twin_decisions()
        # the twins, then the first decision reviewed a second time (same time, same prompt)
        outs = [ov.review(d, c) for d, c in twins + twins[:1] + twins[1:]]
        return ov, outs

    with FakeOpenAI(script) as srv:
        rec, outs1 = run("record", srv.base_url)
        prompts = [r["body"]["messages"][1]["content"] for r in srv.requests]
    assert prompts[0] == prompts[1] == prompts[2]  # one prompt, three different answers
    assert [r.outcome for r in rec.records] == ["adjusted", "reversed", "adjusted", "skipped"]
    with FakeOpenAI(["must not be called"]) as srv2:
        rep, outs2 = run("replay", srv2.base_url)
        assert srv2.calls == 0
    assert summary_of(rep, outs2) == summary_of(rec, outs1)
    assert len(ReplayCache(str(path))) == 5


def test_record_never_replaces_a_stored_answer(tmp_path):
    path = tmp_path / "keep.sqlite"
    d, c = decisions(1)[0]
    with FakeOpenAI([ans("Long", 9000.0)]) as srv:
        first = overlay("record", srv.base_url, path).review(d, c)
    with FakeOpenAI([ans("Long", 8000.0)]) as srv:
        again = overlay("record", srv.base_url, path)
        second = again.review(d, c)
        assert srv.calls == 0 and again.responder.cache_hits == 1
    assert first.barrier == second.barrier == 9000.0
    cache = ReplayCache(str(path))
    key = cache.keys()[0]
    assert cache.put(key, "grok-test", {}, ans("Long", 7000.0)) == (ans("Long", 9000.0), None)
    assert cache.get(key) == ans("Long", 9000.0) and len(cache) == 1


def test_cache_files_of_older_versions_stay_readable(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    d, c = decisions(1)[0]
    client = LLMClient(base_url="http://127.0.0.1:9/v1", model="grok-test", api_key_env=ENV)
    msgs = build_messages(LLMRequest.from_decision(d, c, 17))
    with sqlite3.connect(path) as db:  # the schema written before calls were keyed by decision and attempt
        db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, "
                   "response TEXT NOT NULL, error_code TEXT, error_message TEXT, created REAL NOT NULL)")
        db.execute("INSERT INTO answers VALUES (?, ?, ?, ?, NULL, NULL, 0)",
                   (cache_key(client.model, msgs, client.parameters()), "grok-test", "{}",
                    ans("Long", 9100.0)))
    ov = LLMOverlay(Responder("replay", client, ReplayCache(str(path))))
    assert ov.review(d, c).barrier == 9100.0
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ValueError, match=r"junk.sqlite is not an LLM cache \(SQLite\) file"):
        ReplayCache(str(junk))
