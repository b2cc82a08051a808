"""Deterministic health scores and summaries from findings. Pure: plain data in, plain dicts out.

The score, 0-100, is

    penalty = sum(SEVERITY_WEIGHTS[finding.severity] * finding.confidence)
    density = penalty / max(units_count, 1)
    score   = round(100 * exp(-density / DENSITY_SCALE)), at most 99 when there is any penalty

so every point of penalty per unit costs about a tenth of what is left: one low finding per unit
scores 90, one medium 67, one high 37; no findings scores 100 and the score never goes below 0.
Normalising by units makes a large codebase and a small one comparable; weighting by
confidence lets a hesitant AI finding count for less than a certain static one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from analyses.findings import FINDING_KINDS, SEVERITIES, Finding

SEVERITY_WEIGHTS: Mapping[str, float] = {"high": 10.0, "medium": 4.0, "low": 1.0}
DENSITY_SCALE = 10.0
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


def health_score(findings: Iterable[Finding], *, units_count: int) -> int:
    """The 0-100 health of code with ``units_count`` units and these findings (formula above)."""
    if units_count < 0:
        raise ValueError(f"units_count must be >= 0, got {units_count}")
    penalty = math.fsum(
        SEVERITY_WEIGHTS[finding.severity] * finding.confidence for finding in findings
    )
    if penalty <= 0:
        return 100
    density = penalty / max(units_count, 1)
    return min(99, round(100 * math.exp(-density / DENSITY_SCALE)))


def summarize_module(
    findings: Sequence[Finding], *, units_count: int, path: str | None = None, top_n: int = 5
) -> dict[str, Any]:
    """Score, counts by kind and severity, and the ``top_n`` most serious findings of a module."""
    return {
        "path": path,
        "score": health_score(findings, units_count=units_count),
        "units": units_count,
        "findings": len(findings),
        **_counts(findings),
        "top_issues": [finding.to_dict() for finding in _most_serious(findings)[:top_n]],
    }


def summarize_system(
    findings_by_module: Mapping[str, Sequence[Finding]],
    *,
    units_by_module: Mapping[str, int],
    top_n: int = 10,
    worst_n: int = 5,
) -> dict[str, Any]:
    """The same summary over a whole codebase, plus its ``worst_n`` modules by score.

    Modules are keyed by path; a module missing from ``units_by_module`` counts as 0 units, one
    missing from ``findings_by_module`` as having no findings.
    """
    paths = sorted(set(findings_by_module) | set(units_by_module))
    located = [(path, finding) for path in paths for finding in findings_by_module.get(path, ())]
    all_findings = [finding for _path, finding in located]
    units_count = sum(units_by_module.get(path, 0) for path in paths)
    located.sort(key=lambda item: (*_seriousness(item[1]), item[0]))
    modules = [
        summarize_module(
            findings_by_module.get(path, ()), units_count=units_by_module.get(path, 0), path=path
        )
        for path in paths
    ]
    modules.sort(key=lambda module: (module["score"], module["path"]))
    return {
        "score": health_score(all_findings, units_count=units_count),
        "modules": len(paths),
        "units": units_count,
        "findings": len(all_findings),
        **_counts(all_findings),
        "top_issues": [{"path": path, **finding.to_dict()} for path, finding in located[:top_n]],
        "worst_modules": [
            {key: module[key] for key in ("path", "score", "units", "findings")}
            for module in modules[:worst_n]
        ],
    }


def _counts(findings: Sequence[Finding]) -> dict[str, dict[str, int]]:
    kinds = Counter(finding.kind for finding in findings)
    severities = Counter(finding.severity for finding in findings)
    return {
        "by_kind": {kind: kinds[kind] for kind in FINDING_KINDS},
        "by_severity": {severity: severities[severity] for severity in SEVERITIES},
    }


def _most_serious(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=_seriousness)


def _seriousness(finding: Finding) -> tuple[int, float, int, str, str]:
    """Sort key: most severe, then most confident, then by position and title (total order)."""
    return (
        _SEVERITY_RANK[finding.severity],
        -finding.confidence,
        finding.line_start,
        finding.title,
        finding.rule or "",
    )
