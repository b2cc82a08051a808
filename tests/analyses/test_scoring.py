"""analyses.scoring: the health score and the module/system summaries."""

from __future__ import annotations

import random

import pytest

from analyses.findings import Finding
from analyses.scoring import health_score, summarize_module, summarize_system


def finding(
    severity: str = "medium",
    *,
    kind: str = "smell",
    confidence: float = 1.0,
    line: int = 1,
    title: str = "Issue",
) -> Finding:
    return Finding(
        kind=kind,
        severity=severity,
        title=title,
        explanation="Why it matters.",
        line_start=line,
        line_end=line,
        confidence=confidence,
        source="static",
    )


class TestHealthScore:
    def test_score__no_findings_is_100(self):
        assert health_score([], units_count=10) == 100
        assert health_score([], units_count=0) == 100

    @pytest.mark.parametrize(("severity", "expected"), [("low", 90), ("medium", 67), ("high", 37)])
    def test_score__one_finding_per_unit_by_severity(self, severity, expected):
        findings = [finding(severity) for _ in range(5)]
        assert health_score(findings, units_count=5) == expected

    def test_score__any_finding_keeps_it_below_100(self):
        assert health_score([finding("low", confidence=0.1)], units_count=10_000) == 99

    def test_score__bounded_at_zero(self):
        assert health_score([finding("high")] * 1000, units_count=1) == 0

    def test_score__normalised_by_units(self):
        findings = [finding("high")] * 4
        assert health_score(findings, units_count=40) > health_score(findings, units_count=4)

    def test_score__low_confidence_counts_for_less(self):
        sure = health_score([finding("high", confidence=1.0)], units_count=1)
        unsure = health_score([finding("high", confidence=0.3)], units_count=1)
        assert unsure > sure

    def test_score__never_rises_when_a_finding_is_added(self):
        rng = random.Random(7)
        findings: list[Finding] = []
        previous = health_score(findings, units_count=20)
        for _ in range(200):
            findings.append(finding(rng.choice(["high", "medium", "low"]), confidence=rng.random()))
            score = health_score(findings, units_count=20)
            assert 0 <= score <= previous
            previous = score

    def test_score__independent_of_order(self):
        findings = [finding(s, confidence=c) for s in ("high", "low", "medium") for c in (0.2, 0.7)]
        expected = health_score(findings, units_count=3)
        for seed in range(10):
            shuffled = findings[:]
            random.Random(seed).shuffle(shuffled)
            assert health_score(shuffled, units_count=3) == expected

    def test_score__negative_units_rejected(self):
        with pytest.raises(ValueError, match="units_count"):
            health_score([], units_count=-1)


class TestSummaries:
    def test_module__counts_every_kind_and_severity_and_ranks_top_issues(self):
        findings = [
            finding("low", kind="docs", line=1, title="No docstring"),
            finding("high", kind="bug", line=9, confidence=0.6, title="Unsure bug"),
            finding("high", kind="security", line=5, title="Injection"),
            finding("medium", kind="smell", line=2, title="Long"),
        ]
        summary = summarize_module(findings, units_count=4, path="app/views.py", top_n=3)
        assert summary["path"] == "app/views.py"
        assert summary["score"] == health_score(findings, units_count=4)
        assert (summary["units"], summary["findings"]) == (4, 4)
        assert summary["by_kind"] == {
            "bug": 1, "risk": 0, "security": 1, "performance": 0, "smell": 1, "docs": 1, "test": 0
        }  # fmt: skip
        assert summary["by_severity"] == {"high": 2, "medium": 1, "low": 1}
        assert [issue["title"] for issue in summary["top_issues"]] == [
            "Injection",
            "Unsure bug",
            "Long",
        ]

    def test_system__aggregates_modules_and_lists_worst_first(self):
        summary = summarize_system(
            {
                "a.py": [finding("high"), finding("low")],
                "b.py": [finding("low")],
            },
            units_by_module={"a.py": 2, "b.py": 2, "c.py": 3},
            top_n=2,
            worst_n=2,
        )
        assert (summary["modules"], summary["units"], summary["findings"]) == (3, 7, 3)
        assert summary["score"] == health_score(
            [finding("high"), finding("low"), finding("low")], units_count=7
        )
        assert summary["by_severity"] == {"high": 1, "medium": 0, "low": 2}
        assert [(issue["path"], issue["severity"]) for issue in summary["top_issues"]] == [
            ("a.py", "high"),
            ("a.py", "low"),
        ]
        assert [module["path"] for module in summary["worst_modules"]] == ["a.py", "b.py"]
        assert summary["worst_modules"][0]["findings"] == 2

    def test_system__deterministic_for_reordered_input(self):
        modules = {f"m{index}.py": [finding("medium", line=index + 1)] for index in range(6)}
        units = dict.fromkeys(modules, 3)
        forward = summarize_system(modules, units_by_module=units)
        backward = summarize_system(
            dict(reversed(list(modules.items()))),
            units_by_module=dict(reversed(list(units.items()))),
        )
        assert forward == backward
