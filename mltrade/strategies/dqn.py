"""``DQNEnsembleStrategy``: the DQN day ensemble as a backtrader strategy (registered as ``dqn``).

At the last bar of session ``t-1`` the strategy looks up the ensemble's decision
for session ``t`` (observations use only sessions up to ``t-1``), runs it
through the overlay (``submit_decision``) and buys the certificate at the next
open; it is sold at the session close (``exectype=Close``) or at the stop on the
certificate bid, as the original did. With ``session="night"`` the night
ensemble's certificate is bought at that close (``exectype=Close``) and sold at
the next session's open (market order), or earlier by a gap through the stop
or the barrier. In backtests every agent's Q-values for
the whole period are computed in one batch per agent at start; with
``live=True`` the decision is computed per session from the bars seen so far.
Models trained with ``observations = "original_deviation"`` (53 values) carry their
stage-1 deviation model (``deviation_model.json``); both modes build the values with it.

By default (``oos_only=True``) the strategy trades only sessions after the
model's validation range, i.e. its out-of-sample period; the report states it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pandas as pd

from mltrade.strategies import dqn_report
from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision


def _daily_of(df: pd.DataFrame) -> pd.DataFrame:
    from mltrade.models.dqn.observations import daily_from_intraday

    if isinstance(df.index, pd.DatetimeIndex) and df.index.tz is None and \
            (df.index == df.index.normalize()).all():
        return df[["open", "high", "low", "close"]].astype(float)
    return daily_from_intraday(df)


class DQNEnsembleStrategy(KnockoutStrategy):
    """Trades the vote of a DQN ensemble loaded from the model registry, through its gates."""

    decision_data = "daily"     # observations from sessions up to t-1, daily bars only
    params = (
        ("registry", ".mltrade/models"),  # model registry folder (shared with the NCP models)
        ("model_name", "dqn"),      # model name in the registry
        ("model_dir", None),        # explicit model folder (wins over registry/model_name)
        ("session", "day"),         # ensemble to trade: "day" (open -> close) or "night" (close -> open)
        ("live", False),            # per-session inference from the bars seen so far
        ("oos_only", True),         # trade only sessions after the model's validation range
        ("use_gate", True),         # apply the confidence and drawdown gates
        ("history", 60),            # sessions of history used per live decision
        ("history_from_training", True),  # backtests: observations of the first sessions from the model's
                                          # training data before the bars (when they are the same market)
    )

    def __init__(self) -> None:
        super().__init__()
        from mltrade.models.dqn.bundle import load_bundle
        from mltrade.models.registry import ModelRegistry

        if self.p.session == "intraday":
            raise ValueError("session: 'intraday' DQN models (`[dqn] mode = \"intraday\"`) are trained and "
                             "evaluated by the walk-forward pipeline (SessionModel.decide(intraday=...)); "
                             "this strategy trades 'day' or 'night' ensembles")
        if self.p.session not in ("day", "night"):
            raise ValueError(f"session: expected 'day' or 'night', got {self.p.session!r}")
        path = self.p.model_dir or ModelRegistry(self.p.registry).path(self.p.model_name)
        if path is None:
            raise ValueError(f"model: no '{self.p.model_name}' model in registry {self.p.registry!r}; "
                             "run `mltrade train dqn` first or set model_dir")
        self.model_dir = Path(path)
        bundle = load_bundle(self.model_dir)
        if self.p.session not in bundle:
            raise ValueError(f"model: {self.model_dir} has no {self.p.session} ensemble "
                             f"(train it with `mltrade train dqn --sessions {self.p.session}`)")
        self.model = bundle[self.p.session]
        val_end = self.model.settings.get("val_end")
        self.oos_start = pd.Timestamp(val_end) + pd.Timedelta(days=1) if val_end else None
        self.table: Optional[pd.DataFrame] = None
        self.daily: Optional[pd.DataFrame] = None
        self.plan: Dict = {}
        self._live_bars: Dict = {}
        self.history_note = ""
        if not self.p.live:
            from mltrade.models.dqn.bundle import training_history

            self.daily = _daily_of(self.data.p.dataframe)
            history = None
            if self.p.history_from_training and len(self.daily):
                # observations of the first sessions need bars before the backtest (as in training)
                history, self.history_note = training_history(self.model_dir, self.daily.index[0], self.daily)
            self.table = self.model.decide(self.daily, history=history)          # one batch per agent
            dates = list(self.daily.index)
            for t in range(1, len(dates)):
                self.plan[dates[t - 1].date()] = dates[t]

    @property
    def model_flags(self) -> dict:
        """The traded model's degeneracy flags from its ``settings.json``: ``degenerate``,
        ``holdout_constant`` and their reasons (False / "" for bundles written before the flags existed)."""
        s = self.model.settings
        return {"degenerate": bool(s.get("degenerate", False)),
                "degenerate_reason": s.get("degenerate_reason", ""),
                "holdout_constant": bool(s.get("holdout_constant", False)),
                "holdout_constant_reason": s.get("holdout_constant_reason", "")}

    @property
    def baseline_distances(self) -> Optional[Dict]:
        """``{decision date: barrier distance}``: the ensemble's own barrier of each traded session (the
        vote's distance, else the agents' median, gaps: the range's median), for the backtest's always-long
        and random baselines, as training's baselines trade it (None in live mode)."""
        from mltrade.models.dqn.simulation import session_barriers

        t = self._oos_table()
        if self.p.live or not len(t) or not self.plan:
            return None
        b = pd.Series(session_barriers(t), index=t.index)
        return {today: float(b[nxt]) for today, nxt in self.plan.items() if nxt in b.index}

    def training_ladder(self) -> Optional[dict]:
        """The learner ladder of the traded session ensemble from the model's ``metrics.json`` (None for
        models trained before the ladder existed)."""
        from mltrade.models.registry import read_json

        path = self.model_dir / "metrics.json"
        lad = (read_json(path).get("ladder") or {}) if path.exists() else {}
        return lad.get(self.p.session)

    def summary_extras(self) -> dict:
        """What ``summary.json`` carries about the model: the training-time ladder and verdict, the
        reconciliation of the training figure with this backtest, the model's warnings."""
        lad = self.training_ladder()
        s = self.model.settings
        return {"dqn": {"ladder": lad, "reconciliation": self.reconciliation(),
                        "below_baselines_reason": s.get("below_baselines_reason", ""),
                        "holdout_constant_reason": s.get("holdout_constant_reason", "")}}

    def reconciliation(self) -> Optional[dict]:
        """The training-time figure of the kept model, the training-time session simulation of this run's
        decisions with this run's cash and costs, and the differences between the two set-ups (empty: the
        backtest's own figure must equal the simulation to the cent)."""
        from mltrade.baselines.simulation import TradeCosts, decisions_result
        from mltrade.models.registry import read_json

        t = self._oos_table()
        if self.p.live or self.daily is None or not len(t):
            return None
        s = self.model.settings
        mc = dict(s.get("costs", {}))
        b = self.broker
        run = {"budget": float(b.startingcash), "fee": float(getattr(b.p, "commission_fixed", 0.0)),
               "ratio": float(self.p.ratio), "spread": float(self.p.spread), "fx": float(self.p.fx),
               "barrier_step": float(self.p.barrier_step), "stop": float(self.p.stop or 0.0)}
        diffs = []
        for k, v in run.items():
            if k in mc and abs(float(mc[k]) - v) > 1e-12:
                diffs.append(f"{k}: training {mc[k]:g}, this backtest {v:g}")
        if self.p.session == "day" and mc.get("barrier_reference", "entry") != "previous_close":
            diffs.append("barrier: training refers it to the session's open (barrier_reference = 'entry'), "
                         "this backtest to the previous close, where the decision is made")
        if getattr(b.p, "commission_pct", 0.0):
            diffs.append(f"commission_pct: {b.p.commission_pct:g} here, none in training")
        if getattr(b.p, "fractional", False):
            diffs.append("fractional certificates here, whole certificates in training")
        if self.p.kind != "turbo":
            diffs.append(f"product kind {self.p.kind!r} here, turbo in training")
        if self.p.stake is not None or self.p.stake_fraction:
            diffs.append("stake: part of the cash per trade here, all of it in training")
        if not self.p.use_gate:
            diffs.append("gates off here (use_gate = False)")
        costs = TradeCosts(**{**mc, **run, "floor": float(mc.get("floor", 25.0)),
                              "barrier_reference": "previous_close"})
        direction = (t["trade_direction"] if self.p.use_gate else t["direction"]).reindex(self.daily.index)
        distance = t["distance"].reindex(self.daily.index)
        summ, _ = decisions_result(self.daily, direction.fillna(0).to_numpy(), distance.fillna(0).to_numpy(),
                                   costs, self.p.session)
        out = {"session": self.p.session, "sessions": [str(t.index[0].date()), str(t.index[-1].date())],
               "simulation": summ["total_return"], "simulation_trades": summ["trades"],
               "backtest": float(b.getvalue() / b.startingcash - 1.0), "differences": diffs,
               "training": None, "training_range": None, "training_budget": mc.get("budget")}
        metrics_path = self.model_dir / "metrics.json"
        folds = [f for f in (read_json(metrics_path).get("folds", []) if metrics_path.exists() else [])
                 if f.get("session") == self.p.session]
        if folds:
            out["training"] = float(folds[-1]["test"]["total_return"])
            out["training_range"] = list(folds[-1]["fold"]["test"])
            if out["training_range"] != out["sessions"]:
                diffs.append(f"sessions: training's holdout {' .. '.join(out['training_range'])}, this "
                             f"backtest {' .. '.join(out['sessions'])}")
        return out

    # ------------------------------------------------------------------ decisions
    def _allowed(self, session_date: pd.Timestamp) -> bool:
        return not (self.p.oos_only and self.oos_start is not None and session_date < self.oos_start)

    def _row_for_next(self) -> Optional[Tuple[pd.Timestamp, pd.Series]]:
        today = self.data.datetime.date(0)
        if self.p.live:
            return self._live_row(today)
        nxt = self.plan.get(today)
        if nxt is None:
            return None
        return nxt, self.table.loc[nxt]

    def _live_row(self, today) -> Optional[Tuple[pd.Timestamp, pd.Series]]:
        import exchange_calendars as xcals

        bars = pd.DataFrame.from_dict(self._live_bars, orient="index",
                                      columns=["open", "high", "low", "close"]).sort_index()
        if len(bars) < 3:
            return None
        cal = xcals.get_calendar(getattr(self.data.p, "exchange", "XNAS"))
        nxt = pd.Timestamp(cal.next_session(pd.Timestamp(today))).tz_localize(None).normalize()
        hist = bars.iloc[-int(self.p.history):].copy()
        last = float(hist["close"].iloc[-1])
        hist.loc[nxt] = [last, last, last, last]      # placeholder: only its date is used
        hist.index = pd.DatetimeIndex(hist.index)
        table = self.model.decide(hist, per_row=True)
        if self.table is None:
            self.table = table.iloc[[-1]]
        else:
            self.table = pd.concat([self.table[self.table.index != nxt], table.iloc[[-1]]])
        return nxt, table.iloc[-1]

    def next(self) -> None:
        if self.p.live:
            d = pd.Timestamp(self.data.datetime.date(0))
            lines = (self.data.open, self.data.high, self.data.low, self.data.close)
            o, h, lo, c = (float(x[0]) for x in lines)
            if d in self._live_bars:
                po, ph, pl, _ = self._live_bars[d]
                self._live_bars[d] = (po, max(ph, h), min(pl, lo), c)
            else:
                self._live_bars[d] = (o, h, lo, c)
        super().next()
        if not self.is_last_bar_of_session() or self.is_last_bar_of_data():
            return
        found = self._row_for_next()
        if found is None:
            return
        session_date, row = found
        if not self._allowed(session_date):
            return
        direction = int(row["trade_direction"] if self.p.use_gate else row["direction"])
        if direction == 0 and int(row["direction"]) == 0:
            reason = "vote"
        elif direction == 0:
            reason = "drawdown" if bool(row["drawdown_block"]) else "gate"
        else:
            reason = "trade"
        decision = Decision(direction=direction, price=float(self.data.close[0]),
                            time=self.data.datetime.datetime(0),
                            distance=float(row["distance"]) if direction else None, stop=self.p.stop,
                            source="dqn", info={"session": str(session_date.date()),
                                                "agreement": float(row["agreement"]),
                                                "vote_direction": int(row["direction"]),
                                                "gate_proba": float(row["gate_proba"]), "why": reason})
        self.submit_decision(decision)

    def open_knockout(self, direction: int, barrier: Optional[float] = None, distance: Optional[float] = None,
                      stake: Optional[float] = None, size: Optional[float] = None, stop: Optional[float] = None,
                      product=None, data=None, **kwargs):
        """Day: the base behaviour. Night: :meth:`open_overnight` (this bar's close to the next bar's open)."""
        if self.p.session == "night":
            return self.open_overnight(direction, barrier, distance, stake, size, stop, product, data, **kwargs)
        return super().open_knockout(direction, barrier, distance, stake, size, stop, product, data, **kwargs)

    # ------------------------------------------------------------------ report
    def _oos_table(self) -> pd.DataFrame:
        t = self.table if self.table is not None else pd.DataFrame()
        if self.p.oos_only and self.oos_start is not None and len(t):
            t = t[t.index >= self.oos_start]
        return t

    def report_sections(self) -> List[Tuple[str, str]]:
        """Model scope, vote distribution and gate decisions (the baselines: the report's one baseline table;
        :func:`mltrade.strategies.dqn_report.report_sections`)."""
        return dqn_report.report_sections(self)

    def report_figures(self) -> List[Tuple[str, object]]:
        """Agreement over time and the deviation plot (actual close vs ensemble mean +- 2 se;
        :func:`mltrade.strategies.dqn_report.report_figures`)."""
        return dqn_report.report_figures(self)
