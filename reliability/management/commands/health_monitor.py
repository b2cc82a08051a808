"""Record health history: every N seconds run all checks, store changes and samples, prune.

    manage.py health_monitor [--interval S] [--sample-retention-days D]
                             [--transition-retention-days D] [--once]

Run exactly one per deployment (it writes the shared history). SIGTERM or SIGINT lets the
round in progress finish, then the command exits 0. The loop is
``reliability.health.monitor``.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from django.core.management.base import BaseCommand, CommandParser

from reliability.health.monitor import monitor_until_signalled
from reliability.management.options import add_setting_option


class Command(BaseCommand):
    help = "Sample every health check periodically and keep the health history (transitions)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_setting_option(
            parser,
            "--interval",
            "EIDOLON_HEALTH_MONITOR_INTERVAL",
            type=float,
            help="Seconds between rounds",
        )
        add_setting_option(
            parser,
            "--sample-retention-days",
            "EIDOLON_HEALTH_SAMPLE_RETENTION_DAYS",
            type=float,
            help="Keep samples this many days",
        )
        add_setting_option(
            parser,
            "--transition-retention-days",
            "EIDOLON_HEALTH_TRANSITION_RETENTION_DAYS",
            type=float,
            help="Keep transitions this many days",
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
            monitor_until_signalled(
                interval=max(0.1, interval),
                sample_retention=dt.timedelta(days=sample_retention_days),
                transition_retention=dt.timedelta(days=transition_retention_days),
                once=once,
            )
        )
        if once and options["verbosity"] > 0:
            self.stdout.write(f"health monitor: {rounds} round recorded")
