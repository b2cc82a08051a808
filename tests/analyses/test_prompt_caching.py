"""Prompt caching: the shared prefix is marked when it is long enough for the API to cache it,
each call records its cache reads and writes at their prices, and the input-token budget is
charged as the API counts it (cache writes count, cache reads do not). Through the real SDK
against the fake, which honours ``cache_control``."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from asgiref.sync import sync_to_async

from analyses.models import Analysis, AnalysisStatus, LLMCall
from analyses.orchestrator import run_analysis
from analyses.providers.anthropic import AnthropicProvider
from analyses.providers.prompt import SYSTEM_PROMPT, shared_prefix_tokens, system_parameter
from analyses.review_responder import review_responder
from analyses.services import analysis_create
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import ModelPrice, RateLimitBudget
from tests.anthropic_support import (
    MODEL,
    as_anthropic,
    generous_anthropic_limits,
    provider_for,
    write_project,
)

pytestmark = pytest.mark.django_db(transaction=True)

# The product's prompt with enough house rules to pass the 1024-token minimum of Sonnet models.
HOUSE_RULES = "\n".join(
    f"- House rule {number}: prefer explicit names, small functions and early returns; flag "
    "any deviation only when it makes the code measurably harder to change or to test."
    for number in range(1, 26)
)
LONG_SYSTEM_PROMPT = f"{SYSTEM_PROMPT}\n\nHouse rules:\n{HOUSE_RULES}"
PRICE = {"input": "3", "output": "15", "cache_write": "3.75", "cache_read": "0.30"}


def long_prompt_provider(fake: FakeAnthropic) -> AnthropicProvider:
    provider = provider_for(fake)
    return AnthropicProvider(
        api_key="test-key",
        base_url=fake.base_url,
        model=MODEL,
        max_tokens=provider.max_tokens,
        timeout=5.0,
        guard=provider.guard,
        system_prompt=LONG_SYSTEM_PROMPT,
    )


class TestSystemParameter:
    def test_short_prefix__sent_plain_long_prefix__marked_ephemeral(self):
        assert (
            shared_prefix_tokens(SYSTEM_PROMPT) < 1024 <= shared_prefix_tokens(LONG_SYSTEM_PROMPT)
        )
        assert system_parameter(SYSTEM_PROMPT, min_tokens=1024) == SYSTEM_PROMPT
        assert system_parameter(LONG_SYSTEM_PROMPT, min_tokens=1024) == [
            {"type": "text", "text": LONG_SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
        ]
        # The threshold is a setting: lowered, the product's own prompt qualifies.
        assert system_parameter(SYSTEM_PROMPT, min_tokens=500)[0]["cache_control"]

    def test_threshold__by_model_unless_set(self, settings):
        settings.ANTHROPIC_API_KEY = "test-key"
        assert AnthropicProvider.from_settings().system == SYSTEM_PROMPT  # Sonnet: 1024 tokens
        settings.EIDOLON_AI_PROMPT_CACHE_MIN_TOKENS = 600
        assert isinstance(AnthropicProvider.from_settings().system, list)
        settings.EIDOLON_AI_PROMPT_CACHE_MIN_TOKENS = 0
        haiku = AnthropicProvider(
            api_key="k", model="claude-haiku-4-5", max_tokens=100, timeout=1.0,
            system_prompt=LONG_SYSTEM_PROMPT,
        )  # fmt: skip
        assert shared_prefix_tokens(LONG_SYSTEM_PROMPT) < 2048
        assert haiku.system == LONG_SYSTEM_PROMPT


class TestTwoReviews:
    async def test_second_review__reads_the_cache_at_its_price_and_the_budget_skips_reads(
        self, tmp_path
    ):
        await sync_to_async(generous_anthropic_limits)()
        # The data migration's rows are there unless an earlier transactional test flushed them.
        await sync_to_async(ModelPrice.objects.filter(model__startswith="claude-sonnet").delete)()
        await sync_to_async(ModelPrice.objects.create)(
            model="claude-sonnet", **{f"{kind}_per_mtok": Decimal(p) for kind, p in PRICE.items()}
        )
        # One function and the module's helper, reviewed one after the other.
        root = write_project(tmp_path, functions=1)
        analysis = await sync_to_async(analysis_create)(
            source=str(root), provider="static", allow_any_path=True, concurrency=1
        )
        await as_anthropic(analysis)
        with FakeAnthropic(config=FakeConfig(seed=3), responder=review_responder).running() as fake:
            status = await run_analysis(analysis.pk, provider=long_prompt_provider(fake))
            bodies = [request.body for request in fake.requests]

        assert status == AnalysisStatus.COMPLETED
        assert len(bodies) == 2
        assert all(body["system"][0]["cache_control"] == {"type": "ephemeral"} for body in bodies)
        first, second = await sync_to_async(list)(LLMCall.objects.order_by("id"))
        assert first.cache_creation_input_tokens > 0 and first.cache_read_input_tokens == 0
        assert second.cache_read_input_tokens == first.cache_creation_input_tokens
        assert second.cache_creation_input_tokens == 0
        # The cached prefix is not input any more: only the function's own prompt is.
        assert second.input_tokens < second.cache_read_input_tokens

        million = Decimal(1_000_000)
        for call in (first, second):
            expected = (
                call.input_tokens * Decimal(PRICE["input"])
                + call.output_tokens * Decimal(PRICE["output"])
                + call.cache_creation_input_tokens * Decimal(PRICE["cache_write"])
                + call.cache_read_input_tokens * Decimal(PRICE["cache_read"])
            ) / million
            assert call.cost_usd == expected.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)
        uncached_price = (
            (second.input_tokens + second.cache_read_input_tokens) * Decimal(PRICE["input"])
            + second.output_tokens * Decimal(PRICE["output"])
        ) / million
        assert second.cost_usd < uncached_price / 2

        # The budget counts what the API counts against its input-tokens-per-minute limit.
        budget = await sync_to_async(RateLimitBudget.objects.get)(name="anthropic")
        counted = sum(c.input_tokens + c.cache_creation_input_tokens for c in (first, second))
        assert budget.total_input_tokens == counted
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        assert analysis.input_tokens == first.input_tokens + second.input_tokens

    async def test_short_prompt__nothing_cached(self, tmp_path):
        await sync_to_async(generous_anthropic_limits)()
        analysis = await sync_to_async(analysis_create)(
            source=str(write_project(tmp_path, functions=1)),
            provider="static",
            allow_any_path=True,
            concurrency=1,
        )
        await as_anthropic(analysis)
        with FakeAnthropic(config=FakeConfig(seed=3), responder=review_responder).running() as fake:
            await run_analysis(analysis.pk, provider=provider_for(fake))

        calls = await sync_to_async(list)(
            LLMCall.objects.values_list("cache_read_input_tokens", "cache_creation_input_tokens")
        )
        assert calls == [(0, 0), (0, 0)]
