"""The NCP strategy's report: HTML sections, figures and the check of the holdout figure.

:class:`NCPReport` is mixed into :class:`mltrade.strategies.ncp.NCPStrategy`; it reads the strategy's
``meta`` (the model's ncp.json), ``decisions``, ``adaptation``, ``threshold``, ``n_candles``, ``params``
and feed, and writes nothing. Sections: the model card with its in-sample warning, the model's holdout
figures at training time, the search's PBO, the learner ladder, training vs backtest on the holdout, the
ATR adaptation. Figures: probability per session, calibration, out-of-sample cumulative log-return.
"""
from __future__ import annotations

import html
from typing import List, Optional, Tuple

import numpy as np
import pandas as pd


class NCPReport:
    """Report sections, figures and the holdout check of :class:`~mltrade.strategies.ncp.NCPStrategy`."""

    # ------------------------------------------------------------------ report
    def report_sections(self) -> List[Tuple[str, str]]:
        """Model card, the model's holdout figures at training time, ATR adaptation (HTML)."""
        m = self.meta.get("metrics", {})
        dec = pd.DataFrame(self.decisions)
        out = [("NCP model", self._model_card_html(m, dec))]
        if m.get("model"):
            out.append(_training_holdout_section(m))
        if m.get("pbo"):
            out.append(_pbo_section(m))
        if m.get("ladder"):
            out.append(("NCP learner ladder (training time: simple learners on the same inputs and folds)",
                        self._ladder_html(m["ladder"])))
        chk = self.holdout_check()
        if chk:
            out.append(_holdout_check_section(chk))
        out.append(("NCP ATR-binned adaptation (estimated out of fold, before the holdout)",
                    self.adaptation.html()
                    + self._bin_usage_html(dec)))
        return out

    def _model_card_html(self, m: dict, dec: pd.DataFrame) -> str:
        """The model card, how many decisions fall in-sample, and the constant-output warnings."""
        st = self.meta.get("settings", {})
        card = {"cell": self.meta.get("config", {}).get("cell"), "decision after candles": self.n_candles,
                "threshold": self.threshold, "daily features": f"{len(self.meta.get('feature_names', []))} "
                f"({self.meta.get('feature_source', '?')} pipeline)", "train sessions": m.get("train"),
                "validation sessions": m.get("val"), "holdout (out-of-sample) sessions": m.get("holdout"),
                "objective": st.get("objective"), "mode": self.p.mode, "predict calls": self.predict_calls}
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape('–' if v is None else str(v))}</td></tr>"
                       for k, v in card.items())
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
        return f"<table>{rows}</table>{note}{self._constant_flags_html(m)}"

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

        dec = pd.DataFrame(self.decisions)
        if dec.empty or "info_p_long" not in dec:
            return []
        dec = dec.assign(date=pd.to_datetime(dec["time"]).dt.normalize()).drop_duplicates("date", keep="last")
        p = dec["info_p_long"].to_numpy(float)
        d = dec["direction"].to_numpy(int)
        figs = [("NCP probability per session, threshold and chosen direction", self._probability_figure(dec, p, d))]

        ds = self._session_outcomes()
        if ds is None or len(ds) == 0:
            return figs
        ds_dates = pd.DatetimeIndex(pd.to_datetime(ds.dates)).normalize()
        pos = ds_dates.get_indexer(pd.DatetimeIndex(dec["date"]))
        have = pos >= 0
        traded = have & (d != 0)
        if traded.any():
            figs.append((f"NCP calibration on the {int(traded.sum())} traded sessions",
                         _calibration_figure(p[traded], ds.long_return[pos[traded]] > 0)))

        hold = self.meta.get("metrics", {}).get("holdout")
        sel = have.copy()
        if hold:
            day = dec["date"].dt.strftime("%Y-%m-%d").to_numpy()
            sel &= (day >= str(hold[0])) & (day <= str(hold[1]))
        if sel.any():
            figs.append(self._outcome_figure(dec, d, ds, pos, sel, hold))
        return figs

    def _probability_figure(self, dec: pd.DataFrame, p: np.ndarray, d: np.ndarray):
        """P(long) per session, the chosen direction and the two thresholds."""
        import matplotlib.pyplot as plt
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
        return fig

    def _outcome_figure(self, dec: pd.DataFrame, d: np.ndarray, ds, pos: np.ndarray, sel: np.ndarray,
                        hold: Optional[list]) -> Tuple[str, object]:
        """The strategy's cumulative log-return on the ``sel`` sessions (the holdout) beside buy-and-hold,
        always-long and random direction, same certificates; ``pos``: the sessions' rows in ``ds``."""
        import matplotlib.pyplot as plt
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
        return (f"NCP out-of-sample cumulative log-return vs baselines ({span}, "
                f"{int(sel.sum())} sessions, same certificates)", fig)


