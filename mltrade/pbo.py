"""Probability of Backtest Overfitting of a search: combinatorially symmetric cross-validation.

Bailey, Borwein, López de Prado & Zhu (2017), "The probability of backtest overfitting",
*Journal of Computational Finance* 20(4). Given every trial's per-session (validation)
returns, a T×N matrix, CSCV cuts the sessions into S contiguous blocks and, for each of the
C(S, S/2) ways to pick half of them as in-sample, chooses the trial with the best in-sample
Sharpe and ranks it among all N trials on the other half (out of sample). With ω its relative
rank in (0, 1) (rank / (N + 1), 1 = best) and λ = ln(ω / (1 − ω)) its logit,

    PBO = share of splits with λ ≤ 0,

the probability that the chosen trial is at or below the median trial out of sample. A search
that only finds luck gives PBO ≈ 0.5 (or more, when the in-sample best is systematically worse
out of sample); a real, stable winner gives PBO ≈ 0.

:func:`pbo` is what every search calls: the strategy sweep (``sweep.json["significance"]["pbo"]``),
the NCP search and the DQN candidate selection pass their trials' per-session validation returns.
"""
from __future__ import annotations

import base64
import itertools
import math
import zlib
from typing import Optional

import numpy as np

__all__ = ["pbo", "pbo_words", "pbo_or_reason", "pbo_details", "DEFAULT_SPLITS", "encode_returns", "decode_returns"]

#: number of contiguous blocks S (C(16, 8) = 12,870 splits)
DEFAULT_SPLITS = 16
_MIN_BLOCK = 2


