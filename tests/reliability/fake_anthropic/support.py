"""What the tests of the fake Anthropic API share: a review schema and a small validator for it,
a fast config, one SDK request, and plain HTTP for the control endpoints."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import anthropic
from anthropic.types import Message

from reliability.fake_anthropic import FakeConfig

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


def fast_config(**overrides: Any) -> FakeConfig:
    return FakeConfig(**{"hang_seconds": 30.0, "trickle_delay_s": 0.005, "seed": 7, **overrides})


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
