"""A fault-injecting fake of the Anthropic Messages API, served over loopback.

The real ``anthropic`` SDK talks to it through ``base_url=fake.base_url``. It serves
``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` in the API's wire format and lets
tests, benchmarks and chaos drills choose what each request gets:

* a valid reply: JSON that validates against the request's ``output_config`` schema, a
  ``tool_use`` block for a forced tool, plain text otherwise, or whatever a pluggable
  *responder* returns;
* a fault (``Fault``): an error status with the API's error body and headers, a hang, a
  connection reset mid-response, a trickled reply, or a 200 whose body is not JSON.

Each API request gets, in this order of precedence:

1. the next scripted fault (``script()`` / ``POST /_fake/script``), if any is pending;
2. 401 when it carries no API key and ``require_api_key`` is set;
3. 429 when the fake's own limit of ``rpm_limit`` requests per ``rpm_window_s`` is reached;
4. a fault drawn from ``fault_rates`` with the seeded RNG, or ``ok`` when none is drawn.

Scripted and drawn requests count towards the RPM window; requests it refuses do not.

HTTP/1.1 is parsed by hand on asyncio streams because resets and trickles need the socket.
A fake running in another process (``manage.py fake_anthropic``) is steered over HTTP:
``GET /_fake/log[?since=N]``, ``GET``/``POST /_fake/config``, ``POST /_fake/script`` and
``POST /_fake/reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import inspect
import json
import math
import random
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import structlog

logger = structlog.get_logger(__name__)


class Fault(StrEnum):
    """What the fake does with a request: keys of ``fault_rates``, entries of ``script()``."""

    OK = "ok"
    OVERLOADED = "overloaded"  # 529 overloaded_error
    RATE_LIMIT = "rate_limit"  # 429 rate_limit_error with retry-after
    SPEND_LIMIT = "spend_limit"  # 429 rate_limit_error: the spend limit is reached
    SERVER_ERROR = "server_error"  # 500 api_error
    UNAVAILABLE = "unavailable"  # 503 api_error
    BAD_REQUEST = "bad_request"  # 400 invalid_request_error
    AUTH = "auth"  # 401 authentication_error
    HANG = "hang"  # accepts the request, sends nothing for hang_seconds, closes
    RESET = "reset"  # sends the head and part of the body, then a TCP RST
    TRICKLE = "trickle"  # a valid reply, a few bytes at a time
    MALFORMED = "malformed"  # 200 whose body is not valid JSON


class Outcome(StrEnum):
    """What the fake chose itself; recorded in ``RequestRecord.fault`` beside ``Fault`` values."""

    RPM_LIMITED = "rpm_limit"  # 429: the fake's own requests-per-window limit
    MISSING_API_KEY = "missing_api_key"  # 401: no x-api-key or authorization header
    INVALID_REQUEST = "invalid_request"  # 400: not a valid Messages request
    RESPONDER_FAILED = "responder_failed"  # 500: the responder raised or returned junk
    NOT_FOUND = "not_found"  # 404: not an API route


DEFAULT_REPLY_TEXT = "This is a reply from the fake Anthropic API."

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
_API_ROUTES = frozenset({("POST", MESSAGES_PATH), ("POST", COUNT_TOKENS_PATH)})
_CONTROL_PREFIX = "/_fake/"

# Advertised in the request rate-limit headers when the fake enforces no limit of its own.
_NOMINAL_REQUESTS_LIMIT = 4_000
_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 32 * 1024 * 1024
# Between the partial response and the RST, so the client is reading a response when it breaks.
_RESET_PAUSE_S = 0.05
_THREAD_TIMEOUT_S = 10.0
_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie"})
_CREDENTIAL_HEADERS = ("x-api-key", "authorization")
_DELAYED_FAULTS = frozenset({Fault.OK, Fault.TRICKLE, Fault.MALFORMED})
_REASON_PHRASES = {529: "Overloaded"}
_MALFORMED_BODY = b'{"id": "msg_malformed", "type": "message", "content": [{"type": "text", "te'

ResponderResult = Mapping[str, Any] | list[Any] | str | None
Responder = Callable[[dict[str, Any]], ResponderResult | Awaitable[ResponderResult]]
"""Gets the parsed request body; returns the reply content, or None for the generated one.

