"""Typed settings of every config section, their defaults taken from the shipped TOML (one source).

:func:`section` turns a class of annotated fields into a dataclass whose defaults are the values of
one section of ``mltrade/default_config.toml`` + ``mltrade/config.d/*.toml``: a field the TOML also
sets may not carry a default of its own in code, and every key the TOML sets must be a field, so the
two cannot drift apart (checked when the class is made). :class:`Settings` holds the ground sections
of a loaded configuration; :func:`settings_of` builds it once per loaded dict.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, Callable, Dict, Optional, Tuple, Type, TypeVar

from mltrade.config_files import CONFIG_D, DEFAULT_FILE, ConfigError, read_toml

T = TypeVar("T")


@lru_cache(maxsize=1)
def _shipped() -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for path in [DEFAULT_FILE, *sorted(CONFIG_D.glob("*.toml"))]:
        for name, table in read_toml(path).items():
            out.setdefault(name, {}).update(table)
    return out


def shipped_section(name: str) -> Dict[str, Any]:
    """A copy of the shipped TOML's ``[name]`` section (dotted names reach nested tables)."""
    table: Any = _shipped()
    for part in name.split("."):
        table = table[part]
    return copy.deepcopy(table)


def section(name: str, *, own: Tuple[str, ...] = ()) -> Callable[[Type[T]], Type[T]]:
    """Class decorator: a dataclass whose field defaults are the shipped ``[name]`` values.

    ``own``: fields the TOML does not set (run-only values, keys of another section) that keep the
    default written in the class. Any other field without a TOML value, a TOML key without a field,
    or a field with a default in code that the TOML also sets raises ``TypeError`` here.
    """
    def wrap(cls: Type[T]) -> Type[T]:
        table = shipped_section(name)
        notes = cls.__dict__.get("__annotations__", {})
        problems = [f"[{name}] {k} has no field in {cls.__name__}" for k in table if k not in notes]
        for key in notes:
            if key in table:
                if key in cls.__dict__ and not isinstance(cls.__dict__[key], dataclasses.Field):
                    problems.append(f"{cls.__name__}.{key} has a default in code; its default is [{name}] {key}")
                value = table[key]
                setattr(cls, key, field(default_factory=lambda v=value: copy.deepcopy(v))
                        if isinstance(value, (dict, list)) else value)
            elif key not in own:
                problems.append(f"{cls.__name__}.{key} is neither in [{name}] nor declared own=")
        if problems:
            raise TypeError("; ".join(problems))
        made = dataclass(cls)
        made.section_name = name          # type: ignore[attr-defined]
        made.own_fields = tuple(own)      # type: ignore[attr-defined]
        return made
    return wrap


def from_table(cls: Type[T], table: Optional[dict], where: str) -> T:
    """An instance of a :func:`section` class from a config table; unknown keys raise ConfigError."""
    known = {f.name for f in fields(cls)}   # type: ignore[arg-type]
    table = dict(table or {})
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"[{where}]: unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(known))}")
    return cls(**table)


@section("backtest")
class BacktestSettings:
    """``[backtest]``: the data, range, cash and output folder of a run."""

    data: str
    start: str
    end: str
    out: str
    cash: float
    seed: int
    exchange: str
    interval: int
    baselines: bool
    baseline_seed: int


@section("broker")
class BrokerSettings:
    """``[broker]``: fees and whole/fractional certificate counts."""

    commission_fixed: float
    commission_pct: float
    fractional: bool


@section("product")
class ProductSettings:
    """``[product]``: the certificate a strategy trades."""

    kind: str
    ratio: float
    spread: float
    fx: float
    barrier_step: float
    barrier_buffer: float
    financing_rate: float
    financing_spread: float
    unwind: str
    distance: float

    def to_dict(self) -> dict:
        """The section as the plain table :class:`~mltrade.products.CertificateSpec` reads."""
        return dataclasses.asdict(self)


@section("strategy")
class StrategySettings:
    """``[strategy]``: the strategy's name and its parameters (free-form, checked by the strategy)."""

    name: str
    params: dict


@section("twelvedata")
class TwelveDataSettings:
    """``[twelvedata]``: the HTTP client's key, rate limit, retries and cache folder."""

    api_key_env: str
    api_key: str
    base_url: str
    credits_per_minute: int
    credit_window: float
    timeout: float
    max_retries: int
    backoff_base: float
    backoff_max: float
    outputsize: int
    data_dir: str
    poll_delay: float


@section("llm")
class LLMSettings:
    """``[llm]``: the overlay's mode, provider, rules and cache."""

    enabled: bool
    mode: str
    base_url: str
    model: str
    api_key_env: str
    temperature: float
    max_tokens: int
    timeout: float
    max_retries: int
    max_consecutive_failures: int
    structured_output: bool
    candles: int
    on_failure: str
    repair: bool
    closer_barrier: str
    max_leverage: float
    leverage_mode: str
    cache_path: str
    anonymize: bool
    anonymize_seed: int


@section("live.notify")
class NotifySettings:
    """``[live.notify]``: where alerts go and how many a minute."""

    slack_webhook_env: str
    webhook_env: str
    max_per_minute: int


@section("live")
class LiveSettings:
    """``[live]``: venue, opt-ins, browser, safety limits, journal and replay."""

    venue: str
    live: bool
    confirm: str
    driver_path: str
    chromium_path: str
    headless: bool
    timeout: float
    confirm_timeout: float
    on_unknown: str
    adopt_stop: float
    stop_retries: int
    on_stop_failure: str
    close_retries: int
    plausibility_factor: float
    twofa_source: str
    max_stake: float
    max_leverage: float
    daily_loss_limit: float
    max_trades_per_day: int
    max_open_positions: int
    kill_switch_file: str
    journal_path: str
    screenshots_dir: str
    log_file: str
    report_dir: str
    symbol: str
    close_grace_s: float
    replay_start: str
    replay_speed: float
    base_urls: dict
    notify: dict
    profiles: dict


@dataclass
class Settings:
    """The ground sections of one loaded configuration, typed (model and sweep sections have their
    own classes: :class:`mltrade.models.ncp.settings.NCPSettings`, ``DQNSettings``, ``SweepSettings``)."""

    backtest: BacktestSettings
    broker: BrokerSettings
    product: ProductSettings
    strategy: StrategySettings
    twelvedata: TwelveDataSettings
    llm: LLMSettings
    live: LiveSettings

    @classmethod
    def from_config(cls, cfg: dict) -> "Settings":
        """Typed sections of a loaded config (sections it lacks take the shipped defaults)."""
        kw = {f.name: from_table(f.type if isinstance(f.type, type) else _SECTIONS[f.name],
                                 cfg.get(f.name), f.name) for f in fields(cls)}
        return cls(**kw)

    @property
    def notify(self) -> NotifySettings:
        """``[live.notify]`` typed."""
        return from_table(NotifySettings, self.live.notify, "live.notify")


_SECTIONS = {"backtest": BacktestSettings, "broker": BrokerSettings, "product": ProductSettings,
             "strategy": StrategySettings, "twelvedata": TwelveDataSettings, "llm": LLMSettings,
             "live": LiveSettings}


def settings_of(cfg: Any) -> Settings:
    """The typed :class:`Settings` of a loaded config dict (or the object itself when already typed)."""
    return cfg if isinstance(cfg, Settings) else Settings.from_config(cfg)


SECTION_CLASSES: Dict[str, type] = dict(_SECTIONS, **{"live.notify": NotifySettings})
