"""Notifications posted to real HTTP servers on 127.0.0.1: Slack payloads, generic webhook, rate limit,
never blocking the caller, random playful messages per event."""
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mltrade.live.notify import EVENTS, MESSAGES, Notifier, event_for_close, render


class Hook:
    def __init__(self, delay=0.0, status=200):
        self.bodies, self.delay, self.status = [], delay, status
        hook = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers["Content-Length"])
                hook.bodies.append((self.path, json.loads(self.rfile.read(n))))
                time.sleep(hook.delay)
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def test_slack_and_generic_webhook_receive_each_event(hook):
    n = Notifier(slack_url=hook.url + "/slack", webhook_url=hook.url + "/hook", seed=3)
    texts = [n.notify("buy", direction="Long", barrier=14000.0, size=10, price=2.5),
             n.notify(event_for_close("signal", 12.0), price=2.7, pnl=12.0),
             n.notify(event_for_close("signal", -3.0), price=2.2, pnl=-3.0),
             n.notify(event_for_close("stop", -8.0), price=1.8, pnl=-8.0),
             n.notify(event_for_close("knockout", -25.0), barrier=14000.0, pnl=-25.0),
             n.notify("error", error="venue down")]
    assert n.flush(5)
    slack = [b for p, b in hook.bodies if p == "/slack"]
    generic = [b for p, b in hook.bodies if p == "/hook"]
    assert [b["text"] for b in slack] == texts
    assert [b["event"] for b in generic] == ["buy", "profit", "loss", "stop", "knockout", "error"]
    assert generic[0]["data"]["barrier"] == 14000.0
    assert "14,000.00" in texts[0] and "venue down" in texts[-1]
    n.close()


def test_messages_are_chosen_at_random_per_event():
    rng = random.Random(0)
    seen = {render("buy", rng, direction="Long", barrier=1.0, size=1, price=1.0) for _ in range(60)}
    assert len(seen) == len(MESSAGES["buy"]) > 1
    assert set(EVENTS) == {"buy", "profit", "loss", "stop", "knockout", "error"}
    for event in EVENTS:          # every message renders even with no data at all
        assert all(render(event, random.Random(i)) for i in range(5))
    with pytest.raises(ValueError, match="event"):
        render("party", rng)


def test_rate_limit_drops_beyond_max_per_minute(hook):
    n = Notifier(slack_url=hook.url, max_per_minute=3)
    sent = [n.notify("error", error=str(i)) for i in range(5)]
    assert n.flush(5)
    assert sum(s is not None for s in sent) == 3 and n.dropped == 2 and len(hook.bodies) == 3


def test_slow_or_dead_webhook_never_blocks_the_trade():
    slow = Hook(delay=1.0)
    try:
        n = Notifier(slack_url=slow.url, timeout=3.0)
        t = time.perf_counter()
        for _ in range(3):
            n.notify("buy", size=1)
        elapsed = time.perf_counter() - t
        assert elapsed < 0.5          # the caller only queues
        assert n.flush(10) and len(slow.bodies) == 3
    finally:
        slow.close()
    dead = Notifier(webhook_url="http://127.0.0.1:9/nothing", timeout=0.5)   # closed port
    dead.notify("error", error="x")
    assert dead.flush(5) and dead.failed == 1 and dead.sent == []


def test_disabled_notifier_posts_nothing():
    n = Notifier()
    assert not n.enabled and n.notify("buy", size=1) is None


def test_from_config_reads_urls_from_named_env(hook):
    n = Notifier.from_config({"slack_webhook_env": "X_SLACK", "webhook_env": "", "max_per_minute": 7},
                             env={"X_SLACK": hook.url})
    assert n.slack_url == hook.url and n.webhook_url is None and n.max_per_minute == 7
