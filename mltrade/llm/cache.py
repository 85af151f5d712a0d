"""Replay cache and answer modes: ``live``, ``record``, ``replay`` and ``dry``.

Every request/response pair can be stored in SQLite, keyed by the sha256 of
the canonical JSON of (model, messages, sampling parameters), so a backtest
re-runs deterministically at zero cost:

* ``live``: call the API; the cache is not touched;
* ``record``: call the API and store every answer (replacing an older one);
  a failed call is stored with its reason code so replay reproduces it;
* ``replay``: answer from the cache only; a miss raises :class:`ReplayMiss`
  naming the key and how to record it;
* ``dry``: no API and no cache; a deterministic local policy answers
  (:func:`dry_answer`), so the whole pipeline runs offline.

Writes are single SQLite transactions (atomic); WAL mode and a busy time-out
let several processes share one file.
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


class ReplayMiss(LookupError, ValueError):
    """Replay mode found no stored answer (also a ``ValueError``, so the CLI reports it cleanly)."""

    def __init__(self, key: str, path: str) -> None:
        super().__init__(
            f"llm replay: no stored answer for key {key} in {path}. Record it first: run the same backtest "
            f"once with [llm] mode = \"record\" (and the API key in the environment) against the server, "
            f"or use mode = \"dry\" to run without any API")
        self.key = key
        self.path = path


def cache_key(model: str, messages: list[dict], parameters: dict) -> str:
    """sha256 hex of the canonical JSON of model, messages and parameters."""
    blob = json.dumps({"model": model, "messages": messages, "parameters": parameters},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplayCache:
    """SQLite store of request/response pairs keyed by :func:`cache_key`."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                      "request TEXT NOT NULL, response TEXT NOT NULL, error_code TEXT, error_message TEXT, "
                      "created REAL NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30.0)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn = c
        return c

    def get(self, key: str) -> Optional[str]:
        """Stored answer text for ``key`` (``None`` if absent or if the call had failed)."""
        hit = self.get_entry(key)
        return None if hit is None or hit[1] is not None else hit[0]

    def get_entry(self, key: str) -> Optional[tuple[str, Optional[tuple[str, str]]]]:
        """``(text, None)``, ``("", (code, message))`` for a stored failed call, or ``None``."""
        row = self._conn().execute("SELECT response, error_code, error_message FROM answers WHERE key = ?",
                                   (key,)).fetchone()
        if row is None:
            return None
        return row[0], (None if row[1] is None else (row[1], row[2] or ""))

    def put(self, key: str, model: str, request: dict, response: str,
            error: Optional[tuple[str, str]] = None) -> None:
        """Store (or replace) one pair, or a failed call's reason code, in a single transaction."""
        blob = json.dumps(request, sort_keys=True, ensure_ascii=False)
        code, message = error if error is not None else (None, None)
        with self._conn() as c:
            c.execute("INSERT OR REPLACE INTO answers (key, model, request, response, error_code, "
                      "error_message, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (key, model, blob, response, code, message, time.time()))

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def keys(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT key FROM answers ORDER BY created")]

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


class Responder:
    """Answers a chat according to the mode: API, cache, or the dry policy."""

    def __init__(self, mode: str = "dry", client: Optional[LLMClient] = None,
                 cache: Optional[ReplayCache] = None) -> None:
        if mode not in MODES:
            raise ValueError(f"llm.mode: expected one of {MODES}, got {mode!r}")
        if mode in ("live", "record", "replay") and client is None:
            raise ValueError(f"llm.mode {mode!r}: needs a client (model and parameters)")
        if mode in ("record", "replay") and cache is None:
            raise ValueError(f"llm.mode {mode!r}: needs llm.cache_path")
        self.mode = mode
        self.client = client
        self.cache = cache
        self.api_calls = 0
        self.cache_hits = 0

    def complete(self, messages: list[dict], request: LLMRequest) -> str:
        """Answer text for ``messages`` (``request`` is what the dry policy looks at)."""
        if self.mode == "dry":
            return dry_answer(request)
        assert self.client is not None
        key = cache_key(self.client.model, messages, self.client.parameters())
        if self.mode == "replay":
            assert self.cache is not None
            hit = self.cache.get_entry(key)
            if hit is None:
                raise ReplayMiss(key, self.cache.path)
            self.cache_hits += 1
            text, error = hit
            if error is not None:
                raise LLMCallError(error[0], f"(replayed) {error[1]}")
            return text
        self.api_calls += 1
        request_blob = {"messages": messages, "parameters": self.client.parameters()}
        try:
            text = self.client.complete(messages).text
        except LLMCallError as e:
            if self.mode == "record":
                assert self.cache is not None
                self.cache.put(key, self.client.model, request_blob, "", error=(e.code, e.message))
            raise
        if self.mode == "record":
            assert self.cache is not None
            self.cache.put(key, self.client.model, request_blob, text)
        return text
