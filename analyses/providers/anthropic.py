"""Claude as a reviewer: one function in, validated findings out, every request through the guard.

Decisions (callers and the cost view depend on them):

* **One retry layer.** The SDK client is built with ``max_retries=0``; the guard retries
  transport and overload failures. The provider adds only what the guard cannot know: one
  *corrective* request when a reply arrives but cannot be used (not JSON, outside the schema,
  cut off at ``max_tokens``, a refusal). A second unusable reply fails the unit. Lines outside
  the function and repeated findings are tolerated (``analyses.findings``), counted on the
  call's record (``findings_clamped``, ``findings_merged``), and never cost a request.
* **Prompt caching.** The shared prefix (the system prompt, and the schema the API puts
  beside it) is marked ``cache_control`` when it is long enough for the API to cache it;
  below the model's minimum the API would ignore the mark. The rate budget is charged as the
  API counts input tokens per minute: cache writes count, cache reads do not.
* **Records.** Every HTTP request becomes one ``LLMCallRecord``, handed to ``on_call`` as soon as
  the attempt ends (so a unit that fails later still has its costs recorded). ``attempt`` is the
  guard's attempt number within that guarded call and ``purpose`` says which call ("review" or
  "correction"). A reply that arrived but could not be used is recorded with status
  ``invalid_reply`` and its real ``http_status`` (200): the call did cost tokens and the breaker
  counted it as a success, but an operator counting wasted spend needs to see it.
* **Errors.** The guard's own refusals (``CircuitOpenError``, ``BudgetExhaustedError``,
  ``DeadlineExceededError``) propagate unchanged. A failure of the API itself that the guard gave
  up on becomes ``ReviewFailed`` with a short reason; reasons never contain the API key. It is
  ``transient`` when the last attempt's failure was worth retrying (the caller defers the unit)
  and permanent otherwise (a 4xx other than 429, an unusable reply after the correction).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anthropic
import structlog
from anthropic import AsyncAPIResponse
from anthropic.types import Message
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from analyses.findings import (
    FINDINGS_JSON_SCHEMA,
    Finding,
    InvalidReply,
    read_findings_reply,
)
from analyses.parsing import Unit
from analyses.providers.base import (
    CallCallback,
    LLMCallRecord,
    ReviewFailed,
    ReviewRequest,
    ReviewResult,
)
from analyses.providers.prompt import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    message_text,
    min_cacheable_tokens,
    review_prompt,
    system_parameter,
)
from reliability.exceptions import CallTimeoutError
from reliability.families import member_name
from reliability.guard import Attempt, AttemptReport, Guard, TokenEstimate, guard_for
from reliability.outcomes import Outcome
from reliability.output_estimate import OutputTokenEstimate, output_estimate_for
from reliability.pricing import Price, call_cost, price_for
from reliability.redaction import redact_text, secret_values

logger = structlog.get_logger(__name__)

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_MAX_TOKENS = 2048

# Characters per token of English prose mixed with code: errs towards more tokens, so the rate
# budget reserves slightly too much rather than too little; every reply reconciles it.
_CHARS_PER_TOKEN = 3.5
# Structured outputs send the schema to the model with instructions of the API's own.
_SCHEMA_OVERHEAD_TOKENS = math.ceil(len(json.dumps(FINDINGS_JSON_SCHEMA)) / _CHARS_PER_TOKEN) + 150
# Most reviews answer in a few hundred tokens; reserving the full max_tokens would starve the
# output-token budget for nothing. Reserved until recent replies say better (output_estimate).
_TYPICAL_OUTPUT_TOKENS = 800
# A price edited in the admin is used for the estimates of calls made this much later.
_PRICE_RECHECK_SECONDS = 60.0
_MAX_DETAIL_CHARS = 200
_MAX_STATUS_CHARS = 40  # LLMCall.status


@dataclass(frozen=True, slots=True)
class _Reply:
    """What one reply said: its text (to show the model again) and findings, or the problem."""

    text: str
    findings: list[Finding] | None
    problem: str = ""  # "code: detail", when findings is None
    truncated: bool = False
    clamped: int = 0  # findings whose lines were moved into the function
    merged: int = 0  # findings folded into one they repeated


@dataclass(slots=True)
class _AttemptNote:
    """What the guarded function learnt about its request, for the attempt's record."""

    request_id: str = ""
    http_status: int | None = None
    invalid: bool = False
    problem: str = ""  # why the reply could not be used
    error: str = ""  # what the API or the SDK said went wrong
    timeout: float = 0.0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    findings_clamped: int = 0
    findings_merged: int = 0


