"""Analyses and everything they produce: units, cards, events, cached results, LLM calls.

Counters on ``Analysis`` change with ``F()`` updates from the units' tasks; a unit's outcome, its
cards and its counters are written in one transaction, so a unit is finished exactly once and
its cards are never duplicated, however often an analysis is resumed.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AnalysisStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    COMPLETED = "completed", "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors", "completed with errors"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"
    TIMED_OUT = "timed_out", "timed out"


FINISHED_STATUSES = (
    AnalysisStatus.COMPLETED,
    AnalysisStatus.COMPLETED_WITH_ERRORS,
    AnalysisStatus.FAILED,
    AnalysisStatus.CANCELLED,
    AnalysisStatus.TIMED_OUT,
)


class Analysis(models.Model):
    """One run of Eidolon over one codebase."""

    source = models.CharField(max_length=2048, help_text="The path or URL as given (redacted).")
    source_kind = models.CharField(max_length=8, choices=[("local", "local"), ("git", "git")])
    ref = models.CharField(max_length=255, blank=True, default="")
    commit_sha = models.CharField(max_length=64, blank=True, default="")
    base_commit = models.CharField(
        max_length=64, blank=True, default="", help_text="Incremental: the commit compared with."
    )
    allow_any_path = models.BooleanField(
        default=False, help_text="Local paths outside EIDOLON_SOURCE_ROOTS (terminal only)."
    )
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100, blank=True, default="")
    prompt_version = models.CharField(max_length=32, blank=True, default="")
    concurrency = models.PositiveIntegerField(default=10)
    fallback_to_static = models.BooleanField(default=False)
    model_chain = models.JSONField(
        default=list,
        blank=True,
        help_text="The models it may review with, in order: the primary first, then fallbacks.",
    )
    upgrade_fallback_reviews = models.BooleanField(
        default=False,
        help_text="Review again with the primary model what the cache holds from a fallback.",
    )
    diff_base = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="Change review: only functions changed since this ref (empty: the whole tree).",
    )
    functions_selected = models.PositiveIntegerField(
        null=True, blank=True, help_text="Change review: the functions the diff selected."
    )
    diff_files = models.JSONField(
        default=list, blank=True, help_text="Change review: the Python files the diff touched."
    )
    max_duration = models.FloatField(default=3600.0, help_text="Seconds before it times out.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    status = models.CharField(
        max_length=24, choices=AnalysisStatus, default=AnalysisStatus.QUEUED, db_index=True
    )
    status_reason = models.TextField(blank=True, default="")
    waiting_reason = models.CharField(max_length=300, blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Who is running it: a worker holds a lease and renews it; when the worker dies the lease
    # expires and another worker resumes the analysis.
    lease_owner = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    runs = models.PositiveIntegerField(default=0, help_text="Times a worker started or resumed it.")

    functions_total = models.PositiveIntegerField(default=0)
    functions_analyzed = models.PositiveIntegerField(default=0)
    functions_cached = models.PositiveIntegerField(default=0)
    functions_failed = models.PositiveIntegerField(default=0)
    cards_count = models.PositiveIntegerField(default=0)
    llm_requests = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(
        max_digits=14, decimal_places=8, default=0, help_text="The sum of its calls' costs."
    )
    event_seq = models.PositiveBigIntegerField(default=0)

    file_errors = models.JSONField(default=list, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    model_usage = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text="Per model, what it did (selectors.analysis_model_usage), kept when it "
        "finished; null before.",
    )
    health_score = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "analyses"

    def __str__(self) -> str:
        return f"#{self.pk} {self.source} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def functions_done(self) -> int:
        return self.functions_analyzed + self.functions_cached + self.functions_failed

    @property
    def progress_percent(self) -> float:
        if not self.functions_total:
            return 100.0 if self.is_finished else 0.0
        return round(100.0 * self.functions_done / self.functions_total, 1)

    def progress_counts(self) -> dict[str, int | float]:
        """The counters a progress report shows (the API, the WebSocket and the terminal)."""
        return {
            "total": self.functions_total,
            "done": self.functions_done,
            "analyzed": self.functions_analyzed,
            "cached": self.functions_cached,
            "failed": self.functions_failed,
            "cards": self.cards_count,
            "requests": self.llm_requests,
            "percentage": self.progress_percent,
        }


class UnitStatus(models.TextChoices):
    PENDING = "pending", "pending"
    ANALYZED = "analyzed", "analyzed"
    CACHED = "cached", "cached"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped"


class CodeUnit(models.Model):
    """A function, method, class or module of an analysed codebase."""

    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, related_name="units")
    unit_id = models.CharField(max_length=1024, help_text="path::qualname, unique per analysis")
    kind = models.CharField(max_length=16)
    qualname = models.CharField(max_length=1024)
    path = models.CharField(max_length=1024)
    lineno = models.PositiveIntegerField()
    end_lineno = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    context_hash = models.CharField(max_length=64, blank=True, default="")
    complexity = models.PositiveIntegerField(default=1)
    reviewable = models.BooleanField(
        default=False, help_text="Reviewed on its own (functions and methods)."
    )
    status = models.CharField(
        max_length=12, choices=UnitStatus, default=UnitStatus.PENDING, db_index=True
    )
    failure_reason = models.TextField(blank=True, default="")
    model = models.CharField(
        max_length=100, blank=True, default="", help_text="The model that reviewed it."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["path", "lineno"]
        constraints = [
            models.UniqueConstraint(fields=["analysis", "unit_id"], name="unique_unit_per_analysis")
        ]
        indexes = [models.Index(fields=["analysis", "status"])]

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno} {self.qualname}"


class CardStatus(models.TextChoices):
    """Where the developer is with a card."""

    NEW = "new", "new"
    ACKNOWLEDGED = "acknowledged", "acknowledged"
    DISMISSED = "dismissed", "dismissed"
    FIXED = "fixed", "fixed"


class Card(models.Model):
    """A review finding: what is wrong, where, how bad, and how to fix it."""

    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, related_name="cards")
    unit = models.ForeignKey(CodeUnit, on_delete=models.CASCADE, related_name="cards")
    kind = models.CharField(max_length=16, db_index=True)
    severity = models.CharField(max_length=8, db_index=True)
    title = models.CharField(max_length=200)
    explanation = models.TextField()
    path = models.CharField(max_length=1024)
    line_start = models.PositiveIntegerField()
    line_end = models.PositiveIntegerField()
    fix = models.TextField(blank=True, default="")
    confidence = models.FloatField()
    source = models.CharField(max_length=16, help_text="anthropic or static")
    rule = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(
        max_length=100, blank=True, default="", help_text="The model that wrote it."
    )
    fingerprint = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_index=True,
        help_text="Stable across analyses of unchanged code (analyses.fingerprints).",
    )
    # The cited lines with a little context, kept because the source (a clone) is gone later.
    excerpt = models.TextField(blank=True, default="")
    excerpt_start = models.PositiveIntegerField(default=1, help_text="Line number of the first.")
    adjustment = models.CharField(
        max_length=300,
        blank=True,
        default="",
        help_text="How the model's finding was adjusted to be kept (lines moved into the "
        "function, repeats merged); empty when it was taken as given.",
    )
    status = models.CharField(
        max_length=16, choices=CardStatus, default=CardStatus.NEW, db_index=True
    )
    status_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["path", "line_start", "id"]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.title.replace('`', '')}"  # headings show no Markdown


class AnalysisEvent(models.Model):
    """What happened, in order: persisted first, then sent to WebSocket clients."""

    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=40)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["analysis", "seq"]
        constraints = [models.UniqueConstraint(fields=["analysis", "seq"], name="unique_event_seq")]

    def __str__(self) -> str:
        return f"#{self.analysis_id}.{self.seq} {self.type}"


class ResultCache(models.Model):
    """A reviewed unit's findings, reusable when the same code (and context) is seen again.

    Lines are stored relative to the unit's first line, so a function that moved in its file
    is still a hit.
    """

    key = models.CharField(max_length=64, unique=True)
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100, blank=True, default="")
    prompt_version = models.CharField(max_length=32, blank=True, default="")
    findings = models.JSONField(default=list)
    size_bytes = models.PositiveIntegerField(default=0)
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "cached result"

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} {self.key[:12]}"


class LLMCall(models.Model):
    """One request to the AI provider: the operator's cost view."""

    analysis = models.ForeignKey(
        Analysis, null=True, blank=True, on_delete=models.SET_NULL, related_name="llm_calls"
    )
    unit = models.ForeignKey(
        CodeUnit, null=True, blank=True, on_delete=models.SET_NULL, related_name="llm_calls"
    )
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100)
    attempt = models.PositiveSmallIntegerField()
    purpose = models.CharField(max_length=16, default="review", help_text="review or correction")
    status = models.CharField(max_length=40, help_text="ok, http_529, timeout, ...")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cache_read_input_tokens = models.PositiveIntegerField(default=0)
    cache_creation_input_tokens = models.PositiveIntegerField(default=0)
    findings_clamped = models.PositiveIntegerField(
        default=0, help_text="Findings of the reply whose lines were moved into the function."
    )
    findings_merged = models.PositiveIntegerField(
        default=0, help_text="Findings of the reply folded into one they repeated."
    )
    cost_usd = models.DecimalField(
        max_digits=14,
        decimal_places=8,
        null=True,
        blank=True,
        help_text="Priced when recorded, from the price table then; empty if the model had none.",
    )
    error = models.CharField(
        max_length=300, blank=True, default="", help_text="Why it failed (short, redacted)."
    )
    request_id = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "LLM call"

    def __str__(self) -> str:
        return f"{self.model} {self.status} {self.latency_ms} ms"
