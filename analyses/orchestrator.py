"""One analysis, start to finish: source -> parse -> units -> (cache | guard -> provider) ->
cards -> events -> summaries.

A worker takes the analysis under a lease it renews; if the worker dies the lease expires and
another worker resumes it, reviewing only the units still pending (a unit's result is cached
before it is written, so even a unit reviewed but not yet written is not paid for twice).
A transient failure of the API (overloaded, rate limited, a 5xx, a timeout) costs a unit time,
not its result: it goes to the back of the queue and is tried again at the pace the breaker and
the retry budget allow (``scheduling``); only a permanent failure, the deadline or a cap fails it.
Every unit ends analysed, cached, failed with a reason or, when the analysis is cancelled or
times out, skipped; the analysis ends completed, completed with errors, failed, cancelled or
timed out, never stuck in running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from analyses import changes, events, store, suppressions
from analyses import metrics as analysis_metrics
from analyses.findings import Finding
from analyses.git import cloned_through_guard
from analyses.models import Analysis, AnalysisStatus, UnitStatus
from analyses.parsing import (
    ParseLimits,
    ParseResult,
    Unit,
    build_call_graph,
    context_for,
    parse_tree,
)
from analyses.parsing import context_hash as unit_context_hash
from analyses.progress import (
    flush,
    flush_periodically,
    progress,
    record_failed,
    record_outcome,
)
from analyses.providers.base import LLMCallRecord, Provider, ReviewFailed, ReviewRequest
from analyses.providers.static import StaticProvider
from analyses.run_state import AnalysisRun
from analyses.scheduling import UnitQueue, UnitWork
from analyses.scoring import summarize_system
from analyses.selectors import analysis_model_usage
from analyses.sources import SourceError, resolve_local_directory
from reliability.clock import SYSTEM_CLOCK, Clock
from reliability.exceptions import (
    BudgetExhaustedError,
    CircuitOpenError,
    DeadlineExceededError,
    format_epoch,
)
from reliability.guard import Wait

logger = structlog.get_logger(__name__)

# How often the watcher looks for a cancel request (the promise: stopped within 2 s).
CANCEL_POLL_SECONDS = 0.5


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _calls_api(provider: Provider) -> bool:
    """Providers that call an API get context in their prompts, a cache and a token budget."""
    return getattr(provider, "calls_api", True)


def provider_for(analysis: Analysis) -> Provider:
    if analysis.provider == "static":
        return StaticProvider()
    from analyses.providers.anthropic import AnthropicProvider
    from analyses.providers.chain import ModelChainProvider

    models = analysis.model_chain or [analysis.model or settings.EIDOLON_AI_MODEL]
    return ModelChainProvider(
        [AnthropicProvider.from_settings(model=model) for model in models],
        slot_wait=settings.EIDOLON_AI_MODEL_SLOT_WAIT,
    )


def cache_models(provider: Provider, *, upgrade_fallback_reviews: bool) -> list[str]:
    """The models whose cached reviews a run takes, preferred first: any of the chain's, or
    only the primary's when fallback reviews are to be upgraded (reviewed again)."""
    models = getattr(provider, "models", [provider.model])
    return models[:1] if upgrade_fallback_reviews else list(models)


class _Stopped(Exception):
    """The run must stop: cancelled, timed out, or another worker took the lease."""

    def __init__(self, why: str) -> None:
        self.why = why


