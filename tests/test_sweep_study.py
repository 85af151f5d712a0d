"""Sweeps end to end: Optuna study over walk-forward folds, resume, report, best config, CLI."""
from __future__ import annotations

import json
import re
import tomllib
from functools import lru_cache

import optuna
import pandas as pd
import pytest

from mltrade.backtest import run_backtest
from mltrade.cli import main
from mltrade.config import load_config
from mltrade.sweep.layout import make_layout
from mltrade.sweep.settings import SweepSettings
from mltrade.sweep.space import suggest
from mltrade.sweep.study import optimize
from mltrade.sweep.trials import trials_table


@lru_cache(maxsize=1)
def _cfg() -> dict:
    return load_config(None)


def settings(tmp_path, **kw) -> SweepSettings:
    base = dict(strategy="momentum", trials=60, start="2016-01-01", end="2016-04-30", folds=2, test_frac=0.25,
                batch=30, out=str(tmp_path), progress=False, seed=3)
    base.update(kw)
    return SweepSettings(**base)


def test_layout_keeps_the_test_range_out_of_the_folds():
    days = pd.bdate_range("2016-01-01", periods=100)
    lay = make_layout(days, folds=3, test_frac=0.2)
    assert lay.test == (80, 100)
    ends = [b for _, b in lay.folds]
    assert max(ends) <= lay.test[0]
    assert all(a2 >= b1 for (_, b1), (a2, _) in zip(lay.folds, lay.folds[1:]))  # chronological, disjoint
    with pytest.raises(ValueError, match="too few"):
        make_layout(days[:3], folds=3, test_frac=0.5)


