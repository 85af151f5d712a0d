"""The NCP's learner ladder on the sample and on the null world (issue 17): does the default NCP learn?

Trains the default NCP (``mltrade train ncp --defaults`` settings: the [ncp] config, default parameters)
once per world, without touching any registry (``offer=False``, a temporary state dir), and prints the
ladder: always-long, always-short, random, the momentum rule, L2 logistic regression and gradient boosting
on the NCP's own inputs and folds, and the NCP, validation (the search folds' scored ranges) beside the
holdout (scored once), with the SPA verdict against the best simple learner chosen on validation.

Worlds: ``sample`` (the embedded sample data, the README's data); ``null`` (a Brownian market with varying
volatility, :func:`mltrade.feeds.artefacts.null_world`: nothing to learn, the NCP's edge over the best
simple learner should not be significant, SPA p > 0.05).

Run: python benchmarks/bench_ncp_ladder.py [--world sample|null|both] [--cell ltc|cfc] [--json out.json]
     [--set KEY=VALUE ...] [--param KEY=VALUE ...] [--check]

``--check`` (issue 17 targets 2a and 2c; exit status 1 when one fails): on the sample the NCP is not degenerate
and its validation and holdout log-products are at least the logistic regression's on the same sessions; on
the null world its SPA p-values against the best simple learner are above 0.05.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def null_dataset(s, seed: int = 1):
    """The NCP dataset of the null world's sessions in ``s.start .. s.end`` (its own daily bars as warm-up)."""
    import pandas as pd

    from mltrade.feeds.artefacts import null_world
    from mltrade.models.ncp.dataset import build_dataset
    daily, bars = null_world(seed=seed)
    lo = pd.Timestamp(s.start, tz=bars.index.tz)
    hi = pd.Timestamp(s.end, tz=bars.index.tz) + pd.Timedelta(days=1)
    bars = bars[(bars.index >= lo) & (bars.index < hi)]
    hist = daily[daily.index < pd.Timestamp(s.start)]
    return build_dataset(bars, n_candles=s.n_candles, spec=s.payoff(), calendar=s.exchange,
                         interval=s.interval, seq_distance=s.seq_distance, daily_history=hist)


def run(world: str, cell: str, overrides: dict | None = None, params: dict | None = None) -> dict:
    from mltrade.config import load_config
    from mltrade.models.ladder import format_ladder
    from mltrade.models.ncp.data import dataset_for
    from mltrade.models.ncp.final import train_final
    from mltrade.models.ncp.fit import DEFAULT_PARAMS, configure_tensorflow
    from mltrade.models.ncp.settings import NCPSettings
    s = NCPSettings.from_config(load_config(None, {"ncp": overrides} if overrides else None))
    s = dataclasses.replace(s, cell=cell, state_dir=tempfile.mkdtemp(prefix="bench-ncp-"))
    device = configure_tensorflow(s.threads)
    t0 = time.perf_counter()
    ds = dataset_for(s) if world == "sample" else null_dataset(s)
    t_data = time.perf_counter() - t0
    res = train_final({"epochs": s.max_epochs, **(params or {})}, ds, s, offer=False)
    t_train = time.perf_counter() - t0 - t_data
    lad = res.metrics["ladder"]
    print(f"\n== world {world}: {len(ds)} sessions {ds.dates[0]} .. {ds.dates[-1]}, cell {cell}, device "
          f"{device}; dataset {t_data:.0f} s, training {t_train:.0f} s; params {DEFAULT_PARAMS} "
          f"overridden by {params or {}}; settings overridden by {overrides or {}}")
    print(f"degenerate: {res.metrics['degenerate']} {res.metrics['degenerate_reason']}; holdout long share "
          f"{res.metrics['holdout_long_share']:.2f}")
    print(format_ladder(lad))
    return {"world": world, "cell": cell, "sessions": len(ds), "dataset_s": t_data, "train_s": t_train,
            "degenerate": res.metrics["degenerate"], "ladder": lad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--world", choices=["sample", "null", "both"], default="both")
    ap.add_argument("--cell", choices=["ltc", "cfc"], default="ltc")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an [ncp] setting (TOML value), e.g. --set seeds=1")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model parameter (TOML value), e.g. --param skip_l2=0.3")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the issue-17 targets hold (see above)")
    a = ap.parse_args()
    worlds = ["sample", "null"] if a.world == "both" else [a.world]
    import tomllib
    over = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (x.split("=", 1) for x in a.set)}
    params = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (x.split("=", 1) for x in a.param)}
    out = [run(w, a.cell, over, params) for w in worlds]
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
    if a.check:
        failed = [m for r in out for m in check(r)]
        for m in failed:
            print(f"CHECK FAILED: {m}")
        print("checks: " + ("FAILED" if failed else "passed"))
        raise SystemExit(1 if failed else 0)


def check(r: dict) -> list:
    """What fails of the world's targets (issue 17: 2a on the sample, 2c on the null world)."""
    rungs, v = r["ladder"]["rungs"], r["ladder"]["verdict"]
    bad = []
    if r["world"] == "sample":
        if r["degenerate"]:
            bad.append("sample: the default NCP is degenerate")
        for part in ("validation", "holdout"):
            n, lg = rungs["ncp"][part]["log_product"], rungs["logistic"][part]["log_product"]
            if n < lg - 1e-9:
                bad.append(f"sample: NCP {part} log-product {n:+.3f} < logistic {lg:+.3f}")
    else:
        for key in ("spa_pvalue_validation", "spa_pvalue_holdout"):
            if v[key] is not None and v[key] <= 0.05:
                bad.append(f"null world: {key} = {v[key]:.3f} <= 0.05 (an edge where there is none)")
    return bad


if __name__ == "__main__":
    main()