async def run_analysis(
    analysis_id: int,
    *,
    worker_id: str | None = None,
    provider: Provider | None = None,
    clock: Clock = SYSTEM_CLOCK,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    lease_seconds: float | None = None,
    shutdown: threading.Event | None = None,
) -> str:
    """Run (or resume) an analysis to its end; returns its final status.

    Returns at once, changing nothing, when another live worker holds it or it has finished.
    When ``shutdown`` is set (the worker process is stopping), the run stops, keeps what it
    finished and hands its lease back.
    """
    worker_id = worker_id or new_worker_id()
    lease_seconds = lease_seconds or settings.EIDOLON_ANALYSIS_LEASE_SECONDS
    # The thread that runs this process's database work keeps its connection from run to
    # run: one broken by a database outage is replaced here, not used again.
    await sync_to_async(close_old_connections)()
    analysis = await sync_to_async(store.claim_lease)(
        analysis_id, worker_id=worker_id, now=clock.now(), lease_seconds=lease_seconds
    )
    if analysis is None:
        status = await sync_to_async(
            lambda: Analysis.objects.values_list("status", flat=True).get(pk=analysis_id)
        )()
        logger.info("analysis_not_claimed", analysis_id=analysis_id, status=status)
        return status
    run = AnalysisRun(
        tokens_used=analysis.input_tokens + analysis.output_tokens,
        analysis=analysis,
        worker_id=worker_id,
        provider=provider or provider_for(analysis),
        clock=clock,
        on_progress=on_progress,
        lease_seconds=lease_seconds,
        shutdown=shutdown,
    )
    with structlog.contextvars.bound_contextvars(analysis_id=analysis_id, worker_id=worker_id):
        return await _run(run)


async def _run(run: AnalysisRun) -> str:
    resumed = run.analysis.runs > 1
    logger.info("analysis_resumed" if resumed else "analysis_started", source=run.analysis.source)
    watcher = asyncio.create_task(_watch(run))
    try:
        try:
            await _until_stopped(run, _analyse(run, resumed=resumed))
        except _Stopped:
            pass
        except SourceError as error:
            return await _finish(run, AnalysisStatus.FAILED, error.message)
        except Exception as error:
            if database_unavailable(error):
                # A failover or a partition, not a fault of the analysis: stop, keeping what
                # was stored; the lease expires and a worker resumes it from its pending units.
                logger.warning("analysis_database_lost", error=type(error).__name__)
                await sync_to_async(close_old_connections)()
                return AnalysisStatus.RUNNING
            logger.exception("analysis_crashed")
            return await _finish(
                run, AnalysisStatus.FAILED, f"internal error ({type(error).__name__})"
            )
        if run.stop_reason == "lease_lost":
            logger.warning("analysis_lease_lost")
            return AnalysisStatus.RUNNING
        if run.stop_reason == "timed_out":
            _fail_deferred(run, f"the deadline ({format_epoch(run.deadline)}) passed")
        await flush(run, force=True)
        if run.stop_reason == "shutdown":
            await sync_to_async(store.release_lease)(run.id, worker_id=run.worker_id)
            logger.info("analysis_handed_back")
            return AnalysisStatus.RUNNING
        if run.stop_reason == "cancelled":
            return await _finish(run, AnalysisStatus.CANCELLED, "cancelled by request")
        if run.stop_reason == "timed_out":
            return await _finish(
                run,
                AnalysisStatus.TIMED_OUT,
                f"the deadline ({format_epoch(run.deadline)}) passed",
            )
        return await _finish(run, *await _verdict(run))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if closing := getattr(run.provider, "aclose", None):
            await closing()


async def _until_stopped(run: AnalysisRun, work: Awaitable[Any]) -> Any:
    """Run ``work`` until it ends or the run is stopped (then cancel it and raise _Stopped)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(run.stopped.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise _Stopped(run.stop_reason)


async def _watch(run: AnalysisRun) -> None:
    """Renew the lease, notice cancel requests and the deadline."""
    renew_every = run.lease_seconds / 3
    last_renewal = run.clock.monotonic()
    while not run.stopped.is_set():
        await asyncio.sleep(CANCEL_POLL_SECONDS)
        if run.shutdown is not None and run.shutdown.is_set():
            run.stop("shutdown")
            return
        if run.clock.now() >= run.deadline:
            run.stop("timed_out")
            return
        renew = run.clock.monotonic() - last_renewal >= renew_every
        try:
            ours, cancelled = await sync_to_async(_lease_check)(run, renew=renew)
        except Exception as error:
            if not database_unavailable(error):
                raise
            continue  # the database is away: try again next time (the lease may expire)
        if renew:
            last_renewal = run.clock.monotonic()
        if not ours:
            run.stop("lease_lost")
        elif cancelled:
            run.stop("cancelled")


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached (Django's wrapped errors, or
    psycopg's own from the guard's direct connection), rather than that a statement is wrong."""
    try:
        from psycopg import InterfaceError as PsycopgInterfaceError
        from psycopg import OperationalError as PsycopgOperationalError
    except ImportError:  # SQLite only
        unavailable: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
    else:
        unavailable = (
            OperationalError,
            InterfaceError,
            PsycopgOperationalError,
            PsycopgInterfaceError,
        )
    return isinstance(error, unavailable)


