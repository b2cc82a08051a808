"""Instances of JSON schemas, checked with the small validator of the tests."""

from __future__ import annotations

import pytest

from reliability.fake_anthropic import SchemaError, instance_for_schema
from tests.reliability.fake_anthropic.support import REVIEW_SCHEMA, schema_errors


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