@dataclass(slots=True)
class _Exchange:
    """The bookkeeping of one unit's review: its records, in the order the requests ended."""

    calls: list[LLMCallRecord] = field(default_factory=list)
    last_report: AttemptReport | None = None

    @property
    def tokens_used(self) -> int:
        return sum(call.input_tokens + call.output_tokens for call in self.calls)

    @property
    def cost_usd(self) -> Decimal:
        return sum((call.cost_usd for call in self.calls if call.cost_usd), Decimal(0))


class AnthropicProvider:
    """Reviews functions with Claude, structured JSON output, behind the ``anthropic`` guard."""

    name = "anthropic"
    prompt_version = PROMPT_VERSION

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str,
        max_tokens: int,
        timeout: float,
        guard: Guard | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        prompt_cache_min_tokens: int | None = None,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        self.model = model
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.system = system_parameter(
            system_prompt,
            min_tokens=prompt_cache_min_tokens or min_cacheable_tokens(model),
        )
        self.guard = guard if guard is not None else guard_for(model_target(model))
        self._api_key = api_key
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
        )
        self._price: Price | None = None
        self._price_read_at: float | None = None

    @classmethod
    def from_settings(
        cls, *, guard: Guard | None = None, model: str | None = None
    ) -> AnthropicProvider:
        """A provider configured from ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL`` and settings,
        for ``model`` (by default the primary) behind its own guard, ``anthropic:<model>``."""
        api_key = settings.ANTHROPIC_API_KEY
        if not api_key:
            raise ImproperlyConfigured(
                "ANTHROPIC_API_KEY is not set: the anthropic provider cannot review code"
            )
        model = model or getattr(settings, "EIDOLON_AI_MODEL", DEFAULT_MODEL)
        return cls(
            api_key=api_key,
            base_url=settings.ANTHROPIC_BASE_URL,
            model=model,
            max_tokens=getattr(settings, "EIDOLON_AI_MAX_TOKENS", DEFAULT_MAX_TOKENS),
            timeout=settings.EIDOLON_AI_TIMEOUT,
            guard=guard,
            prompt_cache_min_tokens=settings.EIDOLON_AI_PROMPT_CACHE_MIN_TOKENS,
        )

    async def aclose(self) -> None:
        """Record what the guard left in the background, then close the SDK's connections."""
        await self.guard.aclose()
        await self._client.close()

    def reviews(self, unit: Unit) -> bool:
        return unit.is_function

    async def review(self, request: ReviewRequest) -> ReviewResult:
        unit = request.unit
        if not self.reviews(unit):
            raise ValueError(f"{self.name} reviews functions and methods, not a {unit.kind}")
        exchange = _Exchange()
        ask = functools.partial(self._ask, request=request, exchange=exchange)
        prompt = review_prompt(unit, context=request.context)
        reply = await ask([{"role": "user", "content": prompt}], purpose="review")
        if reply.findings is None:
            reply = await ask(
                _correction_messages(prompt, reply=reply, unit=unit), purpose="correction"
            )
        if reply.findings is None:
            raise ReviewFailed(
                f"invalid reply from the model: {reply.problem}", calls=exchange.calls
            )
        return ReviewResult(
            findings=reply.findings,
            provider=self.name,
            model=self.model,
            calls=list(exchange.calls),
        )

    async def _ask(
        self,
        messages: list[dict[str, Any]],
        *,
        request: ReviewRequest,
        purpose: str,
        exchange: _Exchange,
    ) -> _Reply:
        """One guarded call (retried by the guard), its records, and what its reply said."""
        call = _GuardedCall(
            provider=self,
            messages=messages,
            unit=request.unit,
            purpose=purpose,
            exchange=exchange,
            on_call=request.on_call,
            price=await self._current_price(),
        )
        used, spent = request.analysis_tokens_used, request.analysis_cost_usd
        exchange.last_report = None
        try:
            reply = await self.guard.call(
                call.send,
                estimate=self._estimate(messages, purpose=purpose, price=call.price),
                deadline=request.deadline,
                analysis_tokens_used=None if used is None else used + exchange.tokens_used,
                analysis_spent_usd=None if spent is None else spent + exchange.cost_usd,
                wait_for_breaker=request.wait_for_breaker,
                wait_for_budget=request.wait_for_budget,
                on_wait=request.on_wait,
                on_attempt=call.record,
                deferred=request.deferred and purpose == "review",
                max_slot_wait=request.max_slot_wait,
            )
        except _API_FAILURES as exc:
            last = exchange.last_report
            raise ReviewFailed(
                self._failure_reason(exc, last_report=last),
                calls=exchange.calls,
                # The guard gave up on a failure worth retrying: it may pass, try again later.
                transient=last is not None and last.outcome.retryable,
                cause=last.outcome.reason if last is not None else type(exc).__name__,
            ) from exc
        if reply.findings is None:
            logger.warning(
                "anthropic_reply_invalid",
                unit_id=request.unit.id,
                purpose=purpose,
                problem=reply.problem,
            )
        return reply

    async def _create(
        self, messages: list[dict[str, Any]], *, request_timeout: float
    ) -> AsyncAPIResponse[Message]:
        """One Messages request, its raw response kept for the headers (rate limits, request-id).

        No ``temperature``: SDK 2.x has no such parameter and current models reject sampling
        parameters (a 400). Reviews stay repeatable through the schema and the result cache.
        """
        return await self._client.messages.with_raw_response.create(
            model=self.model,
            max_tokens=self.max_tokens,
            system=self.system,
            messages=messages,
            output_config={"format": {"type": "json_schema", "schema": FINDINGS_JSON_SCHEMA}},
            timeout=request_timeout,
        )

    def output_estimate(self, purpose: str) -> OutputTokenEstimate:
        """What replies to this model, prompt version and purpose used lately (``observe``d
        by every reply), and so what the next one reserves."""
        kind = (self.model, PROMPT_VERSION, purpose)
        return output_estimate_for(kind, fallback=_TYPICAL_OUTPUT_TOKENS)

    def _estimate(
        self, messages: Sequence[Mapping[str, Any]], *, purpose: str, price: Price | None
    ) -> TokenEstimate:
        characters = len(self.system_prompt) + sum(len(message_text(m)) for m in messages)
        input_tokens = math.ceil(characters / _CHARS_PER_TOKEN) + _SCHEMA_OVERHEAD_TOKENS
        output_tokens = self.output_estimate(purpose).estimate(max_tokens=self.max_tokens)
        return TokenEstimate(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=call_cost(price, input_tokens=input_tokens, output_tokens=output_tokens),
        )

    async def _current_price(self) -> Price | None:
        """The model's price for the spend caps, read again every ``_PRICE_RECHECK_SECONDS``."""
        now = time.monotonic()
        if self._price_read_at is None or now - self._price_read_at > _PRICE_RECHECK_SECONDS:
            self._price = await sync_to_async(price_for)(self.model)
            self._price_read_at = now
        return self._price

    def _failure_reason(self, exc: BaseException, *, last_report: AttemptReport | None) -> str:
        """A short reason for the user, without secrets, for an API failure the guard gave up on."""
        attempts = last_report.number if last_report is not None else 1
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        retried = last_report is not None and last_report.outcome.retryable
        match exc:
            case anthropic.APIStatusError() if retried:
                failing = "kept failing" if attempts > 1 else "failed"
                return f"the API {failing}: {_status_label(exc)} {tries}"
            case anthropic.APIStatusError():
                detail = self._redacted(exc.api_message or exc.message)
                return f"the API rejected the request ({_status_label(exc)}): {detail}"
            case CallTimeoutError() | anthropic.APITimeoutError():
                return f"the API did not answer in time: timed out {tries}"
            case anthropic.APIConnectionError():
                return f"could not reach the API: connection failed {tries}"
            case anthropic.APIResponseValidationError() | json.JSONDecodeError():
                return f"the API sent a malformed response {tries}"
        return f"the API call failed: {type(exc).__name__} {tries}"

    def _redacted(self, text: str) -> str:
        text = redact_text(text, [self._api_key, *secret_values()])
        if len(text) > _MAX_DETAIL_CHARS:
            return text[: _MAX_DETAIL_CHARS - 1].rstrip() + "…"
        return text


