"""LLM overlay: a language model reviews a strategy's decision under enforced rules, with replay."""
from mltrade.llm.anonymize import PriceMap, anonymize_request
from mltrade.llm.cache import MODES, ReplayCache, ReplayMiss, Responder, cache_key, call_key, dry_answer
from mltrade.llm.client import ChatAnswer, LLMCallError, LLMClient, LLMConfigError
from mltrade.llm.contract import (OUTCOMES, REASONS, ContractError, ContractRules, LLMRequest, LLMResponse,
                                  Verdict, extract_json, parse_response, parse_text, validate)
from mltrade.llm.build import CONFIG_DEFAULTS, build_overlay
from mltrade.llm.overlay import LLMOverlay, OverlayRecord
from mltrade.llm.session_pricing import price_decision, pricing_for, trades_pnl_on_sessions
from mltrade.llm.prompt import RESPONSE_SCHEMA, SYSTEM_PROMPT, build_messages, repair_messages

__all__ = [
    "PriceMap", "anonymize_request",
    "MODES", "ReplayCache", "ReplayMiss", "Responder", "cache_key", "call_key", "dry_answer",
    "ChatAnswer", "LLMCallError", "LLMClient", "LLMConfigError",
    "OUTCOMES", "REASONS", "ContractError", "ContractRules", "LLMRequest", "LLMResponse", "Verdict",
    "extract_json", "parse_response", "parse_text", "validate",
    "CONFIG_DEFAULTS", "LLMOverlay", "OverlayRecord", "build_overlay", "price_decision",
    "pricing_for", "trades_pnl_on_sessions",
    "RESPONSE_SCHEMA", "SYSTEM_PROMPT", "build_messages", "repair_messages",
]