def _sharpe(s1: np.ndarray, s2: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per-period Sharpe (ddof 1) from sums and sums of squares; 0 without variation."""
    mean = s1 / n
    var = (s2 - s1 * mean) / np.maximum(n - 1, 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    tiny = 1e-12 * (np.abs(mean) + 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > tiny, mean / sd, 0.0)


def pbo(returns: np.ndarray, splits: int = DEFAULT_SPLITS, chunk: int = 1024) -> Optional[dict]:
    """CSCV Probability of Backtest Overfitting of choosing the best-Sharpe column of ``returns``.

    ``returns``: T×N per-session returns of N ≥ 2 trials on the same sessions (a session a trial
    did not trade is 0). ``splits``: the even number of contiguous blocks S (reduced, still even,
    when there are fewer than 2·S sessions). Returns ``{"pbo", "splits", "combinations",
    "trials", "sessions", "logit_quantiles", "logit_histogram", "prob_oos_loss", "words"}`` or
    ``None`` with fewer than 2 trials or 8 sessions.
    """
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2:
        raise ValueError(f"returns: expected a T×N array of per-session returns, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns: contains NaN or infinite values")
    if splits < 2 or splits % 2:
        raise ValueError(f"splits: expected an even number of blocks >= 2, got {splits}")
    t, n = r.shape
    if n < 2 or t < 4 * _MIN_BLOCK:
        return None
    s = min(splits, 2 * (t // (2 * _MIN_BLOCK)))
    s -= s % 2
    logits, oos_best, n_combos = _cscv(r, s, chunk)
    value = float(np.mean(logits <= 0.0))
    lim = float(math.ceil(np.abs(logits).max() * 2) / 2) or 0.5
    counts, edges = np.histogram(logits, bins=20, range=(-lim, lim))
    out = {
        "pbo": value, "splits": int(s), "combinations": int(n_combos), "trials": int(n), "sessions": int(t),
        "logit_quantiles": {str(q): float(np.quantile(logits, q / 100)) for q in (5, 25, 50, 75, 95)},
        "logit_histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        "prob_oos_loss": float(np.mean(oos_best < 0.0)),
        "method": (f"CSCV (Bailey, Borwein, López de Prado & Zhu): {s} contiguous blocks, all {n_combos:,} "
                   f"half/half splits, best in-sample Sharpe ranked among {n:,} trials out of sample"),
    }
    out["words"] = pbo_words(out)
    return out


def _cscv(r: np.ndarray, s: int, chunk: int) -> tuple[np.ndarray, np.ndarray, int]:
    """For each half/half split of ``s`` contiguous blocks: the logit of the out-of-sample rank of the
    best in-sample trial and its out-of-sample Sharpe; and the number of splits."""
    t, n = r.shape
    blocks = np.array_split(np.arange(t), s)
    s1 = np.stack([r[b].sum(axis=0) for b in blocks])            # (S, N)
    s2 = np.stack([(r[b] ** 2).sum(axis=0) for b in blocks])
    cnt = np.array([len(b) for b in blocks], dtype=float)
    combos = np.array(list(itertools.combinations(range(s), s // 2)))
    sel = np.zeros((len(combos), s))
    sel[np.arange(len(combos))[:, None], combos] = 1.0
    tot1, tot2, totn = s1.sum(axis=0), s2.sum(axis=0), cnt.sum()
    logits = np.empty(len(combos))
    oos_best = np.empty(len(combos))
    for c0 in range(0, len(combos), chunk):
        m = sel[c0:c0 + chunk]
        i1, i2, inn = m @ s1, m @ s2, (m @ cnt)[:, None]
        is_sr = _sharpe(i1, i2, inn)
        oos_sr = _sharpe(tot1 - i1, tot2 - i2, totn - inn)
        best = np.argmax(is_sr, axis=1)
        rows = np.arange(len(m))
        ob = oos_sr[rows, best]
        below = (oos_sr < ob[:, None]).sum(axis=1)
        ties = (oos_sr == ob[:, None]).sum(axis=1) - 1
        rank = below + 0.5 * ties + 1.0                             # 1 = worst .. N = best
        w = rank / (n + 1.0)
        logits[c0:c0 + chunk] = np.log(w / (1.0 - w))
        oos_best[c0:c0 + chunk] = ob
    return logits, oos_best, len(combos)


def pbo_words(res: Optional[dict]) -> str:
    """``probability that the chosen trial is below the median out of sample: 0.62`` (with its basis)."""
    if res is None:
        return "probability that the chosen trial is below the median out of sample: n/a (too few trials or sessions)"
    return (f"probability that the chosen trial is below the median out of sample: {res['pbo']:.2f} "
            f"(PBO, CSCV over {res['combinations']:,} splits of {res['sessions']} sessions, {res['trials']:,} trials)")


def pbo_or_reason(columns, splits: int = DEFAULT_SPLITS) -> dict:
    """:func:`pbo` of a search's per-session returns, or, where it cannot be computed, ``{"pbo": None,
    "trials", "sessions", "reason", "words"}`` saying why (never raises on too few trials or sessions).

    ``columns``: a T×N array or a list of N equal-length per-session return series (one per trial).
    """
    cols = [np.asarray(c, dtype=float).ravel() for c in columns.T] if isinstance(columns, np.ndarray) \
        else [np.asarray(c, dtype=float).ravel() for c in columns]
    n = len(cols)
    t = len(cols[0]) if cols else 0
    reason = ""
    if n < 2:
        reason = f"{n} trial{'' if n == 1 else 's'} with per-session returns (PBO needs at least 2)"
    elif len({len(c) for c in cols}) > 1:
        reason = f"the trials' session counts differ ({sorted({len(c) for c in cols})}): not aligned"
    elif t < 4 * _MIN_BLOCK:
        reason = f"{t} sessions (CSCV needs at least {4 * _MIN_BLOCK}: 4 blocks of {_MIN_BLOCK})"
    elif not all(np.all(np.isfinite(c)) for c in cols):
        reason = "the per-session returns contain NaN or infinite values"
    if reason:
        return {"pbo": None, "trials": n, "sessions": t, "reason": reason,
                "words": f"probability that the chosen trial is below the median out of sample: "
                         f"not computable ({reason})"}
    return pbo(np.column_stack(cols), splits=splits)


def pbo_details(res: Optional[dict]) -> str:
    """:func:`pbo_words` (or why not computable) plus the 5/50/95 % quantiles of the logit and P(out-of-sample loss)."""
    if not res or res.get("pbo") is None:
        return (res or {}).get("words") or pbo_words(None)
    q = res.get("logit_quantiles") or {}
    tail = (f"; logit of the chosen trial's out-of-sample rank 5/50/95 %: {q['5']:+.2f} / {q['50']:+.2f} / "
            f"{q['95']:+.2f}" if all(k in q for k in ("5", "50", "95")) else "")
    loss = res.get("prob_oos_loss")
    return res.get("words", pbo_words(res)) + tail + ("" if loss is None else
                                                       f"; chosen trial loses out of sample in {loss:.0%} of splits")


def encode_returns(returns: np.ndarray) -> str:
    """Per-session returns as compact text for a trial attribute (zlib-compressed little-endian float64, base64):
    how every search stores the returns :func:`pbo` later reads."""
    return base64.b64encode(zlib.compress(np.asarray(returns, dtype="<f8").tobytes(), 6)).decode("ascii")


def decode_returns(text: str) -> np.ndarray:
    """The inverse of :func:`encode_returns`."""
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f8").copy()
