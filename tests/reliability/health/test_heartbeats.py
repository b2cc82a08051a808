"""Worker heartbeats: one row per worker, kept by the worker command while it runs."""

from __future__ import annotations

import time

import pytest
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max
from health_check.exceptions import ServiceWarning

from reliability.health.checks import WorkerCheck
from reliability.health.heartbeats import (
    WorkerLost,
    abandon_tasks_of_dead_workers,
    worker_heartbeat,
    worker_stopped,
)
from reliability.models import WorkerHeartbeat
from tests.processes import ManagedProcess, subprocess_environment


@pytest.mark.django_db
class TestWorkerHeartbeat:
    def test_heartbeat__updates_one_row_per_worker(self, clock):
        worker_heartbeat(worker_id="w1", host="host-a", pid=10, clock=clock)
        started = WorkerHeartbeat.objects.get(worker_id="w1").started_at
        clock.advance(10)
        worker_heartbeat(worker_id="w1", host="host-a", pid=10, clock=clock)
        row = WorkerHeartbeat.objects.get(worker_id="w1")
        assert WorkerHeartbeat.objects.count() == 1
        assert row.started_at == started
        assert (row.last_seen_at - started).total_seconds() == 10


def running_task(worker_id: str) -> DBTaskResult:
    return DBTaskResult.objects.create(
        status=TaskResultStatus.RUNNING,
        args_kwargs={"args": [1], "kwargs": {}},
        task_path="analyses.tasks.run_analysis_task",
        backend_name="default",
        run_after=get_date_max(),
        worker_ids=[worker_id],
    )


@pytest.mark.django_db
class TestAbandonTasksOfDeadWorkers:
    def test_rows_of_stale_or_stopped_workers_fail__live_and_unknown_ones_stay(self, clock):
        long_id = "w" * 60  # a --threads worker names its loops after its first 56 characters
        for worker in ("dead", "alive", "stopped", long_id):
            worker_heartbeat(worker_id=worker, host="host-a", pid=7, clock=clock)
        worker_stopped(worker_id="stopped", clock=clock)
        clock.advance(10)
        for worker in ("alive",):
            worker_heartbeat(worker_id=worker, host="host-a", pid=7, clock=clock)
        tasks = {
            name: running_task(name)
            for name in (
                "dead",
                "dead-2",
                "alive-0",
                "stopped",
                "no-heartbeat",
                f"{long_id[:56]}-1",
            )
        }

        abandoned = abandon_tasks_of_dead_workers(stale_seconds=5, clock=clock)
        again = abandon_tasks_of_dead_workers(stale_seconds=5, clock=clock)

        statuses = {name: DBTaskResult.objects.get(pk=t.pk).status for name, t in tasks.items()}
        assert (
            statuses
            == {
                "dead": TaskResultStatus.FAILED,
                "dead-2": TaskResultStatus.FAILED,  # loop 2 of worker "dead"
                "alive-0": TaskResultStatus.RUNNING,
                "stopped": TaskResultStatus.FAILED,
                "no-heartbeat": TaskResultStatus.RUNNING,  # a plain db_worker: nothing to go by
                f"{long_id[:56]}-1": TaskResultStatus.FAILED,
            }
        )
        assert len(abandoned) == 4 and again == []  # each row is marked once
        dead = DBTaskResult.objects.get(pk=tasks["dead"].pk)
        assert dead.exception_class_path == f"{WorkerLost.__module__}.WorkerLost"
        assert dead.traceback.startswith(
            "WorkerLost: worker dead (pid 7 on host-a) sent no heartbeat for 10.0 s (limit 5 s)"
        )
        assert dead.finished_at is not None
        assert dead.task_result.errors[0].exception_class_path.endswith("WorkerLost")
        assert "stopped at" in DBTaskResult.objects.get(pk=tasks["stopped"].pk).traceback


@pytest.mark.django_db(transaction=True)
class TestWorkerCommand:
    def test_worker__beats_while_running_and_marks_itself_stopped_on_sigterm(self):
        worker = ManagedProcess.manage(
            "worker",
            "--no-reload",
            "--no-startup-delay",
            "--interval",
            "0.2",
            "--heartbeat",
            "0.2",
            "--worker-id",
            "test-worker-1",
            "--queue-name",
            "*",
            env=subprocess_environment(),
        )
        try:
            deadline = time.monotonic() + 20
            seen: list = []
            while time.monotonic() < deadline and len(set(seen)) < 3:
                row = WorkerHeartbeat.objects.filter(worker_id="test-worker-1").first()
                if row is not None:
                    seen.append(row.last_seen_at)
                time.sleep(0.1)
        finally:
            exit_code = worker.stop()
        row = WorkerHeartbeat.objects.get(worker_id="test-worker-1")
        assert len(set(seen)) >= 3, worker.output()  # it kept beating
        assert exit_code == 0, worker.output()
        assert row.stopped_at is not None and row.pid > 0
        with pytest.raises(ServiceWarning):
            WorkerCheck().run()