@dataclass(eq=False, slots=True, kw_only=True)
class _GuardedCall:
    """The function the guard calls for one request, and the record of each of its attempts."""

    provider: AnthropicProvider
    messages: list[dict[str, Any]]
    unit: Unit
    purpose: str
    exchange: _Exchange
    on_call: CallCallback | None
    price: Price | None = None  # the model's, to price each attempt
    note: _AttemptNote = field(default_factory=_AttemptNote, init=False)

    async def send(self, attempt: Attempt) -> _Reply:
        self.note = note = _AttemptNote(timeout=attempt.timeout)
        try:
            raw = await self.provider._create(self.messages, request_timeout=attempt.timeout)
            note.request_id, note.http_status = raw.request_id or "", raw.status_code
            message = await raw.parse()
        except anthropic.APIStatusError as exc:
            note.request_id, note.http_status = exc.request_id or "", exc.status_code
            note.error = exc.api_message or exc.message
            raise
        except Exception as exc:
            note.error = str(exc) or type(exc).__name__
            raise
        usage = message.usage
        note.cache_read_input_tokens = usage.cache_read_input_tokens or 0
        note.cache_creation_input_tokens = usage.cache_creation_input_tokens or 0
        # What the API counts against its input-tokens-per-minute limit: cache writes count,
        # cache reads do not. The record takes the cache write back out (priced apart).
        self.provider.output_estimate(self.purpose).observe(usage.output_tokens)
        attempt.observe(
            input_tokens=usage.input_tokens + note.cache_creation_input_tokens,
            output_tokens=usage.output_tokens,
            headers=dict(raw.headers),
        )
        reply = _read_reply(message, unit=self.unit, max_tokens=self.provider.max_tokens)
        note.invalid, note.problem = reply.findings is None, reply.problem
        note.findings_clamped, note.findings_merged = reply.clamped, reply.merged
        return reply

    async def record(self, report: AttemptReport) -> None:
        """The guard's ``on_attempt``: runs once per attempt that made a request."""
        self.exchange.last_report = report
        call = self._call_record(report)
        self.exchange.calls.append(call)
        logger.debug("anthropic_call_finished", unit_id=self.unit.id, **dataclasses.asdict(call))
        if self.on_call is not None and inspect.isawaitable(awaitable := self.on_call(call)):
            await awaitable

    def _call_record(self, report: AttemptReport) -> LLMCallRecord:
        outcome = report.outcome
        invalid = outcome.is_success and self.note.invalid
        status = "invalid_reply" if invalid else outcome.reason
        # The guard was told what the API's input limit counts (cache writes included); the
        # record keeps plain input apart from cache writes, each priced at its own rate.
        input_tokens = max(0, report.input_tokens - self.note.cache_creation_input_tokens)
        return LLMCallRecord(
            provider=self.provider.name,
            model=self.provider.model,
            attempt=report.number,
            purpose=self.purpose,
            status=status[:_MAX_STATUS_CHARS],
            http_status=self.note.http_status or outcome.status,
            latency_ms=round(report.duration * 1000),
            input_tokens=input_tokens,
            output_tokens=report.output_tokens,
            request_id=self.note.request_id,
            cache_read_input_tokens=self.note.cache_read_input_tokens,
            cache_creation_input_tokens=self.note.cache_creation_input_tokens,
            findings_clamped=self.note.findings_clamped,
            findings_merged=self.note.findings_merged,
            error=self.provider._redacted(self._error(outcome, invalid=invalid)),
            budget=self.provider.guard.budget or "",
            cost_usd=call_cost(
                self.price,
                input_tokens=input_tokens,
                output_tokens=report.output_tokens,
                cache_read_input_tokens=self.note.cache_read_input_tokens,
                cache_creation_input_tokens=self.note.cache_creation_input_tokens,
            ),
        )

    def _error(self, outcome: Outcome, *, invalid: bool) -> str:
        """Why the attempt failed, in a few words ("" when it did not)."""
        if invalid:
            return self.note.problem
        if outcome.is_success:
            return ""
        if outcome.reason == "timeout":
            return f"timed out after {self.note.timeout:g} s"
        return self.note.error or outcome.reason


