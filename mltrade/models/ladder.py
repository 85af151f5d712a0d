"""The learner ladder: simple learners beside an ML model, on the same inputs, folds and objective.

Every ML run (NCP, DQN) shows, on the same sessions, how far simpler things get:

* ``always_long`` / ``always_short`` — constant positions;
* ``no_trade`` — never trades (every session flat: the caller's flat return, 0 for the NCP and the DQN,
  so log-product 0 and Sharpe 0). The floor: it is a candidate
  for "the best simple learner", chosen only when every simple learner loses on validation (ties go to the
  learner), so a model that loses money never "beats the best simple learner" — to beat it the model has
  to make money; the verdict then says that no simple learner makes money on validation;
* ``random`` — a random direction per session, figures averaged over several seeds (a luck reference,
  never chosen as "the best simple learner");
* ``rule`` — an optional caller-supplied rule baseline (e.g. the momentum rule), given as positions;
* ``logistic`` — L2 logistic regression on standardised inputs, ``C`` chosen on validation only;
* ``hgb`` — scikit-learn's ``HistGradientBoostingClassifier``, a small grid chosen on validation only;
* the model — its own per-session returns, added by the caller (:meth:`Ladder.add_model`).

Inputs: a 2-D feature matrix ``X`` (one row per session, already causal), and a caller-provided
``returns_fn(positions, rows) -> per-session returns`` that turns positions (+1 long, −1 short, 0 flat)
on the sessions ``rows`` into their simple returns (0.01 = +1 %); it is called once per position on
every row (sessions are independent: one session's return depends on its own position only). The
learners' target is the caller's ``y`` (1 = go long; the model's own label), by default "long beats short"
on the session (from ``returns_fn``); ``weighted=True`` weights each session by ``|r_long − r_short|``.

Splits (:class:`LadderSplit`): one or more (fit, validation) folds, and a holdout. Each fold's
learners are fitted on its fit rows and predict its validation rows; validation figures are over the
folds' validation rows together. Hyper-parameters and the best simple learner are chosen by the
validation objective (log-product by default). For the holdout each learner, with its chosen
hyper-parameters, is refitted on the last fold's fit + validation rows (the history before the
holdout) and scored once. Nothing is chosen by the holdout.

The verdict: the SPA p-value (:func:`mltrade.significance.spa_pvalue`) of the model against the best
simple learner (chosen on validation) on validation and on holdout, and one line for the CLI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

ReturnsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: rungs that are candidates for "the best simple learner" (random is a luck reference only; no_trade is
#: last: the floor, chosen only when every learner before it is below it on validation)
LEARNERS = ("always_long", "always_short", "rule", "logistic", "hgb", "no_trade")
LABELS = {"always_long": "always-long", "always_short": "always-short", "random": "random",
          "rule": "rule", "logistic": "logistic", "hgb": "gradient boosting", "no_trade": "no-trade"}
LOGISTIC_C = (0.001, 0.01, 0.1, 1.0, 10.0)
HGB_GRID: Tuple[Dict[str, float], ...] = (
    {"max_depth": 2, "learning_rate": 0.05, "max_iter": 100},
    {"max_depth": 3, "learning_rate": 0.05, "max_iter": 200},
    {"max_depth": 3, "learning_rate": 0.1, "max_iter": 100},
    {"max_depth": None, "learning_rate": 0.05, "max_iter": 100},
)
OBJECTIVES = ("log_product", "sharpe")


@dataclass(frozen=True)
class LadderSplit:
    """Row indices: ``folds`` = [(fit rows, validation rows), ...] in time order, and ``holdout``;
    ``refit``: the rows the learners are refitted on for the holdout (default: the last fold's fit and
    validation rows)."""

    folds: Tuple[Tuple[np.ndarray, np.ndarray], ...]
    holdout: np.ndarray
    refit: Optional[np.ndarray] = None

    @classmethod
    def simple(cls, fit: Sequence[int], validation: Sequence[int], holdout: Sequence[int]) -> "LadderSplit":
        """One fit / validation / holdout split."""
        return cls(((np.asarray(fit, int), np.asarray(validation, int)),), np.asarray(holdout, int))

    @classmethod
    def expanding(cls, n_before_holdout: int, n_folds: int, val_size: int, holdout: Sequence[int],
                  min_fit: int = 50, embargo: int = 0) -> "LadderSplit":
        """Expanding walk-forward over rows ``0 .. n_before_holdout-1``: ``n_folds`` validation blocks of
        ``val_size`` rows at the end, each fitted on every row before it (less ``embargo``)."""
        folds = []
        for k in range(n_folds):
            v0 = n_before_holdout - (n_folds - k) * val_size
            fit_end = v0 - embargo
            if fit_end < min_fit:
                raise ValueError(f"ladder: fold {k + 1} would fit on {max(fit_end, 0)} sessions "
                                 f"(< {min_fit}); use fewer folds or a smaller validation block")
            folds.append((np.arange(fit_end), np.arange(v0, v0 + val_size)))
        return cls(tuple(folds), np.asarray(holdout, int))

    def __post_init__(self) -> None:
        if not self.folds:
            raise ValueError("ladder: expected at least one (fit, validation) fold")
        for k, (f, v) in enumerate(self.folds):
            if len(f) == 0 or len(v) == 0:
                raise ValueError(f"ladder: fold {k + 1} has an empty fit or validation range")
            if np.max(f) >= np.min(v):
                raise ValueError(f"ladder: fold {k + 1}: fit rows must all come before validation rows")
        last = max(int(np.max(np.concatenate([f, v]))) for f, v in self.folds)
        if len(self.holdout) and int(np.min(self.holdout)) <= last:
            raise ValueError("ladder: the holdout must come after every fit and validation row")
        if self.refit is not None and len(self.holdout) and len(self.refit) and \
                int(np.max(self.refit)) >= int(np.min(self.holdout)):
            raise ValueError("ladder: the holdout refit rows must all come before the holdout")

    @property
    def validation(self) -> np.ndarray:
        """All validation rows, in fold order."""
        return np.concatenate([v for _, v in self.folds])

    @property
    def before_holdout(self) -> np.ndarray:
        """Rows the holdout refit uses: ``refit``, else the last fold's fit and validation rows."""
        if self.refit is not None:
            return np.asarray(self.refit, int)
        f, v = self.folds[-1]
        return np.union1d(f, v)


