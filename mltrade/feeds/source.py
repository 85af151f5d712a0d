"""Where a run's bars come from: ``sample``, a CSV path or ``twelvedata:SYMBOL`` (the fetch cache).

:func:`bars_for` loads the bars of a source cut to the sessions ``start``..``end`` (inclusive) and says
in one line (stderr) when the requested range reaches beyond the data; :func:`load_bars` does the same
for a config's ``[backtest]`` section. Backtests, sweeps and model training all take their bars here.
"""
from __future__ import annotations

import sys
from typing import Optional

import pandas as pd

from mltrade.config import ConfigError
from mltrade.feeds.loader import load_csv
from mltrade.feeds.sample import sample_intraday
from mltrade.settings import settings_of

#: a requested start or end this many days beyond the first / last bar is reported as clipped
CLIP_SLACK_DAYS = 5

__all__ = ["CLIP_SLACK_DAYS", "bars_for", "date_of", "load_bars"]


def bars_for(source: str, start: Optional[str] = None, end: Optional[str] = None, *, seed: int = 42,
             interval: int = 5, data_dir: str = ".mltrade/data", field: str = "backtest") -> pd.DataFrame:
    """Bars of ``source`` — ``sample``, a CSV path or ``twelvedata:SYMBOL`` (the fetch cache) — cut to
    the sessions ``start``..``end`` (inclusive). ``field`` names the config section in errors."""
    start, end = start or None, end or None
    first, last = (date_of(v, f"{field}.{k}") for v, k in ((start, "start"), (end, "end")))
    if first is not None and last is not None and first > last:
        raise ConfigError(f"{field}.start/end: the start {start} is after the end {end}")
    if source == "sample":
        return _clip_note(sample_intraday(start, end, seed=int(seed), interval=int(interval)), start, end, source, field)
    if str(source).startswith("twelvedata:"):
        symbol = source.split(":", 1)[1].strip()
        if not symbol:
            raise ConfigError(f"{field}.data: {source!r} names no symbol; expected twelvedata:SYMBOL, e.g. twelvedata:NDX")
        return _clip_note(_cached_bars(symbol, f"{int(interval)}min", data_dir, start, end), start, end, source, field)
    df = load_csv(source)
    attrs = dict(df.attrs)
    tz = df.index.tz
    if start:
        df = df[df.index >= pd.Timestamp(start).tz_localize(tz)]
    if end:
        df = df[df.index < pd.Timestamp(end).tz_localize(tz) + pd.Timedelta(days=1)]
    if df.empty:
        raise ConfigError(f"{field}.start/end: no bars of {source} {_between(start, end)}")
    df.attrs = attrs
    return _clip_note(df, start, end, source, field)


def load_bars(cfg: dict) -> pd.DataFrame:
    """The bars a config's [backtest] section asks for (see :func:`bars_for`)."""
    s = settings_of(cfg)
    b = s.backtest
    return bars_for(b.data, b.start, b.end, seed=b.seed, interval=b.interval, data_dir=s.twelvedata.data_dir)


def date_of(value: Optional[str], name: str) -> Optional[pd.Timestamp]:
    """``value`` as a date, or a ConfigError naming ``name`` (``backtest.start``) and what was expected."""
    if value is None:
        return None
    try:
        return pd.Timestamp(str(value))
    except (ValueError, TypeError):
        raise ConfigError(f"{name}: expected a date (YYYY-MM-DD), got {value!r}") from None


def _between(start: Optional[str], end: Optional[str]) -> str:
    """"between 2019-01-01 and 2019-06-01", "from 2019-01-01 on", "up to ...", "at all"."""
    if start and end:
        return f"between {start} and {end}"
    return f"from {start} on" if start else f"up to {end}" if end else "at all"


def _clip_note(df: pd.DataFrame, start: Optional[str], end: Optional[str], source: str, field: str) -> pd.DataFrame:
    """Say in one line (stderr) when the requested range reaches beyond the data and was clipped to it."""
    if df.empty:
        return df
    first, last = df.index[0].date(), df.index[-1].date()
    slack = pd.Timedelta(days=CLIP_SLACK_DAYS)
    cut = []
    if start and pd.Timestamp(start) < pd.Timestamp(first) - slack:
        cut.append(f"start {start}")
    if end and pd.Timestamp(end) > pd.Timestamp(last) + slack:
        cut.append(f"end {end}")
    if cut:
        print(f"mltrade: note: [{field}] {' and '.join(cut)} outside the data of {source}; "
              f"running its sessions {first} .. {last}", file=sys.stderr)
    return df


def _cached_bars(symbol: str, interval: str, data_dir: str, start: Optional[str],
                 end: Optional[str]) -> pd.DataFrame:
    """Bars of ``symbol`` from the local cache that ``mltrade data fetch`` fills."""
    from mltrade.calendars import calendar_for_symbol
    from mltrade.feeds.cache import BarCache

    cache = BarCache(data_dir)
    end_excl = str((pd.Timestamp(end) + pd.Timedelta(days=1)).date()) if end else None
    df = cache.load(symbol, interval, start, end_excl)
    if df.empty:
        raise ConfigError(f"backtest.data: no cached {interval} bars of {symbol} in {cache.path(symbol, interval)}"
                          f" {_between(start, end)}; run `mltrade data fetch --symbol {symbol} "
                          f"--interval {interval} --start ...` first")
    df.attrs.update(symbol=symbol, calendar=calendar_for_symbol(symbol),
                    source=f"TwelveData cache {cache.path(symbol, interval)}", synthetic_intraday=False)
    return df