# Failures of the call itself, once the guard has given up on them. The guard's refusals
# (circuit open, budget exhausted, deadline) are not among them: the caller handles those.
_API_FAILURES = (anthropic.AnthropicError, CallTimeoutError, json.JSONDecodeError)


def model_target(model: str) -> str:
    """The breaker and rate budget of ``model``: each model's capacity is its own."""
    return member_name("anthropic", model)


def _status_label(exc: anthropic.APIStatusError) -> str:
    return f"{exc.status_code} {exc.type}" if exc.type else str(exc.status_code)


# --- the prompt ----------------------------------------------------------------------------------


def _correction_messages(prompt: str, *, reply: _Reply, unit: Unit) -> list[dict[str, Any]]:
    """The conversation for the corrective request: the prompt, the bad reply, what was wrong."""
    advice = (
        "The reply was cut off at the token limit: report fewer findings, with shorter "
        "explanations and fixes, so that the whole object fits."
        if reply.truncated
        else "Correct the problem."
    )
    correction = (
        f"Your reply could not be used: {reply.problem}\n{advice}\n"
        'Answer again with only a JSON object that matches the schema, {"findings": [...]}, '
        f"with every line_start and line_end within lines {unit.lineno}-{unit.end_lineno}."
    )
    if not reply.text.strip():  # the API refuses an empty assistant turn
        return [
            {
                "role": "user",
                "content": [{"type": "text", "text": prompt}, {"type": "text", "text": correction}],
            }
        ]
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": reply.text},
        {"role": "user", "content": correction},
    ]


