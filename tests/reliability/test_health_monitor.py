"""The health history: transitions and samples, uptime computed exactly, pruning, the monitor
loop and the ``health_monitor`` command with its SIGTERM handling, on a real database."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import signal
from typing import ClassVar

import pytest
from django.db import connection
from health_check.base import HealthCheckResult
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from reliability.clock import FakeClock, epoch_datetime
from reliability.health import (
    DATABASE,
    OVERALL,
    STALE_MONITOR_MESSAGE,
    ComponentCheck,
    DiskCheck,
    DiskUsage,
    HealthRecorder,
    HealthRunner,
    Segment,
    build_report,
    component_uptime,
    prune_health_history,
    record_report,
    run_health_monitor,
    status_segments,
    uptime_percent,
    worker_heartbeat,
)
from reliability.models import (
    HealthComponentState,
    HealthSample,
    HealthStatus,
    HealthTransition,
    WorkerHeartbeat,
)
from tests.processes import ManagedProcess, subprocess_environment

H, D, U, UNK = (
    HealthStatus.HEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNHEALTHY,
    HealthStatus.UNKNOWN,
)
GB = 1024**3
T0 = epoch_datetime(1_800_000_000.0)


@dataclasses.dataclass
class DatabaseStandIn(ComponentCheck):
    """Stands for the database check in synthetic reports (results are built, not run)."""

    component: ClassVar[str] = DATABASE
    critical: ClassVar[bool] = True

    def run(self) -> None:  # never run: its results are made up
        raise AssertionError("not to be run")


def synthetic_report(at: dt.datetime, **statuses: str):
    """A report as the runner builds it, with the given component statuses at ``at``."""
    results = []
    for name, status in statuses.items():
        check_class = type(name, (DatabaseStandIn,), {"component": name})
        error = None
        if status == U:
            error = ServiceUnavailable(f"{name} is down")
        elif status == D:
            error = ServiceWarning(f"{name} is slow")
        results.append(HealthCheckResult(check=check_class(), error=error, time_taken=0.002))
    return build_report(results=results, checked_at=at, duration_ms=2.0)


def transitions_of(name: str) -> list[tuple[str, str, dt.datetime]]:
    return list(
        HealthTransition.objects.filter(component__name=name)
        .order_by("created_at", "id")
        .values_list("from_status", "to_status", "created_at")
    )


@pytest.mark.django_db
class TestRecordReport:
    def test_record__first_round_stores_a_transition_from_unknown_and_a_sample_each(self):
        record_report(report=synthetic_report(T0, database=H, disk=H))
        assert transitions_of("database") == [(UNK, H, T0)]
        assert transitions_of(OVERALL) == [(UNK, H, T0)]
        assert HealthSample.objects.count() == 3  # database, disk, overall
        state = HealthComponentState.objects.get(name="database")
        assert (state.status, state.since, state.checked_at) == (H, T0, T0)

    def test_record__a_transition_when_a_component_fails_and_one_when_it_recovers(self):
        minute = dt.timedelta(minutes=1)
        record_report(report=synthetic_report(T0, database=H))
        record_report(report=synthetic_report(T0 + minute, database=U))
        record_report(report=synthetic_report(T0 + 2 * minute, database=U))
        record_report(report=synthetic_report(T0 + 3 * minute, database=H))
        assert transitions_of("database") == [
            (UNK, H, T0),
            (H, U, T0 + minute),
            (U, H, T0 + 3 * minute),
        ]
        down = HealthTransition.objects.get(component__name="database", to_status=U)
        assert down.message == "database is down"
        assert HealthSample.objects.filter(component__name="database").count() == 4
        # "When did the database go down, and for how long?"
        up_again = HealthTransition.objects.get(component__name="database", from_status=U)
        assert up_again.created_at - down.created_at == 2 * minute
        assert transitions_of(OVERALL)[1:] == [(H, U, T0 + minute), (U, H, T0 + 3 * minute)]

    def test_record__no_transition_while_the_status_stays(self):
        for i in range(5):
            record_report(report=synthetic_report(T0 + dt.timedelta(seconds=30 * i), disk=D))
        assert transitions_of("disk") == [(UNK, D, T0)]
        assert HealthSample.objects.filter(component__name="disk").count() == 5

    def test_record__a_gap_without_observations_is_unknown(self):
        stale = dt.timedelta(seconds=90)
        record_report(report=synthetic_report(T0, database=H), stale_after=stale)
        later = T0 + dt.timedelta(minutes=10)
        record_report(report=synthetic_report(later, database=H), stale_after=stale)
        assert transitions_of("database") == [(UNK, H, T0), (H, UNK, T0), (UNK, H, later)]
        gap = HealthTransition.objects.get(component__name="database", to_status=UNK)
        assert gap.message == STALE_MONITOR_MESSAGE


@pytest.mark.django_db(transaction=True)
class TestRecorderWithRealChecks:
    async def test_recorder__writes_the_disk_failing_and_recovering(self):
        volume = {"free_gb": 50.0}

        def read(path: str) -> DiskUsage:
            free = int(volume["free_gb"] * GB)
            return DiskUsage(total=100 * GB, used=100 * GB - free, free=free)

        clock = FakeClock()
        runner = HealthRunner(clock=clock, checks_factory=lambda: [DiskCheck(usage=read)])
        recorder = HealthRecorder(stale_after=dt.timedelta(seconds=90))
        for free_gb in (50.0, 5.0, 0.5, 0.5, 20.0):
            volume["free_gb"] = free_gb
            await asyncio.to_thread(recorder.record, await runner.report(max_age=0))
            clock.advance(30)
        statuses = await asyncio.to_thread(transitions_of, "disk")
        assert [(f, t) for f, t, _ in statuses] == [(UNK, H), (H, U), (U, H)]
        assert [at for _, _, at in statuses] == [
            epoch_datetime(1_800_000_000.0 + s) for s in (0, 30, 120)
        ]

    def test_recorder__keeps_rounds_it_cannot_write_and_writes_them_in_order_later(self):
        recorder = HealthRecorder(stale_after=dt.timedelta(seconds=90))
        step = dt.timedelta(seconds=30)
        recorder.record(synthetic_report(T0, database=H))
        table = HealthTransition._meta.db_table
        with connection.cursor() as cursor:  # the history table vanishes: writes fail
            cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        try:
            written = [
                recorder.record(synthetic_report(T0 + i * step, database=status))
                for i, status in ((1, U), (2, U), (3, H))
            ]
            pending = len(recorder.pending)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
        assert written == [0, 0, 0] and pending == 3
        recorder.record(synthetic_report(T0 + 4 * step, database=H))
        assert not recorder.pending
        assert transitions_of("database") == [
            (UNK, H, T0),
            (H, U, T0 + step),
            (U, H, T0 + 3 * step),
        ]


class TestUptimeArithmetic:
    NOW = T0 + dt.timedelta(days=30)

    def history(self) -> list[tuple[dt.datetime, str]]:
        now = self.NOW
        return [
            (now - dt.timedelta(days=7), H),
            (now - dt.timedelta(hours=10), U),
            (now - dt.timedelta(hours=9, minutes=30), H),
            (now - dt.timedelta(minutes=30), D),
            (now - dt.timedelta(minutes=20), U),
            (now - dt.timedelta(minutes=5), H),
        ]

    def uptime(self, window: dt.timedelta, changes=None, **kwargs) -> float | None:
        segments = status_segments(
            changes=self.history() if changes is None else changes,
            start=self.NOW - window,
            end=self.NOW,
            **kwargs,
        )
        return uptime_percent(segments)

    def test_uptime__exact_over_one_hour_a_day_and_a_week(self):
        # Down 15 min in the last hour; 30 + 15 min in the last day and week; degraded is up.
        assert self.uptime(dt.timedelta(hours=1)) == 100 * 45 / 60
        assert self.uptime(dt.timedelta(hours=24)) == 100 * (1440 - 45) / 1440
        assert self.uptime(dt.timedelta(days=7)) == 100 * (10080 - 45) / 10080

    def test_uptime__unknown_time_counts_neither_way(self):
        # Observed only for the last 2 hours of the week, down 15 minutes of them.
        changes = [(self.NOW - dt.timedelta(hours=2), H), *self.history()[3:]]
        assert self.uptime(dt.timedelta(days=7), changes) == 100 * 105 / 120

    def test_uptime__stops_counting_after_the_last_observation(self):
        changes = [(self.NOW - dt.timedelta(hours=1), U)]
        known_until = self.NOW - dt.timedelta(minutes=30)
        segments = status_segments(
            changes=changes,
            start=self.NOW - dt.timedelta(hours=1),
            end=self.NOW,
            known_until=known_until,
        )
        assert segments == [
            Segment(self.NOW - dt.timedelta(hours=1), known_until, U),
            Segment(known_until, self.NOW, UNK),
        ]
        assert uptime_percent(segments) == 0.0

    def test_uptime__none_without_data(self):
        assert self.uptime(dt.timedelta(hours=1), changes=[]) is None

    def test_segments__merge_equal_neighbours_and_cover_the_window(self):
        start = self.NOW - dt.timedelta(hours=1)
        changes = [(start - dt.timedelta(hours=1), H), (start + dt.timedelta(minutes=10), H)]
        assert status_segments(changes=changes, start=start, end=self.NOW) == [
            Segment(start, self.NOW, H)
        ]


@pytest.mark.django_db
class TestComponentUptime:
    def test_uptime__exact_over_a_recorded_synthetic_history(self):
        clock = FakeClock(start=T0.timestamp())
        now = T0 + dt.timedelta(days=8)
        changes = [
            (now - dt.timedelta(days=7, hours=1), H),
            (now - dt.timedelta(hours=10), U),
            (now - dt.timedelta(hours=9, minutes=30), H),
            (now - dt.timedelta(minutes=30), D),
            (now - dt.timedelta(minutes=20), U),
            (now - dt.timedelta(minutes=5), H),
            (now - dt.timedelta(seconds=10), H),  # the latest round
        ]
        for at, status in changes:
            record_report(report=synthetic_report(at, database=status))
        clock.advance((now - T0).total_seconds())
        database = HealthComponentState.objects.get(name="database")
        uptime = component_uptime(
            component=database,
            now=epoch_datetime(clock.now()),
            stale_after=dt.timedelta(seconds=90),
        )
        assert uptime == {
            dt.timedelta(hours=1): 75.0,
            dt.timedelta(hours=24): 100 * (1440 - 45) / 1440,
            dt.timedelta(days=7): 100 * (10080 - 45) / 10080,
        }

    def test_uptime__the_monitor_stopping_makes_the_rest_unknown(self):
        now = T0 + dt.timedelta(hours=2)
        record_report(report=synthetic_report(T0 + dt.timedelta(hours=1), database=U))
        database = HealthComponentState.objects.get(name="database")
        uptime = component_uptime(
            component=database,
            now=now,
            windows=[dt.timedelta(hours=2)],
            stale_after=dt.timedelta(seconds=90),
        )
        assert uptime == {dt.timedelta(hours=2): 0.0}  # only the 90 s after the last round


@pytest.mark.django_db
class TestPruning:
    def test_prune__removes_old_samples_and_keeps_transitions(self):
        now = T0 + dt.timedelta(days=30)
        for days_ago, status in ((20, H), (10, U), (8, H), (3, U), (1, H)):
            record_report(
                report=synthetic_report(now - dt.timedelta(days=days_ago), database=status)
            )
        worker_heartbeat(
            worker_id="old",
            host="h",
            pid=1,
            clock=FakeClock((now - dt.timedelta(days=9)).timestamp()),
        )
        worker_heartbeat(worker_id="new", host="h", pid=2, clock=FakeClock(now.timestamp()))

        pruned = prune_health_history(
            now=now,
            sample_retention=dt.timedelta(days=7),
            transition_retention=dt.timedelta(days=90),
            batch_size=2,  # several short DELETEs
        )

        assert pruned == {"samples": 6, "transitions": 0, "worker_heartbeats": 1}
        remaining = sorted(
            (now - created).days
            for created in HealthSample.objects.filter(component__name="database").values_list(
                "created_at", flat=True
            )
        )
        assert remaining == [1, 3]
        assert len(transitions_of("database")) == 5  # every change is kept 90 days
        assert list(WorkerHeartbeat.objects.values_list("worker_id", flat=True)) == ["new"]

    def test_prune__old_transitions_go_but_each_component_keeps_its_latest(self):
        now = T0 + dt.timedelta(days=400)
        record_report(report=synthetic_report(now - dt.timedelta(days=200), database=H, disk=H))
        record_report(report=synthetic_report(now - dt.timedelta(days=100), database=U, disk=H))
        record_report(report=synthetic_report(now - dt.timedelta(days=1), database=H, disk=H))
        prune_health_history(
            now=now,
            sample_retention=dt.timedelta(days=7),
            transition_retention=dt.timedelta(days=90),
        )
        assert [(f, t) for f, t, _ in transitions_of("database")] == [(U, H)]
        # The disk has been healthy for 200 days: its only transition stays, so it still is.
        assert [(f, t) for f, t, _ in transitions_of("disk")] == [(UNK, H)]


@dataclasses.dataclass
class StopsTheMonitor(ComponentCheck):
    """Sets the monitor's stop event in the middle of a round."""

    component: ClassVar[str] = "stopper"
    stop: asyncio.Event | None = dataclasses.field(default=None, repr=False)

    async def run(self) -> None:
        assert self.stop is not None
        self.stop.set()
        await asyncio.sleep(0.2)  # the round goes on after the signal


