"""Prometheus metrics of the resilience layer, ``eidolon_<thing>_<unit>``, labels declared here.

Counters and histograms are per process (aggregated by Prometheus, or by the multiprocess
collector when ``PROMETHEUS_MULTIPROC_DIR`` is set). Breaker and budget *state* is shared, so it
is read from the database when ``/metrics`` is scraped (``reliability.views``) rather than kept
in per-process gauges that would disagree. This module declares; it imports nothing of ours.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
CALL_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 90, 120)

breaker_calls = Counter(
    "eidolon_breaker_calls_total",
    "Call outcomes recorded by circuit breakers.",
    ["breaker", "outcome"],
)
breaker_rejections = Counter(
    "eidolon_breaker_rejections_total",
    "Calls a circuit breaker rejected without making them.",
    ["breaker", "state"],
)
breaker_transitions = Counter(
    "eidolon_breaker_transitions_total",
    "Circuit breaker state transitions.",
    ["breaker", "from_state", "to_state"],
)
ratelimit_requests = Counter(
    "eidolon_ratelimit_requests_total",
    "Requests admitted by a rate-limit budget.",
    ["budget"],
)
ratelimit_wait = Histogram(
    "eidolon_ratelimit_wait_seconds",
    "Time callers waited for the rate-limit budget.",
    ["budget"],
    buckets=WAIT_BUCKETS,
)
ratelimit_rejections = Counter(
    "eidolon_ratelimit_rejections_total",
    "Requests the budget refused (deadline or daily cap).",
    ["budget", "reason"],
)
ratelimit_requeued = Counter(
    "eidolon_ratelimit_requeued_total",
    "Reserved slots given up and queued for again (budget paused meanwhile, or caller late).",
    ["budget", "why"],
)
ratelimit_pauses = Counter(
    "eidolon_ratelimit_pauses_total",
    "Budget pauses after a 429 or exhausted rate-limit headers.",
    ["budget", "reason"],
)
ratelimit_tokens = Counter(
    "eidolon_ratelimit_tokens_total",
    "Tokens charged to a budget after reconciliation.",
    ["budget", "direction"],
)
guard_calls = Counter(
    "eidolon_guard_calls_total",
    "Attempts made through the guard, by outcome.",
    ["target", "outcome"],
)
guard_admissions = Counter(
    "eidolon_guard_admissions_total",
    "Admissions by the guard: inline (PostgreSQL's common case) or in a thread.",
    ["target", "path"],
)
guard_call_duration = Histogram(
    "eidolon_guard_call_duration_seconds",
    "Duration of each guarded attempt.",
    ["target"],
    buckets=CALL_BUCKETS,
)
retries = Counter(
    "eidolon_retries_total",
    "Retries the guard scheduled, by the reason of the failed attempt.",
    ["target", "reason"],
)
retries_denied = Counter(
    "eidolon_retries_denied_total",
    "Retries not made: retry budget spent, deadline too close or attempts exhausted.",
    ["target", "why"],
)


# --- health (reliability/health.py): per process; the shared history is in the database.

health_check_rounds = Counter(
    "eidolon_health_check_rounds_total",
    "Rounds of health checks this process ran (probes within the cache interval share one).",
)
health_check_duration = Histogram(
    "eidolon_health_check_duration_seconds",
    "Duration of each component's health check.",
    ["component"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
health_status = Gauge(
    "eidolon_health_status",
    "1 for the component's status at this process's last health check round, 0 for the others.",
    ["component", "status"],
    multiprocess_mode="livemax",
)


# --- database (reliability/dbmetrics.py, through every connection's execute wrapper)

db_queries = Counter(
    "eidolon_db_queries_total",
    "Total database queries",
    ["operation", "table"],
)
db_query_duration = Histogram(
    "eidolon_db_query_duration_seconds",
    "Database query duration",
    ["operation"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)
