"""The fake venue's HTTP side: pages, the JSON API the pages call, and the ``/control/*`` endpoints.

:func:`make_handler` binds :class:`VenueHandler` to one :class:`~mltrade.live.fakevenue.FakeVenue`
(its state, quotes, orders and faults).
"""
from __future__ import annotations

import json
import secrets
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

from mltrade.live.formats import format_number

PAGES = Path(__file__).with_name("pages")
VENUES = ("ig", "tr")


def make_handler(venue: Any) -> type:
    """A :class:`VenueHandler` class serving ``venue`` (a FakeVenue)."""
    return type("Handler", (VenueHandler,), {"venue": venue})


class VenueHandler(BaseHTTPRequestHandler):
    """The fake venue's pages, JSON API and ``/control/*`` endpoints (``venue``: set by
    :func:`make_handler`)."""

    venue: Any = None

    @property
    def st(self) -> Any:
        return self.venue.state

    protocol_version = "HTTP/1.1"

    def log_message(self, *a: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str, headers: Optional[dict] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200, headers: Optional[dict] = None) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", headers)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return {}
        try:
            return json.loads(self.rfile.read(n) or b"{}")
        except json.JSONDecodeError:
            return {}

    def _session(self, v: str) -> Optional[dict]:
        c = SimpleCookie(self.headers.get("Cookie", ""))
        m = c.get(f"{v}_session")
        if m is None:
            return None
        s = self.st.sessions.get(m.value)
        return s if s and s.get("venue") == v and s.get("verified") else None

    def _slow(self) -> None:
        ms = self.st.faults.get("slow_ms")
        if ms:
            time.sleep(float(ms) / 1000.0)

    def _page(self, v: str, name: str) -> None:
        path = PAGES / f"{v}_{name}.html"
        if not path.exists():
            return self._json({"error": "not found"}, 404)
        self._slow()
        if name != "login" and self._session(v) is None:
            return self._send(302, b"", "text/plain", {"Location": f"/{v}/login"})
        with self.st.lock:
            faults = {k: self.st.faults[k] for k in ("missing", "locale", "misprint") if k in self.st.faults}
            sess = self._session(v) or {}
        html = path.read_text(encoding="utf-8")
        html = html.replace("{{FAULTS}}", json.dumps(faults)).replace(
            "{{USER}}", sess.get("user", ""))
        self._send(200, html.encode(), "text/html; charset=utf-8")

    # -- routes ---------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        parts = [p for p in u.path.split("/") if p]
        self.venue.count("GET " + u.path)
        if u.path == "/control/state":
            st = self.st
            with st.lock:
                return self._json({"index": st.index, "cash": st.cash, "positions": st.positions,
                                   "closed": st.closed, "orders": st.orders, "held": st.held,
                                   "faults": st.faults,
                                   "counters": st.counters, "logins": st.logins})
        if u.path.startswith("/static/"):
            f = PAGES / parts[-1]
            if f.exists() and f.suffix in (".js", ".css"):
                ctype = "application/javascript" if f.suffix == ".js" else "text/css"
                return self._send(200, f.read_bytes(), ctype)
            return self._json({"error": "not found"}, 404)
        if len(parts) == 2 and parts[0] in VENUES:
            return self._page(parts[0], parts[1])
        if len(parts) == 3 and parts[0] == "api" and parts[1] in VENUES:
            return self._api_get(parts[1], parts[2], q)
        self._json({"error": "not found"}, 404)

    def _api_get(self, v: str, what: str, q: dict) -> None:
        self._slow()
        s = self._session(v)
        if s is None:
            return self._json({"error": "session expired"}, 401)
        with self.st.lock:
            if what == "accounts" and v == "ig":
                return self._json({"accounts": [
                    {"id": "ACC-CFD", "name": "CFD account", "type": "CFD", "cash": self.st.cash["ACC-CFD"]},
                    {"id": "ACC-KO", "name": "Turbo24 knock-outs", "type": "KNOCKOUT",
                     "cash": self.st.cash["ACC-KO"]}], "selected": s.get("account")})
            if what == "levels" and v == "ig":
                d = 1 if q.get("side", "CALL") == "CALL" else -1
                rows = [dict(p, **self.venue.quote(p)) for p in self.st.ig_products if p["direction"] == d]
                rows.sort(key=lambda r: -d * r["level"])
                return self._json({"index": self.st.index, "levels": rows})
            if what == "products" and v == "tr":
                self.venue.count("tr_products")
                rows = self.st.tr_products[q.get("side", "long")]
                off, lim = int(q.get("offset", 0)), min(int(q.get("limit", 20)), 100)
                out = []
                for i, p in enumerate(rows[off:off + lim], start=off):
                    qq = self.venue.quote(p)
                    out.append({"index": i, "isin": p["isin"], "ko": format_number(p["level"]),
                                "price": format_number(qq["offer"]) + " €",
                                "leverage": format_number(qq["leverage"] or 0.0, 1)})
                return self._json({"total": len(rows), "rows": out})
            if what == "quote":
                p = self.venue.product(q.get("id", ""))
                if p is None:
                    return self._json({"error": "unknown product"}, 404)
                return self._json(dict(p, **self.venue.quote(p)))
            if what == "positions":
                acct = s.get("account") or "TR"
                return self._json({
                    "cash": self.st.cash.get(acct, 0.0),
                    "open": [self.venue.position_view(p) for p in self.st.positions
                             if p["venue"] == v and p["account"] == acct],
                    "closed": [c for c in self.st.closed if c["venue"] == v and c["account"] == acct]})
        self._json({"error": "not found"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        u = urlparse(self.path)
        parts = [p for p in u.path.split("/") if p]
        body = self._body()
        self.venue.count("POST " + u.path)
        if parts[:1] == ["control"]:
            return self._control(parts[1] if len(parts) > 1 else "", body)
        if len(parts) != 3 or parts[0] != "api" or parts[1] not in VENUES:
            return self._json({"error": "not found"}, 404)
        v, what = parts[1], parts[2]
        self._slow()
        if what == "login":
            return self._login(v, body)
        if what == "2fa":
            return self._second_factor(v, body)
        s = self._session(v)
        if s is None:
            return self._json({"error": "session expired"}, 401)
        if what == "select_account":
            if body.get("id") not in ("ACC-CFD", "ACC-KO"):
                return self._json({"error": "unknown account"}, 400)
            s["account"] = body["id"]
            return self._json({"ok": True})
        route = {"order": self._order, "stop": self._stop, "close": self._close}.get(what)
        if route is None:
            return self._json({"error": "not found"}, 404)
        return route(v, s, body)

    def _control(self, what: str, body: dict) -> None:
        """``/control/faults|index|reset|release``: the tests' and demos' handles (no login)."""
        if what == "faults":
            self.venue.set_faults(**body)
            return self._json({"faults": self.st.faults})
        if what == "index":
            return self._json({"closed": self.venue.set_index(float(body["price"]))})
        if what == "reset":
            self.venue.reset()
            return self._json({"ok": True})
        if what == "release":
            return self._json({"released": self.venue.release_held()})
        return self._json({"error": "not found"}, 404)

    def _login(self, v: str, body: dict) -> None:
        """Username and password: a session waiting for its 2FA code."""
        ok = body.get("username") == self.st.username and body.get("password") == self.st.password
        if not ok:
            return self._json({"ok": False, "error": "Invalid credentials"}, 403)
        tok = secrets.token_hex(12)
        with self.st.lock:
            self.st.sessions[tok] = {"venue": v, "verified": False, "user": self.st.username}
        return self._json({"ok": True, "challenge": "2fa"},
                          headers={"Set-Cookie": f"{v}_session={tok}; Path=/"})

    def _second_factor(self, v: str, body: dict) -> None:
        """The 2FA code: the session is verified (Trade Republic's account is selected)."""
        c = SimpleCookie(self.headers.get("Cookie", "")).get(f"{v}_session")
        s = self.st.sessions.get(c.value) if c else None
        if s is None or str(body.get("code", "")).strip() != self.st.code:
            return self._json({"ok": False, "error": "Wrong code"}, 403)
        with self.st.lock:
            s["verified"] = True
            s["account"] = None if v == "ig" else "TR"
            self.st.logins[v] += 1
        return self._json({"ok": True})

    def _order(self, v: str, s: dict, body: dict) -> None:
        """A buy ticket: filled, rejected, or held (a late fill, a fill delay) without a confirmation."""
        acct = s.get("account")
        if not acct:
            return self._json({"status": "REJECTED", "reason": "no account selected"})
        try:
            size, limit = int(body.get("size")), float(body.get("limit"))
        except (TypeError, ValueError):
            return self._json({"status": "REJECTED", "reason": "size/limit not numeric"})
        args = dict(venue=v, account=acct, pid=str(body.get("product_id")), size=size, limit=limit,
                    client_ref=str(body.get("client_ref", "")))
        if self.st.faults.get("hold_fill") or self.st.faults.get("fill_delay"):
            with self.st.lock:
                if self.st.faults.get("fill_delay") and not self.st.faults.get("hold_fill"):
                    # a fill delay: the limit is checked on arrival, the fill comes at the next
                    # index move at that move's offer (a held late fill checks it when released)
                    p = self.venue.product(args["pid"])
                    if p is None or self.venue.quote(p)["offer"] > limit + 1e-9:
                        return self._json(self.venue.execute_order(**args))     # rejected now
                    args["limit_checked"] = True
                self.st.held.append(args)          # received; the fill comes later (release_held)
            return self._send(504, b"upstream timed out", "text/plain")
        res = self.venue.execute_order(**args)
        if res["status"] == "FILLED" and self.st.faults.pop("crash_after_submit", None):
            # the order is on the books, but the browser never gets a confirmation
            # (a gateway time-out; a dropped socket would make the browser retry the POST)
            return self._send(504, b"upstream timed out", "text/plain")
        return self._json(res)

    def _stop(self, v: str, s: dict, body: dict) -> None:
        """Place or move a position's stop (refused while ``stop_fail`` lasts)."""
        with self.st.lock:
            left = int(self.st.faults.get("stop_fail", 0) or 0)
            if left > 0:
                self.venue.count("stop_refused")
                if left == 1:
                    self.st.faults.pop("stop_fail")
                else:
                    self.st.faults["stop_fail"] = left - 1
                return self._json({"status": "REJECTED", "reason": "stop service unavailable"})
            for p in self.st.positions:
                if p["deal_id"] == body.get("deal_id"):
                    p["stop"] = round(float(body["stop"]), 2)
                    return self._json({"status": "ACCEPTED", "deal_id": p["deal_id"],
                                       "stop": p["stop"]})
        return self._json({"status": "REJECTED", "reason": "unknown position"})

    def _close(self, v: str, s: dict, body: dict) -> None:
        """Sell a position at the bid (or lose the close, or expire the session, as the faults say)."""
        with self.st.lock:
            lost = self.st.faults.get("close_lost")
            if lost:          # True: the next close; N: the next N closes
                if lost is True or int(lost) <= 1:
                    self.st.faults.pop("close_lost")
                else:
                    self.st.faults["close_lost"] = int(lost) - 1
                self.venue.count("close_lost")
                return self._send(504, b"upstream timed out", "text/plain")
            expire = self.st.faults.pop("close_expire", None)
            if expire:
                for p in list(self.st.positions):
                    if expire == "done" and p["deal_id"] == body.get("deal_id"):
                        bid = self.venue.quote(self.venue.product(p["product_id"]))["bid"]
                        self.venue._close(p, bid, "closed")
                self.st.sessions.clear()
                return self._json({"error": "session expired"}, 401)
            for p in self.st.positions:
                if p["deal_id"] == body.get("deal_id"):
                    bid = self.venue.quote(self.venue.product(p["product_id"]))["bid"]
                    rec = self.venue._close(p, bid, "closed")
                    if self.st.faults.pop("close_no_confirm", None):
                        return self._send(504, b"upstream timed out", "text/plain")
                    return self._json({"status": "CLOSED", "deal_id": rec["deal_id"],
                                       "price": rec["exit"], "pnl": rec["pnl"]})
        return self._json({"status": "REJECTED", "reason": "unknown position"})