def _read_reply(message: Message, *, unit: Unit, max_tokens: int) -> _Reply:
    """Findings from a reply, or why it cannot be used."""
    payload, text = _payload(message)
    if message.stop_reason == "max_tokens":
        problem = f"truncated: the reply was cut off at the limit of {max_tokens} output tokens"
        return _Reply(text=text, findings=None, problem=problem, truncated=True)
    if message.stop_reason == "refusal":
        return _Reply(text=text, findings=None, problem="refusal: the model declined to answer")
    if isinstance(payload, str) and not payload.strip():
        return _Reply(text=text, findings=None, problem="empty_text: the reply has no text")
    try:
        read = read_findings_reply(payload, unit_start=unit.lineno, unit_end=unit.end_lineno)
    except InvalidReply as exc:
        return _Reply(text=text, findings=None, problem=str(exc)[:_MAX_DETAIL_CHARS])
    return _Reply(text=text, findings=read.findings, clamped=read.clamped, merged=read.merged)


def _payload(message: Message) -> tuple[str | Mapping[str, Any], str]:
    """(what to validate, its text): a tool_use input if there is one, else the first text."""
    for block in message.content:
        if block.type == "tool_use" and isinstance(block.input, Mapping):
            return block.input, json.dumps(block.input)
    text = next((block.text for block in message.content if block.type == "text"), "")
    return text, text
