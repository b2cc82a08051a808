"""Prometheus metrics of the product: analyses, AI API calls, the result cache, WebSockets.

Names, labels and buckets of the seed's section 3.1 where it names them. Counters and
histograms are per process and add up across processes (multiprocess mode under
``PROMETHEUS_MULTIPROC_DIR``). What describes shared state (analyses running, the cache's size)
is read from the database at scrape time by ``AnalysesStateCollector``, never kept in a
per-process gauge. The orchestrator and the consumer call the ``record_*`` functions below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.db.models import Count, Max, Sum
from django.db.models.functions import Coalesce
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from analyses.models import Analysis, AnalysisStatus, LLMCall, ResultCache

T = TypeVar("T")

# --- analyses

analysis_total = Counter(
    "eidolon_analyses_total",
    "Total number of analyses started",  # the seed's words; counted when one ends, by its end
    ["mode", "status"],
)
analysis_duration = Histogram(
    "eidolon_analysis_duration_seconds",
    "Analysis duration in seconds",
    ["mode"],
    buckets=[1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
)
analysis_units = Counter(
    "eidolon_analysis_units_total",
    "Units of code that ended, by outcome (analyzed, cached, failed, skipped).",
    ["outcome"],
)
analysis_units_deferred = Counter(
    "eidolon_analysis_units_deferred_total",
    "Units sent back to the end of their analysis's queue after a transient failure, by the "
    "last attempt's cause (http_529, http_429, timeout, connection_error...).",
    ["reason"],
)

# --- AI API (one per attempt, as LLMCall stores them)

ai_api_calls_total = Counter(
    "eidolon_ai_api_calls_total",
    "Total AI API calls",
    ["status", "model"],
)
ai_api_tokens_total = Counter(
    "eidolon_ai_api_tokens_total",
    "Total tokens used",
    ["type", "model"],  # type: input, output, cache_read, cache_write
)
ai_findings_adjusted_total = Counter(
    "eidolon_ai_findings_adjusted_total",
    "Findings of AI replies kept after an adjustment: lines clamped into the unit, or merged "
    "into a finding they repeated.",
    ["kind"],  # clamped, merged
)
ai_api_latency = Histogram(
    "eidolon_ai_api_latency_seconds",
    "AI API call latency",
    ["model"],
    buckets=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 90],
)

# --- the result cache (analyses.models.ResultCache)

cache_operations_total = Counter(
    "eidolon_cache_operations_total",
    "Total cache operations",
    ["operation", "result"],  # get: hit/miss/error; set: success/error
)

# --- live progress WebSockets

websocket_connections = Gauge(
    "eidolon_websocket_connections",
    "WebSockets open now (summed over the live processes).",
    multiprocess_mode="livesum",
)
websocket_connections_opened = Counter(
    "eidolon_websocket_connections_opened_total",
    "WebSockets accepted.",
)
websocket_messages_sent = Counter(
    "eidolon_websocket_messages_sent_total",
    "Messages sent to WebSocket clients, by type (analysis.progress, card.created, keepalive...).",
    ["type"],
)


def analysis_mode(analysis: Analysis) -> str:
    """``incremental`` when compared with a base commit, else ``full``."""
    return "incremental" if analysis.base_commit else "full"


def record_analysis_finished(analysis: Analysis, *, status: str) -> None:
    mode = analysis_mode(analysis)
    analysis_total.labels(mode=mode, status=status).inc()
    if analysis.started_at is not None:
        analysis_duration.labels(mode=mode).observe(
            max(0.0, time.time() - analysis.started_at.timestamp())
        )


def record_units(outcomes: Sequence[Any]) -> None:
    """Units just written (``store.UnitOutcome``: each is finished once)."""
    for outcome in outcomes:
        analysis_units.labels(outcome=outcome.status).inc()


def record_unit_deferred(cause: str) -> None:
    analysis_units_deferred.labels(reason=cause[:40] or "unknown").inc()


def record_units_skipped(count: int) -> None:
    if count:
        analysis_units.labels(outcome="skipped").inc(count)


def ai_call_status(status: str) -> str:
    """The guard's reason for the attempt, ``ok`` spelt ``success`` as the seed spells it."""
    return "success" if status == "ok" else status


