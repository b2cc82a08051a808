"""Task workers say they are alive: one row per worker, which the ``workers`` check reads, and
which tells the task rows of dead workers from those of live ones."""

from __future__ import annotations

import re

import structlog
from django.db import IntegrityError, transaction
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from reliability.clock import SYSTEM_CLOCK, Clock, epoch_datetime
from reliability.models import WorkerHeartbeat

logger = structlog.get_logger(__name__)


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


class WorkerLost(Exception):
    """The task's worker died (its heartbeat stopped), or lost the database before it could
    record how the task ended: the task was abandoned, its outcome unknown."""


# A ``--threads N`` worker runs N task loops named ``<worker id, first 56 characters>-<index>``
# (``manage.py worker``); a one-loop worker claims tasks under its own id.
_LOOP_SUFFIX = re.compile(r"^(?P<worker>.+)-\d+$")
_LOOP_PREFIX_LENGTH = 56


def _heartbeat_of(loop_id: str, heartbeats: dict[str, WorkerHeartbeat]) -> WorkerHeartbeat | None:
    if loop_id in heartbeats:
        return heartbeats[loop_id]
    if match := _LOOP_SUFFIX.match(loop_id):
        prefix = match["worker"]
        if prefix in heartbeats:
            return heartbeats[prefix]
        if len(prefix) == _LOOP_PREFIX_LENGTH:
            return next((hb for key, hb in heartbeats.items() if key.startswith(prefix)), None)
    return None


def _candidate_ids(loop_id: str) -> set[str]:
    ids = {loop_id}
    if match := _LOOP_SUFFIX.match(loop_id):
        ids.add(match["worker"])
    return ids


def abandon_tasks_of_dead_workers(
    *, stale_seconds: float, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """Mark FAILED (``WorkerLost``) the task rows left RUNNING by a worker that is dead: its
    heartbeat stopped, or is older than ``stale_seconds``. Returns the ids of the rows marked.

    django-tasks-db never re-runs a task: a row a killed worker claimed stays RUNNING for ever.
    Failing it (rather than making it READY again) keeps the Tasks API's one run per enqueue;
    the work itself is not lost, since an analysis whose worker died is enqueued again by
    ``resume_stale_analyses`` under a new task. Rows of workers without a heartbeat (a plain
    ``db_worker``) are left alone: nothing says whether they are alive. One conditional UPDATE
    per row, so however many workers sweep at once each row is marked once.
    """
    running = list(
        DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING).values_list(
            "id", "worker_ids"
        )[:1000]
    )
    if not running:
        return []
    now = clock.now()
    loop_ids = {worker_ids[-1] for _id, worker_ids in running if worker_ids}
    wanted = set().union(*(_candidate_ids(loop_id) for loop_id in loop_ids))
    query = WorkerHeartbeat.objects.filter(worker_id__in=wanted)
    for prefix in {p for loop_id in loop_ids for p in _candidate_ids(loop_id)}:
        if len(prefix) == _LOOP_PREFIX_LENGTH:
            query = query | WorkerHeartbeat.objects.filter(worker_id__startswith=prefix)
    heartbeats = {hb.worker_id: hb for hb in query}
    abandoned = []
    for task_id, worker_ids in running:
        heartbeat = _heartbeat_of(worker_ids[-1], heartbeats) if worker_ids else None
        if heartbeat is None:
            continue
        silent_for = now - heartbeat.last_seen_at.timestamp()
        if heartbeat.stopped_at is None and silent_for <= stale_seconds:
            continue
        reason = (
            f"worker {heartbeat.worker_id} (pid {heartbeat.pid} on {heartbeat.host}) "
            + (
                f"stopped at {heartbeat.stopped_at.isoformat()}"
                if heartbeat.stopped_at is not None
                else f"sent no heartbeat for {silent_for:.1f} s (limit {stale_seconds:g} s)"
            )
            + " while running this task; it was abandoned"
        )
        marked = task_abandon(task_id=task_id, reason=reason, clock=clock)
        if marked:
            abandoned.append(str(task_id))
            logger.warning(
                "task_abandoned", task_id=str(task_id), worker_id=worker_ids[-1], reason=reason
            )
    return abandoned


def task_abandon(*, task_id, reason: str, clock: Clock = SYSTEM_CLOCK) -> bool:
    """Mark a task row that is still RUNNING failed with ``WorkerLost`` and ``reason``: the
    task's own outcome cannot be known. False when it is no longer running."""
    return bool(
        DBTaskResult.objects.filter(pk=task_id, status=TaskResultStatus.RUNNING).update(
            status=TaskResultStatus.FAILED,
            finished_at=epoch_datetime(clock.now()),
            exception_class_path=f"{WorkerLost.__module__}.{WorkerLost.__qualname__}",
            traceback=f"{WorkerLost.__qualname__}: {reason}\n",
            return_value=None,
        )
    )
