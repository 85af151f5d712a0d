"""The ``[llm]`` section and the :class:`~mltrade.llm.overlay.LLMOverlay` built from it (:func:`build_overlay`):
its defaults (:data:`CONFIG_DEFAULTS`), the checks of its values, the client, cache and responder."""
from __future__ import annotations

import math

from mltrade.llm.cache import MODES, ReplayCache, Responder
from mltrade.llm.client import DEFAULT_BASE_URL, DEFAULT_KEY_ENV, DEFAULT_MODEL, LLMClient
from mltrade.llm.contract import ContractRules
from mltrade.llm.overlay import LLMOverlay

CONFIG_DEFAULTS: dict = {
    "enabled": False,
    "mode": "dry",
    "base_url": DEFAULT_BASE_URL,
    "model": DEFAULT_MODEL,
    "api_key_env": DEFAULT_KEY_ENV,
    "temperature": 0.7,
    "max_tokens": 1024,
    "timeout": 30.0,
    "max_retries": 2,
    "structured_output": True,
    "candles": 17,
    "on_failure": "ml",
    "repair": True,
    "closer_barrier": "refuse",
    "max_leverage": 50.0,
    "leverage_mode": "clamp",
    "cache_path": ".mltrade/llm-cache.sqlite",     # under $MLTRADE_STATE_DIR (mltrade.state)
    "anonymize": True,
    "anonymize_seed": 0,
    "max_consecutive_failures": 5,
}


def build_overlay(config: dict, live: bool = False) -> LLMOverlay:
    """An :class:`LLMOverlay` from the ``[llm]`` section (or a whole config holding one).

    ``live``: for live trading, where prompts keep real dates and prices (``anonymize`` applies to
    backtests, whose future a model may remember). Modes that call the API check the key here."""
    section = config.get("llm", config) if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise ValueError(f"llm: expected a table of settings, got {type(config).__name__}")
    unknown = sorted(set(section) - set(CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"[llm]: unknown key(s) {unknown}; valid keys: {sorted(CONFIG_DEFAULTS)}")
    cfg = {**CONFIG_DEFAULTS, **section}
    if cfg["mode"] not in MODES:
        raise ValueError(f"[llm] mode: expected one of {MODES}, got {cfg['mode']!r}")
    max_lev = cfg["max_leverage"]
    if max_lev is not None and (not isinstance(max_lev, (int, float)) or isinstance(max_lev, bool)):
        raise ValueError(f"[llm] max_leverage: expected a number (0 = no cap), got {max_lev!r}")
    for name in ("anonymize", "repair", "structured_output"):
        if not isinstance(cfg[name], bool):
            raise ValueError(f"[llm] {name}: expected true or false, got {cfg[name]!r}")
    if not isinstance(cfg["anonymize_seed"], int) or isinstance(cfg["anonymize_seed"], bool):
        raise ValueError(f"[llm] anonymize_seed: expected an integer, got {cfg['anonymize_seed']!r}")
    rules = ContractRules(closer_barrier=cfg["closer_barrier"],
                          max_leverage=None if not max_lev or math.isinf(max_lev) else float(max_lev),
                          leverage_mode=cfg["leverage_mode"])
    client = None
    if cfg["mode"] != "dry":
        client = LLMClient(base_url=cfg["base_url"], model=cfg["model"], api_key_env=cfg["api_key_env"],
                           temperature=cfg["temperature"], max_tokens=cfg["max_tokens"],
                           timeout=cfg["timeout"],
                           max_retries=cfg["max_retries"], structured=cfg["structured_output"])
    if client is not None and cfg["mode"] in ("live", "record"):
        client.check_key(cfg["mode"])  # before anything is created: a missing key fails at start
    from mltrade.state import relocate
    cache = ReplayCache(relocate(cfg["cache_path"])) if cfg["mode"] in ("record", "replay") else None
    return LLMOverlay(Responder(cfg["mode"], client, cache, max_failures=cfg.get("max_consecutive_failures", 0)),
                      rules, candles=cfg["candles"],
                      on_failure=cfg["on_failure"], repair=bool(cfg["repair"]),
                      anonymize=bool(cfg["anonymize"]) and not live, seed=cfg["anonymize_seed"])
