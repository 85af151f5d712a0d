"""One fold of DQN walk-forward training for one session kind, in named steps: the candidates' scaler and
specs (:func:`fold_candidates`), their training (:func:`train_candidates`), the choice of the best on
validation (:func:`select_ensemble`), the confidence gate (:func:`fit_gate`) and the figures on validation
and the holdout (:func:`fold_metrics`); :func:`train_session_fold` runs them in order. Every choice reads
validation only; the holdout is evaluated once and reported."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mltrade.models.baselines import TradeCosts
from mltrade.models.dqn.data import costs_from, ensemble_config_from
from mltrade.models.dqn.deviation import DeviationModel
from mltrade.models.dqn.ensemble import Ensemble, agent_specs, fit_regressor, train_agent
from mltrade.models.dqn.gate import ConfidenceGate
from mltrade.models.dqn.inference import constant_outputs, decide
from mltrade.models.dqn.linear import Scaler
from mltrade.models.dqn.simulation import (IntradaySim, index_session_returns, session_baselines,
                                           session_barriers, session_result, session_score)
from mltrade.models.walkforward import Fold


@dataclass
class FoldResult:
    """One session's ensemble, gate and figures on one fold."""

    ensemble: Ensemble
    gate: ConfidenceGate
    metrics: dict
    decisions: pd.DataFrame
    deviation_model: Optional[DeviationModel] = None


def fold_candidates(cfg: dict, obs: pd.DataFrame, fold: Fold) -> tuple:
    """``(scaler, scaled observations, candidate specs)`` of one fold: the scaler is fitted on the training
    range, each spec holds a candidate agent's seed, shape, ridge penalty and data window (row positions)."""
    ecfg = ensemble_config_from(cfg)
    train_start = fold.train_start
    if cfg.get("observations") == "original_deviation":
        # the first rows of the range are the deviation model's burn-in (NaN): agents' windows start after it
        finite = np.flatnonzero(np.isfinite(obs.iloc[fold.train_start:fold.train_stop].to_numpy(float)).all(1))
        if len(finite) < 20:
            raise ValueError(f"fold {fold.index}: only {len(finite)} training sessions with complete "
                             "'original_deviation' observations; lower dqn.deviation_burn_in or raise train_days")
        train_start = fold.train_start + int(finite[0])
    train_rows = np.arange(train_start, fold.train_stop)
    x_train = obs.iloc[train_rows].to_numpy(float)
    scaler = Scaler.fit(x_train[np.isfinite(x_train).all(1)])
    scaled = pd.DataFrame(scaler.transform(obs.to_numpy(float)), index=obs.index, columns=obs.columns)
    scaled[~np.isfinite(obs.to_numpy(float)).all(1)] = np.nan
    specs = agent_specs(ecfg, max(ecfg.candidates, ecfg.agents), len(train_rows))
    for s in specs:
        s["window"] = [s["window"][0] + train_start, s["window"][1] + train_start]
    return scaler, scaled, specs


def train_candidate(cfg: dict, scaled: pd.DataFrame, daily: pd.DataFrame, session: str, spec: dict,
                    sim: Optional[IntradaySim] = None) -> Any:
    """Train one candidate agent of ``spec`` (from :func:`fold_candidates`) for ``session``."""
    lb, sb = cfg.get("long_barriers"), cfg.get("short_barriers")
    kw = {} if lb is None else {"long_barriers": lb, "short_barriers": sb}
    env_kw = {} if sim is None else {"intraday": sim.intraday, "n_candles": sim.n_candles}
    return train_agent(spec, ensemble_config_from(cfg), scaled, daily, session, costs_from(cfg),
                       progress=False, **kw, **env_kw)


#: ``(fold index, session, candidate index, spec) -> trained agent``: where the candidates come from
#: (default: trained here; :mod:`mltrade.models.dqn.distributed`: trained by workers of a shared study)
AgentSource = Callable[[int, str, int, dict], Any]


