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
release held orders and read counters; the HTTP side is :mod:`mltrade.live.fakevenue_http`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any, Dict, List, Optional

import numpy as np

from mltrade import products as P
from mltrade.live.fakevenue_http import make_handler


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
        self._server = ThreadingHTTPServer((host, port), make_handler(self))
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
