"""Walk-forward training of the DQN ensembles and the inference used by the backtrader strategy.

Per fold and session: agents are trained on the training range, the best
``agents`` of ``candidates`` are selected on the validation range, the gate is
fitted on the first part of validation and its threshold tuned on the rest, and
the result is evaluated once on the test range (the holdout) beside the
baselines. Every choice reads validation only. The last fold's ensembles are
offered to the model registry ranked by their validation return (``val_return``,
mean over sessions) with the validation and holdout date ranges; the holdout
figures (``oos_return*``) are reported, never used to choose. A bundle whose
validation outputs are constant (:func:`constant_outputs`) is ``degenerate`` and
refused by the registry; one that turns constant on the holdout is flagged
``holdout_constant`` (``metrics.json`` and each session's ``settings.json``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mltrade.models.baselines import (REASONS, TradeCosts, baseline_table, buy_and_hold, decisions_result,
                                      simulate_budget, summarize, trade_outcomes)
from mltrade.models.dqn.ensemble import (DeviationStore, Ensemble, EnsembleConfig, agent_specs,
                                         deviation_stats, fit_regressor, train_agent)
from mltrade.models.dqn.deviation import DeviationModel, walk_forward_deviation_observations
from mltrade.models.dqn.gate import ConfidenceGate, drawdown_block, gate_features
from mltrade.models.dqn.linear import Scaler
from mltrade.models.dqn.observations import OBSERVATION_SETS, build_observations
from mltrade.models.registry import ModelRegistry, read_json, write_json_atomic
from mltrade.models.walkforward import Fold, walk_forward_folds

COST_KEYS = ("ratio", "spread", "fx", "fee", "stop", "barrier_step", "budget", "floor", "max_stake",
             "barrier_reference")


def costs_from(cfg: dict) -> TradeCosts:
    """TradeCosts from a ``[dqn]`` section."""
    return TradeCosts(**{k: cfg[k] for k in COST_KEYS if k in cfg})


def ensemble_config_from(cfg: dict) -> EnsembleConfig:
    """EnsembleConfig from the keys of a ``[dqn]`` section that it knows."""
    fields = EnsembleConfig.__dataclass_fields__
    return EnsembleConfig(**{k: v for k, v in cfg.items() if k in fields})


def load_training_daily(cfg: dict) -> pd.DataFrame:
    """Daily bars named by ``[dqn] data`` cut to start/end."""
    if cfg.get("data", "sample") == "sample":
        from mltrade.feeds.sample import load_daily
        daily = load_daily()
    else:
        from mltrade.feeds.loader import load_csv
        from mltrade.models.dqn.observations import daily_from_intraday
        df = load_csv(cfg["data"])
        daily = df if df.index.tz is None else daily_from_intraday(df)
    start, end = cfg.get("start") or None, cfg.get("end") or None
    return daily.loc[start:end]


def load_training_intraday(cfg: dict) -> pd.DataFrame:
    """Intraday bars named by ``[dqn] data`` (``sample``: the synthetic 5-minute sample) cut to start/end."""
    start, end = cfg.get("start") or None, cfg.get("end") or None
    if cfg.get("data", "sample") == "sample":
        from mltrade.feeds.sample import sample_intraday
        return sample_intraday(start, end)
    from mltrade.feeds.loader import load_csv
    df = load_csv(cfg["data"])
    if df.index.tz is None:
        raise ValueError(f"dqn.data: mode 'intraday' needs intraday bars with time-zone timestamps; "
                         f"{cfg['data']} holds daily bars")
    if start:
        df = df[df.index >= pd.Timestamp(start).tz_localize(df.index.tz)]
    if end:
        df = df[df.index < pd.Timestamp(end).tz_localize(df.index.tz) + pd.Timedelta(days=1)]
    return df


# ------------------------------------------------------------------ intraday mode
class IntradaySim:
    """Session simulation of ``[dqn] mode = "intraday"``: decide after ``n_candles`` bars, buy at the open of
    the next bar, exit at the session close, the stop or the knock-out (as :class:`KnockoutEnv` intraday)."""

    def __init__(self, intraday: pd.DataFrame, n_candles: int) -> None:
        from mltrade.models.dqn.observations import daily_from_intraday

        if n_candles < 1:
            raise ValueError(f"dqn.n_candles: expected >= 1, got {n_candles}")
        self.intraday = intraday
        self.n_candles = int(n_candles)
        dates = intraday.index.normalize()
        if getattr(dates, "tz", None) is not None:
            dates = dates.tz_localize(None)
        self.paths: Dict[pd.Timestamp, tuple] = {}
        for day, g in intraday.groupby(dates, sort=True):
            if len(g) > self.n_candles:
                path = g.iloc[self.n_candles:]
                self.paths[pd.Timestamp(day)] = tuple(path[k].to_numpy(float)
                                                      for k in ("open", "high", "low", "close"))
        if not self.paths:
            raise ValueError(f"intraday bars: no session has more than n_candles={n_candles} bars")
        daily = daily_from_intraday(intraday)
        self.daily = daily.loc[daily.index.isin(list(self.paths))]

    def result(self, daily: pd.DataFrame, direction: np.ndarray, distance: np.ndarray,
               costs: TradeCosts) -> tuple:
        """Like :func:`decisions_result` for sessions of ``daily`` traded after the first candles."""
        d, dist = np.asarray(direction, float), np.asarray(distance, float)
        entry, exit_ = np.zeros(len(d)), np.zeros(len(d))
        reason = np.zeros(len(d), dtype=np.int8)
        for t, day in enumerate(daily.index):
            if d[t] == 0 or day not in self.paths:
                continue
            o, h, lo, c = self.paths[day]
            e, x, r = trade_outcomes(d[t:t + 1], dist[t:t + 1], o[0], o, h, lo, c, costs)
            entry[t], exit_[t], reason[t] = e[0], x[0], r[0]
        sim = simulate_budget(entry, exit_, costs)
        sim.index = daily.index
        sim["direction"], sim["distance"], sim["entry"], sim["exit"] = d, dist, entry, exit_
        sim["exit_reason"] = [REASONS[int(x)] for x in reason]
        return summarize(sim, costs), sim


def _result(daily: pd.DataFrame, direction: np.ndarray, distance: np.ndarray, costs: TradeCosts, session: str,
            sim: Optional[IntradaySim] = None) -> tuple:
    if session == "intraday":
        if sim is None:
            raise ValueError("session 'intraday' needs the intraday bars (IntradaySim)")
        return sim.result(daily, direction, distance, costs)
    return decisions_result(daily, direction, distance, costs, session)


def _baselines(daily: pd.DataFrame, distance: float, costs: TradeCosts, draws: int, seed: int, session: str,
               sim: Optional[IntradaySim] = None) -> dict:
    if session != "intraday":
        return baseline_table(daily, distance, costs, draws, seed, session)
    n = len(daily)
    rng = np.random.default_rng(seed)
    totals = [_result(daily, rng.choice([-1, 1], n), np.full(n, distance), costs, session, sim)[0]["total_return"]
              for _ in range(draws)]
    t = np.asarray(totals)
    return {"buy_and_hold": buy_and_hold(daily, costs),
            "always_long": _result(daily, np.ones(n), np.full(n, distance), costs, session, sim)[0],
            "random_direction": {"total_return": float(t.mean()), "median": float(np.median(t)),
                                 "q05": float(np.quantile(t, 0.05)), "q95": float(np.quantile(t, 0.95)),
                                 "draws": int(draws), "sessions": int(n)}}


def intraday_observations_for(daily_obs: pd.DataFrame, sim: IntradaySim) -> pd.DataFrame:
    """Daily observations (known before the session) plus the session's first ``n_candles`` candles."""
    from mltrade.models.dqn.observations import intraday_observations

    first = intraday_observations(sim.intraday, sim.n_candles).reindex(sim.daily.index)
    return pd.concat([daily_obs.reindex(sim.daily.index), first], axis=1)


