"""A local stand-in for the brokers' web sites: HTML/JS pages plus a tiny JSON state API.

``FakeVenue`` serves the pages in ``mltrade/live/pages/`` on 127.0.0.1 (port 0
by default) from a ``ThreadingHTTPServer`` in a background thread. It keeps
accounts, cash, knock-out products, positions and orders in memory, prices
certificates with :mod:`mltrade.products`, and has fault switches for tests and
demos (:meth:`FakeVenue.set_faults`): element missing, slow load, session
expired, order rejected, crash between submit and confirmation, a late fill
(held until :meth:`FakeVenue.release_held`), stop placement failing, a close
without confirmation (executed or lost) and a knocked-out product filling at
0.00. :meth:`FakeVenue.open_position` opens a position behind the bot's back.
The ``/control/*`` endpoints (no login) let tests move the index, set faults,
release held orders and read counters.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, urlparse

import numpy as np

from mltrade import products as P
from mltrade.live.formats import format_number

PAGES = Path(__file__).with_name("pages")
VENUES = ("ig", "tr")


@dataclass
class VenueState:
    """Everything the fake venue remembers (guarded by ``lock``)."""

    index: float = 15000.0
    ratio: float = 0.01
    spread: float = 0.01
    username: str = "demo@example.com"
    password: str = "s3cret-pass"
    code: str = "123456"
    cash: Dict[str, float] = field(default_factory=lambda: {"ACC-CFD": 5000.0, "ACC-KO": 10000.0,
                                                              "TR": 10000.0})
    ig_products: List[dict] = field(default_factory=list)
    tr_products: Dict[str, List[dict]] = field(default_factory=dict)
    positions: List[dict] = field(default_factory=list)
    closed: List[dict] = field(default_factory=list)
    orders: List[dict] = field(default_factory=list)
    held: List[dict] = field(default_factory=list)      # orders received but not yet executed (late fill)
    sessions: Dict[str, dict] = field(default_factory=dict)
    faults: Dict[str, Any] = field(default_factory=dict)
    counters: Dict[str, int] = field(default_factory=dict)
    logins: Dict[str, int] = field(default_factory=lambda: {"ig": 0, "tr": 0})
    lock: threading.RLock = field(default_factory=threading.RLock)
    seq: int = 0


def _ig_products(index: float, ratio: float, step: float = 25.0, n: int = 60) -> List[dict]:
    base = np.floor(index / step) * step
    out = []
    for k in range(1, n + 1):
        out.append({"id": f"IGC{k:03d}", "direction": 1, "level": float(base - k * step), "ratio": ratio})
        out.append({"id": f"IGP{k:03d}", "direction": -1, "level": float(base + k * step), "ratio": ratio})
    return out


def _tr_products(index: float, n: int, seed: int = 7) -> Dict[str, List[dict]]:
    """Certificates sorted nearest-first; a few cheap (ratio 0.001) and illiquid rows mixed in."""
    rng = np.random.default_rng(seed)
    out: Dict[str, List[dict]] = {}
    for side, d in (("long", 1), ("short", -1)):
        gaps = rng.uniform(2.0, 8.0, n)
        levels = index - d * (20.0 + np.cumsum(gaps))
        rows = []
        for i, lvl in enumerate(levels):
            ratio = 0.001 if rng.random() < 0.12 else 0.01
            markup = 1.6 if rng.random() < 0.06 else 1.0          # illiquid: priced far above fair
            rows.append({"isin": f"DE000TR{'L' if d > 0 else 'S'}{i:05d}", "direction": d,
                         "level": round(float(lvl), 2), "ratio": ratio, "markup": markup})
        out[side] = rows
    return out


class FakeVenue:
    """Run the fake IG / Trade Republic web sites on 127.0.0.1; ``url`` is the base address."""

    def __init__(self, index: float = 15000.0, tr_rows: int = 520, host: str = "127.0.0.1",
                 port: int = 0, **state: Any):
        self.state = VenueState(index=index, **state)
        self.state.ig_products = _ig_products(index, self.state.ratio)
        self.state.tr_products = _tr_products(index, tr_rows)
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeVenue":
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakevenue", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeVenue":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- state helpers (also used by the control API) ------------------------
    def count(self, key: str) -> None:
        with self.state.lock:
            self.state.counters[key] = self.state.counters.get(key, 0) + 1

    def set_faults(self, **faults: Any) -> None:
        """Switch faults on; ``None`` switches one off.

        ``missing="id"`` (element removed from the pages), ``slow_ms=1500``, ``session_expired=True``,
        ``reject="reason"`` (next order), ``crash_after_submit=True`` (next order filled, no
        confirmation), ``hold_fill=True`` (orders are held, no confirmation, filled by
        :meth:`release_held`: a late fill), ``stop_fail=N`` (the next N stop requests are refused),
        ``close_no_confirm=True`` (next close executed, no confirmation), ``close_lost=True`` (next
        close not executed, no confirmation; ``close_lost=N``: the next N closes), ``zero_fill=True``
        (next order: the product is knocked out, it fills at 0.00 and is settled at once),
        ``partial_fill=0.5`` (orders fill that fraction of their size while the confirmation shows
        the size ordered), ``locale="de"``/``"en"`` (the pages print numbers in that locale),
        ``misprint=100`` (the positions page shows the cash times that factor: a shifted decimal),
        ``fill_delay=True`` (orders within their limit on arrival fill at the next index move, at
        that move's offer, without a confirmation), ``close_expire="done"``/``"lost"`` (the next close expires
        the session before its confirmation, after executing it or without).
        """
        with self.state.lock:
            for k, v in faults.items():
                if v is None:
                    self.state.faults.pop(k, None)
                else:
                    self.state.faults[k] = v
            if self.state.faults.pop("session_expired", None):
                self.state.sessions.clear()

    def reset(self) -> None:
        """Forget positions, orders, faults, counters and sessions; restore cash."""
        with self.state.lock:
            fresh = VenueState()
            self.state.positions.clear()
            self.state.closed.clear()
            self.state.orders.clear()
            self.state.held.clear()
            self.state.faults.clear()
            self.state.counters.clear()
            self.state.sessions.clear()
            self.state.cash = fresh.cash
            self.state.logins = {"ig": 0, "tr": 0}

    def product(self, pid: str) -> Optional[dict]:
        for p in self.state.ig_products:
            if p["id"] == pid:
                return p
        for rows in self.state.tr_products.values():
            for p in rows:
                if p["isin"] == pid:
                    return p
        return None

    def quote(self, p: dict) -> Dict[str, float]:
        """Bid/offer of product ``p`` at the current index (through mltrade.products)."""
        fair = float(P.fair_value(p["direction"], self.state.index, p["level"], p["ratio"]))
        offer = round(fair * p.get("markup", 1.0), 2)
        bid = round(float(P.bid_price(p["direction"], self.state.index, p["level"], p["ratio"],
                                      spread=self.state.spread)) * p.get("markup", 1.0), 2)
        lev = round(self.state.index * p["ratio"] / offer, 1) if offer > 0 else None
        return {"bid": bid, "offer": offer, "leverage": lev}

    def set_index(self, price: float) -> List[dict]:
        """Move the index; triggers stops and knock-outs. Returns the positions closed."""
        with self.state.lock:
            self.state.index = float(price)
            if self.state.faults.get("fill_delay") and self.state.held:
                self.release_held()          # orders held by the fill delay fill at the new index
            done = []
            for pos in list(self.state.positions):
                p = self.product(pos["product_id"])
                q = self.quote(p)
                if bool(P.is_knocked_out(p["direction"], price, price, p["level"])):
                    done.append(self._close(pos, 0.0, "knockout"))
                elif pos.get("stop") and q["bid"] <= pos["stop"]:
                    done.append(self._close(pos, pos["stop"], "stop"))
            return done

    def release_held(self) -> List[dict]:
        """Execute the orders held by ``hold_fill`` (the late fills); returns their results."""
        with self.state.lock:
            held, self.state.held = self.state.held, []
            return [self.execute_order(**h) for h in held]

    def open_position(self, pid: str, size: int, client_ref: str = "", venue: str = "ig",
                      account: Optional[str] = None) -> dict:
        """A position opened behind the bot's back (by hand on the web site); no stop."""
        return self.execute_order(venue, account or ("ACC-KO" if venue == "ig" else "TR"), pid, size,
                                  limit=1e9, client_ref=client_ref)

    def _close(self, pos: dict, price: float, reason: str) -> dict:
        self.state.positions.remove(pos)
        pnl = round((price - pos["entry"]) * pos["size"], 2)
        self.state.cash[pos["account"]] += round(price * pos["size"], 2)
        rec = dict(pos, exit=price, pnl=pnl, reason=reason, closed_at=time.time())
        self.state.closed.append(rec)
        return rec

    def execute_order(self, venue: str, account: str, pid: str, size: int, limit: float,
                      client_ref: str, limit_checked: bool = False) -> dict:
        """Fill a buy at the offer if it is within the limit and cash suffices.

        ``limit_checked``: the limit was checked when the order arrived (a fill delay): it fills at the
        offer of now, whatever the limit (the latency's slippage)."""
        with self.state.lock:
            p = self.product(pid)
            if p is None:
                return {"status": "REJECTED", "reason": f"unknown product {pid}"}
            reason = self.state.faults.pop("reject", None)
            q = self.quote(p)
            knocked_out = bool(self.state.faults.pop("zero_fill", None))
            if knocked_out:
                q = dict(q, offer=0.0, bid=0.0)
            if reason is None and size <= 0:
                reason = "size must be positive"
            if reason is None and not limit_checked and q["offer"] > limit + 1e-9:
                reason = f"price moved: offer {q['offer']:.2f} above limit {limit:.2f}"
            frac = self.state.faults.get("partial_fill")
            ordered = size
            if frac and reason is None and size > 0:
                size = max(1, int(size * float(frac)))
            cost = round(q["offer"] * size, 2)
            if reason is None and cost > self.state.cash[account] + 1e-9:
                reason = "insufficient funds"
            self.state.seq += 1
            order = {"order_id": f"{venue.upper()}-O{self.state.seq:05d}", "venue": venue,
                     "product_id": pid, "size": size, "limit": limit, "client_ref": client_ref}
            self.state.orders.append(order)
            if reason:
                order["status"] = "REJECTED"
                return {"status": "REJECTED", "reason": reason, "order_id": order["order_id"]}
            self.state.cash[account] -= cost
            pos = {"deal_id": f"{venue.upper()}-D{self.state.seq:05d}", "venue": venue, "account": account,
                   "product_id": pid, "direction": p["direction"], "level": p["level"], "ratio": p["ratio"],
                   "size": size, "entry": q["offer"], "stop": None, "client_ref": client_ref,
                   "opened_at": time.time()}
            self.state.positions.append(pos)
            order["status"] = "FILLED"
            if knocked_out:       # the barrier was already breached: settled at once at 0.00
                self._close(pos, 0.0, "knockout")
            return {"status": "FILLED", "deal_id": pos["deal_id"], "price": q["offer"], "size": ordered,
                    "level": p["level"], "order_id": order["order_id"]}

    def position_view(self, pos: dict) -> dict:
        q = self.quote(self.product(pos["product_id"]))
        return dict(pos, bid=q["bid"], pnl=round((q["bid"] - pos["entry"]) * pos["size"], 2))


