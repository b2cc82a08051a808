"""The health monitor's loop (``manage.py health_monitor``): rounds, recorded, then pruning.

Every ``EIDOLON_HEALTH_MONITOR_INTERVAL`` seconds it runs a fresh round, records status changes
(``HealthTransition``) and samples (``HealthSample``), keeps the rounds it could not write (the
database was down) and writes them when it can, and prunes old history.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time

import structlog
from asgiref.sync import sync_to_async
from django.db import Error as DBError

from reliability.clock import SYSTEM_CLOCK, Clock, epoch_datetime
from reliability.health.history import HealthRecorder, monitor_stale_after, prune_health_history
from reliability.health.runner import HealthRunner, process_runner
from reliability.redaction import redact_text

logger = structlog.get_logger(__name__)


async def run_health_monitor(
    *,
    interval: float,
    stop: asyncio.Event,
    sample_retention: dt.timedelta,
    transition_retention: dt.timedelta,
    runner: HealthRunner | None = None,
    recorder: HealthRecorder | None = None,
    clock: Clock = SYSTEM_CLOCK,
    max_rounds: int | None = None,
) -> int:
    """Every ``interval`` seconds: a fresh round, recorded, then pruning; until ``stop`` is set
    (the round in progress finishes first). Returns the number of rounds."""
    runner = runner or process_runner()
    recorder = recorder or HealthRecorder(stale_after=monitor_stale_after(interval))
    rounds = 0
    while not stop.is_set():
        started = time.monotonic()
        report = await runner.report(max_age=0)
        await sync_to_async(recorder.record)(report)
        if not recorder.pending:
            try:
                await sync_to_async(prune_health_history)(
                    now=epoch_datetime(clock.now()),
                    sample_retention=sample_retention,
                    transition_retention=transition_retention,
                )
            except DBError as error:
                logger.warning("health_prune_failed", error=redact_text(str(error)))
        rounds += 1
        if max_rounds is not None and rounds >= max_rounds:
            break
        remaining = interval - (time.monotonic() - started)
        if remaining > 0:
            try:
                await asyncio.wait_for(stop.wait(), remaining)
            except TimeoutError:
                pass
    return rounds


async def monitor_until_signalled(
    *,
    interval: float,
    sample_retention: dt.timedelta,
    transition_retention: dt.timedelta,
    once: bool = False,
) -> int:
    """``run_health_monitor`` in a process of its own: SIGTERM or SIGINT lets the round in
    progress finish, then it returns the number of rounds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(signum: int) -> None:
        if not stop.is_set():
            logger.info("health_monitor_stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    logger.info(
        "health_monitor_started",
        interval_seconds=interval,
        sample_retention_days=sample_retention.total_seconds() / 86400,
        transition_retention_days=transition_retention.total_seconds() / 86400,
    )
    rounds = await run_health_monitor(
        interval=interval,
        stop=stop,
        sample_retention=sample_retention,
        transition_retention=transition_retention,
        max_rounds=1 if once else None,
    )
    logger.info("health_monitor_stopped", rounds=rounds)
    return rounds
