"""The fake enforcing the API's rate limits: token buckets, max_tokens charged at the start and
given back at the end, 429 with retry-after and the anthropic-ratelimit-* headers."""

from __future__ import annotations

from datetime import UTC, datetime

import anthropic
import pytest

from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.fake_anthropic.ratelimits import TokenBucket
from tests.reliability.fake_anthropic.support import API_KEY


def limited(**changes) -> FakeConfig:
    settings = {
        "enforce_rate_limits": True,
        "rpm_limit": 50,
        "input_tokens_limit": 40_000,
        "output_tokens_limit": 1_000,
        "rpm_window_s": 60.0,
        "seed": 1,
    }
    return FakeConfig(**{**settings, **changes})


async def create(client: anthropic.AsyncAnthropic, *, max_tokens: int):
    return await client.messages.with_raw_response.create(
        model="claude-fake-1",
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": "Review this function."}],
    )


@pytest.fixture
async def limited_fake():
    async with FakeAnthropic(config=limited()) as server:
        yield server


@pytest.fixture
async def limited_client(limited_fake):
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=limited_fake.base_url, max_retries=0, timeout=5.0
    ) as sdk_client:
        yield sdk_client


class TestTokenBucket:
    def test_bucket__refills_continuously_up_to_its_capacity(self):
        bucket = TokenBucket(capacity=600, window_s=60.0, level=0, updated_at=100.0)

        assert bucket.seconds_until(50, 100.0) == pytest.approx(5.0)
        bucket.refill(103.0)
        assert bucket.level == pytest.approx(30)
        bucket.refill(1_000.0)
        assert bucket.level == 600


class TestFakeRateLimits:
    async def test_output_tokens__charged_at_max_tokens_then_refunded_to_usage(
        self, limited_fake, limited_client
    ):
        first = await create(limited_client, max_tokens=600)
        usage = (await first.parse()).usage.output_tokens

        remaining = int(first.headers["anthropic-ratelimit-output-tokens-remaining"])
        # Answered while the request still held its 600 (the refund comes as it ends).
        assert 400 <= remaining <= 401
        second = await create(limited_client, max_tokens=600)
        remaining = int(second.headers["anthropic-ratelimit-output-tokens-remaining"])
        assert 1_000 - usage - 600 <= remaining <= 1_000 - usage - 600 + 2
        assert second.headers["anthropic-ratelimit-output-tokens-limit"] == "1000"
        assert second.headers["anthropic-ratelimit-requests-limit"] == "50"
        reset = datetime.fromisoformat(
            second.headers["anthropic-ratelimit-output-tokens-reset"].replace("Z", "+00:00")
        )
        assert reset > datetime.now(UTC)

    async def test_over_a_dimension__429_with_retry_after_and_headers(
        self, limited_fake, limited_client
    ):
        await create(limited_client, max_tokens=900)  # leaves ~1000 - usage

        with pytest.raises(anthropic.RateLimitError) as raised:
            await create(limited_client, max_tokens=1_000)

        response = raised.value.response
        assert raised.value.body["error"]["type"] == "rate_limit_error"
        # 1,000 output tokens a minute: the missing tokens take seconds to come back.
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert int(response.headers["anthropic-ratelimit-output-tokens-remaining"]) < 1_000
        assert response.headers["anthropic-ratelimit-input-tokens-limit"] == "40000"
        statuses = [(record.fault, record.status) for record in limited_fake.requests]
        assert statuses == [("ok", 200), ("bucket_limit", 429)]

    async def test_requests_dimension__refuses_the_request_past_the_limit(self):
        async with FakeAnthropic(config=limited(rpm_limit=2)) as fake:
            async with anthropic.AsyncAnthropic(
                api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=5.0
            ) as client:
                for _ in range(2):
                    await create(client, max_tokens=10)
                with pytest.raises(anthropic.RateLimitError) as raised:
                    await create(client, max_tokens=10)

        headers = raised.value.response.headers
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert int(headers["retry-after"]) >= 1  # one request back every 30 s

    async def test_off_by_default__max_tokens_is_not_charged(self, fake, client):
        for _ in range(3):
            response = await create(client, max_tokens=70_000)

        assert response.status_code == 200
        assert all(record.status == 200 for record in fake.requests)
