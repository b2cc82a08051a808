"""Reading a Prometheus scrape in tests: samples by name and labels, and the seed's metrics."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

# The seed's section 3.1: sample name -> the labels it carries (besides ``le``).
SEED_SAMPLES: Mapping[str, set[str]] = {
    "eidolon_analyses_total": {"mode", "status"},
    "eidolon_analysis_duration_seconds_bucket": {"mode", "le"},
    "eidolon_active_analyses": set(),
    "eidolon_ai_api_calls_total": {"status", "model"},
    # Issue 15: the AI metrics carry the model that served (the seed had no model chain).
    "eidolon_ai_api_tokens_total": {"type", "model"},
    "eidolon_ai_api_latency_seconds_bucket": {"model", "le"},
    "eidolon_cache_operations_total": {"operation", "result"},
    "eidolon_cache_size_bytes": set(),
    "eidolon_cache_entries": set(),
    "eidolon_db_queries_total": {"operation", "table"},
    "eidolon_db_query_duration_seconds_bucket": {"operation", "le"},
    "eidolon_system_info": {"version", "python", "django", "database", "channel_layer", "model"},
}
SEED_BUCKETS: Mapping[str, list[float]] = {
    "eidolon_analysis_duration_seconds_bucket": [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    "eidolon_ai_api_latency_seconds_bucket": [0.1, 0.5, 1, 2, 5, 10, 30, 60, 90],
    "eidolon_db_query_duration_seconds_bucket": [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
}

Labels = frozenset[tuple[str, str]]


class Scrape:
    """One ``/metrics`` text: ``scrape.value("name", label=value)``, summed over the samples
    that carry those labels (whatever their other labels)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                by_labels = self.samples.setdefault(sample.name, {})
                by_labels[frozenset(sample.labels.items())] = sample.value

    def value(self, name: str, **labels: str) -> float:
        wanted = set(labels.items())
        return sum(
            value
            for sample_labels, value in self.samples.get(name, {}).items()
            if wanted <= sample_labels
        )

    def label_sets(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for labels in self.samples.get(name, {})]

    def names(self) -> set[str]:
        return set(self.samples)
