"""Parity: the vectorised sweep evaluator against real backtrader runs through ``KnockoutBroker``.

Random parameter sets and signals (hypothesis) on short spans of the sample and
on hand-made bars whose opens gap through barriers and stops; trades and final
equity must agree to the cent.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mltrade.calendars import sessions
from mltrade.feeds.sample import sample_intraday
from mltrade.strategies.reference import IntradayMomentum
from mltrade.strategies.signal import SignalStrategy
from mltrade.sweep.broker_run import run_broker
from mltrade.brokers.vectorised import (EXIT_KNOCKOUT, EXIT_SESSION_END, EXIT_STOP, TRADED, evaluate, evaluate_bars,
                                       param_sets, session_grid)
from mltrade.sweep.signals import signals_from_mapping

CENT = 0.005
HSET = settings(max_examples=15, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@lru_cache(maxsize=1)
def _sample_year() -> pd.DataFrame:
    return sample_intraday("2008-01-01", "2008-12-31")


def sample_span(start: int, n: int) -> pd.DataFrame:
    bars = _sample_year()
    days = bars.index.normalize().unique()
    lo, hi = days[start], days[min(start + n, len(days)) - 1]
    return bars[(bars.index >= lo) & (bars.index < hi + pd.Timedelta(days=1))]


def handmade_bars(seed: int, n_sessions: int = 5, gap_prob: float = 0.08, start: str = "2019-03-04") -> pd.DataFrame:
    """Random-walk 5-minute XNAS bars whose opens often gap several percent away from the last close."""
    rng = np.random.default_rng(seed)
    sched = sessions("XNAS", start, pd.Timestamp(start) + pd.Timedelta(days=3 * n_sessions)).iloc[:n_sessions]
    idx, rows = [], []
    price = 7000.0
    for _, (op, cl) in sched.iterrows():
        for t in pd.date_range(op, cl, freq="5min", inclusive="left"):
            jump = rng.choice([-1, 1]) * rng.uniform(0.01, 0.05) if rng.random() < gap_prob else 0.0
            o = price * (1 + jump)
            c = o * (1 + rng.normal(0, 0.004))
            h = max(o, c) * (1 + abs(rng.normal(0, 0.003)))
            lo = min(o, c) * (1 - abs(rng.normal(0, 0.003)))
            idx.append(t)
            rows.append((o, h, lo, c, 1000.0))
            price = c
    index = pd.DatetimeIndex(idx).tz_convert("America/New_York")
    return pd.DataFrame(rows, index=index, columns=["open", "high", "low", "close", "volume"])


params_st = st.fixed_dictionaries({
    "decision_bar": st.integers(1, 78),
    "distance": st.floats(0.002, 0.08),
    "stop": st.one_of(st.none(), st.floats(0.2, 0.99)),
    "spread": st.sampled_from([0.0, 0.01, 0.05, 0.5]),
    "commission_fixed": st.sampled_from([0.0, 1.0, 4.95]),
    "commission_pct": st.sampled_from([0.0, 0.001, 0.0025]),
    "ratio": st.sampled_from([0.01, 0.1, 1.0]),
    "fx": st.sampled_from([1.0, 0.92]),
    "kind": st.sampled_from(["turbo", "minifuture"]),
    "barrier_buffer": st.sampled_from([0.0, 0.005, 0.02]),
    "financing_rate": st.sampled_from([0.0, 0.05]),
    "financing_spread": st.sampled_from([0.0, 0.03]),
    "barrier_step": st.sampled_from([0.0, 1.0, 10.0]),
    "unwind": st.sampled_from(["worst", "barrier", "close"]),
    "stake": st.one_of(st.none(), st.none(), st.floats(300.0, 20_000.0)),
    "stake_fraction": st.one_of(st.none(), st.floats(0.05, 1.0)),
    "cash": st.floats(1_000.0, 100_000.0),
    "min_move": st.sampled_from([0.0, 0.0, 0.001, 0.004]),
    "direction_rule": st.sampled_from(["momentum", "long", "random"]),
    "seed": st.integers(0, 2 ** 40),
})


def assert_parity(bars: pd.DataFrame, params: dict, signals: dict | None = None) -> None:
    """Run the broker and the evaluator on the same inputs and compare every trade to the cent."""
    grid = session_grid(bars)
    if signals is None:
        strategy, extra = IntradayMomentum, None
        res = evaluate(grid, [params])
    else:
        strategy, extra = SignalStrategy, {"signals": signals}
        res = evaluate(grid, [params], signals_from_mapping(grid, signals))
    try:
        ref = run_broker(bars, strategy, params, extra=extra)
    except ValueError as exc:
        # broker-side bug (reported): a strategy with all cash spent (<= 0) crashes on its next order
        assert "stake: expected a positive amount" in str(exc)
        assert (res.cash[0] <= 0).any(), "broker refused a stake although the evaluator still had cash"
        return
    rt = ref["roundtrips"]
    ev = res.trades(0)
    assert len(ev) == len(rt), (ev, rt)
    if len(rt):
        assert list(ev["exit_reason"]) == list(rt["exit_reason"])
        assert list(ev["direction"]) == list(rt["direction"])
        assert list(ev["size"]) == list(rt["size"])
        for col in ("entry_time", "exit_time"):
            got = [t.tz_localize(None).isoformat() for t in ev[col]]
            assert got == list(rt[col]), col
        for col in ("entry_price", "exit_price", "fees", "pnl"):
            np.testing.assert_allclose(ev[col].to_numpy(), rt[col].to_numpy(), rtol=0, atol=CENT, err_msg=col)
        np.testing.assert_allclose(ev["barrier"].to_numpy(), rt["barrier"].to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(ev["strike"].to_numpy(), rt["strike"].to_numpy(), rtol=1e-12)
    assert abs(res.final_cash[0] - ref["final_value"]) <= CENT


@HSET
@given(params=params_st, start=st.integers(0, 240), n=st.integers(2, 6), head=st.integers(0, 30),
       tail=st.integers(0, 60))
def test_momentum_parity_on_sample(params, start, n, head, tail):
    """Spans of the sample, the first session possibly starting late and the last ending early."""
    bars = sample_span(start, n)
    assert_parity(bars.iloc[head:len(bars) - tail], params)


@HSET
@given(params=params_st, seed=st.integers(0, 10_000), data=st.data())
def test_signal_parity_on_gapping_bars(params, seed, data):
    bars = handmade_bars(seed, n_sessions=4)
    bars = bars.iloc[data.draw(st.integers(0, 20), label="head"):len(bars) - data.draw(st.integers(0, 40), label="tail")]
    days = [str(d) for d in bars.index.tz_localize(None).normalize().unique().date]
    sig = {}
    for d in days:
        direction = data.draw(st.sampled_from([-1, 0, 1]), label=f"direction {d}")
        dist = data.draw(st.one_of(st.none(), st.floats(0.002, 0.05)), label=f"distance {d}")
        sig[d] = (direction, dist)
    assert_parity(bars, params, sig)


def test_gaps_exercise_every_exit_reason():
    """The hand-made bars really produce knock-outs at the open, stops at the open and intra-bar events."""
    bars = handmade_bars(7, n_sessions=20, gap_prob=0.1)
    grid = session_grid(bars)
    res = evaluate(grid, [{"decision_bar": 3, "distance": 0.02, "stop": 0.8},
                          {"decision_bar": 3, "distance": 0.01, "stop": None}])
    reasons = set(res.exit_reason[res.status == TRADED].tolist())
    assert {EXIT_KNOCKOUT, EXIT_STOP, EXIT_SESSION_END} <= reasons
    for p in ({"decision_bar": 3, "distance": 0.02, "stop": 0.8}, {"decision_bar": 3, "distance": 0.01, "stop": None}):
        assert_parity(bars, p)


def test_hand_computed_knockout_and_stop():
    """One session computed by hand: a long turbo knocked out inside bar 5, a stop hit in bar 4."""
    bars = handmade_bars(1, n_sessions=1, gap_prob=0.0)
    bars.iloc[:, :4] = 100.0
    bars.iloc[1, 1] = 101.0
    bars.iloc[1, 3] = 101.0                       # close of bar 1: session up -> long at decision_bar 2
    bars.iloc[2, 0] = 101.0                       # entry at bar 2's open, ask = (101 - 99) * 1 = 2.0
    bars.iloc[2, 1:4] = 101.0
    bars.iloc[3, :4] = [101.0, 101.0, 100.5, 100.8]
    bars.iloc[4, :4] = [100.8, 100.9, 98.0, 98.5]  # through the stop level (99 + 0.5*2=100.0) and the barrier 99
    bars.iloc[5:, :4] = 98.5
    grid = session_grid(bars)
    res = evaluate(grid, param_sets([{"decision_bar": 2, "distance": 0.0198019801980198, "stop": None,
                                      "ratio": 1.0, "cash": 1000.0},
                                     {"decision_bar": 2, "distance": 0.0198019801980198, "stop": 0.5,
                                      "ratio": 1.0, "cash": 1000.0}]))
    assert res.barrier[0, 0] == pytest.approx(99.0)
    assert res.entry_price[0, 0] == pytest.approx(2.0) and res.size[0, 0] == 500
    assert res.exit_reason[0, 0] == EXIT_KNOCKOUT and res.exit_bar[0, 0] == 4 and res.final_cash[0] == 0.0
    # with the stop at 0.5 x 2.0 = 1.0 the stop level 100.0 lies above the barrier: sold at 1.0 first
    assert res.exit_reason[1, 0] == EXIT_STOP and res.exit_price[1, 0] == pytest.approx(1.0)
    assert res.final_cash[1] == pytest.approx(500.0)
    assert_parity(bars, {"decision_bar": 2, "distance": 0.0198019801980198, "stop": 0.5, "ratio": 1.0,
                         "cash": 1000.0})


def test_many_sets_equal_one_by_one():
    """Evaluating sets together gives the same per-set results as evaluating each alone."""
    grid = session_grid(sample_span(30, 10))
    rng = np.random.default_rng(3)
    sets = [{"decision_bar": int(rng.integers(1, 70)), "distance": float(rng.uniform(0.005, 0.05)),
             "stop": float(rng.uniform(0.3, 0.95)), "kind": str(rng.choice(["turbo", "minifuture"])),
             "barrier_buffer": 0.01, "spread": 0.01, "commission_fixed": 1.0} for _ in range(12)]
    together = evaluate(grid, sets)
    for i, s in enumerate(sets):
        alone = evaluate(grid, [s])
        assert alone.final_cash[0] == together.final_cash[i]
        assert (alone.exit_reason[0] == together.exit_reason[i]).all()


def test_bad_inputs_name_the_problem():
    bars = sample_span(0, 2)
    with pytest.raises(ValueError, match="missing bars"):
        session_grid(bars.drop(bars.index[10]))
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['distnce'\].*valid: .*distance"):
        param_sets([{"distnce": 0.1}])
    with pytest.raises(ValueError, match="set 1: stop"):
        param_sets([{"stop": 0.5}, {"stop": 1.5}])
    with pytest.raises(ValueError, match="barrier_step must be the same"):
        param_sets([{"barrier_step": 1.0}, {"barrier_step": 5.0}])
    with pytest.raises(ValueError, match="outside every XNAS session"):
        session_grid(bars.set_axis(bars.index + pd.Timedelta(hours=8)))


def test_broker_survives_spent_cash():
    bars = handmade_bars(11, n_sessions=3, gap_prob=0.0)
    bars.iloc[:, :4] = 100.0
    bars.iloc[1, 1] = 101.0
    bars.iloc[1, 3] = 101.0            # session 1 goes long, nothing else moves
    params = {"decision_bar": 2, "distance": 0.05, "stop": None, "ratio": 1.0, "spread": 10.0,
              "commission_fixed": 5.0, "cash": 100.0}
    # barrier 0.95 * 101 = 95.95, entry ask 100 - 95.95 = 4.05 -> floor(95 / 4.05) = 23 certificates,
    # bid 0 at the close -> cash 100 - 5 - 23 * 4.05 - 5 = -3.15; later sessions must not crash
    ref = run_broker(bars, IntradayMomentum, params)
    assert ref["final_value"] == pytest.approx(-3.15)


def test_evaluate_bars_takes_model_directions_and_checks_them():
    bars = sample_span(10, 4)
    res = evaluate_bars(bars, [{"decision_bar": 10}], direction=[1, -1, 0, 1], distance=[0.02, np.nan, 0.5, 0.03])
    assert list(res.direction[0]) == [1, -1, 0, 1]
    assert res.status[0, 2] == 0 and (res.status[0, [0, 1, 3]] != 0).all()
    px = session_grid(bars).close[:, 9]
    assert res.barrier[0, 0] == pytest.approx(px[0] * 0.98) and res.barrier[0, 1] == pytest.approx(px[1] * 1.04)
    with pytest.raises(ValueError, match="directions must be -1, 0 or \\+1"):
        evaluate_bars(bars, [{}], direction=[2, 0, 0, 0])
    with pytest.raises(ValueError, match="distance must be a fraction"):
        evaluate_bars(bars, [{}], direction=[1, 0, 0, 0], distance=[0.0, np.nan, np.nan, np.nan])
    with pytest.raises(ValueError, match="expected 4 sessions, got 3"):
        evaluate_bars(bars, [{}], direction=[1, 0, 0])


def test_chunked_evaluation_equals_one_piece(monkeypatch):
    import mltrade.brokers.vectorised.kernel as ev

    grid = session_grid(sample_span(50, 6))
    sets = [{"decision_bar": 5 + i, "distance": 0.01 + 0.002 * i} for i in range(7)]
    whole = evaluate(grid, sets)
    monkeypatch.setattr(ev, "MAX_CELLS", 12)     # two sets per chunk
    parts = evaluate(grid, sets)
    assert (parts.final_cash == whole.final_cash).all() and (parts.exit_reason == whole.exit_reason).all()
    assert parts.params["distance"].shape == (7, 1)


# -- IntradayMomentum's direction rules (long, random) ---------------------------------------------
def test_long_rule_always_long_and_matches_the_broker():
    bars = sample_span(40, 8)
    grid = session_grid(bars)
    base = {"decision_bar": 12, "distance": 0.03, "stop": 0.7, "commission_fixed": 1.0}
    res = evaluate(grid, [{**base, "direction_rule": "long"}, {**base, "direction_rule": "momentum"}])
    decided = res.direction[1] != 0
    assert decided.sum() >= 6 and (res.direction[0][decided] == 1).all()
    assert (res.direction[1] == -1).any()          # momentum goes short somewhere: the rule matters here
    assert_parity(bars, {**base, "direction_rule": "long"})


def test_random_rule_draws_once_per_decision_in_session_order():
    """Sessions skipped by min_move consume no draw: the i-th decision takes the i-th choice of the seed."""
    import random

    bars = sample_span(60, 12)
    grid = session_grid(bars)
    p = {"decision_bar": 8, "distance": 0.03, "stop": None, "min_move": 0.002, "direction_rule": "random"}
    res = evaluate(grid, [{**p, "seed": 3}, {**p, "seed": 3, "min_move": 0.0}, {**p, "seed": 11}])
    momentum = evaluate(grid, [{**p, "direction_rule": "momentum"}])
    decided = momentum.direction[0] != 0
    assert 3 <= decided.sum() < grid.n_sessions   # min_move really skips some sessions
    rng = random.Random(3)
    want = [rng.choice((1, -1)) for _ in range(int(decided.sum()))]
    assert list(res.direction[0][decided]) == want and (res.direction[0][~decided] == 0).all()
    rng = random.Random(3)
    assert list(res.direction[1]) == [rng.choice((1, -1)) for _ in range(grid.n_sessions)]
    assert list(res.direction[0][decided]) != list(res.direction[1][decided])  # skips shift the sequence
    assert list(res.direction[2]) != list(res.direction[0])
    # the strategy's own record of its decisions agrees, and so do the trades, to the cent
    ref = run_broker(bars, IntradayMomentum, {**p, "seed": 3})
    assert [d["direction"] for d in ref["strategy"].decisions] == want
    assert_parity(bars, {**p, "seed": 3})


def test_direction_rule_and_seed_are_validated():
    with pytest.raises(ValueError, match="direction_rule must be one of momentum, long, random"):
        param_sets([{"direction_rule": "short"}])
    with pytest.raises(ValueError, match="set 1: seed"):
        param_sets([{"seed": 1}, {"seed": None, "direction_rule": "random"}])
    p = param_sets([{"direction_rule": "random", "seed": 5}, {}])
    assert p["rule"][:, 0].tolist() == [2, 0] and p["seed"][:, 0].tolist() == [5, 7]


def test_seeds_beyond_float_precision_are_kept_exactly():
    """Integer seeds above 2**53 (and above int64) are accepted unchanged and replay the strategy's draws."""
    big = [2 ** 53 + 1, 2 ** 64 + 3, -(2 ** 70) - 1]
    p = param_sets([{"direction_rule": "random", "seed": s} for s in big])
    assert p["seed"][:, 0].tolist() == big
    assert param_sets([{"seed": 2 ** 53 + 1}])["seed"][0, 0] == 2 ** 53 + 1   # int64 when it fits
    with pytest.raises(ValueError, match="set 0: seed"):
        param_sets([{"seed": 2.5}])
    bars = sample_span(60, 10)
    res = evaluate(session_grid(bars), [{"decision_bar": 8, "distance": 0.03, "direction_rule": "random", "seed": s}
                                        for s in big[:2]])
    assert list(res.direction[0]) != list(res.direction[1])
    for s in big[:2]:
        assert_parity(bars, {"decision_bar": 8, "distance": 0.03, "stop": 0.8, "direction_rule": "random", "seed": s})


def test_first_touch_lookup_equals_a_bar_by_bar_scan():
    """The running-extreme look-up finds the same first bar as walking the session bar by bar."""
    bars = handmade_bars(5, n_sessions=6, gap_prob=0.05)
    grid = session_grid(bars.iloc[7:len(bars) - 11])      # a late first and an early last session
    rng = np.random.default_rng(0)
    n = 4000
    sess = rng.integers(0, grid.n_sessions, n)
    direction = rng.choice([-1.0, 1.0], n)
    start = np.maximum(rng.integers(0, grid.width, n), grid.first[sess])
    start = np.minimum(start, grid.last[sess])
    ref_px = grid.close[sess, start]
    threshold = direction * ref_px * (1 - direction * rng.uniform(-0.01, 0.05, n))
    got = grid.first_touch(sess, direction, start, threshold)
    for i in range(n):
        s, d = sess[i], direction[i]
        want = grid.width
        for j in range(start[i], grid.last[s] + 1):
            extreme = grid.low[s, j] if d > 0 else -grid.high[s, j]
            if extreme <= threshold[i]:
                want = j
                break
        assert got[i] == want, i
    assert (got < grid.width).any() and (got == grid.width).any() and (got == start).any()
