"""Diagnostic task: proves end to end that a worker claims and runs what the web enqueues."""

from __future__ import annotations

import os
import socket

import structlog
from django_tasks import task

logger = structlog.get_logger(__name__)


@task()
def ping(message: str = "ping") -> dict[str, object]:
    """Return who ran it: ``ping.enqueue("hello")``, then read ``result.return_value``."""
    logger.info("ping_task_ran", message=message)
    return {"pong": message, "host": socket.gethostname(), "pid": os.getpid()}
