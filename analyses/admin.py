"""Operators' view of analyses: progress, errors, cards, the cost of every AI call, the cache."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Sum
from django.utils.html import format_html, format_html_join

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

STATUS_COLOURS = {
    AnalysisStatus.QUEUED: "#868e96",
    AnalysisStatus.RUNNING: "#1c7ed6",
    AnalysisStatus.COMPLETED: "#2b8a3e",
    AnalysisStatus.COMPLETED_WITH_ERRORS: "#e67700",
    AnalysisStatus.FAILED: "#c92a2a",
    AnalysisStatus.CANCELLED: "#862e9c",
    AnalysisStatus.TIMED_OUT: "#c92a2a",
}


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
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
        "source",
        "status_badge",
        "progress",
        "cards_count",
        "llm_requests",
        "tokens",
        "health_score",
        "created_at",
    ]
    list_filter = ["status", "provider", "source_kind"]
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
        "cards_count",
        "llm_requests",
        "tokens",
        "health_score",
        "errors",
        "created_at",
        "started_at",
        "deadline_at",
        "finished_at",
        "lease_owner",
        "lease_expires_at",
        "runs",
        "created_by",
    ]
    fields = readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, change=change, **kwargs)
        kwargs["fields"] = StartAnalysisForm.Meta.fields
        form = super().get_form(request, obj, form=StartAnalysisForm, **kwargs)
        form.created_by = request.user
        return form

    def get_fields(self, request, obj=None):
        return StartAnalysisForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change) -> None:
        """The analysis was created while the form was validated; hand it to the workers."""
        if not change:
            analysis_enqueue(obj)

    @admin.display(description="status", ordering="status")
    def status_badge(self, analysis: Analysis) -> str:
        return format_html(
            '<strong style="color:{}">{}</strong>',
            STATUS_COLOURS.get(analysis.status, "inherit"),
            analysis.get_status_display(),
        )

    @admin.display(description="progress")
    def progress(self, analysis: Analysis) -> str:
        text = (
            f"{analysis.functions_done}/{analysis.functions_total} "
            f"({analysis.progress_percent:.0f}%), {analysis.functions_cached} cached, "
            f"{analysis.functions_failed} failed"
        )
        return f"{text} — {analysis.waiting_reason}" if analysis.waiting_reason else text

    @admin.display(description="tokens (in / out)")
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
    list_display = ["qualname", "kind", "path", "lineno", "status", "failure_reason", "analysis"]
    list_filter = ["status", "kind"]
    search_fields = ["qualname", "path"]
    list_select_related = ["analysis"]


@admin.register(Card)
class CardAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["title", "severity", "kind", "location", "source", "confidence", "analysis"]
    list_filter = ["severity", "kind", "source"]
    search_fields = ["title", "explanation", "path"]
    list_select_related = ["analysis"]

    @admin.display(description="where")
    def location(self, card: Card) -> str:
        return f"{card.path}:{card.line_start}-{card.line_end}"


@admin.register(LLMCall)
class LLMCallAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "model",
        "purpose",
        "attempt",
        "status",
        "latency_ms",
        "input_tokens",
        "output_tokens",
        "analysis",
    ]
    list_filter = ["status", "model", "purpose"]
    date_hierarchy = "created_at"
    list_select_related = ["analysis"]

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context=extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data["totals"] = changelist.queryset.aggregate(
                calls=Count("id"),
                input_tokens=Sum("input_tokens"),
                output_tokens=Sum("output_tokens"),
            )
        return response


@admin.register(ResultCache)
class ResultCacheAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "key",
        "provider",
        "model",
        "prompt_version",
        "hits",
        "size_bytes",
        "last_used_at",
    ]
    list_filter = ["provider", "model"]
    actions = ["clear_selected", "evict_to_limits"]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request, extra_context={**(extra_context or {}), "statistics": cache_statistics()}
        )

    @admin.action(description="Clear the selected entries", permissions=["delete"])
    def clear_selected(self, request, queryset) -> None:
        deleted = queryset.delete()[0]
        self.message_user(request, f"Cleared {deleted} cached results.", messages.SUCCESS)

    @admin.action(description="Evict down to the size limits", permissions=["delete"])
    def evict_to_limits(self, request, queryset) -> None:
        self.message_user(request, f"Evicted {cache_evict()} cached results.", messages.SUCCESS)
