"""The pages' forms: a new analysis, the list's filter, a card's status.

The new-analysis form checks the fields' form only; the service (``analysis_submit``) checks
the request before the submission is counted against the user's budget, and the view puts
what it refuses next to the field it concerns.
"""

from __future__ import annotations

from django import forms
from django.conf import settings

from analyses.models import AnalysisStatus, CardStatus
from analyses.services import PROVIDERS, default_provider
from reliability.redaction import redact_url

PROVIDER_LABELS = {
    "static": "Offline rules (no AI, instant)",
    "anthropic": "Claude (Anthropic API)",
}


class SourceInput(forms.TextInput):
    """A source field that never shows a URL's credentials back (a refused URL is redisplayed
    for correcting, without the token the user pasted into it)."""

    def format_value(self, value):
        value = super().format_value(value)
        return value if value is None else redact_url(value)


class AnalysisForm(forms.Form):
    source = forms.CharField(
        label="Path or git URL",
        max_length=2048,
        widget=SourceInput(
            attrs={"placeholder": "/srv/code/project  or  https://github.com/org/repo.git"}
        ),
    )
    ref = forms.CharField(
        label="Ref",
        max_length=255,
        required=False,
        help_text="Branch, tag or full commit SHA (git URLs only; default: the default branch).",
    )
    diff_base = forms.CharField(
        label="Only what changed since",
        max_length=255,
        required=False,
        help_text="Optional: a branch, tag or commit (HEAD~1 works); only the functions changed "
        "since then are reviewed (a git URL, or a directory that is a git work tree).",
    )
    provider = forms.ChoiceField(label="Reviewer", widget=forms.RadioSelect)
    upgrade_fallback_reviews = forms.BooleanField(
        label="Upgrade fallback reviews",
        required=False,
        help_text="Review again with the primary model the functions a fallback model reviewed "
        "before (otherwise their cached reviews are used).",
    )

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


class AnalysisFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "all"), *AnalysisStatus.choices], required=False)


class CardStatusForm(forms.Form):
    status = forms.ChoiceField(choices=CardStatus.choices)
