"""Opening Optuna RDB storages, for every search that shares one: the strategy sweep, the NCP search, distributed DQN.

One place for what each of them needs before its first trial:

* :func:`normalise_url`: ``postgresql://`` -> ``postgresql+psycopg://`` when psycopg2 (SQLAlchemy's
  default PostgreSQL driver) is missing;
* :func:`redact`: the URL without its password, for messages and reports;
* :func:`open_storage`: an ``RDBStorage`` that waits for a busy SQLite file (60 s lock timeout, WAL
  journal, ``synchronous=NORMAL``: several times faster commits, still crash-safe) or pings a
  PostgreSQL connection before use, retried while processes starting together race to create
  Optuna's schema;
* :func:`open_study`: create (or load, resuming) a named study in it, under the same retries;
* :class:`Heartbeat`: a running trial's Optuna heartbeat, recorded from a thread while it works;
* :class:`WorkerIdentity`: who runs trials (host, process id, random token), unique across machines
  and restarts, with a sampler seed derived from it.

Optuna and SQLAlchemy are imported on first use (this module sits on the ground floor).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

log = logging.getLogger(__name__)

__all__ = ["normalise_url", "redact", "engine_kwargs", "open_storage", "open_study", "rdb_of", "WorkerIdentity",
           "retrying", "Heartbeat", "SQLITE_PRAGMAS", "OPEN_ATTEMPTS"]

#: pragmas run on every new SQLite connection
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL")
#: attempts to open a storage (or a study in it) before giving up
OPEN_ATTEMPTS = 10

T = TypeVar("T")


def normalise_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg://`` when psycopg2 (SQLAlchemy's default driver) is missing."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """The storage URL without its password (``scheme://user:***@host/db``)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine settings: several processes may write one SQLite file (wait for its lock instead of
    failing); a PostgreSQL connection is pinged before use (a server restart does not fail a long run)."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def _sqlite_pragmas(storage: Any) -> None:
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()
    storage.engine.dispose()   # connections opened while creating the schema did not run them


def retrying(open_fn: Callable[[], T], url: str, what: str = "") -> T:
    """``open_fn()``, retried while processes starting together on an empty database race to create Optuna's
    schema; ``ValueError`` naming ``what`` and the redacted ``url`` after :data:`OPEN_ATTEMPTS` tries."""
    import sqlalchemy.exc

    for attempt in range(OPEN_ATTEMPTS):
        try:
            return open_fn()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == OPEN_ATTEMPTS - 1:
                raise ValueError(f"storage: cannot open {what + ' at ' if what else ''}{redact(url)}: {exc}") from exc
            log.info("storage busy (%s), retrying", type(exc).__name__)
            time.sleep(0.5 + 0.5 * attempt)
    raise AssertionError("unreachable")


def _storage(url: str, **rdb_kwargs: Any) -> Any:
    import optuna

    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **rdb_kwargs)
    if url.startswith("sqlite"):
        _sqlite_pragmas(storage)
    return storage


def open_storage(url: str, **rdb_kwargs: Any) -> Any:
    """An ``optuna.storages.RDBStorage`` at ``url`` (normalised; see the module text), retried.

    ``rdb_kwargs`` go to ``RDBStorage`` (e.g. ``heartbeat_interval``, ``grace_period``,
    ``failed_trial_callback``).
    """
    url = normalise_url(url)
    return retrying(lambda: _storage(url, **rdb_kwargs), url)


def open_study(url: str, name: str, load_only: bool = False, sampler: Any = None, pruner: Any = None,
               direction: str = "maximize", **rdb_kwargs: Any) -> Any:
    """The study ``name`` at ``url``: created if missing (``load_only``: must exist), else loaded to resume;
    opening the storage and creating the study are retried together (see :func:`retrying`)."""
    import optuna

    url = normalise_url(url)

    def go() -> Any:
        storage = _storage(url, **rdb_kwargs)
        if load_only:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        return optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                                   pruner=pruner, load_if_exists=True)
    return retrying(go, url, f"study {name!r}")


def rdb_of(study: Any) -> Any:
    """The study's ``RDBStorage`` (under Optuna's cache wrapper), or None for another storage."""
    from optuna.storages import RDBStorage

    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


@dataclass(frozen=True)
class WorkerIdentity:
    """Who runs trials: host, process id and a random token (unique across machines and restarts)."""

    host: str
    pid: int
    token: str

    @property
    def name(self) -> str:
        """``host-pid-token``: the worker's name in trial attributes and reports (no ``:``)."""
        return f"{self.host}-{self.pid}-{self.token}"

    @property
    def seed(self) -> int:
        """A sampler seed of its own, derived from :attr:`name` (32 bits)."""
        return int(hashlib.sha256(self.name.encode()).hexdigest()[:8], 16)

    @classmethod
    def here(cls, token: Optional[str] = None) -> "WorkerIdentity":
        """This process's identity (``token``: a random 6-hex-digit one unless given)."""
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname() or "host")[:60]
        return cls(host, os.getpid(), token or secrets.token_hex(3))


class Heartbeat:
    """Records a trial's Optuna heartbeat every ``interval`` seconds in a thread (a context manager): a worker
    that dies stops beating, and after the storage's grace period any live process may take its trial over."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a missed beat is retried; a dead database fails the job itself
                pass

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
