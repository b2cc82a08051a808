"""Reviews on an ordered chain of Claude models: the primary while it can, the next while not.

An overload (529) or a rate limit (429) is one model's shortage, not the API's. Each model has
its own breaker and rate budget (``anthropic:<model>``), shared by every process, and a review
goes to the first model that

* admits it: its breaker is closed, or half-open with a probe's place free (so a primary that
  recovers gets its probes from the next units, and takes the units back once they succeed);
* has a rate-budget slot within ``slot_wait`` seconds.

A model that fails the review transiently (its guard gave up on retries) hands it to the next at
once. When every model refuses, the review waits for the earliest capacity (a budget slot, else a
breaker's next probe) as a single-model review would, or is refused when the request may not wait
(then the orchestrator may fall back to the offline rules). A permanent failure is not retried
elsewhere: another model would be sent the same request.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import structlog

from analyses.parsing import Unit
from analyses.providers.base import (
    LLMCallRecord,
    Provider,
    ReviewFailed,
    ReviewRequest,
    ReviewResult,
)
from reliability.clock import SYSTEM_CLOCK, Clock
from reliability.exceptions import BudgetExhaustedError, CircuitOpenError
from reliability.guard import FORCED_OPEN_RECHECK_SECONDS, Wait

logger = structlog.get_logger(__name__)

Refusal = CircuitOpenError | BudgetExhaustedError


class ModelChainProvider:
    """A ``Provider`` over one provider per model, tried in order (see the module doc)."""

    def __init__(
        self, providers: Sequence[Provider], *, slot_wait: float, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if not providers:
            raise ValueError("a model chain needs at least one model")
        self.providers = list(providers)
        self.slot_wait = slot_wait
        self.clock = clock
        primary = self.providers[0]
        self.name = primary.name
        self.model = primary.model
        self.models = [provider.model for provider in self.providers]
        self.prompt_version = primary.prompt_version
        self.calls_api = getattr(primary, "calls_api", True)

    def reviews(self, unit: Unit) -> bool:
        return self.providers[0].reviews(unit)

    async def aclose(self) -> None:
        await asyncio.gather(
            *(closing() for p in self.providers if (closing := getattr(p, "aclose", None)))
        )

    async def review(self, request: ReviewRequest) -> ReviewResult:
        if len(self.providers) == 1:
            return await self.providers[0].review(request)
        calls: list[LLMCallRecord] = []  # requests of models that failed before one answered
        while True:
            refusals: list[tuple[Provider, Refusal]] = []
            failed: ReviewFailed | None = None
            for provider in self.providers:
                passing = dataclasses.replace(
                    request,
                    wait_for_breaker=False,
                    wait_for_budget=False,
                    max_slot_wait=self.slot_wait,
                )
                try:
                    return _with_calls(await provider.review(passing), calls)
                except (CircuitOpenError, BudgetExhaustedError) as refusal:
                    refusals.append((provider, refusal))
                except ReviewFailed as failure:
                    calls.extend(failure.calls)
                    if not failure.transient:
                        raise _with_failed_calls(failure, calls) from failure
                    failed = failure
                    logger.info(
                        "model_failed_over",
                        unit_id=request.unit.id,
                        model=provider.model,
                        reason=failure.reason,
                    )
            if failed is not None:
                # Every model either refused or failed transiently: the unit is put off.
                raise _with_failed_calls(failed, calls) from failed
            result = await self._when_all_refused(request, refusals)
            if result is not None:
                return _with_calls(result, calls)

    async def _when_all_refused(
        self, request: ReviewRequest, refusals: list[tuple[Provider, Refusal]]
    ) -> ReviewResult | None:
        """Every model refused: queue for the earliest budget slot of a model whose breaker
        admits, else wait for the earliest breaker (None: ask the chain again), else raise."""
        short = [
            (refusal.available_at, index, provider)
            for index, (provider, refusal) in enumerate(refusals)
            if isinstance(refusal, BudgetExhaustedError)
            and refusal.available_at is not None
            and (request.deadline is None or refusal.available_at < request.deadline)
        ]
        if short and request.wait_for_budget:
            _, _, provider = min(short)
            try:
                # Its guard waits for the slot, or raises BudgetExhaustedError when it cannot.
                return await provider.review(dataclasses.replace(request, wait_for_breaker=False))
            except CircuitOpenError:
                return None  # its breaker opened meanwhile: ask the chain again
        breakers = [refusal for _, refusal in refusals if isinstance(refusal, CircuitOpenError)]
        first_refusal = _naming_all(breakers) if breakers else refusals[0][1]
        # Models refused by their budgets for good (a cap, or past the deadline) are passed
        # over: the review waits for the breakers of the others.
        if not request.wait_for_breaker or not breakers:
            raise first_refusal
        now = self.clock.now()
        until = min(
            r.retry_at if r.retry_at is not None else now + FORCED_OPEN_RECHECK_SECONDS
            for r in breakers
        )
        if request.deadline is not None and until >= request.deadline:
            raise first_refusal
        if request.on_wait is not None:
            request.on_wait(Wait("breaker", until, f"AI ({', '.join(self.models)})"))
        await self.clock.sleep(max(0.0, until - now))
        return None


def _naming_all(refusals: list[CircuitOpenError]) -> CircuitOpenError:
    """The first breaker's refusal, saying which others refused too."""
    first, others = refusals[0], refusals[1:]
    if not others:
        return first
    return CircuitOpenError(
        breaker=first.breaker,
        state=first.state,
        retry_at=first.retry_at,
        detail="every model refuses: also " + ", ".join(f"'{r.breaker}'" for r in others),
    )


def _with_calls(result: ReviewResult, earlier: list[LLMCallRecord]) -> ReviewResult:
    if not earlier:
        return result
    return dataclasses.replace(result, calls=[*earlier, *result.calls])


def _with_failed_calls(failure: ReviewFailed, calls: list[LLMCallRecord]) -> ReviewFailed:
    return ReviewFailed(
        failure.reason, calls=calls, transient=failure.transient, cause=failure.cause
    )
