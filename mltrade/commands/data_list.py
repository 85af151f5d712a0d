"""``mltrade data list``: the bars a backtest can read — the embedded sample and every cached symbol and
interval (first and last bar, bar count, fetched ranges)."""
from __future__ import annotations

import os
from pathlib import Path


def register(sub) -> None:
    from mltrade.cli import subcommand_group

    group = subcommand_group(sub, "data", "sample data and market data downloads")
    p = group.add_parser("list", help="list the cached symbols and intervals with their date ranges",
                         description="List the data --data can name: 'sample' (the embedded NASDAQ Composite) "
                                     "and each symbol and interval in the TwelveData cache (--data-dir, default "
                                     "[twelvedata] data_dir), with the first and last bar, the number of bars and "
                                     "the ranges fetched. Use a listed symbol as --data twelvedata:SYMBOL.")
    p.add_argument("--data-dir", help="cache folder (default [twelvedata] data_dir)")
    p.add_argument("--config", help="TOML config file")
    p.set_defaults(func=run)


def cached(data_dir) -> list:
    """One row per cache file: symbol, interval, first, last, bars, covered, path (or ``error``)."""
    from mltrade.feeds.cache import CacheCorruptError, read_cache

    rows = []
    for f in sorted(Path(data_dir).expanduser().glob("*_*.parquet")):
        symbol, interval = f.stem.rsplit("_", 1)
        try:
            df, meta = read_cache(f)
        except CacheCorruptError as exc:
            rows.append({"symbol": symbol, "interval": interval, "path": str(f), "error": str(exc)})
            continue
        rows.append({"symbol": symbol, "interval": interval, "path": str(f), "bars": len(df),
                     "first": str(df.index[0]) if len(df) else "", "last": str(df.index[-1]) if len(df) else "",
                     "covered": [f"{a} .. {b}" for a, b in meta.get("covered", [])]})
    return rows


def run(args) -> int:
    from mltrade.config import load_config
    from mltrade.feeds.sample import load_daily
    from mltrade.settings import settings_of

    cfg = load_config(args.config)
    data_dir = args.data_dir or settings_of(cfg).twelvedata.data_dir
    daily = load_daily()
    print(f"sample: NASDAQ Composite daily bars {daily.index[0].date()} .. {daily.index[-1].date()} "
          f"({len(daily):,} sessions; 5-minute bars synthetic): --data sample")
    rows = cached(data_dir)
    where = os.path.expanduser(str(data_dir))
    if not rows:
        print(f"cache {where}: empty (fill it with `mltrade data fetch --symbol SYMBOL --start YYYY-MM-DD`)")
        return 0
    print(f"cache {where}:")
    for r in rows:
        if "error" in r:
            print(f"  {r['symbol']} {r['interval']}: unreadable ({r['error']})")
            continue
        print(f"  {r['symbol']} {r['interval']}: {r['first'][:16]} .. {r['last'][:16]}, {r['bars']:,} bars; "
              f"fetched {'; '.join(r['covered']) or 'nothing'}: --data twelvedata:{r['symbol']}")
    return 0
