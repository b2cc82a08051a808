"""Shared by the health tests: stand-in checks (real ``HealthCheck`` subclasses that stand in
for a broken, slow or hung component), secrets that must never leak, and synthetic reports."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
from typing import ClassVar

from health_check.base import HealthCheckResult
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from reliability.breaker import admit, record
from reliability.clock import epoch_datetime
from reliability.families import members
from reliability.health.checks import DATABASE, ComponentCheck, DiskUsage
from reliability.health.report import HealthReport, build_report
from reliability.models import HealthStatus
from reliability.outcomes import BreakerVerdict
from tests.clocks import FakeClock

GB = 1024**3
# Statuses by their initials, and a moment to count from, for timelines.
H, D, U, UNK = (
    HealthStatus.HEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNHEALTHY,
    HealthStatus.UNKNOWN,
)
T0 = epoch_datetime(1_800_000_000.0)
SECRET = "hunter2-s3cret-Passw0rd"
API_KEY = "sk-ant-api03-" + "Z" * 40
SECRET_ERROR = (
    f"could not connect to postgres://eidolon:{SECRET}@db-internal.example:5432/eidolon "
    f"from /srv/eidolon/var (api_key={API_KEY})"
)


def reading(*, used_gb: float, free_gb: float):
    usage = DiskUsage(
        total=int((used_gb + free_gb) * GB), used=int(used_gb * GB), free=int(free_gb * GB)
    )
    return lambda path: usage


def ai_breaker(position: int = 0) -> str:
    """The breaker of the ``position``-th model of ``EIDOLON_AI_MODELS`` (0: the primary)."""
    return members("anthropic")[position]


def fail_ai_calls(clock: FakeClock, count: int, *, breaker: str = "") -> None:
    """``count`` failed calls to ``breaker`` (the primary model's by default)."""
    for _ in range(count):
        permit = admit(breaker or ai_breaker(), clock=clock)
        record(permit, BreakerVerdict.FAILURE, duration=0.1, reason="test: 529", clock=clock)


@dataclasses.dataclass
class SleepingCheck(ComponentCheck):
    """Healthy after ``seconds``; async or in a thread."""

    component: ClassVar[str] = "sleeper"
    seconds: float = 0.3
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=5), repr=False)

    async def run(self) -> None:
        await asyncio.sleep(self.seconds)


@dataclasses.dataclass
class OtherSleepingCheck(SleepingCheck):
    component: ClassVar[str] = "other_sleeper"


@dataclasses.dataclass
class WarningCheck(ComponentCheck):
    component: ClassVar[str] = "warned"
    critical: ClassVar[bool] = True

    def run(self) -> None:
        raise ServiceWarning("running low on something")


@dataclasses.dataclass
class ThreadSleepingCheck(ComponentCheck):
    component: ClassVar[str] = "thread_sleeper"
    seconds: float = 0.3
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(seconds=5), repr=False)

    def run(self) -> None:
        time.sleep(self.seconds)


@dataclasses.dataclass
class BlockedCheck(ComponentCheck):
    """A synchronous check stuck until ``release`` is set (a hung database driver). A round
    gives it 1 s: a ``timeout`` of 0 plus ``get_result``'s grace."""

    component: ClassVar[str] = "blocked"
    critical: ClassVar[bool] = True
    release: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    started: list = dataclasses.field(default_factory=list, repr=False)
    timeout: dt.timedelta = dataclasses.field(default=dt.timedelta(0), repr=False)

    def run(self) -> None:
        self.started.append(time.monotonic())
        self.release.wait(10)
        self.summary = "released"


@dataclasses.dataclass
class HangingCheck(ComponentCheck):
    """An asynchronous check that never answers (a dead peer that accepted the connection)."""

    component: ClassVar[str] = "hanging"

    async def run(self) -> None:
        await asyncio.Event().wait()


@dataclasses.dataclass
class LeakyFailingCheck(ComponentCheck):
    """Fails with a public message; the cause carries hosts, paths and secrets."""

    component: ClassVar[str] = "leaky"
    critical: ClassVar[bool] = True

    def run(self) -> None:
        try:
            raise ConnectionError(SECRET_ERROR)
        except ConnectionError as error:
            raise ServiceUnavailable("the leaky component does not answer") from error


@dataclasses.dataclass
class CrashingCheck(ComponentCheck):
    """Raises something that is not a health-check exception, with secrets in its text."""

    component: ClassVar[str] = "crashing"

    def run(self) -> None:
        raise RuntimeError(SECRET_ERROR)


@dataclasses.dataclass
class CountingCheck(ComponentCheck):
    component: ClassVar[str] = "counting"
    calls: ClassVar[int] = 0

    async def run(self) -> None:
        type(self).calls += 1
        await asyncio.sleep(0.05)


@dataclasses.dataclass
class DatabaseStandIn(ComponentCheck):
    """Stands for the database check in synthetic reports (results are built, not run)."""

    component: ClassVar[str] = DATABASE
    critical: ClassVar[bool] = True

    def run(self) -> None:  # never run: its results are made up
        raise AssertionError("not to be run")


def synthetic_report(at: dt.datetime, **statuses: str) -> HealthReport:
    """A report as the runner builds it, with the given component statuses at ``at``."""
    results = []
    for name, status in statuses.items():
        check_class = type(name, (DatabaseStandIn,), {"component": name})
        error = None
        if status == HealthStatus.UNHEALTHY:
            error = ServiceUnavailable(f"{name} is down")
        elif status == HealthStatus.DEGRADED:
            error = ServiceWarning(f"{name} is slow")
        results.append(HealthCheckResult(check=check_class(), error=error, time_taken=0.002))
    return build_report(results=results, checked_at=at, duration_ms=2.0)