# ------------------------------------------------------------------------ inference
def decide(ens: Ensemble, gate: Optional[ConfidenceGate], daily: pd.DataFrame, obs: pd.DataFrame,
           costs: TradeCosts, settings: dict, per_row: bool = False, return_features: bool = False,
           sim: Optional[IntradaySim] = None) -> Any:
    """Votes, gate and final decisions for every session of ``daily`` (one batch per agent).

    Returns one row per session: direction / distance of the vote, agreement and
    counts, gate probability, drawdown block, the final ``trade_direction`` and the
    ensemble's predicted OHLC mean/standard error with the z deviations
    (``return_features=True``: also the gate's input frame).
    """
    obs = obs.reindex(daily.index)
    ok = np.isfinite(obs[ens.columns].to_numpy(float)).all(axis=1)
    if ens.session == "night" and len(ok):
        ok[0] = False
    q = np.zeros((len(ens), len(obs), len(ens.directions)), np.float32)
    if ok.any():
        sub = obs[ok]
        q[:, ok] = ens.q_values_per_row(sub) if per_row else ens.q_values(sub)
    v = ens.vote(q)
    v.direction[~ok] = 0
    frame = v.frame(daily.index)
    frame["valid"] = ok
    frame.loc[~ok, "session_distance"] = np.nan
    shadow_sum, shadow = _result(daily, v.direction, v.distance, costs, ens.session, sim)
    opp_sum, opposite = _result(daily, -v.direction, v.distance, costs, ens.session, sim)

    def cert_ret(sim: pd.DataFrame) -> np.ndarray:
        e, x = sim["entry"].to_numpy(float), sim["exit"].to_numpy(float)
        return np.where(e > 0, x / np.where(e > 0, e, 1.0) - 1.0, np.nan)
    frame["shadow_return"] = cert_ret(shadow)
    frame["opposite_return"] = cert_ret(opposite)
    prev_close = daily["close"].shift(1).to_numpy(float)
    pred = np.full((len(ens), len(obs), 4), np.nan)
    if ok.any() and len(ens.regressors) == len(ens):
        pred[:, ok] = ens.predict_ohlc(obs[ok], prev_close[ok])
    actual = daily[["open", "high", "low", "close"]].to_numpy(float)
    if len(ens) >= 2:
        stats = deviation_stats(pred, actual)
        dev = DeviationStore.frame(daily.index, stats)
    else:
        dev = pd.DataFrame(index=daily.index)
    frame = pd.concat([frame, dev], axis=1)
    dev_feat = DeviationStore.next_day_features(dev).fillna(0.0) if len(dev.columns) else None
    feats = gate_features(frame, ens.margins(q), frame["shadow_return"].to_numpy(),
                          frame["opposite_return"].to_numpy(), daily, int(settings.get("perf_window", 10)),
                          dev_feat)
    proba = gate.proba(feats) if gate is not None else np.ones(len(frame))
    frame["gate_proba"] = proba
    frame["gate_pass"] = proba >= (gate.threshold if gate is not None else 0.0)
    frame["drawdown_block"] = drawdown_block(frame["shadow_return"].to_numpy(),
                                             int(settings.get("drawdown_window", 20)),
                                             float(settings.get("drawdown_limit", -1.0)))
    trade = (frame["direction"] != 0) & frame["gate_pass"] & ~frame["drawdown_block"]
    frame["trade_direction"] = np.where(trade, frame["direction"], 0).astype(int)
    return (frame, feats) if return_features else frame