def _lease_check(run: AnalysisRun, *, renew: bool) -> tuple[bool, bool]:
    if renew:
        return store.renew_lease(
            run.id, worker_id=run.worker_id, now=run.clock.now(), lease_seconds=run.lease_seconds
        )
    return True, store.cancel_requested(run.id)


# --- the work ----------------------------------------------------------------------------------


async def _analyse(run: AnalysisRun, *, resumed: bool) -> None:
    async with _workspace(run) as (root, base_sha):
        limits = ParseLimits(**settings.EIDOLON_PARSE_LIMITS)
        parsed: ParseResult = await asyncio.to_thread(parse_tree, root, limits=limits)
        selection = await changes.selection_for(
            run.analysis, root=root, base_sha=base_sha, units=parsed.units
        )
    units = parsed.units
    # Left out on purpose (suppressed, or unchanged in a change review): skipped, not counted.
    left_out = suppressions.left_out(units) | (selection.left_out(units) if selection else {})
    reviewable = [run.provider.reviews(unit) and unit.id not in left_out for unit in units]
    file_errors = [
        {"path": e.path, "code": e.code, "message": e.message, "line": e.line}
        for e in parsed.errors
    ]
    rows = await sync_to_async(store.store_units)(
        run.id,
        units=units,
        reviewable=reviewable,
        file_errors=file_errors,
        left_out=left_out,
        selection=selection,
    )
    await sync_to_async(run.analysis.refresh_from_db)()
    pending = [
        (unit, rows[unit.id][0])
        for unit, reviews in zip(units, reviewable, strict=True)
        if reviews and rows[unit.id][1] == UnitStatus.PENDING
    ]
    await events.emit(
        run.id,
        [
            (
                "analysis.resumed" if resumed else "analysis.started",
                {
                    "source": run.analysis.source,
                    "provider": run.provider.name,
                    "model": run.provider.model,
                    "models": getattr(run.provider, "models", [run.provider.model]),
                    "files": parsed.files_seen,
                    "file_errors": len(file_errors),
                    "functions_total": run.analysis.functions_total,
                    "pending": len(pending),
                },
            )
        ],
    )
    work = [UnitWork(unit=unit, code_unit_id=pk) for unit, pk in pending]
    if _calls_api(run.provider):
        await _with_context_and_cache_keys(run, work, units=units)
    queue = run.queue = UnitQueue(work)

    async def review_next() -> None:
        # A worker that puts a unit off finds it again at the back: none is left behind.
        while not run.stopped.is_set() and (item := queue.take()) is not None:
            await _review_unit(run, item)

    workers = min(run.analysis.concurrency, max(1, len(queue)))
    stop_flushing = asyncio.Event()
    flusher = asyncio.create_task(flush_periodically(run, stop=stop_flushing))
    try:
        await asyncio.gather(*(review_next() for _ in range(workers)))
    finally:
        # Stopped between two batches, never inside one: a batch cancelled while it is written
        # is still written (the call goes on in its thread), but its events are never sent.
        stop_flushing.set()
        await flusher
        await _settle_background(run)


async def _with_context_and_cache_keys(
    run: AnalysisRun, work: list[UnitWork], *, units: list[Unit]
) -> None:
    """Give each unit the context its prompt shows and its cache key per model the run takes
    results from; learn in one query which of them were reviewed before."""
    graph = build_call_graph(units)
    by_id = {unit.id: unit for unit in units}
    models = cache_models(
        run.provider, upgrade_fallback_reviews=run.analysis.upgrade_fallback_reviews
    )
    for item in work:
        item.context = context_for(item.unit, graph=graph, units_by_id=by_id)
        item.context_hash = unit_context_hash(item.unit, item.context)
        item.cache_keys = {model: _cache_key(run, model, item.context_hash) for model in models}
    run.cached_keys = await sync_to_async(store.cached_keys)(
        [key for item in work for key in item.cache_keys.values()]
    )


