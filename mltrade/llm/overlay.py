"""``LLMOverlay``: a language model reviews any strategy's decision before it is executed.

The overlay composes with every :class:`~mltrade.strategies.base.KnockoutStrategy`
through its ``overlay`` parameter: ``review(decision, context) -> Decision``.
Flow per decision: build the request, ask (API, cache or dry policy), parse;
an unparsable answer gets one repair call; the parsed answer is checked by the
contract's rules; anything that still fails (invalid answer, rule broken,
time-out, HTTP error, refusal) falls back to the ML decision or skips the
trade (``on_failure``); the leverage cap applies to the decision handed on in
every case. With ``anonymize`` the model sees no dates and rescaled prices
(:mod:`mltrade.llm.anonymize`); its barrier is mapped back before the rules
apply. Every review is kept as an :class:`OverlayRecord` with an outcome and a
reason code, for :meth:`LLMOverlay.summary` and :meth:`LLMOverlay.report_section`;
per-review log lines are DEBUG, :meth:`LLMOverlay.summary_line` sums a run up.

The ML-only pricing the summary compares with lives in :mod:`mltrade.llm.session_pricing`; the ``[llm]``
section and :func:`~mltrade.llm.build.build_overlay` in :mod:`mltrade.llm.build`.
"""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Optional

import pandas as pd

from mltrade.llm.anonymize import PriceMap, anonymize_request, barrier_to_real
from mltrade.llm.cache import Responder
from mltrade.llm.client import LLMCallError
from mltrade.llm.contract import (OUTCOMES, REASONS, ContractError, ContractRules, LLMRequest, LLMResponse,
                                  leverage, parse_text, validate)
from mltrade.llm.prompt import build_messages, repair_messages
from mltrade.llm.session_pricing import price_decision, strategy_inputs, trades_pnl_on_sessions
from mltrade.strategies.decision import Decision, DecisionContext

log = logging.getLogger("mltrade.llm")

ON_FAILURE = ("ml", "skip")


@dataclass
class OverlayRecord:
    """One review: the ML decision, the decision handed on, the outcome and its reason code."""

    ml: Decision
    final: Decision
    outcome: str
    reason: str
    failed: bool = False
    reasoning: str = ""
    answers: int = 0
    detail: str = ""

    @property
    def session(self) -> Optional[Any]:
        """Session date of the decision (from its time), if known."""
        t = self.ml.time
        return t.date() if isinstance(t, datetime) else None

    def to_dict(self) -> dict:
        def b(d: Decision) -> Optional[float]:
            return None if not d.direction else d.barrier_level()
        return {"time": None if self.ml.time is None else str(self.ml.time), "price": self.ml.price,
                "ml_direction": self.ml.direction, "ml_barrier": b(self.ml),
                "llm_direction": self.final.direction, "llm_barrier": b(self.final),
                "outcome": self.outcome, "reason": self.reason, "failed": self.failed,
                "reasoning": self.reasoning, "answers": self.answers, "detail": self.detail}