# ------------------------------------------------------------------------ degeneracy
def constant_outputs(decisions: pd.DataFrame, session: str, range_name: str) -> str:
    """Why the ensemble's outputs on ``decisions`` (from :func:`decide`) carry no information, or "".

    Constant means: the vote is the same direction on every session with complete
    observations (always long, always short or always no trade / tie), or the
    gates leave no trade at all.
    """
    valid = decisions["valid"].to_numpy(bool) if "valid" in decisions else np.ones(len(decisions), bool)
    n = int(valid.sum())
    if n == 0:
        return f"{range_name}: the {session} ensemble has no session with complete observations"
    vote = decisions["direction"].to_numpy()[valid]
    if (vote == vote[0]).all():
        what = {1: "votes long", -1: "votes short", 0: "votes no trade (or ties)"}[int(vote[0])]
        return f"{range_name}: the {session} ensemble {what} on all {n} sessions"
    traded = decisions["trade_direction"].to_numpy()[valid]
    if not (traded != 0).any():
        return (f"{range_name}: the {session} ensemble never trades: the gates refuse all "
                f"{int((vote != 0).sum())} voted trades on {n} sessions")
    return ""


# ------------------------------------------------------------------------ training
@dataclass
class FoldResult:
    """One session's ensemble, gate and figures on one fold."""

    ensemble: Ensemble
    gate: ConfidenceGate
    metrics: dict
    decisions: pd.DataFrame
    deviation_model: Optional[DeviationModel] = None


