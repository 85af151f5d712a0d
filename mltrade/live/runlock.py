"""One process per account: an exclusive lock on the journal, held for the whole run.

:class:`RunLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<journal>.lock`` and writes the
holder's pid, start time and run id into it. The OS releases the lock when the process dies (a
crash or SIGKILL included), so a stale lock file never blocks a restart; a second process while the
first runs is refused with :class:`JournalLocked`, one line naming the holder.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional


class JournalLocked(RuntimeError):
    """Another process holds the journal's lock (it trades this account now)."""


def new_run_id() -> str:
    """A short id for one run (journal rows carry it)."""
    return f"R{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RunLock:
    """The exclusive lock of the journal at ``journal_path`` (``:memory:``: no lock)."""

    def __init__(self, journal_path: str | Path, run_id: Optional[str] = None):
        self.journal_path = str(journal_path)
        self.path = Path(self.journal_path + ".lock")
        self.run_id = run_id or new_run_id()
        self._fd: Optional[int] = None

    def holder(self) -> dict:
        """What the lock file says about its last holder (pid, started, run); {} if unreadable."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`JournalLocked` naming the holder's pid and start time."""
        if self.journal_path == ":memory:" or self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            raise JournalLocked(f"journal {self.journal_path} is in use by another mltrade process (pid "
                                f"{h.get('pid', '?')}, started {h.get('started', '?')}, run "
                                f"{h.get('run', '?')}); one process per account: wait for it or stop it"
                                ) from None
        info = {"pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "run": self.run_id, "t": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
