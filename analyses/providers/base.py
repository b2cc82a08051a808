"""What every reviewer provides: findings for one unit, with what they cost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from analyses.findings import Finding
from analyses.parsing import ContextSnippet, Unit
from reliability.guard import Wait


@dataclass(frozen=True)
class LLMCallRecord:
    """One request a provider made, as ``LLMCall`` stores it."""

    provider: str
    model: str
    attempt: int
    purpose: str  # "review" or "correction"
    status: str  # "ok", "http_529", "timeout", "invalid_reply"...
    http_status: int | None
    latency_ms: int
    input_tokens: int
    output_tokens: int
    request_id: str = ""
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    error: str = ""  # why it failed: short and redacted
    budget: str = ""  # the rate-limit budget the call counted against (and its spend is charged to)
    findings_clamped: int = 0  # findings of the reply whose lines were moved into the unit
    findings_merged: int = 0  # findings of the reply folded into one they repeated
    cost_usd: Decimal | None = None  # at the price the provider knew (None: unpriced)


WaitCallback = Callable[[Wait], None]
CallCallback = Callable[[LLMCallRecord], Awaitable[None] | None]


@dataclass(frozen=True)
class ReviewRequest:
    unit: Unit
    context: Sequence[ContextSnippet] = ()
    deadline: float | None = None  # epoch seconds; no request may run past it
    analysis_tokens_used: int | None = None  # for the budget's per-analysis token cap
    analysis_cost_usd: Decimal | None = None  # spent so far, for the per-analysis spend cap
    # Wait out an open breaker / a spent budget while the deadline allows (the guard decides
    # how long), instead of failing at once.
    wait_for_breaker: bool = False
    wait_for_budget: bool = False
    on_wait: WaitCallback | None = None  # told whenever the call waits, and until when
    on_call: CallCallback | None = None  # told of every request made, as soon as it ends
    # An earlier review of this unit gave up on transient faults: this one is a retry, paid
    # from the retry budget (waiting until it has one), not new work.
    deferred: bool = False
    # Refuse rather than wait longer than this for a rate-budget slot (another model may have one).
    max_slot_wait: float | None = None


@dataclass(frozen=True)
class ReviewResult:
    findings: list[Finding]
    provider: str
    model: str
    calls: list[LLMCallRecord] = field(default_factory=list)  # every request the review made

    @property
    def requests(self) -> int:
        return len(self.calls)

    @property
    def input_tokens(self) -> int:
        return sum(call.input_tokens for call in self.calls)

    @property
    def output_tokens(self) -> int:
        return sum(call.output_tokens for call in self.calls)


class ReviewFailed(Exception):
    """The unit could not be reviewed; ``reason`` says why, for the user.

    ``transient``: the API failed in a way that passes (overloaded, rate limited, a 5xx, a
    timeout, a dropped connection) and the guard gave up for now (attempts or retry budget
    spent): the unit is worth trying again later. Otherwise the failure is permanent (the API
    refused the request as invalid, the reply stayed unusable after one correction).
    ``cause`` is the last attempt's short machine-readable cause ("http_529", "timeout").
    """

    def __init__(
        self,
        reason: str,
        *,
        calls: Sequence[LLMCallRecord] = (),
        transient: bool = False,
        cause: str = "",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.calls = list(calls)
        self.transient = transient
        self.cause = cause


class Provider(Protocol):
    name: str
    model: str
    prompt_version: str

    def reviews(self, unit: Unit) -> bool:
        """Whether this provider reviews units of this kind on their own."""

    async def review(self, request: ReviewRequest) -> ReviewResult:
        """Review one unit. Raises ``ReviewFailed`` with a reason, or the resilience layer's
        own errors (``CircuitOpenError``, ``BudgetExhaustedError``, ``DeadlineExceededError``)
        when it could not ask in time."""