def record_ai_call(record: Any) -> None:
    """One attempt (an ``LLMCallRecord``): exactly what ``LLMCall`` stores of it."""
    ai_api_calls_total.labels(status=ai_call_status(record.status), model=record.model).inc()
    ai_api_latency.labels(model=record.model).observe(record.latency_ms / 1000)
    for kind, tokens in (
        ("input", record.input_tokens),
        ("output", record.output_tokens),
        ("cache_read", record.cache_read_input_tokens),
        ("cache_write", record.cache_creation_input_tokens),
    ):
        if tokens:
            ai_api_tokens_total.labels(type=kind, model=record.model).inc(tokens)
    for kind, count in (("clamped", record.findings_clamped), ("merged", record.findings_merged)):
        if count:
            ai_findings_adjusted_total.labels(kind=kind).inc(count)


def record_cache_miss() -> None:
    """A unit whose key the cache did not hold (found out in one query for the whole run)."""
    cache_operations_total.labels(operation="get", result="miss").inc()


def counted_cache_get(lookup: Callable[..., T | None]) -> Callable[..., T | None]:
    """``lookup`` (``store.cache_lookup``), counted as a get: hit, miss or error."""

    def get(*args: Any, **kwargs: Any) -> T | None:
        try:
            found = lookup(*args, **kwargs)
        except Exception:
            cache_operations_total.labels(operation="get", result="error").inc()
            raise
        result = "miss" if found is None else "hit"
        cache_operations_total.labels(operation="get", result=result).inc()
        return found

    return get


def counted_cache_set(store: Callable[..., None]) -> Callable[..., None]:
    """``store`` (``store.cache_store``), counted as a set: success or error."""

    def set_(*args: Any, **kwargs: Any) -> None:
        try:
            store(*args, **kwargs)
        except Exception:
            cache_operations_total.labels(operation="set", result="error").inc()
            raise
        cache_operations_total.labels(operation="set", result="success").inc()

    return set_


def record_websocket_opened() -> None:
    websocket_connections_opened.inc()
    websocket_connections.inc()


def record_websocket_closed() -> None:
    websocket_connections.dec()


def record_websocket_message(message: Mapping[str, Any]) -> None:
    websocket_messages_sent.labels(type=str(message.get("type", ""))[:40]).inc()


def ai_cost_today_family(now: float) -> Metric:
    """What each model's calls cost since 00:00 UTC, from the calls as stored (priced when made;
    unpriced calls add nothing): the cost of falling back, per model, at scrape time."""
    family = GaugeMetricFamily(
        "eidolon_ai_cost_today_usd",
        "US dollars the AI calls of each model cost today (UTC), as priced when made.",
        labels=["model"],
    )
    since = datetime.fromtimestamp(now - now % 86_400, tz=UTC)
    rows = (
        LLMCall.objects.filter(created_at__gte=since, cost_usd__isnull=False)
        .order_by()
        .values_list("model")
        .annotate(cost=Sum("cost_usd"))
    )
    for model, cost in rows:
        family.add_metric([model], float(cost))
    return family


class AnalysesStateCollector(Collector):
    """Analyses running, the result cache's size, the longest a running analysis has gone
    without finishing a unit, today's AI cost per model: read from the database at scrape
    time."""

    def collect(self) -> Iterator[Metric]:
        running = Analysis.objects.filter(status=AnalysisStatus.RUNNING)
        yield GaugeMetricFamily(
            "eidolon_active_analyses",
            "Number of currently running analyses",
            value=running.count(),
        )
        cache = ResultCache.objects.aggregate(
            entries=Count("id"), size_bytes=Coalesce(Sum("size_bytes"), 0)
        )
        yield GaugeMetricFamily(
            "eidolon_cache_size_bytes", "Current cache size in bytes", value=cache["size_bytes"]
        )
        yield GaugeMetricFamily(
            "eidolon_cache_entries", "Number of entries in cache", value=cache["entries"]
        )
        now = time.time()
        idle = [
            now - max(filter(None, (started_at, last_unit))).timestamp()
            for started_at, last_unit in running.annotate(
                last_unit=Max("units__finished_at")
            ).values_list("started_at", "last_unit")
            if started_at or last_unit
        ]
        yield GaugeMetricFamily(
            "eidolon_analysis_seconds_without_progress",
            "The longest a running analysis has gone without finishing a unit (0: none running).",
            value=max(idle, default=0.0),
        )
        yield ai_cost_today_family(now)
