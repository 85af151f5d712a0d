"""Trade notifications: Slack incoming webhook and a generic JSON webhook.

Events: ``buy``, ``profit`` (profitable sell), ``loss`` (losing sell),
``stop`` (stop-loss), ``knockout`` and ``error``. Each event picks one of a
set of playful messages (our own wording) at random. Messages are queued and
posted by a background thread, so a slow or dead webhook never blocks a
trade; a rate limit drops messages beyond ``max_per_minute``.
"""
from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional

from mltrade.live.credentials import mask

log = logging.getLogger("mltrade.live")

MESSAGES: Dict[str, List[str]] = {
    "buy": [
        "🚀 In we go: {direction} at barrier {barrier}, {size} certificates at {price}.",
        "🎯 Target acquired! Bought {size} × {direction} @ {price} (barrier {barrier}).",
        "🛒 Shopping done: {size} {direction} certificates for {price} each.",
        "🐂🐻 Picked a side: {direction}. {size} pieces at {price}, barrier {barrier}.",
    ],
    "profit": [
        "💰 Cha-ching! Sold at {price}, profit {pnl}.",
        "🎉 That one paid off: +{pnl}. Drinks are on the index.",
        "🏆 Closed in the green: {pnl} richer at {price}.",
        "😎 Smooth exit at {price}. P&L: +{pnl}.",
    ],
    "loss": [
        "🌧️ Not today: sold at {price}, P&L {pnl}.",
        "🩹 A small scrape: {pnl}. Tomorrow is another session.",
        "📉 The market disagreed. Out at {price}, {pnl}.",
        "🤷 Win some, lose some: {pnl} on this one.",
    ],
    "stop": [
        "🛑 Stop-loss caught us at {price} ({pnl}). Capital lives to fight another day.",
        "🪂 Parachute opened at {price}: {pnl}.",
        "🚧 Safety net did its job: stopped out at {price}, {pnl}.",
    ],
    "knockout": [
        "💥 Knocked out at barrier {barrier}. Ouch: {pnl}.",
        "🥊 KO! The index touched {barrier}; the certificate is gone ({pnl}).",
        "⚰️ Barrier {barrier} hit. RIP certificate ({pnl}).",
    ],
    "error": [
        "⚠️ Something broke: {error}",
        "🔧 Houston, we have a problem: {error}",
        "🐛 A bug in the machine: {error}",
    ],
}
EVENTS = tuple(MESSAGES)


class _SafeDict(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def render(event: str, rng: random.Random, **data: Any) -> str:
    """A random message of ``event`` filled with ``data`` (missing fields show as ``?``)."""
    if event not in MESSAGES:
        raise ValueError(f"event: expected one of {EVENTS}, got {event!r}")
    fmt = {k: (f"{v:,.2f}" if isinstance(v, float) else v) for k, v in data.items()}
    return mask(rng.choice(MESSAGES[event]).format_map(_SafeDict(fmt)))


@dataclass
class Notifier:
    """Posts events to Slack and/or a generic webhook from a background thread."""

    slack_url: Optional[str] = None
    webhook_url: Optional[str] = None
    max_per_minute: int = 20
    timeout: float = 5.0
    seed: Optional[int] = None
    sent: List[dict] = field(default_factory=list)
    dropped: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._q: "queue.Queue[Optional[dict]]" = queue.Queue()
        self._times: Deque[float] = deque()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    @property
    def enabled(self) -> bool:
        return bool(self.slack_url or self.webhook_url)

    def notify(self, event: str, **data: Any) -> Optional[str]:
        """Queue a message for ``event``; returns its text (None if rate-limited or disabled).

        Never blocks: a background thread posts it.
        """
        text = render(event, self._rng, **data)
        if not self.enabled:
            return None
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] > 60.0:
                self._times.popleft()
            if len(self._times) >= self.max_per_minute:
                self.dropped += 1
                log.warning("notification rate limit: dropped a %s message", event)
                return None
            self._times.append(now)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mltrade-notify", daemon=True)
                self._thread.start()
        self._q.put({"event": event, "text": text, "data": {k: v for k, v in data.items()
                                                            if isinstance(v, (int, float, str, bool))}})
        return text

    def _post(self, url: str, payload: dict) -> None:
        req = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            r.read()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                if self.slack_url:
                    self._post(self.slack_url, {"text": item["text"]})
                if self.webhook_url:
                    self._post(self.webhook_url, item)
                self.sent.append(item)
            except Exception as e:  # a dead webhook must never hurt trading
                self.failed += 1
                log.warning("notification failed: %s", mask(str(e)))
            finally:
                self._q.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued messages are posted (True) or ``timeout`` passes (False)."""
        end = time.monotonic() + timeout
        while self._q.unfinished_tasks:
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout=self.timeout)

    @classmethod
    def from_config(cls, cfg: dict, env: Optional[dict] = None) -> "Notifier":
        """From ``[live.notify]``: URLs are read from the environment variables it names."""
        import os
        env = os.environ if env is None else env
        slack = env.get(cfg.get("slack_webhook_env", "MLTRADE_SLACK_WEBHOOK_URL") or "", "") or None
        hook = env.get(cfg.get("webhook_env", "MLTRADE_WEBHOOK_URL") or "", "") or None
        from mltrade.live.credentials import register_secret
        register_secret(slack)
        register_secret(hook)
        return cls(slack_url=slack, webhook_url=hook, max_per_minute=int(cfg.get("max_per_minute", 20)))


def event_for_close(reason: str, pnl: float) -> str:
    """Notification event for a closed round trip (``stop``/``knockout`` or ``profit``/``loss``)."""
    if reason in ("stop", "knockout"):
        return reason
    return "profit" if pnl > 0 else "loss"
