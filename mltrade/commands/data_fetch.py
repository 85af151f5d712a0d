"""``mltrade fetch`` (also ``mltrade data fetch``): download TwelveData bars into the Parquet cache."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time

import pandas as pd


def add_fetch_arguments(p: argparse.ArgumentParser) -> None:
    """Add the fetch options to ``p`` and set its handler (used by ``fetch`` and ``data fetch``)."""
    p.add_argument("--symbol", required=True, help="TwelveData symbol, e.g. NDX or GDAXI")
    p.add_argument("--interval", default="5min", help="bar interval (1min, 5min, ..., 1day; default 5min)")
    p.add_argument("--start", required=True, help="first date/time, exchange-local (YYYY-MM-DD[ HH:MM])")
    p.add_argument("--end", help="end (exclusive), exchange-local; default: now (last completed bar)")
    p.add_argument("--data-dir", help="cache folder (default: [twelvedata] data_dir)")
    p.add_argument("--config", help="TOML config file (section [twelvedata])")
    p.add_argument("--credits-per-minute", type=int, help="override the credit budget per minute")
    p.add_argument("--base-url", help="override the API root (e.g. a local test server)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_fetch)


def register(sub) -> None:
    """Register the top-level ``fetch`` command."""
    p = sub.add_parser("fetch", help="download TwelveData bars into the local Parquet cache",
                       description="Download TwelveData bars into the local Parquet cache; re-running "
                                   "fetches only what is missing.")
    add_fetch_arguments(p)


def _section(config_path) -> "TwelveDataSettings":
    from mltrade.config import load_config
    from mltrade.settings import TwelveDataSettings, settings_of  # noqa: F401 (the annotation)
    return settings_of(load_config(config_path)).twelvedata


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch the missing bars of ``[start, end)``; print bars fetched, requests made and credits used."""
    from tqdm import tqdm

    from mltrade.feeds.cache import BarCache
    from mltrade.feeds.twelvedata import (TwelveDataError, TwelveDataRateLimitError, TwelveDataServerError,
                                          _guess_tz, client_from_config, interval_minutes)

    interval_minutes(args.interval)
    sec = _section(args.config)
    if args.base_url:
        sec = dataclasses.replace(sec, base_url=args.base_url)
    if args.credits_per_minute:
        sec = dataclasses.replace(sec, credits_per_minute=args.credits_per_minute)
    data_dir = os.path.expanduser(args.data_dir or sec.data_dir)
    try:
        start = pd.Timestamp(args.start)
        end = pd.Timestamp(args.end) if args.end else None
    except ValueError as exc:
        raise ValueError(f"--start/--end: expected YYYY-MM-DD[ HH:MM], {exc}") from None
    bar = tqdm(total=100.0, unit="%", disable=args.no_progress, file=sys.stderr,
               bar_format="{bar}| {n:.0f}% [{elapsed}<{remaining}] {desc}{postfix}")
    waiting = {"reason": ""}
    failures: dict = {}   # failure kind -> count: one line per kind, then a count in the bar

    def on_wait(seconds: float, reason: str) -> None:
        kind = failure_kind(reason)
        if kind is None:                      # the credit budget: a planned wait, not a failure
            waiting["reason"] = f": {reason}"
            return
        failures[kind] = failures.get(kind, 0) + 1
        if failures[kind] == 1:
            bar.write(f"{_label(args)}: {reason.split('after: ', 1)[-1]}; retrying (up to "
                      f"{client.max_retries} retries per request, then giving up)", file=sys.stderr)
        waiting["reason"] = " (" + ", ".join(f"{k} ×{n}" for k, n in failures.items()) + ")"

    def sleep(seconds: float) -> None:
        """Sleep, counting the wait down in the progress bar (rate limits can take a minute)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            bar.set_postfix_str(f"waiting {left:.0f} s{waiting['reason']}", refresh=True)
            time.sleep(min(1.0, left))
        bar.set_postfix_str("", refresh=True)

    try:
        client = client_from_config(sec, sleep=sleep, on_wait=on_wait)
    except TwelveDataError as exc:
        _close_quietly(bar)
        print(f"{_label(args)}: error: {exc}", file=sys.stderr)
        return 2
    cache = BarCache(data_dir)
    tz = _guess_tz(args.symbol)
    end_eff = end if end is not None else client._now().tz_convert(tz).tz_localize(None)
    total = max((end_eff - start).total_seconds(), 1.0)
    done = {"bars": 0}

    def on_window(w_start, w_end, n) -> None:
        done["bars"] += n
        bar.n = min(100.0, max(bar.n, (w_end - start).total_seconds() / total * 100.0))
        bar.set_description_str(f"{args.symbol} through {w_end:%Y-%m-%d}: {done['bars']} bars")
        bar.refresh()

    try:
        res = cache.update(client, args.symbol, args.interval, start, end, tz=tz, on_window=on_window)
    except TwelveDataError as exc:
        _close_quietly(bar)
        # resuming helps only after a passing failure (rate limit, server down); a wrong key, symbol or
        # interval fails the same way again
        advice = ""
        if isinstance(exc, (TwelveDataRateLimitError, TwelveDataServerError)):
            advice = (f" ({done['bars']} bars saved, {client.stats.credits} credits used; "
                      f"re-run the same command to resume)")
        print(f"{_label(args)}: error: {exc}{advice}", file=sys.stderr)
        return 1
    bar.n = 100.0
    bar.set_postfix_str("")
    bar.close()
    print(f"{args.symbol} {args.interval}: {res.new_bars} bars fetched, {res.requests} requests made, "
          f"{res.credits} credits used; cache {res.path} holds {res.total_bars} bars")
    return 0


def failure_kind(reason: str):
    """The kind of a retry's failure ("connection failed", "time-out", "rate limited", "server error HTTP 502"),
    ``None`` for a wait that is no failure (the credit budget)."""
    if "after: " not in reason:
        return None
    text = reason.split("after: ", 1)[1]
    for pattern, kind in ((r"connection failed \((\w+)", r"connection failed (\1)"), (r"time-out", "time-out"),
                          (r"rate limited", "rate limited"), (r"server error HTTP (\d+)", r"server error HTTP \1")):
        m = re.search(pattern, text)
        if m:
            return m.expand(kind)
    return "other failure"


def _label(args) -> str:
    """``mltrade data fetch`` or ``mltrade fetch``: the command as the user typed it."""
    return "mltrade data fetch" if getattr(args, "command", "") == "data" else "mltrade fetch"


def _close_quietly(bar) -> None:
    """Close a progress bar and erase it, so an error is the only line left."""
    bar.leave = False
    bar.close()