def _score(daily: pd.DataFrame, direction: np.ndarray, distance: np.ndarray, costs: TradeCosts,
           session: str, sim: Optional[IntradaySim] = None) -> float:
    return _result(daily, direction, distance, costs, session, sim)[0]["total_return"]


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
    ecfg = ensemble_config_from(cfg)
    costs = costs_from(cfg)
    lb, sb = cfg.get("long_barriers"), cfg.get("short_barriers")
    kw = {} if lb is None else {"long_barriers": lb, "short_barriers": sb}
    scaler, scaled, specs = fold_candidates(cfg, obs, fold)
    agents, regs = [], []
    bar = tqdm(specs, desc=f"fold {fold.index} {session} agents", disable=not progress)
    for i, s in enumerate(bar):
        agents.append(train_candidate(cfg, scaled, daily, session, s, sim) if agent_source is None
                      else agent_source(fold.index, session, i, s))
        regs.append(fit_regressor(s, scaled, daily))
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
        summ, csim = _result(val_daily, d, tmp.distances[acts[i]], costs, session, sim)
        scores.append(summ["total_return"])
        cand_returns.append(csim["ret"].to_numpy(float))
    order = np.argsort(-np.asarray(scores), kind="stable")[:ecfg.agents]
    keep = sorted(order.tolist())
    for i, s in enumerate(specs):
        s["val_return"] = float(scores[i])
        s["kept"] = i in keep
    ens = Ensemble(session, [agents[i] for i in keep], [regs[i] for i in keep], scaler, list(obs.columns),
                   specs=[specs[i] for i in keep], obs_kind=cfg.get("observations", "original"), **kw)
    # gate: fit on the first part of validation, threshold on the rest
    settings = {k: cfg[k] for k in ("perf_window", "drawdown_window", "drawdown_limit") if k in cfg}
    no_gate = ConfidenceGate([], np.zeros(0), np.zeros(0), np.zeros(0), 0.0, 0.0)
    vdec, feats = decide(ens, None, val_daily, obs.iloc[fold.val], costs, settings, return_features=True,
                         sim=sim)
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
            return _score(tune_daily, np.where(mask & ~blocked, dirs, 0), dist, costs, session, sim)
        gate_info = {"fitted": True, **gate.choose_threshold(
            p, score, int(cfg.get("gate_min_trades", 5)), eligible=dirs != 0)}
    else:
        log(f"fold {fold.index} {session}: only {int(fit_mask.sum())} validation trades to fit the gate; "
            "gate disabled (threshold 0)")
    # the model as it trades (gates included) on validation: the registry's selection metric and the
    # degeneracy check; nothing below this point feeds back into a choice
    use_gate = gate if gate.columns else None
    vfinal = decide(ens, use_gate, val_daily, obs.iloc[fold.val], costs, settings, sim=sim)
    validation, _ = _result(val_daily, vfinal["trade_direction"].to_numpy(), vfinal["distance"].to_numpy(),
                            costs, session, sim)
    degenerate = constant_outputs(vfinal, session, "validation")
    # test (the holdout): evaluated once, reported, never used to choose
    test_daily = daily.iloc[fold.test]
    tdec = decide(ens, use_gate, test_daily, obs.iloc[fold.test], costs, settings, sim=sim)
    gated, gated_sim = _result(test_daily, tdec["trade_direction"].to_numpy(), tdec["distance"].to_numpy(),
                               costs, session, sim)
    ungated, _ = _result(test_daily, tdec["direction"].to_numpy(), tdec["distance"].to_numpy(),
                         costs, session, sim)
    fallback = float(cfg.get("baseline_distance", 0.08))
    val_barrier = session_barriers(vfinal, fallback)
    test_barrier = session_barriers(tdec, fallback)
    base = _baselines(test_daily, test_barrier, costs, int(cfg.get("baseline_draws", 50)),
                      int(cfg.get("seed", 0)), session, sim)
    val_long, _ = _result(val_daily, np.ones(len(val_daily)), val_barrier, costs, session, sim)
    val_base = {"always_long": val_long, "no_trade": {"total_return": 0.0, "trades": 0}}
    below = below_baselines(validation["total_return"], val_base, session)
    metrics = {"fold": fold.describe(daily.index), "session": session, "test": gated,
               "test_ungated": ungated, "baselines": base, "gate": gate_info,
               "validation": validation, "validation_baselines": val_base, "degenerate_reason": degenerate,
               "below_baselines_reason": below,
               "barrier": {"rule": "the ensemble's barrier of each session (the vote's distance where it "
                                   "trades, else the agents' median), gaps: the range's median",
                           "validation_median": float(np.median(val_barrier)),
                           "test_median": float(np.median(test_barrier))},
               "holdout_constant_reason": constant_outputs(tdec, session, "holdout"),
               "validation_agent_returns": [float(s) for s in scores],
               # PBO of choosing `agents` of the candidates by validation return (candidates' session returns)
               "selection_pbo": selection_pbo(cand_returns),
               "validation_ensemble": _score(val_daily, vdec["direction"].to_numpy(),
                                             vdec["distance"].to_numpy(), costs, session, sim),
               "vote_distribution": {"long": int((tdec["direction"] > 0).sum()),
                                     "short": int((tdec["direction"] < 0).sum()),
                                     "none": int((tdec["direction"] == 0).sum())},
               "mean_agreement": float(tdec["agreement"].mean())}
    metrics["test_session_returns"] = [float(x) for x in gated_sim["ret"].to_numpy(float)]
    metrics["buy_and_hold_session_returns"] = [float(x) for x in index_session_returns(test_daily)]
    n_test = len(test_daily)
    _, long_sim = _result(test_daily, np.ones(n_test), test_barrier, costs, session, sim)
    metrics["always_long_session_returns"] = [float(x) for x in long_sim["ret"].to_numpy(float)]
    if cfg.get("ladder", True):
        metrics["ladder"] = fold_ladder(cfg, ens, daily, obs, fold, session, val_barrier, test_barrier, vfinal,
                                        tdec, costs, sim)
    return FoldResult(ens, gate, metrics, tdec)


