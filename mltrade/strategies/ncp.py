"""``NCPStrategy``: trade the NCP/LTC model's direction after the session's first N candles.

At the decision bar (bar ``N-1``; the order fills at bar ``N``'s open, as in
the training labels) it reads the model's probability that a long certificate
ends the session above its entry, picks a direction (threshold, ATR-binned
adaptation) and a barrier distance (fixed or mapped from the confidence), and
submits the decision through ``submit_decision`` (so an overlay can review it).
Stop and session-end exit come from ``KnockoutStrategy``.

Backtests (``mode="batch"``) compute every session's probability in one
batch at start from the feed's DataFrame; the inputs of a session use only bars
up to its decision bar (tested by truncate-and-compare). ``mode="live"`` runs
one prediction per decision from the bars seen so far.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision

_UNIX_ORDINAL = 719163.0


def confidence_distance(p_long: float, default: float, mapping: Optional[List[Tuple[float, float]]]) -> float:
    """Barrier distance for a probability: the entry of ``mapping`` [(min confidence, distance), ...]
    with the highest threshold not above ``confidence = |2p - 1|``; ``default`` when none applies."""
    if not mapping:
        return float(default)
    conf = abs(2.0 * float(p_long) - 1.0)
    dist = float(default)
    for lo, d in sorted((float(a), float(b)) for a, b in mapping):
        if not 0 < d < 1:
            raise ValueError(f"confidence_distances: distance must be a fraction in (0, 1), got {d!r}")
        if conf >= lo:
            dist = d
    return dist


class NCPStrategy(KnockoutStrategy):
    """Dual-branch NCP/LTC model decides direction (and optionally barrier distance) once per session."""

    params = (
        # registry version directory, or a model.keras file with ncp.json beside it
        ("model_path", ".mltrade/models/ncp/current"),
        ("model", None),              # an already loaded Keras model (wins over model_path; needs meta)
        ("meta", None),               # the ncp.json dict belonging to ``model``
        # batch: all sessions predicted at start; live: one prediction per decision
        ("mode", "batch"),
        ("threshold", None),          # P(long) threshold (None = the model's); short at 1 - threshold
        ("adapt", True),              # apply the model's ATR-binned follow/flip/skip adaptation
        ("confidence_distances", None),  # [(min confidence |2p-1|, distance), ...]; None = fixed distance
        ("history_sessions", 250),    # live mode: sessions of bars used to compute the daily features
        # daily bars before the feed for indicator warm-up: a DataFrame, the path of a daily CSV, None, or
        # "auto": the real sample dailies when the feed is the embedded sample, else the daily CSV the model
        # was trained with ([ncp] daily_history in its ncp.json settings) when there is one
        ("daily_history", "auto"),
        ("baseline_seed", 7),         # report: seed of the random-direction baseline of the figures
    )
    param_space = {"distance": (0.02, 0.08), "stop": (0.5, 0.95)}

    def __init__(self) -> None:
        super().__init__()
        from mltrade.models.ncp.adapt import ATRAdaptation
        if self.p.mode not in ("batch", "live"):
            raise ValueError(f"mode: expected 'batch' or 'live', got {self.p.mode!r}")
        if self.p.model is not None:
            if self.p.meta is None:
                raise ValueError("meta: a model passed as an object needs its ncp.json dict (meta)")
            self.model, self.meta = self.p.model, dict(self.p.meta)
        else:
            from mltrade.models.ncp.artifact import load_artifact
            self.model, self.meta = load_artifact(str(self.p.model_path))
        st = self.meta.get("settings", {})
        self.n_candles = int(st.get("n_candles", 17))
        self.seq_distance = float(st.get("seq_distance", 0.04))
        self.threshold = float(self.p.threshold if self.p.threshold is not None else st.get("threshold", 0.5))
        self.adaptation = (ATRAdaptation.from_dict(self.meta["adaptation"])
                           if self.p.adapt and self.meta.get("adaptation") else ATRAdaptation.identity())
        self.predictions: Dict[Any, Tuple[float, float]] = {}  # session date -> (p_long, early ATR)
        self._history = self._resolve_history(self.p.daily_history, st)
        self.predict_calls = 0

    def _resolve_history(self, hist: Any, settings: dict) -> Optional[pd.DataFrame]:
        from mltrade.models.ncp.history import daily_history_for, load_daily_history
        if hist is None or isinstance(hist, pd.DataFrame):
            return hist
        if not isinstance(hist, (str, Path)) or not str(hist):
            raise ValueError(f"daily_history: expected a DataFrame, the path of a daily CSV, None or 'auto', "
                             f"got {hist!r}")
        if str(hist) != "auto":
            return load_daily_history(str(hist), "daily_history")
        df = getattr(self.data.p, "dataframe", None)
        if df is None:
            return None
        trained = str(settings.get("daily_history") or "")
        if "arch.data.nasdaq" not in str(df.attrs.get("source", "")) and trained:
            return load_daily_history(trained, "daily_history (auto: [ncp] daily_history of the model's "
                                               "ncp.json settings)")
        return daily_history_for(df)

    # ------------------------------------------------------------------ inputs
    def _calendar(self) -> Tuple[str, int]:
        return str(getattr(self.data.p, "exchange", "XNAS")), int(getattr(self.data.p, "interval", 5) or 5)

    def _predict_frame(self, bars: pd.DataFrame) -> Dict[Any, Tuple[float, float]]:
        from mltrade.models.ncp.dataset import build_inputs
        from mltrade.models.ncp.model import predict_proba
        cal, interval = self._calendar()
        inp = build_inputs(bars, self.n_candles, self.seq_distance, cal, interval, self._history)
        if len(inp) == 0:
            return {}
        p = predict_proba(self.model, inp.daily, inp.seq)
        self.predict_calls += 1
        return {pd.Timestamp(d).date(): (float(pi), float(a)) for d, pi, a in zip(inp.dates, p, inp.atr)}

    def start(self) -> None:
        if self.p.mode == "batch":
            df = getattr(self.data.p, "dataframe", None)
            if df is None:
                raise ValueError("mode: 'batch' needs a feed built from a DataFrame (IndexData); "
                                 "use mode='live'")
            self.predictions = self._predict_frame(df)

    def _history_frame(self) -> pd.DataFrame:
        d = self.data
        n = min(len(d), int(self.p.history_sessions) * 80)
        num = np.asarray(d.datetime.get(size=n), float)
        # backtrader stores days as floats: round to whole seconds
        ns = np.round((num - _UNIX_ORDINAL) * 86_400.0).astype("int64") * 1_000_000_000
        cal, _ = self._calendar()
        from mltrade.calendars import timezone_of
        idx = pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC").tz_convert(timezone_of(cal))
        cols = {c: np.asarray(getattr(d, c).get(size=n), float)
                for c in ("open", "high", "low", "close", "volume")}
        return pd.DataFrame(cols, index=idx)

    def probability(self) -> Optional[Tuple[float, float]]:
        """(P(long), early ATR) of the current session, or None when the model has no input for it."""
        day = self.data.datetime.date(0)
        if self.p.mode == "live":
            preds = self._predict_frame(self._history_frame())
            return preds.get(day)
        return self.predictions.get(day)

    # ------------------------------------------------------------------ decisions
    def on_bar(self) -> None:
        if self.session_bar() != self.n_candles - 1 or self.has_position():
            return
        got = self.probability()
        if got is None:
            return
        p, atr = got
        from mltrade.models.ncp.scoring import directions
        raw = int(directions(np.array([p]), self.threshold)[0])
        direction = int(self.adaptation.apply(np.array([raw]), np.array([atr]))[0])
        action = self.adaptation.actions[int(self.adaptation.bin_of(np.array([atr]))[0])]
        price = float(self.data.close[0])
        info = {"p_long": p, "atr": atr, "model_direction": raw, "atr_action": action}
        if direction == 0:
            self.decisions.append({"time": str(self.data.datetime.datetime(0)), "price": price,
                                   "ml_direction": raw, "direction": 0, "source": "ncp",
                                   **{f"info_{k}": v for k, v in info.items()}})
            return
        distance = confidence_distance(p, self.p.distance, self.p.confidence_distances)
        self.submit_decision(Decision(direction=direction, price=price, time=self.data.datetime.datetime(0),
                                      distance=distance, stop=self.p.stop, source="ncp", info=info))

    # ------------------------------------------------------------------ report
    def report_sections(self) -> List[Tuple[str, str]]:
        """Model card, the model's holdout figures at training time, ATR adaptation (HTML)."""
        m = self.meta.get("metrics", {})
        st = self.meta.get("settings", {})
        out = []
        card = {"cell": self.meta.get("config", {}).get("cell"), "decision after candles": self.n_candles,
                "threshold": self.threshold, "daily features": f"{len(self.meta.get('feature_names', []))} "
                f"({self.meta.get('feature_source', '?')} pipeline)", "train sessions": m.get("train"),
                "validation sessions": m.get("val"), "holdout (out-of-sample) sessions": m.get("holdout"),
                "objective": st.get("objective"), "mode": self.p.mode, "predict calls": self.predict_calls}
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape('–' if v is None else str(v))}</td></tr>"
                       for k, v in card.items())
        dec = pd.DataFrame(self.decisions)
        note = ""
        if m.get("holdout") and len(dec):
            t = pd.to_datetime(dec["time"]).dt.date.astype(str)
            first_seen = min([r[0] for r in (m.get("search"), m.get("train")) if r] or [m["holdout"][0]])
            ins = int(((t >= first_seen) & (t < m["holdout"][0])).sum())
            before = int((t < first_seen).sum())
            note = (f"<p><b>{ins} of {len(dec)} decisions fall on sessions the model was trained, validated "
                    f"or searched on ({first_seen} .. before the holdout {m['holdout'][0]}): in-sample. "
                    f"{before} fall before any data it learnt from. Only the holdout table below is "
                    f"out-of-sample.</b></p>")
        out.append(("NCP model", f"<table>{rows}</table>{note}{self._constant_flags_html(m)}"))
        if m.get("model"):
            names = [("model", m["model"]), ("model + ATR adaptation", m.get("model_adapted", {}))]
            head = ("<tr><th></th><th>log product of trade ratios</th><th>Sharpe</th><th>trades</th>"
                    "<th>hit rate</th><th>direction accuracy</th></tr>")
            body = "".join(
                f"<tr><td>{html.escape(k)}</td><td>{v.get('log_product', float('nan')):.4f}</td>"
                f"<td>{v.get('sharpe', float('nan')):.3f}</td><td>{float(v.get('trades', 0)):.0f}</td>"
                f"<td>{v.get('hit_rate', float('nan')):.3f}</td>"
                f"<td>{v.get('direction_accuracy', float('nan')):.3f}</td></tr>" for k, v in names)
            out.append((f"NCP model on its holdout {m['holdout'][0]} .. {m['holdout'][1]} at training time",
                        f"<table>{head}{body}</table><p>Chronological walk-forward: the holdout was "
                        f"touched once by the chosen model (per-certificate figures of the training "
                        f"labels). The baselines of this run are in the report's one baseline table.</p>"))
        if m.get("pbo"):
            from mltrade.pbo import pbo_details
            out.append(("NCP search: probability of backtest overfitting (validation folds)",
                        f"<p>{html.escape(pbo_details(m['pbo']))}. CSCV over the per-session validation returns "
                        f"of the search's {m['pbo'].get('complete_trials', m['pbo'].get('trials', '?'))} complete "
                        f"trials; about 0.5 means the search found luck, near 0 a stable winner.</p>"))
        if m.get("ladder"):
            out.append(("NCP learner ladder (training time: simple learners on the same inputs and folds)",
                        self._ladder_html(m["ladder"])))
        chk = self.holdout_check()
        if chk:
            tl = chk["training_log_product"]
            out.append((f"NCP holdout figure: training vs this backtest ({chk['sessions']} sessions)",
                        "<table><tr><th></th><th>log-product per certificate</th></tr>"
                        f"<tr><td>training: kept model (+ ATR adaptation) over its holdout</td>"
                        f"<td>{'n/a' if tl is None else f'{tl:+.4f}'}</td></tr>"
                        f"<tr><td>this backtest: its decisions on the same sessions, same certificates</td>"
                        f"<td>{chk['backtest_log_product']:+.4f}</td></tr></table>"
                        f"<p>Sessions where this backtest chose another direction than the training: "
                        f"{chk['sessions_with_other_direction']} (the strategy recomputes its inputs from "
                        f"this run's feed and daily history; the difference of the two figures comes from "
                        f"those sessions only).</p>"
                        f"<p>{html.escape(chk['measure'])}. {html.escape(chk['account_note'])}.</p>"))
        out.append(("NCP ATR-binned adaptation (estimated out of fold, before the holdout)",
                    self.adaptation.html()
                    + self._bin_usage_html(dec)))
        return out

    def holdout_check(self) -> Optional[dict]:
        """One truth for the holdout figure: the training-time per-certificate log-product of the model
        (with its ATR adaptation) on its holdout, beside this backtest's decisions on the same sessions
        priced the same way (per certificate, training labels), and how many sessions differ. This run's
        account figures (stake fraction, fees, whole certificates, broker fills) are a different measure of
        the same decisions, shown in the summary table. None without a holdout or decisions on it."""
        m = self.meta.get("metrics", {})
        hold = m.get("holdout")
        dec = pd.DataFrame(self.decisions)
        if not hold or dec.empty or "direction" not in dec:
            return None
        ds = self._session_outcomes()
        if ds is None or len(ds) == 0:
            return None
        dec = dec.assign(date=pd.to_datetime(dec["time"]).dt.normalize()).drop_duplicates("date", keep="last")
        day = dec["date"].dt.strftime("%Y-%m-%d").to_numpy()
        on = (day >= str(hold[0])) & (day <= str(hold[1]))
        pos = pd.DatetimeIndex(pd.to_datetime(ds.dates)).normalize().get_indexer(pd.DatetimeIndex(dec["date"]))
        sel = on & (pos >= 0)
        if not sel.any():
            return None
        d = dec["direction"].to_numpy(int)[sel]
        idx = pos[sel]
        r = np.where(d > 0, ds.long_return[idx], np.where(d < 0, ds.short_return[idx], 0.0))
        traded = d != 0
        lp = float(np.log(np.maximum(1.0 + r[traded], 1e-9)).sum())
        trained = m.get("model_adapted") or m.get("model") or {}
        recomputed, differ = None, None
        hd = m.get("holdout_decisions")
        if hd:
            tdir = pd.Series(hd["direction"], index=pd.to_datetime(hd["dates"]).normalize())
            t = tdir.reindex(pd.DatetimeIndex(dec["date"][sel])).fillna(0).to_numpy(int)
            rt = np.where(t > 0, ds.long_return[idx], np.where(t < 0, ds.short_return[idx], 0.0))
            # the training's decisions priced by this run's session outcomes: equal to the training figure
            # when both price the certificates the same way
            recomputed = float(np.log(np.maximum(1.0 + rt[t != 0], 1e-9)).sum())
            differ = int((t != d).sum())
        out = {"holdout": list(hold), "sessions": int(sel.sum()),
               "training_log_product": trained.get("log_product"),
               "training_sessions": trained.get("sessions"),
               "backtest_log_product": lp, "backtest_trades": int(traded.sum()),
               "training_decisions_repriced": recomputed, "sessions_with_other_direction": differ,
               "difference": None if trained.get("log_product") is None else lp - float(trained["log_product"]),
               "measure": "per-certificate log-product of the trade ratios over the holdout sessions "
                          "(training labels: entry at bar N's open, exit at the session end, stop or knock-out)",
               "account_note": "the summary table's account figures (stake fraction, fees, whole certificates, "
                               "broker fills) measure the same decisions in money; they differ by design"}
        return out

    def summary_extra(self) -> dict:
        """summary.json entries: the model's learner ladder (training time) and the holdout figure check."""
        m = self.meta.get("metrics", {})
        return {"ncp": {"ladder": m.get("ladder"), "holdout_check": self.holdout_check()}}

    @staticmethod
    def _ladder_html(lad: dict) -> str:
        """The learner ladder of the model's training run as an HTML table."""
        e = html.escape
        best = lad.get("verdict", {}).get("best_simple")
        head = ("<tr><th>rung</th><th>validation log-product</th><th>validation Sharpe</th><th>n</th>"
                "<th>long share</th><th>holdout log-product</th><th>holdout Sharpe</th><th>n</th>"
                "<th>long share</th></tr>")

        def cells(v: dict) -> str:
            ls = v.get("long_share")
            return (f"<td>{v['log_product']:+.3f}</td><td>{v['sharpe']:+.2f}</td><td>{v['n_sessions']}</td>"
                    f"<td>{'-' if ls is None else f'{ls:.0%}'}</td>")
        body = "".join(f"<tr><td>{e(k)}{' (best simple, on validation)' if k == best else ''}</td>"
                       f"{cells(r['validation'])}{cells(r['holdout'])}</tr>" for k, r in lad["rungs"].items())
        return (f"<table>{head}{body}</table><p><b>{e(lad.get('verdict', {}).get('words', ''))}</b></p>"
                f"<p>{e(lad.get('selection', ''))}; target: {e(lad.get('target', ''))}. Validation: the search "
                f"folds' scored ranges; holdout: scored once.</p>")

    @staticmethod
    def _constant_flags_html(m: dict) -> str:
        """Warnings for a model that is degenerate (constant on validation) or constant on its holdout."""
        from mltrade.models.ncp.scoring import describe_constant
        out = ""
        if m.get("degenerate"):
            reason = html.escape(str(m.get("degenerate_reason")))
            out += (f"<p class='warning'><b>Degenerate model: {reason}. "
                    f"The registry does not keep such a model.</b></p>")
        for suffix, label in (("", "The model"), ("_adapted", "With the ATR adaptation the model")):
            if m.get("holdout_constant" + suffix):
                what = describe_constant(m.get("holdout_direction" + suffix), "every holdout session")
                out += (f"<p class='warning'><b>{label} is constant on the holdout ({html.escape(what)}): "
                        f"its holdout figures are those of a fixed bet, not of a learnt signal.</b></p>")
                break
        return out

    def _bin_usage_html(self, dec: pd.DataFrame) -> str:
        if dec.empty or "info_atr" not in dec:
            return ""
        b = self.adaptation.bin_of(dec["info_atr"].to_numpy(float))
        counts = pd.Series(b).value_counts().sort_index()
        cells = "".join(f"<tr><td>{k}</td><td>{self.adaptation.actions[k]}</td><td>{v}</td></tr>"
                        for k, v in counts.items())
        return ("<p>Decisions in this backtest by bin:</p><table><tr><th>bin</th><th>action</th>"
                f"<th>decisions</th></tr>{cells}</table>")

    # ------------------------------------------------------------------ report figures
    def _session_outcomes(self):
        """The certificate outcomes of every session of the feed (long/short returns), as in the training
        labels: entry at bar N's open, exit at the session end unless stop or knock-out come first."""
        df = getattr(self.data.p, "dataframe", None)
        if df is None:
            return None
        from mltrade.models.ncp.dataset import PayoffSpec, build_dataset
        spec = PayoffSpec(distance=float(self.p.distance), stop=float(self.p.stop or 0.0),
                          ratio=float(self.p.ratio), spread=float(self.p.spread), fx=float(self.p.fx),
                          kind=str(self.p.kind), barrier_buffer=float(self.p.barrier_buffer),
                          unwind=str(self.p.unwind))
        cal, interval = self._calendar()
        return build_dataset(df, self.n_candles, spec, cal, interval, self._history, self.seq_distance)

    def report_figures(self) -> List[Tuple[str, object]]:
        """Probability per session with threshold and direction, calibration on the traded sessions, and
        the out-of-sample cumulative log-return beside buy-and-hold, always-long and random direction."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        dec = pd.DataFrame(self.decisions)
        if dec.empty or "info_p_long" not in dec:
            return []
        dec = dec.assign(date=pd.to_datetime(dec["time"]).dt.normalize()).drop_duplicates("date", keep="last")
        p = dec["info_p_long"].to_numpy(float)
        d = dec["direction"].to_numpy(int)
        figs = []
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.plot(dec["date"], p, lw=0.6, c="0.6", zorder=1)
        for sel, style, label in ((d > 0, dict(c="g", marker="^"), "long"),
                                  (d < 0, dict(c="r", marker="v"), "short"),
                                  (d == 0, dict(c="0.4", marker="x"), "no trade")):
            if sel.any():
                ax.scatter(dec["date"][sel], p[sel], s=12, label=label, zorder=2, **style)
        ax.axhline(self.threshold, c="g", ls="--", lw=0.8, label=f"long threshold {self.threshold:g}")
        ax.axhline(1 - self.threshold, c="r", ls="--", lw=0.8,
                   label=f"short threshold {1 - self.threshold:g}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("P(long certificate wins)")
        ax.legend(loc="lower left", fontsize=7, ncol=5)
        fig.autofmt_xdate()
        figs.append(("NCP probability per session, threshold and chosen direction", fig))

        ds = self._session_outcomes()
        if ds is None or len(ds) == 0:
            return figs
        ds_dates = pd.DatetimeIndex(pd.to_datetime(ds.dates)).normalize()
        pos = ds_dates.get_indexer(pd.DatetimeIndex(dec["date"]))
        have = pos >= 0
        traded = have & (d != 0)
        if traded.any():
            won = ds.long_return[pos[traded]] > 0
            pt = p[traded]
            edges = np.linspace(0.0, 1.0, 11)
            b = np.clip(np.digitize(pt, edges) - 1, 0, 9)
            fig, ax = plt.subplots(figsize=(4.5, 4.5))
            ax.plot([0, 1], [0, 1], c="0.6", ls="--", lw=0.8, label="perfect calibration")
            xs, ys, ns = [], [], []
            for k in np.unique(b):
                xs.append(pt[b == k].mean())
                ys.append(won[b == k].mean())
                ns.append(int((b == k).sum()))
            ax.plot(xs, ys, "o-", c="C0", label="traded sessions")
            for x, y, n in zip(xs, ys, ns):
                ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("predicted P(long) (bin mean; labels: sessions)")
            ax.set_ylabel("realised share of winning long certificates")
            ax.legend(loc="upper left", fontsize=7)
            figs.append((f"NCP calibration on the {int(traded.sum())} traded sessions", fig))

        hold = self.meta.get("metrics", {}).get("holdout")
        sel = have.copy()
        if hold:
            day = dec["date"].dt.strftime("%Y-%m-%d").to_numpy()
            sel &= (day >= str(hold[0])) & (day <= str(hold[1]))
        if sel.any():
            idx = pos[sel]
            dates = dec["date"][sel]
            lr, sr, price = ds.long_return[idx], ds.short_return[idx], ds.price[idx]
            dd = d[sel]

            def cum(r):
                return np.cumsum(np.log(np.maximum(1.0 + r, 1e-9)))

            strat = np.where(dd > 0, lr, np.where(dd < 0, sr, 0.0))
            rng = np.random.default_rng(int(self.p.baseline_seed))
            draws = rng.choice([-1, 1], size=(200, len(idx)))
            rand = np.cumsum(np.log(np.maximum(1.0 + np.where(draws > 0, lr, sr), 1e-9)), axis=1).mean(axis=0)
            fig, ax = plt.subplots(figsize=(9, 3.5))
            ax.plot(dates, cum(strat), lw=1.4, label="NCP strategy")
            ax.plot(dates, np.log(price / price[0]), lw=0.9, label="buy-and-hold (index)")
            ax.plot(dates, cum(lr), lw=0.9, label="always long")
            ax.plot(dates, rand, lw=0.9, label="random direction (mean of 200)")
            ax.axhline(0, c="0.6", lw=0.6)
            ax.set_ylabel("cumulative log-return")
            ax.legend(loc="upper left", fontsize=7)
            fig.autofmt_xdate()
            span = f"holdout {hold[0]} .. {hold[1]}" if hold else "all sessions (the model has no holdout: " \
                                                                  "not out-of-sample)"
            figs.append((f"NCP out-of-sample cumulative log-return vs baselines ({span}, "
                         f"{int(sel.sum())} sessions, same certificates)", fig))
        return figs