def metrics(returns: Sequence[float] | np.ndarray, positions: Optional[np.ndarray] = None,
            periods: int = 252) -> Dict[str, float]:
    """Figures of per-session returns: n sessions, log-product Σlog(1+r), total return, Sharpe, and
    (with positions) the long share and the number of trades."""
    from mltrade.significance import sharpe
    r = np.asarray(returns, float)
    out = {"n_sessions": int(len(r)),
           "log_product": float(np.log(np.maximum(1.0 + r, 1e-9)).sum()),
           "total_return": float(np.prod(1.0 + r) - 1.0) if len(r) else 0.0,
           "sharpe": float(sharpe(r, periods)) if len(r) > 1 else 0.0}
    if positions is not None:
        p = np.asarray(positions)
        out["long_share"] = float((p > 0).mean()) if len(p) else float("nan")
        out["trades"] = int((p != 0).sum())
    return out


def _fmt_p(p: Optional[float]) -> str:
    return "n/a" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")


@dataclass
class Rung:
    """One learner's positions, returns and figures on validation and on the holdout."""

    name: str
    val_returns: np.ndarray
    hold_returns: np.ndarray
    val_positions: Optional[np.ndarray] = None
    hold_positions: Optional[np.ndarray] = None
    params: Dict[str, object] = field(default_factory=dict)
    val: Dict[str, float] = field(default_factory=dict)
    hold: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "params": dict(self.params), "validation": dict(self.val),
                "holdout": dict(self.hold)}


