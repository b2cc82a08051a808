"""Django Tasks entry points: a worker (``manage.py worker``) runs analyses."""

from __future__ import annotations

import asyncio

from django_tasks import task

from analyses.orchestrator import run_analysis


@task()
def run_analysis_task(analysis_id: int) -> str:
    """Run or resume one analysis in this worker; returns its status when this run ends."""
    return asyncio.run(run_analysis(analysis_id))
