"""Chat-completions client on the official ``openai`` package, for any OpenAI-compatible server.

The default provider is xAI (``https://api.x.ai/v1``, a Grok model). The API key
is read from an environment variable (``XAI_API_KEY`` unless configured); modes
that call the API check it when the overlay is built (:meth:`LLMClient.check_key`),
so a missing key fails before the backtest starts. The key is never logged:
``repr`` masks it and error texts are scrubbed of it. An HTTP 200 whose body is
not a usable completion (not JSON, no choices, no message, content that is not
text) raises :class:`LLMCallError` ``malformed_answer`` like any failed call.
Structured output (``response_format`` with a JSON schema) is asked for first;
a server that rejects it with 400/422 is remembered and asked for plain JSON in
the text from then on.
"""
from __future__ import annotations

import json
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

    def check_key(self, mode: str = "live") -> None:
        """Raise :class:`LLMConfigError` naming the variable and the config key when the API key is unset."""
        if not os.environ.get(self.api_key_env):
            raise LLMConfigError(f"environment variable {self.api_key_env} is not set: the LLM overlay "
                                 f"in mode '{mode}' needs an API key for {self.base_url} "
                                 f"(set {self.api_key_env}, or "
                                 f"name another variable in [llm] api_key_env; or use [llm] mode = 'dry' or "
                                 f"'replay')")

    def _openai(self) -> Any:
        if self._client is None:
            self.check_key()
            key = os.environ[self.api_key_env]
            _quiet_http_logs()
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
        except (json.JSONDecodeError, UnicodeDecodeError) as e:  # an HTTP 200 whose body is not JSON
            raise self._fail("malformed_answer", "the answer's body is not valid JSON", e) from None
        dt = time.monotonic() - t0
        try:
            text, finish, refusal = _message_of(resp)
        except LLMCallError as e:
            log.debug("llm: unusable answer from %s: %s", self.base_url, e)
            raise
        except (AttributeError, TypeError, IndexError, KeyError, ValueError) as e:
            raise self._fail("malformed_answer", "the answer is not a usable chat completion", e) from None
        if refusal or finish == "content_filter":
            log.debug("llm: model %s refused (%s)", self.model, self._scrub(str(refusal or finish)))
            raise LLMCallError("refusal", self._scrub(str(refusal or "finish_reason=content_filter")))
        log.debug("llm: %s answered in %.2f s (structured=%s, finish=%s, %d chars)",
                  self.model, dt, structured, finish, len(text))
        return ChatAnswer(text=text, structured=structured, finish_reason=finish,
                          model=getattr(resp, "model", None))

    def _fail(self, code: str, message: str, exc: Exception, status: Optional[int] = None) -> LLMCallError:
        detail = self._scrub(str(exc))[:300]
        # debug only: the overlay counts failures per reason and prints them in its summary line
        log.debug("llm: call to %s failed: %s: %s (%s)", self.base_url, code, message, detail)
        return LLMCallError(code, message if detail == message else f"{message} ({detail})", status)


def _quiet_http_logs() -> None:
    """The HTTP library logs one INFO line per request, which would interleave with the progress bar:
    raise its loggers to WARNING unless they or the root logger were set to show more (``-v``)."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        return
    for name in ("httpx", "httpx2"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(logging.WARNING)


def _message_of(resp: Any) -> tuple[str, Optional[str], Optional[str]]:
    """``(text, finish_reason, refusal)`` of a completion; ``LLMCallError`` when it is not one."""
    if resp is None or not hasattr(resp, "choices"):
        raise LLMCallError("malformed_answer",
                           f"the answer is not a chat completion (got {type(resp).__name__})")
    choices = resp.choices
    if choices is None:
        raise LLMCallError("malformed_answer", "the answer has no 'choices'")
    if not isinstance(choices, (list, tuple)):
        raise LLMCallError("malformed_answer", f"'choices' is a {type(choices).__name__}, expected a list")
    if not choices:
        raise LLMCallError("empty_answer", "the answer has no choices")
    choice = choices[0]
    msg = getattr(choice, "message", None)
    if msg is None:
        raise LLMCallError("malformed_answer", "the answer's first choice has no 'message'")
    finish = getattr(choice, "finish_reason", None)
    refusal = getattr(msg, "refusal", None)
    content = getattr(msg, "content", None)
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str)
                                           for p in content):
        text = "".join(p["text"] for p in content)  # content parts: [{"type": "text", "text": ...}]
    else:
        raise LLMCallError("malformed_answer",
                           f"the message content is a {type(content).__name__}, expected text")
    return text, (finish if isinstance(finish, str) else None), (str(refusal) if refusal else None)
