"""SQLite order journal: every venue action is written BEFORE it is sent and updated after.

At start-up :meth:`OrderJournal.reconcile` compares unresolved entries (status
``pending``: we may or may not have clicked; ``submitted``: clicked, no
confirmation seen) with the venue's open positions, matched by the client
reference we typed into the ticket. A crash between click and confirmation
therefore ends as ``filled`` (the position exists, adopt it) or ``absent``
(nothing happened) and never as a second order. The journal also keeps small
key/value state (the scheduler's last finished session) and per-day counts
for the risk limits.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

log = logging.getLogger("mltrade.live")

UNRESOLVED = ("pending", "submitted")
STATUSES = ("pending", "submitted", "filled", "rejected", "failed", "absent", "dry_run", "closed", "paper")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    ref TEXT PRIMARY KEY,
    venue TEXT NOT NULL,
    action TEXT NOT NULL,           -- buy | stop | close
    status TEXT NOT NULL,
    direction INTEGER,
    barrier REAL,
    size REAL,
    price REAL,
    stake REAL,
    deal_id TEXT,
    parent TEXT,                    -- the buy a stop/close belongs to
    day TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS orders_status ON orders(status);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class JournalEntry:
    """One row of the journal."""

    ref: str
    venue: str
    action: str
    status: str
    direction: Optional[int] = None
    barrier: Optional[float] = None
    size: Optional[float] = None
    price: Optional[float] = None
    stake: Optional[float] = None
    deal_id: Optional[str] = None
    parent: Optional[str] = None
    day: str = ""
    created: float = 0.0
    updated: float = 0.0
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ReconcileReport:
    """Outcome of :meth:`OrderJournal.reconcile`."""

    filled: List[str] = field(default_factory=list)     #: unresolved buys found on the venue
    absent: List[str] = field(default_factory=list)     #: unresolved buys the venue never executed
    closed: List[str] = field(default_factory=list)     #: journal positions no longer open at the venue
    unknown_positions: List[str] = field(default_factory=list)  #: venue positions not in the journal


class OrderJournal:
    """Order journal in one SQLite file (``:memory:`` for tests); thread-safe."""

    def __init__(self, path: str | Path, venue: str):
        self.path = str(path)
        self.venue = venue
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        mode = "WAL" if self.path != ":memory:" else "MEMORY"
        self._db.execute(f"PRAGMA journal_mode={mode}")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------
    def begin(self, action: str, *, direction: Optional[int] = None, barrier: Optional[float] = None,
              size: Optional[float] = None, price: Optional[float] = None, stake: Optional[float] = None,
              parent: Optional[str] = None, deal_id: Optional[str] = None, status: str = "pending",
              day: Optional[date] = None, ref: Optional[str] = None, **info: Any) -> str:
        """Record an intended action before it touches the venue; returns its client reference."""
        if action not in ("buy", "stop", "close"):
            raise ValueError(f"action: expected buy|stop|close, got {action!r}")
        ref = ref or f"ML{uuid.uuid4().hex[:12].upper()}"
        now = time.time()
        d = (day or datetime.now(timezone.utc).date()).isoformat()
        with self._lock:
            self._db.execute(
                "INSERT INTO orders (ref, venue, action, status, direction, barrier, size, price, stake,"
                " deal_id, parent, day, created, updated, info) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (ref, self.venue, action, status, direction, barrier, size, price, stake, deal_id, parent,
                 d, now, now, json.dumps(info, default=str)))
        return ref

    def update(self, ref: str, status: str, **fields: Any) -> None:
        """Set ``status`` (and any of price/size/barrier/deal_id, extra info keys) of entry ``ref``."""
        if status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {status!r}")
        cols = {k: fields.pop(k) for k in ("price", "size", "barrier", "deal_id") if k in fields}
        with self._lock:
            e = self.get(ref)
            if e is None:
                raise KeyError(f"journal: no entry {ref!r}")
            info = dict(e.info, **fields)
            sets = ", ".join(f"{k} = ?" for k in cols)
            sql = "UPDATE orders SET status = ?, updated = ?, info = ?" + (", " + sets if sets else "") + \
                  " WHERE ref = ?"
            self._db.execute(sql, (status, time.time(), json.dumps(info, default=str), *cols.values(), ref))

    # -- reading -------------------------------------------------------------
    def _rows(self, where: str = "1=1", args: Iterable[Any] = ()) -> List[JournalEntry]:
        with self._lock:
            cur = self._db.execute(
                "SELECT ref, venue, action, status, direction, barrier, size, price, stake, deal_id, parent,"
                " day, created, updated, info FROM orders WHERE venue = ? AND " + where +
                " ORDER BY created, rowid", (self.venue, *args))
            rows = cur.fetchall()
        return [JournalEntry(*r[:14], info=json.loads(r[14])) for r in rows]

    def get(self, ref: str) -> Optional[JournalEntry]:
        rows = self._rows("ref = ?", (ref,))
        return rows[0] if rows else None

    def entries(self, action: Optional[str] = None) -> List[JournalEntry]:
        return self._rows("action = ?", (action,)) if action else self._rows()

    def unresolved(self) -> List[JournalEntry]:
        """Entries written before a venue action whose outcome was never confirmed."""
        return self._rows("status IN (?, ?)", UNRESOLVED)

    def open_positions(self) -> List[JournalEntry]:
        """Filled buys that have no completed close yet."""
        return self._rows("action = 'buy' AND status = 'filled'")

    def trades_on(self, day: date) -> int:
        """Buys sent (or in flight) on ``day``: counts toward the daily trade limit."""
        return len(self._rows("action = 'buy' AND day = ? AND "
                              "status IN ('pending','submitted','filled','closed')",
                              (day.isoformat(),)))

    def realized_pnl_on(self, day: date) -> float:
        """Realised P&L of the closes recorded on ``day`` (survives restarts, for the daily loss limit)."""
        rows = self._rows("action = 'close' AND day = ? AND status IN ('filled', 'dry_run')",
                          (day.isoformat(),))
        return float(sum(e.info.get("pnl") or 0.0 for e in rows))

    # -- reconciliation ------------------------------------------------------
    def reconcile(self, venue_positions: Iterable[Any], closed: Iterable[Any] = ()) -> ReconcileReport:
        """Resolve in-flight entries against the venue's open positions (matched by client ref).

        ``venue_positions``/``closed`` are objects with ``client_ref`` and ``deal_id`` (and for
        positions ``size``/``entry``/``barrier``; for closed ones ``exit``/``pnl``/``reason``).
        """
        rep = ReconcileReport()
        open_by_ref = {p.client_ref: p for p in venue_positions if getattr(p, "client_ref", "")}
        closed_by_ref = {c.client_ref: c for c in closed if getattr(c, "client_ref", "")}
        for e in self.unresolved():
            if e.action == "buy":
                p = open_by_ref.get(e.ref) or closed_by_ref.get(e.ref)
                if p is not None:
                    self.update(e.ref, "filled", deal_id=p.deal_id, size=p.size,
                                price=getattr(p, "entry", e.price), barrier=getattr(p, "barrier", e.barrier),
                                reconciled=True)
                    rep.filled.append(e.ref)
                else:
                    self.update(e.ref, "absent", reconciled=True)
                    rep.absent.append(e.ref)
            else:   # a stop/close whose outcome is unknown: the venue state below decides
                self.update(e.ref, "absent", reconciled=True)
        for e in self.open_positions():
            if e.ref not in open_by_ref:
                c = closed_by_ref.get(e.ref)
                self.update(e.ref, "closed", reconciled=True,
                            exit=getattr(c, "exit", None), pnl=getattr(c, "pnl", None),
                            reason=getattr(c, "reason", "unknown"))
                rep.closed.append(e.ref)
        known = {e.ref for e in self.entries("buy")}
        rep.unknown_positions = [r for r in open_by_ref if r not in known]
        if rep.filled or rep.absent or rep.closed:
            log.warning("journal reconciled: %d in-flight buys found filled, %d absent, "
                        "%d closed at the venue",
                        len(rep.filled), len(rep.absent), len(rep.closed))
        return rep

    # -- key/value state -----------------------------------------------------
    def set_state(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = excluded.value", (key, json.dumps(value, default=str)))

    def get_state(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])
