"""Issue 19 point 3: the Probability of Backtest Overfitting (CSCV) of a search."""
import itertools

import numpy as np
import pytest

from mltrade.pbo import pbo


def test_pbo_of_a_null_world_is_a_coin_flip_and_a_planted_winner_is_not_overfit():
    """Twelve null searches of 200 unskilled trials over 1,000 sessions: the chosen trial lands
    at or below the median out of sample about half the time (one search's PBO varies a lot; the
    mean of twelve has a standard error near 0.04). One planted winner (+0.3 % a session) gives ~0."""
    rng = np.random.default_rng(0)
    null, planted = [], []
    for _ in range(12):
        r = rng.standard_normal((1000, 200)) * 0.01
        null.append(pbo(r, splits=10)["pbo"])
        r[:, 57] += 0.003
        planted.append(pbo(r, splits=10)["pbo"])
    assert 0.4 <= np.mean(null) <= 0.65, null
    assert max(planted) <= 0.05, planted


def test_pbo_above_a_half_when_the_in_sample_best_reverts():
    """Trials whose returns in the first and second half of the sessions are opposite: whatever
    wins in sample loses out of sample."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 50)) * 0.01 + rng.normal(0, 0.002, 50)
    r = np.vstack([a, -a[::-1] + rng.standard_normal((400, 50)) * 0.001])
    assert pbo(r, splits=2)["pbo"] > 0.9


def test_pbo_matches_a_hand_computed_cscv():
    """Four blocks, six splits, three trials, done by hand with numpy."""
    rng = np.random.default_rng(2)
    r = rng.standard_normal((40, 3)) * 0.01 + np.array([0.001, 0.0, -0.001])
    res = pbo(r, splits=4)
    blocks = np.array_split(np.arange(40), 4)
    lam = []
    for ins in itertools.combinations(range(4), 2):
        i = np.concatenate([blocks[k] for k in ins])
        o = np.concatenate([blocks[k] for k in range(4) if k not in ins])
        sr_i = r[i].mean(0) / r[i].std(0, ddof=1)
        sr_o = r[o].mean(0) / r[o].std(0, ddof=1)
        best = int(np.argmax(sr_i))
        rank = 1 + np.sum(sr_o < sr_o[best])
        w = rank / 4
        lam.append(np.log(w / (1 - w)))
    assert res["combinations"] == 6 and res["splits"] == 4
    assert res["pbo"] == pytest.approx(np.mean(np.array(lam) <= 0))
    assert res["logit_quantiles"]["50"] == pytest.approx(np.median(lam))
    assert sum(res["logit_histogram"]["counts"]) == 6
    assert res["words"].startswith("probability that the chosen trial is below the median out of sample: ")


def test_pbo_refuses_bad_input_and_says_when_it_cannot_tell():
    with pytest.raises(ValueError, match="T×N"):
        pbo(np.zeros(10))
    with pytest.raises(ValueError, match="even number"):
        pbo(np.zeros((40, 3)), splits=5)
    with pytest.raises(ValueError, match="NaN"):
        pbo(np.full((40, 3), np.nan))
    assert pbo(np.zeros((40, 1))) is None
    assert pbo(np.zeros((40, 3)))["pbo"] == 1.0      # all trials equal: the chosen is the median