def train_session_fold(cfg: dict, daily: pd.DataFrame, obs: pd.DataFrame, fold: Fold, session: str,
                       progress: bool = True, log: Callable[[str], None] = print,
                       sim: Optional[IntradaySim] = None,
                       agent_source: Optional[AgentSource] = None) -> FoldResult:
    """Train, select, gate-fit and test one session's ensemble on one fold (``agent_source``: where the
    candidate agents come from; default: trained here)."""
    costs = costs_from(cfg)
    scaler, scaled, specs = fold_candidates(cfg, obs, fold)
    agents, regs = train_candidates(cfg, daily, scaled, fold, session, specs, progress, sim, agent_source)
    ens, scores, cand_returns = select_ensemble(cfg, daily, obs, fold, session, scaler, scaled, specs, agents,
                                                regs, costs, sim)
    settings = {k: cfg[k] for k in ("perf_window", "drawdown_window", "drawdown_limit") if k in cfg}
    gate, gate_info, vdec = fit_gate(cfg, ens, daily.iloc[fold.val], obs.iloc[fold.val], costs, settings,
                                     session, sim, log, fold.index)
    metrics, tdec = fold_metrics(cfg, ens, gate, gate_info, vdec, scores, cand_returns, daily, obs, fold,
                                 session, costs, settings, sim)
    return FoldResult(ens, gate, metrics, tdec)


def train_candidates(cfg: dict, daily: pd.DataFrame, scaled: pd.DataFrame, fold: Fold, session: str,
                     specs: List[dict], progress: bool, sim: Optional[IntradaySim],
                     agent_source: Optional[AgentSource]) -> tuple:
    """``(agents, regressors)``: a trained agent (here, or from ``agent_source``) and an OHLC regressor for
    every candidate spec of ``fold``."""
    agents, regs = [], []
    bar = tqdm(specs, desc=f"fold {fold.index} {session} agents", disable=not progress)
    for i, s in enumerate(bar):
        agents.append(train_candidate(cfg, scaled, daily, session, s, sim) if agent_source is None
                      else agent_source(fold.index, session, i, s))
        regs.append(fit_regressor(s, scaled, daily))
    return agents, regs


def select_ensemble(cfg: dict, daily: pd.DataFrame, obs: pd.DataFrame, fold: Fold, session: str,
                    scaler: Scaler, scaled: pd.DataFrame, specs: List[dict], agents: list, regs: list,
                    costs: TradeCosts, sim: Optional[IntradaySim]) -> tuple:
    """``(ensemble, candidates' validation returns, candidates' per-session validation returns)``: the best
    ``agents`` of the candidates by their individual validation return, as one ensemble; each spec is marked
    with its ``val_return`` and whether it was ``kept``."""
    ecfg = ensemble_config_from(cfg)
    lb, sb = cfg.get("long_barriers"), cfg.get("short_barriers")
    kw = {} if lb is None else {"long_barriers": lb, "short_barriers": sb}
    val_daily = daily.iloc[fold.val]
    ident = Scaler(np.zeros(len(obs.columns)), np.ones(len(obs.columns)))
    # individual validation scores -> keep the best `agents`
    tmp = Ensemble(session, agents, regs, ident, list(obs.columns), specs=specs, **kw)
    val_obs = scaled.iloc[fold.val]
    ok = np.isfinite(val_obs.to_numpy(float)).all(1)
    qv = np.zeros((len(agents), len(val_obs), len(tmp.directions)), np.float32)
    qv[:, ok] = tmp.q_values(val_obs[ok])
    acts = np.argmax(qv, axis=2)
    scores, cand_returns = [], []
    for i in range(len(agents)):
        d = np.where(ok, tmp.directions[acts[i]], 0)
        summ, csim = session_result(val_daily, d, tmp.distances[acts[i]], costs, session, sim)
        scores.append(summ["total_return"])
        cand_returns.append(csim["ret"].to_numpy(float))
    order = np.argsort(-np.asarray(scores), kind="stable")[:ecfg.agents]
    keep = sorted(order.tolist())
    for i, s in enumerate(specs):
        s["val_return"] = float(scores[i])
        s["kept"] = i in keep
    ens = Ensemble(session, [agents[i] for i in keep], [regs[i] for i in keep], scaler, list(obs.columns),
                   specs=[specs[i] for i in keep], obs_kind=cfg.get("observations", "original"), **kw)
    return ens, scores, cand_returns