def _make_handler(venue: FakeVenue):
    st = venue.state

    class Handler(BaseHTTPRequestHandler):
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
            s = st.sessions.get(m.value)
            return s if s and s.get("venue") == v and s.get("verified") else None

        def _slow(self) -> None:
            ms = st.faults.get("slow_ms")
            if ms:
                time.sleep(float(ms) / 1000.0)

        def _page(self, v: str, name: str) -> None:
            path = PAGES / f"{v}_{name}.html"
            if not path.exists():
                return self._json({"error": "not found"}, 404)
            self._slow()
            if name != "login" and self._session(v) is None:
                return self._send(302, b"", "text/plain", {"Location": f"/{v}/login"})
            with st.lock:
                faults = {k: st.faults[k] for k in ("missing", "locale", "misprint") if k in st.faults}
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
            venue.count("GET " + u.path)
            if u.path == "/control/state":
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
            with st.lock:
                if what == "accounts" and v == "ig":
                    return self._json({"accounts": [
                        {"id": "ACC-CFD", "name": "CFD account", "type": "CFD", "cash": st.cash["ACC-CFD"]},
                        {"id": "ACC-KO", "name": "Turbo24 knock-outs", "type": "KNOCKOUT",
                         "cash": st.cash["ACC-KO"]}], "selected": s.get("account")})
                if what == "levels" and v == "ig":
                    d = 1 if q.get("side", "CALL") == "CALL" else -1
                    rows = [dict(p, **venue.quote(p)) for p in st.ig_products if p["direction"] == d]
                    rows.sort(key=lambda r: -d * r["level"])
                    return self._json({"index": st.index, "levels": rows})
                if what == "products" and v == "tr":
                    venue.count("tr_products")
                    rows = st.tr_products[q.get("side", "long")]
                    off, lim = int(q.get("offset", 0)), min(int(q.get("limit", 20)), 100)
                    out = []
                    for i, p in enumerate(rows[off:off + lim], start=off):
                        qq = venue.quote(p)
                        out.append({"index": i, "isin": p["isin"], "ko": format_number(p["level"]),
                                    "price": format_number(qq["offer"]) + " €",
                                    "leverage": format_number(qq["leverage"] or 0.0, 1)})
                    return self._json({"total": len(rows), "rows": out})
                if what == "quote":
                    p = venue.product(q.get("id", ""))
                    if p is None:
                        return self._json({"error": "unknown product"}, 404)
                    return self._json(dict(p, **venue.quote(p)))
                if what == "positions":
                    acct = s.get("account") or "TR"
                    return self._json({
                        "cash": st.cash.get(acct, 0.0),
                        "open": [venue.position_view(p) for p in st.positions
                                 if p["venue"] == v and p["account"] == acct],
                        "closed": [c for c in st.closed if c["venue"] == v and c["account"] == acct]})
            self._json({"error": "not found"}, 404)

        def do_POST(self) -> None:  # noqa: N802
            u = urlparse(self.path)
            parts = [p for p in u.path.split("/") if p]
            body = self._body()
            venue.count("POST " + u.path)
            if parts[:1] == ["control"]:
                what = parts[1] if len(parts) > 1 else ""
                if what == "faults":
                    venue.set_faults(**body)
                    return self._json({"faults": st.faults})
                if what == "index":
                    return self._json({"closed": venue.set_index(float(body["price"]))})
                if what == "reset":
                    venue.reset()
                    return self._json({"ok": True})
                if what == "release":
                    return self._json({"released": venue.release_held()})
                return self._json({"error": "not found"}, 404)
            if len(parts) != 3 or parts[0] != "api" or parts[1] not in VENUES:
                return self._json({"error": "not found"}, 404)
            v, what = parts[1], parts[2]
            self._slow()
            if what == "login":
                ok = body.get("username") == st.username and body.get("password") == st.password
                if not ok:
                    return self._json({"ok": False, "error": "Invalid credentials"}, 403)
                tok = secrets.token_hex(12)
                with st.lock:
                    st.sessions[tok] = {"venue": v, "verified": False, "user": st.username}
                return self._json({"ok": True, "challenge": "2fa"},
                                  headers={"Set-Cookie": f"{v}_session={tok}; Path=/"})
            if what == "2fa":
                c = SimpleCookie(self.headers.get("Cookie", "")).get(f"{v}_session")
                s = st.sessions.get(c.value) if c else None
                if s is None or str(body.get("code", "")).strip() != st.code:
                    return self._json({"ok": False, "error": "Wrong code"}, 403)
                with st.lock:
                    s["verified"] = True
                    s["account"] = None if v == "ig" else "TR"
                    st.logins[v] += 1
                return self._json({"ok": True})
            s = self._session(v)
            if s is None:
                return self._json({"error": "session expired"}, 401)
            if what == "select_account":
                if body.get("id") not in ("ACC-CFD", "ACC-KO"):
                    return self._json({"error": "unknown account"}, 400)
                s["account"] = body["id"]
                return self._json({"ok": True})
            if what == "order":
                acct = s.get("account")
                if not acct:
                    return self._json({"status": "REJECTED", "reason": "no account selected"})
                try:
                    size, limit = int(body.get("size")), float(body.get("limit"))
                except (TypeError, ValueError):
                    return self._json({"status": "REJECTED", "reason": "size/limit not numeric"})
                args = dict(venue=v, account=acct, pid=str(body.get("product_id")), size=size, limit=limit,
                            client_ref=str(body.get("client_ref", "")))
                if st.faults.get("hold_fill") or st.faults.get("fill_delay"):
                    with st.lock:
                        if st.faults.get("fill_delay") and not st.faults.get("hold_fill"):
                            # a fill delay: the limit is checked on arrival, the fill comes at the next
                            # index move at that move's offer (a held late fill checks it when released)
                            p = venue.product(args["pid"])
                            if p is None or venue.quote(p)["offer"] > limit + 1e-9:
                                return self._json(venue.execute_order(**args))     # rejected now
                            args["limit_checked"] = True
                        st.held.append(args)          # received; the fill comes later (release_held)
                    return self._send(504, b"upstream timed out", "text/plain")
                res = venue.execute_order(**args)
                if res["status"] == "FILLED" and st.faults.pop("crash_after_submit", None):
                    # the order is on the books, but the browser never gets a confirmation
                    # (a gateway time-out; a dropped socket would make the browser retry the POST)
                    return self._send(504, b"upstream timed out", "text/plain")
                return self._json(res)
            if what == "stop":
                with st.lock:
                    left = int(st.faults.get("stop_fail", 0) or 0)
                    if left > 0:
                        venue.count("stop_refused")
                        if left == 1:
                            st.faults.pop("stop_fail")
                        else:
                            st.faults["stop_fail"] = left - 1
                        return self._json({"status": "REJECTED", "reason": "stop service unavailable"})
                    for p in st.positions:
                        if p["deal_id"] == body.get("deal_id"):
                            p["stop"] = round(float(body["stop"]), 2)
                            return self._json({"status": "ACCEPTED", "deal_id": p["deal_id"],
                                               "stop": p["stop"]})
                return self._json({"status": "REJECTED", "reason": "unknown position"})
            if what == "close":
                with st.lock:
                    lost = st.faults.get("close_lost")
                    if lost:          # True: the next close; N: the next N closes
                        if lost is True or int(lost) <= 1:
                            st.faults.pop("close_lost")
                        else:
                            st.faults["close_lost"] = int(lost) - 1
                        venue.count("close_lost")
                        return self._send(504, b"upstream timed out", "text/plain")
                    expire = st.faults.pop("close_expire", None)
                    if expire:
                        for p in list(st.positions):
                            if expire == "done" and p["deal_id"] == body.get("deal_id"):
                                venue._close(p, venue.quote(venue.product(p["product_id"]))["bid"], "closed")
                        st.sessions.clear()
                        return self._json({"error": "session expired"}, 401)
                    for p in st.positions:
                        if p["deal_id"] == body.get("deal_id"):
                            bid = venue.quote(venue.product(p["product_id"]))["bid"]
                            rec = venue._close(p, bid, "closed")
                            if st.faults.pop("close_no_confirm", None):
                                return self._send(504, b"upstream timed out", "text/plain")
                            return self._json({"status": "CLOSED", "deal_id": rec["deal_id"],
                                               "price": rec["exit"], "pnl": rec["pnl"]})
                return self._json({"status": "REJECTED", "reason": "unknown position"})
            self._json({"error": "not found"}, 404)

    return Handler


def main() -> None:  # pragma: no cover - manual demo helper
    """Serve the fake venue until interrupted (``python -m mltrade.live.fakevenue``)."""
    with FakeVenue() as v:
        print(f"fake venue at {v.url}/ig/login and {v.url}/tr/login "
              f"(user {v.state.username}, code {v.state.code})")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    main()
