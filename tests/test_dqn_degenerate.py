"""Degenerate DQN models (constant validation outputs) are reported and refused; holdout-constant ones flagged."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mltrade.models.dqn.inference import constant_outputs
from mltrade.models.registry import ModelRegistry


def _frame(direction, trade=None, valid=None):
    d = np.asarray(direction)
    return pd.DataFrame({"direction": d, "trade_direction": d if trade is None else np.asarray(trade),
                         "valid": np.ones(len(d), bool) if valid is None else np.asarray(valid)},
                        index=pd.bdate_range("2015-01-01", periods=len(d)))


def test_constant_outputs_names_what_is_constant():
    assert constant_outputs(_frame([1, -1, 0, 1]), "day", "validation") == ""
    assert constant_outputs(_frame([1, 1, 1]), "day", "validation") == \
        "validation: the day ensemble votes long on all 3 sessions"
    assert constant_outputs(_frame([-1, -1]), "night", "holdout") == \
        "holdout: the night ensemble votes short on all 2 sessions"
    assert constant_outputs(_frame([0, 0, 0, 0]), "day", "validation") == \
        "validation: the day ensemble votes no trade (or ties) on all 4 sessions"
    # the vote varies but the gates let nothing through
    assert constant_outputs(_frame([1, -1, 1], trade=[0, 0, 0]), "day", "validation") == \
        "validation: the day ensemble never trades: the gates refuse all 3 voted trades on 3 sessions"
    # rows without complete observations do not count; a gated-away session is not constant output
    assert constant_outputs(_frame([0, 1, 1], valid=[False, True, True]), "day", "validation").endswith(
        "votes long on all 2 sessions")
    assert constant_outputs(_frame([1, 1, -1], trade=[1, 0, -1]), "day", "validation") == ""
    assert "no session with complete observations" in constant_outputs(
        _frame([1, 1], valid=[False, False]), "day", "validation")


@pytest.mark.slow
def test_cli_reports_and_registry_refuses_a_degenerate_model(tmp_path, capsys):
    """A drawdown gate that blocks every session (limit far above any return) leaves no validation trade."""
    from mltrade.cli import main

    cfg = tmp_path / "dqn.toml"
    cfg.write_text(
        "[dqn]\nstart = \"2012-01-01\"\nend = \"2013-12-31\"\ntrain_days = 250\nval_days = 100\ntest_days = 80\n"
        "embargo = 2\ncandidates = 2\nepisode_length = 100\ndrawdown_limit = 1e9\n"
        f"registry = \"{tmp_path / 'models'}\"\n")
    assert main(["train", "dqn", "--config", str(cfg), "--agents", "2", "--steps", "200", "--sessions", "day",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "DEGENERATE model (constant validation outputs): validation: the day ensemble never trades" in out
    assert "NOT kept (the registry refuses degenerate models)" in out
    assert "day ensemble: validation 2013-" in out and "out-of-sample" in out
    reg = ModelRegistry(tmp_path / "models")
    assert reg.path("dqn") is None
    h = reg.history("dqn")[-1]
    assert h["degenerate"] and not h["kept"] and h["refused"].startswith("degenerate: validation: the day")
    assert pd.Timestamp(h["selection_range"][1]) < pd.Timestamp(h["holdout_range"][0])


def test_registry_metadata_keys_of_a_kept_bundle(tmp_path):
    """save_bundle writes the degeneracy keys into each session's settings.json (read by the strategy)."""
    from mltrade.models.dqn.agent import DQNAgent, build_q_network
    from mltrade.models.dqn.ensemble import Ensemble
    from mltrade.models.dqn.gate import ConfidenceGate
    from mltrade.models.dqn.linear import Scaler
    from mltrade.models.dqn.memory import SequentialMemory
    from mltrade.models.dqn.bundle import save_bundle
    from mltrade.models.dqn.fold import FoldResult

    agents = []
    for seed in (1, 2):                      # a real (tiny, untrained) ensemble of two agents
        a = DQNAgent(build_q_network((3,), 19, (4,), seed=seed), 19, SequentialMemory(10), seed=seed,
                     target_model_update=0.01)
        a.compile()
        agents.append(a)
    metrics = {"fold": {"val": ["2014-01-02", "2014-12-31"], "test": ["2015-01-09", "2015-06-30"]},
               "validation": {"total_return": 0.1}, "degenerate_reason": "",
               "holdout_constant_reason": "holdout: the day ensemble votes long on all 120 sessions"}
    r = FoldResult(Ensemble("day", agents, [], Scaler(np.zeros(3), np.ones(3)), ["a", "b", "c"]),
                   ConfidenceGate([], np.zeros(0), np.zeros(0), np.zeros(0), 0.0, 0.0), metrics,
                   pd.DataFrame(index=pd.bdate_range("2015-01-01", periods=3)))
    save_bundle(tmp_path, {"day": r}, {"fee": 1.0}, pd.DataFrame())
    s = json.loads((tmp_path / "day" / "settings.json").read_text())
    assert s["degenerate"] is False and s["degenerate_reason"] == ""
    assert s["holdout_constant"] is True and s["holdout_constant_reason"].endswith("votes long on all 120 sessions")
    assert (s["val_start"], s["val_end"], s["test_start"]) == ("2014-01-02", "2014-12-31", "2015-01-09")
    assert s["selection_metric"] == "val_return" and s["val_return"] == 0.1
