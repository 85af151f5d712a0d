"""Chat-completions client on the official ``openai`` package, for any OpenAI-compatible server.

The default provider is xAI (``https://api.x.ai/v1``, a Grok model). The API key
is read from an environment variable (``XAI_API_KEY`` unless configured) when
the first call is made, and is never logged: ``repr`` masks it and error texts
are scrubbed of it. Structured output (``response_format`` with a JSON schema)
is asked for first; a server that rejects it with 400/422 is remembered and
asked for plain JSON in the text from then on.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

from mltrade.llm.prompt import RESPONSE_SCHEMA

log = logging.getLogger("mltrade.llm")

DEFAULT_BASE_URL = "https://api.x.ai/v1"
DEFAULT_MODEL = "grok-4"
DEFAULT_KEY_ENV = "XAI_API_KEY"


class LLMCallError(RuntimeError):
    """A call that produced no usable answer; ``code`` is a reason code (timeout, http_error, ...)."""

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class LLMConfigError(ValueError):
    """The client cannot be used as configured (e.g. the key's environment variable is unset)."""


@dataclass(frozen=True)
class ChatAnswer:
    """The text of one completion and how it was obtained."""

    text: str
    structured: bool
    finish_reason: Optional[str] = None
    model: Optional[str] = None


class LLMClient:
    """One OpenAI-compatible endpoint with fixed sampling parameters; ``complete(messages)`` returns text."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, model: str = DEFAULT_MODEL,
                 api_key_env: str = DEFAULT_KEY_ENV, temperature: float = 0.7, max_tokens: int = 1024,
                 timeout: float = 30.0, max_retries: int = 2, structured: bool = True) -> None:
        if not base_url or not str(base_url).startswith(("http://", "https://")):
            raise LLMConfigError(f"llm.base_url: expected an http(s) URL, got {base_url!r}")
        if not model:
            raise LLMConfigError("llm.model: expected a model name, got an empty value")
        if not api_key_env:
            raise LLMConfigError("llm.api_key_env: expected the name of an environment variable")
        if not (0 <= float(temperature) <= 2):
            raise LLMConfigError(f"llm.temperature: expected a number in [0, 2], got {temperature!r}")
        if int(max_tokens) <= 0:
            raise LLMConfigError(f"llm.max_tokens: expected a positive integer, got {max_tokens!r}")
        if not float(timeout) > 0:
            raise LLMConfigError(f"llm.timeout: expected seconds > 0, got {timeout!r}")
        if int(max_retries) < 0:
            raise LLMConfigError(f"llm.max_retries: expected an integer >= 0, got {max_retries!r}")
        self.base_url = str(base_url)
        self.model = str(model)
        self.api_key_env = str(api_key_env)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        #: whether to ask for ``response_format``; switched off once a server rejects it
        self.structured = bool(structured)
        self.calls = 0
        self._key: Optional[str] = None
        self._client: Any = None

    # -- parameters that define an answer (the cache key covers these) -------
    def parameters(self) -> dict:
        """Sampling parameters that change the answer (not transport details)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def __repr__(self) -> str:
        key = "set" if (self._key or os.environ.get(self.api_key_env)) else "unset"
        return (f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r} ({key}, value hidden), temperature={self.temperature}, "
                f"max_tokens={self.max_tokens}, timeout={self.timeout}, max_retries={self.max_retries})")

    __str__ = __repr__

    def _scrub(self, text: str) -> str:
        if self._key and self._key in text:
            text = text.replace(self._key, "***")
        return text

    def _openai(self) -> Any:
        if self._client is None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise LLMConfigError(f"environment variable {self.api_key_env} is not set: the LLM overlay "
                                     f"needs an API key for {self.base_url} (or use mode 'dry' or 'replay')")
            import openai  # imported lazily: dry and replay runs never need it

            self._key = key
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout,
                                         max_retries=self.max_retries)
        return self._client

    def complete(self, messages: list[dict]) -> ChatAnswer:
        """Send ``messages``; return the answer's text or raise :class:`LLMCallError`."""
        client = self._openai()
        if self.structured:
            try:
                return self._create(client, messages, structured=True)
            except LLMCallError as e:
                if e.status not in (400, 422):
                    raise
                # if the plain request fails too, the 400 was not about response_format: keep asking for it
                answer = self._create(client, messages, structured=False)
                log.info("llm: %s rejected response_format (%s); asking for JSON in the text from now on",
                         self.base_url, e.status)
                self.structured = False
                return answer
        return self._create(client, messages, structured=False)

    def _create(self, client: Any, messages: list[dict], structured: bool) -> ChatAnswer:
        import openai

        kw: dict = dict(model=self.model, messages=messages, temperature=self.temperature,
                        max_tokens=self.max_tokens)
        if structured:
            kw["response_format"] = {"type": "json_schema", "json_schema": RESPONSE_SCHEMA}
        t0 = time.monotonic()
        self.calls += 1
        try:
            resp = client.chat.completions.create(**kw)
        except openai.APITimeoutError as e:
            raise self._fail("timeout", f"no answer within {self.timeout} s", e) from None
        except openai.APIConnectionError as e:
            raise self._fail("connection_error", f"cannot reach {self.base_url}", e) from None
        except openai.RateLimitError as e:
            raise self._fail("rate_limited", "HTTP 429 after the retries", e, 429) from None
        except openai.APIStatusError as e:
            raise self._fail("http_error", f"HTTP {e.status_code}", e, e.status_code) from None
        except openai.OpenAIError as e:
            raise self._fail("http_error", type(e).__name__, e) from None
        dt = time.monotonic() - t0
        if not getattr(resp, "choices", None):
            raise LLMCallError("empty_answer", "the answer has no choices")
        choice = resp.choices[0]
        msg = choice.message
        refusal = getattr(msg, "refusal", None)
        if refusal or choice.finish_reason == "content_filter":
            log.info("llm: model %s refused (%s)", self.model,
                     self._scrub(str(refusal or choice.finish_reason)))
            raise LLMCallError("refusal", self._scrub(str(refusal or "finish_reason=content_filter")))
        text = msg.content or ""
        log.debug("llm: %s answered in %.2f s (structured=%s, finish=%s, %d chars)",
                  self.model, dt, structured, choice.finish_reason, len(text))
        return ChatAnswer(text=text, structured=structured, finish_reason=choice.finish_reason,
                          model=getattr(resp, "model", None))

    def _fail(self, code: str, message: str, exc: Exception, status: Optional[int] = None) -> LLMCallError:
        detail = self._scrub(str(exc))[:300]
        log.warning("llm: call to %s failed: %s: %s (%s)", self.base_url, code, message, detail)
        return LLMCallError(code, f"{message} ({detail})", status)