@pytest.mark.django_db(transaction=True)
class TestMonitorLoop:
    async def test_monitor__finishes_the_round_in_progress_when_told_to_stop(self):
        stop = asyncio.Event()
        runner = HealthRunner(checks_factory=lambda: [StopsTheMonitor(stop=stop)])
        rounds = await run_health_monitor(
            interval=0.05,
            stop=stop,
            runner=runner,
            sample_retention=dt.timedelta(days=7),
            transition_retention=dt.timedelta(days=90),
        )
        assert rounds == 1
        samples = await asyncio.to_thread(
            lambda: list(HealthSample.objects.values_list("component__name", flat=True))
        )
        assert sorted(samples) == [OVERALL, "stopper"]

    async def test_monitor__samples_every_interval_and_prunes(self):
        old = epoch_datetime(1_000_000_000.0)
        await asyncio.to_thread(record_report, report=synthetic_report(old, stopper=H))
        stop = asyncio.Event()
        runner = HealthRunner(
            checks_factory=lambda: [DiskCheck(usage=lambda p: DiskUsage(10 * GB, GB, 9 * GB))]
        )
        rounds = await run_health_monitor(
            interval=0.05,
            stop=stop,
            runner=runner,
            sample_retention=dt.timedelta(days=7),
            transition_retention=dt.timedelta(days=90),
            max_rounds=3,
        )
        samples = await asyncio.to_thread(
            lambda: list(HealthSample.objects.values_list("component__name", flat=True))
        )
        assert rounds == 3
        assert sorted(samples) == sorted(["disk", OVERALL] * 3)  # the old samples were pruned


@pytest.mark.django_db(transaction=True)
class TestHealthMonitorCommand:
    def test_command__sigterm_ends_it_cleanly_with_exit_code_0(self):
        monitor = ManagedProcess.manage(
            "health_monitor", "--interval", "0.3", env=subprocess_environment()
        )
        try:
            monitor.wait_for(lambda line: "health_monitor_started" in line)
            monitor.wait_for(lambda line: '"health_changed"' in line and "overall" in line)
        finally:
            exit_code = monitor.stop(sig=signal.SIGTERM)
        events = [line.get("event") for line in monitor.json_lines()]
        assert exit_code == 0, monitor.output()
        assert "health_monitor_stopping" in events and events[-1] == "health_monitor_stopped"
        assert HealthSample.objects.filter(component__name=DATABASE).exists()
        assert HealthComponentState.objects.get(name=DATABASE).status == H

    def test_command__once_records_one_round(self):
        monitor = ManagedProcess.manage("health_monitor", "--once", env=subprocess_environment())
        assert monitor.process.wait(timeout=60) == 0, monitor.output()
        assert HealthSample.objects.filter(component__name=OVERALL).count() == 1
