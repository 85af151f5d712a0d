"""Artefacts of the synthetic 5-minute generator on every null world and on the real sample, and its speed.

Prints, for each null world (daily bars cut from a Brownian motion whose day-to-day volatility is
constant, GARCH(1,1), lognormal (log sd 0.8) or a persistent stochastic volatility; ~5,000
sessions each; ``mltrade.feeds.artefacts.null_world``) and for the real NASDAQ daily sample, the
same-sign share and the cost-free momentum Sharpe at k = 3..70 bars (lowest .. highest), the
lag-1 autocorrelation of 5-minute returns and (null worlds) the KS distance of the high's bar
index to the Brownian paths', for the Brownian paths themselves, generator v2 (bridge volatility
from the previous days' ranges, half-life 10) and the current generator (the day's own range);
then the time to generate the full 20 years (fresh, and through the on-disk cache).
Run: nice python benchmarks/bench_sample.py [--seed 1] [--markdown]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd

from mltrade.feeds import artefacts as A
from mltrade.feeds import sample as S
from mltrade.feeds.sample import GENERATOR_VERSION, cached_intraday, generate_intraday, load_daily

_PARKINSON = float(np.sqrt(4.0 * np.log(2.0)))


def prior_volatility_v2(daily: pd.DataFrame, halflife: float = 10.0) -> np.ndarray:
    """Generator v2's bridge volatility (kept to compare): a trailing average of the *previous* days'
    Parkinson variance (short sessions treated as full ones here)."""
    width = np.log(daily["high"].to_numpy(dtype=float) / daily["low"].to_numpy(dtype=float))
    per = (width / _PARKINSON) ** 2
    alpha = 1.0 - 0.5 ** (1.0 / halflife)
    prior = np.empty_like(per)
    level = per[0] if per[0] > 0 else float(np.mean(per))
    for i, v in enumerate(per):
        prior[i] = level
        level += alpha * (v - level)
    return np.sqrt(np.maximum(prior, 1e-12))


def generate_intraday_v2(daily: pd.DataFrame, seed: int = 42) -> pd.DataFrame:
    own = S.day_volatility
    S.day_volatility = prior_volatility_v2
    try:
        return generate_intraday(daily, seed=seed)
    finally:
        S.day_volatility = own


def near_extreme_close_share(daily: pd.DataFrame, frac: float = 0.02) -> float:
    """Share of days closing within ``frac`` of the day's range from its high or low."""
    r = daily["high"] - daily["low"]
    near = ((daily["high"] - daily["close"]) <= frac * r) | ((daily["close"] - daily["low"]) <= frac * r)
    return float(near[r > 0].mean())


def _span(d: dict, fmt: str) -> str:
    v = list(d.values())
    return f"{min(v):{fmt}} .. {max(v):{fmt}}"


WORLDS = (("constant", {}), ("garch", {}), ("lognormal", {"vol_of_vol": 0.8}), ("sv", {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="null-world seed (default 1)")
    ap.add_argument("--markdown", action="store_true", help="print the docs/data.md table")
    a = ap.parse_args()
    v = f"v{GENERATOR_VERSION}"
    rows = []
    for vol, kw in WORLDS:
        daily, brown = A.null_world(seed=a.seed, vol=vol, **kw)
        name = f"null: {vol}" + (" (log sd 0.8)" if kw else "")
        rows.append((name, "Brownian paths", A.artefact_figures(brown)))
        rows.append((name, "v2", A.artefact_figures(generate_intraday_v2(daily), reference=brown)))
        rows.append((name, v, A.artefact_figures(generate_intraday(daily, seed=42), reference=brown)))
    real = load_daily()
    rows.append(("real NASDAQ sample", "v2", A.artefact_figures(generate_intraday_v2(real))))
    rows.append(("real NASDAQ sample", v, A.artefact_figures(generate_intraday(real, seed=42))))
    crit = next(f["high_bar_ks_crit"] for _, _, f in rows if "high_bar_ks_crit" in f)
    bands = lambda f: (max(abs(x - 0.5) for x in f["same_sign"].values()) <= 0.03
                       and max(abs(x) for x in f["momentum_sharpe"].values()) <= 0.8
                       and abs(f["lag1_autocorr"]) <= 0.03 and f.get("high_bar_ks", 0.0) < f.get("high_bar_ks_crit", 1.0))
    print(f"| world | bars | same-sign share, k = 3..70 | momentum Sharpe, k = 3..70 | lag-1 autocorrelation | "
          f"high-bar KS (1% critical {crit:.4f}) | within the bands |")
    print("|---|---|---|---|---|---|---|")
    for world, gen, f in rows:
        ks = f"{f['high_bar_ks']:.4f}" if "high_bar_ks" in f else "–"
        ok = ("yes" if bands(f) else "**no**") if world.startswith("null") else "–"
        print(f"| {world} | {gen} | {_span(f['same_sign'], '.3f')} | {_span(f['momentum_sharpe'], '+.2f')} | "
              f"{f['lag1_autocorr']:+.4f} | {ks} | {ok} |", flush=True)
    print(f"days closing within 2% of the range from an extreme: real {near_extreme_close_share(real):.3f}")
    t0, c0 = time.perf_counter(), time.process_time()
    full = generate_intraday(real)
    t1, c1 = time.perf_counter() - t0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        cached_intraday(real, folder=tmp)
        t0 = time.perf_counter()
        cached_intraday(real, folder=tmp)
        t_cache = time.perf_counter() - t0
    print(f"full 20 years ({len(full):,} bars): {v} {t1:.2f} s (cpu {c1:.2f} s), from the on-disk cache {t_cache:.2f} s")


if __name__ == "__main__":
    main()
