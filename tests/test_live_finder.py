"""Knock-out finder on plain lists: binary search step counts, the original's rules, German numbers."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mltrade.live.finder import Certificate, FinderRules, KnockoutFinder, ListRowSource
from mltrade.live.formats import format_number, parse_number


def make_rows(n, direction=1, index=15000.0, seed=1, cheap_every=0, illiquid=(), ratio=0.01):
    rng = np.random.default_rng(seed)
    levels = index - direction * (20 + np.cumsum(rng.uniform(2, 8, n)))
    rows = []
    for i, lvl in enumerate(levels):
        r = 0.001 if cheap_every and i % cheap_every == 0 else ratio
        price = max(direction * (index - lvl), 0) * r
        if i in illiquid:
            price *= 1.8
        lev = index * r / price
        rows.append(Certificate(i, f"X{i:05d}", round(float(lvl), 2), round(float(price), 2),
                                round(float(lev), 1)))
    return rows


def brute_first_safe(rows, direction, target):
    for r in rows:
        if (r.barrier <= target if direction > 0 else r.barrier >= target):
            return r.index
    return None


@pytest.mark.parametrize("direction", [1, -1])
def test_locate_is_logarithmic_and_beats_linear_scan(direction, capsys):
    figures = []
    for n in (520, 5200, 52000):
        rows = make_rows(n, direction)
        target = rows[int(n * 0.8)].barrier - direction * 0.01    # deep in the list
        fb = KnockoutFinder(ListRowSource(rows), direction)
        fl = KnockoutFinder(ListRowSource(rows), direction)
        ib, il = fb.locate(target), fl.locate_linear(target)
        assert ib == il == brute_first_safe(rows, direction, target)
        positions = math.ceil(n / 20)
        assert fb.steps <= math.ceil(math.log2(positions)) + 2
        assert fl.steps > fb.steps
        figures.append((n, fb.steps, fl.steps))
    with capsys.disabled():
        print("\nfinder scroll steps (rows, binary, linear):", figures)
    # doubling the list 100x adds only a handful of binary steps
    assert figures[-1][1] - figures[0][1] <= 8
    assert figures[-1][2] >= 90 * figures[0][2] // 2


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 400), frac=st.floats(-0.2, 1.2), direction=st.sampled_from([1, -1]),
       per=st.integers(1, 30))
def test_locate_matches_brute_force(n, frac, direction, per):
    rows = make_rows(n, direction, seed=n)
    lo, hi = min(r.barrier for r in rows), max(r.barrier for r in rows)
    target = lo + frac * (hi - lo)
    f = KnockoutFinder(ListRowSource(rows, rows_per_position=per, rows_in_view=per + 3), direction)
    assert f.locate(target) == brute_first_safe(rows, direction, target)


def test_find_picks_nearest_safe_certificate_within_rules():
    rows = make_rows(520, 1)
    target = 14000.0
    res = KnockoutFinder(ListRowSource(rows), 1).find(target, index_price=15000.0)
    c = res.certificate
    assert c is not None and c.barrier <= target
    # nearest: the row before it is on the unsafe side
    assert rows[c.index - 1].barrier > target
    assert c.price >= 2.0 and c.leverage <= 45


def test_leverage_cap_is_relaxed_in_steps():
    # near the index every certificate has leverage > 45; within the scan window the lowest is ~55
    rows = make_rows(520, 1)
    rules = FinderRules(scan_rows=3)
    target = 14770.0          # ~230 points away: leverage about 60
    res = KnockoutFinder(ListRowSource(rows), 1, rules).find(target, 15000.0)
    assert res.certificate is not None
    assert 45 < res.leverage_cap <= 70
    assert res.certificate.leverage <= res.leverage_cap
    assert res.skipped["leverage"] > 0
    # strict rules with no relaxation must move the target further instead
    strict = FinderRules(scan_rows=3, leverage_cap_max=45)
    res2 = KnockoutFinder(ListRowSource(rows), 1, strict).find(target, 15000.0)
    assert res2.moves > 0 and res2.certificate.leverage <= 45


def test_illiquid_rows_are_skipped():
    rows = make_rows(520, 1, illiquid={100})
    target = rows[100].barrier
    res = KnockoutFinder(ListRowSource(rows), 1).find(target, 15000.0)
    assert res.certificate.index != 100
    assert res.skipped["illiquid"] >= 1


def test_price_too_low_moves_target_and_resumes_from_last_position():
    # every certificate near the target has ratio 0.001: price < 2.00 -> move 10 points, resume
    rows = make_rows(520, 1)
    cheap = [Certificate(r.index, r.isin, r.barrier, round(r.price / 10, 2), r.leverage)
             if 150 <= r.index < 200 else r for r in rows]
    src = ListRowSource(cheap)
    f = KnockoutFinder(src, 1, FinderRules(scan_rows=3))
    target = cheap[150].barrier
    res = f.find(target, 15000.0)
    assert res.moves > 0
    assert res.target == pytest.approx(target - 10 * res.moves)
    assert res.certificate.index >= 200 and res.certificate.price >= 2.0
    # resuming: far fewer steps than a fresh search per move would need
    assert res.steps < res.moves * math.ceil(math.log2(src.n_positions()))


def test_finder_rejects_barrier_on_wrong_side():
    f = KnockoutFinder(ListRowSource(make_rows(50, 1)), 1)
    with pytest.raises(ValueError, match="below the index"):
        f.find(15100.0, index_price=15000.0)
    with pytest.raises(ValueError, match="direction"):
        KnockoutFinder(ListRowSource([]), 0)


def test_nothing_acceptable_returns_none():
    rows = [Certificate(i, f"X{i}", 15000 - 10 * i, 0.5, 30.0) for i in range(40)]
    res = KnockoutFinder(ListRowSource(rows), 1, FinderRules(max_moves=5)).find(14900, 15000)
    assert res.certificate is None and res.skipped["price"] > 0


@pytest.mark.parametrize("text,value", [("15.234,50", 15234.5), ("2,34 €", 2.34), ("−1.234,00", -1234.0),
                                        ("45,2x", 45.2), ("0,05", 0.05), ("1.000.000", 1e6)])
def test_parse_german_numbers(text, value):
    assert parse_number(text, "de") == pytest.approx(value)


def test_parse_english_and_errors():
    assert parse_number("1,234.56", "en") == pytest.approx(1234.56)
    with pytest.raises(ValueError, match="tr.price.*'abc'"):
        parse_number("abc", "de", field="tr.price")
    with pytest.raises(ValueError, match="locale"):
        parse_number("1", "fr")


@given(st.floats(-1e7, 1e7, allow_nan=False))
def test_format_parse_roundtrip(x):
    assert parse_number(format_number(x, 2, "de"), "de") == pytest.approx(round(x, 2), abs=1e-6)
    assert parse_number(format_number(x, 2, "en"), "en") == pytest.approx(round(x, 2), abs=1e-6)
