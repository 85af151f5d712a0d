"""Luck checks: bootstrap intervals cover, SPA holds its size and finds planted edges, DSR deflates."""
import math

import numpy as np
import pandas as pd
import pytest

from mltrade import significance as sig


def test_sharpe_and_total_return_conventions():
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.005])
    assert sig.sharpe(r) == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert sig.total_return(r) == pytest.approx(np.prod(1 + r) - 1)
    assert sig.sharpe(np.zeros(20)) == 0.0


def test_bootstrap_interval_covers_the_true_sharpe():
    rng = np.random.default_rng(1)
    mu, sd, n = 0.0005, 0.01, 500
    true = mu / sd * math.sqrt(252)
    hits = 0
    runs = 40
    for i in range(runs):
        lo, hi = sig.bootstrap_ci(rng.normal(mu, sd, n), "sharpe", reps=400, seed=i)
        assert lo < hi
        hits += lo <= true <= hi
    assert hits / runs >= 0.85  # nominal 95 %; a broken interval (e.g. too narrow) misses far more


def test_bootstrap_return_interval_brackets_the_point_figure():
    rng = np.random.default_rng(2)
    r = rng.normal(0.001, 0.01, 300)
    lo, hi = sig.bootstrap_ci(r, "total_return", reps=500)
    assert lo < sig.total_return(r) < hi
    assert sig.bootstrap_ci(r[:5]) is None  # too few sessions: no number is made up


def test_spa_size_under_the_null_and_power_on_a_planted_edge():
    rng = np.random.default_rng(3)
    n = 400
    false_pos = 0
    runs = 30
    for i in range(runs):
        bench = rng.normal(0.0003, 0.01, n)
        strat = bench + rng.normal(0.0, 0.005, n)  # same bet plus noise: no edge
        false_pos += sig.spa_pvalue(strat, bench, reps=300, seed=i) < 0.05
    assert false_pos / runs <= 0.15
    bench = rng.normal(0.0, 0.01, n)
    strat = bench + rng.normal(0.002, 0.005, n)  # +0.2 % a session over the benchmark
    assert sig.spa_pvalue(strat, bench, reps=500) < 0.01
    assert sig.spa_pvalue(bench, bench) == 1.0


def test_spa_best_of_many_is_harder_than_best_alone():
    rng = np.random.default_rng(4)
    n, m, runs = 300, 60, 10
    rejected = 0
    for i in range(runs):
        models = rng.normal(0.0, 0.01, (n, m))
        bench = np.zeros(n)
        best = int(np.argmax(models.mean(axis=0)))
        p_alone = sig.spa_pvalue(models[:, best], bench, reps=300, seed=i)
        p_all = sig.spa_best_pvalue(models, bench, reps=300, seed=i)
        assert p_all > p_alone  # looking at 60 rules and keeping the best must cost significance
        rejected += p_all < 0.05
    assert rejected <= 2  # the test's size holds across the search


def test_spa_aligns_series_on_their_dates_and_rejects_unequal_arrays():
    idx = pd.date_range("2020-01-01", periods=50, freq="B")
    a = pd.Series(np.linspace(-0.01, 0.01, 50), index=idx)
    b = pd.Series(np.zeros(40), index=idx[10:])
    assert sig.spa_pvalue(a, b, reps=100) is not None
    with pytest.raises(ValueError, match="benchmark_returns has 40"):
        sig.spa_pvalue(a.values, b.values)
    with pytest.raises(ValueError, match="NaN"):
        sig.spa_pvalue(np.r_[a.values[:-1], np.nan], a.values)


def test_deflated_sharpe_deflates_the_best_of_many_null_trials():
    rng = np.random.default_rng(5)
    n, trials = 250, 300
    naive_sig = deflated_sig = 0
    reps = 20
    for _ in range(reps):
        r = rng.normal(0.0, 0.01, (n, trials))
        srs = r.mean(axis=0) / r.std(axis=0, ddof=1)
        best = r[:, int(np.argmax(srs))]
        naive_sig += sig.deflated_sharpe(best, srs, n_trials=1) > 0.95
        deflated_sig += sig.deflated_sharpe(best, srs) > 0.95
    assert naive_sig >= reps * 0.8  # the best of 300 coin flips looks "significant" undeflated
    assert deflated_sig <= reps * 0.15
    # a real edge in a single trial survives
    edge = rng.normal(0.003, 0.01, n)
    assert sig.deflated_sharpe(edge, [edge.mean() / edge.std(ddof=1)], 1) > 0.99
    # more trials, same best: lower DSR
    srs = rng.normal(0, 0.05, 1000)
    assert sig.deflated_sharpe(edge, srs, 10) > sig.deflated_sharpe(edge, srs, 1000)


def test_significance_block_has_the_report_fields_and_words():
    rng = np.random.default_rng(6)
    bench = rng.normal(0.0003, 0.01, 300)
    strat = bench + rng.normal(0.003, 0.004, 300)
    out = sig.significance(strat, {"buy-and-hold": bench, "random": rng.normal(0, 0.01, 300)}, reps=300)
    assert set(out) >= {"sharpe_ci", "return_ci", "spa_pvalue", "n_sessions", "words"}
    assert out["n_sessions"] == 300
    assert out["spa_pvalue"]["buy-and-hold"] < 0.05
    assert "beats buy-and-hold at 5%" in out["words"]
    same = sig.significance(bench, {"buy-and-hold": bench}, reps=200)
    assert "not distinguishable from buy-and-hold at 5%" in same["words"]
    short = sig.significance(strat[:5], {"buy-and-hold": bench[:5]})
    assert short["sharpe_ci"] is None and short["spa_pvalue"]["buy-and-hold"] is None


def test_words_use_readable_labels_and_call_a_clearly_worse_strategy_worse():
    """A strategy far below its baseline is not "not distinguishable" from it: the reverse SPA says worse."""
    rng = np.random.default_rng(11)
    bench = rng.normal(0.0005, 0.01, 300)
    worse = bench - 0.004 + rng.normal(0, 0.004, 300)
    out = sig.significance(worse, {"buy_and_hold": bench}, reps=300, labels={"buy_and_hold": "buy-and-hold"})
    assert out["spa_pvalue"]["buy_and_hold"] >= 0.05
    assert out["spa_pvalue_baseline_better"]["buy_and_hold"] < 0.05
    assert "worse than buy-and-hold at 5%" in out["words"]
    assert "not distinguishable" not in out["words"] and "buy_and_hold" not in out["words"]
    same = sig.significance(bench, {"buy_and_hold": bench}, reps=200, labels={"buy_and_hold": "buy-and-hold"})
    assert "not distinguishable from buy-and-hold at 5%" in same["words"]


def test_spa_p_is_one_when_no_model_beats_the_benchmark_on_average():
    rng = np.random.default_rng(7)
    bench = rng.normal(0.001, 0.01, 300)
    worse = bench - 0.004 + rng.normal(0, 0.005, 300)  # far below the benchmark
    assert sig.spa_pvalue(worse, bench, reps=300) == 1.0
    models = np.column_stack([worse, worse - 0.001])
    assert sig.spa_best_pvalue(models, bench, reps=300) == 1.0