def selection_pbo(candidate_returns: List[np.ndarray]) -> dict:
    """Probability of Backtest Overfitting of the candidate selection on validation: CSCV over the candidates'
    per-session validation returns (T × candidates, :func:`mltrade.pbo.pbo_or_reason`; not computable with
    fewer than 2 candidates or 8 sessions, with the reason)."""
    from mltrade.pbo import pbo_or_reason
    return pbo_or_reason([np.nan_to_num(np.asarray(r, float)) for r in candidate_returns])


def session_barriers(decisions: pd.DataFrame, fallback: float = 0.08) -> np.ndarray:
    """The ensemble's barrier distance of every session of ``decisions`` (from :func:`decide`): its
    ``session_distance`` (the vote's distance where it trades, else the median of the agents' trading
    actions), sessions without one take the median over the range (``fallback`` when there is none).
    The baselines and the learner ladder trade these barriers, so they differ from the ensemble only in
    the direction."""
    col = decisions["session_distance"] if "session_distance" in decisions else \
        decisions["distance"].where(decisions["direction"] != 0)
    b = col.to_numpy(float).copy()
    if "valid" in decisions:
        b[~decisions["valid"].to_numpy(bool)] = np.nan
    finite = np.isfinite(b) & (b > 0)
    fill = float(np.median(b[finite])) if finite.any() else float(fallback)
    return np.where(finite, b, fill)


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
        return _result(d, direction, distance, c, session, sim)
    return session_ladder(obs[ens.columns], daily, fold, barrier, vfinal, tdec, costs, result,
                          seed=int(cfg.get("seed", 0)), name=f"{session} ensemble")


def refusal_advice(summary: dict, cfg: dict) -> str:
    """One line: why the registry refused the model of ``summary`` and a command that changes the outcome."""
    name = f"{cfg.get('registry', '.mltrade/models')}/{cfg.get('name', 'dqn')}"
    why = (f"degenerate ({summary.get('degenerate_reason')})" if summary.get("degenerate")
           else "the kept model did better on the same validation range")
    if "gates refuse" in str(summary.get("degenerate_reason", "")):
        todo = (f"the gates refuse every trade: raise [dqn] gate_min_trades or lower drawdown_limit (now "
                f"{cfg.get('drawdown_limit', -1.0)}) in a --config file and run `mltrade train dqn --config FILE`")
    else:
        todo = (f"train another with `mltrade train dqn --seed {int(cfg.get('seed', 0)) + 1}` (or more "
                f"--steps / --candidates than {cfg.get('steps')} / {cfg.get('candidates')}; docs/dqn.md)")
    return f"the registry did not keep the DQN model trained into {name}: {why}; {todo}, then run this again"


def index_session_returns(daily: pd.DataFrame) -> np.ndarray:
    """Per-session returns of holding the index over ``daily``: first open -> close, then close -> close."""
    c = daily["close"].to_numpy(float)
    if not len(c):
        return np.zeros(0)
    return np.concatenate([[c[0] / float(daily["open"].iloc[0]) - 1.0], c[1:] / c[:-1] - 1.0])


def holdout_significance(per_fold: List[dict], session: str, seed: int = 0) -> dict:
    """Sharpe and its bootstrap interval, total-return interval and SPA p-values of the ``session`` ensemble's
    holdout session returns (all test folds, in order) against buy-and-hold of the index, always-long with
    the same certificates and session kind, and no trade."""
    from mltrade.significance import sharpe, significance

    folds = [m for m in per_fold if m["session"] == session]

    def series(key: str) -> np.ndarray:
        return np.concatenate([m[key] for m in folds]) if folds else np.zeros(0)
    r = series("test_session_returns")
    out = significance(r, {"buy_and_hold": series("buy_and_hold_session_returns"),
                           "always_long": series("always_long_session_returns"), "no_trade": np.zeros(len(r))},
                       seed=seed)
    out["sharpe"] = sharpe(r) if len(r) > 1 and np.std(r) > 0 else None
    return out


