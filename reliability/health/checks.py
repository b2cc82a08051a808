"""The health checks: one per component, written once, served by every health URL.

Checks are django-health-check 4 ``HealthCheck`` dataclasses whose ``run()`` raises
``ServiceUnavailable`` (the component is unhealthy) or ``ServiceWarning`` (degraded). Their
messages are written for anyone to read: no exception text, host names, paths or secrets; the
underlying error travels as the exception's ``__cause__`` (and an optional ``detail``), which only
staff see, with secrets redacted (``reliability.health.report.error_detail``).

Which component does what to the service:

==============  ==================================================  ======================
component       checks                                              when it fails
==============  ==================================================  ======================
database        ``SELECT 1`` within 1 s; every migration applied    unhealthy: not ready
                (slower than 0.5 s: degraded, still ready)
disk            the data volume: used % and free GB                 unhealthy: not ready
channel_layer   send / receive round trip (shared Redis layer)      unhealthy: not ready
cache           set / get / delete round trip                       degraded
workers         a task worker's heartbeat within N seconds          degraded (a warning)
ai_api          per-model breakers: which model serves; age of      degraded (a warning)
                each model's last successful call
==============  ==================================================  ======================
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from django.conf import settings
from django.core.cache import caches
from django.db import Error as DBError
from django.db import connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from reliability.clock import SYSTEM_CLOCK, Clock, epoch_datetime
from reliability.exceptions import format_epoch
from reliability.models import BreakerState, WorkerHeartbeat
from reliability.serving import MemberState, family_serving

DATABASE = "database"
CACHE = "cache"
DISK = "disk"
CHANNEL_LAYER = "channel_layer"
WORKERS = "workers"
AI_API = "ai_api"
OVERALL = "overall"

GB = 1024**3
# ``HealthCheck.get_result`` waits a check's ``timeout`` and then this much more (for the check's
# own client timeout to report first) before it gives up on it.
GET_RESULT_GRACE = dt.timedelta(seconds=1)


def unavailable(message: str, *, detail: str = "") -> ServiceUnavailable:
    """``ServiceUnavailable`` with a public ``message`` and an optional staff-only ``detail``."""
    error = ServiceUnavailable(message)
    error.detail = detail  # type: ignore[attr-defined]
    return error


def warning(message: str, *, detail: str = "") -> ServiceWarning:
    error = ServiceWarning(message)
    error.detail = detail  # type: ignore[attr-defined]
    return error


def component_name(check: HealthCheck) -> str:
    return getattr(check, "component", "") or type(check).__name__


def time_budget(check: HealthCheck) -> dt.timedelta:
    """How long a round waits for ``check``: its ``timeout`` and get_result's grace."""
    return check.timeout + GET_RESULT_GRACE


def from_settings(name: str, convert: Callable[[Any], Any] = float) -> Any:
    """A check's field that defaults to setting ``name`` as it is when the check is made, and
    stays out of its ``repr`` (which django-health-check shows to anyone)."""
    return dataclasses.field(default_factory=lambda: convert(getattr(settings, name)), repr=False)


@dataclasses.dataclass
class ComponentCheck(HealthCheck):
    """A check of one named component; ``critical`` ones gate readiness, the others degrade.

    ``run()`` sets ``summary`` (a public one-line result) when the component is healthy.

    ``timeout`` is django-health-check's: ``get_result`` waits that long and then its 1 s grace
    (``GET_RESULT_GRACE``) before it gives up on the check. The default of 0 s gives a check 1 s
    in all; the database and the channel layer declare 1 s, 2 s in all (the readiness bound the
    README promises). Not a dataclass field here: it would become every check's first parameter.
    The database declares 0 s (1 s in all): with the round's 1 s cache, a database that stops
    answering makes the service unready within 2 s, 2.5 s with a poll interval and overheads.
    """

    component: ClassVar[str] = ""
    critical: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    timeout = dt.timedelta(0)

    def gates_readiness(self) -> bool:
        return self.critical

    def pretty_status(self) -> str:
        return self.summary or "OK"


