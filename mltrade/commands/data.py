"""``mltrade data sample`` (and ``mltrade data fetch`` when the TwelveData client is installed)."""
from __future__ import annotations

import importlib.util

from mltrade.cli import subcommand_group


def register(sub) -> None:
    group = subcommand_group(sub, "data", "sample data and market data downloads")
    p = group.add_parser("sample", help="write the embedded sample (synthetic 5-minute bars) as CSV")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--start", help="first session (YYYY-MM-DD)")
    p.add_argument("--end", help="last session (YYYY-MM-DD)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    p.add_argument("--daily", action="store_true", help="write the real daily bars instead")
    p.set_defaults(func=_sample)
    if importlib.util.find_spec("mltrade.commands.data_fetch") is not None:
        from mltrade.commands import data_fetch
        if hasattr(data_fetch, "add_fetch_arguments"):
            f = group.add_parser("fetch", help="download TwelveData bars into the local cache")
            data_fetch.add_fetch_arguments(f)


def _sample(args) -> int:
    from mltrade.feeds.loader import meta_path, write_csv
    from mltrade.feeds.sample import load_daily, sample_intraday

    if args.daily:
        df = load_daily(args.start, args.end)
        df.index = df.index.tz_localize("America/New_York")
    else:
        df = sample_intraday(args.start, args.end, seed=args.seed)
    write_csv(df, args.out)
    print(f"wrote {len(df)} bars to {args.out}" + ("" if args.daily else
          f" (synthetic intraday; marked so in {meta_path(args.out).name}, which reports read)"))
    return 0
