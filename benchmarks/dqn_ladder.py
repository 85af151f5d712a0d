"""The DQN ensembles' learner ladder with the default `[dqn]` config, on the sample or on the null world.

    python benchmarks/dqn_ladder.py                # the sample: what `mltrade train dqn` prints
    python benchmarks/dqn_ladder.py --world null   # a Brownian market with no pattern (feeds.artefacts.null_world)

Prints `mltrade train dqn`'s lines (validation, holdout, SPA, the ladder tables and verdicts, registry) and the
wall time. The model goes into a temporary registry (nothing is kept in ./.mltrade). On the null world nothing
is there to learn: every rung's holdout edge should be luck (SPA p > 0.05).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=["sample", "null"], default="sample")
    ap.add_argument("--seed", type=int, default=1, help="null world's seed")
    args = ap.parse_args()
    from mltrade.commands.train_dqn import report_lines
    from mltrade.config import load_config
    from mltrade.models.dqn.pipeline import train_walk_forward

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, {"dqn": {"registry": str(Path(tmp) / "models")}})["dqn"]
        daily = None
        if args.world == "null":
            from mltrade.feeds.artefacts import null_world

            daily, _ = null_world(seed=args.seed)      # the sample's XNAS sessions 1999-2018
        t0 = time.time()
        summary = train_walk_forward(cfg, daily=daily, progress=False)
        for line in report_lines(summary):
            print(line)
        print(f"world {args.world}: {time.time() - t0:.0f} s wall")


if __name__ == "__main__":
    main()
