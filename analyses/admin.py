"""Operators' view of analyses: progress, errors, cards, the cost of every AI call, the cache.

Everything here is written by the system: pages show it, and offer no Save or Delete (an analysis
is started with the Add form, then only cancelled or resumed; cached results can be cleared)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Case, Count, IntegerField, Sum, Value, When
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from analyses.findings import SEVERITIES
from analyses.highlighting import highlighted_excerpt
from analyses.markdown import render_markdown
from analyses.models import Analysis, AnalysisStatus, Card, CodeUnit, LLMCall, ResultCache
from analyses.services import (
    PROVIDERS,
    InvalidAnalysisRequest,
    analysis_cancel,
    analysis_create,
    analysis_enqueue,
    analysis_resume,
    default_provider,
)
from analyses.store import cache_evict, cache_statistics
from reliability.display import format_usd, time_column, usd_column

STATUS_COLOURS = {
    AnalysisStatus.QUEUED: "#868e96",
    AnalysisStatus.RUNNING: "#1c7ed6",
    AnalysisStatus.COMPLETED: "#2b8a3e",
    AnalysisStatus.COMPLETED_WITH_ERRORS: "#e67700",
    AnalysisStatus.FAILED: "#c92a2a",
    AnalysisStatus.CANCELLED: "#862e9c",
    AnalysisStatus.TIMED_OUT: "#c92a2a",
}
SOURCE_CHARS = 24
SEVERITY_COLOURS = {"high": "#c92a2a", "medium": "#e67700", "low": "#1c7ed6"}
# Read-only change pages: a Close link instead of the Save buttons.
NO_SAVE = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}


def badge(colour: str, text: str) -> str:
    return format_html('<span class="badge" style="background:{}">{}</span>', colour, text)


def severity_rank() -> Case:
    """Most severe first (high, medium, low), not alphabetical; unknown ones last."""
    return Case(
        *(When(severity=severity, then=Value(rank)) for rank, severity in enumerate(SEVERITIES)),
        default=Value(len(SEVERITIES)),
        output_field=IntegerField(),
    )


def analysis_link(analysis: Analysis | None) -> str:
    if analysis is None:
        return "-"
    url = reverse("admin:analyses_analysis_change", args=[analysis.pk])
    return format_html('<a href="{}">#{}</a>', url, analysis.pk)


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class StartAnalysisForm(forms.ModelForm):
    """The admin's "Add analysis": validated and created by the same service as the web form,
    the API and the terminal; a user's mistake shows next to its field."""

    provider = forms.ChoiceField(choices=[(name, name) for name in PROVIDERS])

    class Meta:
        model = Analysis
        fields = ["source", "ref", "provider", "fallback_to_static"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].initial = default_provider()
        self.fields["source"].help_text = (
            "A git URL (https://, ssh://, user@host:path) or a directory under "
            "EIDOLON_SOURCE_ROOTS."
        )

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.instance = analysis_create(
                source=cleaned["source"].strip(),
                ref=cleaned.get("ref", "").strip() or None,
                provider=cleaned["provider"],
                fallback_to_static=cleaned.get("fallback_to_static"),
                created_by=self.created_by,
            )
        except InvalidAnalysisRequest as error:
            self.add_error(error.field, error.message)
        return cleaned


