"""The API's error replies: the status, error type, message and ``x-should-retry`` each fault
and outcome gets, in the body the SDK parses into its exception classes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reliability.fake_anthropic.config import Fault, RequestOutcome
from reliability.fake_anthropic.http import HttpResponse, json_response


def api_error(
    kind: str,
    *,
    request_id: str,
    headers: Mapping[str, str],
    message: str | None = None,
    retry_after_s: float | None = None,
) -> HttpResponse:
    """The error reply for a ``Fault`` or ``RequestOutcome`` other than a success."""
    spec = _ERRORS[kind]
    headers = {**headers, "x-should-retry": "true" if spec.retryable else "false"}
    if retry_after_s is not None:
        headers.update(_retry_after_headers(retry_after_s))
    payload = _error_payload(
        error_type=spec.error_type,
        message=message or spec.message,
        request_id=request_id,
        error_code=spec.error_code,
    )
    return json_response(spec.status, payload, headers=headers)


def plain_error(status: int, *, error_type: str, message: str, request_id: str) -> HttpResponse:
    """An error reply outside the API proper: unreadable HTTP, the control endpoints."""
    payload = _error_payload(error_type=error_type, message=message, request_id=request_id)
    return json_response(status, payload, headers={"request-id": request_id})


def _error_payload(
    *, error_type: str, message: str, request_id: str, error_code: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": request_id}


@dataclass(frozen=True)
class _ErrorSpec:
    status: int
    error_type: str
    message: str
    retryable: bool
    error_code: str | None = None


_ERRORS: Mapping[str, _ErrorSpec] = {
    Fault.OVERLOADED: _ErrorSpec(529, "overloaded_error", "Overloaded", retryable=True),
    Fault.RATE_LIMIT: _ErrorSpec(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization. "
        "Please wait before trying again.",
        retryable=True,
    ),
    Fault.SPEND_LIMIT: _ErrorSpec(
        429,
        "rate_limit_error",
        "You have reached your specified API usage limits: the spend limit is reached and "
        "your credit will renew at the start of the next month.",
        retryable=False,
        error_code="enforced_spend_limit_reached",
    ),
    Fault.SERVER_ERROR: _ErrorSpec(500, "api_error", "Internal server error", retryable=True),
    Fault.UNAVAILABLE: _ErrorSpec(503, "api_error", "Service unavailable", retryable=True),
    Fault.BAD_REQUEST: _ErrorSpec(
        400, "invalid_request_error", "The request is invalid (injected fault).", retryable=False
    ),
    Fault.AUTH: _ErrorSpec(401, "authentication_error", "invalid x-api-key", retryable=False),
    RequestOutcome.BUCKET_LIMITED: _ErrorSpec(
        429,
        "rate_limit_error",
        "This request would exceed your organization's rate limit. Please retry later.",
        retryable=True,
    ),
    RequestOutcome.RPM_LIMITED: _ErrorSpec(
        429,
        "rate_limit_error",
        "This request would exceed the fake's limit of requests per minute.",
        retryable=True,
    ),
    RequestOutcome.MISSING_API_KEY: _ErrorSpec(
        401, "authentication_error", "x-api-key header is required", retryable=False
    ),
    RequestOutcome.INVALID_REQUEST: _ErrorSpec(
        400, "invalid_request_error", "Invalid request", retryable=False
    ),
    RequestOutcome.RESPONDER_FAILED: _ErrorSpec(
        500, "api_error", "Internal server error", retryable=True
    ),
    RequestOutcome.NOT_FOUND: _ErrorSpec(404, "not_found_error", "Not found", retryable=False),
}


def _retry_after_headers(seconds: float) -> dict[str, str]:
    """retry-after in whole seconds (rounded up), plus retry-after-ms when it is fractional."""
    seconds = max(seconds, 0.0)
    headers = {"retry-after": str(math.ceil(seconds))}
    if not float(seconds).is_integer():
        headers["retry-after-ms"] = str(math.ceil(seconds * 1000))
    return headers
