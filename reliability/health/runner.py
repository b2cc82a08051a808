"""The runner: rounds of checks that every probe of a process shares.

``HealthRunner`` runs all checks in parallel, at most one round per
``EIDOLON_HEALTH_CACHE_SECONDS`` per process: concurrent probes join the round in flight
(single-flight) or read the last report.

Each check runs through django-health-check's own ``HealthCheck.get_result(executor)``, which
bounds it (its ``timeout`` plus a 1 s grace: 2 s for the channel layer, 1 s for the others) and
turns what it raises into the result's error. Synchronous checks run in
``CheckThreads``, which adds what a request would have (fresh database connections) and what a
flood of probes needs: a check that hangs past its time budget is not started again while it
still runs, so a stuck database cannot pile up threads.

The process's runner is made by the ``reliability`` app when Django starts
(``ReliabilityConfig.ready``: an object, no thread, no connection) and reached through
``process_runner()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import structlog
from django.apps import apps
from django.conf import settings
from django.db import close_old_connections
from health_check.base import HealthCheck, HealthCheckResult
from health_check.exceptions import HealthCheckException, ServiceUnavailable

from reliability import metrics
from reliability.clock import SYSTEM_CLOCK, Clock, epoch_datetime
from reliability.health.checks import (
    ComponentCheck,
    build_checks,
    component_name,
    time_budget,
    unavailable,
)
from reliability.health.report import HealthReport, build_report
from reliability.models import HealthStatus

logger = structlog.get_logger(__name__)


def _run_with_fresh_connections(run: Callable[[], None]) -> None:
    """In a check thread: the connection hygiene of a request (drop broken or old connections
    before and after). An unexpected error becomes the cause of a public one, so that staff
    still see what it was: ``get_result`` would report it as a bare "unknown error"."""
    close_old_connections()
    try:
        run()
    except HealthCheckException:
        raise
    except Exception as error:
        raise unavailable("the check failed unexpectedly") from error
    finally:
        close_old_connections()


class CheckThreads:
    """The threads synchronous checks run in: at most one run per component at a time.

    A later round's check of a component whose run is still going joins that run (and takes
    its summary) instead of starting another. A run is judged by its own duration: one that
    succeeds, but later than its check's time budget after it started, is unhealthy for those
    who joined it too (else a component that answers in 1.5 times its budget would be healthy
    every other round). Each caller gets a future of its own, already running, so a round that
    stops waiting (``get_result``'s timeout cancels the future it waits on) never cancels the
    run the others share.
    """

    def __init__(self, *, max_threads: int) -> None:
        self.max_threads = max_threads
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._runs: dict[str, tuple[HealthCheck, Future, float]] = {}

    def executor_for(self, check: HealthCheck) -> Executor:
        return _ComponentExecutor(self, check)

    def start_or_join(self, check: HealthCheck, run: Callable[[], None]) -> Future:
        key = component_name(check)
        with self._lock:
            if self._pool is None:  # threads start with the first round, not before
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_threads, thread_name_prefix="health-check"
                )
            running = self._runs.get(key)
            if running is None or running[1].done():
                future = self._pool.submit(_run_with_fresh_connections, run)
                running = (check, future, time.monotonic())
                self._runs[key] = running
        ran, shared, started = running
        mine: Future = Future()
        mine.set_running_or_notify_cancel()

        def settle(done: Future) -> None:
            took, budget = time.monotonic() - started, time_budget(ran).total_seconds()
            if ran is not check and isinstance(check, ComponentCheck):
                check.summary = ran.summary
            if (error := done.exception()) is not None:
                mine.set_exception(error)
            elif took > budget:
                late = f"answered only after {took:.1f} s (> {budget:g} s)"
                mine.set_exception(unavailable(late))
            else:
                mine.set_result(None)

        shared.add_done_callback(settle)
        return mine


class _ComponentExecutor(Executor):
    """What ``get_result`` runs one check's ``run`` with: its component's turn in the threads."""

    def __init__(self, threads: CheckThreads, check: HealthCheck) -> None:
        self.threads = threads
        self.check = check

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self.threads.start_or_join(self.check, functools.partial(fn, *args, **kwargs))


def _in_our_words(result: HealthCheckResult) -> HealthCheckResult:
    """``get_result``'s own timeout error says "Timed out after <timeout> seconds", which is 1 s
    less than it waited; ours names the time the round actually gave the check."""
    error, check = result.error, result.check
    said_by_get_result = f"Timed out after {check.timeout.total_seconds():g} seconds"
    if not isinstance(error, ServiceUnavailable) or error.message != said_by_get_result:
        return result
    waited = time_budget(check).total_seconds()
    return dataclasses.replace(result, error=unavailable(f"no answer within {waited:g} s"))


class HealthRunner:
    """Runs rounds of checks for one process; probes share rounds (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        checks_factory: Callable[[], Sequence[HealthCheck]] | None = None,
        max_threads: int = 8,
    ) -> None:
        self.clock = clock
        self.checks_factory = checks_factory or (lambda: build_checks(clock=clock))
        self.rounds = 0
        self._threads = CheckThreads(max_threads=max_threads)
        self._cached: tuple[float, HealthReport] | None = None
        self._round_in_flight: asyncio.Task | None = None
        self._last_statuses: dict[str, str] = {}

    async def report(self, *, max_age: float | None = None) -> HealthReport:
        """A report no older than ``max_age`` seconds (default ``EIDOLON_HEALTH_CACHE_SECONDS``).

        A fresh enough report is returned at once; otherwise the caller joins the round in
        flight, or starts one. A round lasts at most the slowest check's time budget.
        """
        if max_age is None:
            max_age = settings.EIDOLON_HEALTH_CACHE_SECONDS
        cached = self._cached
        if cached is not None and self.clock.monotonic() - cached[0] < max_age:
            return cached[1]
        loop = asyncio.get_running_loop()
        task = self._round_in_flight
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._round())
            self._round_in_flight = task
        # Shielded: a probe that gives up (client gone) does not cancel the others' round.
        return await asyncio.shield(task)

    async def _round(self) -> HealthReport:
        started = time.perf_counter()
        results = await asyncio.gather(*(self._result(check) for check in self.checks_factory()))
        report = build_report(
            results=results,
            checked_at=epoch_datetime(self.clock.now()),
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        self.rounds += 1
        self._cached = (self.clock.monotonic(), report)
        self._observe(report)
        return report

    async def _result(self, check: HealthCheck) -> HealthCheckResult:
        return _in_our_words(await check.get_result(self._threads.executor_for(check)))

    def _observe(self, report: HealthReport) -> None:
        metrics.health_check_rounds.inc()
        for component in report.components.values():
            metrics.health_check_duration.labels(component=component.name).observe(
                component.latency_ms / 1000
            )
            for status in (HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY):
                metrics.health_status.labels(component=component.name, status=status).set(
                    1.0 if component.status == status else 0.0
                )
            previous = self._last_statuses.get(component.name)
            self._last_statuses[component.name] = component.status
            if previous == component.status or (previous is None and component.healthy):
                continue
            if component.healthy:
                logger.info("health_check_recovered", component=component.name, previous=previous)
            else:
                logger.warning(
                    "health_check_failed",
                    component=component.name,
                    status=component.status,
                    critical=component.critical,
                    message=component.message,
                    detail=component.detail,
                )


def process_runner() -> HealthRunner:
    """This process's runner, shared by its probes (and, in the monitor, by its rounds)."""
    return apps.get_app_config("reliability").health_runner
