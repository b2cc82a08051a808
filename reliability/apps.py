from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig
from django.db.models.signals import post_migrate

if TYPE_CHECKING:
    from reliability.health.runner import HealthRunner


class ReliabilityConfig(AppConfig):
    name = "reliability"
    verbose_name = "Reliability"
    default_auto_field = "django.db.models.BigAutoField"

    health_runner: HealthRunner

    def ready(self) -> None:
        from reliability import dbmetrics
        from reliability.first_start import create_named_controls_after_migrate
        from reliability.health.runner import HealthRunner

        dbmetrics.install()  # every connection counts its queries (connects a signal only)
        # Operators see the named breakers and budgets from the first start (first_start.py).
        post_migrate.connect(
            create_named_controls_after_migrate,
            sender=self,
            dispatch_uid="reliability.create_named_controls",
        )

        # The process's health runner (reliability.health.runner.process_runner): its probes
        # share its rounds for as long as the process lives. Making it starts nothing: its
        # threads start with the first round.
        self.health_runner = HealthRunner()