@admin.register(Analysis)
class AnalysisAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "source_short",
        "status_badge",
        "progress_short",
        "cards_link",
        "requests",
        "tokens",
        "cost",
        "score",
        "created",
    ]
    list_filter = ["status", "provider", "source_kind"]
    ordering = ["-id"]  # newest first, with a single sort key (no "2" beside the column title)
    search_fields = ["source", "commit_sha"]
    actions = ["cancel", "resume"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "source",
        "source_kind",
        "ref",
        "commit_sha",
        "base_commit",
        "provider",
        "model",
        "model_chain",
        "upgrade_fallback_reviews",
        "diff_base",
        "functions_selected",
        "diff_files",
        "prompt_version",
        "concurrency",
        "fallback_to_static",
        "status_badge",
        "status_reason",
        "waiting_reason",
        "progress",
        "functions_total",
        "functions_analyzed",
        "functions_cached",
        "functions_failed",
        "cards_link",
        "requests",
        "tokens",
        "cost",
        "health_score",
        "errors",
        "created",
        "started",
        "deadline",
        "finished",
        "lease_owner",
        "lease_expires",
        "runs",
        "created_by",
    ]
    change_fieldsets = [
        (
            None,
            {
                "fields": [
                    ("status_badge", "progress"),
                    ("cards_link", "health_score"),
                    ("requests", "tokens", "cost"),
                    ("created", "finished"),
                    "status_reason",
                ]
            },
        ),
        (
            "Source",
            {
                "fields": [
                    "source",
                    ("source_kind", "ref"),
                    ("commit_sha", "base_commit"),
                    ("provider", "model", "prompt_version"),
                    ("model_chain", "upgrade_fallback_reviews"),
                    ("diff_base", "functions_selected"),
                    "diff_files",
                ]
            },
        ),
        ("Errors", {"fields": ["errors"]}),
        (
            "Run",
            {
                "fields": [
                    ("concurrency", "fallback_to_static", "runs"),
                    "waiting_reason",
                    ("functions_total", "functions_analyzed"),
                    ("functions_cached", "functions_failed"),
                    ("started", "deadline"),
                    ("lease_owner", "lease_expires"),
                    "created_by",
                ]
            },
        ),
    ]
    created = time_column("created_at", "created", relative=True)
    started = time_column("started_at", "started")
    deadline = time_column("deadline_at", "deadline")
    finished = time_column("finished_at", "finished")
    lease_expires = time_column("lease_expires_at", "lease expires")
    cost = usd_column("cost_usd")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # its cards and calls are the record of what was spent

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, change=change, **kwargs)
        kwargs["fields"] = StartAnalysisForm.Meta.fields
        form = super().get_form(request, obj, form=StartAnalysisForm, **kwargs)
        form.created_by = request.user
        return form

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": StartAnalysisForm.Meta.fields})]
        return self.change_fieldsets

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def change_view(self, request, object_id, form_url="", extra_context=None):
        context = {**NO_SAVE, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def save_model(self, request, obj, form, change) -> None:
        """The analysis was created while the form was validated; hand it to the workers."""
        if not change:
            analysis_enqueue(obj)

    @admin.display(description="source", ordering="source")
    def source_short(self, analysis: Analysis) -> str:
        """The end of the path or URL (the project's name), all of it on hover."""
        source = analysis.source
        shown = source if len(source) <= SOURCE_CHARS else "…" + source[-SOURCE_CHARS + 1 :]
        return format_html('<span title="{}">{}</span>', source, shown)

    @admin.display(description="status", ordering="status")
    def status_badge(self, analysis: Analysis) -> str:
        return badge(STATUS_COLOURS.get(analysis.status, "#868e96"), analysis.get_status_display())

    @admin.display(description="progress")
    def progress(self, analysis: Analysis) -> str:
        text = (
            f"{analysis.functions_done}/{analysis.functions_total} "
            f"({analysis.progress_percent:.0f}%), {analysis.functions_cached} cached, "
            f"{analysis.functions_failed} failed"
        )
        return f"{text} — {analysis.waiting_reason}" if analysis.waiting_reason else text

    @admin.display(description="done")
    def progress_short(self, analysis: Analysis) -> str:
        failed = f", {analysis.functions_failed} failed" if analysis.functions_failed else ""
        return f"{analysis.functions_done}/{analysis.functions_total}{failed}"

    @admin.display(description="cards", ordering="cards_count")
    def cards_link(self, analysis: Analysis) -> str:
        url = reverse("admin:analyses_card_changelist") + f"?analysis__id__exact={analysis.pk}"
        return format_html('<a href="{}">{} cards</a>', url, analysis.cards_count)

    @admin.display(description="AI requests", ordering="llm_requests")
    def requests(self, analysis: Analysis) -> int:
        return analysis.llm_requests

    @admin.display(description="score", ordering="health_score")
    def score(self, analysis: Analysis) -> str:
        return "-" if analysis.health_score is None else str(analysis.health_score)

    @admin.display(description="tokens in / out")
    def tokens(self, analysis: Analysis) -> str:
        return f"{analysis.input_tokens} / {analysis.output_tokens}"

    @admin.display(description="file errors and failed units")
    def errors(self, analysis: Analysis) -> str:
        failed = analysis.units.filter(status="failed").values_list("unit_id", "failure_reason")[
            :50
        ]
        rows = [(e["path"], e["message"]) for e in analysis.file_errors[:50]] + list(failed)
        if not rows:
            return "-"
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li><code>{}</code>: {}</li>", rows)
        )

    def _act(self, request, queryset, action, done: str) -> None:
        actor = request.user.get_username()
        for analysis in queryset:
            try:
                action(analysis_id=analysis.pk, actor=actor)
            except InvalidAnalysisRequest as error:
                self.message_user(request, error.message, messages.WARNING)
                continue
            self.log_change(request, analysis, done)
            self.message_user(request, f"Analysis #{analysis.pk}: {done}.", messages.SUCCESS)

    @admin.action(description="Cancel (keep what is done)", permissions=["change"])
    def cancel(self, request, queryset) -> None:
        self._act(request, queryset, analysis_cancel, "cancel requested")

    @admin.action(description="Resume (review what is left)", permissions=["change"])
    def resume(self, request, queryset) -> None:
        self._act(request, queryset, analysis_resume, "resumed")


