"""The admin pretends nothing: read-only and system-owned objects offer no Save or Delete;
breakers and budgets keep one Save for their tunable settings; every page has the favicon."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from analyses.models import Analysis, AnalysisStatus, LLMCall, ResultCache
from eidolon_site.accounts import token_create
from reliability.breaker import get_or_create_breaker
from reliability.controls import breaker_force_open, save_breaker_settings
from reliability.health.heartbeats import worker_heartbeat
from reliability.models import (
    BreakerTransition,
    CircuitBreaker,
    ControlChange,
    HealthComponentState,
    HealthSample,
    HealthStatus,
    HealthTransition,
    RateLimitBudget,
)
from reliability.ratelimit import get_or_create_budget
from tests.analyses.page_support import make_analysis, make_card

pytestmark = pytest.mark.django_db

# Edited by people: their Save is real.
EDITABLE = {"auth.User", "auth.Group", "reliability.ModelPrice"}
# System-owned, with tunable settings: one Save, nothing else.
TUNABLE = {"reliability.CircuitBreaker", "reliability.RateLimitBudget"}
# django-tasks-db's and django-axes' own admin (deleting an access attempt is how an operator
# unlocks a login).
THIRD_PARTY = {
    "django_tasks_database.DBTaskResult",
    "axes.AccessAttempt",
    "axes.AccessLog",
    "axes.AccessFailureLog",
}
SAVE_OR_DELETE = re.compile(r'name="(_save|_continue|_addanother)"|class="deletelink"')
SAVE_AND_MORE = re.compile(r'name="(_continue|_addanother)"|class="deletelink"')


@pytest.fixture
def one_of_each():
    """A row of every model the admin shows."""
    analysis = make_analysis(None, status=AnalysisStatus.COMPLETED)
    make_card(analysis)
    LLMCall.objects.create(
        analysis=analysis,
        provider="anthropic",
        model="claude-sonnet-5-5",
        attempt=1,
        status="http_529",
        http_status=529,
        latency_ms=4,
        error="529 overloaded_error: the API is overloaded",
    )
    ResultCache.objects.create(key="k" * 64, provider="static", last_used_at=timezone.now())
    breaker = get_or_create_breaker("anthropic")
    breaker.failure_threshold += 1
    save_breaker_settings(breaker, actor="ops")
    breaker_force_open(name="anthropic", actor="ops", reason="drill")
    get_or_create_budget("anthropic")
    component = HealthComponentState.objects.create(
        name="database",
        status=HealthStatus.HEALTHY,
        critical=True,
        since=timezone.now() - dt.timedelta(hours=1),
        checked_at=timezone.now(),
    )
    HealthTransition.objects.create(
        component=component, from_status="unknown", to_status="healthy", created_at=timezone.now()
    )
    HealthSample.objects.create(component=component, status="healthy", created_at=timezone.now())
    worker_heartbeat(worker_id="w-1", host="h", pid=1)
    token_create(user=User.objects.create_user("alice"), name="laptop")


def change_pages():
    for model in admin.site._registry:
        label = model._meta.label
        if label in EDITABLE | THIRD_PARTY:
            continue
        obj = model.objects.first()
        assert obj is not None, f"no {label} to open: add one to the fixture"
        yield (
            label,
            reverse(
                f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk]
            ),
        )


class TestNothingPretendsToBeEditable:
    def test_no_read_only_page_offers_save_or_delete(self, admin_client, one_of_each):
        checked = []
        for label, url in change_pages():
            response = admin_client.get(url)
            assert response.status_code == 200, (label, url)
            page = response.content.decode()
            offered = (SAVE_AND_MORE if label in TUNABLE else SAVE_OR_DELETE).findall(page)
            assert not offered, (label, offered)
            checked.append(label)
        assert len(checked) >= 14, checked  # every model of ours, as a superuser sees it
        for label in TUNABLE:
            assert label in checked

    def test_breakers_and_budgets_keep_one_save_for_their_settings(self, admin_client, one_of_each):
        for url in (
            reverse(
                "admin:reliability_circuitbreaker_change", args=[CircuitBreaker.objects.get().pk]
            ),
            reverse(
                "admin:reliability_ratelimitbudget_change", args=[RateLimitBudget.objects.get().pk]
            ),
        ):
            page = admin_client.get(url).content.decode()
            assert page.count('name="_save"') == 1, url

    def test_no_delete_of_system_owned_rows__even_by_url(self, admin_client, one_of_each):
        for model in (CircuitBreaker, RateLimitBudget, BreakerTransition, ControlChange):
            name = model._meta.model_name
            url = reverse(f"admin:reliability_{name}_delete", args=[model.objects.first().pk])
            assert admin_client.post(url, {"post": "yes"}).status_code == 403, name
        analysis = Analysis.objects.get()
        url = reverse("admin:analyses_analysis_delete", args=[analysis.pk])
        assert admin_client.post(url, {"post": "yes"}).status_code == 403
        assert Analysis.objects.filter(pk=analysis.pk).exists()

    def test_a_failed_call_shows_its_error_text(self, admin_client, one_of_each):
        call = LLMCall.objects.get()
        page = admin_client.get(reverse("admin:analyses_llmcall_change", args=[call.pk]))
        assert "529 overloaded_error: the API is overloaded" in page.content.decode()


class TestFavicon:
    def test_served_as_svg__and_linked_from_the_site_and_the_admin(self, client, admin_client):
        response = client.get("/favicon.ico")
        assert response.status_code == 200
        assert response["Content-Type"] == "image/svg+xml"
        assert b"<svg" in b"".join(response.streaming_content)
        link = '<link rel="icon" href="/favicon.ico" type="image/svg+xml">'
        assert link in client.get("/accounts/login/").content.decode()
        assert link in admin_client.get("/admin/").content.decode()


class TestClearingCachedResults:
    def test_an_action_for_holders_of_the_delete_permission__not_a_delete_button(
        self, client, admin_client
    ):
        entry = ResultCache.objects.create(
            key="c" * 64, provider="static", last_used_at=timezone.now()
        )
        url = reverse("admin:analyses_resultcache_changelist")
        viewer = User.objects.create_user("vera", password="pw-for-tests-only", is_staff=True)
        viewer.user_permissions.set(Permission.objects.filter(codename="view_resultcache"))
        client.force_login(viewer)
        assert 'value="clear_selected"' not in client.get(url).content.decode()

        assert 'value="clear_selected"' in admin_client.get(url).content.decode()
        admin_client.post(url, {"action": "clear_selected", "_selected_action": [entry.pk]})
        assert not ResultCache.objects.exists()
