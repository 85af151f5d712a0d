"""mltrade.optuna_storage: the one place the sweep, the NCP search and distributed DQN open Optuna storages."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from mltrade.optuna_storage import WorkerIdentity, open_storage, open_study, rdb_of, redact


def test_sqlite_storages_wait_for_the_lock_and_run_in_wal_with_normal_sync(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    with storage.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1      # NORMAL
    assert storage.engine.dialect.name == "sqlite"


def test_a_study_is_created_once_then_resumed_and_load_only_needs_it(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(KeyError):
        open_study(url, "x", load_only=True)
    first = open_study(url, "x")
    first.enqueue_trial({"a": 1})
    again = open_study(url, "x")
    assert again._study_id == first._study_id and len(again.trials) == 1
    assert rdb_of(again) is not None and rdb_of(again).engine.url.database.endswith("s.db")
    assert open_study(url, "x", load_only=True)._study_id == first._study_id


def test_an_unreachable_database_fails_once_with_the_password_hidden(monkeypatch):
    import mltrade.optuna_storage as mod

    monkeypatch.setattr(mod, "OPEN_ATTEMPTS", 2)
    monkeypatch.setattr(mod.time, "sleep", lambda s: None)
    with pytest.raises(ValueError) as err:
        open_study("postgresql+psycopg://user:secret@127.0.0.1:1/nodb", "x")
    assert "secret" not in str(err.value) and "user:***@127.0.0.1:1" in str(err.value)
    assert redact("sqlite:///a.db") == "sqlite:///a.db"


def test_worker_identity_is_unique_per_token_and_seeds_from_its_name():
    a, b = WorkerIdentity.here(), WorkerIdentity.here()
    assert a.name != b.name and ":" not in a.name and a.name.count("-") >= 2
    assert WorkerIdentity("h", 1, "abc").seed == WorkerIdentity("h", 1, "abc").seed
    assert WorkerIdentity("h", 1, "abc").seed != WorkerIdentity("h", 1, "abd").seed
    assert 0 <= a.seed < 2 ** 32
