"""Issue 19 point 3: PBO on the NCP search and the DQN candidate selection (real Optuna studies, real
validation scoring), and 'not computable, because ...' where a search is too small."""
import numpy as np
import pytest

from mltrade.pbo import pbo, pbo_or_reason


def test_pbo_or_reason_says_why_and_never_raises():
    one = pbo_or_reason([np.ones(50)])
    assert one["pbo"] is None and "1 trial" in one["reason"] and "not computable" in one["words"]
    short = pbo_or_reason([np.zeros(5), np.ones(5)])
    assert short["pbo"] is None and "5 sessions" in short["reason"]
    ragged = pbo_or_reason([np.zeros(30), np.ones(20)])
    assert ragged["pbo"] is None and "not aligned" in ragged["reason"]
    assert pbo_or_reason([])["pbo"] is None
    rng = np.random.default_rng(3)
    cols = [rng.standard_normal(60) * 0.01 for _ in range(4)]
    assert pbo_or_reason(cols)["pbo"] == pbo(np.column_stack(cols))["pbo"]


def _study(cols, states=None):
    import optuna
    from mltrade.models.ncp.search import RETURNS_ATTR, encode_returns
    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for k, c in enumerate(cols):
        state = (states or {}).get(k, optuna.trial.TrialState.COMPLETE)
        study.add_trial(optuna.trial.create_trial(
            params={"x": k / len(cols)}, distributions=dist, state=state,
            value=float(np.sum(c)) if state == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values={0: 0.0}, user_attrs={RETURNS_ATTR: encode_returns(c)}))
    return study


def test_ncp_search_pbo_over_complete_trials_null_and_planted():
    import optuna
    from mltrade.models.ncp.search import search_pbo
    rng = np.random.default_rng(4)
    r = rng.standard_normal((300, 40)) * 0.01
    null = search_pbo(_study(list(r.T)))
    assert null["trials"] == 40 and null["sessions"] == 300 and null["complete_trials"] == 40
    assert null["pbo"] == pytest.approx(pbo(r)["pbo"])
    r[:, 7] += 0.004
    planted = search_pbo(_study(list(r.T)))
    assert planted["pbo"] < 0.05 and planted["pbo"] < null["pbo"]
    # a pruned trial (fewer sessions) is left out; one complete trial alone is not computable
    pruned = {1: optuna.trial.TrialState.PRUNED}
    lone = search_pbo(_study([r[:, 0], r[:150, 1]], pruned))
    assert lone["pbo"] is None and "1 trial" in lone["reason"] and lone["complete_trials"] == 1


def test_dqn_selection_pbo_planted_candidate_and_too_few():
    from mltrade.commands.train_dqn import selection_pbo_line
    from mltrade.models.dqn.pipeline import selection_pbo
    rng = np.random.default_rng(5)
    cands = [rng.standard_normal(100) * 0.01 for _ in range(12)]
    null = selection_pbo(cands)
    cands[3] = cands[3] + 0.01
    res = selection_pbo(cands)
    assert res["trials"] == 12 and res["sessions"] == 100 and res["pbo"] < 0.05 < null["pbo"]
    one = selection_pbo(cands[:1])
    assert one["pbo"] is None and "1 trial" in one["reason"]
    line = selection_pbo_line("day", [dict(res, fold=0), dict(one, fold=1)])
    assert f"fold 0: {res['pbo']:.2f}" in line and "fold 1: not computable (1 trial" in line
