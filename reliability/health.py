"""Health: checks written once, a runner that probes share, and the history the monitor keeps.

Checks are django-health-check 4 ``HealthCheck`` dataclasses whose ``run()`` raises
``ServiceUnavailable`` (the component is unhealthy) or ``ServiceWarning`` (degraded). Their
messages are written for anyone to read: no exception text, host names, paths or secrets; the
underlying error travels as the exception's ``__cause__`` (and an optional ``detail``), which only
staff see, with secrets redacted.

Which component does what to the service:

==============  ==================================================  ======================
component       checks                                              when it fails
==============  ==================================================  ======================
database        ``SELECT 1`` within 2 s; every migration applied    unhealthy: not ready
disk            the data volume: used % and free GB                 unhealthy: not ready
channel_layer   send / receive round trip (shared Redis layer)      unhealthy: not ready
cache           set / get / delete round trip                       degraded
workers         a task worker's heartbeat within N seconds          degraded (a warning)
ai_api          breaker state, age of the last successful call      degraded (a warning)
==============  ==================================================  ======================

``HealthRunner`` runs all checks in parallel, each under its own timeout, at most one round per
``EIDOLON_HEALTH_CACHE_SECONDS`` per process: concurrent probes join the round in flight
(single-flight) or read the last report. A synchronous check that hangs past its timeout is not
started again while it is still running, so a stuck database cannot pile up threads.

The monitor (``manage.py health_monitor``) runs a round every ``EIDOLON_HEALTH_MONITOR_INTERVAL``
seconds, records status changes (``HealthTransition``) and samples (``HealthSample``), keeps the
rounds it could not write (the database was down) and writes them when it can, and prunes old
samples. Uptime is computed exactly from the transitions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import inspect
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.db import Error as DBError
from django.db import IntegrityError, close_old_connections, connections, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from health_check.base import HealthCheck, HealthCheckResult
from health_check.exceptions import HealthCheckException, ServiceUnavailable, ServiceWarning

from reliability import metrics
from reliability.clock import SYSTEM_CLOCK, Clock, epoch_datetime
from reliability.exceptions import format_epoch
from reliability.models import (
    BreakerState,
    CircuitBreaker,
    HealthComponentState,
    HealthSample,
    HealthStatus,
    HealthTransition,
    WorkerHeartbeat,
)
from reliability.redaction import redact_text

logger = structlog.get_logger(__name__)

DATABASE = "database"
CACHE = "cache"
DISK = "disk"
CHANNEL_LAYER = "channel_layer"
WORKERS = "workers"
AI_API = "ai_api"
OVERALL = "overall"

GB = 1024**3
UP_STATUSES = frozenset({HealthStatus.HEALTHY, HealthStatus.DEGRADED})
DOWN_STATUSES = frozenset({HealthStatus.UNHEALTHY})
UPTIME_WINDOWS = (dt.timedelta(hours=1), dt.timedelta(hours=24), dt.timedelta(days=7))
_MAX_DETAIL_CHARS = 2000
_MICROSECOND = dt.timedelta(microseconds=1)


# --- errors: public message, staff-only detail -------------------------------------------------


def unavailable(message: str, *, detail: str = "") -> ServiceUnavailable:
    """``ServiceUnavailable`` with a public ``message`` and an optional staff-only ``detail``."""
    error = ServiceUnavailable(message)
    error.detail = detail  # type: ignore[attr-defined]
    return error


def warning(message: str, *, detail: str = "") -> ServiceWarning:
    error = ServiceWarning(message)
    error.detail = detail  # type: ignore[attr-defined]
    return error


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


def public_message(error: HealthCheckException) -> str:
    return str(error.message)


# --- checks ------------------------------------------------------------------------------------


@dataclasses.dataclass
class ComponentCheck(HealthCheck):
    """A check of one named component; ``critical`` ones gate readiness, the others degrade.

    ``run()`` sets ``summary`` (a public one-line result) when the component is healthy.
    """

    component: ClassVar[str] = ""
    critical: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def gates_readiness(self) -> bool:
        return self.critical

    def pretty_status(self) -> str:
        return self.summary or "OK"


_migration_lock = threading.Lock()
_expected_migrations: dict[tuple[str, str], tuple[tuple[str, str], ...]] | None = None


def expected_migrations() -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    """The migrations on disk (read once per process) and, for squashed ones, what they replace."""
    global _expected_migrations
    with _migration_lock:
        if _expected_migrations is None:
            loader = MigrationLoader(None, ignore_no_migrations=True)
            _expected_migrations = {
                key: tuple(tuple(item) for item in (loader.graph.nodes[key].replaces or ()))
                for key in loader.graph.nodes
            }
        return _expected_migrations


def pending_migrations(*, applied: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    applied = set(applied)
    return sorted(
        key
        for key, replaces in expected_migrations().items()
        if key not in applied and not (replaces and all(item in applied for item in replaces))
    )


@dataclasses.dataclass
class DatabaseCheck(ComponentCheck):
    """``SELECT 1`` answers within the timeout and every migration on disk is applied."""

    component: ClassVar[str] = DATABASE
    critical: ClassVar[bool] = True

    alias: str = "default"
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=2), repr=False)

    def run(self) -> None:
        connection = connections[self.alias]
        started = time.perf_counter()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                row = cursor.fetchone()
            select_ms = (time.perf_counter() - started) * 1000
            applied = MigrationRecorder(connection).applied_migrations()
        except DBError as error:
            raise unavailable("the database does not answer") from error
        if row is None or row[0] != 1:
            raise unavailable("SELECT 1 returned an unexpected result", detail=repr(row))
        pending = pending_migrations(applied=applied)
        if pending:
            raise unavailable(
                f"{len(pending)} migration(s) not applied: run `manage.py migrate`",
                detail="pending: " + ", ".join(f"{app}.{name}" for app, name in pending[:20]),
            )
        self.summary = f"SELECT 1 in {select_ms:.1f} ms; migrations applied"


@dataclasses.dataclass
class CacheCheck(ComponentCheck):
    """A set / get / delete round trip through the cache."""

    component: ClassVar[str] = CACHE

    alias: str = "default"
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=1), repr=False)

    def run(self) -> None:
        key = f"eidolon-health:{uuid.uuid4().hex}"
        value = uuid.uuid4().hex
        try:
            cache = caches[self.alias]
            cache.set(key, value, timeout=30)
            read = cache.get(key)
            cache.delete(key)
            after_delete = cache.get(key)
        except Exception as error:
            raise unavailable("the cache does not answer") from error
        if read != value:
            raise unavailable("the cache did not return what was stored")
        if after_delete is not None:
            raise unavailable("the cache did not delete a key")
        self.summary = "set / get / delete round trip"


class DiskUsage(NamedTuple):
    """Bytes, as ``shutil.disk_usage`` returns them (``free``: available to the service)."""

    total: int
    used: int
    free: int


def disk_used_percent(usage: DiskUsage) -> float:
    """Used share of the space the service can use, as ``df`` reports it."""
    usable = usage.used + usage.free
    return 100.0 if usable <= 0 else 100.0 * usage.used / usable


def existing_ancestor(path: str) -> str:
    """``path``, or the nearest directory above it that exists: a data directory not created
    yet will live on that volume."""
    candidate = Path(path)
    while not candidate.exists() and candidate.parent != candidate:
        candidate = candidate.parent
    return str(candidate)


def _disk_path() -> str:
    return str(settings.EIDOLON_HEALTH_DISK_PATH)


def _disk_max_used_percent() -> float:
    return float(settings.EIDOLON_HEALTH_DISK_MAX_USED_PERCENT)


def _disk_min_free_gb() -> float:
    return float(settings.EIDOLON_HEALTH_DISK_MIN_FREE_GB)


@dataclasses.dataclass
class DiskCheck(ComponentCheck):
    """The volume that holds the data: unhealthy at >= max % used or <= min GB free.

    ``usage`` reads the volume (``shutil.disk_usage`` by default); tests inject a reading.
    """

    component: ClassVar[str] = DISK
    critical: ClassVar[bool] = True

    path: str = dataclasses.field(default_factory=_disk_path, repr=False)
    max_used_percent: float = dataclasses.field(default_factory=_disk_max_used_percent, repr=False)
    min_free_gb: float = dataclasses.field(default_factory=_disk_min_free_gb, repr=False)
    usage: Callable[[str], DiskUsage] = dataclasses.field(default=shutil.disk_usage, repr=False)
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=1), repr=False)

    def run(self) -> None:
        try:
            usage = self.usage(existing_ancestor(self.path))
        except OSError as error:
            raise unavailable(
                "the data volume's usage could not be read", detail=f"path {self.path}"
            ) from error
        used_percent = disk_used_percent(usage)
        free_gb = usage.free / GB
        reading = f"{used_percent:.1f} % used, {free_gb:.2f} GB free"
        if used_percent >= self.max_used_percent or free_gb <= self.min_free_gb:
            raise unavailable(
                f"data volume nearly full: {reading} (limits: {self.max_used_percent:g} % used, "
                f"{self.min_free_gb:g} GB free)",
                detail=f"volume of {self.path}",
            )
        self.summary = reading


def is_shared_channel_layer(alias: str = "default") -> bool:
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    layer = get_channel_layer(alias)
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)


@dataclasses.dataclass
class ChannelLayerCheck(ComponentCheck):
    """A send / receive round trip through the shared (Redis) channel layer.

    The in-memory layer lives inside this process; there is nothing to check, and it does not
    gate readiness.
    """

    component: ClassVar[str] = CHANNEL_LAYER
    critical: ClassVar[bool] = True

    alias: str = "default"
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=2), repr=False)

    def gates_readiness(self) -> bool:
        return is_shared_channel_layer(self.alias)

    async def run(self) -> None:
        from channels.layers import get_channel_layer

        if not is_shared_channel_layer(self.alias):
            self.summary = "in-memory layer (this process only): not checked"
            return
        layer = get_channel_layer(self.alias)
        channel = f"eidolon-health.{uuid.uuid4().hex}"
        nonce = uuid.uuid4().hex
        try:
            await layer.send(channel, {"type": "health.ping", "nonce": nonce})
            message = await layer.receive(channel)
        except Exception as error:
            raise unavailable("the shared channel layer does not answer") from error
        if message.get("nonce") != nonce:
            raise unavailable("the channel layer returned another message")
        self.summary = "send / receive round trip"


def _worker_stale_seconds() -> float:
    return float(settings.EIDOLON_HEALTH_WORKER_STALE_SECONDS)


@dataclasses.dataclass
class WorkerCheck(ComponentCheck):
    """At least one task worker sent a heartbeat within ``stale_seconds``; none is a warning:
    analyses wait in the queue, everything else works."""

    component: ClassVar[str] = WORKERS

    stale_seconds: float = dataclasses.field(default_factory=_worker_stale_seconds, repr=False)
    clock: Clock = dataclasses.field(default=SYSTEM_CLOCK, repr=False)
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=1), repr=False)

    def run(self) -> None:
        now = self.clock.now()
        try:
            alive = list(
                WorkerHeartbeat.objects.filter(
                    stopped_at__isnull=True,
                    last_seen_at__gte=epoch_datetime(now - self.stale_seconds),
                ).values_list("last_seen_at", "host", "pid")[:100]
            )
        except DBError as error:
            raise unavailable("worker heartbeats could not be read") from error
        if not alive:
            raise warning(
                f"no task worker has sent a heartbeat in the last {self.stale_seconds:g} s: "
                "analyses wait in the queue"
            )
        newest = max(seen for seen, _host, _pid in alive)
        age = max(0.0, now - newest.timestamp())
        self.summary = f"{len(alive)} worker(s) alive; newest heartbeat {age:.0f} s ago"


def _ai_stale_seconds() -> float:
    return float(settings.EIDOLON_HEALTH_AI_STALE_SECONDS)


AI_STILL_WORKS = "pages, results and the static reviewer still work"


@dataclasses.dataclass
class AIAPICheck(ComponentCheck):
    """The AI API, from the shared breaker and the age of the last successful call.

    No call is made. An open (or half-open, or forced-open) breaker degrades the service. While
    calls are failing, no success for ``stale_seconds`` degrades it too; no calls at all does not
    (an idle service is not a sick one), and failures from before the breaker last changed state
    (an operator's reset, a recovery) no longer count.
    """

    component: ClassVar[str] = AI_API

    breaker: str = "anthropic"
    stale_seconds: float = dataclasses.field(default_factory=_ai_stale_seconds, repr=False)
    clock: Clock = dataclasses.field(default=SYSTEM_CLOCK, repr=False)
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=1), repr=False)

    def run(self) -> None:
        try:
            row = (
                CircuitBreaker.objects.filter(name=self.breaker)
                .values(
                    "state",
                    "state_changed_at",
                    "recovery_timeout",
                    "last_success_at",
                    "last_failure_at",
                )
                .first()
            )
        except DBError as error:
            raise unavailable("the AI breaker state could not be read") from error
        if row is None:
            self.summary = "no AI call made yet"
            return
        now = self.clock.now()
        state = row["state"]
        if state == BreakerState.OPEN:
            retry_at = format_epoch(row["state_changed_at"] + row["recovery_timeout"])
            raise warning(f"AI breaker open until {retry_at}: AI reviews paused; {AI_STILL_WORKS}")
        if state == BreakerState.HALF_OPEN:
            raise warning(
                f"AI breaker half-open: probing whether the API recovered; {AI_STILL_WORKS}"
            )
        if state == BreakerState.FORCED_OPEN:
            raise warning(f"AI breaker forced open by an operator; {AI_STILL_WORKS}")
        last_success, last_failure = row["last_success_at"], row["last_failure_at"]
        failing = (
            last_failure is not None
            and last_failure >= row["state_changed_at"]
            and now - last_failure <= self.stale_seconds
            and (last_success is None or last_success < last_failure)
        )
        if failing and (last_success is None or now - last_success > self.stale_seconds):
            raise warning(
                f"AI calls are failing and none succeeded in the last {self.stale_seconds:g} s"
            )
        mode = "disabled by an operator" if state == BreakerState.DISABLED else state
        if last_success is None:
            self.summary = f"breaker {mode}; no successful call yet"
        else:
            self.summary = f"breaker {mode}; last successful call {now - last_success:.0f} s ago"


def build_checks(*, clock: Clock = SYSTEM_CLOCK) -> list[ComponentCheck]:
    """The checks of a round, configured from settings as they are now."""
    return [
        DatabaseCheck(),
        DiskCheck(),
        ChannelLayerCheck(),
        CacheCheck(),
        WorkerCheck(clock=clock),
        AIAPICheck(clock=clock),
    ]


# --- aggregation -------------------------------------------------------------------------------


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


def build_report(
    *, results: Sequence[HealthCheckResult], checked_at: dt.datetime, duration_ms: float
) -> HealthReport:
    components = {}
    for result in results:
        check = result.check
        name = getattr(check, "component", "") or type(check).__name__
        error = result.error
        status = component_status(error)
        components[name] = ComponentReport(
            name=name,
            status=status,
            critical=check.gates_readiness() if isinstance(check, ComponentCheck) else True,
            latency_ms=round(result.time_taken * 1000, 3),
            message=public_message(error) if error is not None else check.pretty_status(),
            detail=error_detail(error),
            checked_at=checked_at,
            result=result,
        )
    return HealthReport(
        status=overall_status(components.values()),
        checked_at=checked_at,
        duration_ms=round(duration_ms, 3),
        components=components,
    )


# --- the runner: parallel checks, own timeouts, per-process cache, single flight ---------------


def _run_sync_check(check: ComponentCheck) -> ComponentCheck:
    """In a worker thread: the same connection hygiene as a request (drop broken or old
    connections before and after)."""
    close_old_connections()
    try:
        check.run()
    finally:
        close_old_connections()
    return check


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
        self.max_threads = max_threads
        self.rounds = 0
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._sync_in_flight: dict[str, concurrent.futures.Future] = {}
        self._cached: tuple[float, HealthReport] | None = None
        self._round_in_flight: asyncio.Task | None = None
        self._last_statuses: dict[str, str] = {}

    def reset(self) -> None:
        """Forget the cached report and per-process state (tests)."""
        with self._lock:
            self._cached = None
            self._round_in_flight = None
            self._last_statuses = {}
            self.rounds = 0

    async def report(self, *, max_age: float | None = None) -> HealthReport:
        """A report no older than ``max_age`` seconds (default ``EIDOLON_HEALTH_CACHE_SECONDS``).

        A fresh enough report is returned at once; otherwise the caller joins the round in
        flight, or starts one. A round lasts at most the slowest check's timeout.
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
        checks = list(self.checks_factory())
        results = await asyncio.gather(*(self._run_check(check) for check in checks))
        report = build_report(
            results=results,
            checked_at=epoch_datetime(self.clock.now()),
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        self.rounds += 1
        self._cached = (self.clock.monotonic(), report)
        self._observe(report)
        return report

    def _get_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.max_threads, thread_name_prefix="health-check"
                )
            return self._executor

    def _submit(self, check: ComponentCheck) -> concurrent.futures.Future:
        key = getattr(check, "component", "") or type(check).__name__
        executor = self._get_executor()
        with self._lock:
            future = self._sync_in_flight.get(key)
            if future is None or future.done():
                future = executor.submit(_run_sync_check, check)
                self._sync_in_flight[key] = future
            return future

    async def _run_check(self, check: HealthCheck) -> HealthCheckResult:
        timeout = check.timeout.total_seconds()
        started = time.perf_counter()
        error: HealthCheckException | None = None
        try:
            if inspect.iscoroutinefunction(check.run):
                await asyncio.wait_for(check.run(), timeout)
            else:
                future = asyncio.wrap_future(self._submit(check))
                ran = await asyncio.wait_for(asyncio.shield(future), timeout)
                if ran is not check:  # joined a run that was still going from an earlier round
                    check.summary = ran.summary
        except HealthCheckException as caught:
            error = caught
        except TimeoutError:
            error = unavailable(f"no answer within {timeout:g} s")
        except asyncio.CancelledError:
            raise
        except Exception as caught:
            logger.exception("health_check_crashed", check=type(check).__name__)
            error = unavailable("the check failed unexpectedly")
            error.__cause__ = caught
        return HealthCheckResult(check=check, error=error, time_taken=time.perf_counter() - started)

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


RUNNER = HealthRunner()


# --- worker heartbeats -------------------------------------------------------------------------


def worker_heartbeat(*, worker_id: str, host: str, pid: int, clock: Clock = SYSTEM_CLOCK) -> None:
    """Say that worker ``worker_id`` is alive (one UPDATE; an INSERT the first time)."""
    now = epoch_datetime(clock.now())
    updated = WorkerHeartbeat.objects.filter(worker_id=worker_id).update(
        last_seen_at=now, host=host, pid=pid, stopped_at=None
    )
    if updated:
        return
    try:
        with transaction.atomic():
            WorkerHeartbeat.objects.create(
                worker_id=worker_id, host=host, pid=pid, started_at=now, last_seen_at=now
            )
    except IntegrityError:  # raced with ourselves after a reconnect: the row exists now
        WorkerHeartbeat.objects.filter(worker_id=worker_id).update(last_seen_at=now)


def worker_stopped(*, worker_id: str, clock: Clock = SYSTEM_CLOCK) -> None:
    now = epoch_datetime(clock.now())
    WorkerHeartbeat.objects.filter(worker_id=worker_id).update(stopped_at=now, last_seen_at=now)


# --- history: transitions, samples ---------------------------------------------------------------


STALE_MONITOR_MESSAGE = "no observations: the health monitor was not running"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    name: str
    status: str
    critical: bool
    message: str
    detail: str
    latency_ms: float | None


def observations_of(report: HealthReport) -> list[Observation]:
    observed = [
        Observation(
            name=c.name,
            status=c.status,
            critical=c.critical,
            message=c.message,
            detail=c.detail,
            latency_ms=c.latency_ms,
        )
        for c in report.components.values()
    ]
    observed.append(
        Observation(
            name=OVERALL,
            status=report.status,
            critical=True,
            message=report.summary(),
            detail="",
            latency_ms=report.duration_ms,
        )
    )
    return observed


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
            previous = state.status
            if (
                stale_after is not None
                and state.checked_at is not None
                and previous != HealthStatus.UNKNOWN
                and at - state.checked_at > stale_after
            ):
                transitions.append(
                    HealthTransition(
                        component=state,
                        from_status=previous,
                        to_status=HealthStatus.UNKNOWN,
                        message=STALE_MONITOR_MESSAGE,
                        created_at=state.checked_at,
                    )
                )
                previous = HealthStatus.UNKNOWN
            if seen.status != previous:
                transitions.append(
                    HealthTransition(
                        component=state,
                        from_status=previous,
                        to_status=seen.status,
                        message=seen.message,
                        detail=seen.detail,
                        created_at=at,
                    )
                )
                state.since = at
            state.status = seen.status
            state.critical = seen.critical
            state.message = seen.message
            state.detail = seen.detail
            state.latency_ms = seen.latency_ms
            state.checked_at = at
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


# --- uptime -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Segment:
    start: dt.datetime
    end: dt.datetime
    status: str

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start


def status_segments(
    *,
    changes: Sequence[tuple[dt.datetime, str]],
    start: dt.datetime,
    end: dt.datetime,
    initial: str = HealthStatus.UNKNOWN,
    known_until: dt.datetime | None = None,
) -> list[Segment]:
    """The component's status over ``[start, end)`` as contiguous segments.

    ``changes``: ``(time, new status)`` in time order; ``initial``: the status before the
    first change; after ``known_until`` (the last observation plus the staleness allowance)
    the status is unknown.
    """
    segments: list[Segment] = []
    status, cursor = initial, start
    for at, new_status in changes:
        if at <= start:
            status = new_status
            continue
        if at >= end:
            break
        segments.append(Segment(cursor, at, status))
        status, cursor = new_status, at
    segments.append(Segment(cursor, end, status))
    if known_until is not None and known_until < end:
        clipped = []
        for segment in segments:
            if segment.end <= known_until:
                clipped.append(segment)
            elif segment.start >= known_until:
                clipped.append(Segment(segment.start, segment.end, HealthStatus.UNKNOWN))
            else:
                clipped.append(Segment(segment.start, known_until, segment.status))
                clipped.append(Segment(known_until, segment.end, HealthStatus.UNKNOWN))
        segments = clipped
    merged: list[Segment] = []
    for segment in segments:
        if segment.end <= segment.start:
            continue
        if merged and merged[-1].status == segment.status:
            merged[-1] = Segment(merged[-1].start, segment.end, segment.status)
        else:
            merged.append(segment)
    return merged


def clip_segments(
    segments: Sequence[Segment], *, start: dt.datetime, end: dt.datetime
) -> list[Segment]:
    return [
        Segment(max(s.start, start), min(s.end, end), s.status)
        for s in segments
        if s.end > start and s.start < end
    ]


def uptime_percent(segments: Sequence[Segment]) -> float | None:
    """Time up (healthy or degraded) over time known (up or unhealthy), in percent.

    Unknown time (no observations) counts neither way; ``None`` when nothing is known.
    """
    up = sum((s.duration for s in segments if s.status in UP_STATUSES), dt.timedelta())
    down = sum((s.duration for s in segments if s.status in DOWN_STATUSES), dt.timedelta())
    known = up + down
    if known <= dt.timedelta():
        return None
    # Exact rational arithmetic on microseconds, rounded once.
    return float(100 * Fraction(up // _MICROSECOND, known // _MICROSECOND))


def monitor_stale_after(interval: float | None = None) -> dt.timedelta:
    """How long without an observation before a component's status is unknown: 3 rounds."""
    if interval is None:
        interval = settings.EIDOLON_HEALTH_MONITOR_INTERVAL
    return dt.timedelta(seconds=3 * interval)


def component_segments(
    *,
    component: HealthComponentState,
    start: dt.datetime,
    end: dt.datetime,
    stale_after: dt.timedelta | None = None,
) -> list[Segment]:
    """The recorded status of ``component`` over ``[start, end)`` (two queries)."""
    transitions = HealthTransition.objects.filter(component=component)
    initial = (
        transitions.filter(created_at__lte=start)
        .order_by("-created_at", "-id")
        .values_list("to_status", flat=True)
        .first()
    )
    changes = list(
        transitions.filter(created_at__gt=start, created_at__lt=end)
        .order_by("created_at", "id")
        .values_list("created_at", "to_status")
    )
    stale_after = monitor_stale_after() if stale_after is None else stale_after
    known_until = component.checked_at + stale_after if component.checked_at else start
    return status_segments(
        changes=changes,
        start=start,
        end=end,
        initial=initial or HealthStatus.UNKNOWN,
        known_until=known_until,
    )


def component_uptime(
    *,
    component: HealthComponentState,
    now: dt.datetime,
    windows: Sequence[dt.timedelta] = UPTIME_WINDOWS,
    stale_after: dt.timedelta | None = None,
) -> dict[dt.timedelta, float | None]:
    """Uptime % of ``component`` over each window ending ``now``."""
    segments = component_segments(
        component=component, start=now - max(windows), end=now, stale_after=stale_after
    )
    return {
        window: uptime_percent(clip_segments(segments, start=now - window, end=now))
        for window in windows
    }


# --- pruning -------------------------------------------------------------------------------------


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


# --- the monitor loop ----------------------------------------------------------------------------


async def run_health_monitor(
    *,
    interval: float,
    stop: asyncio.Event,
    sample_retention: dt.timedelta,
    transition_retention: dt.timedelta,
    runner: HealthRunner | None = None,
    recorder: HealthRecorder | None = None,
    clock: Clock = SYSTEM_CLOCK,
    max_rounds: int | None = None,
) -> int:
    """Every ``interval`` seconds: a fresh round, recorded, then pruning; until ``stop`` is set
    (the round in progress finishes first). Returns the number of rounds."""
    runner = runner or RUNNER
    recorder = recorder or HealthRecorder(stale_after=monitor_stale_after(interval))
    rounds = 0
    while not stop.is_set():
        started = time.monotonic()
        report = await runner.report(max_age=0)
        await sync_to_async(recorder.record)(report)
        if not recorder.pending:
            try:
                await sync_to_async(prune_health_history)(
                    now=epoch_datetime(clock.now()),
                    sample_retention=sample_retention,
                    transition_retention=transition_retention,
                )
            except DBError as error:
                logger.warning("health_prune_failed", error=redact_text(str(error)))
        rounds += 1
        if max_rounds is not None and rounds >= max_rounds:
            break
        remaining = interval - (time.monotonic() - started)
        if remaining > 0:
            try:
                await asyncio.wait_for(stop.wait(), remaining)
            except TimeoutError:
                pass
    return rounds
