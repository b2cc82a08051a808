"""The pages' forms: a new analysis, the list's filter, a card's status.

The new-analysis form checks the source with the functions ``analysis_create`` uses, before
the submission is counted against the user's budget; whatever the service still refuses, the
view puts next to the field it concerns.
"""

from __future__ import annotations

from django import forms
from django.conf import settings

from analyses.models import AnalysisStatus, CardStatus
from analyses.services import PROVIDERS, default_provider
from analyses.sources import SourceError, parse_source_spec, resolve_local_directory

PROVIDER_LABELS = {
    "static": "Offline rules (no AI, instant)",
    "anthropic": "Claude (Anthropic API)",
}


class AnalysisForm(forms.Form):
    source = forms.CharField(
        label="Path or git URL",
        max_length=2048,
        widget=forms.TextInput(
            attrs={"placeholder": "/srv/code/project  or  https://github.com/org/repo.git"}
        ),
    )
    ref = forms.CharField(
        label="Ref",
        max_length=255,
        required=False,
        help_text="Branch, tag or full commit SHA (git URLs only; default: the default branch).",
    )
    provider = forms.ChoiceField(label="Reviewer", widget=forms.RadioSelect)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        configured = bool(settings.ANTHROPIC_API_KEY)
        self.fields["provider"].choices = [
            (
                name,
                PROVIDER_LABELS[name]
                + ("" if name != "anthropic" or configured else " (needs ANTHROPIC_API_KEY)"),
            )
            for name in PROVIDERS
        ]
        self.fields["provider"].initial = default_provider()
        roots = settings.EIDOLON_SOURCE_ROOTS
        self.fields["source"].help_text = (
            f"A directory under {', '.join(roots)}, or an https, ssh or scp-like git URL."
            if roots
            else "An https, ssh or scp-like git URL (no local directories are allowed here)."
        )

    def clean(self) -> dict:
        """What ``analysis_create`` would refuse, checked before the submission is counted
        against the user's budget: a typo should not cost a submission."""
        data = super().clean()
        if data.get("provider") == "anthropic" and not settings.ANTHROPIC_API_KEY:
            self.add_error("provider", "Claude is not configured here (no ANTHROPIC_API_KEY).")
        if data.get("source") is not None:
            self._check_source(data["source"], data.get("ref") or None)
        return data

    def _check_source(self, source: str, ref: str | None) -> None:
        insecure = settings.EIDOLON_GIT_ALLOW_INSECURE_HTTP
        try:
            spec = parse_source_spec(source, allow_insecure_http=insecure)
            if spec.kind == "local":
                resolve_local_directory(spec.location, allowed_roots=settings.EIDOLON_SOURCE_ROOTS)
        except SourceError as error:
            self.add_error("source", error.message)
            return
        if ref is not None:
            try:
                parse_source_spec(source, ref=ref, allow_insecure_http=insecure)
            except SourceError as error:
                self.add_error("ref", error.message)


class AnalysisFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "all"), *AnalysisStatus.choices], required=False)


class CardStatusForm(forms.Form):
    status = forms.ChoiceField(choices=CardStatus.choices)