def save_bundle(directory: Path, results: Dict[str, FoldResult], cfg: dict, daily: pd.DataFrame) -> None:
    """Write each session's ensemble, gate, settings and deviation store under ``directory/<session>/``."""
    for session, r in results.items():
        d = Path(directory) / session
        r.ensemble.save(d)
        if r.deviation_model is not None:
            r.deviation_model.save(d / "deviation_model.json")
        write_json_atomic(d / "gate.json", r.gate.to_dict())
        write_json_atomic(d / "settings.json", {
            "session": session, "costs": {k: cfg[k] for k in COST_KEYS if k in cfg},
            "perf_window": cfg.get("perf_window", 10), "drawdown_window": cfg.get("drawdown_window", 20),
            "drawdown_limit": cfg.get("drawdown_limit", -1.0),
            "observations": cfg.get("observations", "original"),
            "mode": cfg.get("mode", "daily"), "n_candles": int(cfg.get("n_candles", 17)),
            "test_start": r.metrics["fold"]["test"][0], "test_end": r.metrics["fold"]["test"][1],
            "val_start": r.metrics["fold"]["val"][0] if r.metrics["fold"]["val"] else None,
            "val_end": r.metrics["fold"]["val"][1] if r.metrics["fold"]["val"] else None,
            "selection_metric": "val_return", "val_return": r.metrics["validation"]["total_return"],
            "degenerate": bool(r.metrics["degenerate_reason"]),
            "degenerate_reason": r.metrics["degenerate_reason"],
            "holdout_constant": bool(r.metrics["holdout_constant_reason"]),
            "holdout_constant_reason": r.metrics["holdout_constant_reason"],
            "below_baselines": bool(r.metrics.get("below_baselines_reason")),
            "below_baselines_reason": r.metrics.get("below_baselines_reason", ""),
            "holdout_return": (r.metrics.get("test") or {}).get("total_return")})
        DeviationStore(d / "deviations.parquet").update(
            r.decisions[[c for c in r.decisions.columns if c.split("_")[0] in ("mean", "se", "z")]])


@dataclass
class SessionModel:
    """A loaded session ensemble with its gate and settings."""

    ensemble: Ensemble
    gate: ConfidenceGate
    settings: dict
    deviation_model: Optional[DeviationModel] = None

    @property
    def costs(self) -> TradeCosts:
        return TradeCosts(**self.settings["costs"])

    def decide(self, daily: Optional[pd.DataFrame], per_row: bool = False,
               intraday: Optional[pd.DataFrame] = None,
               history: Optional[pd.DataFrame] = None) -> pd.DataFrame:
        """Decisions for every session of ``daily`` (observations built from ``daily`` itself, preceded by
        the daily bars of ``history`` before its first session, as training builds them from all bars).

        Intraday models take the intraday bars instead (``intraday=``; ``daily`` is derived from them)."""
        sim = None
        if self.ensemble.session == "intraday":
            if intraday is None:
                raise ValueError("intraday model: decide needs the intraday bars (intraday=...)")
            sim = IntradaySim(intraday, int(self.settings.get("n_candles", 17)))
            daily = sim.daily
        full = daily
        if history is not None and len(history) and len(daily):
            before = history.loc[history.index < daily.index[0], ["open", "high", "low", "close"]]
            full = pd.concat([before, daily[["open", "high", "low", "close"]]])
        obs = build_observations(full, self.settings.get("observations", "original"),
                                 deviation_model=self.deviation_model).reindex(daily.index)
        if sim is not None:
            obs = intraday_observations_for(obs, sim)
        return decide(self.ensemble, self.gate if self.gate.columns else None, daily, obs, self.costs,
                      self.settings, per_row=per_row, sim=sim)


def training_history(model_dir: str | Path, first: pd.Timestamp,
                     bars: Optional[pd.DataFrame] = None) -> tuple:
    """``(daily bars before first, note)``: the history the model's observations were built from (its
    ``config.json`` ``[dqn] data``), for a backtest whose bars start at ``first``. Used only when those
    bars are the same market: ``bars``' first session must equal the training data's (OHLC); otherwise
    ``(None, why)`` and the first sessions' observations are incomplete (not traded)."""
    try:
        cfg = (read_json(Path(model_dir) / "config.json") or {}).get("dqn", {})
        if cfg.get("mode", "daily") != "daily":
            return None, "intraday model: no daily history"
        daily = load_training_daily({**cfg, "start": "", "end": ""})
    except (OSError, ValueError, KeyError) as exc:
        return None, f"the model's training data cannot be read ({exc})"
    first = pd.Timestamp(first)
    if bars is not None and len(bars):
        if first not in daily.index or not np.allclose(
                daily.loc[first, ["open", "high", "low", "close"]].to_numpy(float),
                bars.iloc[0][["open", "high", "low", "close"]].to_numpy(float), rtol=1e-6):
            return None, (f"the backtest's bars on {first.date()} differ from the model's training data "
                          f"({cfg.get('data', 'sample')}): observations start from the backtest's own bars")
    before = daily.loc[daily.index < first]
    if not len(before):
        return None, "no training data before the backtest's first session"
    return before, f"observations use the model's training data ({cfg.get('data', 'sample')}) before {first.date()}"


