"""The fake Anthropic API, driven by the real SDK over loopback (no mocks, no database)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import pytest
from anthropic.types import Message
from django.core.management import CommandError, call_command

from reliability.fake_anthropic import (
    DEFAULT_REPLY_TEXT,
    FakeAnthropic,
    FakeConfig,
    SchemaError,
    instance_for_schema,
)
from tests.processes import start_fake_anthropic_command

API_KEY = "test-key"

REVIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "minLength": 20, "maxLength": 200},
        "risk": {"enum": ["low", "medium", "high"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "confidence": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "findings": {
            "type": "array",
            "minItems": 2,
            "maxItems": 5,
            "items": {"$ref": "#/$defs/finding"},
        },
        "reviewed": {"type": "boolean"},
        "notes": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 3}]},
        "version": {"const": 2},
    },
    "required": ["summary", "risk", "score", "confidence", "findings", "reviewed", "version"],
    "additionalProperties": False,
    "$defs": {
        "finding": {
            "type": "object",
            "properties": {
                "line": {"type": "integer", "minimum": 1},
                "message": {"type": "string", "minLength": 1},
                "severity": {"type": ["string", "null"], "enum": ["info", "warning", "error"]},
            },
            "required": ["line", "message", "severity"],
            "additionalProperties": False,
        }
    },
}


# --- a tiny JSON-schema validator (jsonschema is not a dependency) -----------------------------


def schema_errors(instance: Any, schema: Any, *, root: Any = None, at: str = "$") -> list[str]:
    """Violations of the keywords the fake's generator supports; [] when ``instance`` is valid."""
    root = schema if root is None else root
    if schema is True:
        return []
    if "$ref" in schema:
        target: Any = root
        for key in schema["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        return schema_errors(instance, target, root=root, at=at)
    errors: list[str] = []
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{at}: {instance!r} is not {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{at}: {instance!r} is not one of {schema['enum']!r}")
    for keyword, accepts in (("anyOf", lambda n: n >= 1), ("oneOf", lambda n: n == 1)):
        if keyword in schema:
            matches = sum(not schema_errors(instance, s, root=root) for s in schema[keyword])
            if not accepts(matches):
                errors.append(f"{at}: {matches} {keyword} branches match")
    for part in schema.get("allOf", ()):
        errors += schema_errors(instance, part, root=root, at=at)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_has_type(instance, name) for name in types):
            return [*errors, f"{at}: {instance!r} is not of type {types}"]
    if isinstance(instance, dict):
        errors += _object_errors(instance, schema, root=root, at=at)
    if isinstance(instance, list):
        errors += _array_errors(instance, schema, root=root, at=at)
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{at}: shorter than minLength")
        if len(instance) > schema.get("maxLength", len(instance)):
            errors.append(f"{at}: longer than maxLength")
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        errors += _number_errors(instance, schema, at=at)
    return errors


def _has_type(instance: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(instance, int) and not isinstance(instance, bool)
    if name == "number":
        return isinstance(instance, int | float) and not isinstance(instance, bool)
    python_types = {"object": dict, "array": list, "string": str, "boolean": bool}
    return instance is None if name == "null" else isinstance(instance, python_types[name])


def _object_errors(instance: dict[str, Any], schema: Any, *, root: Any, at: str) -> list[str]:
    properties = schema.get("properties", {})
    errors = [
        f"{at}: missing {name!r}" for name in schema.get("required", ()) if name not in instance
    ]
    for name, value in instance.items():
        if name in properties:
            errors += schema_errors(value, properties[name], root=root, at=f"{at}.{name}")
        elif schema.get("additionalProperties", True) is False:
            errors.append(f"{at}: unexpected {name!r}")
    return errors


def _array_errors(instance: list[Any], schema: Any, *, root: Any, at: str) -> list[str]:
    errors = []
    if not schema.get("minItems", 0) <= len(instance) <= schema.get("maxItems", len(instance)):
        errors.append(f"{at}: {len(instance)} items is out of bounds")
    if schema.get("uniqueItems") and len({json.dumps(item) for item in instance}) < len(instance):
        errors.append(f"{at}: items are not unique")
    for index, item in enumerate(instance):
        errors += schema_errors(item, schema.get("items", True), root=root, at=f"{at}[{index}]")
    return errors


def _number_errors(instance: float, schema: Any, *, at: str) -> list[str]:
    checks = (
        ("minimum", lambda bound: instance >= bound),
        ("maximum", lambda bound: instance <= bound),
        ("exclusiveMinimum", lambda bound: instance > bound),
        ("exclusiveMaximum", lambda bound: instance < bound),
    )
    return [
        f"{at}: {instance!r} breaks {keyword} {schema[keyword]!r}"
        for keyword, holds in checks
        if keyword in schema and not holds(schema[keyword])
    ]


# --- helpers ------------------------------------------------------------------------------------


def fast_config(**overrides: Any) -> FakeConfig:
    return FakeConfig(**{"hang_seconds": 30.0, "trickle_delay_s": 0.005, "seed": 7, **overrides})


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(config=fast_config()) as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=5.0
    ) as sdk_client:
        yield sdk_client


async def ask(client: anthropic.AsyncAnthropic, **overrides: Any) -> Message:
    request: dict[str, Any] = {
        "model": "claude-fake-1",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Review this function: def add(a, b): ..."}],
        **overrides,
    }
    return await client.messages.create(**request)


def http(
    method: str,
    url: str,
    payload: object = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Mapping[str, str], Any]:
    """(status, headers, parsed JSON body) from a plain urllib request, errors included."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, json.loads(error.read())


# --- replies ------------------------------------------------------------------------------------


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


# --- faults -------------------------------------------------------------------------------------


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


# --- the request log ---------------------------------------------------------------------------


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


# --- HTTP details -------------------------------------------------------------------------------


class TestFakeAnthropicHttp:
    async def test_chunked_request_body__is_parsed(self, fake):
        body = json.dumps(
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "chunky"}]}
        ).encode()
        head = (
            "POST /v1/messages HTTP/1.1\r\nhost: fake\r\nx-api-key: k\r\n"
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        half = len(body) // 2
        chunks = b"".join(
            f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:half], body[half:])
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(head.encode() + chunks + b"0\r\n\r\n")

        status_line = await reader.readline()
        writer.close()

        assert status_line.startswith(b"HTTP/1.1 200")
        assert fake.requests[0].body["messages"][0]["content"] == "chunky"

    async def test_keep_alive__answers_several_requests_on_one_connection(self, fake):
        body = b'{"model":"m","messages":[{"role":"user","content":"a"}]}'
        request = (
            b"POST /v1/messages/count_tokens HTTP/1.1\r\nhost: fake\r\nx-api-key: k\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        replies = []
        for _ in range(2):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            replies.append((head.split(b" ")[1], json.loads(await reader.readexactly(length))))
        writer.close()

        assert replies == [(b"200", {"input_tokens": 1})] * 2
        assert len(fake.requests) == 2

    async def test_reset__sends_a_partial_response_then_rst(self, fake):
        fake.script("reset")
        body = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a"}]}'
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nhost: fake\r\nx-api-key: k\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""

        with pytest.raises(ConnectionResetError):  # an orderly FIN would read b"" instead
            while chunk := await reader.read(65536):
                received += chunk
        writer.close()

        head, _, partial_body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        declared_length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert 0 < len(partial_body) < declared_length

    async def test_bad_http__answers_400_with_request_id(self, fake):
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(b"NONSENSE\r\n\r\n")

        response = await reader.read()
        writer.close()

        assert response.startswith(b"HTTP/1.1 400")
        assert b"request-id: req_" in response

    async def test_unknown_route__answers_404(self, fake, client):
        with pytest.raises(anthropic.NotFoundError):
            await client.get("/v1/models/nope", cast_to=object)

        assert fake.requests[0].fault == "not_found"


# --- control endpoints and lifecycle ------------------------------------------------------------


class TestFakeAnthropicControlEndpoints:
    def test_control_endpoints__steer_a_fake_in_a_thread(self):
        with FakeAnthropic(config=fast_config()).running() as fake:
            url = fake.base_url
            status, _, config = http("POST", f"{url}/_fake/config", {"fault_rates": {"auth": 1.0}})
            assert (status, config["fault_rates"]) == (200, {"auth": 1.0})
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

    def test_config_endpoint__rejects_bad_values_and_keeps_config(self):
        with FakeAnthropic(config=fast_config()).running() as fake:
            status, _, body = http(
                "POST", f"{fake.base_url}/_fake/config", {"fault_rates": {"explode": 0.5}}
            )
            unknown_status, _, unknown_body = http(
                "POST", f"{fake.base_url}/_fake/config", {"colour": "red"}
            )

            assert status == 400
            assert "unknown fault kind 'explode'" in body["error"]["message"]
            assert unknown_status == 400
            assert "colour" in unknown_body["error"]["message"]
            assert fake.config.fault_rates == {}

    def test_configure__rejects_rates_summing_above_one(self):
        fake = FakeAnthropic()

        with pytest.raises(ValueError, match="sum to at most 1"):
            fake.configure(fault_rates={"overloaded": 0.6, "hang": 0.5})


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


# --- the management command --------------------------------------------------------------------


class TestFakeAnthropicCommand:
    def test_command__serves_until_sigterm(self):
        process, base_url = start_fake_anthropic_command(
            "--rate=overloaded=1.0", env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            sdk_client = anthropic.Anthropic(api_key=API_KEY, base_url=base_url, max_retries=0)
            with sdk_client, pytest.raises(anthropic.OverloadedError):
                sdk_client.messages.create(
                    model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
                )
            _, _, log = http("GET", f"{base_url}/_fake/log")
        finally:
            exit_code = process.stop()

        assert [entry["fault"] for entry in log] == ["overloaded"]
        assert exit_code == 0

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (["--rate", "explode=0.1"], "unknown fault kind 'explode'"),
            (["--rate", "overloaded"], "KIND=PROBABILITY"),
            (["--rate", "overloaded=lots"], "not a number"),
            (["--rate", "overloaded=0.8", "--rate", "hang=0.5"], "sum to at most 1"),
            (["--latency", "0.3:0.1"], "latency_s maximum"),
            (["--latency", "soon"], "SECONDS or MIN:MAX"),
            (["--rpm", "0"], "rpm_limit"),
        ],
    )
    def test_command__bad_arguments_raise_command_error(self, arguments, message):
        with pytest.raises(CommandError, match=message):
            call_command("fake_anthropic", *arguments)


# --- schema instances ---------------------------------------------------------------------------


class TestInstanceForSchema:
    @pytest.mark.parametrize(
        "schema",
        [
            REVIEW_SCHEMA,
            {
                "type": "object",
                "properties": {"item": {"$ref": "#/definitions/item"}},
                "required": ["item"],
                "definitions": {"item": {"type": "string", "format": "date-time"}},
            },
            {"oneOf": [{"type": "integer", "minimum": 5}, {"type": "string"}]},
            {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
            {
                "type": "array",
                "items": {"enum": ["x", "y", "z"]},
                "minItems": 3,
                "uniqueItems": True,
            },
            {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5},
            {"type": "number", "minimum": -2.5, "exclusiveMaximum": -1},
            {"type": "string", "minLength": 12, "maxLength": 12},
            {"type": ["null", "boolean"]},
            {"type": "object", "required": ["free"], "additionalProperties": {"type": "integer"}},
            {
                "$defs": {
                    "node": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                        },
                        "required": ["name"],
                    }
                },
                "$ref": "#/$defs/node",
            },
        ],
        ids=lambda schema: ",".join(sorted(schema)),
    )
    def test_instance__validates_against_schema(self, schema):
        instance = instance_for_schema(schema)

        assert schema_errors(instance, schema) == []
        assert instance_for_schema(schema) == instance  # deterministic

    def test_validator__rejects_an_invalid_review(self):
        invalid = {**instance_for_schema(REVIEW_SCHEMA), "score": 11, "extra": True}

        assert len(schema_errors(invalid, REVIEW_SCHEMA)) == 2

    @pytest.mark.parametrize(
        "schema",
        [
            {"type": "integer", "minimum": 5, "maximum": 3},
            {"type": "object", "properties": {"self": {"$ref": "#"}}, "required": ["self"]},
            {"$ref": "#/$defs/missing"},
            {"enum": []},
            {"type": "object", "required": ["x"], "additionalProperties": False},
        ],
    )
    def test_instance__unsatisfiable_schema_raises_schema_error(self, schema):
        with pytest.raises(SchemaError):
            instance_for_schema(schema)