For a forced tool the result is the tool's ``input`` (a dict, or a JSON string of one). For an
``output_config`` schema a dict or list is sent as JSON text and a string verbatim (so a test
can send JSON that breaks the schema). Otherwise a string is the reply text and anything else
is sent as JSON text. It runs on the fake's event loop and may be a coroutine function.
"""


# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FakeConfig:
    """How the fake behaves. Immutable: change it with ``FakeAnthropic.configure()``."""

    fault_rates: Mapping[str, float] = field(default_factory=dict)
    """Fault kind -> probability per request; the rest is ``ok``. The sum must be <= 1."""
    latency_s: float | tuple[float, float] = 0.0
    """Delay before a 200 reply: fixed, or uniform between (min, max)."""
    rpm_limit: int | None = None
    rpm_window_s: float = 60.0
    retry_after_s: float = 1.0
    """Sent in retry-after by the ``rate_limit`` fault; fractional values add retry-after-ms."""
    hang_seconds: float = 600.0
    trickle_delay_s: float = 0.05
    trickle_chunk_bytes: int = 16
    input_tokens_limit: int = 400_000
    output_tokens_limit: int = 80_000
    """Advertised in the token rate-limit headers; not enforced."""
    require_api_key: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fault_rates", _validated_rates(self.fault_rates))
        object.__setattr__(self, "latency_s", _validated_latency(self.latency_s))
        if self.rpm_limit is not None:
            _check_number("rpm_limit", self.rpm_limit, minimum=1, integer=True)
        _check_number("rpm_window_s", self.rpm_window_s, minimum=0, exclusive=True)
        _check_number("retry_after_s", self.retry_after_s, minimum=0)
        _check_number("hang_seconds", self.hang_seconds, minimum=0)
        _check_number("trickle_delay_s", self.trickle_delay_s, minimum=0)
        _check_number("trickle_chunk_bytes", self.trickle_chunk_bytes, minimum=1, integer=True)
        _check_number("input_tokens_limit", self.input_tokens_limit, minimum=1, integer=True)
        _check_number("output_tokens_limit", self.output_tokens_limit, minimum=1, integer=True)
        if not isinstance(self.require_api_key, bool):
            raise ValueError("require_api_key must be true or false")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    def with_changes(self, **changes: Any) -> FakeConfig:
        known = {config_field.name for config_field in dataclasses.fields(self)}
        if unknown := sorted(set(changes) - known):
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fault_rates"] = dict(self.fault_rates)
        return data


def _check_number(
    name: str,
    value: object,
    *,
    minimum: float,
    exclusive: bool = False,
    integer: bool = False,
) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < minimum or (exclusive and value == minimum):
        raise ValueError(f"{name} must be {'>' if exclusive else '>='} {minimum}, got {value!r}")


def _validated_rates(rates: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(rates, Mapping):
        raise ValueError("fault_rates must be a mapping of fault kind to probability")
    validated: dict[str, float] = {}
    for kind, rate in rates.items():
        _check_number(f"fault_rates[{kind!r}]", rate, minimum=0)
        if rate > 1:
            raise ValueError(f"fault_rates[{kind!r}] must be <= 1, got {rate!r}")
        validated[fault_kind(kind)] = float(rate)
    if sum(validated.values()) > 1 + 1e-9:
        raise ValueError(f"fault rates must sum to at most 1, got {sum(validated.values()):g}")
    return validated


def _validated_latency(latency: object) -> float | tuple[float, float]:
    if isinstance(latency, list | tuple):
        if len(latency) != 2:
            raise ValueError(f"latency_s range must be (min, max), got {latency!r}")
        low, high = latency
        _check_number("latency_s minimum", low, minimum=0)
        _check_number("latency_s maximum", high, minimum=low)
        return (float(low), float(high))
    _check_number("latency_s", latency, minimum=0)
    return float(latency)  # type: ignore[arg-type]


def fault_kind(value: object) -> Fault:
    """The ``Fault`` named by ``value``, or a ValueError that lists the valid names."""
    try:
        return Fault(value)
    except ValueError:
        valid = ", ".join(kind.value for kind in Fault)
        raise ValueError(f"unknown fault kind {value!r}; expected one of: {valid}") from None


# --- the request log ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One API request as the fake saw it. Credentials are never stored, only where they were."""

    index: int
    received_at: datetime
    received_monotonic: float
    method: str
    path: str
    body: Any
    """The parsed JSON body, or None when the body was not JSON."""
    model: str | None
    fault: str
    """A ``Fault`` or ``Outcome`` value: what the fake did with the request."""
    status: int | None
    """The status line sent; None when nothing was sent (``hang``)."""
    request_id: str
    headers: Mapping[str, str]
    """Lower-cased request headers without credentials and cookies."""
    credential_header: str | None
    """``x-api-key`` or ``authorization``: the header that carried the key, if any."""
    retry_count: int | None
    """The SDK's ``x-stainless-retry-count``."""

    @property
    def api_key_present(self) -> bool:
        return self.credential_header is not None

    @property
    def prompt_text(self) -> str:
        """The system prompt and message texts, to tell which code a request was about."""
        return prompt_text(self.body)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["received_at"] = self.received_at.isoformat()
        data["headers"] = dict(self.headers)
        data["api_key_present"] = self.api_key_present
        return data


def prompt_text(body: object) -> str:
    """The text of a Messages request's system prompt and messages, one part a line."""
    if not isinstance(body, Mapping):
        return ""
    parts = [_content_text(body.get("system"))]
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            parts.append(_content_text(message.get("content")))
    return "\n".join(part for part in parts if part)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block["text"]
            for block in content
            if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        )
    return ""


# --- JSON schema instances ---------------------------------------------------------------------


class SchemaError(ValueError):
    """The schema cannot be instantiated: unsatisfiable, unresolvable or endlessly recursive."""


_MAX_SCHEMA_DEPTH = 48
# Deeper than this, only required properties are filled, so optional recursion ends.
_OPTIONAL_PROPERTY_DEPTH = 8
_FORMAT_EXAMPLES = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "fake@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def instance_for_schema(schema: Mapping[str, Any] | bool) -> Any:
    """A deterministic instance that validates against ``schema``.

    Supports object (properties, required, additionalProperties), array (items, minItems,
    maxItems), string (enum, minLength, maxLength, format), integer and number (minimum,
    maximum, exclusive bounds), boolean, null, const, enum, anyOf/oneOf (first non-null
    branch), allOf (merged), and $ref into $defs/definitions. Ignores pattern and multipleOf.
    """
    return _SchemaInstanceBuilder(root=schema).build(schema, depth=0, variant=0)


