"""Model registry: keep a new model only when its out-of-sample metric beats the kept one.

Layout under ``root``::

    <name>/current -> v-<stamp>      (symlink, swapped atomically with os.replace)
    <name>/v-<stamp>/                (weights written by the caller)
    <name>/v-<stamp>/metrics.json    (out-of-sample metrics, metric name, direction)
    <name>/v-<stamp>/config.json     (the configuration that produced the model)
    <name>/history.json              (every offer, kept or rejected)

A reader that follows ``current`` always sees a complete model directory.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_json_atomic(path: Path | str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temp file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=_json_default)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: Path | str) -> Any:
    """Read a JSON file, naming the file in the error when it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}: malformed JSON ({exc.msg})") from exc


class ModelRegistry:
    """A directory of named models, each keeping its best version by an out-of-sample metric."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _check_name(self, name: str) -> str:
        if not name or "/" in name or name.startswith(".") or os.sep in name:
            raise ValueError(f"model name must be a plain directory name, got {name!r}")
        return name

    def path(self, name: str) -> Optional[Path]:
        """Directory of the kept version of ``name``, or None when nothing is kept."""
        link = self.root / self._check_name(name) / "current"
        if not link.is_symlink() and not link.exists():
            return None
        target = link.resolve()
        return target if target.is_dir() else None

    def metrics(self, name: str) -> Optional[dict]:
        """metrics.json of the kept version, or None."""
        p = self.path(name)
        return read_json(p / "metrics.json") if p else None

    def config(self, name: str) -> Optional[dict]:
        """config.json of the kept version, or None."""
        p = self.path(name)
        return read_json(p / "config.json") if p else None

    def history(self, name: str) -> list:
        """Every offer made for ``name`` (kept or rejected), oldest first."""
        h = self.root / self._check_name(name) / "history.json"
        return read_json(h) if h.exists() else []

    @staticmethod
    def better(new: float, old: Optional[float], higher_is_better: bool = True) -> bool:
        """True when ``new`` strictly beats ``old`` (anything beats a missing/NaN old value)."""
        if old is None or (isinstance(old, float) and math.isnan(old)):
            return True
        return new > old if higher_is_better else new < old

    def offer(self, name: str, write: Callable[[Path], None], metrics: dict, config: dict,
              metric: str, higher_is_better: bool = True, force: bool = False) -> bool:
        """Write a candidate with ``write(dir)`` and keep it if ``metrics[metric]`` beats the kept one.

        Returns True when the candidate became the kept version. The candidate is
        written completely before the ``current`` link is swapped atomically.
        """
        self._check_name(name)
        if metric not in metrics:
            raise ValueError(f"offer({name!r}): metrics has no key {metric!r}; keys: {sorted(metrics)}")
        value = metrics[metric]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(value)):
            raise ValueError(f"offer({name!r}): metric {metric!r} must be a finite number, got {value!r}")
        value = float(value)
        kept = self.metrics(name)
        old = None
        if kept is not None:
            if kept.get("_metric") not in (None, metric):
                raise ValueError(f"offer({name!r}): kept model is ranked by {kept.get('_metric')!r}, "
                                 f"not {metric!r}")
            old = kept.get(metric)
            old = float(old) if old is not None else None
        keep = force or self.better(value, old, higher_is_better)
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "metric": metric, "value": value,
                 "kept_value": old, "kept": bool(keep)}
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        if keep:
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{time.monotonic_ns() % 10**9}"
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
            try:
                write(staging)
                full = dict(metrics)
                full["_metric"] = metric
                full["_higher_is_better"] = bool(higher_is_better)
                write_json_atomic(staging / "metrics.json", full)
                write_json_atomic(staging / "config.json", config)
                final = base / f"v-{stamp}"
                os.replace(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            link_tmp = base / f".current-{stamp}"
            os.symlink(final.name, link_tmp)
            previous = self.path(name)
            os.replace(link_tmp, base / "current")
            if previous is not None and previous != final.resolve():
                shutil.rmtree(previous, ignore_errors=True)
            entry["version"] = final.name
        history = self.history(name)
        history.append(entry)
        write_json_atomic(base / "history.json", history)
        return bool(keep)
