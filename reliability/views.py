"""``/metrics``: this process's metrics (or every process's, in multiprocess mode) plus the
shared breaker and budget state, read from the database at scrape time so that every process
reports the same."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reliability.breaker import window_stats
from reliability.models import BreakerState, CircuitBreaker, RateLimitBudget


class SharedStateCollector(Collector):
    """Breaker and budget state read from the database at scrape time."""

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        state = GaugeMetricFamily(
            "eidolon_breaker_state",
            "1 for the breaker's current state, 0 for the others.",
            labels=["breaker", "state"],
        )
        consecutive = GaugeMetricFamily(
            "eidolon_breaker_consecutive_failures",
            "Consecutive failures counted by the breaker.",
            labels=["breaker"],
        )
        failure_rate = GaugeMetricFamily(
            "eidolon_breaker_failure_rate_percent",
            "Failure rate over the breaker's sliding window.",
            labels=["breaker"],
        )
        for breaker in CircuitBreaker.objects.all():
            for choice in BreakerState.values:
                state.add_metric([breaker.name, choice], 1.0 if breaker.state == choice else 0.0)
            consecutive.add_metric([breaker.name], breaker.consecutive_failures)
            failure_rate.add_metric([breaker.name], window_stats(breaker, now=now).failure_rate)
        paused = GaugeMetricFamily(
            "eidolon_ratelimit_paused_seconds",
            "Seconds until a paused budget admits again (0 when not paused).",
            labels=["budget"],
        )
        backlog = GaugeMetricFamily(
            "eidolon_ratelimit_backlog_seconds",
            "How far ahead the budget has reserved requests (queueing delay for a new caller).",
            labels=["budget"],
        )
        for budget in RateLimitBudget.objects.all():
            paused.add_metric([budget.name], max(0.0, budget.paused_until - now))
            backlog.add_metric([budget.name], max(0.0, budget.next_request_at - now))
        yield from (state, consecutive, failure_rate, paused, backlog)


_shared_state_registry = CollectorRegistry(auto_describe=False)
_shared_state_registry.register(SharedStateCollector())


def exposition() -> bytes:
    """The text of ``/metrics``: this process's (or all processes') metrics plus shared state."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_shared_state_registry)


def metrics(request):
    """Prometheus exposition: per-process (or multiprocess) metrics plus shared breaker state."""
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
