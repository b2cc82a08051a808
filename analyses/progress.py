"""A run's outcomes, written in batches, and the events that announce them: unit outcomes, cards
and progress (with what the analysis is waiting for), DB first, then the channel layer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from asgiref.sync import sync_to_async

from analyses import events, store
from analyses import metrics as analysis_metrics
from analyses.findings import Finding
from analyses.models import Analysis, UnitStatus
from analyses.parsing import Unit
from analyses.run_state import AnalysisRun

logger = structlog.get_logger(__name__)

# Unit outcomes are written in batches, this often.
FLUSH_SECONDS = 0.25
# Progress events this often; sooner when the waiting reason changed, but never more than five a
# second per analysis (cards and failures are events of their own, never held back).
PROGRESS_SECONDS = 0.5
MIN_PROGRESS_SECONDS = 0.2


def record_outcome(
    run: AnalysisRun,
    code_unit_id: int,
    unit: Unit,
    status: str,
    findings: list[Finding],
    *,
    model: str = "",
) -> None:
    run.outcomes.append(
        store.UnitOutcome(
            code_unit_id=code_unit_id, unit=unit, status=status, findings=findings, model=model
        )
    )


def record_failed(run: AnalysisRun, code_unit_id: int, unit: Unit, reason: str) -> None:
    logger.info("unit_failed", unit=unit.id, reason=reason)
    run.outcomes.append(
        store.UnitOutcome(
            code_unit_id=code_unit_id, unit=unit, status=UnitStatus.FAILED, reason=reason
        )
    )


async def flush_periodically(run: AnalysisRun, *, stop: asyncio.Event) -> None:
    """Write outcomes in batches while the units' workers go on reviewing, until ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
        if not stop.is_set():
            await flush(run)


async def flush(run: AnalysisRun, *, force: bool = False) -> None:
    """Write finished units in a batch, then announce them (DB first, then the channel layer)."""
    now = run.clock.monotonic()
    waiting_changed = current_waiting(run) != run.reported_waiting
    if not force and not (run.outcomes or run.calls or waiting_changed):
        return
    outcomes, run.outcomes = run.outcomes, []
    calls, run.calls = run.calls, []
    written = await sync_to_async(store.write_outcomes)(run.id, outcomes=outcomes, calls=calls)
    analysis_metrics.record_units(written.outcomes)
    batch: list[tuple[str, dict[str, Any]]] = []
    cards_by_unit: dict[int, list] = {}
    for card in written.cards:
        cards_by_unit.setdefault(card.unit_id, []).append(card)
    for outcome in written.outcomes:
        failed = outcome.status == UnitStatus.FAILED
        batch.append(
            (
                "unit.failed" if failed else "unit.finished",
                {
                    "unit": outcome.unit.id,
                    "qualname": outcome.unit.qualname,
                    "path": outcome.unit.path,
                    "status": outcome.status,
                    "reason": outcome.reason,
                    "cards": len(cards_by_unit.get(outcome.code_unit_id, [])),
                    "suppressed": written.suppressed.get(outcome.code_unit_id, 0),
                },
            )
        )
        batch.extend(
            ("card.created", card_payload(card))
            for card in cards_by_unit.get(outcome.code_unit_id, [])
        )
    if force or now - run.last_progress >= (
        MIN_PROGRESS_SECONDS if waiting_changed else PROGRESS_SECONDS
    ):
        run.last_progress = now
        payload = await progress(run)
        batch.append(("analysis.progress", payload))
        if run.on_progress is not None:
            run.on_progress(payload)
    await events.emit(run.id, batch)


def card_payload(card) -> dict[str, Any]:
    return {
        "id": card.pk,
        "unit": card.unit_id,
        "kind": card.kind,
        "severity": card.severity,
        "title": card.title,
        "path": card.path,
        "line_start": card.line_start,
        "line_end": card.line_end,
        "source": card.source,
    }


def current_waiting(run: AnalysisRun) -> str:
    """What the analysis waits for right now ("" when nothing)."""
    if run.waiting is not None and run.waiting.until > run.clock.now():
        return run.waiting.describe()
    return ""


async def progress(run: AnalysisRun) -> dict[str, Any]:
    analysis = await sync_to_async(Analysis.objects.get)(pk=run.id)
    waiting = run.reported_waiting = current_waiting(run)
    if waiting != analysis.waiting_reason:
        await sync_to_async(store.set_waiting_reason)(
            run.id, worker_id=run.worker_id, reason=waiting
        )
    return {
        **analysis.progress_counts(),
        "current_unit": run.current_unit,
        "waiting_reason": waiting,
        "deferred": len(run.queue.deferred),  # units put off after transient failures
    }
