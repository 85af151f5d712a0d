"""Issue 19 point 5: which runs on the sample are priced by its real daily bars alone."""
import numpy as np
import pandas as pd
import pytest

from mltrade import evidence as E
from mltrade.strategy_run import run_strategy
from mltrade.config import load_config
from mltrade.feeds.sample import generate_intraday, load_daily
from mltrade.baselines.session_strategy import SessionBaseline
from mltrade.strategies.reference import IntradayMomentum

START, END = "2008-09-02", "2008-11-28"     # a wild autumn: stops and knock-outs every week


@pytest.fixture(scope="module")
def two_samples():
    daily = load_daily(START, END)    # a day's bars depend on its own row only: a slice of the sample
    return generate_intraday(daily, seed=42), generate_intraday(daily, seed=7)


def _cfg():
    cfg = load_config()
    cfg["backtest"].update(start=START, end=END)
    return cfg


def _trades(bars, cls, **kw):
    return run_strategy(bars, cls, kw, _cfg()).trades


PRICED = ["direction", "strike", "barrier", "size", "entry_time", "entry_price", "entry_underlying",
          "exit_price", "exit_underlying", "fees", "exit_reason", "pnl"]


def _priced(t):
    out = t[PRICED].copy()
    out.loc[out["exit_reason"] == "knockout", "exit_underlying"] = np.nan
    return out


@pytest.mark.parametrize("session,stop,exits", [("day", 0.71, {"stop", "session_end"}),
                                                ("day", None, {"knockout", "session_end"}),
                                                ("night", 0.71, {"signal"})])
def test_a_decide_at_open_rule_trades_the_same_on_two_generator_seeds(two_samples, session, stop, exits):
    """Two different synthetic paths through the same real days: a rule decided from earlier sessions,
    filled at first opens / last closes and left by the close, its stop or the knock-out makes the
    same trades at the same prices (only the minute of a stop or knock-out moves with the path)."""
    a, b = two_samples
    assert not np.allclose(a["close"].to_numpy(), b["close"].to_numpy())      # the paths differ
    kw = dict(session=session, direction_rule="random", seed=3, distance=0.03, stop=stop, stake=1000.0)
    ta, tb = _trades(a, SessionBaseline, **kw), _trades(b, SessionBaseline, **kw)
    assert len(ta) > 40 and exits <= set(ta["exit_reason"]), set(ta["exit_reason"])
    # a knocked-out turbo pays nothing: the level the issuer unwinds at (the knock-out bar's worst
    # price, a path figure) is recorded but prices nothing
    ko = ta["exit_reason"] == "knockout"
    assert (ta.loc[ko, "exit_price"] == 0).all()
    pd.testing.assert_frame_equal(_priced(ta), _priced(tb))
    for bars, trades in ((a, ta), (b, tb)):
        ev = E.classify(bars, trades, SessionBaseline.decision_data, unwind="worst")
        assert ev["evidence"] == E.REAL_DAILY, ev


def test_an_intraday_rule_depends_on_the_paths(two_samples):
    a, b = two_samples
    ta, tb = _trades(a, IntradayMomentum), _trades(b, IntradayMomentum)
    assert not ta[PRICED].equals(tb[PRICED])
    ev = E.classify(a, ta, IntradayMomentum.decision_data)
    assert ev["evidence"] == E.SYNTHETIC and "decides on bars inside the session" in ev["evidence_reason"]
    assert "entries fill inside a session" in ev["evidence_reason"]
    # the same trades declared as decided from daily bars still fill inside the session
    ev = E.classify(a, ta, "daily")
    assert ev["evidence"] == E.SYNTHETIC and "entries fill inside a session" in ev["evidence_reason"]


def _one_trade(bars, reason, kind="turbo", entry="open", exit_level=None):
    day = bars[bars.index.normalize() == bars.index.normalize()[0]]
    first, last = day.iloc[0], day.iloc[-1]
    t_in = day.index[0] if entry == "open" else day.index[-1]
    lvl_in = first["open"] if entry == "open" else last["close"]
    t_out, lvl_out = (day.index[-1], last["close"]) if exit_level is None else (day.index[20], exit_level)
    return pd.DataFrame([{"entry_time": t_in.tz_localize(None).isoformat(), "entry_underlying": lvl_in,
                          "exit_time": t_out.tz_localize(None).isoformat(), "exit_underlying": lvl_out,
                          "exit_reason": reason, "kind": kind}])


def test_the_exact_rule_on_single_trades(two_samples):
    bars = two_samples[0]
    day = bars.iloc[:78]
    mid = float(day["close"].iloc[20])
    ok = [_one_trade(bars, "session_end"), _one_trade(bars, "stop", exit_level=mid),
          _one_trade(bars, "knockout", exit_level=mid), _one_trade(bars, "signal", entry="close")]
    for t in ok:
        assert E.trade_dependencies(t, bars) == [], t
    # a signal exit inside the session (e.g. a take-profit or trailing stop) depends on the path
    assert "exits fill inside a session" in E.trade_dependencies(_one_trade(bars, "signal", exit_level=mid), bars)[0]
    # a mini future knocked out and unwound at the knock-out bar's worst price: a synthetic figure
    mini = _one_trade(bars, "knockout", kind="minifuture", exit_level=mid)
    assert "unwound at the knock-out bar's worst" in E.trade_dependencies(mini, bars)[0]
    assert E.trade_dependencies(mini, bars, unwind="barrier") == []
    assert E.classify(bars, ok[0], "daily", take_profit=True)["evidence"] == E.SYNTHETIC


def test_real_bars_are_real_data_and_the_words_say_what_the_p_value_is():
    daily = load_daily("2018-01-02", "2018-03-01")
    assert E.classify(daily, None)["evidence"] == E.REAL_DATA
    sig = {"alpha": 0.05, "spa_pvalue": {"buy_and_hold": 0.005, "always_long": 0.4},
           "words": "Sharpe 95% interval [1.00, 3.00]; beats buy-and-hold at 5% (SPA p=0.005)."}
    w = E.qualify_words(sig, E.SYNTHETIC, {"buy_and_hold": "buy-and-hold"})
    assert w.startswith("On synthetic intraday bars: SPA p = 0.005 against buy-and-hold is a property of the "
                        "sample, not evidence about the market.")
    assert E.qualify_words(sig, E.REAL_DATA) == sig["words"]
    assert E.qualify_words(sig, E.REAL_DAILY).startswith("On the sample's real daily bars")
    none = dict(sig, spa_pvalue={"buy_and_hold": 0.3})
    assert "every figure here is a property of the sample" in E.qualify_words(none, E.SYNTHETIC)
