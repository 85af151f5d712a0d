"""Prompt text and the JSON schema of the answer.

The content follows the original overlay: the ML direction and barrier, the
current index price, the barrier's distance and the last candles; the rules
(long barrier below the price, short above; lower risk by moving the barrier
further away; a reversal keeps at least the ML distance) are stated here and
also enforced in :mod:`mltrade.llm.contract`.
"""
from __future__ import annotations

import json

from mltrade.llm.contract import LLMRequest

PROMPT_VERSION = 1

SYSTEM_PROMPT = """You review intraday trades in knock-out certificates (turbos) on a stock index.
A machine-learning model proposes a direction (Long or Short) and a knock-out barrier.
The certificate becomes worthless when the index touches the barrier; a barrier closer
to the price means more leverage and more risk.

Look at the recent 5-minute candles (trend, volatility, ranges) and decide whether to
confirm the proposal, move the barrier, reverse the direction, or skip the trade.

Rules:
- A Long barrier must lie below the current price; a Short barrier above it.
- To lower risk, move the barrier further away from the price. Never move it closer
  than the proposed barrier.
- If you reverse the direction, the new barrier must be at least as far from the price
  as the proposed barrier is.
- Answer with one JSON object and nothing else:
  {"action": "BUY" | "SKIP", "direction": "Long" | "Short", "barrier": <number>,
   "reasoning": "<short text>"}"""

REPAIR_PROMPT = """Your previous answer could not be used: {error}
Reply again with only one valid JSON object of this form and nothing else:
{{"action": "BUY" | "SKIP", "direction": "Long" | "Short", "barrier": <number>,
  "reasoning": "<short text>"}}"""

#: JSON schema sent as ``response_format`` to servers that support structured output
RESPONSE_SCHEMA = {
    "name": "knockout_review",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["BUY", "SKIP"]},
            "direction": {"type": "string", "enum": ["Long", "Short"]},
            "barrier": {"type": "number"},
            "reasoning": {"type": "string"},
        },
        "required": ["action", "direction", "barrier", "reasoning"],
        "additionalProperties": False,
    },
}


ANONYMIZED_NOTE = ("Prices are shown on an undisclosed scale and times as exchange-local times of day; "
                   "judge the shape of the moves, not the level.")


def build_messages(request: LLMRequest, anonymized: bool = False) -> list[dict]:
    """Chat messages (system + user) asking the model to review ``request`` (``anonymized``: say that
    prices are rescaled and dates left out; see :mod:`mltrade.llm.anonymize`)."""
    p = request.to_payload()
    lines = [ANONYMIZED_NOTE] if anonymized else []
    lines += [
        f"Proposed direction: {p['ml_direction']}",
        f"Proposed knock-out barrier: {p['ml_barrier']}",
        f"Current index price: {p['current_price']}",
        f"Distance to the barrier: {p['barrier_distance_pct']:.2f}% of the price",
    ]
    if p["decision_time"]:
        lines.append(f"Decision time (exchange local): {p['decision_time']}")
    if p["context"]:
        lines.append("Context: " + json.dumps(p["context"], sort_keys=True))
    lines.append(f"Last {len(p['candles'])} candles (oldest first, time/open/high/low/close):")
    for c in p["candles"]:
        lines.append(f"{c['time']} {c['open']} {c['high']} {c['low']} {c['close']}")
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "\n".join(lines)}]


def repair_messages(messages: list[dict], bad_answer: str, error: str) -> list[dict]:
    """The conversation plus the unusable answer and a request to repair it."""
    return list(messages) + [{"role": "assistant", "content": bad_answer or ""},
                             {"role": "user", "content": REPAIR_PROMPT.format(error=error)}]