@admin.register(CodeUnit)
class CodeUnitAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "qualname",
        "kind",
        "location",
        "status",
        "model",
        "failure_reason",
        "analysis_id_link",
    ]
    list_filter = ["status", "kind", "model"]
    search_fields = ["qualname", "path"]
    list_select_related = ["analysis"]
    finished = time_column("finished_at", "finished")
    fields = [
        "analysis_id_link",
        "unit_id",
        "qualname",
        "kind",
        "location",
        "complexity",
        "reviewable",
        "status",
        "model",
        "failure_reason",
        "content_hash",
        "context_hash",
        "finished",
    ]

    @admin.display(description="where", ordering="path")
    def location(self, unit: CodeUnit) -> str:
        return f"{unit.path}:{unit.lineno}-{unit.end_lineno}"

    @admin.display(description="analysis", ordering="analysis")
    def analysis_id_link(self, unit: CodeUnit) -> str:
        return analysis_link(unit.analysis)


class SeverityFilter(admin.SimpleListFilter):
    title = "severity"
    parameter_name = "severity"

    def lookups(self, request, model_admin):
        return [(severity, severity) for severity in SEVERITIES]  # most severe first

    def queryset(self, request, queryset):
        return queryset.filter(severity=self.value()) if self.value() else queryset


@admin.register(Card)
class CardAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "severity_badge",
        "title_html",
        "kind",
        "location",
        "analysis_id_link",
        "source",
        "model",
        "status",
    ]
    list_display_links = ["title_html"]
    list_filter = [SeverityFilter, "kind", "source", "model", "status", "analysis"]
    search_fields = ["title", "explanation", "path"]
    list_select_related = ["analysis"]
    fields = [
        "severity_badge",
        "title_html",
        "location",
        "adjustment",
        "excerpt_html",
        "explanation_html",
        "fix_html",
        "kind",
        "confidence",
        "source",
        "model",
        "rule",
        "fingerprint",
        "status",
        "status_changed",
        "analysis_id_link",
        "unit",
        "created",
    ]
    created = time_column("created_at", "created")
    status_changed = time_column("status_changed_at", "status changed")

    class Media:
        css = {"all": ["analyses/pygments.css"]}

    def get_ordering(self, request):
        return [severity_rank().asc(), "analysis", "path", "line_start", "id"]

    @admin.display(description="severity", ordering=severity_rank().asc())
    def severity_badge(self, card: Card) -> str:
        return badge(SEVERITY_COLOURS.get(card.severity, "#868e96"), card.severity)

    @admin.display(description="title", ordering="title")
    def title_html(self, card: Card) -> str:
        return format_html('<span class="card-title">{}</span>', render_markdown(card.title))

    @admin.display(description="explanation")
    def explanation_html(self, card: Card) -> str:
        return format_html(
            '<div class="card-markdown">{}</div>', render_markdown(card.explanation, block=True)
        )

    @admin.display(description="fix")
    def fix_html(self, card: Card) -> str:
        if not card.fix:
            return "-"
        return format_html(
            '<div class="card-markdown">{}</div>', render_markdown(card.fix, block=True)
        )

    @admin.display(description="code")
    def excerpt_html(self, card: Card) -> str:
        return (
            highlighted_excerpt(
                card.excerpt,
                first_line=card.excerpt_start,
                line_start=card.line_start,
                line_end=card.line_end,
            )
            or "(no excerpt kept)"
        )

    @admin.display(description="where", ordering="path")
    def location(self, card: Card) -> str:
        lines = (
            str(card.line_start)
            if card.line_start == card.line_end
            else f"{card.line_start}-{card.line_end}"
        )
        return f"{card.path}:{lines}"

    @admin.display(description="analysis", ordering="analysis")
    def analysis_id_link(self, card: Card) -> str:
        return analysis_link(card.analysis)


