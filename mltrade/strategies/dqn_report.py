"""The report of :class:`~mltrade.strategies.dqn.DQNEnsembleStrategy`: its HTML sections (model scope, candidate
selection overfitting, learner ladder, training figure against this backtest, votes and gates) and its figures
(agreement over time, deviation tracking), each section built by one function of the strategy."""
from __future__ import annotations

import html
from typing import Any, List, Optional, Tuple

import numpy as np
import pandas as pd


def report_sections(strategy: Any) -> List[Tuple[str, str]]:
    """Model scope, vote distribution and gate decisions (the baselines: the report's one baseline table)."""
    from mltrade.models.registry import read_json

    metrics_path = strategy.model_dir / "metrics.json"
    out = [("DQN ensemble: model and out-of-sample scope", scope_section(strategy))]
    sel = ((read_json(metrics_path).get("selection_pbo") or {}) if metrics_path.exists() else {}).get(
        strategy.p.session)
    if sel:
        out.append(selection_section(strategy, sel))
    lad = strategy.training_ladder()
    if lad:
        from mltrade.models.ladder import format_ladder
        out.append((f"DQN ensemble: learner ladder ({strategy.p.session}, at training time)",
                    "<p>Simple learners on the ensemble's own observations, folds and objective (the "
                    "session's certificate return on the ensemble's barrier), chosen on validation; "
                    f"{html.escape(lad.get('returns', ''))}.</p><pre>{html.escape(format_ladder(lad))}</pre>"))
    rec = strategy.reconciliation()
    if rec is not None:
        out.append(("DQN ensemble: training figure and this backtest", reconciliation_section(rec)))
    t = strategy._oos_table()
    if len(t):
        out.extend(vote_sections(t))
    return out


def scope_section(strategy: Any) -> str:
    """The model, its ranges and what is traded, the walk-forward test results at training time and the
    model's warnings."""
    from mltrade.models.registry import read_json

    s = strategy.model.settings
    p = strategy.p
    metrics_path = strategy.model_dir / "metrics.json"
    scope = (f"<p>Model <code>{html.escape(str(strategy.model_dir))}</code>: "
             f"{len(strategy.model.ensemble)} agents, {p.session} session. Validation ends {s.get('val_end')}; "
             f"test range {s.get('test_start')} .. {s.get('test_end')}. "
             + ("Only sessions after the validation range are traded (out-of-sample)." if p.oos_only
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
    return scope


def selection_section(strategy: Any, sel: list) -> Tuple[str, str]:
    """The PBO of choosing the agents among the candidates, per fold (``sel``: ``metrics.json``'s
    ``selection_pbo`` of the strategy's session)."""
    from mltrade.pbo import pbo_details

    items = "".join(f"<li>fold {html.escape(str(f.get('fold')))}: {html.escape(pbo_details(f))}</li>"
                    for f in sel)
    return (f"DQN ensemble: candidate selection overfitting ({strategy.p.session}, at training time)",
            "<p>Probability of Backtest Overfitting of choosing the agents among the candidates by "
            f"their validation return (CSCV over the candidates' per-session validation returns):</p>"
            f"<ul>{items}</ul>")


def reconciliation_section(rec: dict) -> str:
    """The training figure, the session simulation of this run's decisions and this backtest side by side
    (``rec``: :meth:`DQNEnsembleStrategy.reconciliation`), with the differences between the set-ups."""
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
    return f"<table><tr><th>figure</th><th>total return</th></tr>{body}</table><p>{words}</p>"


def vote_sections(t: pd.DataFrame) -> List[Tuple[str, str]]:
    """The vote distribution and the gates' decisions over the traded sessions ``t``."""
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
    return [("DQN ensemble: vote distribution", votes.to_html(index=False)),
            ("DQN ensemble: gate decisions", gates.to_html(index=False))]


def report_figures(strategy: Any) -> List[Tuple[str, object]]:
    """Agreement over time and the deviation plot (actual close vs ensemble mean +- 2 se)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    t = strategy._oos_table()
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
    if "mean_close" in t.columns and strategy.daily is not None:
        fig2, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
        actual = strategy.daily.loc[t.index, "close"]
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