def test_suggest_reads_ranges_steps_and_choices():
    study = optuna.create_study()
    t = study.ask()
    p = suggest(t, {"a": (3, 60, 1), "b": (0.01, 0.1), "c": ["x", "y"], "d": (0.0, 1.0, 0.25)})
    assert isinstance(p["a"], int) and 3 <= p["a"] <= 60
    assert 0.01 <= p["b"] <= 0.1 and p["c"] in ("x", "y") and p["d"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    with pytest.raises(ValueError, match=r"param_space\[e\]"):
        suggest(study.ask(), {"e": 5})


def test_study_runs_resumes_and_its_best_config_backtests_to_the_same_figures(tmp_path):
    s = settings(tmp_path)
    summary = optimize(_cfg(), s)
    out = s.out_dir()
    for name in ("report.html", "trials.csv", "best_config.toml", "sweep.json", "study.db"):
        assert (out / name).exists(), name
    html = (out / "report.html").read_text()
    assert "Optimisation history" in html and "Parameter importance" in html and "data:image/png" in html
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 60 and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    assert summary["trials_complete"] + summary["trials_pruned"] == 60
    # significance of the search over every trial, in figures and in words
    assert summary["trials"] == 60 and summary["significance"]["trials_with_returns"] == 60
    assert 0.0 <= summary["spa_pvalue"] <= 1.0 and 0.0 <= summary["deflated_sharpe"] <= 1.0
    assert summary["significance"]["words"].startswith("Best of 60 trials: ")
    assert html.count("SPA p-value") >= 2 and "deflated Sharpe" in html
    saved = json.loads((out / "sweep.json").read_text())
    assert {"spa_pvalue", "deflated_sharpe", "trials", "pbo"} <= set(saved)
    # the search's probability of backtest overfitting, with its logit distribution, in words beside the DSR
    assert 0.0 <= saved["pbo"] <= 1.0 and saved["significance"]["pbo"]["trials"] == 60
    assert sum(saved["significance"]["pbo"]["logit_histogram"]["counts"]) == saved["significance"]["pbo"]["combinations"]
    assert "probability that the chosen trial is below the median out of sample" in summary["significance"]["words"]
    assert "probability of backtest overfitting (PBO)" in html
    # the vectorised figures equal the broker's on the validation folds and on the held-out test
    conf = summary["confirmation"][0]
    assert conf["search_folds"] == pytest.approx(conf["broker_folds"], abs=1e-9)
    assert summary["test_vector"]["best_final_cash"] == pytest.approx(summary["test_best"]["final_value"], abs=0.01)
    assert {"buy_and_hold", "always_long", "random_direction"} <= set(summary["test_baselines"])
    assert "default params" in html and "always-long" in html   # baselines by their readable names
    # the best config is a valid config for `mltrade backtest` and reproduces the test figures
    cfg = load_config(out / "best_config.toml", {"backtest": {"baselines": False, "out": str(tmp_path / "bt")}})
    with open(out / "best_config.toml", "rb") as fh:
        raw = tomllib.load(fh)
    assert raw["strategy"]["name"] == "momentum"
    assert raw["strategy"]["params"]["decision_bar"] == summary["best_params"]["decision_bar"]
    res = run_backtest(cfg, run_name="best")
    assert res.summary["final_value"] == pytest.approx(summary["test_best"]["final_value"], abs=0.01)
    assert res.summary["trades"] == summary["test_best"]["trades"]
    # resumable: a second run adds trials to the same study
    again = optimize(_cfg(), settings(tmp_path, trials=30))
    assert again["trials_total"] == 90 and again["trials_new"] == 30 and again["trials"] == 90
    uids = [t.user_attrs["sweep_uid"] for t in optuna.load_study(study_name=s.study_name(),
                                                                 storage=s.storage_url()).trials]
    assert len(set(uids)) == 90


def test_pruning_happens(tmp_path):
    s = settings(tmp_path, trials=90, folds=3, study="prune")
    summary = optimize(_cfg(), s)
    assert summary["trials_pruned"] > 0
    table = trials_table(optuna.load_study(study_name="prune", storage=s.storage_url()))
    pruned = table[table.state == "PRUNED"]
    assert pruned["fold2"].isna().all()   # pruned trials never ran their last fold


def test_broker_engine_confirms_top_trials(tmp_path):
    s = settings(tmp_path, trials=12, batch=12, engine="broker", top=2, study="brk", end="2016-03-15")
    summary = optimize(_cfg(), s)
    assert len(summary["confirmation"]) == 2
    for c in summary["confirmation"]:
        assert c["search_value"] == pytest.approx(c["broker_value"], abs=1e-9)


def test_cli_runs_a_sweep(tmp_path, capsys):
    rc = main(["optimize", "strategy", "--strategy", "momentum", "--trials", "20", "--start", "2016-01-01",
               "--end", "2016-03-31", "--folds", "2", "--batch", "10", "--out", str(tmp_path), "--quiet",
               "--study", "cli"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "best trial" in out and "held-out test" in out
    assert re.search(r"significance: Best of 20 trials: (not )?distinguishable from luck at 5%|mixed evidence", out)
    summary = json.loads((tmp_path / "cli" / "sweep.json").read_text())
    assert summary["trials_total"] == 20


def test_cli_rejects_bad_settings(tmp_path, capsys):
    assert main(["optimize", "strategy", "--trials", "0", "--out", str(tmp_path)]) == 2
    assert "trials: expected a positive integer" in capsys.readouterr().err
    assert main(["optimize", "strategy", "--strategy", "buyhold", "--trials", "1", "--out", str(tmp_path)]) == 2
    assert "declares no param_space" in capsys.readouterr().err


def test_storage_urls_are_normalised_and_redacted(tmp_path):
    from mltrade.optuna_storage import normalise_url, redact

    assert normalise_url("postgresql://u:pw@h:5432/db").startswith("postgresql+")
    assert normalise_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert redact("postgresql+psycopg://u:secret@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert settings(tmp_path).storage_url().startswith(f"sqlite:///{tmp_path.resolve()}")


def test_same_seed_same_study(tmp_path):
    a = optimize(_cfg(), settings(tmp_path / "a", trials=40, end="2016-03-31"))
    b = optimize(_cfg(), settings(tmp_path / "b", trials=40, end="2016-03-31"))
    assert a["best_params"] == b["best_params"] and a["best_value"] == b["best_value"]


def test_settings_the_evaluator_cannot_reproduce_run_through_the_broker(tmp_path):
    cfg = load_config(None, {"broker": {"fractional": True}})
    with pytest.raises(ValueError, match="use --engine broker"):
        optimize(cfg, settings(tmp_path, trials=2, end="2016-02-29", study="v"))
    s = settings(tmp_path, trials=4, batch=2, engine="broker", top=2, end="2016-02-29", study="b")
    summary = optimize(cfg, s)
    assert summary["trials_total"] == 4 and summary["test_vector"] is None
    for c in summary["confirmation"]:
        assert c["search_engine"] == "broker"
        assert c["search_value"] == pytest.approx(c["broker_value"], abs=1e-12)
    assert summary["test_best"]["trades"] > 0


def test_baseline_direction_rules_run_on_the_vectorised_engine(tmp_path):
    cfg = load_config(None, {"strategy": {"params": {"direction_rule": "long"}}})
    summary = optimize(cfg, settings(tmp_path, trials=4, batch=2, top=1, end="2016-02-29", study="long"))
    assert summary["trials_total"] == 4
    for c in summary["confirmation"]:
        assert c["search_engine"] == "evaluator"
        assert c["search_value"] == pytest.approx(c["broker_value"], abs=1e-9)
