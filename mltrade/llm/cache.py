"""Replay cache and answer modes: ``live``, ``record``, ``replay`` and ``dry``.

Every call to the model can be stored in SQLite, so a backtest re-runs
deterministically at zero cost. A call is keyed by :func:`call_key`: the
decision it reviews (its time and how many times that time was reviewed in the
run), the attempt (0 = first answer, 1 = the repair) and the prompt's hash
(:func:`cache_key` of model, messages and sampling parameters). So a prompt
that repeats (two days that look alike once anonymised) keeps each answer, and
replay reproduces a recorded run trade for trade.

* ``live``: call the API; the cache is not touched;
* ``record``: call the API for every call the cache does not hold yet and store
  the answer; a stored answer is never replaced (it is answered from the cache,
  so re-running a recorded backtest costs nothing and changes nothing); a
  failed call is stored with its reason code so replay reproduces it;
* ``replay``: answer from the cache only; a miss raises :class:`ReplayMiss`
  naming the key and how to record it;
* ``dry``: no API and no cache; a deterministic local policy answers
  (:func:`dry_answer`), so the whole pipeline runs offline.

Files written by an older mltrade (one ``answers`` table keyed by the prompt
only) stay readable: a call missing from the new table is looked up there by
its prompt hash. Writes are single SQLite transactions (atomic); WAL mode and a
busy time-out let several processes share one file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from typing import Optional

from mltrade.llm.client import LLMCallError, LLMClient
from mltrade.llm.contract import LLMRequest

log = logging.getLogger("mltrade.llm")

MODES = ("live", "record", "replay", "dry")
SCHEMA_VERSION = 2

Entry = tuple  # (text, None) or ("", (code, message))


class ReplayMiss(LookupError, ValueError):
    """Replay mode found no stored answer (also a ``ValueError``, so the CLI reports it cleanly)."""

    def __init__(self, key: str, path: str, decision: str = "") -> None:
        what = f" (decision {decision})" if decision else ""
        super().__init__(
            f"llm replay: no stored answer for key {key}{what} in {path}. Record it first: run the same "
            f"backtest once with [llm] mode = \"record\" (and the API key in the environment) against the "
            f"server, or use mode = \"dry\" to run without any API")
        self.key = key
        self.path = path


def cache_key(model: str, messages: list[dict], parameters: dict) -> str:
    """sha256 hex of the canonical JSON of model, messages and parameters (the prompt's hash)."""
    blob = json.dumps({"model": model, "messages": messages, "parameters": parameters},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def call_key(decision: str, attempt: int, prompt_hash: str) -> str:
    """sha256 hex of one call: the decision it reviews, the attempt (0 first, 1 repair), the prompt hash."""
    blob = json.dumps({"decision": str(decision), "attempt": int(attempt), "prompt": str(prompt_hash)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplayCache:
    """SQLite store of model calls keyed by :func:`call_key`; a stored call is never replaced."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        self._local = threading.local()
        try:
            with self._conn() as c:
                c.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, decision TEXT NOT NULL, "
                          "attempt INTEGER NOT NULL, prompt_hash TEXT NOT NULL, model TEXT NOT NULL, "
                          "request TEXT NOT NULL, response TEXT NOT NULL, error_code TEXT, "
                          "error_message TEXT, created REAL NOT NULL)")
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.legacy = c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                        "AND name = 'answers'").fetchone() is not None
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"llm.cache_path: {self.path} is not an LLM cache (SQLite) file ({exc}); "
                             f"point cache_path at a new file") from None
        self._legacy_noted = False

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30.0)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn = c
        return c

    def get(self, key: str, prompt_hash: Optional[str] = None) -> Optional[str]:
        """Stored answer text for ``key`` (``None`` if absent or if the call had failed)."""
        hit = self.get_entry(key, prompt_hash)
        return None if hit is None or hit[1] is not None else hit[0]

    def get_entry(self, key: str, prompt_hash: Optional[str] = None) -> Optional[Entry]:
        """``(text, None)``, ``("", (code, message))`` for a stored failed call, or ``None``.

        With ``prompt_hash``, a call missing from the cache is looked up in an older file's
        prompt-keyed table."""
        row = self._conn().execute("SELECT response, error_code, error_message FROM calls WHERE key = ?",
                                   (key,)).fetchone()
        if row is None and self.legacy and prompt_hash:
            row = self._conn().execute("SELECT response, error_code, error_message FROM answers "
                                       "WHERE key = ?", (prompt_hash,)).fetchone()
            if row is not None and not self._legacy_noted:
                self._legacy_noted = True
                log.info("llm: %s was written by an older mltrade (answers keyed by prompt only); "
                         "reading it as recorded", self.path)
        if row is None:
            return None
        return row[0], (None if row[1] is None else (row[1], row[2] or ""))

    def put(self, key: str, model: str, request: dict, response: str,
            error: Optional[tuple[str, str]] = None, *, decision: str = "", attempt: int = 0,
            prompt_hash: str = "") -> Entry:
        """Store one call (or a failed call's reason code) in a single transaction, unless ``key`` is
        already stored: a stored call is never replaced. Returns the entry the cache holds."""
        blob = json.dumps(request, sort_keys=True, ensure_ascii=False)
        code, message = error if error is not None else (None, None)
        with self._conn() as c:
            c.execute("INSERT OR IGNORE INTO calls (key, decision, attempt, prompt_hash, model, request, "
                      "response, error_code, error_message, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (key, str(decision), int(attempt), str(prompt_hash), model, blob, response, code,
                       message, time.time()))
        held = self.get_entry(key)
        assert held is not None
        return held

    def forget(self, keys) -> None:
        """Remove the calls ``keys`` (failed calls of an outage, so that a resumed run asks them again)."""
        keys = list(keys)
        if keys:
            with self._conn() as c:
                c.executemany("DELETE FROM calls WHERE key = ?", [(k,) for k in keys])

    def __len__(self) -> int:
        n = int(self._conn().execute("SELECT COUNT(*) FROM calls").fetchone()[0])
        if self.legacy:
            n += int(self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0])
        return n

    def keys(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT key FROM calls ORDER BY created, rowid")]

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


def dry_answer(request: LLMRequest, lookback: int = 5, widen: float = 1.5) -> str:
    """Deterministic local policy, answered in the original's JSON shape.

    Confirm when the last ``lookback`` candles moved in the proposed direction
    (or there are none); otherwise keep the direction but move the barrier
    ``widen`` times further away (less leverage).
    """
    c = request.candles[-lookback:]
    move = (c[-1].close - c[0].open) if c else 0.0
    name = request.direction_name
    if move * request.direction >= 0:
        return json.dumps({"action": "BUY", "position": [name, round(request.barrier, 4),
                                                         f"dry: last {len(c)} candles agree ({move:+.2f})"]})
    barrier = request.price * (1 - request.direction * request.distance * widen)
    return json.dumps({"action": "BUY", "position": [name, round(barrier, 4),
                                                     f"dry: last {len(c)} candles disagree ({move:+.2f}); "
                                                     f"barrier moved {widen}x further"]})


class LLMGiveUp(ValueError):
    """Record mode stopped after too many consecutive API failures (the message says how to resume)."""


class Responder:
    """Answers a chat according to the mode: API, cache, or the dry policy.

    ``max_failures``: in record mode, stop (:class:`LLMGiveUp`) after this many consecutive failed API
    calls, forgetting them in the cache so that re-running the same command resumes (0 = never stop).
    """

    def __init__(self, mode: str = "dry", client: Optional[LLMClient] = None,
                 cache: Optional[ReplayCache] = None, max_failures: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"llm.mode: expected one of {MODES}, got {mode!r}")
        if mode in ("live", "record", "replay") and client is None:
            raise ValueError(f"llm.mode {mode!r}: needs a client (model and parameters)")
        if mode in ("record", "replay") and cache is None:
            raise ValueError(f"llm.mode {mode!r}: needs llm.cache_path")
        if mode in ("live", "record"):
            assert client is not None
            client.check_key(mode)  # fail at start, not at the first decision
        self.mode = mode
        self.client = client
        self.cache = cache
        self.api_calls = 0
        self.cache_hits = 0
        if int(max_failures) < 0:
            raise ValueError(f"llm.max_consecutive_failures: expected an integer >= 0, got {max_failures!r}")
        self.max_failures = int(max_failures)
        self._streak: list = []     # keys of the consecutive failed calls recorded so far

    def complete(self, messages: list[dict], request: LLMRequest, decision: str = "",
                 attempt: int = 0) -> str:
        """Answer text for ``messages``; ``request`` is what the dry policy looks at, ``decision`` and
        ``attempt`` (with the prompt) key the call in the cache."""
        if self.mode == "dry":
            return dry_answer(request)
        assert self.client is not None
        prompt_hash = cache_key(self.client.model, messages, self.client.parameters())
        key = call_key(decision, attempt, prompt_hash)
        if self.mode in ("replay", "record"):
            assert self.cache is not None
            hit = self.cache.get_entry(key, prompt_hash)
            if hit is None and self.mode == "replay":
                raise ReplayMiss(key, self.cache.path, decision)
            if hit is not None:
                self.cache_hits += 1
                return _answer(hit)
        self.api_calls += 1
        request_blob = {"messages": messages, "parameters": self.client.parameters()}
        meta = dict(decision=decision, attempt=attempt, prompt_hash=prompt_hash)
        try:
            text = self.client.complete(messages).text
        except LLMCallError as e:
            if self.mode == "record":
                assert self.cache is not None
                held = self.cache.put(key, self.client.model, request_blob, "", error=(e.code, e.message),
                                      **meta)
                if held != ("", (e.code, e.message)):  # another process recorded this call first
                    return _answer(held)
                self._streak.append(key)
                if self.max_failures and len(self._streak) >= self.max_failures:
                    self.cache.forget(self._streak)
                    kept = len(self.cache)
                    raise LLMGiveUp(
                        f"llm: record mode stopped after {len(self._streak)} consecutive failed API calls "
                        f"([llm] max_consecutive_failures = {self.max_failures}); last: {e.code}: {e.message}. "
                        f"The {kept:,} calls recorded in {self.cache.path} are kept: re-run the same command "
                        f"to resume (recorded calls are replayed, the failed ones asked again)") from None
            raise
        self._streak = []
        if self.mode == "record":
            assert self.cache is not None
            return _answer(self.cache.put(key, self.client.model, request_blob, text, **meta))
        return text


def _answer(entry: Entry) -> str:
    """The text of a stored entry, or its stored failure raised again."""
    text, error = entry
    if error is not None:
        raise LLMCallError(error[0], f"(replayed) {error[1]}")
    return text