@admin.register(LLMCall)
class LLMCallAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "when",
        "model",
        "purpose",
        "attempt",
        "status_display",
        "latency_ms",
        "tokens",
        "cost",
        "analysis_id_link",
    ]
    list_filter = ["status", "model", "purpose"]
    date_hierarchy = "created_at"
    list_select_related = ["analysis"]
    fields = [
        "when",
        "analysis_id_link",
        "unit",
        "provider",
        "model",
        "purpose",
        "attempt",
        "status_display",
        "http_status",
        "error_display",
        "latency_ms",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "findings_clamped",
        "findings_merged",
        "cost",
        "request_id",
    ]
    when = time_column("created_at", "when", relative=True)
    cost = usd_column("cost_usd")

    @admin.display(description="status", ordering="status")
    def status_display(self, call: LLMCall) -> str:
        if call.status == "ok":
            return "ok"
        return format_html(
            '<strong style="color:#c92a2a" title="{}">{}</strong>', call.error, call.status
        )

    @admin.display(description="error")
    def error_display(self, call: LLMCall) -> str:
        return call.error or "-"

    @admin.display(description="tokens in / out")
    def tokens(self, call: LLMCall) -> str:
        return f"{call.input_tokens} / {call.output_tokens}"

    @admin.display(description="analysis", ordering="analysis")
    def analysis_id_link(self, call: LLMCall) -> str:
        return analysis_link(call.analysis)

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context=extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            totals = changelist.queryset.aggregate(
                calls=Count("id"),
                input_tokens=Sum("input_tokens"),
                output_tokens=Sum("output_tokens"),
                cost_usd=Sum("cost_usd"),
            )
            totals["cost"] = format_usd(totals["cost_usd"])
            response.context_data["totals"] = totals
        return response


@admin.register(ResultCache)
class ResultCacheAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "key_short",
        "provider",
        "model",
        "prompt_version",
        "hits",
        "size_bytes",
        "last_used",
    ]
    list_filter = ["provider", "model"]
    actions = ["clear_selected", "evict_to_limits"]
    fields = [
        "key",
        "provider",
        "model",
        "prompt_version",
        "findings",
        "size_bytes",
        "hits",
        "created",
        "last_used",
    ]
    created = time_column("created_at", "created")
    last_used = time_column("last_used_at", "last used", relative=True)

    def has_clear_permission(self, request) -> bool:
        """Clearing entries (the actions) needs the delete permission; no page offers Delete."""
        return request.user.has_perm("analyses.delete_resultcache")

    @admin.display(description="key", ordering="key")
    def key_short(self, entry: ResultCache) -> str:
        return format_html('<span title="{}">{}…</span>', entry.key, entry.key[:12])

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request, extra_context={**(extra_context or {}), "statistics": cache_statistics()}
        )

    @admin.action(description="Clear the selected entries", permissions=["clear"])
    def clear_selected(self, request, queryset) -> None:
        deleted = queryset.delete()[0]
        self.message_user(request, f"Cleared {deleted} cached results.", messages.SUCCESS)

    @admin.action(description="Evict down to the size limits", permissions=["clear"])
    def evict_to_limits(self, request, queryset) -> None:
        self.message_user(request, f"Evicted {cache_evict()} cached results.", messages.SUCCESS)
