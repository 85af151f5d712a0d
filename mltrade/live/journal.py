"""SQLite order journal: every venue action is written BEFORE it is sent and updated after.

The venue's positions page is the truth; :meth:`OrderJournal.reconcile`
(:mod:`mltrade.live.journal_reconcile`) brings the journal in line with it (at start, after a
confirmation time-out, once per bar): unconfirmed orders end as ``filled`` or ``absent`` (never a
second order), late fills become ``filled`` again, positions gone at the venue are closed with a
``close`` row (so the daily loss limit counts them), unknown venue positions are reported.

A buy may carry a *decision key* (strategy, session, decision time); a unique
index refuses a second order for the same key, at submit and on a replay after
a restart (:class:`DuplicateDecision`). The journal also keeps small key/value
state (the scheduler's last finished session) and per-day counts for the risk limits.
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

from mltrade.live.journal_reconcile import Reconciliation

log = logging.getLogger("mltrade.live")

UNRESOLVED = ("pending", "submitted")
STATUSES = ("pending", "submitted", "filled", "rejected", "failed", "absent", "dry_run", "closed", "paper",
            "knocked_out")

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
    info TEXT NOT NULL DEFAULT '{}',
    decision TEXT                   -- decision key of a buy (strategy|session|time): one order per key
);
CREATE INDEX IF NOT EXISTS orders_status ON orders(status);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_DECISION_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS orders_decision ON orders(venue, decision) "
                   "WHERE decision IS NOT NULL")
_COLS = ("ref, venue, action, status, direction, barrier, size, price, stake, deal_id, parent, day, created, "
         "updated, info, decision")


def cursor_key(venue: str) -> str:
    """The journal-state key of a venue's replay cursor (its last session traded): one per venue, so a demo
    run on IG does not resume after the paper account's last session (paper keeps the historical key)."""
    return "last_session" if venue == "paper" else f"last_session:{venue}"


class JournalError(ValueError):
    """The journal file is empty, damaged or inconsistent; the message says how to recover."""


_REQUIRED = {"orders": set(_COLS.replace(" ", "").split(",")) - {"decision"}, "state": {"key", "value"}}


def backup_path(path: str | Path) -> Path:
    """The backup the bot keeps of the journal (written at the start of every run)."""
    return Path(str(path) + ".bak")


def _recovery(path: Path, paper: bool) -> str:
    bak = backup_path(path)
    restore = (f"restore the backup the bot keeps (cp {bak} {path}; from the start or end of the last run)"
               if bak.exists() and bak.stat().st_size else "no backup exists yet")
    fresh = ("or start a new paper account with `mltrade live --reset` (the damaged file is kept as "
             f"{path.name}.damaged-<time>)" if paper else
             f"or move {path} aside to start a new journal (the venue's open positions are then adopted)")
    return f"{restore}, {fresh}"


