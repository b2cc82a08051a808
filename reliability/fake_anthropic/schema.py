"""Deterministic instances of JSON schemas: what the fake answers for an ``output_config``
schema or a forced tool's ``input_schema`` when no responder supplies the reply."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any


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
