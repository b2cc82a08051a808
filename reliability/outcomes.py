"""What a call's result means: for the breaker (failure or not), the retry policy (retry or not)
and the rate budget (pause or not). One table, used by every outbound call.

| result                                   | breaker  | retried | budget            |
|------------------------------------------|----------|---------|-------------------|
| success                                  | success  | -       | reconcile tokens  |
| timeout, connection error                | failure  | yes     |                   |
| 5xx, 529 overloaded                      | failure  | yes     |                   |
| 408 request timeout                      | failure  | yes     |                   |
| 409 conflict                             | ignored  | yes     |                   |
| 429 rate limit                           | ignored  | yes     | pause until retry-after |
| 429 spend/credit limit                   | failure  | no      | pause             |
| 401, 403 (systemic: key or permissions)  | failure  | no      |                   |
| 400, 404, 413, 422 and other 4xx         | ignored  | no      |                   |
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import anthropic

from reliability.exceptions import CallTimeoutError
from reliability.retry import header_value, parse_retry_after


class BreakerVerdict(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"  # neither: caller errors, backpressure, cancellations


@dataclass(frozen=True)
class Outcome:
    verdict: BreakerVerdict
    retryable: bool
    reason: str  # short machine-readable cause: "timeout", "http_529", "connection_error"
    status: int | None = None
    retry_after: float | None = None
    rate_limited: bool = False  # backpressure: the whole budget pauses
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_success(self) -> bool:
        return self.verdict is BreakerVerdict.SUCCESS


SUCCESS = Outcome(verdict=BreakerVerdict.SUCCESS, retryable=False, reason="ok")
CANCELLED = Outcome(verdict=BreakerVerdict.IGNORED, retryable=False, reason="cancelled")

_SPEND_LIMIT = re.compile(
    r"(spend(ing)?|usage|credit|billing|budget)[\s_-]*(limit|balance|cap|exceeded|exhausted)"
    r"|enforced_spend_limit",
    re.IGNORECASE,
)
_SHOULD_RETRY_HEADER = "x-should-retry"
_SYSTEMIC_NOT_RETRIED = {401, 403}


def classify_status(
    status: int, *, headers: Mapping[str, str], message: str = "", now: float
) -> Outcome:
    outcome = _classify_status(status, headers=headers, message=message, now=now)
    # The server may say outright whether a retry can help; it knows better than a table.
    should_retry = header_value(headers, _SHOULD_RETRY_HEADER) or ""
    if should_retry.strip().lower() == "false" and outcome.retryable:
        return dataclasses.replace(outcome, retryable=False)
    return outcome


def _classify_status(
    status: int, *, headers: Mapping[str, str], message: str, now: float
) -> Outcome:
    if status == 429 and _SPEND_LIMIT.search(message):
        verdict, retryable, reason = BreakerVerdict.FAILURE, False, "spend_limit"
    elif status == 429:
        verdict, retryable, reason = BreakerVerdict.IGNORED, True, f"http_{status}"
    elif status in _SYSTEMIC_NOT_RETRIED:
        verdict, retryable, reason = BreakerVerdict.FAILURE, False, f"http_{status}"
    elif status == 408 or status >= 500:
        verdict, retryable, reason = BreakerVerdict.FAILURE, True, f"http_{status}"
    elif status == 409:
        verdict, retryable, reason = BreakerVerdict.IGNORED, True, f"http_{status}"
    elif 400 <= status < 500:
        verdict, retryable, reason = BreakerVerdict.IGNORED, False, f"http_{status}"
    else:
        return SUCCESS
    return Outcome(
        verdict=verdict,
        retryable=retryable,
        reason=reason,
        status=status,
        retry_after=parse_retry_after(headers, now=now) if retryable or status == 429 else None,
        rate_limited=status == 429,
        headers=headers,
    )


def classify_exception(exc: BaseException, *, now: float) -> Outcome:
    """The outcome of a call that raised ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    if isinstance(exc, (CallTimeoutError, TimeoutError, anthropic.APITimeoutError)):
        return Outcome(verdict=BreakerVerdict.FAILURE, retryable=True, reason="timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return Outcome(verdict=BreakerVerdict.FAILURE, retryable=True, reason="connection_error")
    if isinstance(exc, anthropic.APIStatusError):
        details = f"{exc.message} {json.dumps(exc.body, default=str)}"
        return classify_status(
            exc.status_code, headers=dict(exc.response.headers), message=details, now=now
        )
    if isinstance(exc, json.JSONDecodeError):  # a 200 whose body is not JSON
        return Outcome(verdict=BreakerVerdict.FAILURE, retryable=True, reason="malformed_response")
    if isinstance(exc, anthropic.APIResponseValidationError):
        return Outcome(verdict=BreakerVerdict.FAILURE, retryable=True, reason="invalid_response")
    if isinstance(exc, (ConnectionError, OSError)):
        return Outcome(verdict=BreakerVerdict.FAILURE, retryable=True, reason="connection_error")
    # An error of our own making is neither the remote service's fault nor worth a retry.
    return Outcome(
        verdict=BreakerVerdict.IGNORED, retryable=False, reason=f"error_{type(exc).__name__}"
    )