async def _settle_background(run: AnalysisRun) -> None:
    if run.background:
        await asyncio.gather(*run.background, return_exceptions=True)


@contextlib.asynccontextmanager
async def _workspace(run: AnalysisRun) -> AsyncIterator[tuple[Path, str | None]]:
    """The directory to parse: the local one (its roots checked again: links may have moved
    since it was submitted), or a clone removed afterwards. The source was parsed and
    validated once, when the analysis was created."""
    analysis = run.analysis
    if analysis.source_kind == "local":
        roots = None if analysis.allow_any_path else settings.EIDOLON_SOURCE_ROOTS
        yield resolve_local_directory(analysis.source, allowed_roots=roots), None
        return
    # A resumed run analyses the same commit as the first.
    async with cloned_through_guard(
        analysis.source,
        ref=analysis.commit_sha or analysis.ref or None,
        deadline=run.deadline,
        diff_base=analysis.diff_base or None,
    ) as repository:
        await sync_to_async(store.record_source)(run.id, commit_sha=repository.commit_sha)
        yield repository.path, repository.base_sha


def _cache_key(run: AnalysisRun, model: str, context_hash: str) -> str:
    return store.cache_key(
        provider=run.provider.name,
        model=model,
        prompt_version=run.provider.prompt_version,
        context_hash=context_hash,
    )


async def _review_unit(run: AnalysisRun, work: UnitWork) -> None:
    unit, code_unit_id = work.unit, work.code_unit_id
    run.current_unit = unit.qualname
    cached_by = [model for model, key in work.cache_keys.items() if key in run.cached_keys]
    for model in cached_by:
        lookup = analysis_metrics.counted_cache_get(store.cache_lookup)
        cached = await sync_to_async(lookup)(work.cache_keys[model], unit=unit)
        if cached is not None:
            record_outcome(run, code_unit_id, unit, UnitStatus.CACHED, cached, model=model)
            return
    if work.cache_keys and not cached_by and not work.deferrals:
        analysis_metrics.record_cache_miss()
    reviewed = await _review(run, work)
    if reviewed is None:
        return
    findings, model = reviewed
    if work.context_hash and model != StaticProvider.model:
        # Stored under the model that wrote it, even one whose results this run does not take
        # (fallback reviews upgraded): runs that do take them find it.
        key = _cache_key(run, model, work.context_hash)
        # Cached at once (so a crash before the batch is written does not pay for it again),
        # without holding this worker up.
        task = asyncio.create_task(
            sync_to_async(analysis_metrics.counted_cache_set(store.cache_store))(
                key,
                unit=unit,
                findings=findings,
                provider=run.provider.name,
                model=model,
                prompt_version=run.provider.prompt_version,
            )
        )
        run.background.add(task)
        task.add_done_callback(run.background.discard)
    run.queue.finished(work)
    record_outcome(run, code_unit_id, unit, UnitStatus.ANALYZED, findings, model=model)


async def _review(run: AnalysisRun, work: UnitWork) -> tuple[list[Finding], str] | None:
    """Review one unit; the guard waits out an open breaker or a full budget while the deadline
    allows (unless the analysis falls back to the offline rules while the AI is unavailable).

    Returns the findings and the model that wrote them, or None after putting the unit off (a
    transient failure: it goes to the back of the queue) or recording it as failed (a permanent
    one).
    """
    unit, code_unit_id = work.unit, work.code_unit_id

    async def record_call(record: LLMCallRecord) -> None:
        analysis_metrics.record_ai_call(record)
        run.calls.append((code_unit_id, record))
        run.tokens_used += record.input_tokens + record.output_tokens
        run.analysis.cost_usd += record.cost_usd or 0  # in memory, for the spend cap (not saved)

    request = ReviewRequest(
        unit=unit,
        context=work.context,
        deadline=run.deadline,
        analysis_tokens_used=run.tokens_used if _calls_api(run.provider) else None,
        analysis_cost_usd=run.analysis.cost_usd if _calls_api(run.provider) else None,
        wait_for_breaker=not run.analysis.fallback_to_static,
        wait_for_budget=True,
        on_wait=lambda wait: _waiting(run, wait),
        on_call=record_call,
        deferred=work.deferrals > 0,
    )
    try:
        result = await run.provider.review(request)
    except CircuitOpenError as error:
        if run.analysis.fallback_to_static:
            return (await StaticProvider().review(request)).findings, StaticProvider.model
        reason = f"not reviewed: {error}"
    except (BudgetExhaustedError, DeadlineExceededError) as error:
        reason = f"not reviewed: {error}"
    except ReviewFailed as error:
        if error.transient:
            _defer(run, work, error)
            return None
        reason = error.reason
    else:
        return result.findings, result.model
    if work.deferrals:
        reason = f"{reason} ({work.history()})"
    run.queue.finished(work)
    record_failed(run, code_unit_id, unit, reason)
    return None


