"""The persistent account of a live loop: cash and open positions in the journal's SQLite file.

Paper trading keeps its whole account here, so cash and positions carry across runs (and
crashes: it is saved after every fill, in one SQLite transaction) until ``mltrade live --reset``.
For IG / Trade Republic the venue is the truth; the table then only remembers the cash last seen,
for ``mltrade live status``. The tables are this module's own (``account``,
``account_positions``); the order journal's tables are left alone.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from mltrade.live.journal import open_sqlite
from mltrade.products import KnockoutProduct

_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    venue TEXT PRIMARY KEY,
    cash REAL NOT NULL,
    start_cash REAL NOT NULL,
    resets INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS account_positions (
    venue TEXT NOT NULL,
    ref TEXT NOT NULL,              -- the journal ref of the buy that opened it
    product TEXT NOT NULL,          -- KnockoutProduct fields (JSON)
    size REAL NOT NULL,
    price REAL NOT NULL,
    stop_price REAL,
    entry_dt REAL NOT NULL,         -- backtrader date number (UTC)
    entry_time TEXT NOT NULL,       -- ISO, for people
    entry_underlying REAL NOT NULL,
    entry_leverage REAL NOT NULL DEFAULT 0,
    cost REAL NOT NULL,
    entry_fees REAL NOT NULL DEFAULT 0,
    fees REAL NOT NULL DEFAULT 0,
    financing REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (venue, ref)
);
"""


def product_to_dict(p: KnockoutProduct) -> Dict[str, Any]:
    """The fields of ``p`` (without its process-local id) as JSON-able values."""
    d = {f.name: getattr(p, f.name) for f in fields(p) if f.name != "id"}
    if d.get("trading_hours"):
        d["trading_hours"] = [t.isoformat() for t in d["trading_hours"]]
    return d


def product_from_dict(d: Dict[str, Any]) -> KnockoutProduct:
    """Inverse of :func:`product_to_dict` (a new id)."""
    d = dict(d)
    if d.get("trading_hours"):
        d["trading_hours"] = tuple(dtime.fromisoformat(t) for t in d["trading_hours"])
    return KnockoutProduct(**d)


@dataclass
class SavedPosition:
    """An open certificate position as stored between runs."""

    ref: str
    product: Dict[str, Any]
    size: float
    price: float
    entry_dt: float
    entry_time: str
    entry_underlying: float
    stop_price: Optional[float] = None
    entry_leverage: float = 0.0
    cost: float = 0.0
    entry_fees: float = 0.0
    fees: float = 0.0
    financing: float = 0.0


@dataclass
class AccountState:
    """Cash and positions of one venue's account."""

    venue: str
    cash: float
    start_cash: float
    resets: int = 0
    updated: float = 0.0
    positions: List[SavedPosition] = field(default_factory=list)


