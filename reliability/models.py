"""Shared reliability state: breakers, their transition history and rate-limit budgets.

Every process reads and changes these rows with single atomic statements (see breaker.py and
ratelimit.py); times that drive decisions are epoch seconds (``FloatField``) so that SQL
expressions can compare and add them on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

# A control's name: a target ("git"), or a family's member ("anthropic:claude-haiku-4-5",
# "submissions:42"). Room for "anthropic:" and a model name of up to 100 characters.
CONTROL_NAME = RegexValidator(
    r"\A[-a-zA-Z0-9_]+(:[-a-zA-Z0-9_.@]+)?\Z",
    "a name of letters, digits, '-' and '_', optionally followed by ':' and a member "
    "(letters, digits, '-', '_', '.', '@')",
)


def control_name_field(**options) -> models.CharField:
    return models.CharField(max_length=120, validators=[CONTROL_NAME], **options)


class BreakerState(models.TextChoices):
    CLOSED = "closed", "closed"
    OPEN = "open", "open"
    HALF_OPEN = "half_open", "half-open"
    FORCED_OPEN = "forced_open", "forced open"
    DISABLED = "disabled", "disabled"


class WindowType(models.TextChoices):
    COUNT = "count", "last N calls"
    TIME = "time", "last N seconds"


CONFIG_FIELDS = (
    "failure_threshold",
    "failure_rate_threshold",
    "window_type",
    "window_size",
    "minimum_calls",
    "slow_call_duration",
    "slow_call_rate_threshold",
    "recovery_timeout",
    "half_open_max_calls",
    "half_open_success_threshold",
    "half_open_max_duration",
)


class CircuitBreaker(models.Model):
    """One named breaker (``anthropic``, ``git``): its tuning and its live state."""

    name = control_name_field(unique=True)

    # --- tuning (operators edit these in the admin; every process reads them on each call)
    failure_threshold = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Consecutive failures that open the breaker.",
    )
    failure_rate_threshold = models.FloatField(
        default=50.0,
        validators=[MinValueValidator(1.0), MaxValueValidator(100.0)],
        help_text="Failure rate (%) over the sliding window that opens the breaker.",
    )
    window_type = models.CharField(max_length=8, choices=WindowType, default=WindowType.COUNT)
    window_size = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1)],
        help_text="Sliding window length: calls (count window) or seconds (time window).",
    )
    minimum_calls = models.PositiveIntegerField(
        default=10,
        validators=[MinValueValidator(1)],
        help_text="Calls the window must hold before failure and slow-call rates count.",
    )
    slow_call_duration = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.001)],
        help_text="Seconds after which a call counts as slow.",
    )
    slow_call_rate_threshold = models.FloatField(
        default=100.0,
        validators=[MinValueValidator(1.0), MaxValueValidator(100.0)],
        help_text="Slow-call rate (%) over the window that opens the breaker.",
    )
    recovery_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.0)],
        help_text="Seconds the breaker stays open before it lets probes through (half-open).",
    )
    half_open_max_calls = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1)],
        help_text="Probes admitted at once while half-open, across all processes.",
    )
    half_open_success_threshold = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1)],
        help_text="Successful probes that close the breaker.",
    )
    half_open_max_duration = models.FloatField(
        default=300.0,
        validators=[MinValueValidator(0.001)],
        help_text="Seconds half-open may last; a probe that never returns reopens the breaker.",
    )

    # --- live state (changed only by conditional UPDATEs in breaker.py)
    state = models.CharField(max_length=16, choices=BreakerState, default=BreakerState.CLOSED)
    generation = models.BigIntegerField(
        default=0, help_text="Bumped on every transition; late outcomes of older ones are ignored."
    )
    state_changed_at = models.FloatField(default=0.0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    window_started_at = models.FloatField(default=0.0)
    window_calls = models.PositiveIntegerField(default=0)
    window_failures = models.PositiveIntegerField(default=0)
    window_slow_calls = models.PositiveIntegerField(default=0)
    previous_window_calls = models.PositiveIntegerField(default=0)
    previous_window_failures = models.PositiveIntegerField(default=0)
    previous_window_slow_calls = models.PositiveIntegerField(default=0)
    half_open_in_flight = models.PositiveIntegerField(default=0)
    half_open_successes = models.PositiveIntegerField(default=0)
    last_success_at = models.FloatField(null=True, blank=True)
    last_failure_at = models.FloatField(null=True, blank=True)

    # --- lifetime totals (never reset; what operators and tests add up)
    total_successes = models.BigIntegerField(default=0)
    total_failures = models.BigIntegerField(default=0)
    total_ignored = models.BigIntegerField(default=0)
    total_rejected = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        # Changing what the service does (breaker actions, thresholds, budget limits and
        # pauses) needs this beyond the model's change permission: staff may look, operators act.
        permissions = [
            (
                "operate_controls",
                "Can operate reliability controls (breaker actions, thresholds, budgets)",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_state_display()})"

    def clean(self) -> None:
        if self.window_type == WindowType.COUNT and self.minimum_calls > self.window_size:
            raise ValidationError(
                {"minimum_calls": "A count window of N calls never holds more than N calls."}
            )

    @property
    def total_calls(self) -> int:
        return self.total_successes + self.total_failures + self.total_ignored

    @property
    def open_until(self) -> float | None:
        if self.state == BreakerState.OPEN:
            return self.state_changed_at + self.recovery_timeout
        return None


class BreakerTransition(models.Model):
    """A breaker's state change, with why and who: the history operators read."""

    breaker = models.ForeignKey(
        CircuitBreaker, on_delete=models.CASCADE, related_name="transitions"
    )
    from_state = models.CharField(max_length=16, choices=BreakerState)
    to_state = models.CharField(max_length=16, choices=BreakerState)
    reason = models.TextField()
    actor = models.CharField(max_length=150, default="system")
    generation = models.BigIntegerField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["breaker", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.breaker.name}: {self.from_state} -> {self.to_state} by {self.actor}"


