"""``/metrics``'s building blocks: the resilience layer's shared state read from the database at
scrape time, the scrape-time cache every such reading goes through, and the exposition of this
process's metrics (or every process's, in multiprocess mode). ``eidolon_site.metrics`` composes
them with the analyses' own readings and serves the view.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Generic, TypeVar

from django.conf import settings
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reliability.breaker import window_stats
from reliability.health.checks import existing_ancestor
from reliability.models import BreakerState, CircuitBreaker, RateLimitBudget, WorkerHeartbeat
from reliability.ratelimit import utc_day_start

T = TypeVar("T")


class SharedStateCollector(Collector):
    """Breaker and budget state, live workers and the data volume, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        yield from breaker_families(now)
        yield from budget_families(now)
        yield workers_alive_family(now)
        yield from disk_families()


def breaker_families(now: float) -> list[Metric]:
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
    return [state, consecutive, failure_rate]


def budget_families(now: float) -> list[Metric]:
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
    remaining = GaugeMetricFamily(
        "eidolon_ratelimit_day_requests_remaining",
        "Requests the budget still admits today (UTC), under its requests-per-day limit.",
        labels=["budget"],
    )
    used = GaugeMetricFamily(
        "eidolon_ratelimit_day_used_ratio",
        "The larger of today's requests and tokens over their daily limits (1 = spent).",
        labels=["budget"],
    )
    today = utc_day_start(now)
    for budget in RateLimitBudget.objects.all():
        requests, tokens = (
            (budget.day_requests, budget.day_tokens) if budget.day_started_at >= today else (0, 0)
        )
        paused.add_metric([budget.name], max(0.0, budget.paused_until - now))
        backlog.add_metric([budget.name], max(0.0, budget.next_request_at - now))
        remaining.add_metric([budget.name], max(0, budget.requests_per_day - requests))
        ratios = [requests / budget.requests_per_day]
        if budget.tokens_per_day:
            ratios.append(tokens / budget.tokens_per_day)
        used.add_metric([budget.name], max(ratios))
    return [paused, backlog, remaining, used]


def workers_alive_family(now: float) -> Metric:
    stale = settings.EIDOLON_HEALTH_WORKER_STALE_SECONDS
    alive = WorkerHeartbeat.objects.filter(
        stopped_at__isnull=True,
        last_seen_at__gte=timezone.now() - timedelta(seconds=stale),
    ).count()
    return GaugeMetricFamily(
        "eidolon_workers_alive",
        f"Task workers with a heartbeat in the last {stale:g} s (and not stopped).",
        value=alive,
    )


def disk_families() -> list[Metric]:
    """The data volume (``EIDOLON_HEALTH_DISK_PATH``, as the disk health check reads it)."""
    path = existing_ancestor(settings.EIDOLON_HEALTH_DISK_PATH)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return []
    free = GaugeMetricFamily(
        "eidolon_disk_free_bytes",
        "Bytes available to Eidolon on the data volume (EIDOLON_HEALTH_DISK_PATH).",
        value=usage.free,
    )
    total = GaugeMetricFamily(
        "eidolon_disk_total_bytes", "Size of the data volume in bytes.", value=usage.total
    )
    return [free, total]


class Recent(Generic[T]):
    """The value of ``read()`` as read at most ``ttl()`` seconds ago by this process: a burst
    of readers (scrapes, visitors) costs one read of the shared state."""

    def __init__(self, read: Callable[[], T], *, ttl: Callable[[], float]) -> None:
        self._read = read
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value: T | None = None
        self._read_at: float | None = None

    def get(self) -> T:
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self._ttl():
                self._value = self._read()
                self._read_at = now
            return self._value  # type: ignore[return-value]

    def clear(self) -> None:
        with self._lock:
            self._read_at = None


class ScrapeCache(Recent[bytes]):
    """The text of the shared-state collectors, computed at most once per ``ttl`` seconds per
    process: scrapes from several Prometheus servers (or a reload storm) cost one set of reads."""

    def __init__(self, collectors: Sequence[Collector], *, ttl: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            self.registry.register(collector)
        super().__init__(lambda: generate_latest(self.registry), ttl=ttl)

    def text(self) -> bytes:
        return self.get()


def process_registry() -> CollectorRegistry:
    """Every process's counters and histograms in multiprocess mode, else this process's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    forget_dead_processes(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def forget_dead_processes(directory: Path) -> None:
    """Drop the live-gauge files of processes that are gone (a killed one never says so):
    their "live" gauges (open WebSockets, health status) must stop counting."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass


def exposition(shared_state: ScrapeCache) -> bytes:
    """The text of ``/metrics``: the processes' metrics plus the shared state."""
    return generate_latest(process_registry()) + shared_state.text()
