"""Errors of the TwelveData client (:mod:`mltrade.feeds.twelvedata`); none ever contains the API key."""
from __future__ import annotations

import re



class TwelveDataError(RuntimeError):
    """Base class of every error raised by the client (never contains the API key)."""


class TwelveDataAuthError(TwelveDataError):
    """401/403: the key is missing, wrong or not allowed to use this endpoint/symbol."""


class TwelveDataRequestError(TwelveDataError):
    """400/404 (bad parameters, unknown symbol) or another non-retryable API error."""


class TwelveDataRateLimitError(TwelveDataError):
    """Still rate limited (429) after the allowed retries."""


class TwelveDataServerError(TwelveDataError):
    """5xx, time-outs, connection failures or malformed bodies after the allowed retries."""


def short_reason(exc: BaseException) -> str:
    """The root cause of a connection failure in a few words ("[Errno 111] Connection refused",
    "Name or service not known"), not urllib3's whole chain with the URL."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] [^'\")(]+", text) or re.search(
        r"Name or service not known|Temporary failure in name resolution|timed out|Connection refused|"
        r"Connection reset by peer", text)
    return m.group(0).strip() if m else text[:160]

