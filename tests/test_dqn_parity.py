"""Parity of the DQN's pricing: the environment (``KnockoutEnv``), its vectorised copy (``VectorKnockoutEnv``),
the training-time session simulation (``decisions_result``) and real backtrader runs through ``KnockoutBroker``
on the sample's 5-minute bars agree session by session, to the cent (like tests/test_sweep_parity.py for the
sweep). Random decisions, barriers and costs (hypothesis), day and night sessions.
"""
from __future__ import annotations

from functools import lru_cache

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mltrade.analyzers import KnockoutTrades
from mltrade.brokers import KnockoutBroker
from mltrade.feeds.bars import IndexData
from mltrade.feeds.sample import sample_intraday
from mltrade.baselines.simulation import TradeCosts, decisions_result
from mltrade.models.dqn.env import KnockoutEnv, action_table
from mltrade.models.dqn.observations import daily_from_intraday
from mltrade.models.dqn.vector import VectorKnockoutEnv
from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision

CENT = 0.005
HSET = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@lru_cache(maxsize=1)
def _bars() -> pd.DataFrame:
    # 2008: the crash's gaps and knock-outs; 2,000 bars of 5 minutes per month
    return sample_intraday("2008-09-01", "2008-12-31")


def span(start: int, n: int) -> pd.DataFrame:
    bars = _bars()
    days = bars.index.normalize().unique()
    lo, hi = days[start], days[min(start + n, len(days)) - 1]
    return bars[(bars.index >= lo) & (bars.index < hi + pd.Timedelta(days=1))]


class Planned(KnockoutStrategy):
    """Trades a plan ``{session date: (direction, distance)}`` as ``DQNEnsembleStrategy`` trades its table:
    decided at the last bar of the previous session, day (next open -> close) or night (this close -> next
    open)."""

    params = (("plan", None), ("session", "day"))

    def __init__(self) -> None:
        super().__init__()
        days = sorted(self.p.plan)
        self.nxt = {a.date(): b for a, b in zip(days[:-1], days[1:])}

    def next(self) -> None:
        super().next()
        if not self.is_last_bar_of_session() or self.is_last_bar_of_data():
            return
        day = self.nxt.get(self.data.datetime.date(0))
        if day is None:
            return
        d, dist = self.p.plan[day]
        if d:
            self.submit_decision(Decision(direction=int(d), price=float(self.data.close[0]),
                                          time=self.data.datetime.datetime(0), distance=float(dist),
                                          stop=self.p.stop))

    def open_knockout(self, direction, barrier=None, distance=None, stake=None, size=None, stop=None,
                      product=None, data=None, **kwargs):
        if self.p.session == "night":
            return self.open_overnight(direction, barrier, distance, stake, size, stop, product, data, **kwargs)
        return super().open_knockout(direction, barrier, distance, stake, size, stop, product, data, **kwargs)


def broker_run(bars: pd.DataFrame, plan: dict, session: str, costs: TradeCosts) -> tuple:
    cerebro = bt.Cerebro(stdstats=False, runonce=True, preload=True)
    cerebro.adddata(IndexData(dataframe=bars, exchange="XNAS", interval=5))
    cerebro.broker = KnockoutBroker(cash=costs.budget, commission_fixed=costs.fee)
    cerebro.addstrategy(Planned, plan=plan, session=session, spread=costs.spread, ratio=costs.ratio,
                        fx=costs.fx, stop=costs.stop or None)
    cerebro.addanalyzer(KnockoutTrades, _name="t")
    strat = cerebro.run()[0]
    return strat.analyzers.t.to_frame(), strat.broker.getvalue()


case = st.fixed_dictionaries({
    "start": st.integers(0, 60), "n": st.integers(8, 20), "session": st.sampled_from(["day", "night"]),
    "spread": st.sampled_from([0.0, 0.01, 0.05]), "fee": st.sampled_from([0.0, 1.0, 4.95]),
    "stop": st.sampled_from([0.0, 0.5, 0.71, 0.9]), "budget": st.sampled_from([1000.0, 10000.0, 25000.0]),
    "ratio": st.sampled_from([0.01, 0.1]), "seed": st.integers(0, 10_000)})