def _defer(run: AnalysisRun, work: UnitWork, error: ReviewFailed) -> None:
    """Put the unit off: to the back of the queue, its next review a retry."""
    run.queue.defer(work, reason=error.reason, requests=len(error.calls))
    analysis_metrics.record_unit_deferred(error.cause)
    logger.info(
        "unit_deferred",
        unit=work.unit.id,
        deferrals=work.deferrals,
        requests=work.requests,
        reason=error.reason,
    )


def _fail_deferred(run: AnalysisRun, why: str) -> None:
    """Fail the units put off and not reviewed since, saying what happened to them (the
    others, never tried, are skipped: resuming the analysis tries both again)."""
    for work in run.queue.deferred:
        record_failed(run, work.code_unit_id, work.unit, f"not reviewed: {why} ({work.history()})")


def _waiting(run: AnalysisRun, wait: Wait) -> None:
    run.waiting = wait


# --- the end -----------------------------------------------------------------------------------


async def _verdict(run: AnalysisRun) -> tuple[str, str]:
    analysis = await sync_to_async(Analysis.objects.get)(pk=run.id)
    failed, total = analysis.functions_failed, analysis.functions_total
    if total and failed == total:
        return AnalysisStatus.FAILED, f"every one of the {total} functions failed"
    problems = []
    if failed:
        problems.append(f"{failed} of {total} functions failed")
    if analysis.file_errors:
        problems.append(f"{len(analysis.file_errors)} file(s) could not be parsed")
    if problems:
        return AnalysisStatus.COMPLETED_WITH_ERRORS, "; ".join(problems)
    return AnalysisStatus.COMPLETED, ""


async def _finish(run: AnalysisRun, status: str, reason: str) -> str:
    if status in (AnalysisStatus.CANCELLED, AnalysisStatus.TIMED_OUT):
        skip = sync_to_async(store.skip_pending_units)
        analysis_metrics.record_units_skipped(await skip(run.id, reason=f"not reviewed: {reason}"))
    summary, score = await sync_to_async(_summary)(run.id)
    usage = await sync_to_async(analysis_model_usage)(run.analysis)
    finished = await sync_to_async(store.finish)(
        run.id,
        worker_id=run.worker_id,
        status=status,
        reason=reason,
        summary=summary,
        health_score=score,
        model_usage=usage,
    )
    if not finished:
        logger.warning("analysis_finish_lost_lease", status=status)
        return status
    analysis_metrics.record_analysis_finished(run.analysis, status=status)
    await sync_to_async(store.cache_evict)()
    final = await progress(run)
    await events.emit(
        run.id,
        [
            ("analysis.progress", final),
            ("analysis.finished", {"status": status, "reason": reason, "health_score": score}),
        ],
    )
    if run.on_progress is not None:
        run.on_progress(final)
    logger.info(
        f"analysis_{status}",
        reason=reason,
        **{k: final[k] for k in ("total", "analyzed", "cached", "failed", "cards")},
    )
    return status


def _summary(analysis_id: int) -> tuple[dict[str, Any], int | None]:
    by_module, units = store.findings_by_module(analysis_id)
    if not units:
        return {}, None
    system = summarize_system(by_module, units_by_module=units)
    system["suppressed"] = suppressions.suppressed_counts(analysis_id)
    return system, system["score"]
