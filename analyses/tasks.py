"""Django Tasks entry points: a worker (``manage.py worker``) runs analyses."""

from __future__ import annotations

import asyncio
import threading

from django_tasks import task

from analyses.orchestrator import run_analysis

# This worker process is stopping. One per process, owned by ``manage.py worker``: cleared when
# it starts, set when it is told to stop; the analyses it runs then keep what they finished and
# hand their lease back, so another worker resumes them at once.
WORKER_SHUTDOWN = threading.Event()


@task()
def run_analysis_task(analysis_id: int) -> str:
    """Run or resume one analysis in this worker; returns its status when this run ends."""
    return asyncio.run(run_analysis(analysis_id, shutdown=WORKER_SHUTDOWN))
