"""Worker heartbeats: one row per worker, kept by the worker command while it runs."""

from __future__ import annotations

import time

import pytest
from health_check.exceptions import ServiceWarning

from reliability.health.checks import WorkerCheck
from reliability.health.heartbeats import worker_heartbeat
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
