"""Model registry: keep a new model only when its *validation* metric beats the kept one.

The final test range (holdout) is never used to choose: a model is ranked by a
selection metric measured on validation data that ends before its holdout. The
holdout is scored once per model by the caller and stored in ``metrics.json``
for the report, but no registry decision reads it.

API::

    reg = ModelRegistry(".mltrade/models")
    kept = reg.offer("dqn", write, metrics, config, metric="val_return",
                     selection_range=("2014-01-02", "2014-12-31"),   # data the metric was measured on
                     holdout_range=("2015-01-09", "2016-12-30"),     # the model's final test range
                     degenerate=False, degenerate_reason="")

* ``metrics[metric]`` must be a finite number; ``selection_range`` and
  ``holdout_range`` are ``(first, last)`` dates (inclusive). An offer whose
  selection range reaches the holdout (``last selection date >= first holdout
  date``) is refused with a ``ValueError``: its metric saw the holdout.
* ``degenerate=True`` (e.g. a model whose validation outputs are constant) is
  never kept, not even with ``force``; the offer is recorded in the history with
  its reason and ``offer`` returns False.
* ``warning="..."``: a model kept although the caller found something to say
  (e.g. its validation figure is below its own always-long and no-trade
  baselines) carries the warning in ``_selection`` and in the history entry.
* The candidate replaces the kept version when its metric strictly beats the
  kept one (``higher_is_better``) measured on the same selection and holdout
  ranges. A kept version measured on other ranges, or one written before
  selection ranges were recorded (ranked by whatever metric, possibly a holdout
  figure), is not comparable: the candidate replaces it.
* :meth:`selection` returns the kept version's selection record (metric, value,
  ranges) or None for an entry written before it existed; :meth:`metrics`,
  :meth:`config` and :meth:`path` read old and new entries alike.

Layout under ``root``::

    <name>/current -> v-<stamp>      (symlink, swapped atomically with os.replace)
    <name>/v-<stamp>/                (weights written by the caller)
    <name>/v-<stamp>/metrics.json    (the caller's metrics + "_metric", "_higher_is_better", "_selection")
    <name>/v-<stamp>/config.json     (the configuration that produced the model)
    <name>/history.json              (every offer, kept, rejected or refused)

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
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np
import pandas as pd


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


def date_range(value: Any, what: str) -> Tuple[str, str]:
    """``(first, last)`` dates as ISO strings from a pair of date-likes; ValueError naming ``what``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{what}: expected a (first, last) pair of dates, got {value!r}")
    out = []
    for v in value:
        try:
            ts = pd.Timestamp(v)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what}: cannot read {v!r} as a date ({exc})") from exc
        if ts is pd.NaT:
            raise ValueError(f"{what}: cannot read {v!r} as a date")
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        out.append(ts)
    if out[1] < out[0]:
        raise ValueError(f"{what}: last date {value[1]!r} is before first date {value[0]!r}")
    fmt = [str(t.date()) if t == t.normalize() else t.isoformat() for t in out]
    return fmt[0], fmt[1]


