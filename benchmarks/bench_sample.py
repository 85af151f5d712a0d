"""Artefacts of the synthetic 5-minute generator, before (v1) and after (v2), and its speed.

Prints, for the null world (daily bars cut from a Brownian motion with day-to-day varying
volatility, ~5,000 sessions) and for the real NASDAQ daily sample, the same-sign share and
the cost-free momentum Sharpe at k = 3..70 bars, the lag-1 autocorrelation of 5-minute
returns and (null world) the KS distance of the high's bar index to the Brownian paths';
then the time to generate the full 20 years (fresh, and through the on-disk cache).
``--markdown`` prints the side-by-side table used in ``docs/data.md``.
Run: nice python benchmarks/bench_sample.py [--seed 1] [--markdown]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd

from mltrade.calendars import sessions, timezone_of
from mltrade.feeds import artefacts as A
from mltrade.feeds.sample import GENERATOR_VERSION, _u_shape, cached_intraday, generate_intraday, load_daily


def generate_intraday_v1(daily: pd.DataFrame, seed: int = 42, interval: int = 5,
                         calendar: str = "XNAS") -> pd.DataFrame:
    """The generator as it was before issue 11 (commit 7b11489, ``feeds/sample.py``), kept to compare:
    a Brownian bridge whose noise is scaled by the day's known range and mapped onto the range."""
    tz = timezone_of(calendar)
    sched = sessions(calendar, daily.index[0], daily.index[-1])
    days = daily.index.intersection(sched.index)
    daily = daily.loc[days]
    opens_utc = sched.loc[days, "open"]
    closes_utc = sched.loc[days, "close"]
    nbars = ((closes_utc - opens_utc) / pd.Timedelta(minutes=interval)).astype(int).to_numpy()
    rng = np.random.default_rng(seed)
    step = np.timedelta64(interval, "m")
    pieces_idx, pieces = [], []
    for n in np.unique(nbars):
        sel = np.flatnonzero(nbars == n)
        o = daily["open"].to_numpy()[sel][:, None]
        h = daily["high"].to_numpy()[sel][:, None]
        lo = daily["low"].to_numpy()[sel][:, None]
        c = daily["close"].to_numpy()[sel][:, None]
        vol = daily["volume"].to_numpy()[sel][:, None]
        m = len(sel)
        steps = rng.standard_normal((m, n))
        walk = np.concatenate([np.zeros((m, 1)), np.cumsum(steps, axis=1)], axis=1)
        t = np.linspace(0.0, 1.0, n + 1)[None, :]
        bridge = walk - t * walk[:, -1:]
        path = o + (c - o) * t + bridge * (h - lo) / max(np.sqrt(n), 1.0)
        lo_oc, hi_oc = np.minimum(o, c), np.maximum(o, c)
        inner = path[:, 1:-1]
        if inner.shape[1]:
            imin = np.argmin(inner, axis=1)
            imax = np.argmax(inner, axis=1)
            rows = np.arange(m)
            need_lo = (lo[:, 0] < lo_oc[:, 0]) & (inner[rows, imin] >= lo_oc[:, 0])
            need_hi = (h[:, 0] > hi_oc[:, 0]) & (inner[rows, imax] <= hi_oc[:, 0])
            inner[rows[need_lo], imin[need_lo]] = lo_oc[need_lo, 0] - 1.0
            inner[rows[need_hi], imax[need_hi]] = hi_oc[need_hi, 0] + 1.0
        pmin = path.min(axis=1, keepdims=True)
        pmax = path.max(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            below = lo + (path - pmin) * np.where(lo_oc > pmin, (lo_oc - lo) / (lo_oc - pmin), 0.0)
            above = hi_oc + (path - hi_oc) * np.where(pmax > hi_oc, (h - hi_oc) / (pmax - hi_oc), 0.0)
        mapped = np.where(path < lo_oc, below, np.where(path > hi_oc, above, path))
        mapped[:, 0], mapped[:, -1] = o[:, 0], c[:, 0]
        bo, bc = mapped[:, :-1], mapped[:, 1:]
        span = np.abs(bc - bo) + (h - lo) * 0.002
        bh = np.minimum(np.maximum(bo, bc) + span * rng.uniform(0, 0.6, (m, n)), h)
        bl = np.maximum(np.minimum(bo, bc) - span * rng.uniform(0, 0.6, (m, n)), lo)
        rows = np.arange(m)
        kh = np.minimum(np.argmax(mapped, axis=1), n - 1)
        kl = np.minimum(np.argmin(mapped, axis=1), n - 1)
        bh[rows, kh] = h[:, 0]
        bl[rows, kl] = lo[:, 0]
        w = _u_shape(n)[None, :] * rng.lognormal(0.0, 0.25, (m, n))
        bv = np.floor(vol * w / w.sum(axis=1, keepdims=True))
        starts = opens_utc.to_numpy(dtype="datetime64[ns]")[sel][:, None] + np.arange(n)[None, :] * step
        pieces_idx.append(starts.ravel())
        pieces.append(np.stack([bo.ravel(), bh.ravel(), bl.ravel(), bc.ravel(), bv.ravel()], axis=1))
    idx = np.concatenate(pieces_idx)
    vals = np.concatenate(pieces)
    order = np.argsort(idx, kind="stable")
    index = pd.DatetimeIndex(idx[order]).tz_localize("UTC").tz_convert(tz)
    return pd.DataFrame(vals[order], index=index, columns=["open", "high", "low", "close", "volume"])


def near_extreme_close_share(daily: pd.DataFrame, frac: float = 0.02) -> float:
    """Share of days closing within ``frac`` of the day's range from its high or low."""
    r = daily["high"] - daily["low"]
    near = ((daily["high"] - daily["close"]) <= frac * r) | ((daily["close"] - daily["low"]) <= frac * r)
    return float(near[r > 0].mean())


def _span(d: dict) -> str:
    v = list(d.values())
    return f"{min(v):+.3f} .. {max(v):+.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="null-world seed (default 1)")
    ap.add_argument("--markdown", action="store_true", help="also print the docs/data.md table")
    a = ap.parse_args()

    null_daily, brownian = A.null_world(seed=a.seed)
    real_daily = load_daily()
    cols = {"null: Brownian": A.artefact_figures(brownian)}
    for name, gen in (("v1", generate_intraday_v1), (f"v{GENERATOR_VERSION}", generate_intraday)):
        cols[f"null: {name}"] = A.artefact_figures(gen(null_daily, seed=42), reference=brownian)
    for name, gen in (("v1", generate_intraday_v1), (f"v{GENERATOR_VERSION}", generate_intraday)):
        cols[f"real: {name}"] = A.artefact_figures(gen(real_daily, seed=42), reference=brownian)

    names = list(cols)
    print(f"sessions of 78 bars: null {cols[names[0]]['days']}, real {cols[names[-1]]['days']}")
    print(f"{'':24s}" + "".join(f"{n:>15s}" for n in names))
    for k in A.DEFAULT_KS:
        print(f"same-sign share k={k:<3d}   " + "".join(f"{cols[n]['same_sign'][k]:15.3f}" for n in names))
    for k in A.DEFAULT_KS:
        print(f"momentum Sharpe k={k:<3d}   " + "".join(f"{cols[n]['momentum_sharpe'][k]:15.2f}" for n in names))
    print(f"{'lag-1 autocorrelation':24s}" + "".join(f"{cols[n]['lag1_autocorr']:15.4f}" for n in names))
    print(f"{'high-bar KS vs Brownian':24s}" + "".join(
        f"{cols[n]['high_bar_ks']:15.4f}" if n.startswith("null: v") else f"{'-':>15s}" for n in names)
        + f"   (1% critical value {cols[names[1]]['high_bar_ks_crit']:.4f})")
    print(f"days closing within 2% of the range from an extreme: null {near_extreme_close_share(null_daily):.3f}, "
          f"real {near_extreme_close_share(real_daily):.3f}")

    t0, c0 = time.perf_counter(), time.process_time()
    generate_intraday_v1(real_daily)
    t_v1, c_v1 = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    full = generate_intraday(real_daily)
    t_v2, c_v2 = time.perf_counter() - t0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        cached_intraday(real_daily, folder=tmp)
        t0 = time.perf_counter()
        cached_intraday(real_daily, folder=tmp)
        t_cache = time.perf_counter() - t0
    print(f"full 20 years ({len(full):,} bars): v1 {t_v1:.2f} s (cpu {c_v1:.2f} s), "
          f"v{GENERATOR_VERSION} {t_v2:.2f} s (cpu {c_v2:.2f} s) = {t_v2 / t_v1:.1f}x v1, "
          f"from the on-disk cache {t_cache:.2f} s")

    if a.markdown:
        v = f"v{GENERATOR_VERSION}"
        print("\n| figure | Brownian paths | null: v1 | null: " + v + " | real: v1 | real: " + v + " |")
        print("|---|---|---|---|---|---|")
        print("| same-sign share, k = 3..70 | " + " | ".join(_span(cols[n]["same_sign"]) for n in names) + " |")
        print("| momentum Sharpe, k = 3..70 | " + " | ".join(_span(cols[n]["momentum_sharpe"]) for n in names)
              + " |")
        print("| lag-1 autocorrelation | " + " | ".join(f"{cols[n]['lag1_autocorr']:+.4f}" for n in names) + " |")
        crit = cols[names[1]]["high_bar_ks_crit"]
        print(f"| high-bar index, KS distance to the Brownian paths (1% critical value {crit:.4f}) | – | "
              + " | ".join(f"{cols[n]['high_bar_ks']:.4f}" for n in names[1:3]) + " | – | – |")


if __name__ == "__main__":
    main()
