"""What a round of checks found: one ``ComponentReport`` per component, one ``HealthReport``.

A report carries each component's public ``message`` (anyone may read it) and its staff-only
``detail`` (the error's cause chain, secrets redacted); the views decide who sees which.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

from health_check.base import HealthCheckResult
from health_check.exceptions import HealthCheckException, ServiceWarning

from reliability.health.checks import ComponentCheck, component_name
from reliability.models import HealthStatus
from reliability.redaction import redact_text

_MAX_DETAIL_CHARS = 2000


def error_detail(error: BaseException | None) -> str:
    """What staff see: the error's detail and the chain of causes, secrets redacted."""
    if error is None:
        return ""
    parts = []
    if explicit := getattr(error, "detail", ""):
        parts.append(str(explicit))
    cause = error.__cause__
    while cause is not None and len(parts) < 5:
        text = str(cause).strip()
        parts.append(f"{type(cause).__name__}: {text}" if text else type(cause).__name__)
        cause = cause.__cause__
    return redact_text("; ".join(parts))[:_MAX_DETAIL_CHARS]


def component_status(error: HealthCheckException | None) -> str:
    if error is None:
        return HealthStatus.HEALTHY
    if isinstance(error, ServiceWarning):
        return HealthStatus.DEGRADED
    return HealthStatus.UNHEALTHY


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComponentReport:
    name: str
    status: str
    critical: bool  # gates readiness
    latency_ms: float
    message: str  # public
    detail: str = dataclasses.field(repr=False)  # staff only, secrets redacted
    checked_at: dt.datetime
    result: HealthCheckResult = dataclasses.field(repr=False, compare=False)

    @property
    def healthy(self) -> bool:
        return self.status == HealthStatus.HEALTHY


def overall_status(components: Iterable[ComponentReport]) -> str:
    """Unhealthy if a critical component is; degraded if any component is not healthy."""
    components = list(components)
    if any(c.critical and c.status == HealthStatus.UNHEALTHY for c in components):
        return HealthStatus.UNHEALTHY
    if any(c.status != HealthStatus.HEALTHY for c in components):
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealthReport:
    status: str
    checked_at: dt.datetime
    duration_ms: float
    components: dict[str, ComponentReport]

    @property
    def failed_critical(self) -> list[ComponentReport]:
        return [
            c for c in self.components.values() if c.critical and c.status == HealthStatus.UNHEALTHY
        ]

    @property
    def ready(self) -> bool:
        return not self.failed_critical

    @property
    def results(self) -> list[HealthCheckResult]:
        return [c.result for c in self.components.values()]

    def summary(self) -> str:
        if self.status == HealthStatus.HEALTHY:
            return "all components healthy"
        if self.status == HealthStatus.UNHEALTHY:
            return "not ready: " + ", ".join(c.name for c in self.failed_critical)
        return "degraded: " + ", ".join(
            c.name for c in self.components.values() if c.status != HealthStatus.HEALTHY
        )


def component_report(result: HealthCheckResult, *, checked_at: dt.datetime) -> ComponentReport:
    check, error = result.check, result.error
    return ComponentReport(
        name=component_name(check),
        status=component_status(error),
        critical=check.gates_readiness() if isinstance(check, ComponentCheck) else True,
        latency_ms=round(result.time_taken * 1000, 3),
        message=str(error.message) if error is not None else check.pretty_status(),
        detail=error_detail(error),
        checked_at=checked_at,
        result=result,
    )


def build_report(
    *, results: Sequence[HealthCheckResult], checked_at: dt.datetime, duration_ms: float
) -> HealthReport:
    components = {
        report.name: report
        for report in (component_report(result, checked_at=checked_at) for result in results)
    }
    return HealthReport(
        status=overall_status(components.values()),
        checked_at=checked_at,
        duration_ms=round(duration_ms, 3),
        components=components,
    )