def fit_gate(cfg: dict, ens: Ensemble, val_daily: pd.DataFrame, val_obs: pd.DataFrame, costs: TradeCosts,
             settings: dict, session: str, sim: Optional[IntradaySim], log: Callable[[str], None],
             fold_index: int) -> tuple:
    """``(gate, gate info, validation decisions without gates)``: the confidence gate fitted on the first
    ``gate_fit_frac`` of validation and its threshold tuned on the rest (disabled, threshold 0, with fewer
    than 10 validation trades to fit it)."""
    no_gate = ConfidenceGate([], np.zeros(0), np.zeros(0), np.zeros(0), 0.0, 0.0)
    vdec, feats = decide(ens, None, val_daily, val_obs, costs, settings, return_features=True, sim=sim)
    traded = (vdec["direction"] != 0).to_numpy() & np.isfinite(vdec["shadow_return"].to_numpy())
    n_fit = int(len(vdec) * float(cfg.get("gate_fit_frac", 0.5)))
    fit_mask = traded.copy()
    fit_mask[n_fit:] = False
    gate = no_gate
    gate_info: Dict[str, Any] = {"fitted": False}
    if fit_mask.sum() >= 10:
        won = (vdec["shadow_return"].to_numpy()[fit_mask] > 0).astype(int)
        gate = ConfidenceGate.fit(feats[fit_mask], won,
                                  C=float(cfg.get("gate_c", 0.5)), seed=int(cfg.get("seed", 0)))
        tune_daily = val_daily.iloc[n_fit:]
        p = gate.proba(feats)[n_fit:]
        dirs = vdec["direction"].to_numpy()[n_fit:]
        dist = vdec["distance"].to_numpy()[n_fit:]
        blocked = vdec["drawdown_block"].to_numpy()[n_fit:]

        def score(mask: np.ndarray) -> float:
            return session_score(tune_daily, np.where(mask & ~blocked, dirs, 0), dist, costs, session, sim)
        gate_info = {"fitted": True, **gate.choose_threshold(
            p, score, int(cfg.get("gate_min_trades", 5)), eligible=dirs != 0)}
    else:
        log(f"fold {fold_index} {session}: only {int(fit_mask.sum())} validation trades to fit the gate; "
            "gate disabled (threshold 0)")
    return gate, gate_info, vdec


def validation_figures(cfg: dict, ens: Ensemble, use_gate: Optional[ConfidenceGate], val_daily: pd.DataFrame,
                       val_obs: pd.DataFrame, costs: TradeCosts, settings: dict, session: str,
                       sim: Optional[IntradaySim]) -> dict:
    """The model as it trades (gates included) on validation: its decisions (``vfinal``), return, degeneracy,
    barriers and baselines (the registry's selection metric and the degeneracy check; nothing computed from
    here on feeds back into a choice)."""
    vfinal = decide(ens, use_gate, val_daily, val_obs, costs, settings, sim=sim)
    validation, _ = session_result(val_daily, vfinal["trade_direction"].to_numpy(), vfinal["distance"].to_numpy(),
                                   costs, session, sim)
    barrier = session_barriers(vfinal, float(cfg.get("baseline_distance", 0.08)))
    val_long, _ = session_result(val_daily, np.ones(len(val_daily)), barrier, costs, session, sim)
    val_base = {"always_long": val_long, "no_trade": {"total_return": 0.0, "trades": 0}}
    return {"vfinal": vfinal, "validation": validation, "degenerate": constant_outputs(vfinal, session, "validation"),
            "barrier": barrier, "baselines": val_base,
            "below": below_baselines(validation["total_return"], val_base, session)}