class ModelRegistry:
    """A directory of named models, each keeping its best version by a validation metric (not the holdout)."""

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
        """Every offer made for ``name`` (kept, rejected or refused as degenerate), oldest first."""
        h = self.root / self._check_name(name) / "history.json"
        return read_json(h) if h.exists() else []

    @staticmethod
    def better(new: float, old: Optional[float], higher_is_better: bool = True) -> bool:
        """True when ``new`` strictly beats ``old`` (anything beats a missing/NaN old value)."""
        if old is None or (isinstance(old, float) and math.isnan(old)):
            return True
        return new > old if higher_is_better else new < old

    def selection(self, name: str) -> Optional[dict]:
        """The kept version's selection record (``metric``, ``value``, ``selection_range``,
        ``holdout_range``), or None when nothing is kept or the entry predates selection records."""
        m = self.metrics(name)
        sel = m.get("_selection") if m else None
        return dict(sel) if isinstance(sel, dict) else None

    def offer(self, name: str, write: Callable[[Path], None], metrics: dict, config: dict,
              metric: str, higher_is_better: bool = True, force: bool = False, *,
              selection_range: Optional[Sequence[Any]] = None, holdout_range: Optional[Sequence[Any]] = None,
              degenerate: bool = False, degenerate_reason: str = "", warning: str = "") -> bool:
        """Write a candidate with ``write(dir)``; keep it if its validation ``metrics[metric]`` beats the kept one.

        ``selection_range`` / ``holdout_range``: ``(first, last)`` dates of the data the metric was measured
        on and of the model's final test range; required, and the first must end before the second starts.
        ``degenerate=True`` is never kept. ``warning``: what the caller must say about a model it offers
        anyway (e.g. a validation figure below its own baselines), recorded in the history and in
        ``_selection["warning"]`` of a kept version. Returns True when the candidate became the kept version; it is
        written completely before the ``current`` link is swapped atomically.
        """
        self._check_name(name)
        value, sel, hold = self._checked_offer(name, metrics, metric, selection_range, holdout_range)
        kept = self.metrics(name)
        old, comparable, higher_is_better = self._kept_rank(name, kept, metric, sel, hold, higher_is_better)
        refused = f"degenerate: {degenerate_reason or 'constant validation outputs'}" if degenerate else ""
        keep = not refused and (force or self.better(value, old, higher_is_better))
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "metric": metric, "value": value,
                 "kept_value": old, "kept": bool(keep), "selection_range": list(sel),
                 "holdout_range": list(hold), "degenerate": bool(degenerate)}
        if warning:
            entry["warning"] = str(warning)
        if kept is not None and not comparable:
            entry["note"] = ("kept version was ranked on other ranges or before selection ranges were "
                             "recorded: not comparable, the candidate replaces it" if not refused else
                             "kept version not comparable")
        if refused:
            entry["refused"] = refused
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        if keep:
            selection = {"metric": metric, "value": value, "higher_is_better": bool(higher_is_better),
                         "selection_range": list(sel), "holdout_range": list(hold)}
            if warning:
                selection["warning"] = str(warning)
            entry["version"] = self._keep_version(name, write, metrics, config, selection)
        history = self.history(name)
        history.append(entry)
        write_json_atomic(base / "history.json", history)
        return bool(keep)

    @staticmethod
    def _checked_offer(name: str, metrics: dict, metric: str, selection_range: Optional[Sequence[Any]],
                       holdout_range: Optional[Sequence[Any]]) -> tuple:
        """``(value, selection range, holdout range)`` of an offer, checked: a finite metric measured on a
        range that ends before the holdout starts."""
        if metric not in metrics:
            raise ValueError(f"offer({name!r}): metrics has no key {metric!r}; keys: {sorted(metrics)}")
        value = metrics[metric]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(value)):
            raise ValueError(f"offer({name!r}): metric {metric!r} must be a finite number, got {value!r}")
        value = float(value)
        if selection_range is None or holdout_range is None:
            raise ValueError(f"offer({name!r}): selection_range and holdout_range are required: the registry "
                             "ranks models only by a metric measured before their holdout (final test range)")
        sel = date_range(selection_range, f"offer({name!r}): selection_range")
        hold = date_range(holdout_range, f"offer({name!r}): holdout_range")
        if pd.Timestamp(sel[1]) >= pd.Timestamp(hold[0]):
            raise ValueError(f"offer({name!r}): the selection metric {metric!r} was measured on {sel[0]} .. "
                             f"{sel[1]}, which reaches the holdout starting {hold[0]}; rank models on "
                             "validation data only (the holdout is scored and reported, never used to "
                             "choose)")
        return value, sel, hold

    @staticmethod
    def _kept_rank(name: str, kept: Optional[dict], metric: str, sel: Sequence[Any], hold: Sequence[Any],
                   higher_is_better: bool) -> tuple:
        """``(kept value or None, comparable, higher_is_better)``: the kept version's figure when it was
        ranked on the same selection and holdout ranges (then by the same metric and direction)."""
        kept_sel = kept.get("_selection") if kept else None
        old = None
        comparable = isinstance(kept_sel, dict) and kept_sel.get("selection_range") == list(sel) \
            and kept_sel.get("holdout_range") == list(hold)
        if comparable:
            if kept_sel.get("metric") != metric:
                raise ValueError(f"offer({name!r}): kept model is ranked by {kept_sel.get('metric')!r}, "
                                 f"not {metric!r}")
            old = kept_sel.get("value")
            old = float(old) if old is not None else None
            higher_is_better = bool(kept_sel.get("higher_is_better", higher_is_better))
        return old, comparable, higher_is_better

    def _keep_version(self, name: str, write: Callable[[Path], None], metrics: dict, config: dict,
                      selection: dict) -> str:
        """Write the candidate completely into a new version folder (``write``, ``metrics.json`` with its
        ``_selection`` record, ``config.json``), then swap the ``current`` link atomically and remove the
        previous version; returns the new version's name."""
        base = self.root / name
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
        try:
            write(staging)
            full = dict(metrics)
            full["_metric"] = selection["metric"]
            full["_higher_is_better"] = selection["higher_is_better"]
            full["_selection"] = selection
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
        return final.name