def load_bundle(directory: str | Path) -> Dict[str, SessionModel]:
    """Every session model saved by :func:`save_bundle` under ``directory``."""
    d = Path(directory)
    out = {}
    for session in ("day", "night", "intraday"):
        sd = d / session
        if (sd / "ensemble.json").exists():
            gate = ConfidenceGate.from_dict(read_json(sd / "gate.json"))
            settings = read_json(sd / "settings.json")
            dev = None
            if settings.get("observations") == "original_deviation" or (sd / "deviation_model.json").exists():
                dev = DeviationModel.load(sd / "deviation_model.json")
            out[session] = SessionModel(Ensemble.load(sd), gate, settings, dev)
    if not out:
        raise FileNotFoundError(f"no DQN ensemble (day/, night/ or intraday/ with ensemble.json) under {d}")
    return out


def fold_observations(cfg: dict, daily: pd.DataFrame, fold: Fold) -> tuple:
    """The 53 ``original_deviation`` values for one fold and its stage-1 deviation model.

    Two stages: the deviation ensemble is refitted walk-forward inside the fold's
    training range (no in-sample prediction reaches a training row) and fitted once
    on the whole training range for validation, test and inference; see
    :mod:`mltrade.models.dqn.deviation`.
    """
    ecfg = ensemble_config_from(cfg)
    alphas, fracs = DeviationModel.member_params(int(cfg.get("deviation_members", 8)), ecfg.ridge_alphas,
                                                 ecfg.window_min_frac, ecfg.seed)
    return walk_forward_deviation_observations(
        daily, fold.train_start, fold.train_stop, alphas, fracs,
        refit_every=int(cfg.get("deviation_refit_every", 21)), burn_in=int(cfg.get("deviation_burn_in", 126)),
        clip=float(cfg.get("deviation_clip", 100.0)))


@dataclass
class TrainingData:
    """What every fold of a training run reads: bars, observations (None: built per fold), folds, sessions."""

    daily: pd.DataFrame
    obs: Optional[pd.DataFrame]
    folds: List[Fold]
    sessions: List[str]
    sim: Optional[IntradaySim] = None

    def fold_observations(self, cfg: dict, fold: Fold) -> tuple:
        """``(observations, deviation model or None)`` of ``fold``."""
        fold_obs, dev_model = (fold_observations(cfg, self.daily, fold) if self.obs is None
                               else (self.obs, None))
        if self.sim is not None:
            fold_obs = intraday_observations_for(fold_obs, self.sim)
        return fold_obs, dev_model


def training_data(cfg: dict, daily: Optional[pd.DataFrame] = None,
                  intraday: Optional[pd.DataFrame] = None) -> TrainingData:
    """Load and check what a training run needs (``daily``/``intraday``: bars instead of ``[dqn] data``)."""
    mode = cfg.get("mode", "daily")
    if mode not in ("daily", "intraday"):
        raise ValueError(f"dqn.mode: expected 'daily' or 'intraday', got {mode!r}")
    sim: Optional[IntradaySim] = None
    if mode == "intraday":
        sim = IntradaySim(load_training_intraday(cfg) if intraday is None else intraday,
                          int(cfg.get("n_candles", 17)))
        daily = sim.daily
    daily = load_training_daily(cfg) if daily is None else daily
    kind = cfg.get("observations", "original")
    if kind not in OBSERVATION_SETS or kind == "custom":
        raise ValueError(f"dqn.observations: expected one of {[k for k in OBSERVATION_SETS if k != 'custom']}, "
                         f"got {kind!r}")
    obs = None if kind == "original_deviation" else build_observations(daily, kind)
    if int(cfg["val_days"]) < 1:
        raise ValueError(f"dqn.val_days: expected >= 1, got {cfg['val_days']}: agents, gates and the registry "
                         "choose on validation only (never on the holdout)")
    ensemble_config_from(cfg)                     # incoherent settings fail before any training
    folds = walk_forward_folds(daily.index, int(cfg["n_folds"]), int(cfg["train_days"]), int(cfg["val_days"]),
                               int(cfg["test_days"]), int(cfg["embargo"]))
    sessions: List[str] = ["intraday"] if sim is not None else list(cfg.get("sessions", ["day"]))
    for s in (sessions if sim is None else []):
        if s not in ("day", "night"):
            raise ValueError(f"dqn.sessions: expected 'day' and/or 'night', got {s!r}")
    return TrainingData(daily, obs, folds, sessions, sim)