BUDGET_LIMIT_FIELDS = (
    "window_seconds",
    "requests_per_window",
    "input_tokens_per_window",
    "output_tokens_per_window",
    "requests_per_day",
    "tokens_per_day",
    "tokens_per_analysis",
    "usd_per_day",
    "usd_per_analysis",
)


class RateLimitBudget(models.Model):
    """A named budget (``anthropic``): limits per window and per day, and its shared state.

    Per-window limits are enforced GCRA-style without bursts: each admitted request moves a
    "theoretical arrival time" forward by window/limit (times its cost, for tokens), so one
    row holds the whole state and one UPDATE admits a request.
    """

    name = control_name_field(unique=True)

    window_seconds = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.01)],
        help_text="The window the per-window limits apply to (60 s: per minute).",
    )
    requests_per_window = models.PositiveIntegerField(
        default=50, validators=[MinValueValidator(1)], help_text="Requests per window (RPM)."
    )
    input_tokens_per_window = models.PositiveIntegerField(
        default=40_000,
        validators=[MinValueValidator(1)],
        help_text="Input tokens per window (ITPM).",
    )
    output_tokens_per_window = models.PositiveIntegerField(
        default=8_000,
        validators=[MinValueValidator(1)],
        help_text="Output tokens per window (OTPM).",
    )
    requests_per_day = models.PositiveIntegerField(
        default=5_000,
        validators=[MinValueValidator(1)],
        help_text="Requests per UTC day (RPD).",
    )
    tokens_per_day = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Optional cap on input+output tokens per UTC day."
    )
    tokens_per_analysis = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Optional cap on input+output tokens per analysis."
    )
    usd_per_day = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Optional cap on spend per UTC day, in US dollars (priced from the price table).",
    )
    usd_per_analysis = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Optional cap on spend per analysis, in US dollars.",
    )

    # --- shared state (changed only by atomic UPDATEs in ratelimit.py)
    next_request_at = models.FloatField(default=0.0)
    next_input_at = models.FloatField(default=0.0)
    next_output_at = models.FloatField(default=0.0)
    # Output-token time given back by replies smaller than their estimate, ever: callers
    # waiting for a slot move theirs earlier by what was given back since they reserved.
    output_seconds_returned = models.FloatField(default=0.0)
    # How much later than their other dimensions allowed the queued slots start, for want of
    # output tokens (summed since the queue was last empty): as far as the other dimensions'
    # next slots follow returned output time.
    output_slack = models.FloatField(default=0.0)
    paused_until = models.FloatField(default=0.0)
    pause_reason = models.CharField(max_length=200, blank=True, default="")
    day_started_at = models.FloatField(default=0.0)
    day_requests = models.PositiveIntegerField(default=0)
    day_tokens = models.PositiveBigIntegerField(default=0)
    window_started_at = models.FloatField(default=0.0)
    window_requests = models.PositiveIntegerField(default=0)
    window_input_tokens = models.PositiveBigIntegerField(default=0)
    window_output_tokens = models.PositiveBigIntegerField(default=0)
    observed_requests_limit = models.PositiveIntegerField(null=True, blank=True)
    observed_input_tokens_limit = models.PositiveIntegerField(null=True, blank=True)
    observed_output_tokens_limit = models.PositiveIntegerField(null=True, blank=True)
    total_requests = models.BigIntegerField(default=0)
    total_input_tokens = models.BigIntegerField(default=0)
    total_output_tokens = models.BigIntegerField(default=0)
    day_cost_usd = models.DecimalField(
        max_digits=14, decimal_places=8, default=0, help_text="Spend this UTC day (US dollars)."
    )
    total_cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ControlChange(models.Model):
    """An operator's change to a breaker or a budget: a setting edited (old and new values) or
    an action taken (with the reason given). The history beside the breaker's transitions."""

    class Target(models.TextChoices):
        BREAKER = "breaker", "breaker"
        BUDGET = "budget", "budget"

    target = models.CharField(max_length=8, choices=Target)
    name = control_name_field(help_text="The breaker's or budget's name.")
    action = models.CharField(max_length=32, help_text="edit, reset, force_open, resume, ...")
    changes = models.JSONField(
        default=dict, blank=True, help_text='Edited settings: {"field": [old, new]}.'
    )
    reason = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target", "name", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.target} {self.name}: {self.action} by {self.actor}"


PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_write_per_mtok", "cache_read_per_mtok")


def _price_field(help_text: str) -> models.DecimalField:
    return models.DecimalField(
        max_digits=10, decimal_places=4, validators=[MinValueValidator(0)], help_text=help_text
    )


class ModelPrice(models.Model):
    """What one model's tokens cost, in US dollars per million. A call's price is frozen on its
    ``LLMCall`` row when it is recorded, so editing a price changes only calls made after."""

    model = models.CharField(
        max_length=100,
        unique=True,
        help_text="The model's name, or a prefix of it (claude-sonnet-4-5 prices "
        "claude-sonnet-4-5-20250929); the longest matching prefix wins.",
    )
    input_per_mtok = _price_field("Input tokens, $ per million.")
    output_per_mtok = _price_field("Output tokens, $ per million.")
    cache_write_per_mtok = _price_field("Cache writes (5-minute), $ per million.")
    cache_read_per_mtok = _price_field("Cache reads, $ per million.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]
        verbose_name = "model price"

    def __str__(self) -> str:
        return self.model


# --- health


class HealthStatus(models.TextChoices):
    HEALTHY = "healthy", "healthy"
    DEGRADED = "degraded", "degraded"
    UNHEALTHY = "unhealthy", "unhealthy"
    UNKNOWN = "unknown", "unknown (no data)"


# What a round of checks reports of each component (``HealthComponentState`` keeps the latest).
HEALTH_COMPONENT_FIELDS = ("name", "status", "critical", "message", "detail", "latency_ms")


class HealthComponentState(models.Model):
    """A checked component (``database``, ``disk`` ... and ``overall``): its current status.

    Written by the health monitor (``manage.py health_monitor``) after each round; the web
    processes answer probes from their own checks, not from this table.
    """

    name = models.SlugField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=HealthStatus, default=HealthStatus.UNKNOWN)
    critical = models.BooleanField(
        default=False, help_text="An unhealthy critical component makes the service unready."
    )
    message = models.TextField(blank=True, default="", help_text="What anyone may see.")
    detail = models.TextField(
        blank=True, default="", help_text="Error details for staff (secrets redacted)."
    )
    latency_ms = models.FloatField(null=True, blank=True)
    since = models.DateTimeField(help_text="When the current status began.")
    checked_at = models.DateTimeField(null=True, blank=True, help_text="Last observation.")

    class Meta:
        ordering = ["name"]
        verbose_name = "health component"

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class HealthTransition(models.Model):
    """A component's status change, like healthchecks.io's flips: from, to, why and when."""

    component = models.ForeignKey(
        HealthComponentState, on_delete=models.CASCADE, related_name="transitions"
    )
    from_status = models.CharField(max_length=16, choices=HealthStatus)
    to_status = models.CharField(max_length=16, choices=HealthStatus)
    message = models.TextField(blank=True, default="")
    detail = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["component", "created_at"])]
        verbose_name = "health transition"

    def __str__(self) -> str:
        return f"{self.component.name}: {self.from_status} -> {self.to_status}"


class HealthSample(models.Model):
    """One observation of one component by the monitor; pruned after the retention period."""

    component = models.ForeignKey(
        HealthComponentState, on_delete=models.CASCADE, related_name="samples"
    )
    status = models.CharField(max_length=16, choices=HealthStatus)
    latency_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["component", "created_at"])]
        verbose_name = "health sample"

    def __str__(self) -> str:
        return f"{self.component.name}: {self.status} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class WorkerHeartbeat(models.Model):
    """A task worker (``manage.py worker``) says it is alive every few seconds."""

    worker_id = models.CharField(max_length=64, unique=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]
        verbose_name = "worker heartbeat"

    def __str__(self) -> str:
        return f"{self.worker_id} on {self.host} (pid {self.pid})"