class Account:
    """The ``account`` tables in the SQLite file at ``path`` (the journal's file)."""

    def __init__(self, path: str | Path, venue: str):
        self.path = str(path)
        self.venue = venue
        self._lock = threading.RLock()
        self._db = open_sqlite(self.path, _SCHEMA, timeout=30.0)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Account":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def load(self) -> Optional[AccountState]:
        """The stored account, or ``None`` when this venue has none yet."""
        with self._lock:
            row = self._db.execute("SELECT cash, start_cash, resets, updated FROM account WHERE venue = ?",
                                   (self.venue,)).fetchone()
            if row is None:
                return None
            cols = [f.name for f in fields(SavedPosition)]
            rows = self._db.execute(f"SELECT {', '.join(cols)} FROM account_positions WHERE venue = ? "
                                    "ORDER BY entry_dt, ref", (self.venue,)).fetchall()
        positions = []
        for r in rows:
            d = dict(zip(cols, r))
            d["product"] = json.loads(d["product"])
            positions.append(SavedPosition(**d))
        return AccountState(self.venue, float(row[0]), float(row[1]), int(row[2]), float(row[3]), positions)

    def open(self, start_cash: float, reset: bool = False) -> AccountState:
        """The stored account; a fresh one with ``start_cash`` and no positions if none or ``reset``."""
        state = self.load()
        if state is not None and not reset:
            return state
        if not (math.isfinite(start_cash) and start_cash >= 0):
            raise ValueError(f"start_cash: expected a non-negative amount, got {start_cash!r}")
        resets = (state.resets + 1) if state is not None else 0
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM account_positions WHERE venue = ?", (self.venue,))
                self._db.execute("INSERT INTO account (venue, cash, start_cash, resets, created, updated) "
                                 "VALUES (?,?,?,?,?,?) ON CONFLICT(venue) DO UPDATE SET cash = excluded.cash,"
                                 " start_cash = excluded.start_cash, resets = excluded.resets,"
                                 " updated = excluded.updated",
                                 (self.venue, float(start_cash), float(start_cash), resets, now, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return AccountState(self.venue, float(start_cash), float(start_cash), resets, now, [])

    def save(self, cash: float, positions: Optional[Iterable[SavedPosition]] = None) -> None:
        """Store ``cash`` and (when given) replace the open positions, in one transaction."""
        if not math.isfinite(cash):
            raise ValueError(f"cash: expected a finite amount, got {cash!r}")
        cols = [f.name for f in fields(SavedPosition)]
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute("UPDATE account SET cash = ?, updated = ? WHERE venue = ?",
                                       (float(cash), now, self.venue))
                if cur.rowcount == 0:
                    self._db.execute("INSERT INTO account (venue, cash, start_cash, resets, created, updated)"
                                     " VALUES (?,?,?,0,?,?)",
                                     (self.venue, float(cash), float(cash), now, now))
                if positions is not None:
                    self._db.execute("DELETE FROM account_positions WHERE venue = ?", (self.venue,))
                    for p in positions:
                        d = asdict(p)
                        d["product"] = json.dumps(d["product"])
                        self._db.execute(
                            f"INSERT INTO account_positions (venue, {', '.join(cols)}) VALUES "
                            f"(?, {', '.join('?' for _ in cols)})", (self.venue, *[d[c] for c in cols]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


def _count(n: int, noun: str) -> str:
    """``1 closed trade``, ``2 closed trades``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _times(n: int) -> str:
    """``once``, ``twice``, ``3 times``."""
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def status_lines(cfg: dict, venue: str, today: Optional[date] = None) -> List[str]:
    """What ``mltrade live status`` prints: cash, open positions, P&L (today, last session), kill switch."""
    from mltrade.live.journal import check_journal

    lv = cfg["live"]
    today = today or datetime.now(timezone.utc).date()
    path = Path(lv["journal_path"])
    check_journal(path, venue)      # empty, damaged or inconsistent: one line saying how to recover
    out = [f"venue {venue}: journal {path}"]
    if not path.exists():
        out.append("  no journal yet (nothing has run)")
    state, closes, open_rows, last = _read_status(path, venue)
    out.append(_cash_line(state, venue))
    out += _position_lines(state, open_rows, venue)
    out += _pnl_lines(closes, today, last)
    out.append(_kill_switch_line(lv))
    return out


def _read_status(path: Path, venue: str) -> tuple:
    """The stored account, the journal's closes and open positions, and the last session traded."""
    from mltrade.live.journal import OrderJournal, cursor_key

    if not path.exists():
        return None, [], [], None
    with Account(path, venue) as acc:
        state = acc.load()
    j = OrderJournal(path, venue)
    try:
        closes = [e for e in j.entries("close") if e.status in ("paper", "filled", "dry_run")]
        return state, closes, j.open_positions(), j.get_state(cursor_key(venue))
    finally:
        j.close()


def _cash_line(state: Any, venue: str) -> str:
    if state is None:
        return "  cash: unknown (no run has stored an account)"
    stamp = datetime.fromtimestamp(state.updated, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    kind = "paper account" if venue == "paper" else "last seen at the venue"
    return (f"  cash {state.cash:,.2f} ({kind}, {stamp}); started with {state.start_cash:,.2f}"
            + (f"; reset {_times(state.resets)}" if state.resets else ""))


def _position_lines(state: Any, open_rows: list, venue: str) -> List[str]:
    """Paper: the account's positions; a venue: the journal's open positions."""
    out = []
    if venue == "paper":
        positions = state.positions if state is not None else []
        out.append(f"  open positions: {len(positions) or 'none'}")
        for p in positions:
            pr = p.product
            side = "long" if pr["direction"] > 0 else "short"
            stop = f", stop {p.stop_price:.2f}" if p.stop_price else ""
            out.append(f"    {p.ref} {side} {pr.get('name') or pr['kind']} barrier {pr['barrier']:.2f} "
                       f"x{p.size:g} @ {p.price:.2f} since {p.entry_time}{stop}")
    else:
        out.append(f"  open positions (journal): {len(open_rows) or 'none'}")
        for e in open_rows:
            side = "long" if (e.direction or 0) > 0 else "short"
            out.append(f"    {e.ref} {side} barrier {e.barrier or 0:.2f} x{e.size or 0:g} "
                       f"@ {e.price or 0:.2f} "
                       f"deal {e.deal_id or '-'} (day {e.day})")
    return out


def _pnl_lines(closes: list, today: date, last: Optional[str]) -> List[str]:
    """Realised P&L today and on the last session traded (when that is another day)."""
    def pnl(day: str) -> tuple:
        rows = [e for e in closes if e.day == day]
        return sum(float(e.info.get("pnl") or 0.0) for e in rows), len(rows)

    p, n = pnl(today.isoformat())
    out = [f"  today ({today.isoformat()} UTC): realised P&L {p:+,.2f} from {_count(n, 'closed trade')}"]
    if last and last != today.isoformat():
        p, n = pnl(last)
        out.append(f"  last session traded ({last}): realised P&L {p:+,.2f} from {_count(n, 'closed trade')}")
    return out


def _kill_switch_line(lv: dict) -> str:
    from mltrade.live.risk import RiskGuard, RiskLimits

    guard = RiskGuard(RiskLimits.from_config(lv))
    if guard.killed():
        f = Path(guard.limits.kill_switch_file or "")
        reason = f.read_text(encoding="utf-8").strip().splitlines()[:1] if f.exists() else []
        return f"  kill switch: ENGAGED ({f}{': ' + reason[0] if reason else ''}) - no new positions"
    return f"  kill switch: off ({guard.limits.kill_switch_file or 'not configured'})"