@HSET
@given(case)
def test_env_vector_simulation_and_broker_agree_session_by_session(c):
    bars = span(c["start"], c["n"])
    daily = daily_from_intraday(bars)
    costs = TradeCosts(ratio=c["ratio"], spread=c["spread"], fee=c["fee"], stop=c["stop"], budget=c["budget"],
                       floor=0.0, barrier_reference="previous_close")
    dirs, dists = action_table()
    rng = np.random.default_rng(c["seed"])
    actions = rng.integers(0, len(dirs), len(daily))
    actions[0] = len(dirs) // 2                 # the first session has no decision before it (no trade)
    direction, distance = dirs[actions], dists[actions]
    # 1. the training-time session simulation
    summ, sim = decisions_result(daily, direction, distance, costs, c["session"])
    # 2. the environment the agents learn on: the same budget after every session
    obs = pd.DataFrame(np.zeros((len(daily), 1)), index=daily.index, columns=["x"])
    env = KnockoutEnv(obs, daily, mode=c["session"], costs=costs, start=daily.index[1])
    env.reset()
    env_budget = []
    for a in actions[1:]:
        _, _, term, trunc, info = env.step(int(a))
        env_budget.append(info["budget"])
        if term or trunc:
            break
    np.testing.assert_allclose(env_budget, sim["budget_after"].to_numpy()[1:1 + len(env_budget)], atol=CENT)
    # 3. the vectorised environment (two copies, same actions)
    venv = VectorKnockoutEnv(env, 2, seed=0)
    venv.reset()
    vec_budget = []
    for a in actions[1:1 + len(env_budget)]:
        venv.step(np.array([a, a]))
        vec_budget.append(venv.budget.copy())
        if (venv.t == 0).any():
            break
    vec_budget = np.asarray(vec_budget)
    np.testing.assert_allclose(vec_budget[:, 0], vec_budget[:, 1])
    k = len(vec_budget) - (1 if (venv.t == 0).any() else 0)
    np.testing.assert_allclose(vec_budget[:k, 0], env_budget[:k], atol=CENT)
    # 4. the broker on 5-minute bars: every trade and the final value
    plan = {day: (int(d), float(x)) for day, d, x in zip(daily.index, direction, distance)}
    trades, value = broker_run(bars, plan, c["session"], costs)
    traded = sim[sim["size"] > 0]
    assert len(trades) == len(traded)
    day_of = "exit_time" if c["session"] == "night" else "entry_time"
    got = pd.DatetimeIndex(pd.to_datetime(trades[day_of])).normalize().tz_localize(None)
    assert (got == traded.index).all()
    np.testing.assert_allclose(trades["entry_price"], traded["entry"], atol=1e-9)
    np.testing.assert_allclose(trades["exit_price"], traded["exit"], atol=1e-9)
    np.testing.assert_allclose(trades["size"], traded["size"])
    assert value == pytest.approx(summ["final_budget"], abs=CENT)


def test_a_gap_through_the_barrier_at_the_open_is_no_trade_everywhere():
    """A day session that opens beyond the barrier (set at the previous close) is not traded by the
    simulation, the environment or the broker (the certificate is knocked out before the entry)."""
    bars = span(0, 40)
    daily = daily_from_intraday(bars)
    gap = (daily["open"] / daily["close"].shift(1) - 1.0).to_numpy()
    t = int(np.nanargmin(gap))                # the largest downward gap of the span
    dist = float(-gap[t] / 2)                 # a long barrier halfway into the gap
    assert gap[t] < -0.01
    direction = np.zeros(len(daily))
    distance = np.zeros(len(daily))
    direction[t], distance[t] = 1, dist
    costs = TradeCosts(spread=0.01, fee=1.0, budget=10000.0, barrier_reference="previous_close")
    summ, sim = decisions_result(daily, direction, distance, costs, "day")
    assert summ["trades"] == 0 and sim["entry"].iloc[t] == 0
    trades, value = broker_run(bars, {d: (int(a), float(b)) for d, a, b in zip(daily.index, direction, distance)},
                               "day", costs)
    assert trades.empty and value == pytest.approx(10000.0)