@functools.cache
def expected_migrations() -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    """The migrations on disk (read once per process) and, for squashed ones, what they replace."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return {
        key: tuple(tuple(item) for item in (loader.graph.nodes[key].replaces or ()))
        for key in loader.graph.nodes
    }


def pending_migrations(*, applied: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    applied = set(applied)
    return sorted(
        key
        for key, replaces in expected_migrations().items()
        if key not in applied and not (replaces and all(item in applied for item in replaces))
    )


@dataclasses.dataclass
class DatabaseCheck(ComponentCheck):
    """``SELECT 1`` answers within the time budget (1 s) and every migration on disk is applied;
    an answer slower than ``slow_seconds`` degrades the service (it stays ready).

    A partition (no reset, no answer) is "no answer within 1 s"; a database that answers, but
    later than 1 s, is unhealthy every round, not now and then: a round that joins a run still
    going takes its result only if the run as a whole kept within the budget (``CheckThreads``).
    """

    component: ClassVar[str] = DATABASE
    critical: ClassVar[bool] = True

    alias: str = "default"
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(0), repr=False)
    slow_seconds: float = dataclasses.field(default=0.5, repr=False)

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
        took = time.perf_counter() - started
        if took > self.slow_seconds:
            raise warning(
                f"the database is slow: it answered in {took:.1f} s "
                f"(slow above {self.slow_seconds:g} s, unready above "
                f"{time_budget(self).total_seconds():g} s)"
            )
        self.summary = f"SELECT 1 in {select_ms:.1f} ms; migrations applied"


@dataclasses.dataclass
class CacheCheck(ComponentCheck):
    """A set / get / delete round trip through the cache."""

    component: ClassVar[str] = CACHE

    alias: str = "default"

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


@dataclasses.dataclass
class DiskCheck(ComponentCheck):
    """The volume that holds the data: unhealthy at >= max % used or <= min GB free.

    ``usage`` reads the volume (``shutil.disk_usage`` by default); tests inject a reading.
    """

    component: ClassVar[str] = DISK
    critical: ClassVar[bool] = True

    path: str = from_settings("EIDOLON_HEALTH_DISK_PATH", str)
    max_used_percent: float = from_settings("EIDOLON_HEALTH_DISK_MAX_USED_PERCENT")
    min_free_gb: float = from_settings("EIDOLON_HEALTH_DISK_MIN_FREE_GB")
    usage: Callable[[str], DiskUsage] = dataclasses.field(default=shutil.disk_usage, repr=False)

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
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=1), repr=False)

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


@dataclasses.dataclass
class WorkerCheck(ComponentCheck):
    """At least one task worker sent a heartbeat within ``stale_seconds``; none is a warning:
    analyses wait in the queue, everything else works."""

    component: ClassVar[str] = WORKERS

    stale_seconds: float = from_settings("EIDOLON_HEALTH_WORKER_STALE_SECONDS")
    clock: Clock = dataclasses.field(default=SYSTEM_CLOCK, repr=False)

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


AI_STILL_WORKS = "pages, results and the static reviewer still work"


def refusal(member: MemberState) -> str:
    """Why ``member``'s breaker turns new calls away: "breaker open until …"."""
    if member.state == BreakerState.OPEN:
        return f"breaker open until {format_epoch(member.open_until or 0.0)}"
    if member.state == BreakerState.HALF_OPEN:
        return "breaker half-open: probing whether it recovered"
    return "breaker forced open by an operator"


def failing_for(member: MemberState, *, now: float, stale_seconds: float) -> bool:
    """Calls to ``member`` fail and none succeeded for ``stale_seconds``; failures from before
    its breaker last changed state (a reset, a recovery) no longer count."""
    last_success, last_failure = member.last_success_at, member.last_failure_at
    failing = (
        last_failure is not None
        and last_failure >= member.state_changed_at
        and now - last_failure <= stale_seconds
        and (last_success is None or last_success < last_failure)
    )
    return failing and (last_success is None or now - last_success > stale_seconds)


@dataclasses.dataclass
class AIAPICheck(ComponentCheck):
    """The AI API, from the shared per-model breakers and the age of each model's last success.

    No call is made. Reviews go to the first model of ``EIDOLON_AI_MODELS`` whose breaker admits
    new calls (``reliability.serving``). The primary serving is healthy; a fallback serving
    while the primary's breaker is open (half-open, forced open) degrades the service ("reviewing
    on <fallback>"), and so does every model refusing. While a model's calls are failing, no
    success for ``stale_seconds`` degrades it too; no calls at all does not (an idle service is
    not a sick one), and failures from before a breaker last changed state (an operator's reset,
    a recovery) no longer count.
    """

    component: ClassVar[str] = AI_API

    family: str = "anthropic"
    stale_seconds: float = from_settings("EIDOLON_HEALTH_AI_STALE_SECONDS")
    clock: Clock = dataclasses.field(default=SYSTEM_CLOCK, repr=False)

    def run(self) -> None:
        now = self.clock.now()
        try:
            chain = family_serving(self.family, now=now)
        except DBError as error:
            raise unavailable("the AI breaker state could not be read") from error
        if not any(member.exists for member in chain.members):
            self.summary = "no AI call made yet"
            return
        serving = chain.serving
        if serving is None:
            refusals = "; ".join(f"{m.model} {refusal(m)}" for m in chain.members)
            raise warning(
                f"every AI model refuses: {refusals}: AI reviews paused; {AI_STILL_WORKS}"
            )
        problems = []
        if chain.degraded:
            passed_over = "; ".join(
                f"{m.model} {refusal(m)}" for m in chain.members[: chain.members.index(serving)]
            )
            problems.append(f"degraded: reviewing on {serving.model} ({passed_over})")
        failing = [
            member.model
            for member in chain.members
            if member.admits and failing_for(member, now=now, stale_seconds=self.stale_seconds)
        ]
        if failing:
            problems.append(
                f"AI calls to {', '.join(failing)} are failing and none succeeded in the last "
                f"{self.stale_seconds:g} s"
            )
        if problems:
            raise warning("; ".join(problems))
        mode = serving.state
        if mode == BreakerState.DISABLED:
            mode = "disabled by an operator"
        if serving.last_success_at is None:
            health = f"breaker {mode}; no successful call yet"
        else:
            health = (
                f"breaker {mode}; last successful call {now - serving.last_success_at:.0f} s ago"
            )
        self.summary = f"reviewing on {serving.model}: {health}"


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