class Ladder:
    """Fit every simple rung on ``X`` under ``split``; add the model with :meth:`add_model`.

    ``objective`` ("log_product" or "sharpe") chooses hyper-parameters and the best simple learner
    on validation. ``rule_positions`` (one per row of ``X``, optional) is the rule baseline.
    ``random_seeds`` seeds the random rung (its figures are the mean over the seeds). ``y`` / ``target``:
    the learners' label per row and its words (default: long beats short).
    """

    def __init__(self, X: np.ndarray, split: LadderSplit, returns_fn: ReturnsFn,
                 rule_positions: Optional[Sequence[int]] = None, rule_name: str = "rule",
                 objective: str = "log_product", random_seeds: Sequence[int] = tuple(range(20)),
                 weighted: bool = False, y: Optional[Sequence[int]] = None,
                 target: str = "", logistic_c: Sequence[float] = LOGISTIC_C,
                 hgb_grid: Sequence[Mapping[str, object]] = HGB_GRID, seed: int = 0,
                 spa_reps: int = 2000) -> None:
        X = np.asarray(X, float)
        if X.ndim != 2:
            raise ValueError(f"ladder: X must be a 2-D matrix (sessions x features), got shape {X.shape}")
        if objective not in OBJECTIVES:
            raise ValueError(f"ladder: objective expected one of {OBJECTIVES}, got {objective!r}")
        self.X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
        self.split, self.returns_fn, self.objective = split, returns_fn, objective
        self.seed, self.spa_reps, self.weighted = int(seed), int(spa_reps), bool(weighted)
        self.rule_name = rule_name
        self._y_given, self._target = y is not None, str(target)
        self.rungs: Dict[str, Rung] = {}
        self.model_name: Optional[str] = None
        n = len(X)
        rows = np.arange(n)
        self._r_long = np.asarray(returns_fn(np.ones(n, int), rows), float)
        self._r_short = np.asarray(returns_fn(-np.ones(n, int), rows), float)
        self._r_flat = np.asarray(returns_fn(np.zeros(n, int), rows), float)
        if not (self._r_long.shape == self._r_short.shape == self._r_flat.shape == (n,)):
            raise ValueError(f"ladder: returns_fn must return one return per row ({n}), got "
                             f"{self._r_long.shape}")
        self.y = (self._r_long > self._r_short).astype(int) if y is None else (np.asarray(y) > 0).astype(int)
        if self.y.shape != (n,):
            raise ValueError(f"ladder: y must have one label per row ({n}), got {self.y.shape}")
        self.w = np.abs(self._r_long - self._r_short) + 1e-12
        val, hold = split.validation, split.holdout
        for name, pos in (("always_long", 1), ("always_short", -1)):
            self._add(name, np.full(len(val), pos), np.full(len(hold), pos))
        self._random(list(random_seeds))
        if rule_positions is not None:
            rp = np.asarray(rule_positions, int)
            if rp.shape != (n,):
                raise ValueError(f"ladder: rule_positions must have one position per row ({n}), got {rp.shape}")
            self._add("rule", rp[val], rp[hold], {"name": rule_name})
        self._learner("logistic", [{"C": c} for c in logistic_c], self._logistic)
        self._learner("hgb", [dict(g) for g in hgb_grid], self._hgb)
        self._add("no_trade", np.zeros(len(val), int), np.zeros(len(hold), int))

    # ---- figures --------------------------------------------------------------------------
    def _returns(self, positions: np.ndarray, rows: np.ndarray) -> np.ndarray:
        p = np.asarray(positions)
        return np.where(p > 0, self._r_long[rows], np.where(p < 0, self._r_short[rows], self._r_flat[rows]))

    def _score(self, r: np.ndarray) -> float:
        m = metrics(r)
        return m[self.objective]

    def _add(self, name: str, val_pos: np.ndarray, hold_pos: np.ndarray,
             params: Optional[dict] = None) -> Rung:
        val, hold = self.split.validation, self.split.holdout
        vr, hr = self._returns(val_pos.astype(int), val), self._returns(hold_pos.astype(int), hold)
        rung = Rung(name, vr, hr, val_pos, hold_pos, dict(params or {}), metrics(vr, val_pos), metrics(hr, hold_pos))
        self.rungs[name] = rung
        return rung

    def _random(self, seeds: List[int]) -> None:
        if not seeds:
            return
        val, hold = self.split.validation, self.split.holdout
        vals, holds, vrs, hrs = [], [], [], []
        for s in seeds:
            rng = np.random.default_rng(s)
            vp, hp = rng.choice([-1, 1], len(val)), rng.choice([-1, 1], len(hold))
            vr, hr = self._returns(vp, val), self._returns(hp, hold)
            vrs.append(vr)
            hrs.append(hr)
            vals.append(metrics(vr, vp))
            holds.append(metrics(hr, hp))
        mean = lambda ms: {k: float(np.mean([m[k] for m in ms])) if k != "n_sessions" else ms[0][k]
                           for k in ms[0]}
        # its per-session series (for SPA) is the seeds' mean return on each session
        rung = Rung("random", np.mean(vrs, axis=0), np.mean(hrs, axis=0), None, None,
                    {"seeds": len(seeds), "figures": "mean over seeds"}, mean(vals), mean(holds))
        self.rungs["random"] = rung

    # ---- learners -------------------------------------------------------------------------
    def _logistic(self, params: dict, fit: np.ndarray):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        m = make_pipeline(StandardScaler(), LogisticRegression(C=float(params["C"]), max_iter=2000))
        kw = {"logisticregression__sample_weight": self.w[fit]} if self.weighted else {}
        return m.fit(self.X[fit], self.y[fit], **kw)

    def _hgb(self, params: dict, fit: np.ndarray):
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits
        # 32 bins: plenty for a few hundred sessions, and the weighted binning of 255 is slow
        m = HistGradientBoostingClassifier(random_state=self.seed, **{"max_bins": 32, **params})
        # one OpenMP thread: on a few hundred sessions the thread pool costs more than it saves
        # (and spins against TensorFlow's threads on a shared machine)
        with threadpool_limits(1, "openmp"):
            return m.fit(self.X[fit], self.y[fit], sample_weight=self.w[fit] if self.weighted else None)

    def _predict(self, model, rows: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1, "openmp"):
            p = model.predict_proba(self.X[rows])[:, list(model.classes_).index(1)] \
                if 1 in list(model.classes_) else np.zeros(len(rows))
        return np.where(p >= 0.5, 1, -1)

    def _learner(self, name: str, grid: List[dict], make: Callable) -> None:
        best: Optional[Tuple[float, dict, np.ndarray]] = None
        for params in grid:
            pos = []
            for fit, v in self.split.folds:
                if len(np.unique(self.y[fit])) < 2:
                    pos.append(np.full(len(v), 1 if self.y[fit][0] == 1 else -1))
                else:
                    pos.append(self._predict(make(params, fit), v))
            vp = np.concatenate(pos)
            sc = self._score(self._returns(vp, self.split.validation))
            if best is None or sc > best[0] + 1e-12:
                best = (sc, params, vp)
        assert best is not None
        _, params, vp = best
        before, hold = self.split.before_holdout, self.split.holdout
        if len(hold) == 0:
            hp = np.zeros(0, int)
        elif len(np.unique(self.y[before])) < 2:
            hp = np.full(len(hold), 1 if self.y[before][0] == 1 else -1)
        else:
            hp = self._predict(make(params, before), hold)
        self._add(name, vp, hp, params)

    # ---- the model ------------------------------------------------------------------------
    def add_model(self, name: str, val_returns: Sequence[float], hold_returns: Sequence[float],
                  val_positions: Optional[Sequence[int]] = None,
                  hold_positions: Optional[Sequence[int]] = None) -> Rung:
        """Add the ML model's own per-session returns on the validation rows and the holdout rows
        (same sessions, same order as ``split.validation`` / ``split.holdout``)."""
        vr, hr = np.asarray(val_returns, float), np.asarray(hold_returns, float)
        nv, nh = len(self.split.validation), len(self.split.holdout)
        if vr.shape != (nv,) or hr.shape != (nh,):
            raise ValueError(f"ladder: model {name!r} needs {nv} validation and {nh} holdout returns, got "
                             f"{vr.shape[0] if vr.ndim else 0} and {hr.shape[0] if hr.ndim else 0}")
        vp = None if val_positions is None else np.asarray(val_positions)
        hp = None if hold_positions is None else np.asarray(hold_positions)
        rung = Rung(name, vr, hr, vp, hp, {}, metrics(vr, vp), metrics(hr, hp))
        self.rungs[name] = rung
        self.model_name = name
        return rung

    # ---- verdict --------------------------------------------------------------------------
    def best_simple(self) -> str:
        """Name of the simple learner with the best validation objective (ties: the ladder's order)."""
        cands = [n for n in LEARNERS if n in self.rungs]
        return max(cands, key=lambda n: (self.rungs[n].val[self.objective], -cands.index(n)))

    def verdict(self) -> dict:
        """SPA p-values of the model against the best simple learner (chosen on validation), on
        validation and holdout, the model's margin and one line of words."""
        from mltrade.significance import spa_pvalue
        best = self.best_simple()
        b = self.rungs[best]
        out: dict = {"best_simple": best, "objective": self.objective,
                     "best_simple_validation": b.val[self.objective],
                     "best_simple_holdout": b.hold[self.objective]}
        if self.model_name is None:
            out.update({"model": None, "beats_on_validation": None, "spa_pvalue_validation": None,
                        "spa_pvalue_holdout": None,
                        "words": f"best simple learner on validation: {LABELS.get(best, best)} "
                                 f"({self.objective} {b.val[self.objective]:+.3f}); no model added"})
            return out
        m = self.rungs[self.model_name]
        pv = spa_pvalue(m.val_returns, b.val_returns, reps=self.spa_reps, seed=self.seed)
        ph = spa_pvalue(m.hold_returns, b.hold_returns, reps=self.spa_reps, seed=self.seed) \
            if len(m.hold_returns) else None
        beats = m.val[self.objective] > b.val[self.objective]
        out.update({"model": self.model_name, "model_validation": m.val[self.objective],
                    "model_holdout": m.hold[self.objective], "beats_on_validation": bool(beats),
                    "spa_pvalue_validation": pv, "spa_pvalue_holdout": ph})
        lab = LABELS.get(best, best) + (": no simple learner makes money on validation"
                                        if best == "no_trade" else "")
        out["words"] = (f"{self.model_name} beats the best simple learner ({lab}) on validation: "
                        f"{'yes' if beats else 'no'} ({self.objective} {m.val[self.objective]:+.3f} vs "
                        f"{b.val[self.objective]:+.3f}, SPA p={_fmt_p(pv)}); holdout "
                        f"{m.hold[self.objective]:+.3f} vs {b.hold[self.objective]:+.3f} "
                        f"(SPA p={_fmt_p(ph)})")
        return out

    def to_dict(self) -> dict:
        """JSON-ready ladder: every rung's validation and holdout figures, the split and the verdict."""
        s = self.split
        return {"objective": self.objective,
                "validation_sessions": int(len(s.validation)), "holdout_sessions": int(len(s.holdout)),
                "folds": [{"fit": [int(f[0]), int(f[-1])], "validation": [int(v[0]), int(v[-1])]}
                          for f, v in s.folds],
                "target": (self._target or ("the caller's label" if self._y_given else "long beats short on the session")) + (", weighted by |r_long - r_short|"
                                                               if self.weighted else ""),
                "selection": "hyper-parameters and the best simple learner by the validation "
                             f"{self.objective}; the holdout is scored once",
                "rungs": {n: r.to_dict() for n, r in self.rungs.items()},
                "verdict": self.verdict()}

    def table(self) -> str:
        """Text table for the CLI: one row per rung, validation and holdout side by side."""
        return format_ladder(self.to_dict())


