"""The health history: what the monitor observed, kept in the database for operators.

Each round becomes a sample per component (and ``overall``) and, where a status changed, a
``HealthTransition`` (like healthchecks.io's flips), from which uptime is computed exactly.
Rounds that cannot be written (the database itself is down) wait in the ``HealthRecorder`` and
are written, with their real times, once the database answers again. Old samples, worker
heartbeats and transitions are pruned in short batches.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import deque
from typing import Any

import structlog
from django.conf import settings
from django.db import Error as DBError
from django.db import close_old_connections, transaction

from reliability.health.checks import OVERALL
from reliability.health.report import ComponentReport, HealthReport
from reliability.models import (
    HealthComponentState,
    HealthSample,
    HealthStatus,
    HealthTransition,
    WorkerHeartbeat,
)
from reliability.redaction import redact_text

logger = structlog.get_logger(__name__)

STALE_MONITOR_MESSAGE = "no observations: the health monitor was not running"


def monitor_stale_after(interval: float | None = None) -> dt.timedelta:
    """How long without an observation before a component's status is unknown: 3 rounds."""
    if interval is None:
        interval = settings.EIDOLON_HEALTH_MONITOR_INTERVAL
    return dt.timedelta(seconds=3 * interval)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    """What a round saw of something that is not a checked component (``overall``); a
    component's ``ComponentReport`` has the same fields."""

    name: str
    status: str
    critical: bool
    message: str
    detail: str
    latency_ms: float | None


def observations_of(report: HealthReport) -> list[ComponentReport | Observation]:
    """What the round saw: each component's report, and the overall status."""
    overall = Observation(
        name=OVERALL,
        status=report.status,
        critical=True,
        message=report.summary(),
        detail="",
        latency_ms=report.duration_ms,
    )
    return [*report.components.values(), overall]


def _apply_observation(
    state: HealthComponentState,
    seen: ComponentReport | Observation,
    *,
    at: dt.datetime,
    stale_after: dt.timedelta | None,
) -> list[HealthTransition]:
    """Update ``state`` (unsaved) with what was seen ``at``; return the transitions it makes."""
    transitions = []
    if (
        stale_after is not None
        and state.checked_at is not None
        and state.status != HealthStatus.UNKNOWN
        and at - state.checked_at > stale_after
    ):
        # Nobody watched since the last observation: unknown from then on.
        transitions.append(
            _move(state, HealthStatus.UNKNOWN, message=STALE_MONITOR_MESSAGE, at=state.checked_at)
        )
    if seen.status != state.status:
        transitions.append(
            _move(state, seen.status, message=seen.message, detail=seen.detail, at=at)
        )
        state.since = at
    state.critical = seen.critical
    state.message = seen.message
    state.detail = seen.detail
    state.latency_ms = seen.latency_ms
    state.checked_at = at
    return transitions


def _move(
    state: HealthComponentState, to_status: str, *, message: str, detail: str = "", at: dt.datetime
) -> HealthTransition:
    """Move ``state`` (unsaved) to ``to_status``; return the transition that records it."""
    change = HealthTransition(
        component=state,
        from_status=state.status,
        to_status=to_status,
        message=message,
        detail=detail,
        created_at=at,
    )
    state.status = to_status
    return change


def record_report(
    *, report: HealthReport, stale_after: dt.timedelta | None = None
) -> list[HealthTransition]:
    """Store one round: a sample per component (and ``overall``), a transition per change.

    If a component's last observation is older than ``stale_after``, the monitor was not
    running in between: that gap is recorded as ``unknown`` from the last observation on, so
    uptime never counts time nobody watched.
    """
    at = report.checked_at
    transitions: list[HealthTransition] = []
    samples: list[HealthSample] = []
    with transaction.atomic():
        for seen in observations_of(report):
            state, _ = HealthComponentState.objects.get_or_create(
                name=seen.name,
                defaults={"status": HealthStatus.UNKNOWN, "since": at, "critical": seen.critical},
            )
            transitions += _apply_observation(state, seen, at=at, stale_after=stale_after)
            state.save()
            samples.append(
                HealthSample(
                    component=state, status=seen.status, latency_ms=seen.latency_ms, created_at=at
                )
            )
        HealthTransition.objects.bulk_create(transitions)
        HealthSample.objects.bulk_create(samples)
    for change in transitions:
        log = logger.warning if change.to_status == HealthStatus.UNHEALTHY else logger.info
        log(
            "health_changed",
            component=change.component.name,
            from_status=change.from_status,
            to_status=change.to_status,
            message=change.message,
            at=change.created_at.isoformat(),
        )
    return transitions


class HealthRecorder:
    """Writes reports in order; keeps those it could not write (database down) for later.

    So an outage of the database itself is recorded, with its true start and end, once the
    database is back. At most ``max_pending`` reports wait; older ones are dropped (and the gap
    becomes ``unknown``).
    """

    def __init__(self, *, stale_after: dt.timedelta | None, max_pending: int = 10_000) -> None:
        self.stale_after = stale_after
        self.pending: deque[HealthReport] = deque(maxlen=max_pending)
        self._failing = False

    def record(self, report: HealthReport) -> int:
        """Write pending reports and this one; return how many transitions were written."""
        self.pending.append(report)
        written = 0
        close_old_connections()
        while self.pending:
            try:
                written += len(record_report(report=self.pending[0], stale_after=self.stale_after))
            except DBError as error:
                if not self._failing:
                    logger.warning(
                        "health_record_failed",
                        pending=len(self.pending),
                        error=redact_text(f"{type(error).__name__}: {error}"),
                    )
                self._failing = True
                close_old_connections()
                return written
            self.pending.popleft()
        if self._failing:
            logger.info("health_record_recovered")
            self._failing = False
        return written


def _delete_in_batches(queryset: Any, *, batch_size: int) -> int:
    """Delete in short statements, so no long write lock blocks the service."""
    deleted = 0
    model = queryset.model
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        count, _ = model.objects.filter(pk__in=ids).delete()
        deleted += count


def prune_health_history(
    *,
    now: dt.datetime,
    sample_retention: dt.timedelta,
    transition_retention: dt.timedelta,
    batch_size: int = 5000,
) -> dict[str, int]:
    """Delete samples and worker heartbeats older than ``sample_retention`` and transitions
    older than ``transition_retention`` (keeping each component's latest transition, which
    says what its status has been since)."""
    newest = [
        latest
        for component in HealthComponentState.objects.values_list("pk", flat=True)
        if (
            latest := HealthTransition.objects.filter(component_id=component)
            .order_by("-created_at", "-id")
            .values_list("pk", flat=True)
            .first()
        )
        is not None
    ]
    pruned = {
        "samples": _delete_in_batches(
            HealthSample.objects.filter(created_at__lt=now - sample_retention),
            batch_size=batch_size,
        ),
        "transitions": _delete_in_batches(
            HealthTransition.objects.filter(created_at__lt=now - transition_retention).exclude(
                pk__in=newest
            ),
            batch_size=batch_size,
        ),
        "worker_heartbeats": _delete_in_batches(
            WorkerHeartbeat.objects.filter(last_seen_at__lt=now - sample_retention),
            batch_size=batch_size,
        ),
    }
    if any(pruned.values()):
        logger.info("health_history_pruned", **pruned)
    return pruned
