"""The one composition every outbound call goes through.

    retry ( breaker admission -> budget acquire -> timeout -> call -> record outcome
            -> reconcile tokens )

Each attempt is admitted, budgeted and recorded on its own, so a retried request is charged
again and counted again. The SDK's own retries must be off (``max_retries=0``): this is the
only retry layer. Per attempt the database is touched twice (admit + reserve, then settle),
never while the call is in flight. A success in closed state is recorded in the background, so
the caller goes on at once; ``Guard.drain()`` waits for those records (call it before the event
loop ends).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

import structlog
from django.conf import settings

from reliability import breaker, fastpath, metrics, ratelimit, ratelimit_wait
from reliability.clock import SYSTEM_CLOCK, Clock
from reliability.dbthread import in_db_thread
from reliability.exceptions import (
    BudgetExhaustedError,
    CallTimeoutError,
    CircuitOpenError,
    DeadlineExceededError,
    format_epoch,
)
from reliability.families import family_of, member_of
from reliability.outcomes import SUCCESS, BreakerVerdict, Outcome, classify_exception
from reliability.retry import RetryBudget, RetryPolicy
from reliability.waits import Wait

logger = structlog.get_logger(__name__)

T = TypeVar("T")
# With a 429 that names no retry-after, pause the budget this long.
DEFAULT_RATE_LIMIT_PAUSE = 1.0
# While an operator holds a breaker forced open (no time to wait for), look again this often.
FORCED_OPEN_RECHECK_SECONDS = 5.0
# While a deferred call waits for the retry budget, look again this often.
RETRY_BUDGET_RECHECK_SECONDS = 1.0
# How waits are described to users ("AI circuit open until ..."); other targets by their name.
_TARGET_LABELS = {"anthropic": "AI"}


@dataclass(frozen=True)
class TokenEstimate:
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None = None  # the tokens at the model's price (None: unpriced)


@dataclass
class Attempt:
    """Handed to the guarded function; it reports what the response said."""

    number: int
    deadline: float | None
    timeout: float
    slot_at: float | None = None  # when the rate budget let this attempt start
    input_tokens: int | None = None
    output_tokens: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def observe(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        if headers is not None:
            self.headers = headers


@dataclass(frozen=True)
class AttemptReport:
    """One attempt as it ended: what an operator's cost view (``LLMCall``) records."""

    target: str
    number: int
    outcome: Outcome
    duration: float
    input_tokens: int
    output_tokens: int
    will_retry: bool


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One call through the guard, as ``Guard.call`` was given it: the same for every attempt."""

    fn: Callable[[Attempt], Awaitable[T]]
    ask: ratelimit.Ask  # estimated tokens, deadline, the analysis' tokens so far
    wait_for_breaker: bool
    wait_for_budget: bool
    on_wait: Callable[[Wait], None] | None
    on_attempt: Callable[[AttemptReport], Awaitable[None] | None] | None
    max_slot_wait: float | None = None

    @property
    def deadline(self) -> float | None:
        return self.ask.deadline

    def ask_at(self, now: float) -> ratelimit.Ask:
        """The budget's ask for an attempt starting ``now``: with ``max_slot_wait``, a slot
        later than that is refused rather than waited for."""
        if self.max_slot_wait is None:
            return self.ask
        latest = now + self.max_slot_wait
        if self.deadline is not None:
            latest = min(latest, self.deadline)
        return dataclasses.replace(self.ask, deadline=latest)


class Guard:
    """Guard the calls to one target (breaker ``target``, optional rate ``budget``)."""

    def __init__(
        self,
        *,
        target: str,
        budget: str | None,
        timeout: float,
        retry_policy: RetryPolicy,
        retry_budget: RetryBudget,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        classify: Callable[..., Outcome] = classify_exception,
    ) -> None:
        self.target = target
        self.budget = budget
        self.timeout = timeout
        self.retry_policy = retry_policy
        self.retry_budget = retry_budget
        self.clock = clock
        self.rng = rng or random.Random()
        self.classify = classify
        self.label = _TARGET_LABELS.get(family_of(target), target)
        if member := member_of(target):
            self.label = f"{self.label} ({member})"
        # Per event loop (one guard may serve several, one per worker thread).
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[asyncio.Future]] = (
            weakref.WeakKeyDictionary()
        )

    async def call(
        self,
        fn: Callable[[Attempt], Awaitable[T]],
        *,
        estimate: TokenEstimate | None = None,
        deadline: float | None = None,
        analysis_tokens_used: int | None = None,
        analysis_spent_usd: Decimal | None = None,
        wait_for_breaker: bool = False,
        wait_for_budget: bool = False,
        on_wait: Callable[[Wait], None] | None = None,
        on_attempt: Callable[[AttemptReport], Awaitable[None] | None] | None = None,
        deferred: bool = False,
        max_slot_wait: float | None = None,
    ) -> T:
        """Call ``fn`` under the breaker, budget, timeout and retry policy; return its result.

        Raises ``CircuitOpenError``, ``BudgetExhaustedError`` or ``DeadlineExceededError``
        without calling out, or the last attempt's own error when it is not worth retrying.
        With ``wait_for_breaker`` / ``wait_for_budget`` it first waits out an open breaker or a
        spent budget (reported through ``on_wait``) while that ends before ``deadline``: this
        is the one place that decides how long a call waits, and says why.

        ``deferred``: this call repeats one that gave up on transient failures. It is a retry,
        not new work: it takes a retry from the retry budget, waiting until the budget has one,
        so that repeating calls during an outage never multiplies the traffic.

        ``max_slot_wait``: refuse (``BudgetExhaustedError``) rather than wait longer than this
        for a rate-budget slot, so the caller may go elsewhere (another model).
        """
        tokens = estimate or TokenEstimate(0, 0)
        ask = ratelimit.Ask(
            tokens.input_tokens,
            tokens.output_tokens,
            deadline,
            analysis_tokens_used,
            estimated_cost_usd=tokens.cost_usd,
            analysis_spent_usd=analysis_spent_usd,
        )
        call = _Call(fn, ask, wait_for_breaker, wait_for_budget, on_wait, on_attempt, max_slot_wait)
        if deferred and not wait_for_breaker:
            # Refused anyway: do not wait for a retry the breaker would not let through.
            await in_db_thread(breaker.refuse_if_open, self.target, clock=self.clock)
        if deferred:
            await self._wait_for_retry_budget(call)
        else:
            self.retry_budget.record_call()
        number = 0
        while True:
            number += 1
            try:
                return await self._attempt(call, number)
            except _Retry as retry:
                wait = Wait("retry_backoff", self.clock.now() + retry.delay, self.label)
            except (CircuitOpenError, BudgetExhaustedError) as refusal:
                wait = self._capacity_wait(refusal, call)
                if wait is None:
                    raise
                number -= 1  # nothing was sent: not an attempt
            if on_wait is not None:
                on_wait(wait)
            await self.clock.sleep(max(0.0, wait.until - self.clock.now()))

    async def _wait_for_retry_budget(self, call: _Call) -> None:
        """Take a retry from the retry budget, waiting (while the deadline allows) for one."""
        while not self.retry_budget.try_acquire_retry():
            until = self.retry_budget.next_retry_at()
            if call.deadline is not None and until >= call.deadline:
                metrics.retries_denied.labels(target=self.target, why="deadline").inc()
                raise DeadlineExceededError(
                    f"the retry budget of '{self.target}' has no retry left before the "
                    f"deadline ({format_epoch(call.deadline)})",
                    deadline=call.deadline,
                )
            if call.on_wait is not None:
                call.on_wait(Wait("retry_budget", until, self.label))
            # New calls earn retries too: look again soon rather than sleep to ``until``.
            pause = min(until - self.clock.now(), RETRY_BUDGET_RECHECK_SECONDS)
            await self.clock.sleep(max(0.0, pause))
        metrics.retries.labels(target=self.target, reason="deferred").inc()

    def _capacity_wait(
        self, refusal: CircuitOpenError | BudgetExhaustedError, call: _Call
    ) -> Wait | None:
        """Until when to wait before asking again after ``refusal``; None to give up now."""
        if isinstance(refusal, CircuitOpenError):
            if not call.wait_for_breaker:
                return None
            until = refusal.retry_at or self.clock.now() + FORCED_OPEN_RECHECK_SECONDS
            wait = Wait("breaker", until, self.label)
        else:
            if not call.wait_for_budget or refusal.available_at is None:
                return None
            wait = Wait("rate_budget", refusal.available_at, self.label)
        if call.deadline is not None and wait.until >= call.deadline:
            return None
        return wait

    async def _attempt(self, call: _Call[T], number: int) -> T:
        permit, reservation = await self._admit_and_reserve(call.ask_at(self.clock.now()))
        attempt: Attempt | None = None
        started = self.clock.monotonic()
        try:
            if reservation is not None:
                reservation = await self._wait_for_slot(permit, reservation, call)
            timeout = self._timeout_before(call.deadline)
            attempt = Attempt(
                number=number,
                deadline=call.deadline,
                timeout=timeout,
                slot_at=reservation.start_at if reservation is not None else None,
            )
            started = self.clock.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    result = await call.fn(attempt)
            except TimeoutError as exc:
                raise CallTimeoutError(target=self.target, timeout=timeout) from exc
        except _Withdrawn as withdrawn:
            raise withdrawn.refusal from None
        except BaseException as exc:
            outcome = self.classify(exc, now=self.clock.now())
            called = attempt is not None
            duration = self.clock.monotonic() - started if called else 0.0
            will_retry, delay, refusal = self._retry_decision(
                outcome, number=number, deadline=call.deadline, called=called
            )
            self._count(outcome, duration=duration, called=called)
            used = _tokens_used(outcome, attempt, call.ask)
            await in_db_thread(
                self._settle,
                permit,
                reservation,
                outcome,
                attempt=attempt,
                used=used,
                duration=duration,
                called=called,
            )
            await self._report(call, number, outcome, duration, attempt, used, will_retry)
            if will_retry:
                raise _Retry(delay) from exc
            if refusal is not None:
                raise refusal from exc
            raise
        duration = self.clock.monotonic() - started
        self._count(SUCCESS, duration=duration, called=True)
        used = _tokens_used(SUCCESS, attempt, call.ask)
        settle = self._settle_success(permit, reservation, attempt, used, duration)
        if permit.is_probe:
            await settle  # a probe's success may close the breaker: record it before going on
        else:
            # A success in closed state decides nothing: record it without holding the caller
            # up (``drain`` waits for such records).
            self._in_background(settle)
        await self._report(call, number, SUCCESS, duration, attempt, used, False)
        return result

    async def _wait_for_slot(
        self, permit: breaker.Permit, reservation: ratelimit.Reservation, call: _Call
    ) -> ratelimit.Reservation:
        """Wait for the slot; a call that had to wait goes out only if the breaker has not
        opened meanwhile (else its slot is given back and it is refused as if just admitted)."""
        on_wait = call.on_wait
        try:
            return await ratelimit_wait.wait_for_slot(
                reservation,
                reserve_again=lambda: self._reserve(call.ask),
                on_wait=(lambda until: on_wait(Wait("rate_budget", until, self.label)))
                if on_wait
                else None,
                clock=self.clock,
                after_waiting=functools.partial(breaker.confirm, permit, clock=self.clock),
            )
        except CircuitOpenError as refusal:
            raise _Withdrawn(refusal) from None

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        pending = self._pending.setdefault(asyncio.get_running_loop(), set())
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def drain(self) -> None:
        """Wait until every outcome this event loop's calls left in the background is recorded."""
        pending = self._pending.get(asyncio.get_running_loop(), set())
        while pending:
            await asyncio.gather(*list(pending), return_exceptions=True)

    async def _admit_and_reserve(
        self, ask: ratelimit.Ask
    ) -> tuple[breaker.Permit, ratelimit.Reservation | None]:
        """On PostgreSQL the common case needs no thread (see ``fastpath``); else in a thread."""
        if self.budget is not None and fastpath.available():
            admitted = await fastpath.admit_and_reserve(
                breaker_name=self.target, budget_name=self.budget, ask=ask, clock=self.clock
            )
            if admitted is not None:
                metrics.guard_admissions.labels(target=self.target, path="inline").inc()
                return admitted
        metrics.guard_admissions.labels(target=self.target, path="thread").inc()
        return await in_db_thread(self._begin, ask)

    async def aclose(self) -> None:
        """Record what is left in the background and close this event loop's connection."""
        await self.drain()
        await fastpath.close()

    def _timeout_before(self, deadline: float | None) -> float:
        if deadline is None:
            return self.timeout
        remaining = deadline - self.clock.now()
        if remaining <= 0:
            raise DeadlineExceededError(
                f"deadline for '{self.target}' passed before the call could start",
                deadline=deadline,
            )
        return min(self.timeout, remaining)

    def _reserve(self, ask: ratelimit.Ask) -> ratelimit.Reservation:
        assert self.budget is not None
        return ratelimit.reserve(self.budget, ask, clock=self.clock)

    def _begin(self, ask: ratelimit.Ask) -> tuple[breaker.Permit, ratelimit.Reservation | None]:
        """Admission then budget, in one trip to the database thread."""
        permit = breaker.admit(self.target, clock=self.clock)
        if self.budget is None:
            return permit, None
        try:
            return permit, self._reserve(ask)
        except BaseException:
            # Not called: hand the permit back so a half-open probe slot is not lost.
            breaker.record(permit, BreakerVerdict.IGNORED, duration=0.0, clock=self.clock)
            raise

    def _settle(
        self,
        permit: breaker.Permit,
        reservation: ratelimit.Reservation | None,
        outcome: Outcome,
        *,
        attempt: Attempt | None,
        used: tuple[int, int],
        duration: float,
        called: bool,
    ) -> None:
        """Record the outcome, correct the budget (to ``used`` input and output tokens), heed
        rate-limit signals: one DB trip."""
        breaker.record(
            permit, outcome.verdict, duration=duration, reason=outcome.reason, clock=self.clock
        )
        if reservation is None:
            return
        if not called:
            ratelimit.release(reservation)
            return
        ratelimit.reconcile(reservation, input_tokens=used[0], output_tokens=used[1])
        headers = attempt.headers if attempt and attempt.headers else outcome.headers
        if headers:
            ratelimit.observe_headers(
                reservation.name,
                headers,
                budget_id=reservation.budget_id,
                known_limits=reservation.observed_limits,
                clock=self.clock,
            )
        if outcome.rate_limited:
            pause = (
                outcome.retry_after if outcome.retry_after is not None else DEFAULT_RATE_LIMIT_PAUSE
            )
            ratelimit.pause(
                reservation.name,
                until=self.clock.now() + pause,
                reason=f"{outcome.reason}: retry-after {pause:g} s",
            )

    def _count(self, outcome: Outcome, *, duration: float, called: bool) -> None:
        metrics.guard_calls.labels(target=self.target, outcome=outcome.reason).inc()
        if called:
            metrics.guard_call_duration.labels(target=self.target).observe(duration)

    async def _settle_success(
        self,
        permit: breaker.Permit,
        reservation: ratelimit.Reservation | None,
        attempt: Attempt,
        used: tuple[int, int],
        duration: float,
    ) -> None:
        """Record a success: on PostgreSQL without a thread when nothing needs deciding."""
        if self.budget is not None and fastpath.available():
            recorded = await fastpath.record_success(
                permit=permit,
                reservation=reservation,
                duration=duration,
                input_tokens=used[0],
                output_tokens=used[1],
                headers=attempt.headers,
                clock=self.clock,
            )
            if recorded:
                return
        await in_db_thread(
            self._settle,
            permit,
            reservation,
            SUCCESS,
            attempt=attempt,
            used=used,
            duration=duration,
            called=True,
        )

    def _retry_decision(
        self, outcome: Outcome, *, number: int, deadline: float | None, called: bool
    ) -> tuple[bool, float, DeadlineExceededError | None]:
        """(retry?, after how long, the error to raise instead when the deadline forbids it)."""
        if not called or not outcome.retryable:
            return False, 0.0, None
        if number >= self.retry_policy.max_attempts:
            metrics.retries_denied.labels(target=self.target, why="attempts").inc()
            logger.warning(
                "retry_exhausted", breaker=self.target, attempts=number, reason=outcome.reason
            )
            return False, 0.0, None
        delay = self.retry_policy.delay(number, retry_after=outcome.retry_after, rng=self.rng)
        if deadline is not None and self.clock.now() + delay >= deadline:
            metrics.retries_denied.labels(target=self.target, why="deadline").inc()
            hint = (
                f"retry-after of {outcome.retry_after:g} s"
                if outcome.retry_after is not None
                else f"backoff of {delay:.1f} s"
            )
            return (
                False,
                0.0,
                DeadlineExceededError(
                    f"'{self.target}' failed ({outcome.reason}) and its {hint} "
                    f"runs past the deadline ({format_epoch(deadline)}): not retrying",
                    deadline=deadline,
                ),
            )
        if not self.retry_budget.try_acquire_retry():
            metrics.retries_denied.labels(target=self.target, why="retry_budget").inc()
            logger.warning("retry_budget_exhausted", breaker=self.target, reason=outcome.reason)
            return False, 0.0, None
        metrics.retries.labels(target=self.target, reason=outcome.reason).inc()
        logger.info(
            "retry_scheduled",
            breaker=self.target,
            attempt=number,
            reason=outcome.reason,
            delay_s=round(delay, 3),
        )
        return True, delay, None

    async def _report(
        self,
        call: _Call,
        number: int,
        outcome: Outcome,
        duration: float,
        attempt: Attempt | None,
        used: tuple[int, int],
        will_retry: bool,
    ) -> None:
        if call.on_attempt is None or attempt is None:
            return
        report = AttemptReport(
            target=self.target,
            number=number,
            outcome=outcome,
            duration=duration,
            input_tokens=used[0],
            output_tokens=used[1],
            will_retry=will_retry,
        )
        maybe_awaitable = call.on_attempt(report)
        if maybe_awaitable is not None:
            await maybe_awaitable


