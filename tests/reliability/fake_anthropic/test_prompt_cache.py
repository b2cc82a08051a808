"""The fake honours ``cache_control``: the first request with a prefix writes it, later ones
within five minutes of its last use read it, and what it counts against its input-tokens
window is what the API counts (cache writes, not cache reads)."""

from __future__ import annotations

from reliability.fake_anthropic.prompt_cache import PromptCache, cached_prefix
from tests.clocks import FakeClock

LONG_SYSTEM = "Review the function carefully." * 200  # 6,000 characters: 1,500 tokens
MODEL = "claude-sonnet-5-5"


def body(*, system: object = None, question: str = "Review f.", model: str = MODEL) -> dict:
    marked = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    return {
        "model": model,
        "max_tokens": 100,
        "system": marked if system is None else system,
        "messages": [{"role": "user", "content": question}],
    }


class TestPromptCache:
    def test_write_then_read_within_five_minutes_then_write_again(self):
        clock = FakeClock(1000.0)
        cache = PromptCache(clock=clock.monotonic)

        written = cache.usage(body(), input_tokens=1600)
        clock.advance(299)
        read = cache.usage(body(question="Review g."), input_tokens=1600)
        clock.advance(299)  # each read refreshes the five minutes
        read_again = cache.usage(body(), input_tokens=1600)
        clock.advance(301)
        expired = cache.usage(body(), input_tokens=1600)

        assert (written.cache_creation_input_tokens, written.cache_read_input_tokens) == (1500, 0)
        assert (read.cache_creation_input_tokens, read.cache_read_input_tokens) == (0, 1500)
        assert read_again.cache_read_input_tokens == 1500
        assert expired.cache_creation_input_tokens == 1500
        assert written.input_tokens == read.input_tokens == 100

    def test_unmarked_short_or_other_model__not_cached(self):
        cache = PromptCache()
        short = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]

        assert cache.usage(body(system=LONG_SYSTEM), input_tokens=1600).input_tokens == 1600
        assert cache.usage(body(system=short), input_tokens=10).cache_creation_input_tokens == 0
        # 1,500 tokens is below Haiku's minimum of 2,048.
        haiku = cache.usage(body(model="claude-haiku-4-5"), input_tokens=1600)
        assert haiku.cache_creation_input_tokens == 0 and haiku.input_tokens == 1600
        cache.usage(body(), input_tokens=1600)
        other_model = cache.usage(body(model="claude-opus-4-1"), input_tokens=1600)
        assert other_model.cache_creation_input_tokens == 1500

    def test_prefix__ends_at_the_last_marked_block(self):
        marked_question = body()
        marked_question["messages"][0]["content"] = [
            {"type": "text", "text": "Review f.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be brief."},
        ]
        prefix = cached_prefix(marked_question)
        assert prefix is not None
        assert prefix.endswith("Review f.") and LONG_SYSTEM in prefix
        assert cached_prefix(body(system=LONG_SYSTEM)) is None


class TestThroughTheSdk:
    async def test_second_request__reads_and_counts_fewer_input_tokens(self, fake, client):
        first = await client.messages.create(**body())
        second = await client.messages.create(**body(question="Review g."))

        assert first.usage.cache_creation_input_tokens > 1000
        assert first.usage.cache_read_input_tokens == 0
        assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
        assert second.usage.cache_creation_input_tokens == 0
        assert second.usage.input_tokens < 20

    async def test_reset__forgets_the_cache(self, fake, client):
        await client.messages.create(**body())
        fake.reset()
        again = await client.messages.create(**body())
        assert again.usage.cache_creation_input_tokens > 0

    async def test_count_tokens__unaffected(self, fake, client):
        await client.messages.create(**body())
        counted = await client.messages.count_tokens(
            model=MODEL, system=body()["system"], messages=body()["messages"]
        )
        assert counted.input_tokens > 1500
