"""The fake Anthropic API's request log, control endpoints and lifecycle."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import anthropic
import pytest

from reliability.fake_anthropic import FakeAnthropic
from tests.reliability.fake_anthropic.support import API_KEY, ask, fast_config, http


class TestFakeAnthropicRequestLog:
    async def test_log__records_request_details_but_never_the_api_key(self, fake, client):
        before_wall, before_monotonic = datetime.now(UTC), time.monotonic()

        message = await ask(
            client,
            system="You review Python functions.",
            messages=[{"role": "user", "content": "def parse_header(line): ..."}],
        )

        [record] = fake.requests
        assert record.index == 0
        assert before_wall <= record.received_at <= datetime.now(UTC)
        assert before_monotonic <= record.received_monotonic <= time.monotonic()
        assert (record.method, record.path) == ("POST", "/v1/messages")
        assert record.model == "claude-fake-1"
        assert record.body["messages"][0]["content"] == "def parse_header(line): ..."
        assert "parse_header" in record.prompt_text
        assert "You review Python functions." in record.prompt_text
        assert (record.fault, record.status) == ("ok", 200)
        assert record.request_id == message._request_id
        assert record.retry_count == 0
        assert record.api_key_present is True
        assert record.credential_header == "authorization"
        assert record.headers["anthropic-version"]
        assert "authorization" not in record.headers
        assert API_KEY not in repr(record)
        assert API_KEY not in json.dumps(record.to_dict())

    async def test_log__records_x_api_key_presence_without_value(self, fake):
        status, _, _ = await asyncio.to_thread(
            http,
            "POST",
            f"{fake.base_url}/v1/messages",
            {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": "sk-ant-secret-value"},
        )

        [record] = fake.requests
        assert status == 200
        assert record.credential_header == "x-api-key"
        assert "x-api-key" not in record.headers
        assert "sk-ant-secret-value" not in json.dumps(record.to_dict())

    async def test_log__records_sdk_retry_count(self, fake):
        fake.configure(retry_after_s=0.01)
        fake.script("rate_limit", "rate_limit", "ok")  # retry-after-ms: 10

        async with anthropic.AsyncAnthropic(
            api_key=API_KEY, base_url=fake.base_url, max_retries=2, timeout=5.0
        ) as retrying_client:
            message = await ask(retrying_client)

        assert message.type == "message"
        assert [record.retry_count for record in fake.requests] == [0, 1, 2]

    async def test_reset__clears_log_script_and_rpm_window(self, fake, client):
        fake.configure(rpm_limit=1)
        await ask(client)
        fake.script("overloaded")

        fake.reset()

        assert fake.requests == []
        assert fake.pending_script == []
        assert (await ask(client)).type == "message"  # the RPM window is empty again


class TestFakeAnthropicControlEndpoints:
    def test_control_endpoints__steer_a_fake_in_a_thread(self):
        with FakeAnthropic(config=fast_config()).running() as fake:
            url = fake.base_url
            status, _, config = http("POST", f"{url}/_fake/config", {"fault_rates": {"auth": 1.0}})
            assert (status, config["fault_rates"]) == (200, {"auth": 1.0})
            assert http("GET", f"{url}/_fake/config")[2] == config
            status, _, script = http("POST", f"{url}/_fake/script", ["overloaded", "ok"])
            assert (status, script) == (200, {"pending": ["overloaded", "ok"]})

            sync_client = anthropic.Anthropic(api_key=API_KEY, base_url=url, max_retries=0)
            with sync_client:
                with pytest.raises(anthropic.OverloadedError):
                    sync_client.messages.create(
                        model="m", max_tokens=5, messages=[{"role": "user", "content": "a"}]
                    )
                sync_client.messages.create(
                    model="m", max_tokens=5, messages=[{"role": "user", "content": "b"}]
                )
                with pytest.raises(anthropic.AuthenticationError):
                    sync_client.messages.create(
                        model="m", max_tokens=5, messages=[{"role": "user", "content": "c"}]
                    )

            status, headers, log = http("GET", f"{url}/_fake/log")
            assert status == 200
            assert headers["request-id"]
            assert [entry["fault"] for entry in log] == ["overloaded", "ok", "auth"]
            assert log[2]["body"]["messages"][0]["content"] == "c"
            assert log[0]["api_key_present"] is True
            assert API_KEY not in json.dumps(log)
            _, _, newer = http("GET", f"{url}/_fake/log?since=2")
            assert [entry["index"] for entry in newer] == [2]

            status, _, _ = http("POST", f"{url}/_fake/reset")
            assert status == 200
            assert http("GET", f"{url}/_fake/log")[2] == []


class TestFakeAnthropicLifecycle:
    async def test_stop__returns_promptly_with_a_hanging_request(self):
        fake = FakeAnthropic(config=fast_config(hang_seconds=600.0))
        await fake.start()
        fake.script("hang")
        async with anthropic.AsyncAnthropic(
            api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=30.0
        ) as sdk_client:
            pending = asyncio.create_task(ask(sdk_client))
            await asyncio.to_thread(fake.wait_for_requests, 1)

            started = time.monotonic()
            await fake.stop()
            stop_s = time.monotonic() - started

            with pytest.raises(anthropic.APIConnectionError):
                await pending
        assert stop_s < 2.0

    async def test_stop_thread__returns_promptly_with_a_hanging_request(self):
        fake = FakeAnthropic(config=fast_config(hang_seconds=600.0))
        fake.start_in_thread()
        fake.script("hang")
        async with anthropic.AsyncAnthropic(
            api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=30.0
        ) as sdk_client:
            pending = asyncio.create_task(ask(sdk_client))
            await asyncio.to_thread(fake.wait_for_requests, 1)

            started = time.monotonic()
            await asyncio.to_thread(fake.stop_thread)
            stop_s = time.monotonic() - started

            with pytest.raises(anthropic.APIConnectionError):
                await pending
        assert stop_s < 2.0

    async def test_start__twice_raises(self, fake):
        with pytest.raises(RuntimeError, match="already running"):
            await fake.start()
