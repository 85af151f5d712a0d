"""Product definitions, validation and the vectorised pricing functions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltrade import products as P
from mltrade.products import KnockoutProduct


def test_turbo_payoffs_long_and_short():
    s = np.array([90.0, 100.0, 110.0])
    np.testing.assert_allclose(P.intrinsic(1, s, 100.0, 0.01), [0.0, 0.0, 0.1])
    np.testing.assert_allclose(P.intrinsic(-1, s, 100.0, 0.01), [0.1, 0.0, 0.0])


def test_bid_is_fair_minus_spread_floored_and_fx_applies():
    assert P.ask_price(1, 110.0, 100.0, 0.1, 0.5, 0.2) == pytest.approx(0.5)
    assert P.bid_price(1, 110.0, 100.0, 0.1, 0.5, 0.2) == pytest.approx(0.3)
    assert P.bid_price(1, 101.0, 100.0, 0.1, 1.0, 0.2) == 0.0


@settings(max_examples=60, deadline=None)
@given(d=st.sampled_from([1, -1]), k=st.floats(50, 150), s=st.floats(1, 300), ratio=st.floats(0.001, 1),
       fx=st.floats(0.2, 2), spread=st.floats(0, 0.5))
def test_scalar_twins_equal_the_vectorised_functions(d, k, s, ratio, fx, spread):
    p = KnockoutProduct(direction=d, strike=k, ratio=ratio, fx=fx, spread=spread)
    assert p.bid_scalar(s, fx) == pytest.approx(float(p.bid(s)), abs=1e-12)
    assert p.fair_scalar(s, fx) == pytest.approx(float(p.fair(s)), abs=1e-12)
    assert p.underlying_for_bid_scalar(0.7, fx) == pytest.approx(
        float(P.underlying_for_bid(d, 0.7, k, ratio, fx, spread)))


@settings(max_examples=60, deadline=None)
@given(d=st.sampled_from([1, -1]), k=st.floats(50, 150), bid=st.floats(0.01, 10), ratio=st.floats(0.001, 1))
def test_underlying_for_bid_inverts_bid(d, k, bid, ratio):
    s = P.underlying_for_bid(d, bid, k, ratio, 1.0, 0.01)
    assert P.bid_price(d, s, k, ratio, 1.0, 0.01) == pytest.approx(bid, rel=1e-9, abs=1e-9)


def test_financing_compounds_per_calendar_day():
    assert P.financed_strike(100.0, 1, 0.036, 0.0, 3) == pytest.approx(100 * (1 + 0.0001) ** 3)
    assert P.financed_strike(100.0, -1, 0.01, 0.03, 1) == pytest.approx(100 * (1 - 0.02 / 360))


def test_barrier_grid_rounds_to_the_safe_side():
    assert P.round_barrier_safe(9512.3, 1, 50) == 9500.0     # long: lower = further from the index
    assert P.round_barrier_safe(9512.3, -1, 50) == 9550.0    # short: higher
    assert P.round_barrier_safe(9500.0, 1, 50) == 9500.0
    p = KnockoutProduct.for_index(1, 10_000.0, distance=0.04, barrier_step=25)
    assert p.barrier == 9600.0 and p.strike == 9600.0
    p = KnockoutProduct.for_index(-1, 10_000.0, distance=0.041, barrier_step=25)
    assert p.barrier == 10_425.0


def test_minifuture_barrier_buffer_and_residual():
    p = KnockoutProduct.minifuture(1, 100.0, 0.05, ratio=0.1)
    assert p.barrier == pytest.approx(105.0)
    assert float(p.residual(103.0)) == pytest.approx(0.3)
    assert float(p.residual(99.0)) == 0.0
    turbo = KnockoutProduct.turbo(1, 100.0)
    assert float(turbo.residual(103.0)) == 0.0


def test_unwind_modes():
    assert P.unwind_price(1, 95, 96, 93, 97, 94, "worst") == 93
    assert P.unwind_price(-1, 95, 96, 93, 97, 94, "worst") == 97
    assert P.unwind_price(1, 95, 96, 93, 97, 94, "barrier", gapped=False) == 95
    assert P.unwind_price(1, 95, 94, 93, 97, 94, "barrier", gapped=True) == 94
    with pytest.raises(ValueError, match="unwind"):
        P.unwind_price(1, 95, 96, 93, 97, 94, "best")


@pytest.mark.parametrize("kw, field", [
    (dict(direction=1, strike=100.0, ratio=0.0), "ratio"),
    (dict(direction=1, strike=100.0, ratio=-1.0), "ratio"),
    (dict(direction=1, strike=100.0, spread=-0.01), "spread"),
    (dict(direction=2, strike=100.0), "direction"),
    (dict(direction=1, strike=100.0, kind="warrant"), "kind"),
    (dict(direction=1, strike=100.0, barrier=95.0), "barrier"),
    (dict(direction=1, strike=100.0, kind="minifuture", barrier=95.0), "barrier"),
    (dict(direction=-1, strike=100.0, kind="minifuture", barrier=105.0), "barrier"),
    (dict(direction=1, strike=100.0, fx=0.0), "fx"),
])
def test_bad_parameters_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        KnockoutProduct(**kw)


def test_barrier_on_the_wrong_side_of_the_index_is_refused():
    with pytest.raises(ValueError, match="barrier.*below the index"):
        KnockoutProduct.for_index(1, 100.0, barrier=101.0)
    with pytest.raises(ValueError, match="barrier.*above the index"):
        KnockoutProduct.for_index(-1, 100.0, barrier=99.0)
    with pytest.raises(ValueError, match="distance"):
        KnockoutProduct.for_index(1, 100.0, distance=1.5)


def test_leverage_and_knockout_test():
    p = KnockoutProduct.for_index(1, 10_000.0, distance=0.04)
    assert p.leverage(10_000.0) == pytest.approx(25.0)
    assert bool(p.knocked_out_by(9_600.0, 10_100.0)) and not bool(p.knocked_out_by(9_600.01, 10_100.0))
