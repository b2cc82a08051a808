"""Task workers say they are alive: one row per worker, which the ``workers`` check reads."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from reliability.clock import SYSTEM_CLOCK, Clock, epoch_datetime
from reliability.models import WorkerHeartbeat


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
