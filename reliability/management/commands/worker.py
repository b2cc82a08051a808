"""The task worker: django-tasks-db's ``db_worker`` (same arguments) plus a heartbeat.

    manage.py worker --no-reload --queue-name '*' [--heartbeat SECONDS]

A daemon thread upserts this worker's ``WorkerHeartbeat`` row every ``--heartbeat`` seconds
(default ``EIDOLON_WORKER_HEARTBEAT_SECONDS``) so that health checks know a worker is alive; on a
clean exit (SIGTERM, SIGINT, ``--batch``, ``--max-tasks``) the row is marked stopped.
"""

from __future__ import annotations

import os
import socket
import threading

import structlog
from django.conf import settings
from django.db import Error as DBError
from django.db import close_old_connections, connections
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
from django_tasks_db.management.commands import db_worker

from reliability.health import worker_heartbeat, worker_stopped

logger = structlog.get_logger(__name__)


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

    def beat(self) -> None:
        try:
            close_old_connections()
            worker_heartbeat(worker_id=self.worker_id, host=self.host, pid=self.pid)
        except DBError as error:
            if not self._failing:
                logger.warning(
                    "worker_heartbeat_failed", worker_id=self.worker_id, error=type(error).__name__
                )
            self._failing = True
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


class Command(db_worker.Command):
    help = "Run a database task worker (db_worker) that reports a heartbeat for health checks"

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--heartbeat",
            type=float,
            default=settings.EIDOLON_WORKER_HEARTBEAT_SECONDS,
            help="Seconds between heartbeats (default: EIDOLON_WORKER_HEARTBEAT_SECONDS, "
            "%(default)s)",
        )

    def handle(self, *args, heartbeat: float, **options) -> None:
        # With --reload the parent process only watches files; the child runs the worker.
        watcher_only = options["reload"] and os.environ.get(DJANGO_AUTORELOAD_ENV) != "true"
        if watcher_only:
            super().handle(*args, **options)
            return
        beat = Heartbeat(worker_id=options["worker_id"], interval=max(0.1, heartbeat))
        beat.beat()  # before the first task, so that health checks see the worker at once
        beat.start()
        logger.info("worker_started", worker_id=beat.worker_id, heartbeat_seconds=heartbeat)
        try:
            super().handle(*args, **options)
        finally:
            beat.stop()
            logger.info("worker_stopped", worker_id=beat.worker_id)