def format_ladder(d: Mapping) -> str:
    """Text table of a :meth:`Ladder.to_dict` (also read back from summary.json / an artifact)."""
    head = (f"{'rung':18s} | {'val logprod':>11s} {'val Sharpe':>10s} {'n':>4s} {'long%':>6s} | "
            f"{'hold logprod':>12s} {'hold Sharpe':>11s} {'n':>4s} {'long%':>6s}")
    lines = [f"learner ladder ({d['validation_sessions']} validation sessions, "
             f"{d['holdout_sessions']} holdout sessions; chosen on validation {d['objective']})",
             head, "-" * len(head)]
    best = d.get("verdict", {}).get("best_simple")

    def pct(m: Mapping) -> str:
        v = m.get("long_share")
        return f"{100 * v:5.0f}%" if v is not None and not (isinstance(v, float) and math.isnan(v)) else "     -"

    for name, r in d["rungs"].items():
        v, h = r["validation"], r["holdout"]
        label = name + (" *" if name == best else "")
        lines.append(f"{label:18s} | {v['log_product']:+11.3f} {v['sharpe']:+10.2f} {v['n_sessions']:4d} "
                     f"{pct(v)} | {h['log_product']:+12.3f} {h['sharpe']:+11.2f} {h['n_sessions']:4d} {pct(h)}")
    lines.append("* best simple learner on validation")
    if d.get("verdict", {}).get("words"):
        lines.append(d["verdict"]["words"])
    return "\n".join(lines)
