"""The fake's request log: one ``RequestRecord`` per API request, without its credentials."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reliability.fake_anthropic.http import HttpRequest
from reliability.fake_anthropic.messages import prompt_text

_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie"})
_CREDENTIAL_HEADERS = ("x-api-key", "authorization")


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One API request as the fake saw it. Credentials are never stored, only where they were."""

    index: int
    received_at: datetime
    received_monotonic: float
    method: str
    path: str
    body: Any
    """The parsed JSON body, or None when the body was not JSON."""
    model: str | None
    fault: str
    """A ``Fault`` or ``RequestOutcome`` value: what the fake did with the request."""
    status: int | None
    """The status line sent; None when nothing was sent (``hang``)."""
    request_id: str
    headers: Mapping[str, str]
    """Lower-cased request headers without credentials and cookies."""
    credential_header: str | None
    """``x-api-key`` or ``authorization``: the header that carried the key, if any."""
    retry_count: int | None
    """The SDK's ``x-stainless-retry-count``."""

    @classmethod
    def of(
        cls,
        request: HttpRequest,
        *,
        index: int,
        received_at: datetime,
        received_monotonic: float,
        fault: str,
        status: int | None,
        request_id: str,
    ) -> RequestRecord:
        body = request.json_body
        return cls(
            index=index,
            received_at=received_at,
            received_monotonic=received_monotonic,
            method=request.method,
            path=request.path,
            body=body,
            model=body.get("model") if isinstance(body, dict) else None,
            fault=fault,
            status=status,
            request_id=request_id,
            headers={
                name: value
                for name, value in request.headers.items()
                if name not in _SECRET_HEADERS
            },
            credential_header=credential_header(request.headers),
            retry_count=_int_or_none(request.headers.get("x-stainless-retry-count")),
        )

    @property
    def api_key_present(self) -> bool:
        return self.credential_header is not None

    @property
    def prompt_text(self) -> str:
        """The system prompt and message texts, to tell which code a request was about."""
        return prompt_text(self.body)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["received_at"] = self.received_at.isoformat()
        data["api_key_present"] = self.api_key_present
        return data


NO_MODEL = "(none)"
"""The key of ``counts_by_model`` for requests that named no model."""


def counts_by_model(records: Iterable[RequestRecord]) -> dict[str, dict[str, int]]:
    """Requests per model per outcome (``fault``: ``ok``, ``overloaded``, ``rpm_limit`` ...),
    e.g. ``{"claude-sonnet-5-5": {"overloaded": 3}, "claude-haiku-4-5": {"ok": 12}}``."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        model = record.model if isinstance(record.model, str) else NO_MODEL
        per_outcome = counts.setdefault(model, {})
        outcome = str(record.fault)  # a plain string, not the enum, for printing and JSON
        per_outcome[outcome] = per_outcome.get(outcome, 0) + 1
    return counts


def credential_header(headers: Mapping[str, str]) -> str | None:
    """The header that carries an API key, if any."""
    return next((name for name in _CREDENTIAL_HEADERS if headers.get(name)), None)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
