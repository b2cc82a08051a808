"""Replies of the fake Anthropic API to valid requests, as the real SDK reads them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import anthropic
import pytest

from reliability.fake_anthropic import DEFAULT_REPLY_TEXT
from tests.reliability.fake_anthropic.support import REVIEW_SCHEMA, ask, schema_errors


class TestFakeAnthropicReplies:
    async def test_create__returns_message_with_usage(self, fake, client):
        message = await ask(client)

        assert message.type == "message"
        assert message.role == "assistant"
        assert message.model == "claude-fake-1"
        assert message.content[0].type == "text"
        assert message.content[0].text == DEFAULT_REPLY_TEXT
        assert message.stop_reason == "end_turn"
        assert message.stop_sequence is None
        assert message.usage.input_tokens >= 1
        assert message.usage.output_tokens == len(DEFAULT_REPLY_TEXT) // 4
        assert message.usage.cache_read_input_tokens == 0
        assert message.usage.cache_creation_input_tokens == 0
        assert message._request_id == fake.requests[0].request_id

    async def test_create__input_tokens_grow_with_prompt_length(self, client):
        short = await ask(client, messages=[{"role": "user", "content": "x" * 40}])
        long = await ask(client, messages=[{"role": "user", "content": "x" * 4000}])

        assert short.usage.input_tokens == 10
        assert long.usage.input_tokens == 1000

    async def test_create__output_config_reply_validates_against_schema(self, client):
        message = await ask(
            client, output_config={"format": {"type": "json_schema", "schema": REVIEW_SCHEMA}}
        )

        [block] = message.content
        assert block.type == "text"
        review = json.loads(block.text)
        assert schema_errors(review, REVIEW_SCHEMA) == []
        assert message.stop_reason == "end_turn"

    async def test_create__forced_tool_returns_tool_use_with_valid_input(self, client):
        tools = [
            {"name": "other", "input_schema": {"type": "object", "properties": {}}},
            {"name": "report_review", "description": "Report.", "input_schema": REVIEW_SCHEMA},
        ]

        message = await ask(
            client, tools=tools, tool_choice={"type": "tool", "name": "report_review"}
        )

        [block] = message.content
        assert block.type == "tool_use"
        assert block.name == "report_review"
        assert block.id.startswith("toolu_")
        assert schema_errors(block.input, REVIEW_SCHEMA) == []
        assert message.stop_reason == "tool_use"

    async def test_create__forced_tool_missing_from_tools_is_a_bad_request(self, fake, client):
        with pytest.raises(anthropic.BadRequestError, match="nope"):
            await ask(
                client,
                tools=[{"name": "real", "input_schema": {"type": "object"}}],
                tool_choice={"type": "tool", "name": "nope"},
            )

        assert fake.requests[0].fault == "invalid_request"

    async def test_create__unsatisfiable_schema_is_a_bad_request(self, fake, client):
        schema = {"type": "object", "properties": {"x": {"enum": []}}, "required": ["x"]}

        with pytest.raises(anthropic.BadRequestError, match="cannot be satisfied"):
            await ask(client, output_config={"format": {"type": "json_schema", "schema": schema}})

        assert fake.requests[0].fault == "invalid_request"

    async def test_count_tokens__returns_input_token_estimate(self, client):
        counted = await client.messages.count_tokens(
            model="claude-fake-1", messages=[{"role": "user", "content": "y" * 400}]
        )

        assert counted.input_tokens == 100

    async def test_responder__replaces_generated_content_and_sees_request(self, fake, client):
        seen_bodies: list[dict[str, Any]] = []

        def responder(body: dict[str, Any]) -> Any:
            seen_bodies.append(body)
            return {"summary": "from the responder"}

        fake.responder = responder
        schema = {"type": "object", "properties": {"summary": {"type": "string"}}}

        message = await ask(
            client, output_config={"format": {"type": "json_schema", "schema": schema}}
        )

        assert json.loads(message.content[0].text) == {"summary": "from the responder"}
        assert seen_bodies[0]["output_config"]["format"]["schema"] == schema

    async def test_responder__async_text_reply_and_none_falls_back(self, fake, client):
        async def responder(body: dict[str, Any]) -> str | None:
            return "custom text" if "custom" in body["messages"][0]["content"] else None

        fake.responder = responder

        custom = await ask(client, messages=[{"role": "user", "content": "custom please"}])
        generated = await ask(client)

        assert custom.content[0].text == "custom text"
        assert generated.content[0].text == DEFAULT_REPLY_TEXT

    async def test_responder__exception_becomes_500(self, fake, client):
        def responder(body: dict[str, Any]) -> str:
            raise RuntimeError("responder bug")

        fake.responder = responder

        with pytest.raises(anthropic.InternalServerError) as caught:
            await ask(client)

        assert caught.value.status_code == 500
        assert fake.requests[0].fault == "responder_failed"

    async def test_success__carries_ratelimit_headers_of_the_fakes_limit(self, fake, client):
        fake.configure(rpm_limit=10)

        raw = await client.messages.with_raw_response.create(
            model="claude-fake-1", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )

        assert raw.headers["request-id"] == fake.requests[0].request_id
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "10"
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "9"
        input_remaining = int(raw.headers["anthropic-ratelimit-input-tokens-remaining"])
        assert input_remaining == 400_000 - (await raw.parse()).usage.input_tokens
        for family in ("requests", "input-tokens", "output-tokens"):
            reset = datetime.fromisoformat(raw.headers[f"anthropic-ratelimit-{family}-reset"])
            assert reset.tzinfo is not None
