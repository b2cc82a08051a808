"""The home page, the favicon and the account pages: log in, log out, settings with personal API
tokens."""

from __future__ import annotations

from pathlib import Path

import structlog
from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import DatabaseError
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.cache import cache_control, never_cache
from django.views.decorators.http import require_GET, require_POST

from eidolon_site.accounts import token_create, token_revoke
from eidolon_site.models import ApiToken
from eidolon_site.status_strip import recent_public_strip

logger = structlog.get_logger(__name__)

FAVICON = Path(__file__).resolve().parent / "static" / "eidolon" / "favicon.svg"


@require_GET
@cache_control(max_age=86_400, public=True)
def favicon(request: HttpRequest) -> FileResponse:
    """Browsers ask for /favicon.ico on every site; ours is an SVG."""
    return FileResponse(FAVICON.open("rb"), content_type="image/svg+xml")


def home(request: HttpRequest) -> HttpResponse:
    """The front page, with the public status strip (no money, no budgets: see status_strip),
    at most a couple of seconds old; without it when the database cannot be read, rather than an
    error page."""
    try:
        strip = recent_public_strip.get()
    except DatabaseError as error:
        logger.warning("status_strip_unavailable", error=type(error).__name__)
        strip = None
    return TemplateResponse(request, "eidolon_site/home.html", {"strip": strip})


login = auth_views.LoginView.as_view(
    template_name="registration/login.html", redirect_authenticated_user=True
)
logout = auth_views.LogoutView.as_view()  # POST only (Django 5)


class TokenForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=100,
        help_text="What the token is for: a CI job, a laptop, a script.",
        widget=forms.TextInput(attrs={"placeholder": "ci-pipeline"}),
    )


def _settings_page(
    request: HttpRequest, *, form: TokenForm, new_token: str = "", status: int = 200
) -> TemplateResponse:
    tokens = ApiToken.objects.filter(user=request.user).order_by("revoked_at", "-created_at")
    return TemplateResponse(
        request,
        "eidolon_site/settings.html",
        {"form": form, "tokens": tokens, "new_token": new_token},
        status=status,
    )


@never_cache
@login_required
@require_GET
def account_settings(request: HttpRequest) -> HttpResponse:
    return _settings_page(request, form=TokenForm())


@never_cache
@login_required
@require_POST
def api_token_create(request: HttpRequest) -> HttpResponse:
    """Create a token and show it once, on this response only (it is never stored)."""
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, form=form, status=400)
    _token, raw = token_create(user=request.user, name=form.cleaned_data["name"])
    return _settings_page(request, form=TokenForm(), new_token=raw)


@login_required
@require_POST
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    token_revoke(token=token, actor=request.user.get_username())
    messages.success(request, f"Token {token.name} ({token.prefix}…) is revoked.")
    return redirect("accounts:settings")
