"""analyses.findings: the Finding type, the reply schema, and validation of a provider's reply."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from analyses.findings import (
    CLAMPED_NOTE,
    FINDING_KINDS,
    FINDINGS_JSON_SCHEMA,
    MAX_EXPLANATION_CHARS,
    MAX_TITLE_CHARS,
    PINNED_NOTE,
    SEVERITIES,
    Finding,
    InvalidReply,
    parse_findings_reply,
    read_findings_reply,
)

UNIT_START, UNIT_END = 10, 20


def reply_item(**overrides: Any) -> dict[str, Any]:
    item = {
        "kind": "bug",
        "severity": "high",
        "title": "Off-by-one in pagination",
        "explanation": "The last page is never returned because the range stops one short.",
        "line_start": 12,
        "line_end": 14,
        "fix": "for page in range(count + 1):",
        "confidence": 0.8,
    }
    item.update(overrides)
    return item


def parse(*items: dict[str, Any]) -> list[Finding]:
    return parse_findings_reply(
        json.dumps({"findings": list(items)}), unit_start=UNIT_START, unit_end=UNIT_END
    )


def reason_of(payload: Any) -> str:
    with pytest.raises(InvalidReply) as caught:
        parse_findings_reply(payload, unit_start=UNIT_START, unit_end=UNIT_END)
    assert str(caught.value).startswith(f"{caught.value.reason}: ")
    return caught.value.reason


class TestFinding:
    def test_construction__valid_finding_round_trips_through_dict(self):
        finding = Finding(
            kind="smell",
            severity="low",
            title="Long function",
            explanation="Split it.",
            line_start=3,
            line_end=9,
            confidence=1.0,
            source="static",
            rule="function-too-long",
        )
        assert Finding(**finding.to_dict()) == finding

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("kind", "style"),
            ("severity", "critical"),
            ("source", "openai"),
            ("title", ""),
            ("title", "x" * (MAX_TITLE_CHARS + 1)),
            ("line_start", 0),
            ("line_end", 2),
            ("confidence", 1.01),
        ],
    )
    def test_construction__invalid_field_rejected(self, field, value):
        fields = {
            "kind": "bug",
            "severity": "high",
            "title": "t",
            "explanation": "e",
            "line_start": 3,
            "line_end": 4,
            "confidence": 0.5,
            "source": "anthropic",
        }
        fields[field] = value
        with pytest.raises(ValueError, match=field.split("_")[0]):
            Finding(**fields)


class TestSchema:
    def test_schema__every_object_closed_and_every_property_required(self):
        item = FINDINGS_JSON_SCHEMA["properties"]["findings"]["items"]
        for schema in (FINDINGS_JSON_SCHEMA, item):
            assert schema["additionalProperties"] is False
            assert sorted(schema["required"]) == sorted(schema["properties"])

    def test_schema__enums_match_the_finding_type(self):
        properties = FINDINGS_JSON_SCHEMA["properties"]["findings"]["items"]["properties"]
        assert properties["kind"]["enum"] == list(FINDING_KINDS)
        assert properties["severity"]["enum"] == list(SEVERITIES)
        assert {"type": "null"} in properties["fix"]["anyOf"]

    def test_schema__already_in_the_form_the_anthropic_sdk_sends(self):
        # transform_schema rewrites or moves into descriptions whatever the API cannot enforce.
        assert anthropic.transform_schema(FINDINGS_JSON_SCHEMA) == FINDINGS_JSON_SCHEMA


class TestParseFindingsReply:
    def test_reply__round_trip_of_every_field(self):
        (finding,) = parse(reply_item())
        assert finding == Finding(
            kind="bug",
            severity="high",
            title="Off-by-one in pagination",
            explanation="The last page is never returned because the range stops one short.",
            line_start=12,
            line_end=14,
            confidence=0.8,
            source="anthropic",
            fix="for page in range(count + 1):",
        )

    def test_reply__dict_payload_and_empty_list_accepted(self):
        assert parse_findings_reply({"findings": []}, unit_start=1, unit_end=1) == []
        assert (
            len(parse_findings_reply({"findings": [reply_item()]}, unit_start=10, unit_end=20)) == 1
        )

    def test_reply__single_markdown_fence_tolerated(self):
        fenced = "```json\n" + json.dumps({"findings": [reply_item()]}) + "\n```"
        assert len(parse_findings_reply(fenced, unit_start=UNIT_START, unit_end=UNIT_END)) == 1

    def test_reply__empty_fix_becomes_none_and_null_fix_allowed(self):
        blank, null = parse(reply_item(fix="  "), reply_item(fix=None, title="Another problem"))
        assert blank.fix is None
        assert null.fix is None

    def test_reply__long_title_shortened_with_ellipsis(self):
        (finding,) = parse(reply_item(title="word " * 60))
        assert len(finding.title) == MAX_TITLE_CHARS
        assert finding.title.endswith("…")

    def test_reply__long_explanation_shortened_and_long_fix_dropped(self):
        long_explanation = "because " * 1_000
        (finding,) = parse(reply_item(explanation=long_explanation, fix="x = 1\n" * 2_000))
        assert len(finding.explanation) == MAX_EXPLANATION_CHARS
        assert finding.explanation.endswith("…")
        assert finding.fix is None
        (kept,) = parse(reply_item(fix="x = 1\n" * 100))
        assert kept.fix == "x = 1\n" * 100

    @pytest.mark.parametrize(
        ("lines", "expected", "note"),
        [
            pytest.param((12, 14), (12, 14), "", id="inside"),
            pytest.param((18, 23), (18, 20), CLAMPED_NOTE, id="runs-past-end"),
            pytest.param((21, 21), (20, 20), CLAMPED_NOTE, id="line-after-end"),
            pytest.param((7, 9), (10, 10), CLAMPED_NOTE, id="just-before-start"),
            pytest.param((1, 100), (10, 20), CLAMPED_NOTE, id="covers-the-unit"),
            pytest.param((15, 12), (12, 15), CLAMPED_NOTE, id="reversed"),
            pytest.param((0, 12), (10, 12), CLAMPED_NOTE, id="line-zero"),
            pytest.param((1, 3), (10, 10), PINNED_NOTE, id="far-before"),
            pytest.param((60, 70), (10, 10), PINNED_NOTE, id="far-after"),
        ],
    )
    def test_line_range__kept_inside_the_unit_and_marked(self, lines, expected, note):
        (finding,) = parse(reply_item(line_start=lines[0], line_end=lines[1]))
        assert (finding.line_start, finding.line_end, finding.adjustment) == (*expected, note)

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            pytest.param("not json at all", "not_json", id="not-json"),
            pytest.param("", "not_json", id="empty"),
            pytest.param("[]", "schema_mismatch", id="array-root"),
            pytest.param('{"issues": []}', "schema_mismatch", id="wrong-key"),
            pytest.param('{"findings": [], "extra": 1}', "schema_mismatch", id="extra-key"),
            pytest.param('{"findings": {}}', "schema_mismatch", id="findings-not-array"),
            pytest.param('{"findings": ["text"]}', "schema_mismatch", id="item-not-object"),
        ],
    )
    def test_invalid__document_shape(self, payload, reason):
        assert reason_of(payload) == reason

    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            pytest.param({"kind": "style"}, "unknown_kind", id="unknown-kind"),
            pytest.param({"severity": "critical"}, "unknown_severity", id="unknown-severity"),
            pytest.param({"kind": 3}, "schema_mismatch", id="kind-not-string"),
            pytest.param({"line_start": "12"}, "schema_mismatch", id="line-not-integer"),
            pytest.param({"line_end": True}, "schema_mismatch", id="line-boolean"),
            pytest.param({"line_end": 13.0}, "schema_mismatch", id="line-float"),
            pytest.param({"fix": 1}, "schema_mismatch", id="fix-not-string"),
            pytest.param({"confidence": "high"}, "schema_mismatch", id="confidence-not-number"),
            pytest.param({"confidence": 1.5}, "bad_confidence", id="confidence-above-one"),
            pytest.param({"confidence": -0.1}, "bad_confidence", id="confidence-negative"),
            pytest.param({"confidence": float("nan")}, "bad_confidence", id="confidence-nan"),
            pytest.param({"title": "   "}, "empty_text", id="blank-title"),
            pytest.param({"explanation": ""}, "empty_text", id="empty-explanation"),
        ],
    )
    def test_invalid__finding_fields(self, overrides, reason):
        assert reason_of(json.dumps({"findings": [reply_item(**overrides)]})) == reason

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param(lambda item: item.pop("fix"), id="missing-field"),
            pytest.param(lambda item: item.update(rule="x"), id="unexpected-field"),
        ],
    )
    def test_invalid__missing_or_extra_fields(self, change):
        item = reply_item()
        change(item)
        assert reason_of({"findings": [item]}) == "schema_mismatch"

    def test_invalid__one_bad_finding_rejects_the_reply_and_names_it(self):
        with pytest.raises(InvalidReply) as caught:
            parse(reply_item(), reply_item(kind="style"))
        assert "findings[1]" in caught.value.detail

    def test_invalid__unit_range_itself_must_be_sane(self):
        with pytest.raises(ValueError, match="unit range"):
            parse_findings_reply({"findings": []}, unit_start=5, unit_end=4)


class TestRepeatedFindings:
    def test_repeats__merged_into_the_first_with_the_worst_severity_and_every_line(self):
        first = reply_item(severity="low", line_start=12, line_end=13, confidence=0.6, fix=None)
        again = reply_item(
            title="Off by one in pagination!", severity="high", line_start=13, line_end=15
        )
        read = read_findings_reply(
            {"findings": [first, again]}, unit_start=UNIT_START, unit_end=UNIT_END
        )
        (merged,) = read.findings
        assert (read.clamped, read.merged) == (0, 1)
        assert (merged.title, merged.severity, merged.line_start, merged.line_end) == (
            "Off-by-one in pagination",
            "high",
            12,
            15,
        )
        assert merged.confidence == 0.8 and merged.fix == "for page in range(count + 1):"
        assert merged.adjustment == "Merged with 1 repeat of it in the reply."

    @pytest.mark.parametrize(
        "other",
        [
            pytest.param({"kind": "risk"}, id="another-kind"),
            pytest.param({"line_start": 16, "line_end": 18}, id="other-lines"),
            pytest.param({"title": "Pagination skips the first page"}, id="another-title"),
        ],
    )
    def test_distinct_findings__kept_apart(self, other):
        read = read_findings_reply(
            {"findings": [reply_item(), reply_item(**other)]},
            unit_start=UNIT_START,
            unit_end=UNIT_END,
        )
        assert len(read.findings) == 2 and read.merged == 0
        assert all(finding.adjustment == "" for finding in read.findings)

    def test_out_of_range_repeats__counted_both_ways_and_noted_once(self):
        outside = reply_item(line_start=1, line_end=1)
        read = read_findings_reply(
            {"findings": [outside, outside, reply_item(kind="risk", line_end=30)]},
            unit_start=UNIT_START,
            unit_end=UNIT_END,
        )
        pinned, clamped = read.findings
        assert (read.clamped, read.merged) == (3, 1)
        assert (pinned.line_start, pinned.line_end) == (UNIT_START, UNIT_START)
        assert pinned.adjustment == f"{PINNED_NOTE} Merged with 1 repeat of it in the reply."
        assert (clamped.line_start, clamped.line_end, clamped.adjustment) == (
            12,
            UNIT_END,
            CLAMPED_NOTE,
        )