def check_journal(path: str | Path, venue: str) -> None:
    """Refuse an empty, damaged or inconsistent journal with :class:`JournalError` (one line: what is
    wrong and how to recover). A missing file is fine (a new account); ``:memory:`` is not checked."""
    if str(path) == ":memory:":
        return
    p = Path(path)
    if not p.exists():
        return
    paper = venue == "paper"

    def bad(what: str) -> JournalError:
        return JournalError(f"journal {p}: {what}; {_recovery(p, paper)}")

    if p.stat().st_size == 0:
        raise bad("the file is empty (0 bytes)")
    try:
        db = sqlite3.connect(str(p), timeout=5.0)
        try:
            ok = db.execute("PRAGMA quick_check").fetchone()
            tables = {r[0]: {c[1] for c in db.execute(f"PRAGMA table_info({r[0]})")}
                      for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            counts = {}
            if "orders" in tables:
                counts["orders"] = db.execute("SELECT COUNT(*) FROM orders WHERE venue = ?",
                                              (venue,)).fetchone()[0]
            if "account" in tables:
                counts["account"] = db.execute("SELECT COUNT(*) FROM account WHERE venue = ?",
                                               (venue,)).fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise bad(f"not a readable SQLite journal ({e})") from None
    if not ok or ok[0] != "ok":
        raise bad(f"damaged (integrity check: {ok[0] if ok else '?'})")
    for table, cols in _REQUIRED.items():
        if table not in tables:
            raise bad(f"schema mismatch: no table {table!r} (tables: {', '.join(sorted(tables)) or 'none'})")
        missing = cols - tables[table]
        if missing:
            raise bad(f"schema mismatch: table {table!r} lacks {', '.join(sorted(missing))}")
    if paper and counts.get("orders") and not counts.get("account"):
        raise bad(f"inconsistent: {counts['orders']} paper orders but no paper account row")


def set_aside(path: str | Path) -> Optional[Path]:
    """Move a damaged journal (and its -wal/-shm) to ``<name>.damaged-<time>``; returns the new path."""
    p = Path(path)
    if not p.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    dest = p.with_name(f"{p.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(p) + suffix)
        if src.exists():
            src.replace(Path(str(dest) + suffix))
    log.warning("journal %s set aside as %s", p, dest)
    return dest


def backup_journal(path: str | Path) -> Optional[Path]:
    """Copy the (checked) journal to :func:`backup_path` with SQLite's backup API."""
    if str(path) == ":memory:" or not Path(path).exists():
        return None
    dest = backup_path(path)
    tmp = Path(str(dest) + ".tmp")
    src = sqlite3.connect(str(path), timeout=5.0)
    try:
        out = sqlite3.connect(str(tmp))
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()
    tmp.replace(dest)
    return dest


class DuplicateDecision(RuntimeError):
    """A buy for this decision key is already in the journal (``existing`` is that entry)."""

    def __init__(self, key: str, existing: "JournalEntry"):
        super().__init__(f"decision {key!r} already has order {existing.ref} ({existing.status})")
        self.key = key
        self.existing = existing



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
    decision: Optional[str] = None


def open_sqlite(path: str, schema: str, timeout: float = 5.0, wal: bool = False) -> sqlite3.Connection:
    """Open (creating its folder) the SQLite file at ``path`` in autocommit mode with full syncs and
    ``schema`` applied; ``wal`` turns on write-ahead logging (``:memory:`` stays in memory)."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
    if wal:
        db.execute(f"PRAGMA journal_mode={'WAL' if path != ':memory:' else 'MEMORY'}")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class OrderJournal(Reconciliation):
    """Order journal in one SQLite file (``:memory:`` for tests); thread-safe; reconciled with the venue
    by :meth:`~mltrade.live.journal_reconcile.Reconciliation.reconcile`."""

    def __init__(self, path: str | Path, venue: str, run_id: Optional[str] = None, lock: Any = None):
        self.path = str(path)
        self.venue = venue
        self.run_id = run_id        #: the run owning the rows this instance writes (info["run"])
        self.lock = lock            #: the RunLock this process holds on the journal (None: not held)
        self._lock = threading.RLock()
        self._db = open_sqlite(self.path, _SCHEMA, wal=True)
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(orders)")}
        if "decision" not in cols:      # a journal written before decision keys existed
            self._db.execute("ALTER TABLE orders ADD COLUMN decision TEXT")
        self._db.execute(_DECISION_INDEX)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------
    def begin(self, action: str, *, direction: Optional[int] = None, barrier: Optional[float] = None,
              size: Optional[float] = None, price: Optional[float] = None, stake: Optional[float] = None,
              parent: Optional[str] = None, deal_id: Optional[str] = None, status: str = "pending",
              day: Optional[date] = None, ref: Optional[str] = None, decision: Optional[str] = None,
              **info: Any) -> str:
        """Record an intended action before it touches the venue; returns its client reference.

        ``decision`` (buys): the decision key; a second buy for a key raises :class:`DuplicateDecision`.
        """
        if action not in ("buy", "stop", "close"):
            raise ValueError(f"action: expected buy|stop|close, got {action!r}")
        if status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {status!r}")
        ref = ref or f"ML{uuid.uuid4().hex[:12].upper()}"
        now = time.time()
        d = (day or datetime.now(timezone.utc).date()).isoformat()
        if self.run_id and "run" not in info:
            info["run"] = self.run_id
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO orders ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (ref, self.venue, action, status, direction, barrier, size, price, stake, deal_id, parent,
                     d, now, now, json.dumps(info, default=str), decision))
            except sqlite3.IntegrityError:
                existing = self.by_decision(decision) if decision else None
                if existing is None:
                    raise
                raise DuplicateDecision(decision, existing) from None
        return ref

    def close_position(self, buy_ref: str, *, price: float, pnl: Optional[float], reason: str,
                       day: Optional[date] = None, close_ref: Optional[str] = None, **info: Any) -> str:
        """Close the open buy ``buy_ref`` at ``price`` in one transaction: the close row (``close_ref``,
        or a new one) becomes ``filled`` and the buy ``closed``. Returns the close row's ref."""
        with self._lock:
            buy = self.get(buy_ref)
            if buy is None:
                raise KeyError(f"journal: no entry {buy_ref!r}")
            if pnl is None and buy.size is not None and buy.price is not None:
                pnl = round(buy.size * (price - buy.price), 2)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if close_ref is None:
                    close_ref = self.begin("close", parent=buy_ref, size=buy.size, price=price, day=day,
                                           deal_id=buy.deal_id, status="filled", pnl=pnl, reason=reason,
                                           **info)
                else:
                    self.update(close_ref, "filled", price=price, pnl=pnl, reason=reason, **info)
                self.update(buy_ref, "closed", exit=price, pnl=pnl, reason=reason, close_ref=close_ref)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return close_ref

    def update(self, ref: str, status: str, **fields: Any) -> None:
        """Set ``status`` (and any of price/size/barrier/deal_id, extra info keys) of entry ``ref``."""
        if status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {status!r}")
        cols = {k: fields.pop(k) for k in ("price", "size", "barrier", "deal_id", "direction") if k in fields}
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
            cur = self._db.execute(f"SELECT {_COLS} FROM orders WHERE venue = ? AND " + where +
                                   " ORDER BY created, rowid", (self.venue, *args))
            rows = cur.fetchall()
        return [JournalEntry(*r[:14], info=json.loads(r[14]), decision=r[15]) for r in rows]

    def get(self, ref: str) -> Optional[JournalEntry]:
        rows = self._rows("ref = ?", (ref,))
        return rows[0] if rows else None

    def entries(self, action: Optional[str] = None) -> List[JournalEntry]:
        return self._rows("action = ?", (action,)) if action else self._rows()

    def by_decision(self, key: str) -> Optional[JournalEntry]:
        """The buy recorded for decision key ``key`` (None if there is none)."""
        rows = self._rows("decision = ?", (key,))
        return rows[0] if rows else None

    def closes_of(self, buy_ref: str) -> List[JournalEntry]:
        """Close rows that belong to the buy ``buy_ref``."""
        return self._rows("action = 'close' AND parent = ?", (buy_ref,))

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

    # -- key/value state -----------------------------------------------------
    def set_state(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = excluded.value", (key, json.dumps(value, default=str)))

    def get_state(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])
