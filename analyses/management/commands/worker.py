"""The task worker: django-tasks-db's ``db_worker`` (same arguments) plus a heartbeat, several
tasks at once, and the recovery of analyses whose worker died.

    manage.py worker --no-reload --queue-name '*' [--heartbeat SECONDS] [--threads N]

* A daemon thread upserts this worker's ``WorkerHeartbeat`` row every ``--heartbeat`` seconds
  (default ``EIDOLON_WORKER_HEARTBEAT_SECONDS``) so that health checks know a worker is alive;
  on a clean exit the row is marked stopped. Each beat also re-enqueues analyses whose lease
  expired (their worker died), so they resume without anyone's help.
* ``--threads N`` (default ``EIDOLON_WORKER_ANALYSES``) runs N task loops, so one worker runs
  up to N analyses at once.
* The database may go away (a failover, a partition): a task loop that meets a database error
  waits, backing off from 0.5 s to 5 s, and carries on once the database answers again, instead
  of dying with the error as db_worker's loop does.
* Task rows left ``RUNNING`` by a dead worker (its heartbeat stale) are marked failed
  (``abandon_tasks_of_dead_workers``), by a worker whose own heartbeats have gone through for a
  whole staleness window (after an outage every worker's heartbeat is old, and none is dead).
* SIGTERM / SIGINT: running analyses stop within seconds, keep what they finished and give
  their lease back so another worker resumes them at once; a second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from types import FrameType

import structlog
from django.conf import settings
from django.db import Error as DBError
from django.db import close_old_connections, connection, connections
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
from django_tasks_db.management.commands import db_worker
from django_tasks_db.models import DBTaskResult

from analyses.services import resume_stale_analyses
from analyses.tasks import WORKER_SHUTDOWN
from reliability.health.heartbeats import (
    abandon_tasks_of_dead_workers,
    task_abandon,
    worker_heartbeat,
    worker_stopped,
)
from reliability.management.options import add_setting_option

logger = structlog.get_logger(__name__)

DATABASE_RETRY_FIRST_SECONDS = 0.5
DATABASE_RETRY_MAX_SECONDS = 5.0


class Heartbeat(threading.Thread):
    """Upserts the worker's heartbeat row until stopped; then marks it stopped."""

    def __init__(self, *, worker_id: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.interval = interval
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._stop_requested = threading.Event()
        self._failing = False
        self._beating_since = time.monotonic()

    def beat(self) -> None:
        try:
            close_old_connections()
            worker_heartbeat(worker_id=self.worker_id, host=self.host, pid=self.pid)
            resume_stale_analyses()
            stale_seconds = settings.EIDOLON_HEALTH_WORKER_STALE_SECONDS
            if time.monotonic() - self._beating_since > stale_seconds:
                abandon_tasks_of_dead_workers(stale_seconds=stale_seconds)
        except DBError as error:
            if not self._failing:
                logger.warning(
                    "worker_heartbeat_failed", worker_id=self.worker_id, error=type(error).__name__
                )
            self._failing = True
            self._beating_since = time.monotonic()
        else:
            if self._failing:
                logger.info("worker_heartbeat_recovered", worker_id=self.worker_id)
            self._failing = False

    def run(self) -> None:
        try:
            while not self._stop_requested.wait(self.interval):
                self.beat()
            try:
                worker_stopped(worker_id=self.worker_id)
            except DBError as error:
                logger.warning(
                    "worker_heartbeat_failed", worker_id=self.worker_id, error=type(error).__name__
                )
        finally:
            connections.close_all()

    def stop(self, *, timeout: float = 5.0) -> None:
        self._stop_requested.set()
        self.join(timeout=timeout)


class ResilientWorker(db_worker.Worker):
    """db_worker's task loop, which waits for a database that went away instead of dying.

    A task that ended while the database was down could not record its outcome; its row is
    marked failed (``WorkerLost``, saying so) once the database answers again, so that it does
    not stay RUNNING under a live worker.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._unrecorded: DBTaskResult | None = None

    def run(self) -> None:
        while self.running:
            try:
                super().run()
                return
            except DBError as error:
                logger.warning(
                    "worker_database_unavailable",
                    worker_id=self.worker_id,
                    error=type(error).__name__,
                )
                self.wait_for_database()

    def run_task(self, db_task_result: DBTaskResult) -> None:
        try:
            super().run_task(db_task_result)
        except DBError:
            self._unrecorded = db_task_result
            raise

    def wait_for_database(self) -> None:
        """Back off (0.5 s doubling to 5 s) until the database answers or the worker stops."""
        delay = DATABASE_RETRY_FIRST_SECONDS
        started = time.monotonic()
        while self.running and not WORKER_SHUTDOWN.wait(delay):
            try:
                connections.close_all()
                connection.ensure_connection()
                if (task := self._unrecorded) is not None:
                    task_abandon(
                        task_id=task.pk,
                        reason=f"the task ended on worker {self.worker_id} while the database "
                        "was unavailable, and its outcome could not be recorded",
                    )
                    self._unrecorded = None
            except DBError:
                delay = min(delay * 2, DATABASE_RETRY_MAX_SECONDS)
                continue
            logger.info(
                "worker_database_reconnected",
                worker_id=self.worker_id,
                after_seconds=round(time.monotonic() - started, 1),
            )
            return


class Command(db_worker.Command):
    help = "Run a database task worker (db_worker) that reports a heartbeat for health checks"

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        add_setting_option(
            parser, "--threads", "EIDOLON_WORKER_ANALYSES", type=int, help="Tasks run at once"
        )
        add_setting_option(
            parser,
            "--heartbeat",
            "EIDOLON_WORKER_HEARTBEAT_SECONDS",
            type=float,
            help="Seconds between heartbeats",
        )

    def handle(self, *args, heartbeat: float, threads: int, **options) -> None:
        # With --reload the parent process only watches files; the child runs the worker.
        watcher_only = options["reload"] and os.environ.get(DJANGO_AUTORELOAD_ENV) != "true"
        if watcher_only:
            super().handle(*args, **options)
            return
        WORKER_SHUTDOWN.clear()
        beat = Heartbeat(worker_id=options["worker_id"], interval=max(0.1, heartbeat))
        beat.beat()  # before the first task, so that health checks see the worker at once
        beat.start()
        logger.info("worker_started", worker_id=beat.worker_id, heartbeat_seconds=heartbeat)
        try:
            if not options["reload"]:
                self.run_threads(threads, **options)
            else:
                super().handle(*args, **options)
        finally:
            WORKER_SHUTDOWN.set()
            beat.stop()
            logger.info("worker_stopped", worker_id=beat.worker_id)

    def run_threads(self, count: int, **options) -> None:
        """``count`` task loops in threads; the main thread only waits and handles signals."""
        self.configure_logging(options["verbosity"])
        queue_names = options["queue_name"].split(",")
        excluded = options["exclude_queues"].split(",") if options["exclude_queues"] else []
        loops = [
            ResilientWorker(
                queue_names=queue_names,
                interval=options["interval"],
                batch=options["batch"],
                backend_name=options["backend_name"],
                startup_delay=options["startup_delay"],
                max_tasks=options["max_tasks"],
                worker_id=(
                    options["worker_id"] if count == 1 else f"{options['worker_id'][:56]}-{index}"
                ),
                excluded_queue_names=excluded,
            )
            for index in range(count)
        ]

        def stop(signum: int, frame: FrameType | None) -> None:
            if WORKER_SHUTDOWN.is_set():
                logger.warning("worker_forced_exit", signal=signal.strsignal(signum))
                os._exit(1)
            logger.warning("worker_shutting_down", signal=signal.strsignal(signum))
            WORKER_SHUTDOWN.set()  # running analyses stop and hand their lease back
            for loop in loops:
                loop.running = False

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
        threads = [
            threading.Thread(target=self._loop, args=(loop,), name=loop.worker_id, daemon=True)
            for loop in loops
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)

    @staticmethod
    def _loop(loop: ResilientWorker) -> None:
        try:
            loop.run()
        finally:
            connections.close_all()