class LLMOverlay:
    """Reviews decisions with a language model under the contract's rules; keeps a record of each."""

    def __init__(self, responder: Responder, rules: ContractRules = ContractRules(), candles: int = 17,
                 on_failure: str = "ml", repair: bool = True, anonymize: bool = False, seed: int = 0) -> None:
        if on_failure not in ON_FAILURE:
            raise ValueError(f"llm.on_failure: expected one of {ON_FAILURE}, got {on_failure!r}")
        if int(candles) < 0:
            raise ValueError(f"llm.candles: expected an integer >= 0, got {candles!r}")
        self.responder = responder
        self.rules = rules
        self.candles = int(candles)
        self.on_failure = on_failure
        self.repair = repair
        self.anonymize = bool(anonymize)
        self.seed = int(seed)
        #: the run's price map (drawn at the first review when ``anonymize``)
        self.prices: Optional[PriceMap] = None
        self.records: list[OverlayRecord] = []
        self._seen: dict = {}

    def __repr__(self) -> str:
        return (f"LLMOverlay(mode={self.responder.mode!r}, client={self.responder.client!r}, "
                f"rules={self.rules}, candles={self.candles}, on_failure={self.on_failure!r}, "
                f"anonymize={self.anonymize})")

    def _decision_key(self, decision: Decision) -> str:
        """The decision's time plus how often that time was reviewed before in this run."""
        t = decision.time
        base = t.isoformat() if isinstance(t, datetime) else str(t)
        n = self._seen.get(base, 0)
        self._seen[base] = n + 1
        return f"{base}#{n}"

    def _shown(self, request: LLMRequest) -> LLMRequest:
        if not self.anonymize:
            return request
        if self.prices is None:
            self.prices = PriceMap.draw(self.seed, request.price)
        return anonymize_request(request, self.prices)

    def _to_real(self, response: LLMResponse) -> LLMResponse:
        if not self.anonymize or response.barrier is None:
            return response
        assert self.prices is not None
        return replace(response, barrier=barrier_to_real(response.barrier, self.prices))

    # -- review ----------------------------------------------------------------
    def review(self, decision: Decision, context: DecisionContext) -> Decision:
        """Return the decision to execute: confirmed, adjusted, reversed, skipped, or the ML one."""
        if decision.direction == 0 or decision.barrier_level() is None:
            return decision
        request = LLMRequest.from_decision(decision, context, self.candles)
        shown = self._shown(request)
        messages = build_messages(shown, anonymized=self.anonymize)
        key = self._decision_key(decision)
        answers = 0
        try:
            text = self.responder.complete(messages, shown, key, 0)
            answers += 1
            try:
                response = parse_text(text)
            except ContractError as first:
                if not self.repair:
                    raise
                log.debug("llm: unusable answer (%s); asking once for a repair", first.code)
                text = self.responder.complete(repair_messages(messages, text, first.message), shown, key, 1)
                answers += 1
                response = parse_text(text)
            response = self._to_real(response)
        except (LLMCallError, ContractError) as e:
            return self._fail(decision, e.code, e.message, answers)
        verdict = validate(request, response, self.rules)
        if not verdict.accepted:
            return self._fail(decision, verdict.reason, REASONS.get(verdict.reason, ""), answers,
                              response.reasoning)
        info = dict(decision.info)
        info["llm"] = {"outcome": verdict.outcome, "reason": verdict.reason, "reasoning": response.reasoning,
                       "ml_direction": decision.direction, "ml_barrier": request.barrier}
        final = Decision(direction=verdict.direction, price=decision.price, time=decision.time,
                         barrier=verdict.barrier, distance=None, stop=decision.stop, source="llm", info=info)
        self.records.append(OverlayRecord(decision, final, verdict.outcome or "", verdict.reason,
                                          reasoning=response.reasoning, answers=answers))
        log.debug("llm: %s (%s) at %s", verdict.outcome, verdict.reason, decision.time)
        return final

    def _fail(self, decision: Decision, code: str, message: str, answers: int,
              reasoning: str = "") -> Decision:
        info = dict(decision.info)
        if self.on_failure == "skip":
            outcome = "skipped"
            info["llm"] = {"outcome": outcome, "reason": code, "detail": message}
            final = decision.replace(direction=0, barrier=None, distance=None, source="llm", info=info)
        else:
            outcome = "fallback"
            info["llm"] = {"outcome": outcome, "reason": code, "detail": message}
            final = decision.replace(info=info)
            cap = self.rules.max_leverage
            d, price, barrier = decision.direction, float(decision.price), decision.barrier_level()
            if cap is not None and barrier is not None and leverage(price, barrier) > cap * (1 + 1e-9):
                # the cap applies to every executed decision, the strategy's own included
                if self.rules.leverage_mode == "refuse":
                    outcome = "skipped"
                    info["llm"].update(outcome=outcome, leverage="refused")
                    final = decision.replace(direction=0, barrier=None, distance=None, source="llm",
                                             info=info)
                else:
                    info["llm"]["leverage"] = "clamped"
                    final = decision.replace(barrier=price * (1 - d / cap), distance=None, info=info)
        log.debug("llm: %s after %s at %s: %s", outcome, code, decision.time, message)
        self.records.append(OverlayRecord(decision, final, outcome, code, failed=True, reasoning=reasoning,
                                          answers=answers, detail=message))
        return final

    # -- reporting -------------------------------------------------------------
    def records_frame(self) -> pd.DataFrame:
        """One row per review (ML vs overlay decision, outcome, reason) for CSV export."""
        cols = list(OverlayRecord(Decision(0, 1.0), Decision(0, 1.0), "", "").to_dict())
        return pd.DataFrame([r.to_dict() for r in self.records], columns=cols)

    def counts(self) -> dict:
        """How many reviews ended in each outcome, plus ``failed`` and ``reviews``; reason code counts."""
        out: dict = {o: 0 for o in OUTCOMES}
        reasons: dict = {}
        for r in self.records:
            out[r.outcome] = out.get(r.outcome, 0) + 1
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        out["failed"] = sum(r.failed for r in self.records)
        out["reviews"] = len(self.records)
        out["reasons"] = reasons
        return out

    def summary(self, bars: Optional[pd.DataFrame] = None, trades: Any = None, strategy: Any = None,
                **pricing: Any) -> dict:
        """Outcome counts and, given ``bars`` (and the strategy's closed ``trades``), overlay vs ML-only P&L.

        ML-only and overlay decisions are both priced by :func:`price_decision` on the
        same sessions; ``trades`` (rows with an entry time and a P&L) add the
        strategy's realised P&L on those sessions. With ``strategy`` (a finished
        ``KnockoutStrategy``), bars, trades and pricing default to its feed, its
        broker's round trips and :func:`pricing_for`; ``pricing`` overrides them.

        Two ``pricing`` keys are handled here, not by :func:`price_decision`:
        ``compound`` (default ``False``): ``stake`` is the starting cash and each
        of the ML-only and overlay books carries its cash from session to session
        (in decision-time order), staking ``stake_fraction`` (default 1: all of it)
        each time, as a strategy that stakes its cash does; without it every
        session stakes ``stake_fraction * stake``.
        """
        bars, trades, pricing = strategy_inputs(strategy, bars, trades, pricing)
        pricing = dict(pricing)
        compound = bool(pricing.pop("compound", False))
        fraction = float(pricing.pop("stake_fraction", None) or 1.0)
        if not 0 < fraction <= 1:
            raise ValueError(f"stake_fraction: expected a number in (0, 1], got {fraction!r}")
        start_cash = float(pricing.get("stake", 1000.0))
        out = self.counts()
        out["mode"] = self.responder.mode
        out["api_calls"] = self.responder.api_calls
        out["cache_hits"] = self.responder.cache_hits
        out.update(self.anonymization())
        if bars is None:
            return out
        ml_pnl, llm_pnl, priced, per_outcome = self._price_reviews(bars, pricing, compound, fraction, start_cash)
        out["pricing"] = {**pricing, "compound": compound, "stake_fraction": fraction}
        if compound:
            out["ml_only_final_cash"] = round(start_cash + ml_pnl, 6)
            out["overlay_final_cash"] = round(start_cash + llm_pnl, 6)
        out["sessions_priced"] = priced
        out["ml_only_pnl"] = round(ml_pnl, 6)
        out["overlay_pnl"] = round(llm_pnl, 6)
        out["overlay_minus_ml"] = round(llm_pnl - ml_pnl, 6)
        out["by_outcome"] = per_outcome
        if trades is not None:
            sessions = {r.session for r in self.records}
            out["strategy_trades_pnl"] = round(trades_pnl_on_sessions(trades, sessions), 6)
        return out

    def _price_reviews(self, bars: pd.DataFrame, pricing: dict, compound: bool, fraction: float,
                       start_cash: float) -> tuple:
        """``(ML-only P&L, overlay P&L, reviews priced, P&L by outcome)`` of every review with a time, each
        decision priced by :func:`price_decision` (``compound``: in time order, each book staking
        ``fraction`` of its own cash)."""
        ml_pnl = llm_pnl = 0.0
        priced = 0
        per_outcome: dict = {}
        timed = [r for r in self.records if r.ml.time is not None]
        if compound:
            timed.sort(key=lambda r: pd.Timestamp(r.ml.time))
        for r in timed:
            ml_stake = fraction * ((start_cash + ml_pnl) if compound else start_cash)
            ov_stake = fraction * ((start_cash + llm_pnl) if compound else start_cash)
            ml = price_decision(r.ml, bars, **{**pricing, "stake": ml_stake})
            ov = price_decision(r.final, bars, **{**pricing, "stake": ov_stake})
            priced += 1
            ml_pnl += ml["pnl"]
            llm_pnl += ov["pnl"]
            po = per_outcome.setdefault(r.outcome, {"n": 0, "ml_pnl": 0.0, "overlay_pnl": 0.0})
            po["n"] += 1
            po["ml_pnl"] += ml["pnl"]
            po["overlay_pnl"] += ov["pnl"]
        return ml_pnl, llm_pnl, priced, per_outcome

    def anonymization(self) -> dict:
        """``{"anonymized": bool}`` plus, when on, the seed and the run's price map
        (``shown = price_scale * real + price_shift``)."""
        out: dict = {"anonymized": self.anonymize}
        if self.anonymize:
            out["anonymize_seed"] = self.seed
            out["price_scale"] = None if self.prices is None else self.prices.scale
            out["price_shift"] = None if self.prices is None else self.prices.shift
        return out

    def summary_line(self) -> str:
        """One line for the end of a run: mode, reviews per outcome, failures per reason, API calls."""
        c = self.counts()
        outcomes = ", ".join(f"{c[o]} {o}" for o in OUTCOMES if c[o])
        failed = ", ".join(f"{code} {n}" for code, n in sorted(c["reasons"].items())
                           if any(r.failed and r.reason == code for r in self.records))
        mode = self.responder.mode + (", anonymized" if self.anonymize else ", real dates and prices")
        return (f"llm overlay ({mode}): {c['reviews']} reviews" + (f": {outcomes}" if outcomes else "")
                + (f" (failures: {failed})" if failed else "")
                + f"; {self.responder.api_calls} API calls, {self.responder.cache_hits} cache hits")

    def report_sections(self, strategy: Any = None, bars: Optional[pd.DataFrame] = None, trades: Any = None,
                        **pricing: Any) -> list[tuple[str, str]]:
        """``[(title, html)]`` for ``write_report(extra_sections=...)``; ``strategy`` adds the P&L."""
        return [self.report_section(bars, trades, strategy=strategy, **pricing)]

    def report_section(self, bars: Optional[pd.DataFrame] = None, trades: Any = None, strategy: Any = None,
                       max_rows: int = 200, **pricing: Any) -> tuple[str, str]:
        """``(title, html)`` for ``mltrade.report.write_report(extra_sections=[...])``."""
        s = self.summary(bars, trades, strategy, **pricing)
        e = html.escape
        if s["anonymized"]:
            scale = "" if s["price_scale"] is None else (
                f" (shown = {s['price_scale']:.6g} &times; real {'+' if s['price_shift'] >= 0 else '&minus;'} "
                f"{abs(s['price_shift']):.6g})")
            anon = (f"Prompts <b>anonymized</b>: no dates or weekdays, prices moved by a seeded scale and "
                    f"shift{scale}, seed {s['anonymize_seed']}.")
        else:
            anon = "Prompts carry <b>real dates and prices</b> (anonymize off)."
        parts = [f"<p>Mode <b>{e(s['mode'])}</b>: {s['reviews']} reviews, {s['api_calls']} API calls, "
                 f"{s['cache_hits']} cache hits. {anon}</p>",
                 "<table><tr><th>outcome</th><th>count</th></tr>"]
        for o in OUTCOMES + ("failed",):
            parts.append(f"<tr><td>{o}</td><td>{s[o]}</td></tr>")
        parts.append("</table><table><tr><th>reason</th><th>count</th><th>meaning</th></tr>")
        for code, n in sorted(s["reasons"].items()):
            parts.append(f"<tr><td>{e(code)}</td><td>{n}</td><td>{e(REASONS.get(code, ''))}</td></tr>")
        parts.append("</table>")
        if "ml_only_pnl" in s:
            parts.append("<table><tr><th></th><th>sessions</th><th>ML-only P&amp;L</th>"
                         "<th>overlay P&amp;L</th></tr>"
                         f"<tr><td>all</td><td>{s['sessions_priced']}</td><td>{s['ml_only_pnl']:.2f}</td>"
                         f"<td>{s['overlay_pnl']:.2f}</td></tr>")
            for o, v in sorted(s["by_outcome"].items()):
                parts.append(f"<tr><td>{e(o)}</td><td>{v['n']}</td><td>{v['ml_pnl']:.2f}</td>"
                             f"<td>{v['overlay_pnl']:.2f}</td></tr>")
            parts.append("</table>")
            if "strategy_trades_pnl" in s:
                parts.append(f"<p>Strategy's realised P&amp;L on the reviewed sessions: "
                             f"{s['strategy_trades_pnl']:.2f}</p>")
        parts.append("<table><tr><th>time</th><th>price</th><th>ML</th><th>overlay</th><th>outcome</th>"
                     "<th>reason</th><th>reasoning</th></tr>")
        for r in self.records[:max_rows]:
            d = r.to_dict()
            parts.append(f"<tr><td>{e(str(d['time']))}</td><td>{d['price']:.2f}</td>"
                         f"<td>{_side(d['ml_direction'], d['ml_barrier'])}</td>"
                         f"<td>{_side(d['llm_direction'], d['llm_barrier'])}</td><td>{e(r.outcome)}</td>"
                         f"<td>{e(r.reason)}</td><td>{e(r.reasoning[:300])}</td></tr>")
        parts.append("</table>")
        if len(self.records) > max_rows:
            parts.append(f"<p>{len(self.records) - max_rows} more reviews not shown.</p>")
        return "LLM overlay", "\n".join(parts)


def _side(direction: int, barrier: Optional[float]) -> str:
    if not direction:
        return "no trade"
    return f"{'Long' if direction > 0 else 'Short'} @ {barrier:.2f}"
