"""The anthropic provider: the real SDK through the real guard, against the fake API on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured

from analyses.findings import FINDING_KINDS, FINDINGS_JSON_SCHEMA, SEVERITIES, Finding
from analyses.parsing import ContextSnippet, Unit, build_call_graph, context_for, parse_module
from analyses.providers.anthropic import AnthropicProvider
from analyses.providers.base import LLMCallRecord, ReviewFailed, ReviewRequest
from analyses.providers.prompt import SYSTEM_PROMPT, review_prompt
from analyses.review_responder import review_responder
from reliability.controls import breaker_force_open
from reliability.exceptions import (
    BudgetExhaustedError,
    CircuitOpenError,
    DeadlineExceededError,
)
from reliability.fake_anthropic import MESSAGES_PATH, FakeAnthropic, FakeConfig, RequestRecord
from reliability.guard import Guard
from reliability.retry import RetryBudget, RetryPolicy
from tests.anthropic_support import MODEL, generous_anthropic_limits

API_KEY = "test-key-4f9d2c71b0e8"

SOURCE = '''\
"""Orders and their totals."""


def _price(item):
    return item["price"] * item["qty"]


class Orders:
    def __init__(self, items):
        self.items = list(items)

    def total(self, discount=0):
        """Sum of the order lines, less the discount."""
        subtotal = 0
        for item in self.items:
            subtotal += _price(item)
        return subtotal - discount

    def report(self):
        return f"total: {self.total()}"
'''
TOTAL_HEADER = "Function: shop.orders.Orders.total (shop/orders.py, lines 12-17)"

DISCOUNT_FINDING = {
    "kind": "bug",
    "severity": "medium",
    "title": "A discount larger than the subtotal gives a negative total",
    "explanation": "Nothing bounds the discount, so a large one makes the order total negative.",
    "line_start": 17,
    "line_end": 17,
    "fix": "        return max(subtotal - discount, 0)",
    "confidence": 0.8,
}


class MaxTokensFake(FakeAnthropic):
    """Honours ``max_tokens`` as the real API does: a longer reply is cut off and ends with
    ``stop_reason: "max_tokens"``. ``FakeAnthropic`` itself never truncates a reply."""

    async def _reply(self, path: str, body: Any) -> tuple[dict[str, Any], tuple[int, int]]:
        payload, (input_tokens, output_tokens) = await super()._reply(path, body)
        limit = body["max_tokens"] if path == MESSAGES_PATH else None
        if limit is None or output_tokens <= limit:
            return payload, (input_tokens, output_tokens)
        block = payload["content"][0]
        block["text"] = block["text"][: limit * 4]  # the fake counts four characters a token
        payload["stop_reason"] = "max_tokens"
        payload["usage"]["output_tokens"] = limit
        return payload, (input_tokens, limit)


def replies(*items: Any):
    """A responder answering with ``items`` in turn, then the last one again."""
    remaining: Iterator[Any] = iter(items)
    last: list[Any] = [None]

    def respond(body: dict[str, Any]) -> Any:
        last[0] = next(remaining, last[0])
        return last[0]

    return respond


def fast_guard(*, max_attempts: int = 4) -> Guard:
    return Guard(
        target="anthropic",
        budget="anthropic",
        timeout=5.0,
        retry_policy=RetryPolicy(max_attempts=max_attempts, base_delay=0.01, max_delay=0.05),
        retry_budget=RetryBudget(min_retries=100),
    )


@pytest.fixture
def fake():
    server = MaxTokensFake(config=FakeConfig(seed=1), responder=review_responder)
    with server.running():
        yield server


@pytest.fixture
async def make_provider(fake):
    providers: list[AnthropicProvider] = []

    async def make(
        *, max_attempts: int = 4, failure_threshold: int = 50, max_tokens: int = 1024
    ) -> AnthropicProvider:
        await sync_to_async(generous_anthropic_limits)(failure_threshold=failure_threshold)
        provider = AnthropicProvider(
            api_key=API_KEY,
            base_url=fake.base_url,
            model=MODEL,
            max_tokens=max_tokens,
            timeout=5.0,
            guard=fast_guard(max_attempts=max_attempts),
        )
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


@pytest.fixture
def units() -> dict[str, Unit]:
    parsed, errors = parse_module(SOURCE, path="shop/orders.py")
    assert not errors
    return {unit.qualname: unit for unit in parsed}


@pytest.fixture
def review_total(units) -> ReviewRequest:
    total = units["Orders.total"]
    graph = build_call_graph(units.values())
    by_id = {unit.id: unit for unit in units.values()}
    return ReviewRequest(unit=total, context=context_for(total, graph=graph, units_by_id=by_id))


def user_messages(record: RequestRecord) -> list[str]:
    return [m["content"] for m in record.body["messages"] if m["role"] == "user"]


def snippet(role: str, index: int) -> ContextSnippet:
    return ContextSnippet(
        role=role,  # type: ignore[arg-type]
        unit_id=f"shop/other.py::{role}_{index}",
        qualname=f"{role}_{index}",
        path="shop/other.py",
        lineno=10 * index + 1,
        end_lineno=10 * index + 2,
        source=f"def {role}_{index}():\n    pass\n",
        truncated=False,
    )


class TestReviews:
    def test_reviews__functions_async_functions_and_methods_only(self):
        provider = AnthropicProvider(
            api_key=API_KEY, model=MODEL, max_tokens=100, timeout=1.0, guard=fast_guard()
        )
        source = "class A:\n    def m(self):\n        pass\n\n\nasync def f():\n    pass\n"
        parsed, _ = parse_module(source, path="a.py")

        assert {unit.kind: provider.reviews(unit) for unit in parsed} == {
            "module": False,
            "class": False,
            "method": True,
            "async_function": True,
        }


class TestPrompt:
    pytestmark = pytest.mark.django_db(transaction=True)

    async def test_request__carries_the_header_the_numbered_source_and_the_context(
        self, fake, make_provider, review_total
    ):
        provider = await make_provider()

        await provider.review(review_total)

        prompt = user_messages(fake.requests[0])[0]
        assert prompt.startswith(TOTAL_HEADER + "\n")
        assert "12 |     def total(self, discount=0):" in prompt
        assert "17 |         return subtotal - discount" in prompt
        assert '<callee name="shop.orders._price" path="shop/orders.py" lines="4-5">' in prompt
        assert 'return item["price"] * item["qty"]' in prompt
        assert '<caller name="shop.orders.Orders.report" path="shop/orders.py" lines="19-20">' in (
            prompt
        )

    async def test_request__asks_for_the_findings_schema(self, fake, make_provider, review_total):
        provider = await make_provider(max_tokens=700)

        await provider.review(review_total)

        body = fake.requests[0].body
        assert body["output_config"] == {
            "format": {"type": "json_schema", "schema": FINDINGS_JSON_SCHEMA}
        }
        assert (body["model"], body["max_tokens"]) == (MODEL, 700)
        assert "temperature" not in body  # current models reject sampling parameters
        assert body["system"] == SYSTEM_PROMPT
        assert fake.requests[0].api_key_present


class TestReviewPrompt:
    def test_context__keeps_at_most_three_callees_and_three_callers(self, units):
        context = [snippet("callee", index) for index in range(1, 5)] + [
            snippet("caller", index) for index in range(1, 5)
        ]

        prompt = review_prompt(units["Orders.total"], context=context)

        assert prompt.count("<callee name=") == 3 and prompt.count("<caller name=") == 3
        assert "callee_3" in prompt and "callee_4" not in prompt
        assert "caller_3" in prompt and "caller_4" not in prompt

    def test_system_prompt__explains_every_kind_and_severity(self):
        for name in (*FINDING_KINDS, *SEVERITIES):
            assert f"- {name}: " in SYSTEM_PROMPT


class TestValidReply:
    pytestmark = pytest.mark.django_db(transaction=True)

    async def test_valid_reply__becomes_findings_with_absolute_lines(
        self, fake, make_provider, review_total
    ):
        fake.responder = replies({"findings": [DISCOUNT_FINDING]})
        provider = await make_provider()

        result = await provider.review(review_total)

        assert result.findings == [
            Finding(
                kind="bug",
                severity="medium",
                title=DISCOUNT_FINDING["title"],
                explanation=DISCOUNT_FINDING["explanation"],
                line_start=17,
                line_end=17,
                confidence=0.8,
                source="anthropic",
                fix="        return max(subtotal - discount, 0)",
            )
        ]
        (call,) = result.calls
        assert (result.provider, result.model, result.requests) == ("anthropic", MODEL, 1)
        assert (call.purpose, call.attempt, call.status, call.http_status) == (
            "review",
            1,
            "ok",
            200,
        )
        assert call.request_id == fake.requests[0].request_id
        assert call.input_tokens > 0 and call.output_tokens > 0
        assert (result.input_tokens, result.output_tokens) == (
            call.input_tokens,
            call.output_tokens,
        )

    @pytest.mark.parametrize("awaitable", [False, True], ids=["sync", "async"])
    async def test_on_call__gets_every_record__sync_or_async(
        self, fake, make_provider, review_total, awaitable
    ):
        fake.script("overloaded", "ok")
        provider = await make_provider()
        seen: list[LLMCallRecord] = []

        async def collect_async(record: LLMCallRecord) -> None:
            seen.append(record)

        result = await provider.review(
            replace(review_total, on_call=collect_async if awaitable else seen.append)
        )

        assert seen == result.calls
        assert [record.status for record in seen] == ["http_529", "ok"]


class TestRetries:
    pytestmark = pytest.mark.django_db(transaction=True)

    async def test_the_sdk__makes_no_retries_of_its_own(self, fake, make_provider, review_total):
        provider = await make_provider(max_attempts=1)
        fake.script("overloaded")

        with pytest.raises(ReviewFailed, match="529 overloaded_error after 1 attempt"):
            await provider.review(review_total)

        assert len(fake.requests) == 1
        assert fake.requests[0].retry_count == 0

    async def test_529_529_ok__succeeds_with_three_records_and_summed_tokens(
        self, fake, make_provider, review_total
    ):
        provider = await make_provider()
        fake.script("overloaded", "overloaded", "ok")

        result = await provider.review(review_total)

        assert [(c.attempt, c.status, c.http_status) for c in result.calls] == [
            (1, "http_529", 529),
            (2, "http_529", 529),
            (3, "ok", 200),
        ]
        assert [c.request_id for c in result.calls] == [r.request_id for r in fake.requests]
        assert result.requests == 3 == len(fake.requests)
        assert result.input_tokens == sum(c.input_tokens for c in result.calls) > 0
        assert result.output_tokens == sum(c.output_tokens for c in result.calls) > 0

    async def test_529_until_the_guard_gives_up__fails_with_the_number_of_attempts(
        self, fake, make_provider, review_total
    ):
        provider = await make_provider(max_attempts=4)
        fake.configure(fault_rates={"overloaded": 1.0})

        with pytest.raises(ReviewFailed) as failed:
            await provider.review(review_total)

        assert failed.value.reason == "the API kept failing: 529 overloaded_error after 4 attempts"
        assert [call.status for call in failed.value.calls] == ["http_529"] * 4
        assert len(fake.requests) == 4


class TestCorrection:
    pytestmark = pytest.mark.django_db(transaction=True)

    async def test_invalid_reply__makes_one_correction_that_names_the_reason(
        self, fake, make_provider, review_total
    ):
        fake.responder = replies("The code looks fine.", {"findings": [DISCOUNT_FINDING]})
        provider = await make_provider()

        result = await provider.review(review_total)

        assert [f.line_start for f in result.findings] == [17]
        first, correction = fake.requests
        assert [m["role"] for m in correction.body["messages"]] == ["user", "assistant", "user"]
        original, invalid, asking_again = (m["content"] for m in correction.body["messages"])
        assert original == user_messages(first)[0]
        assert invalid == "The code looks fine."
        assert "not_json" in asking_again and "lines 12-17" in asking_again
        assert [(c.purpose, c.attempt, c.status, c.http_status) for c in result.calls] == [
            ("review", 1, "invalid_reply", 200),
            ("correction", 1, "ok", 200),
        ]
        assert result.requests == 2

    async def test_two_invalid_replies__fail_the_unit_with_the_reason(
        self, fake, make_provider, review_total
    ):
        unknown_kind = {**DISCOUNT_FINDING, "kind": "style"}
        fake.responder = replies({"findings": [unknown_kind]})
        provider = await make_provider()

        with pytest.raises(ReviewFailed) as failed:
            await provider.review(review_total)

        assert failed.value.reason.startswith("invalid reply from the model: unknown_kind")
        assert "findings[0].kind 'style'" in failed.value.reason
        assert [c.status for c in failed.value.calls] == ["invalid_reply", "invalid_reply"]
        assert len(fake.requests) == 2

    async def test_truncated_reply__counts_as_invalid(self, fake, make_provider, review_total):
        long_finding = {**DISCOUNT_FINDING, "explanation": "Far too long. " * 40}
        fake.responder = replies({"findings": [long_finding]}, {"findings": []})
        provider = await make_provider(max_tokens=60)

        result = await provider.review(review_total)

        assert result.findings == []
        asking_again = user_messages(fake.requests[1])[-1]
        assert "cut off at the limit of 60 output tokens" in asking_again
        assert "fewer findings" in asking_again
        assert [c.status for c in result.calls] == ["invalid_reply", "ok"]

    async def test_truncated_twice__fails_the_unit(self, fake, make_provider, review_total):
        long_finding = {**DISCOUNT_FINDING, "explanation": "Far too long. " * 40}
        fake.responder = replies({"findings": [long_finding]})
        provider = await make_provider(max_tokens=60)

        with pytest.raises(ReviewFailed, match="invalid reply from the model: truncated"):
            await provider.review(review_total)


class TestApiErrors:
    pytestmark = pytest.mark.django_db(transaction=True)

    async def test_400__fails_the_unit_without_a_retry(self, fake, make_provider, review_total):
        provider = await make_provider()
        fake.script("bad_request")

        with pytest.raises(ReviewFailed) as failed:
            await provider.review(review_total)

        assert failed.value.reason == (
            "the API rejected the request (400 invalid_request_error): "
            "The request is invalid (injected fault)."
        )
        (call,) = failed.value.calls
        assert (call.status, call.http_status, call.request_id) == (
            "http_400",
            400,
            fake.requests[0].request_id,
        )
        assert len(fake.requests) == 1

    async def test_open_breaker__propagates_circuit_open_error(
        self, fake, make_provider, review_total
    ):
        provider = await make_provider()
        await sync_to_async(breaker_force_open)(name="anthropic", actor="test")
        calls: list[LLMCallRecord] = []

        with pytest.raises(CircuitOpenError):
            await provider.review(replace(review_total, on_call=calls.append))

        assert fake.requests == [] and calls == []

    async def test_outage__opens_the_breaker_mid_review_and_propagates(
        self, fake, make_provider, review_total
    ):
        provider = await make_provider(failure_threshold=2)
        fake.configure(fault_rates={"overloaded": 1.0})
        calls: list[LLMCallRecord] = []

        with pytest.raises(CircuitOpenError):
            await provider.review(replace(review_total, on_call=calls.append))

        assert [call.status for call in calls] == ["http_529", "http_529"]

    async def test_retry_after_past_the_deadline__propagates_deadline_exceeded(
        self, fake, make_provider, review_total
    ):
        provider = await make_provider()
        fake.configure(retry_after_s=30)
        fake.script("rate_limit")
        request = ReviewRequest(unit=review_total.unit, deadline=time.time() + 5)
        calls: list[LLMCallRecord] = []

        with pytest.raises(DeadlineExceededError, match="retry-after of 30"):
            await provider.review(replace(request, on_call=calls.append))

        assert [call.status for call in calls] == ["http_429"]

    async def test_no_budget_before_the_deadline__propagates_budget_exhausted(
        self, fake, make_provider, review_total
    ):
        provider = await make_provider()
        request = ReviewRequest(unit=review_total.unit, deadline=time.time() - 1)

        with pytest.raises(BudgetExhaustedError):
            await provider.review(request)

        assert fake.requests == []

    @pytest.mark.parametrize(
        ("faults", "reason"),
        [
            (["auth"], "the API rejected the request (401 authentication_error)"),
            (["spend_limit"], "the API rejected the request (429 rate_limit_error)"),
            (["server_error"] * 4, "the API kept failing: 500 api_error after 4 attempts"),
            (["reset"] * 4, "could not reach the API: connection failed after 4 attempts"),
            (["malformed"] * 4, "the API sent a malformed response after 4 attempts"),
        ],
    )
    async def test_api_failure__becomes_a_short_reason_without_the_api_key(
        self, fake, make_provider, review_total, faults, reason
    ):
        provider = await make_provider()
        fake.script(*faults)

        with pytest.raises(ReviewFailed) as failed:
            await provider.review(review_total)

        assert failed.value.reason.startswith(reason)
        assert len(failed.value.calls) == len(faults) == len(fake.requests)
        assert API_KEY not in failed.value.reason
        assert API_KEY not in repr(failed.value.calls)


class TestFromSettings:
    @pytest.mark.django_db(transaction=True)
    async def test_from_settings__reads_the_environment_and_settings(
        self, fake, review_total, settings
    ):
        settings.ANTHROPIC_API_KEY = API_KEY
        settings.ANTHROPIC_BASE_URL = fake.base_url
        settings.EIDOLON_AI_MODEL = "claude-from-settings"
        settings.EIDOLON_AI_MAX_TOKENS = 321
        await sync_to_async(generous_anthropic_limits)()
        provider = AnthropicProvider.from_settings(guard=fast_guard())

        try:
            result = await provider.review(review_total)
        finally:
            await provider.aclose()

        body = fake.requests[0].body
        assert (body["model"], body["max_tokens"]) == ("claude-from-settings", 321)
        assert result.model == "claude-from-settings"

    def test_from_settings__without_an_api_key_raises_improperly_configured(self, settings):
        settings.ANTHROPIC_API_KEY = ""

        with pytest.raises(ImproperlyConfigured, match="ANTHROPIC_API_KEY"):
            AnthropicProvider.from_settings(guard=fast_guard())
