"""The faults the fake Anthropic API injects, scripted or drawn, as the real SDK sees them."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import anthropic
import pytest

from reliability.fake_anthropic import DEFAULT_REPLY_TEXT
from tests.reliability.fake_anthropic.support import API_KEY, ask, http


class TestFakeAnthropicFaults:
    @pytest.mark.parametrize(
        ("kind", "error_class", "status", "should_retry"),
        [
            ("overloaded", anthropic.OverloadedError, 529, "true"),
            ("server_error", anthropic.InternalServerError, 500, "true"),
            ("unavailable", anthropic.ServiceUnavailableError, 503, "true"),
            ("rate_limit", anthropic.RateLimitError, 429, "true"),
            ("spend_limit", anthropic.EnforcedSpendLimitReachedError, 429, "false"),
            ("bad_request", anthropic.BadRequestError, 400, "false"),
            ("auth", anthropic.AuthenticationError, 401, "false"),
        ],
    )
    async def test_error_fault__raises_matching_sdk_error(
        self, fake, client, kind, error_class, status, should_retry
    ):
        fake.script(kind)

        with pytest.raises(anthropic.APIStatusError) as caught:
            await ask(client)

        error = caught.value
        assert type(error) is error_class
        assert error.status_code == status
        assert error.request_id == fake.requests[0].request_id
        assert error.body["type"] == "error"
        assert error.body["error"]["type"] == error.type
        assert error.response.headers["x-should-retry"] == should_retry
        assert fake.requests[0].status == status

    async def test_overloaded__is_an_internal_server_error(self, fake, client):
        fake.script("overloaded")

        with pytest.raises(anthropic.InternalServerError) as caught:
            await ask(client)

        assert caught.value.type == "overloaded_error"

    async def test_spend_limit__message_says_the_spend_limit_is_reached(self, fake, client):
        fake.script("spend_limit")

        with pytest.raises(anthropic.RateLimitError) as caught:
            await ask(client)

        assert "spend limit" in caught.value.api_message
        assert caught.value.error_code == "enforced_spend_limit_reached"
        assert "retry-after" not in caught.value.response.headers

    @pytest.mark.parametrize(
        ("retry_after_s", "retry_after", "retry_after_ms"),
        [(1.0, "1", None), (0.25, "1", "250"), (2.5, "3", "2500")],
    )
    async def test_rate_limit__sends_retry_after_and_ratelimit_headers(
        self, fake, client, retry_after_s, retry_after, retry_after_ms
    ):
        fake.configure(retry_after_s=retry_after_s)
        fake.script("rate_limit")
        before = datetime.now(UTC)

        with pytest.raises(anthropic.RateLimitError) as caught:
            await ask(client)

        headers = caught.value.response.headers
        assert headers["retry-after"] == retry_after
        assert headers.get("retry-after-ms") == retry_after_ms
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
        assert reset >= before + timedelta(seconds=retry_after_s) - timedelta(milliseconds=5)
        for family in ("requests", "input-tokens", "output-tokens"):
            for suffix in ("limit", "remaining", "reset"):
                assert f"anthropic-ratelimit-{family}-{suffix}" in headers

    async def test_hang__short_client_timeout_raises_api_timeout_error(self, fake):
        fake.script("hang")

        async with anthropic.AsyncAnthropic(
            api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=0.3
        ) as impatient_client:
            with pytest.raises(anthropic.APITimeoutError):
                await ask(impatient_client)

        assert fake.requests[0].fault == "hang"
        assert fake.requests[0].status is None

    async def test_reset__raises_api_connection_error(self, fake, client):
        fake.script("reset")

        with pytest.raises(anthropic.APIConnectionError) as caught:
            await ask(client)

        assert not isinstance(caught.value, anthropic.APITimeoutError)
        assert fake.requests[0].fault == "reset"

    async def test_trickle__slow_reply_still_parses(self, fake, client):
        fake.configure(trickle_delay_s=0.02, trickle_chunk_bytes=64)
        fake.script("trickle")
        started = time.monotonic()

        message = await ask(client)

        assert message.content[0].text == DEFAULT_REPLY_TEXT
        # A reply of several hundred bytes takes several 20 ms pauses.
        assert time.monotonic() - started >= 0.1

    async def test_malformed__sdk_raises_json_decode_error(self, fake, client):
        fake.script("malformed")

        with pytest.raises(json.JSONDecodeError):
            await ask(client)

        assert fake.requests[0].status == 200

    async def test_script__applied_in_order_before_rates(self, fake, client):
        fake.configure(fault_rates={"server_error": 1.0})
        fake.script("overloaded", "ok", "rate_limit")
        outcomes = []

        for _ in range(4):
            try:
                await ask(client)
                outcomes.append(200)
            except anthropic.APIStatusError as error:
                outcomes.append(error.status_code)

        assert outcomes == [529, 200, 429, 500]
        assert [record.fault for record in fake.requests] == [
            "overloaded",
            "ok",
            "rate_limit",
            "server_error",
        ]
        assert fake.pending_script == []

    async def test_script__replaces_pending_script(self, fake):
        fake.script("overloaded", "hang")
        fake.script("auth")

        assert fake.pending_script == ["auth"]

    async def test_script__unknown_kind_raises(self, fake):
        with pytest.raises(ValueError, match="unknown fault kind 'explode'"):
            fake.script("ok", "explode")

    async def test_fault_rates__seeded_proportions_over_200_requests(self, fake, client):
        fake.configure(fault_rates={"overloaded": 0.2, "server_error": 0.1}, seed=42)
        statuses: Counter[int] = Counter()

        for _ in range(200):
            try:
                await ask(client)
                statuses[200] += 1
            except anthropic.APIStatusError as error:
                statuses[error.status_code] += 1

        assert statuses[529] / 200 == pytest.approx(0.2, abs=0.07)
        assert statuses[500] / 200 == pytest.approx(0.1, abs=0.05)
        assert statuses[200] / 200 == pytest.approx(0.7, abs=0.08)

    async def test_fault_rates__same_seed_gives_same_sequence(self, fake, client):
        fake.configure(fault_rates={"overloaded": 0.3, "server_error": 0.3}, seed=3)
        sequences = []
        for _ in range(2):
            fake.reset()  # reseeds
            for _ in range(30):
                try:
                    await ask(client)
                except anthropic.APIStatusError:
                    pass
            sequences.append([record.fault for record in fake.requests])

        assert sequences[0] == sequences[1]
        assert len(set(sequences[0])) == 3

    async def test_latency__delays_successful_replies_only(self, fake, client):
        fake.configure(latency_s=(0.15, 0.2))
        started = time.monotonic()
        await ask(client)
        ok_elapsed = time.monotonic() - started

        fake.script("overloaded")
        started = time.monotonic()
        with pytest.raises(anthropic.OverloadedError):
            await ask(client)
        error_elapsed = time.monotonic() - started

        assert ok_elapsed >= 0.15
        assert error_elapsed < 0.15

    async def test_rpm_limit__refuses_past_limit_then_admits_after_window(self, fake, client):
        fake.configure(rpm_limit=3, rpm_window_s=0.5)
        for _ in range(3):
            await ask(client)

        with pytest.raises(anthropic.RateLimitError) as caught:
            await ask(client)

        wait_s = int(caught.value.response.headers["retry-after-ms"]) / 1000
        assert 0 < wait_s <= 0.5
        assert fake.requests[-1].fault == "rpm_limit"
        await asyncio.sleep(wait_s + 0.05)
        message = await ask(client)
        assert message.type == "message"

    async def test_missing_api_key__answers_401(self, fake):
        status, _, body = await asyncio.to_thread(
            http,
            "POST",
            f"{fake.base_url}/v1/messages",
            {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
        )

        assert status == 401
        assert body["error"]["type"] == "authentication_error"
        assert fake.requests[0].fault == "missing_api_key"
        assert fake.requests[0].api_key_present is False