class _SchemaInstanceBuilder:
    def __init__(self, *, root: Mapping[str, Any] | bool) -> None:
        self._root = root

    def build(self, schema: object, *, depth: int, variant: int) -> Any:
        if depth > _MAX_SCHEMA_DEPTH:
            raise SchemaError("schema nests too deeply (a required recursive $ref?)")
        if schema is True:
            return None
        if schema is False:
            raise SchemaError("schema `false` admits no instance")
        if not isinstance(schema, Mapping):
            raise SchemaError(f"not a schema: {schema!r}")
        if "$ref" in schema:
            return self.build(self._resolve(schema["$ref"]), depth=depth + 1, variant=variant)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            if not schema["enum"]:
                raise SchemaError("empty enum admits no instance")
            return schema["enum"][variant % len(schema["enum"])]
        for keyword in ("anyOf", "oneOf"):
            if branches := schema.get(keyword):
                branch = next((b for b in branches if not _is_null_schema(b)), branches[0])
                return self.build(branch, depth=depth + 1, variant=variant)
        if "allOf" in schema:
            return self.build(self._merged_all_of(schema), depth=depth + 1, variant=variant)
        match _schema_type(schema):
            case "object":
                return self._object(schema, depth=depth, variant=variant)
            case "array":
                return self._array(schema, depth=depth)
            case "string":
                return _string_instance(schema, variant=variant)
            case "integer":
                return _integer_instance(schema, variant=variant)
            case "number":
                return _number_instance(schema, variant=variant)
            case "boolean":
                return variant % 2 == 0
            case "null":
                return None
            case unknown:
                raise SchemaError(f"unsupported type {unknown!r}")

    def _object(self, schema: Mapping[str, Any], *, depth: int, variant: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = list(schema.get("required") or ())
        instance = {
            name: self.build(subschema, depth=depth + 1, variant=variant)
            for name, subschema in properties.items()
            if name in required or depth < _OPTIONAL_PROPERTY_DEPTH
        }
        additional = schema.get("additionalProperties", True)
        for name in required:
            if name in instance:
                continue
            if additional is False:
                raise SchemaError(f"required property {name!r} is not among the properties")
            instance[name] = self.build(additional, depth=depth + 1, variant=variant)
        return instance

    def _array(self, schema: Mapping[str, Any], *, depth: int) -> list[Any]:
        count = max(schema.get("minItems", 0), 1)
        if (max_items := schema.get("maxItems")) is not None:
            count = min(count, max_items)
        items = schema.get("items", True)
        # A different variant per item keeps items distinct for uniqueItems.
        return [self.build(items, depth=depth + 1, variant=index) for index in range(count)]

    def _resolve(self, reference: object) -> object:
        if not isinstance(reference, str) or not reference.startswith("#"):
            raise SchemaError(f"only local $ref are supported, got {reference!r}")
        node: object = self._root
        for token in filter(None, reference[1:].split("/")):
            key = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise SchemaError(f"unresolvable $ref {reference!r}")
        return node

    def _merged_all_of(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged = {key: value for key, value in schema.items() if key != "allOf"}
        for part in schema["allOf"]:
            resolved = self._resolve(part["$ref"]) if "$ref" in part else part
            if not isinstance(resolved, Mapping):
                continue
            for key, value in resolved.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged


def _is_null_schema(schema: object) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _schema_type(schema: Mapping[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        return next((kind for kind in declared if kind != "null"), "null")
    if isinstance(declared, str):
        return declared
    if {"properties", "required", "additionalProperties"} & schema.keys():
        return "object"
    if {"items", "minItems", "maxItems"} & schema.keys():
        return "array"
    if {"minLength", "maxLength", "format", "pattern"} & schema.keys():
        return "string"
    if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & schema.keys():
        return "number"
    return "null"


def _string_instance(schema: Mapping[str, Any], *, variant: int) -> str:
    text = _FORMAT_EXAMPLES.get(schema.get("format", ""))
    if text is None:
        text = f"example-{variant}" if variant else "example"
    min_length = schema.get("minLength", 0)
    text = text.ljust(min_length, "x")
    if (max_length := schema.get("maxLength")) is not None:
        if max_length < min_length:
            raise SchemaError("maxLength is below minLength")
        text = text[:max_length]
    return text


def _integer_instance(schema: Mapping[str, Any], *, variant: int) -> int:
    lows, highs = [], []
    if (minimum := schema.get("minimum")) is not None:
        lows.append(math.ceil(minimum))
    if (exclusive_minimum := schema.get("exclusiveMinimum")) is not None:
        lows.append(math.floor(exclusive_minimum) + 1)
    if (maximum := schema.get("maximum")) is not None:
        highs.append(math.floor(maximum))
    if (exclusive_maximum := schema.get("exclusiveMaximum")) is not None:
        highs.append(math.ceil(exclusive_maximum) - 1)
    low, high = max(lows, default=None), min(highs, default=None)
    if low is not None and high is not None and low > high:
        raise SchemaError("integer bounds admit no value")
    start = low if low is not None else min(0, high if high is not None else 0)
    return start + variant if high is None else min(start + variant, high)


def _number_instance(schema: Mapping[str, Any], *, variant: int) -> float:
    low, low_exclusive = _tightest_bound(schema, "minimum", "exclusiveMinimum", pick=max)
    high, high_exclusive = _tightest_bound(schema, "maximum", "exclusiveMaximum", pick=min)
    if (
        low is not None
        and high is not None
        and (low > high or (low == high and (low_exclusive or high_exclusive)))
    ):
        raise SchemaError("number bounds admit no value")
    value = (low if low is not None else min(0.0, high if high is not None else 0.0)) + variant
    if low is not None and low_exclusive and value == low:
        value += 0.5
    if high is not None and (value > high or (high_exclusive and value == high)):
        value = (low + high) / 2 if low is not None else high - (0.5 if high_exclusive else 0)
    return float(value)


def _tightest_bound(
    schema: Mapping[str, Any],
    inclusive_key: str,
    exclusive_key: str,
    *,
    pick: Callable[[float, float], float],
) -> tuple[float | None, bool]:
    inclusive, exclusive = schema.get(inclusive_key), schema.get(exclusive_key)
    if inclusive is None or exclusive is None:
        return (exclusive, True) if exclusive is not None else (inclusive, False)
    bound = pick(inclusive, exclusive)
    return bound, bound == exclusive


# --- replies -----------------------------------------------------------------------------------


class _InvalidRequestError(Exception):
    """The request body is not a valid Messages request; answered with 400."""


class _ResponderFailedError(Exception):
    """The responder raised or returned something unusable; answered with 500."""


def _validated_body(body: object, *, path: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _InvalidRequestError("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _InvalidRequestError("model: Field required")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise _InvalidRequestError("messages: at least one message is required")
    max_tokens = body.get("max_tokens")
    if path == MESSAGES_PATH and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _InvalidRequestError("max_tokens: a positive integer is required")
    return body


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choice = body.get("tool_choice")
    if not isinstance(choice, Mapping) or choice.get("type") not in {"tool", "any"}:
        return None
    tools = [tool for tool in body.get("tools") or () if isinstance(tool, Mapping)]
    if choice["type"] == "any":
        if not tools:
            raise _InvalidRequestError("tool_choice: 'any' requires at least one tool")
        return tools[0]
    name = choice.get("name")
    tool = next((tool for tool in tools if tool.get("name") == name), None)
    if tool is None:
        raise _InvalidRequestError(f"tool_choice.name: tool {name!r} is not among the tools")
    return tool


def _output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    output_config = body.get("output_config")
    output_format = output_config.get("format") if isinstance(output_config, Mapping) else None
    if output_format is None:
        return None
    if (
        not isinstance(output_format, Mapping)
        or output_format.get("type") != "json_schema"
        or not isinstance(output_format.get("schema"), Mapping)
    ):
        raise _InvalidRequestError(
            "output_config.format: expected {'type': 'json_schema', 'schema': {...}}"
        )
    return output_format["schema"]


def _estimated_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _input_tokens(body: Mapping[str, Any]) -> int:
    extras = [body[key] for key in ("tools", "output_config") if body.get(key)]
    return _estimated_tokens(prompt_text(body) + (json.dumps(extras) if extras else ""))


def _output_tokens(content: list[dict[str, Any]]) -> int:
    return _estimated_tokens(
        "".join(
            block["text"] if block["type"] == "text" else json.dumps(block["input"])
            for block in content
        )
    )


def _message(
    *, model: str, content: list[dict[str, Any]], stop_reason: str, input_tokens: int
) -> dict[str, Any]:
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": _output_tokens(content),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard",
        },
    }


def _tool_use_content(tool: Mapping[str, Any], produced: ResponderResult) -> list[dict[str, Any]]:
    if produced is None:
        tool_input = instance_for_schema(tool.get("input_schema") or {"type": "object"})
    elif isinstance(produced, str):
        try:
            tool_input = json.loads(produced)
        except ValueError as exc:
            raise _ResponderFailedError("the responder's tool input is not JSON") from exc
    else:
        tool_input = produced
    if not isinstance(tool_input, Mapping):
        raise _ResponderFailedError("a tool input must be a JSON object")
    return [
        {"type": "tool_use", "id": _new_id("toolu_"), "name": tool["name"], "input": tool_input}
    ]


def _text_content(
    schema: Mapping[str, Any] | None, produced: ResponderResult
) -> list[dict[str, Any]]:
    if produced is None:
        produced = instance_for_schema(schema) if schema is not None else DEFAULT_REPLY_TEXT
    text = produced if isinstance(produced, str) else json.dumps(produced)
    return [{"type": "text", "text": text}]


# --- HTTP --------------------------------------------------------------------------------------


class _BadHttpRequestError(Exception):
    """The bytes on the connection are not an HTTP/1.1 request we can answer."""


@dataclass(frozen=True)
class _HttpRequest:
    method: str
    target: str
    version: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


@dataclass(frozen=True)
class _HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def encode(self, *, keep_alive: bool) -> bytes:
        reason = _REASON_PHRASES.get(self.status) or HTTPStatus(self.status).phrase
        headers = {
            "date": email.utils.formatdate(usegmt=True),
            "content-type": "application/json",
            **self.headers,
            "content-length": str(len(self.body)),
            "connection": "keep-alive" if keep_alive else "close",
        }
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"HTTP/1.1 {self.status} {reason}\r\n{head}\r\n".encode("latin-1") + self.body


async def _read_request(reader: asyncio.StreamReader) -> _HttpRequest | None:
    """The next request on the connection, or None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadHttpRequestError("the connection closed inside a request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadHttpRequestError("the request head is too large") from None
    request_line, *header_lines = head.decode("latin-1").strip("\r\n").split("\r\n")
    try:
        method, target, version = request_line.split(" ")
    except ValueError:
        raise _BadHttpRequestError(f"bad request line {request_line!r}") from None
    headers: dict[str, str] = {}
    for line in header_lines:
        name, separator, value = line.partition(":")
        if not separator:
            raise _BadHttpRequestError(f"bad header line {line!r}")
        name = name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return _HttpRequest(method, target, version, headers, await _read_body(reader, headers))


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked_body(reader)
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadHttpRequestError("bad content-length") from None
    if not 0 <= length <= _MAX_BODY_BYTES:
        raise _BadHttpRequestError(f"unacceptable content-length {length}")
    return await reader.readexactly(length)


async def _read_chunked_body(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadHttpRequestError("bad chunk size") from None
        if size == 0:
            break
        total += size
        if total > _MAX_BODY_BYTES:
            raise _BadHttpRequestError("the chunked body is too large")
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _BadHttpRequestError("a chunk does not end with CRLF")
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # trailer fields: not used
    return b"".join(chunks)


def _json_response(status: int, payload: object, *, headers: Mapping[str, str]) -> _HttpResponse:
    return _HttpResponse(status, headers, json.dumps(payload).encode())


def _error_payload(
    *, error_type: str, message: str, request_id: str, error_code: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": request_id}


@dataclass(frozen=True)
class _ErrorSpec:
    status: int
    error_type: str
    message: str
    retryable: bool
    error_code: str | None = None


_ERRORS: Mapping[str, _ErrorSpec] = {
    Fault.OVERLOADED: _ErrorSpec(529, "overloaded_error", "Overloaded", retryable=True),
    Fault.RATE_LIMIT: _ErrorSpec(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization. "
        "Please wait before trying again.",
        retryable=True,
    ),
    Fault.SPEND_LIMIT: _ErrorSpec(
        429,
        "rate_limit_error",
        "You have reached your specified API usage limits: the spend limit is reached and "
        "your credit will renew at the start of the next month.",
        retryable=False,
        error_code="enforced_spend_limit_reached",
    ),
    Fault.SERVER_ERROR: _ErrorSpec(500, "api_error", "Internal server error", retryable=True),
    Fault.UNAVAILABLE: _ErrorSpec(503, "api_error", "Service unavailable", retryable=True),
    Fault.BAD_REQUEST: _ErrorSpec(
        400, "invalid_request_error", "The request is invalid (injected fault).", retryable=False
    ),
    Fault.AUTH: _ErrorSpec(401, "authentication_error", "invalid x-api-key", retryable=False),
    Outcome.RPM_LIMITED: _ErrorSpec(
        429,
        "rate_limit_error",
        "This request would exceed the fake's limit of requests per minute.",
        retryable=True,
    ),
    Outcome.MISSING_API_KEY: _ErrorSpec(
        401, "authentication_error", "x-api-key header is required", retryable=False
    ),
    Outcome.INVALID_REQUEST: _ErrorSpec(
        400, "invalid_request_error", "Invalid request", retryable=False
    ),
    Outcome.RESPONDER_FAILED: _ErrorSpec(500, "api_error", "Internal server error", retryable=True),
    Outcome.NOT_FOUND: _ErrorSpec(404, "not_found_error", "Not found", retryable=False),
}


def _retry_after_headers(seconds: float) -> dict[str, str]:
    """retry-after in whole seconds (rounded up), plus retry-after-ms when it is fractional."""
    seconds = max(seconds, 0.0)
    headers = {"retry-after": str(math.ceil(seconds))}
    if not float(seconds).is_integer():
        headers["retry-after-ms"] = str(math.ceil(seconds * 1000))
    return headers


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _sanitized_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    credential = next((name for name in _CREDENTIAL_HEADERS if headers.get(name)), None)
    kept = {name: value for name, value in headers.items() if name not in _SECRET_HEADERS}
    return kept, credential


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _send_then_reset(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(payload)
    await writer.drain()
    await asyncio.sleep(_RESET_PAUSE_S)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Linger 0: closing sends RST instead of FIN, like a crashed proxy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _trickle(
    writer: asyncio.StreamWriter, payload: bytes, *, chunk_bytes: int, delay_s: float
) -> None:
    for start in range(0, len(payload), chunk_bytes):
        if start:
            await asyncio.sleep(delay_s)
        writer.write(payload[start : start + chunk_bytes])
        await writer.drain()


# --- the server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What to send for one API request, decided before anything is sent."""

    fault: str
    response: _HttpResponse | None
    config: FakeConfig
    delay_s: float = 0.0


class FakeAnthropic:
    """The fake API server. Use ``async with FakeAnthropic(...)`` or ``with fake.running():``.

    ``script``, ``configure``, ``reset``, ``requests`` and ``config`` are safe to call from any
    thread; the responder runs on the server's event loop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: FakeConfig | None = None,
        responder: Responder | None = None,
    ) -> None:
        self.host = host
        self.responder = responder
        self._requested_port = port
        self._lock = threading.Lock()
        self._logged = threading.Condition(self._lock)
        self._config = config or FakeConfig()
        self._script: deque[Fault] = deque()
        self._records: list[RequestRecord] = []
        self._admitted: deque[float] = deque()
        self._token_usage: deque[tuple[float, int, int]] = deque()
        self._fault_rng, self._latency_rng = _rngs(self._config.seed)
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake Anthropic API is not running")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the fake Anthropic API is already running")
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self._requested_port, limit=_MAX_HEAD_BYTES
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("fake_anthropic_started", base_url=self.base_url)

    async def stop(self) -> None:
        """Stop listening and drop every connection, including hanging and trickling ones."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()
        logger.info("fake_anthropic_stopped", base_url=self.base_url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start_in_thread(self) -> None:
        """Serve from a new event loop in a daemon thread, for sync code and subprocess tests."""
        if self._thread is not None:
            raise RuntimeError("the fake Anthropic API is already running in a thread")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-anthropic", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(_THREAD_TIMEOUT_S)
        except BaseException:
            _stop_loop_thread(loop, thread)
            raise
        self._loop, self._thread = loop, thread

    def stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(_THREAD_TIMEOUT_S)
        finally:
            _stop_loop_thread(loop, thread)

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """``with FakeAnthropic().running() as fake:`` serves from a thread for the block."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop_thread()

    # control

    @property
    def config(self) -> FakeConfig:
        with self._lock:
            return self._config

    def configure(self, **changes: Any) -> None:
        """Replace config fields, e.g. ``configure(fault_rates={"overloaded": 0.5})``."""
        with self._lock:
            config = self._config.with_changes(**changes)
            if config.seed != self._config.seed:
                self._fault_rng, self._latency_rng = _rngs(config.seed)
            self._config = config
        logger.info("fake_anthropic_configured", changes=sorted(changes))

    def script(self, *kinds: str) -> None:
        """Apply these faults, in order, to the next API requests; replaces any pending script."""
        faults = [fault_kind(kind) for kind in kinds]
        with self._lock:
            self._script = deque(faults)

    @property
    def pending_script(self) -> list[str]:
        with self._lock:
            return [fault.value for fault in self._script]

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> list[RequestRecord]:
        """Block until the log holds ``count`` requests; TimeoutError after ``timeout`` seconds.

        Blocking: from async code call it through ``asyncio.to_thread``.
        """
        with self._logged:
            if not self._logged.wait_for(lambda: len(self._records) >= count, timeout):
                raise TimeoutError(f"{len(self._records)} of {count} requests after {timeout}s")
            return list(self._records)

    def reset(self) -> None:
        """Clear the log, the script and the rate-limit windows; reseed. Keeps the config."""
        with self._lock:
            self._records.clear()
            self._script.clear()
            self._admitted.clear()
            self._token_usage.clear()
            self._fault_rng, self._latency_rng = _rngs(self._config.seed)

    # connections

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while (request := await _read_request(reader)) is not None:
                if not await self._respond(request, writer):
                    break
        except _BadHttpRequestError as exc:
            request_id = _new_id("req_")
            logger.warning(
                "fake_anthropic_bad_http_request", request_id=request_id, reason=str(exc)
            )
            payload = _error_payload(
                error_type="invalid_request_error", message=str(exc), request_id=request_id
            )
            response = _json_response(400, payload, headers={"request-id": request_id})
            with contextlib.suppress(ConnectionError):
                writer.write(response.encode(keep_alive=False))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            # Only stop() cancels a connection. Ending normally keeps asyncio's stream callback
            # from logging the cancellation as an error (it calls task.exception()).
            pass
        except Exception:
            logger.exception("fake_anthropic_connection_failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _respond(self, request: _HttpRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; True when the connection stays open for the next one."""
        if request.path.startswith(_CONTROL_PREFIX):
            response = self._control_response(request)
            writer.write(response.encode(keep_alive=request.keep_alive))
            await writer.drain()
            return request.keep_alive
        plan = await self._plan(request)
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        match plan.fault:
            case Fault.HANG:
                await asyncio.sleep(plan.config.hang_seconds)
                return False
            case Fault.RESET:
                assert plan.response is not None
                payload = plan.response.encode(keep_alive=True)
                await _send_then_reset(
                    writer, payload[: len(payload) - len(plan.response.body) // 2]
                )
                return False
            case Fault.TRICKLE:
                assert plan.response is not None
                await _trickle(
                    writer,
                    plan.response.encode(keep_alive=request.keep_alive),
                    chunk_bytes=plan.config.trickle_chunk_bytes,
                    delay_s=plan.config.trickle_delay_s,
                )
            case _:
                assert plan.response is not None
                writer.write(plan.response.encode(keep_alive=request.keep_alive))
                await writer.drain()
        return request.keep_alive

    # API requests

    async def _plan(self, request: _HttpRequest) -> _Plan:
        received_at, received_monotonic = datetime.now(UTC), time.monotonic()
        request_id = _new_id("req_")
        body = _parse_json(request.body)
        headers, credential_header = _sanitized_headers(request.headers)
        with self._lock:
            config = self._config
            fault, rpm_wait_s = self._choose_fault(
                request, has_credential=credential_header is not None, now=received_monotonic
            )
            delay_s = self._latency(config) if fault in _DELAYED_FAULTS else 0.0
        fault, response = await self._response(
            request,
            fault=fault,
            body=body,
            request_id=request_id,
            retry_after_s=config.retry_after_s if rpm_wait_s is None else rpm_wait_s,
        )
        with self._lock:
            record = RequestRecord(
                index=len(self._records),
                received_at=received_at,
                received_monotonic=received_monotonic,
                method=request.method,
                path=request.path,
                body=body,
                model=body.get("model") if isinstance(body, dict) else None,
                fault=fault,
                status=response.status if response is not None else None,
                request_id=request_id,
                headers=headers,
                credential_header=credential_header,
                retry_count=_int_or_none(request.headers.get("x-stainless-retry-count")),
            )
            self._records.append(record)
            self._logged.notify_all()
        logger.debug(
            "fake_anthropic_request_planned",
            request_id=request_id,
            path=record.path,
            fault=fault,
            status=record.status,
        )
        return _Plan(fault=fault, response=response, config=config, delay_s=delay_s)

    def _choose_fault(
        self, request: _HttpRequest, *, has_credential: bool, now: float
    ) -> tuple[str, float | None]:
        """The fault for this request and, when the RPM limit refuses it, the seconds to wait."""
        config = self._config
        if (request.method, request.path) not in _API_ROUTES:
            return Outcome.NOT_FOUND, None
        if self._script:
            self._admitted.append(now)
            return self._script.popleft(), None
        if config.require_api_key and not has_credential:
            return Outcome.MISSING_API_KEY, None
        if (wait_s := self._rpm_wait(config, now=now)) is not None:
            return Outcome.RPM_LIMITED, wait_s
        self._admitted.append(now)
        return self._drawn_fault(config), None

    def _rpm_wait(self, config: FakeConfig, *, now: float) -> float | None:
        if config.rpm_limit is None:
            return None
        self._prune_windows(config, now=now)
        excess = len(self._admitted) - config.rpm_limit
        if excess < 0:
            return None
        # Admitted again once the request that makes the window one too full ages out.
        return self._admitted[excess] + config.rpm_window_s - now

    def _drawn_fault(self, config: FakeConfig) -> Fault:
        draw = self._fault_rng.random()
        cumulative = 0.0
        for kind in Fault:  # a fixed order, so a seed means the same faults whatever the dict
            cumulative += config.fault_rates.get(kind, 0.0)
            if draw < cumulative:
                return kind
        return Fault.OK

    def _latency(self, config: FakeConfig) -> float:
        if isinstance(config.latency_s, tuple):
            return self._latency_rng.uniform(*config.latency_s)
        return config.latency_s

    def _prune_windows(self, config: FakeConfig, *, now: float) -> None:
        horizon = now - config.rpm_window_s
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()
        while self._token_usage and self._token_usage[0][0] <= horizon:
            self._token_usage.popleft()

    async def _response(
        self,
        request: _HttpRequest,
        *,
        fault: str,
        body: Any,
        request_id: str,
        retry_after_s: float,
    ) -> tuple[str, _HttpResponse | None]:
        """The response for ``fault``, and the fault itself, which may turn into an error."""
        match fault:
            case Fault.HANG:
                return fault, None
            case Fault.OK | Fault.TRICKLE:
                try:
                    payload, usage = await self._reply(request.path, body)
                except _InvalidRequestError as exc:
                    return Outcome.INVALID_REQUEST, self._error(
                        Outcome.INVALID_REQUEST, request_id=request_id, message=str(exc)
                    )
                except _ResponderFailedError:
                    logger.exception("fake_anthropic_responder_failed", request_id=request_id)
                    return Outcome.RESPONDER_FAILED, self._error(
                        Outcome.RESPONDER_FAILED, request_id=request_id
                    )
                headers = self._api_headers(request_id=request_id, usage=usage)
                return fault, _json_response(200, payload, headers=headers)
            case Fault.RESET:
                model = body.get("model", "") if isinstance(body, dict) else ""
                canned = _message(
                    model=model,
                    content=_text_content(None, None),
                    stop_reason="end_turn",
                    input_tokens=1,
                )
                headers = self._api_headers(request_id=request_id)
                return fault, _json_response(200, canned, headers=headers)
            case Fault.MALFORMED:
                headers = self._api_headers(request_id=request_id)
                return fault, _HttpResponse(200, headers, _MALFORMED_BODY)
            case Fault.RATE_LIMIT | Outcome.RPM_LIMITED:
                return fault, self._error(fault, request_id=request_id, retry_after_s=retry_after_s)
            case _:
                return fault, self._error(fault, request_id=request_id)

    async def _reply(self, path: str, body: Any) -> tuple[dict[str, Any], tuple[int, int]]:
        """The 200 payload for a valid request, and its (input, output) token usage."""
        body = _validated_body(body, path=path)
        input_tokens = _input_tokens(body)
        if path == COUNT_TOKENS_PATH:
            return {"input_tokens": input_tokens}, (0, 0)
        tool = _forced_tool(body)
        schema = _output_schema(body)
        produced = await self._call_responder(body)
        try:
            if tool is not None:
                content, stop_reason = _tool_use_content(tool, produced), "tool_use"
            else:
                content, stop_reason = _text_content(schema, produced), "end_turn"
        except SchemaError as exc:
            raise _InvalidRequestError(f"The JSON schema cannot be satisfied: {exc}") from exc
        message = _message(
            model=body["model"],
            content=content,
            stop_reason=stop_reason,
            input_tokens=input_tokens,
        )
        return message, (input_tokens, message["usage"]["output_tokens"])

    async def _call_responder(self, body: dict[str, Any]) -> ResponderResult:
        if self.responder is None:
            return None
        try:
            produced = self.responder(body)
            if inspect.isawaitable(produced):
                produced = await produced
        except Exception as exc:
            raise _ResponderFailedError("the responder raised") from exc
        return produced

    def _error(
        self,
        kind: str,
        *,
        request_id: str,
        message: str | None = None,
        retry_after_s: float | None = None,
    ) -> _HttpResponse:
        spec = _ERRORS[kind]
        headers = self._api_headers(request_id=request_id, exhausted_for_s=retry_after_s)
        headers["x-should-retry"] = "true" if spec.retryable else "false"
        if retry_after_s is not None:
            headers.update(_retry_after_headers(retry_after_s))
        payload = _error_payload(
            error_type=spec.error_type,
            message=message or spec.message,
            request_id=request_id,
            error_code=spec.error_code,
        )
        return _json_response(spec.status, payload, headers=headers)

    def _api_headers(
        self,
        *,
        request_id: str,
        usage: tuple[int, int] | None = None,
        exhausted_for_s: float | None = None,
    ) -> dict[str, str]:
        """request-id and the anthropic-ratelimit-* headers, after counting ``usage``."""
        now, wall_now = time.monotonic(), datetime.now(UTC)
        with self._lock:
            config = self._config
            if usage is not None:
                self._token_usage.append((now, *usage))
            self._prune_windows(config, now=now)
            requests_used = len(self._admitted)
            input_used = sum(input_tokens for _, input_tokens, _ in self._token_usage)
            output_used = sum(output_tokens for _, _, output_tokens in self._token_usage)
            # A rolling window is fully replenished when its newest entry ages out.
            requests_reset_s = (
                self._admitted[-1] + config.rpm_window_s - now if requests_used else 0
            )
            tokens_reset_s = (
                self._token_usage[-1][0] + config.rpm_window_s - now if self._token_usage else 0
            )
        requests_limit = config.rpm_limit or _NOMINAL_REQUESTS_LIMIT
        requests_remaining = max(0, requests_limit - requests_used)
        if exhausted_for_s is not None:
            requests_remaining, requests_reset_s = 0, exhausted_for_s
        headers = {"request-id": request_id}
        for name, limit, remaining, reset_s in (
            ("requests", requests_limit, requests_remaining, requests_reset_s),
            (
                "input-tokens",
                config.input_tokens_limit,
                config.input_tokens_limit - input_used,
                tokens_reset_s,
            ),
            (
                "output-tokens",
                config.output_tokens_limit,
                config.output_tokens_limit - output_used,
                tokens_reset_s,
            ),
        ):
            prefix = f"anthropic-ratelimit-{name}"
            headers[f"{prefix}-limit"] = str(limit)
            headers[f"{prefix}-remaining"] = str(max(0, remaining))
            headers[f"{prefix}-reset"] = _rfc3339(wall_now + timedelta(seconds=max(0, reset_s)))
        return headers

    # control endpoints

    def _control_response(self, request: _HttpRequest) -> _HttpResponse:
        request_id = _new_id("req_")
        headers = {"request-id": request_id}
        try:
            payload = self._control(request.method, request.path, request)
        except ValueError as exc:
            error = _error_payload(
                error_type="invalid_request_error", message=str(exc), request_id=request_id
            )
            return _json_response(400, error, headers=headers)
        if payload is None:
            error = _error_payload(
                error_type="not_found_error",
                message=f"no control endpoint {request.method} {request.path}",
                request_id=request_id,
            )
            return _json_response(404, error, headers=headers)
        return _json_response(200, payload, headers=headers)

    def _control(self, method: str, path: str, request: _HttpRequest) -> object | None:
        match method, path.removeprefix(_CONTROL_PREFIX):
            case "GET", "log":
                since = int(request.query.get("since", ["0"])[0])
                return [record.to_dict() for record in self.requests[max(since, 0) :]]
            case "GET", "config":
                return self.config.to_dict()
            case "POST", "config":
                changes = json.loads(request.body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the config body must be a JSON object")
                self.configure(**changes)
                return self.config.to_dict()
            case "POST", "script":
                kinds = json.loads(request.body or b"[]")
                if not isinstance(kinds, list):
                    raise ValueError("the script body must be a JSON list of fault kinds")
                self.script(*kinds)
                return {"pending": self.pending_script}
            case "POST", "reset":
                self.reset()
                return {"reset": True}
        return None


def _rngs(seed: int | None) -> tuple[random.Random, random.Random]:
    # Separate generators: latency draws do not shift which requests get faults.
    if seed is None:
        return random.Random(), random.Random()
    return random.Random(f"faults-{seed}"), random.Random(f"latency-{seed}")


def _stop_loop_thread(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(_THREAD_TIMEOUT_S)
    if not thread.is_alive():
        loop.close()
