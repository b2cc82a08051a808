"""Record health history: every N seconds run all checks, store changes and samples, prune.

    manage.py health_monitor [--interval S] [--sample-retention-days D]
                             [--transition-retention-days D] [--once]

Run exactly one per deployment (it writes the shared history). SIGTERM or SIGINT lets the
round in progress finish, then the command exits 0.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal

import structlog
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from reliability.health import run_health_monitor

logger = structlog.get_logger(__name__)


class Command(BaseCommand):
    help = "Sample every health check periodically and keep the health history (transitions)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.EIDOLON_HEALTH_MONITOR_INTERVAL,
            help="Seconds between rounds (default: EIDOLON_HEALTH_MONITOR_INTERVAL, %(default)s)",
        )
        parser.add_argument(
            "--sample-retention-days",
            type=float,
            default=settings.EIDOLON_HEALTH_SAMPLE_RETENTION_DAYS,
            help="Keep samples this many days (default: %(default)s)",
        )
        parser.add_argument(
            "--transition-retention-days",
            type=float,
            default=settings.EIDOLON_HEALTH_TRANSITION_RETENTION_DAYS,
            help="Keep transitions this many days (default: %(default)s)",
        )
        parser.add_argument("--once", action="store_true", help="Run one round and exit.")

    def handle(
        self,
        *args,
        interval: float,
        sample_retention_days: float,
        transition_retention_days: float,
        once: bool,
        **options,
    ) -> None:
        rounds = asyncio.run(
            self.monitor(
                interval=max(0.1, interval),
                sample_retention=dt.timedelta(days=sample_retention_days),
                transition_retention=dt.timedelta(days=transition_retention_days),
                once=once,
            )
        )
        if once and options["verbosity"] > 0:
            self.stdout.write(f"health monitor: {rounds} round recorded")

    async def monitor(
        self,
        *,
        interval: float,
        sample_retention: dt.timedelta,
        transition_retention: dt.timedelta,
        once: bool,
    ) -> int:
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