def _training_holdout_section(m: dict) -> Tuple[str, str]:
    """The model's holdout figures at training time (raw and with the ATR adaptation)."""
    names = [("model", m["model"]), ("model + ATR adaptation", m.get("model_adapted", {}))]
    head = ("<tr><th></th><th>log product of trade ratios</th><th>Sharpe</th><th>trades</th>"
            "<th>hit rate</th><th>direction accuracy</th></tr>")
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v.get('log_product', float('nan')):.4f}</td>"
        f"<td>{v.get('sharpe', float('nan')):.3f}</td><td>{float(v.get('trades', 0)):.0f}</td>"
        f"<td>{v.get('hit_rate', float('nan')):.3f}</td>"
        f"<td>{v.get('direction_accuracy', float('nan')):.3f}</td></tr>" for k, v in names)
    return (f"NCP model on its holdout {m['holdout'][0]} .. {m['holdout'][1]} at training time",
            f"<table>{head}{body}</table><p>Chronological walk-forward: the holdout was "
            f"touched once by the chosen model (per-certificate figures of the training "
            f"labels). The baselines of this run are in the report's one baseline table.</p>")


def _pbo_section(m: dict) -> Tuple[str, str]:
    """The search's probability of backtest overfitting (CSCV over the trials' validation returns)."""
    from mltrade.pbo import pbo_details
    return ("NCP search: probability of backtest overfitting (validation folds)",
            f"<p>{html.escape(pbo_details(m['pbo']))}. CSCV over the per-session validation returns "
            f"of the search's {m['pbo'].get('complete_trials', m['pbo'].get('trials', '?'))} complete "
            f"trials; about 0.5 means the search found luck, near 0 a stable winner.</p>")


def _holdout_check_section(chk: dict) -> Tuple[str, str]:
    """Training vs this backtest on the holdout (:meth:`NCPReport.holdout_check`)."""
    tl = chk["training_log_product"]
    return (f"NCP holdout figure: training vs this backtest ({chk['sessions']} sessions)",
            "<table><tr><th></th><th>log-product per certificate</th></tr>"
            f"<tr><td>training: kept model (+ ATR adaptation) over its holdout</td>"
            f"<td>{'n/a' if tl is None else f'{tl:+.4f}'}</td></tr>"
            f"<tr><td>this backtest: its decisions on the same sessions, same certificates</td>"
            f"<td>{chk['backtest_log_product']:+.4f}</td></tr></table>"
            f"<p>Sessions where this backtest chose another direction than the training: "
            f"{chk['sessions_with_other_direction']} (the strategy recomputes its inputs from "
            f"this run's feed and daily history; the difference of the two figures comes from "
            f"those sessions only).</p>"
            f"<p>{html.escape(chk['measure'])}. {html.escape(chk['account_note'])}.</p>")


def _calibration_figure(pt: np.ndarray, won: np.ndarray):
    """Predicted P(long) (ten bins) against the realised share of winning long certificates on the
    traded sessions (``pt``: their probabilities, ``won``: whether the long certificate won)."""
    import matplotlib.pyplot as plt
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
    return fig
