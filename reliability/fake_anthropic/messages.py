"""The Messages API's side of the fake: reading a request body and building the reply.

``reply()`` turns a valid request into the 200 payload: the responder's content when it gives
some, otherwise JSON that validates against the ``output_config`` schema, a ``tool_use`` block
for a forced tool, or plain text. A body the real API would refuse raises
``InvalidRequestError``; a responder that raises or returns junk raises
``ResponderFailedError``.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from reliability.fake_anthropic.prompt_cache import CacheUsage, PromptCache
from reliability.fake_anthropic.schema import SchemaError, instance_for_schema

DEFAULT_REPLY_TEXT = "This is a reply from the fake Anthropic API."

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MALFORMED_BODY = b'{"id": "msg_malformed", "type": "message", "content": [{"type": "text", "te'

ResponderResult = Mapping[str, Any] | list[Any] | str | None
Responder = Callable[[dict[str, Any]], ResponderResult | Awaitable[ResponderResult]]
"""Gets the parsed request body; returns the reply content, or None for the generated one.

For a forced tool the result is the tool's ``input`` (a dict, or a JSON string of one). For an
``output_config`` schema a dict or list is sent as JSON text and a string verbatim (so a test
can send JSON that breaks the schema). Otherwise a string is the reply text and anything else
is sent as JSON text. It runs on the fake's event loop and may be a coroutine function.
"""


class InvalidRequestError(Exception):
    """The request body is not a valid Messages request; answered with 400."""


class ResponderFailedError(Exception):
    """The responder raised or returned something unusable; answered with 500."""


async def reply(
    path: str, body: Any, *, responder: Responder | None, prompt_cache: PromptCache | None = None
) -> tuple[dict[str, Any], tuple[int, int]]:
    """The 200 payload for a valid request to ``path``, and its (input, output) token usage.

    The input usage is what the API counts against its input-tokens-per-minute limit: the
    uncached input and the cache writes, not the cache reads.
    """
    body = _validated_body(body, path=path)
    input_tokens = _input_tokens(body)
    if path == COUNT_TOKENS_PATH:
        return {"input_tokens": input_tokens}, (0, 0)
    if prompt_cache is not None:
        cache_usage = prompt_cache.usage(body, input_tokens=input_tokens)
    else:
        cache_usage = CacheUsage(input_tokens=input_tokens)
    tool = _forced_tool(body)
    schema = _output_schema(body)
    produced = await _call_responder(responder, body)
    try:
        if tool is not None:
            content, stop_reason = _tool_use_content(tool, produced), "tool_use"
        else:
            content, stop_reason = _text_content(schema, produced), "end_turn"
    except SchemaError as exc:
        raise InvalidRequestError(f"The JSON schema cannot be satisfied: {exc}") from exc
    message = _message(
        model=body["model"],
        content=content,
        stop_reason=stop_reason,
        input_tokens=cache_usage.input_tokens,
        cache_usage=cache_usage,
    )
    counted = cache_usage.input_tokens + cache_usage.cache_creation_input_tokens
    return message, (counted, message["usage"]["output_tokens"])


def canned_reply(body: object) -> dict[str, Any]:
    """A small valid message whatever the request: the one a ``reset`` breaks off."""
    model = body.get("model", "") if isinstance(body, dict) else ""
    return _message(
        model=model, content=_text_content(None, None), stop_reason="end_turn", input_tokens=1
    )


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


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


async def _call_responder(responder: Responder | None, body: dict[str, Any]) -> ResponderResult:
    if responder is None:
        return None
    try:
        produced = responder(body)
        if inspect.isawaitable(produced):
            produced = await produced
    except Exception as exc:
        raise ResponderFailedError("the responder raised") from exc
    return produced


def _validated_body(body: object, *, path: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequestError("model: Field required")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise InvalidRequestError("messages: at least one message is required")
    max_tokens = body.get("max_tokens")
    if path == MESSAGES_PATH and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise InvalidRequestError("max_tokens: a positive integer is required")
    return body


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choice = body.get("tool_choice")
    if not isinstance(choice, Mapping) or choice.get("type") not in {"tool", "any"}:
        return None
    tools = [tool for tool in body.get("tools") or () if isinstance(tool, Mapping)]
    if choice["type"] == "any":
        if not tools:
            raise InvalidRequestError("tool_choice: 'any' requires at least one tool")
        return tools[0]
    name = choice.get("name")
    tool = next((tool for tool in tools if tool.get("name") == name), None)
    if tool is None:
        raise InvalidRequestError(f"tool_choice.name: tool {name!r} is not among the tools")
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
        raise InvalidRequestError(
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
    *,
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str,
    input_tokens: int,
    cache_usage: CacheUsage | None = None,
) -> dict[str, Any]:
    written = cache_usage.cache_creation_input_tokens if cache_usage else 0
    read = cache_usage.cache_read_input_tokens if cache_usage else 0
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": _output_tokens(content),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written,
                "ephemeral_1h_input_tokens": 0,
            },
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
            raise ResponderFailedError("the responder's tool input is not JSON") from exc
    else:
        tool_input = produced
    if not isinstance(tool_input, Mapping):
        raise ResponderFailedError("a tool input must be a JSON object")
    return [{"type": "tool_use", "id": new_id("toolu_"), "name": tool["name"], "input": tool_input}]


def _text_content(
    schema: Mapping[str, Any] | None, produced: ResponderResult
) -> list[dict[str, Any]]:
    if produced is None:
        produced = instance_for_schema(schema) if schema is not None else DEFAULT_REPLY_TEXT
    text = produced if isinstance(produced, str) else json.dumps(produced)
    return [{"type": "text", "text": text}]
