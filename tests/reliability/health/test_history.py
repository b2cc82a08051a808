"""The health history: transitions and samples, the recorder that outlasts a database outage,
and pruning, on a real database."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from django.db import connection

from reliability.clock import epoch_datetime
from reliability.health.checks import OVERALL, DiskCheck, DiskUsage
from reliability.health.heartbeats import worker_heartbeat
from reliability.health.history import (
    STALE_MONITOR_MESSAGE,
    HealthRecorder,
    prune_health_history,
    record_report,
)
from reliability.health.runner import HealthRunner
from reliability.models import (
    HealthComponentState,
    HealthSample,
    HealthTransition,
    WorkerHeartbeat,
)
from tests.clocks import FakeClock
from tests.reliability.health.standins import GB, T0, UNK, D, H, U, synthetic_report


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
