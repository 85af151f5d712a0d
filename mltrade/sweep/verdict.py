"""The lines a sweep report opens with: the verdict in words, the best trial's rounded parameters and its
leverage / knock-out warnings (figures from the study summary and the best trial's held-out trades)."""
from __future__ import annotations

import html
import math
from typing import Optional

import pandas as pd

#: a best trial whose trades reach this leverage (index × ratio / price) gets a warning
LEVERAGE_WARN = 20.0
#: ... or whose share of knocked-out trades reaches this
KNOCKOUT_WARN = 0.05


def round_param(v):
    """A parameter for people: floats to 4 significant digits, everything else as it is."""
    if isinstance(v, float) and math.isfinite(v) and v != 0:
        return float(f"{v:.4g}")
    return v


def rounded(params: dict) -> dict:
    """``params`` with :func:`round_param` applied to each value."""
    return {k: round_param(v) for k, v in (params or {}).items()}


def _pbo_value(pbo) -> Optional[float]:
    if isinstance(pbo, dict):
        pbo = pbo.get("pbo", pbo.get("value"))
    try:
        return None if pbo is None else float(pbo)
    except (TypeError, ValueError):
        return None


def trial_warnings(trades: pd.DataFrame) -> list:
    """Warnings on the best trial's held-out trades: leverage and knock-outs."""
    out = []
    if trades is None or not len(trades):
        return ["The best trial made no trade on the held-out test range."]
    lev = pd.to_numeric(trades.get("leverage"), errors="coerce").replace([math.inf, -math.inf], float("nan")).dropna()
    if len(lev) and lev.max() >= LEVERAGE_WARN:
        out.append(f"The best trial trades at up to {lev.max():,.0f}× leverage (average {lev.mean():,.0f}×): a "
                   f"{100 / lev.max():.1f} % index move against a position wipes out its stake.")
    ko = int((trades.get("exit_reason") == "knockout").sum()) if "exit_reason" in trades else 0
    if ko and ko / len(trades) >= KNOCKOUT_WARN:
        out.append(f"{ko:,d} of its {len(trades):,d} held-out trades ({ko / len(trades):.0%}) were knocked out.")
    return out


def sweep_lead(summary: dict, trades: pd.DataFrame, pbo=None) -> str:
    """HTML: the verdict sentence (SPA, deflated Sharpe, PBO when the study has it), the best trial's rounded
    parameters and the held-out result, then warnings."""
    sig = summary.get("significance") or {}
    words = str(sig.get("words") or "Significance not computed.")
    p = _pbo_value(pbo)
    pbo_txt = ("" if p is None else f" Probability of backtest overfitting (PBO) {p:.2f}: "
               + ("the chosen trial is more likely than not to rank below the median out of sample."
                  if p > 0.5 else "below 0.5, the in-sample choice tends to hold up out of sample."))
    tb = summary.get("test_best") or {}
    td = summary.get("test_default") or {}
    params = ", ".join(f"{k} = {v}" for k, v in rounded(summary.get("best_params")).items())
    test = "..".join((summary.get("layout") or {}).get("test") or [])
    lines = [f"<p class='headline'><b>Verdict:</b> {html.escape(words)}{html.escape(pbo_txt)}</p>",
             f"<p>Best trial {summary.get('best_trial')} of {summary.get('trials_total', 0):,} "
             f"(scored by the {html.escape(str(summary.get('search_engine', summary.get('engine', ''))))}): "
             f"{html.escape(params)}. Held-out test {html.escape(test)}: total return "
             f"{tb.get('total_return', 0.0):+.2%} over {int(tb.get('trades', 0)):,d} trades; the default "
             f"parameters {td.get('total_return', 0.0):+.2%}.</p>"]
    for w in trial_warnings(trades):
        lines.append(f"<p class='warn'><b>Warning:</b> {html.escape(w)}</p>")
    return "\n".join(lines)