class _Withdrawn(Exception):
    """The breaker opened while the call waited for its slot: nothing was sent."""

    def __init__(self, refusal: CircuitOpenError) -> None:
        self.refusal = refusal


class _Retry(Exception):
    def __init__(self, delay: float) -> None:
        self.delay = delay


def _tokens_used(outcome: Outcome, attempt: Attempt | None, ask: ratelimit.Ask) -> tuple[int, int]:
    """Tokens to charge: what the reply reported; none for a rejected request (it has a
    status); the input estimate when we cannot know (timeouts, dropped connections)."""
    if attempt is not None and attempt.input_tokens is not None:
        return attempt.input_tokens, attempt.output_tokens or 0
    if outcome.status is not None:
        return 0, 0
    if outcome.is_success:
        return ask.input_tokens, ask.output_tokens
    return ask.input_tokens, 0


_guards: dict[str, Guard] = {}


def guard_for(target: str, *, classify: Callable[..., Outcome] = classify_exception) -> Guard:
    """The process-wide guard of ``target`` (``anthropic`` or ``git``), configured from settings.

    One per target and process, so that its retry budget counts every call to the target.
    ``classify`` says what the target's errors mean; every caller of one target must say the
    same (a different one is a programming error, raised here rather than silently ignored).
    """
    guard = _guards.get(target)
    if guard is None:
        timeouts = {"anthropic": settings.EIDOLON_AI_TIMEOUT, "git": settings.EIDOLON_GIT_TIMEOUT}
        family = family_of(target)
        guard = _guards[target] = Guard(
            target=target,
            budget=target if family in settings.EIDOLON_BUDGET_DEFAULTS else None,
            timeout=timeouts.get(family, settings.EIDOLON_AI_TIMEOUT),
            retry_policy=RetryPolicy(**settings.EIDOLON_RETRY),
            retry_budget=RetryBudget(**settings.EIDOLON_RETRY_BUDGET),
            classify=classify,
        )
    elif guard.classify is not classify:
        raise ValueError(
            f"the guard of {target!r} classifies errors with {guard.classify.__qualname__}, "
            f"not {classify.__qualname__}"
        )
    return guard
