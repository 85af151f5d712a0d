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

import html
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

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
        from mltrade.models.baselines import TradeCosts, decisions_result
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
        """Model scope, vote distribution and gate decisions (the baselines: the report's one baseline table)."""
        from mltrade.models.registry import read_json

        t = self._oos_table()
        out = []
        s = self.model.settings
        metrics_path = self.model_dir / "metrics.json"
        scope = (f"<p>Model <code>{html.escape(str(self.model_dir))}</code>: "
                 f"{len(self.model.ensemble)} agents, {self.p.session} session. Validation ends {s.get('val_end')}; "
                 f"test range {s.get('test_start')} .. {s.get('test_end')}. "
                 + ("Only sessions after the validation range are traded (out-of-sample)." if self.p.oos_only
                    else "<b>oos_only is off: sessions inside the training/validation range are traded "
                         "(in-sample, not a fair result).</b>") + "</p>")
        if metrics_path.exists():
            m = read_json(metrics_path)
            rows = []
            for f in m.get("folds", []):
                rows.append({"fold": f["fold"]["fold"], "session": f["session"],
                             "test": " .. ".join(f["fold"]["test"]),
                             "ensemble": f["test"]["total_return"],
                             "ungated": f["test_ungated"]["total_return"]})
            if rows:
                scope += ("<p>Walk-forward test results at training time (total return of the session "
                          "simulation; the baselines of this run are in the one baseline table above):</p>") + \
                    pd.DataFrame(rows).to_html(index=False, float_format=lambda v: f"{v:+.2%}")
        for key, what in (("below_baselines_reason", "no better than its own baselines on validation"),
                          ("holdout_constant_reason", "constant on the holdout")):
            if s.get(key):
                scope += f"<p><b>Warning: {what}:</b> {html.escape(str(s[key]))}.</p>"
        out.append(("DQN ensemble: model and out-of-sample scope", scope))
        sel = ((read_json(metrics_path).get("selection_pbo") or {}) if metrics_path.exists() else {}).get(self.p.session)
        if sel:
            from mltrade.pbo import pbo_details
            items = "".join(f"<li>fold {html.escape(str(f.get('fold')))}: {html.escape(pbo_details(f))}</li>"
                            for f in sel)
            out.append((f"DQN ensemble: candidate selection overfitting ({self.p.session}, at training time)",
                        "<p>Probability of Backtest Overfitting of choosing the agents among the candidates by "
                        f"their validation return (CSCV over the candidates' per-session validation returns):</p>"
                        f"<ul>{items}</ul>"))
        lad = self.training_ladder()
        if lad:
            from mltrade.models.ladder import format_ladder
            out.append((f"DQN ensemble: learner ladder ({self.p.session}, at training time)",
                        "<p>Simple learners on the ensemble's own observations, folds and objective (the "
                        "session's certificate return on the ensemble's barrier), chosen on validation; "
                        f"{html.escape(lad.get('returns', ''))}.</p><pre>{html.escape(format_ladder(lad))}</pre>"))
        rec = self.reconciliation()
        if rec is not None:
            def pct(v: Optional[float]) -> str:
                return "n/a" if v is None else f"{v:+.2%}"
            rows = [("training (metrics.json): the kept model over its holdout "
                     f"{' .. '.join(rec['training_range'] or ['?', '?'])}, budget {rec['training_budget']}",
                     pct(rec["training"])),
                    (f"training-time session simulation of this run's decisions, sessions "
                     f"{' .. '.join(rec['sessions'])}, this run's cash and costs ({rec['simulation_trades']} "
                     "trades)", pct(rec["simulation"])),
                    ("this backtest (KnockoutBroker)", pct(rec["backtest"]))]
            body = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td></tr>" for a, b in rows)
            words = ("Same sessions, cash and costs as training: the three figures are one figure (the "
                     "session simulation and the broker price through mltrade.products)."
                     if not rec["differences"] else
                     "Differences between training and this backtest: " +
                     "; ".join(html.escape(d) for d in rec["differences"]) + ".")
            words += (" Baselines: always-long trades the ensemble's barrier of each session here and in "
                      "training (one figure); buy-and-hold here buys whole units with the fee (training: the "
                      "index without costs); random direction here is one seeded draw (training: the mean of "
                      "[dqn] baseline_draws draws).")
            out.append(("DQN ensemble: training figure and this backtest",
                        f"<table><tr><th>figure</th><th>total return</th></tr>{body}</table><p>{words}</p>"))
        if len(t):
            votes = pd.DataFrame({"sessions": [len(t)], "long": [int((t["direction"] > 0).sum())],
                                  "short": [int((t["direction"] < 0).sum())],
                                  "no trade / tie": [int((t["direction"] == 0).sum())],
                                  "mean agreement": [round(float(t["agreement"].mean()), 3)]})
            voted = t["direction"] != 0
            gates = pd.DataFrame({"voted trades": [int(voted.sum())],
                                  "passed": [int((t["trade_direction"] != 0).sum())],
                                  "refused by confidence gate": [int((voted & ~t["gate_pass"]).sum())],
                                  "refused by drawdown gate": [int((voted & t["gate_pass"] &
                                                                    t["drawdown_block"]).sum())]})
            out.append(("DQN ensemble: vote distribution", votes.to_html(index=False)))
            out.append(("DQN ensemble: gate decisions", gates.to_html(index=False)))
        return out

    def report_figures(self) -> List[Tuple[str, object]]:
        """Agreement over time and the deviation plot (actual close vs ensemble mean +- 2 se)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        t = self._oos_table()
        if not len(t):
            return []
        figs = []
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.plot(t.index, t["agreement"].rolling(10, min_periods=1).mean(),
                label="agreement (10-session mean)")
        ax.scatter(t.index[t["direction"] > 0], np.ones((t["direction"] > 0).sum()) * 1.02, s=4, c="g",
                   label="long vote")
        ax.scatter(t.index[t["direction"] < 0], np.ones((t["direction"] < 0).sum()) * 1.05, s=4, c="r",
                   label="short vote")
        ax.set_ylim(0, 1.1)
        ax.legend(loc="lower left", fontsize=7)
        figs.append(("DQN ensemble agreement over time", fig))
        if "mean_close" in t.columns and self.daily is not None:
            fig2, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
            actual = self.daily.loc[t.index, "close"]
            a1.plot(t.index, actual, lw=0.8, label="actual close")
            a1.plot(t.index, t["mean_close"], lw=0.8, label="ensemble mean")
            a1.fill_between(t.index, t["mean_close"] - 2 * t["se_close"], t["mean_close"] + 2 * t["se_close"],
                            alpha=0.3, label="+-2 standard errors")
            a1.legend(fontsize=7)
            a2.plot(t.index, t["z_close"], lw=0.6)
            a2.set_yscale("symlog", linthresh=2.0)   # robust: |z| of hundreds beside the +-2 band stays readable
            top = float(np.nanmax(np.abs(t["z_close"].to_numpy(float)))) if len(t) else 2.0
            ticks = [v for v in (2, 10, 100, 1000, 10000) if v <= max(top, 2) * 1.5]
            a2.set_yticks([-v for v in ticks[::-1]] + [0] + ticks)
            a2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            a2.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            for y in (-2, 2):
                a2.axhline(y, color="grey", ls="--", lw=0.7)
            a2.set_ylabel("(actual − mean) / se\n(symmetric log; ±2 dashed)")
            a1.set_ylabel("index close")
            a2.set_xlabel("session")
            figs.append(("DQN ensemble deviation tracking (predicted close)", fig2))
        return figs
