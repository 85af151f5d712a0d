"""Workers that share one Optuna study: a slot and a sampler seed each, no parameter set scored twice.

Each worker's unique name is :class:`mltrade.optuna_storage.WorkerIdentity` (host, pid, random token).

Optuna's RDB storage has no notion of "this parameter set is taken". Beside
its tables the sweep keeps one of its own, ``mltrade_sweep_claims``
(``study_id``, ``key``, ``worker``; primary key ``(study_id, key)``, deleted
with its study), in the same database (SQLite file or PostgreSQL), and claims
rows with ``INSERT ... ON CONFLICT DO NOTHING``: the database decides who
got a row, atomically, across processes and machines.

* ``worker:<n>`` rows number the workers of a study in the order they start
  (slot 0, 1, 2, ...). A worker's sampler seed is ``seed + slot``: workers
  started together draw different trials, and a study run by one worker at a
  time is reproducible for a given seed (its runs take slots 0, 1, ...).
* ``params:<hash>`` rows claim a parameter set before it is scored; a set
  another worker (or an earlier run) claimed is skipped, never scored again.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import List, Sequence, Set

TABLE = "mltrade_sweep_claims"


def params_key(params: dict) -> str:
    """A stable key of one parameter set (the same values give the same key on every machine)."""
    text = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=repr)
    return "params:" + hashlib.sha256(text.encode()).hexdigest()[:40]


def worker_seed(seed: int, slot: int) -> int:
    """The sampler seed of the worker in ``slot`` (distinct per slot, ``seed`` itself for the first)."""
    return (int(seed) + int(slot)) % (2 ** 32)


class Claims:
    """The claims table of one study in its RDB storage (created on first use)."""

    def __init__(self, storage, study_id: int) -> None:
        import sqlalchemy as sa

        self.engine = storage.engine
        self.study_id = int(study_id)
        self._sa = sa
        self.table = self._table()

    def _table(self):
        sa = self._sa
        meta = sa.MetaData()
        sa.Table("studies", meta, autoload_with=self.engine)
        table = sa.Table(TABLE, meta,
                         sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.study_id", ondelete="CASCADE"),
                                   primary_key=True),
                         sa.Column("key", sa.String(64), primary_key=True),
                         sa.Column("worker", sa.String(255), nullable=False))
        for attempt in range(10):
            try:
                table.create(self.engine, checkfirst=True)
                if self.engine.dialect.name == "sqlite":
                    # SQLite enforces foreign keys only on connections that ask for it (optuna's own do not):
                    # a trigger deletes a study's claims with the study, whoever deletes it
                    with self.engine.begin() as conn:
                        conn.execute(sa.text(
                            f"CREATE TRIGGER IF NOT EXISTS {TABLE}_gc AFTER DELETE ON studies "
                            f"BEGIN DELETE FROM {TABLE} WHERE study_id = OLD.study_id; END"))
                return table
            except sa.exc.SQLAlchemyError:   # two workers creating it at once: the other one may have won
                if attempt == 9:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return table

    def _insert_ignore(self, conn, rows: List[dict]) -> None:
        name = self.engine.dialect.name
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
            conn.execute(insert(self.table).on_conflict_do_nothing(), rows)
        elif name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
            conn.execute(insert(self.table).on_conflict_do_nothing(), rows)
        else:   # any other database: one row at a time, a duplicate key fails only its own savepoint
            for row in rows:
                try:
                    with conn.begin_nested():
                        conn.execute(self.table.insert(), [row])
                except self._sa.exc.IntegrityError:
                    pass

    def claim(self, keys: Sequence[str], worker: str) -> Set[str]:
        """Claim ``keys`` for ``worker``; returns the ones it now holds (claimed by nobody before)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set()
        t = self.table
        with self.engine.begin() as conn:
            self._insert_ignore(conn, [{"study_id": self.study_id, "key": k, "worker": worker} for k in keys])
        held: Set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                q = self._sa.select(t.c.key).where(t.c.study_id == self.study_id, t.c.key.in_(part),
                                                   t.c.worker == worker)
                held.update(r[0] for r in conn.execute(q))
        return held

    def register(self, worker: str) -> int:
        """The worker's slot in this study: 0 for the first worker ever, then 1, 2, ... (atomic)."""
        t = self.table
        with self.engine.connect() as conn:
            taken = conn.execute(self._sa.select(self._sa.func.count()).select_from(t).where(
                t.c.study_id == self.study_id, t.c.key.like("worker:%"))).scalar() or 0
        slot = int(taken)
        while True:
            if self.claim([f"worker:{slot}"], worker):
                return slot
            slot += 1

    def workers(self) -> List[str]:
        """Every worker that ever ran on this study, by slot."""
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(self._sa.select(t.c.key, t.c.worker).where(
                t.c.study_id == self.study_id, t.c.key.like("worker:%"))).all()
        return [w for _, w in sorted(rows, key=lambda r: int(r[0].split(":", 1)[1]))]