def train_walk_forward(cfg: dict, daily: Optional[pd.DataFrame] = None, progress: bool = True,
                       log: Callable[[str], None] = print, intraday: Optional[pd.DataFrame] = None,
                       agent_source: Optional[AgentSource] = None) -> dict:
    """Walk-forward training over all folds and sessions; offers the last fold's bundle to the registry.

    ``[dqn] mode = "intraday"``: one ``intraday`` ensemble that decides after ``n_candles`` bars of each
    session (observations: the daily set plus those candles), buys at the next bar's open and exits at the
    session close, stop or knock-out; ``intraday`` (or ``[dqn] data``) gives the bars. ``agent_source``:
    where the candidate agents come from (default: trained here; see :func:`train_session_fold`).
    Returns the metrics dict (also written as metrics.json when the model is kept).
    """
    t0 = time.time()
    data = training_data(cfg, daily, intraday)
    daily, folds, sessions, sim = data.daily, data.folds, data.sessions, data.sim
    per_fold: List[dict] = []
    last: Dict[str, FoldResult] = {}
    for fold in folds:
        fold_obs, dev_model = data.fold_observations(cfg, fold)
        for s in sessions:
            r = train_session_fold(cfg, daily, fold_obs, fold, s, progress, log, sim=sim,
                                   agent_source=agent_source)
            r.deviation_model = dev_model
            per_fold.append(r.metrics)
            last[s] = r
            t = r.metrics["test"]
            log(f"fold {fold.index} {s}: test {fold.describe(daily.index)['test']} return "
                f"{t['total_return']:+.2%} ({t['trades']} trades); ungated "
                f"{r.metrics['test_ungated']['total_return']:+.2%}; buy&hold "
                f"{r.metrics['baselines']['buy_and_hold']['total_return']:+.2%}, always-long "
                f"{r.metrics['baselines']['always_long']['total_return']:+.2%}, random "
                f"{r.metrics['baselines']['random_direction']['total_return']:+.2%}")
            for key in ("degenerate_reason", "holdout_constant_reason"):
                if r.metrics[key]:
                    log(f"fold {fold.index} {s}: constant outputs: {r.metrics[key]}")
    summary: Dict[str, Any] = {"folds": per_fold, "seconds": round(time.time() - t0, 1), "sessions": sessions}
    for s in sessions:
        rets = [m["test"]["total_return"] for m in per_fold if m["session"] == s]
        summary[f"oos_return_{s}"] = float(np.prod([1 + r for r in rets]) - 1)
        summary[f"val_return_{s}"] = float(last[s].metrics["validation"]["total_return"])
    # PBO of each fold's candidate selection, per session kind (validation returns only)
    summary["selection_pbo"] = {s: [dict(m["selection_pbo"], fold=m["fold"].get("fold", k)) for k, m in
                                    enumerate(x for x in per_fold if x["session"] == s)] for s in sessions}
    seed = int(cfg.get("seed", 0))
    summary["significance"] = {s: holdout_significance(per_fold, s, seed) for s in sessions}
    primary = "day" if "day" in sessions else sessions[0]
    summary["oos_return"] = summary[f"oos_return_{primary}"]
    # selection (registry): the kept bundle's validation return, mean over its sessions; never the holdout
    summary["val_return"] = float(np.mean([summary[f"val_return_{s}"] for s in sessions]))
    fold_desc = last[sessions[0]].metrics["fold"]
    summary["selection_metric"] = "val_return"
    summary["selection_range"] = list(fold_desc["val"])
    summary["holdout_range"] = list(fold_desc["test"])
    reasons = [last[s].metrics["degenerate_reason"] for s in sessions if last[s].metrics["degenerate_reason"]]
    summary["degenerate"] = bool(reasons)
    summary["degenerate_reason"] = "; ".join(reasons)
    hc = [last[s].metrics["holdout_constant_reason"] for s in sessions
          if last[s].metrics["holdout_constant_reason"]]
    summary["holdout_constant"] = bool(hc)
    summary["holdout_constant_reason"] = "; ".join(hc)
    below = [last[s].metrics["below_baselines_reason"] for s in sessions if last[s].metrics["below_baselines_reason"]]
    summary["below_baselines"] = bool(below)
    summary["below_baselines_reason"] = "; ".join(below)
    # the learner ladder of the kept (last) fold per session, and the one-line verdict
    summary["ladder"] = {s: last[s].metrics["ladder"] for s in sessions if "ladder" in last[s].metrics}
    # the kept model over its own holdout (the last fold's test range): what `mltrade backtest` trades
    summary["holdout_return_kept"] = {s: float(last[s].metrics["test"]["total_return"]) for s in sessions}
    reg = ModelRegistry(cfg.get("registry", ".mltrade/models"))
    name = cfg.get("name", "dqn")
    kept = reg.offer(name, lambda d: save_bundle(d, last, cfg, daily), summary, {"dqn": cfg}, "val_return",
                     selection_range=summary["selection_range"], holdout_range=summary["holdout_range"],
                     degenerate=summary["degenerate"], degenerate_reason=summary["degenerate_reason"],
                     warning=summary["below_baselines_reason"])
    summary["kept"] = kept
    summary["model_dir"] = str(reg.path(name)) if reg.path(name) else None
    return summary