def fold_metrics(cfg: dict, ens: Ensemble, gate: ConfidenceGate, gate_info: dict, vdec: pd.DataFrame,
                 scores: List[float], cand_returns: List[np.ndarray], daily: pd.DataFrame, obs: pd.DataFrame,
                 fold: Fold, session: str, costs: TradeCosts, settings: dict,
                 sim: Optional[IntradaySim]) -> tuple:
    """``(metrics, holdout decisions)`` of the fold's ensemble: validation (:func:`validation_figures`), then the
    test range (the holdout), evaluated once, reported, never used to choose, beside its baselines."""
    use_gate = gate if gate.columns else None
    val = validation_figures(cfg, ens, use_gate, daily.iloc[fold.val], obs.iloc[fold.val], costs, settings,
                             session, sim)
    test_daily = daily.iloc[fold.test]
    tdec = decide(ens, use_gate, test_daily, obs.iloc[fold.test], costs, settings, sim=sim)
    gated, gated_sim = session_result(test_daily, tdec["trade_direction"].to_numpy(), tdec["distance"].to_numpy(),
                                      costs, session, sim)
    ungated, _ = session_result(test_daily, tdec["direction"].to_numpy(), tdec["distance"].to_numpy(),
                                costs, session, sim)
    val_barrier, test_barrier = val["barrier"], session_barriers(tdec, float(cfg.get("baseline_distance", 0.08)))
    base = session_baselines(test_daily, test_barrier, costs, int(cfg.get("baseline_draws", 50)),
                             int(cfg.get("seed", 0)), session, sim)
    metrics = {"fold": fold.describe(daily.index), "session": session, "test": gated,
               "test_ungated": ungated, "baselines": base, "gate": gate_info,
               "validation": val["validation"], "validation_baselines": val["baselines"],
               "degenerate_reason": val["degenerate"], "below_baselines_reason": val["below"],
               "barrier": {"rule": "the ensemble's barrier of each session (the vote's distance where it "
                                   "trades, else the agents' median), gaps: the range's median",
                           "validation_median": float(np.median(val_barrier)),
                           "test_median": float(np.median(test_barrier))},
               "holdout_constant_reason": constant_outputs(tdec, session, "holdout"),
               "validation_agent_returns": [float(s) for s in scores],
               # PBO of choosing `agents` of the candidates by validation return (candidates' session returns)
               "selection_pbo": selection_pbo(cand_returns),
               "validation_ensemble": session_score(daily.iloc[fold.val], vdec["direction"].to_numpy(),
                                                    vdec["distance"].to_numpy(), costs, session, sim),
               "vote_distribution": {"long": int((tdec["direction"] > 0).sum()),
                                     "short": int((tdec["direction"] < 0).sum()),
                                     "none": int((tdec["direction"] == 0).sum())},
               "mean_agreement": float(tdec["agreement"].mean())}
    metrics["test_session_returns"] = [float(x) for x in gated_sim["ret"].to_numpy(float)]
    metrics["buy_and_hold_session_returns"] = [float(x) for x in index_session_returns(test_daily)]
    _, long_sim = session_result(test_daily, np.ones(len(test_daily)), test_barrier, costs, session, sim)
    metrics["always_long_session_returns"] = [float(x) for x in long_sim["ret"].to_numpy(float)]
    if cfg.get("ladder", True):
        metrics["ladder"] = fold_ladder(cfg, ens, daily, obs, fold, session, val_barrier, test_barrier,
                                        val["vfinal"], tdec, costs, sim)
    return metrics, tdec


def selection_pbo(candidate_returns: List[np.ndarray]) -> dict:
    """Probability of Backtest Overfitting of the candidate selection on validation: CSCV over the candidates'
    per-session validation returns (T × candidates, :func:`mltrade.pbo.pbo_or_reason`; not computable with
    fewer than 2 candidates or 8 sessions, with the reason)."""
    from mltrade.pbo import pbo_or_reason
    return pbo_or_reason([np.nan_to_num(np.asarray(r, float)) for r in candidate_returns])


def below_baselines(value: float, baselines: Dict[str, dict], session: str) -> str:
    """Why a validation return ``value`` is no better than its own always-long and no-trade baselines, or
    "" (the registry keeps such a model only with this said in the CLI, ``metrics.json`` and the report)."""
    worse = [f"{k.replace('_', '-')} {v['total_return']:+.2%}" for k, v in baselines.items()
             if value < float(v["total_return"])]
    if not worse:
        return ""
    return f"validation: the {session} ensemble's {value:+.2%} is below " + " and ".join(worse)


def fold_ladder(cfg: dict, ens: Ensemble, daily: pd.DataFrame, obs: pd.DataFrame, fold: Fold, session: str,
                val_barrier: np.ndarray, test_barrier: np.ndarray, vfinal: pd.DataFrame, tdec: pd.DataFrame,
                costs: TradeCosts, sim: Optional[IntradaySim] = None) -> dict:
    """The learner ladder of one fold's ``session`` ensemble (:func:`mltrade.models.dqn.ladder.session_ladder`):
    the ensemble's barriers on validation and test as its baselines', on the training rows its vote's."""
    from mltrade.models.dqn.ladder import session_ladder

    lo, hi = fold.train_start, fold.test_stop
    span = obs.iloc[lo:hi]
    ok = np.isfinite(span[ens.columns].to_numpy(float)).all(axis=1)
    q = np.zeros((len(ens), len(span), len(ens.directions)), np.float32)
    if ok.any():
        q[:, ok] = ens.q_values(span[ok])
    votes = ens.vote(q)
    b = np.where(ok, votes.barrier, np.nan)
    barrier = session_barriers(pd.DataFrame({"session_distance": b}), float(cfg.get("baseline_distance", 0.08)))
    barrier[fold.val_start - lo:fold.val_stop - lo] = val_barrier
    barrier[fold.test_start - lo:fold.test_stop - lo] = test_barrier

    def result(d: pd.DataFrame, direction: np.ndarray, distance: np.ndarray, c: TradeCosts) -> tuple:
        return session_result(d, direction, distance, c, session, sim)
    return session_ladder(obs[ens.columns], daily, fold, barrier, vfinal, tdec, costs, result,
                          seed=int(cfg.get("seed", 0)), name=f"{session} ensemble")

