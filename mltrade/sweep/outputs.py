"""The files a sweep writes into its output folder: ``trials.csv``, ``best_config.toml``, ``report.html``
(with its figures) and ``sweep.json``."""
from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd

from mltrade.settings import settings_of
from mltrade.sweep.scoring import Scorer
from mltrade.sweep.settings import SweepSettings


def write_trials(study, out: Path) -> pd.DataFrame:
    """``trials.csv``: one row per trial of the study (:func:`~mltrade.sweep.trials.trials_table`)."""
    from mltrade.analyzers import export_csv
    from mltrade.sweep.trials import trials_table

    out.mkdir(parents=True, exist_ok=True)
    table = trials_table(study)
    export_csv(table, out / "trials.csv")
    return table


def write_outputs(out: Path, scorer: Scorer, settings: SweepSettings, summary: dict, table: pd.DataFrame,
                  test) -> None:
    """``best_config.toml``, ``report.html`` and ``sweep.json`` of a finished search (``test``: its
    :class:`~mltrade.sweep.finish.HeldOut` runs)."""
    from mltrade.analyzers import export_json

    write_best_config(out / "best_config.toml", scorer, summary["best_params"])
    write_sweep_report(out, settings, summary, table, test)
    export_json(summary, out / "sweep.json")


def write_sweep_report(out: Path, settings: SweepSettings, summary: dict, table: pd.DataFrame, test) -> None:
    """``report.html``: the held-out test run of the best trial, with the study's tables and figures."""
    from mltrade.report import write_report
    from mltrade.sweep.verdict import sweep_lead

    sig = summary["significance"]
    figures = [("Optimisation history", _history_figure(table)),
               ("Parameter importance", _importance_figure(summary["importance"]))]
    sections = [("Study", _summary_html(summary)),
                ("Top trials (validation folds)", table[table.state == "COMPLETE"].sort_values(
                    "value", ascending=False).head(20).to_html(index=False, border=0, float_format="{:.4g}".format))]
    # the held-out test range was never used to choose: its figures are out of sample
    rsum = dict(test.best.summary, strategy=f"{settings.strategy} (best trial {summary['best_trial']}, held-out test)",
                synthetic_intraday=summary["synthetic_intraday"], out_of_sample=True)
    rsum["lead"] = sweep_lead(summary, test.best.trades, pbo=sig.get("pbo", summary.get("pbo")))
    write_report(out, rsum, test.best.trades, test.best.equity, sections, figures,
                 baselines=test.baselines, baseline_equity={k: r.equity for k, r in test.baseline_runs.items()},
                 baseline_trades={k: r.trades for k, r in test.baseline_runs.items()},
                 title=f"mltrade sweep: study {settings.study_name()}")


def write_best_config(path: Path, scorer: Scorer, params: dict) -> Path:
    """The best parameters as a config file ``mltrade backtest --config`` accepts (run on the test range)."""
    from mltrade.feeds.loader import atomic_write_text

    c = settings_of(scorer.cfg)
    lo, hi = scorer.layout.describe()["test"]
    lines = [f"# best parameters of sweep study {scorer.s.study_name()!r} ({scorer.s.strategy});",
             "# searched on the validation folds, the [backtest] range below is the held-out test range",
             "[backtest]", f"data = {_toml(c.backtest.data)}", f"start = {_toml(lo)}", f"end = {_toml(hi)}",
             f"cash = {_toml(float(c.backtest.cash))}", "", "[broker]"]
    lines += [f"{k} = {_toml(v)}" for k, v in dataclasses.asdict(c.broker).items()]
    lines += ["", "[product]"] + [f"{k} = {_toml(v)}" for k, v in c.product.to_dict().items()]
    lines += ["", "[strategy]", f"name = {_toml(scorer.s.strategy)}", "", "[strategy.params]"]
    merged = {**c.strategy.params, **params}
    lines += [f"{k} = {_toml(v)}" for k, v in merged.items() if v is not None]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return json.dumps(str(v))


def _history_figure(table: pd.DataFrame):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    done = table[table.state == "COMPLETE"].sort_values("number")
    ax.scatter(done["number"], done["value"], s=6, alpha=0.5, label="trial (mean validation log growth)")
    ax.plot(done["number"], done["value"].cummax(), color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _importance_figure(importance: Dict[str, float]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * max(len(importance), 1)))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("importance (fANOVA)")
    fig.tight_layout()
    return fig


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _pbo_cell(res: Optional[dict]) -> str:
    from mltrade.pbo import pbo_words

    if not res:
        return pbo_words(None)
    q = res["logit_quantiles"]
    return (f"{pbo_words(res)}; logit of the chosen trial's out-of-sample rank: 5/50/95 % quantiles "
            f"{q['5']:+.2f} / {q['50']:+.2f} / {q['95']:+.2f}; chosen trial loses out of sample in "
            f"{res['prob_oos_loss']:.0%} of the splits")


def _summary_html(s: dict) -> str:
    from mltrade.sweep.verdict import rounded

    rows = [("significance", s["significance"]["words"]),
            ("trials (total / new / complete / pruned)",
             f"{s['trials_total']} / {s['trials_new']} / {s['trials_complete']} / {s['trials_pruned']}"),
            ("SPA p-value / deflated Sharpe / trials counted",
             f"{_fmt(s['spa_pvalue'], '.3f')} / {_fmt(s['deflated_sharpe'], '.3f')} / {s['trials']}"),
            ("probability of backtest overfitting (PBO)", _pbo_cell(s["significance"].get("pbo"))),
            ("workers of this run", "; ".join(f"{w['worker']}: {w['trials']} trials, {w['status']}"
                                             for w in s["workers"]) or "none"),
            ("search time", f"{s['search_seconds']} s"), ("storage", s["storage"]), ("engine", s["engine"]),
            ("validation folds", ", ".join(f"{a}..{b}" for a, b in s["layout"]["val_folds"])),
            ("held-out test", "..".join(s["layout"]["test"])),
            ("best trial", f"{s['best_trial']}: {rounded(s['best_params'])} (mean validation log growth "
                           f"{s['best_value']:.5f})"),
            ("test: best params, broker", f"total return {s['test_best'].get('total_return', float('nan')):.4f}"),
            ("test: default params, broker", f"total return {s['test_default'].get('total_return', float('nan')):.4f}")]
    if s["test_vector"]:
        rows.append(("test: best params, evaluator final cash", f"{s['test_vector']['best_final_cash']:.2f}"))
    for c in s["confirmation"]:
        rows.append((f"trial {c['trial']}: validation objective, search ({c['search_engine']}) vs broker re-run",
                     f"{c['search_value']} vs {c['broker_value']}"))
    return "<table>" + "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(str(b))}</td></tr>"
                               for a, b in rows) + "</table>"
