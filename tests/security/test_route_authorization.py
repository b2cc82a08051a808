"""Who may use each route (issue 14): every URL pattern the resolver knows (pages, the JSON API's
operations, the admin's views, health and metrics) and every WebSocket route has a rule in one
table, and each rule is asserted by real requests for every kind of caller. A route added
without a rule fails the audit; so does a rule whose route is gone.

Callers: anonymous; ``owner`` (alice, who owns the analysis, its card and her token); ``other``
(bob, signed in); ``staff`` (staff with every view and change permission but not
``reliability.operate_controls``); ``operator`` (the same plus ``operate_controls``); and, for the
admin's model views, ``bare staff`` (staff with no permission).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, path

from analyses.models import AnalysisStatus
from eidolon_site.models import ApiToken
from eidolon_site.routing import websocket_urlpatterns
from reliability.breaker import get_or_create_breaker
from reliability.models import (
    BUDGET_LIMIT_FIELDS,
    CONFIG_FIELDS,
    CircuitBreaker,
    ControlChange,
    RateLimitBudget,
)
from tests.analyses.page_support import make_card
from tests.security.web_support import IN_MEMORY_LAYER, new_analysis, person, websocket_close_code

pytestmark = pytest.mark.django_db(transaction=True)

# --- the rules ----------------------------------------------------------------------------------

PUBLIC = "public"  # anyone, signed in or not
SIGNED_IN = "signed in"  # any signed-in user, for their own things
OWNER = "owner or staff"  # the object's owner and staff; others are told it does not exist
OWNER_ONLY = "owner only"  # the owner alone (a personal token)
STAFF = "staff"
OPERATOR = "operator"  # staff with reliability.operate_controls
ADMIN = "admin model permission"  # staff with the model's permission (Django's admin)
ADMIN_STAFF = "admin staff"  # any staff (the admin's own pages)
LOCAL_NETWORK = "local network"  # by address (/metrics): loopback and private networks


@dataclass(frozen=True)
class Rule:
    access: str
    url: str  # placeholders: {analysis} {card} {token} {breaker} {budget} {pk}
    method: str = "GET"
    data: dict | str | None = None  # a str names a value of the world (a form built from rows)
    ok: tuple[int, ...] = (200,)


def admin_model_rules(label: str) -> dict[str, list[Rule]]:
    """The six routes Django's admin gives a registered model, each with its rule."""
    app, model = label.split(".")
    base = f"admin/{app}/{model}/"
    url = f"/{base}"
    reading = (200, 302)  # 302: a missing object sends staff back to the index, with a message
    return {
        f"{base} [{app}_{model}_changelist]": [Rule(ADMIN, url)],
        f"{base}add/ [{app}_{model}_add]": [Rule(ADMIN, url + "add/", ok=(200, 403))],
        f"{base}<path:object_id>/history/ [{app}_{model}_history]": [
            Rule(ADMIN, url + "{pk}/history/", ok=reading)
        ],
        f"{base}<path:object_id>/delete/ [{app}_{model}_delete]": [
            Rule(ADMIN, url + "{pk}/delete/", ok=(200, 302, 403))
        ],
        f"{base}<path:object_id>/change/ [{app}_{model}_change]": [
            Rule(ADMIN, url + "{pk}/change/", ok=reading)
        ],
        # Redirects staff to the change page (guarded itself); shows nothing.
        f"{base}<path:object_id>/ [None]": [Rule(ADMIN_STAFF, url + "{pk}/", ok=(301, 302))],
    }


# Every model the admin shows. Registering another without adding it here fails the audit.
ADMIN_MODELS = [
    "analyses.analysis",
    "analyses.card",
    "analyses.codeunit",
    "analyses.llmcall",
    "analyses.resultcache",
    "auth.group",
    "auth.user",
    "axes.accessattempt",
    "axes.accessfailurelog",
    "axes.accesslog",
    "django_tasks_database.dbtaskresult",
    "eidolon_site.apitoken",
    "reliability.breakertransition",
    "reliability.circuitbreaker",
    "reliability.controlchange",
    "reliability.healthcomponentstate",
    "reliability.healthsample",
    "reliability.healthtransition",
    "reliability.modelprice",
    "reliability.ratelimitbudget",
    "reliability.workerheartbeat",
]

ROUTE_RULES: dict[str, list[Rule]] = {
    "favicon.ico [favicon]": [Rule(PUBLIC, "/favicon.ico")],
    " [home]": [Rule(PUBLIC, "/")],
    "health [health]": [Rule(PUBLIC, "/health", ok=(200, 503))],
    "health/ready [health-ready]": [Rule(PUBLIC, "/health/ready", ok=(200, 503))],
    "health/live [health-live]": [Rule(PUBLIC, "/health/live")],
    "ht/ [health-check]": [Rule(PUBLIC, "/ht/", ok=(200, 500, 503))],
    "metrics [metrics]": [Rule(LOCAL_NETWORK, "/metrics")],
    "accounts/login/ [login]": [Rule(PUBLIC, "/accounts/login/", ok=(200, 302))],
    "accounts/logout/ [logout]": [Rule(PUBLIC, "/accounts/logout/", "POST", ok=(302,))],
    "accounts/settings/ [settings]": [Rule(SIGNED_IN, "/accounts/settings/")],
    "accounts/settings/tokens/ [token-create]": [
        Rule(SIGNED_IN, "/accounts/settings/tokens/", "POST", {"name": "audit"})
    ],
    "accounts/settings/tokens/<int:token_id>/revoke/ [token-revoke]": [
        Rule(OWNER_ONLY, "/accounts/settings/tokens/{token}/revoke/", "POST", ok=(302,))
    ],
    "analyses/ [list]": [Rule(SIGNED_IN, "/analyses/")],
    "analyses/new/ [new]": [Rule(SIGNED_IN, "/analyses/new/")],
    "analyses/<int:analysis_id>/ [detail]": [Rule(OWNER, "/analyses/{analysis}/")],
    "analyses/<int:analysis_id>/summary/ [summary]": [Rule(OWNER, "/analyses/{analysis}/summary/")],
    "analyses/<int:analysis_id>/cancel/ [cancel]": [
        Rule(OWNER, "/analyses/{analysis}/cancel/", "POST", ok=(302,))
    ],
    "analyses/<int:analysis_id>/resume/ [resume]": [
        Rule(OWNER, "/analyses/{analysis}/resume/", "POST", ok=(302,))
    ],
    "analyses/<int:analysis_id>/cards/<int:card_id>/ [card]": [
        Rule(OWNER, "/analyses/{analysis}/cards/{card}/")
    ],
    "analyses/<int:analysis_id>/cards/<int:card_id>/status/ [card-status]": [
        Rule(
            OWNER,
            "/analyses/{analysis}/cards/{card}/status/",
            "POST",
            {"status": "acknowledged"},
            ok=(302,),
        )
    ],
    "operations/ [dashboard]": [Rule(STAFF, "/operations/")],
    "operations/breakers/<str:name>/<slug:action>/ [breaker-action]": [
        Rule(
            OPERATOR, "/operations/breakers/{breaker}/disable/", "POST", {"reason": "audit"}, (302,)
        )
    ],
    "operations/budgets/<str:name>/resume/ [budget-resume]": [
        Rule(OPERATOR, "/operations/budgets/{budget}/resume/", "POST", ok=(302,))
    ],
    "api/ [api-root]": [Rule(PUBLIC, "/api/", ok=(404,))],
    "api/openapi.json [openapi-json]": [Rule(PUBLIC, "/api/openapi.json")],
    "api/docs [openapi-view]": [Rule(PUBLIC, "/api/docs")],
    "api/analyses [submit_analysis]": [
        Rule(SIGNED_IN, "/api/analyses", "POST", {"source": "/nowhere"}, ok=(400,))
    ],
    "api/analyses [list_analyses]": [Rule(SIGNED_IN, "/api/analyses")],
    "api/analyses/<analysis_id> [analysis]": [Rule(OWNER, "/api/analyses/{analysis}")],
    "api/analyses/<analysis_id>/cancel [cancel_analysis]": [
        Rule(OWNER, "/api/analyses/{analysis}/cancel", "POST", ok=(202, 409))
    ],
    "api/analyses/<analysis_id>/resume [resume_analysis]": [
        Rule(OWNER, "/api/analyses/{analysis}/resume", "POST", ok=(202, 409))
    ],
    "api/analyses/<analysis_id>/events [analysis_events]": [
        Rule(OWNER, "/api/analyses/{analysis}/events")
    ],
    "api/analyses/<analysis_id>/cards [list_cards]": [
        Rule(OWNER, "/api/analyses/{analysis}/cards")
    ],
    "api/analyses/<analysis_id>/export [analysis_export]": [
        Rule(OWNER, "/api/analyses/{analysis}/export?format=sarif", ok=(200, 409))
    ],
    "api/cards/<card_id> [get_card]": [Rule(OWNER, "/api/cards/{card}")],
    "api/cards/<card_id> [set_card_status]": [
        Rule(OWNER, "/api/cards/{card}", "PATCH", {"status": "fixed"})
    ],
    "api/reliability [reliability_state]": [Rule(STAFF, "/api/reliability")],
    "api/reliability/breakers/<name>/<action> [operate_breaker]": [
        Rule(OPERATOR, "/api/reliability/breakers/{breaker}/force-open", "POST")
    ],
    # The admin's own pages.
    "admin/ [index]": [Rule(ADMIN_STAFF, "/admin/")],
    "admin/login/ [login]": [Rule(PUBLIC, "/admin/login/", ok=(200, 302))],
    "admin/logout/ [logout]": [Rule(PUBLIC, "/admin/logout/", "POST", ok=(200, 302))],
    "admin/password_change/ [password_change]": [Rule(ADMIN_STAFF, "/admin/password_change/")],
    "admin/password_change/done/ [password_change_done]": [
        Rule(ADMIN_STAFF, "/admin/password_change/done/")
    ],
    "admin/autocomplete/ [autocomplete]": [Rule(ADMIN_STAFF, "/admin/autocomplete/", ok=(403,))],
    "admin/jsi18n/ [jsi18n]": [Rule(ADMIN_STAFF, "/admin/jsi18n/")],
    "admin/r/<path:content_type_id>/<path:object_id>/ [view_on_site]": [
        Rule(ADMIN_STAFF, "/admin/r/1/0/", ok=(302, 404))
    ],
    "admin/auth/user/<id>/password/ [auth_user_password_change]": [
        Rule(ADMIN, "/admin/auth/user/{pk}/password/", ok=(200, 302))
    ],
    "admin/^(?P<app_label>auth|django_tasks_database|axes|eidolon_site|reliability|analyses)/$ "
    "[app_list]": [Rule(ADMIN, "/admin/reliability/")],
    "admin/(?P<url>.*)$ [None]": [Rule(ADMIN_STAFF, "/admin/no-such-page/", ok=(404,))],
}
for _label in ADMIN_MODELS:
    ROUTE_RULES.update(admin_model_rules(_label))
# Editing a breaker's thresholds and running its actions: the operators' permission too.
ROUTE_RULES[
    "admin/reliability/circuitbreaker/<path:object_id>/change/ [reliability_circuitbreaker_change]"
].append(
    Rule(
        OPERATOR,
        "/admin/reliability/circuitbreaker/{breaker_pk}/change/",
        "POST",
        "breaker_form",
        (302,),
    )
)

WEBSOCKET_RULES = {"ws/analyses/<int:analysis_id>/": OWNER}


# --- the audit ------------------------------------------------------------------------------------


def route_keys(patterns: Iterable, prefix: str = "") -> list[str]:
    """Every URL pattern under ``patterns``, as ``"<route> [<name>]"``."""
    keys = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            keys += route_keys(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            keys.append(f"{prefix}{pattern.pattern} [{pattern.name}]")
    return keys


def audit(patterns: Iterable, rules: dict) -> dict[str, list[str]]:
    """Routes without a rule, and rules without a route."""
    keys = route_keys(patterns)
    return {
        "routes without a rule": sorted(set(keys) - set(rules)),
        "rules without a route": sorted(set(rules) - set(keys)),
    }


# --- the callers and what each must get ---------------------------------------------------------


def everyone() -> dict[str, object]:
    all_permissions = Permission.objects.exclude(codename="operate_controls")
    staff = person("sam", staff=True)
    staff.user.user_permissions.set(all_permissions)
    operator = person("olga", staff=True)
    operator.user.user_permissions.set(Permission.objects.all())
    return {
        "anonymous": None,
        "owner": person("alice"),
        "other": person("bob"),
        "staff": staff,
        "operator": operator,
        "bare staff": person("bare", staff=True),
    }


def world(owner: User) -> dict[str, object]:
    analysis = new_analysis(owner, status=AnalysisStatus.QUEUED)
    breaker = get_or_create_breaker("git")
    RateLimitBudget.objects.get_or_create(name="anthropic")
    breaker_form = {field: getattr(breaker, field) for field in CONFIG_FIELDS}
    return {
        "breaker_form": {**breaker_form, "failure_threshold": 7},
        "analysis": analysis.pk,
        "card": make_card(analysis).pk,
        "token": ApiToken.objects.get(user=owner).pk,
        "breaker": breaker.name,
        "breaker_pk": breaker.pk,
        "budget": "anthropic",
    }


def expected(rule: Rule, caller: str) -> str:
    """What ``caller`` must get from ``rule``'s route: "ok", "login", "401", "403", "404"."""
    if rule.access in (PUBLIC, LOCAL_NETWORK):
        return "ok"
    in_admin = rule.url.startswith("/admin/")
    if in_admin and caller in ("anonymous", "owner", "other"):
        return "admin login"
    if rule.access in (ADMIN, ADMIN_STAFF):
        return "refused" if rule.access == ADMIN and caller == "bare staff" else "ok"
    if caller == "anonymous":
        return "401" if rule.url.startswith("/api/") else "login"
    if rule.access == SIGNED_IN:
        return "ok"
    if rule.access in (OWNER, OWNER_ONLY):
        allowed = ("owner",) if rule.access == OWNER_ONLY else ("owner", "staff", "operator")
        return "ok" if caller in allowed else "404"
    allowed = ("staff", "operator") if rule.access == STAFF else ("operator",)
    return "ok" if caller in allowed else "403"


def outcome(response, rule: Rule, want: str) -> str:
    status = response.status_code
    location = response.get("Location", "")
    if rule.access in (PUBLIC, LOCAL_NETWORK):  # logging out ends on the login page
        return "ok" if status in rule.ok else str(status)
    if status == 302 and location.startswith("/accounts/login/"):
        return "login"
    if status == 302 and location.startswith("/admin/login/"):
        return "admin login"
    if want == "refused" and status != 200:
        # Bare staff: 403, 404 (an app they may not see) or back to the index (a missing row).
        return "refused"
    if status in rule.ok:
        return "ok"
    return str(status)


def request(rule: Rule, caller, values: dict[str, object], *, address="127.0.0.1"):
    url = rule.url.format(**values)
    client = caller.client if caller is not None else Client()
    if caller is not None and "logout" in url:  # a session of its own, so the caller stays in
        client = Client()
        client.force_login(caller.user)
    client.defaults["REMOTE_ADDR"] = address
    headers = caller.bearer if caller is not None and url.startswith("/api/") else {}
    send = getattr(client, rule.method.lower())
    data = values[rule.data] if isinstance(rule.data, str) else rule.data
    if data is not None and url.startswith("/api/"):
        return send(url, data=json.dumps(data), content_type="application/json", headers=headers)
    return send(url, data=data or {}, headers=headers)


ORDER = ["anonymous", "other", "bare staff", "staff", "owner", "operator"]


class TestRouteAuthorization:
    def test_every_route_has_an_access_rule(self, settings):
        assert audit(get_resolver().url_patterns, ROUTE_RULES) == {
            "routes without a rule": [],
            "rules without a route": [],
        }
        registered = sorted(m._meta.label_lower for m in admin.site._registry)
        assert registered == sorted(ADMIN_MODELS)

        callers = everyone()
        values = world(callers["owner"].user)
        failures = []
        for key, rules in ROUTE_RULES.items():
            for rule in rules:
                admin_pk = _admin_pk(rule.url)
                for name in ORDER:
                    if rule.access != ADMIN and name == "bare staff":
                        continue
                    response = request(rule, callers[name], {**values, "pk": admin_pk})
                    want = expected(rule, name)
                    got = outcome(response, rule, want)
                    if got != want:
                        failures.append(f"{rule.method} {key} as {name}: {got}, expected {want}")
                if rule.access == LOCAL_NETWORK:
                    outside = request(rule, None, values, address="203.0.113.9")
                    if outside.status_code != 403:
                        failures.append(f"{key} from a public address: {outside.status_code}")
        assert not failures, "\n".join(failures)
        # The operators' actions took effect once, in the operator's name only.
        assert CircuitBreaker.objects.get(name="git").state == "forced_open"
        assert CircuitBreaker.objects.get(name="git").failure_threshold == 7

    async def test_every_websocket_route_has_an_access_rule(self, settings):
        settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
        routes = sorted(str(pattern.pattern) for pattern in websocket_urlpatterns)
        assert routes == sorted(WEBSOCKET_RULES)
        callers = await sync_to_async(everyone)()
        values = await sync_to_async(world)(callers["owner"].user)
        path_ = f"/ws/analyses/{values['analysis']}/"
        anonymous = [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000")]
        codes = {"anonymous": await websocket_close_code(path_, anonymous)}
        for name in ("other", "owner", "staff"):
            codes[name] = await websocket_close_code(path_, callers[name].handshake(by="token"))
        # 4401 no credentials, 4403 not allowed, None: the snapshot came and the socket is open.
        assert codes == {"anonymous": 4401, "other": 4403, "owner": None, "staff": None}

    def test_staff_without_the_operator_permission_change_no_control(self):
        """The admin's actions and edits of breakers and budgets (the routes' rules cover the
        dashboard and the API): offered to operators only, refused to other staff."""
        callers = everyone()
        breaker = get_or_create_breaker("git")
        budget, _ = RateLimitBudget.objects.get_or_create(name="anthropic")
        action = {"action": "disable", "_selected_action": [breaker.pk], "confirm": "yes"}
        changelist = "/admin/reliability/circuitbreaker/"
        budget_form = {field: getattr(budget, field) for field in BUDGET_LIMIT_FIELDS}
        budget_form = {k: "" if v is None else v for k, v in budget_form.items()}
        budget_url = f"/admin/reliability/ratelimitbudget/{budget.pk}/change/"

        staff = callers["staff"].client
        assert 'value="disable"' not in staff.get(changelist).content.decode()
        staff.post(changelist, {**action, "reason": "staff"})
        refused = staff.post(budget_url, {**budget_form, "requests_per_window": 1})
        assert refused.status_code == 403
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == "closed"
        assert RateLimitBudget.objects.get(pk=budget.pk).requests_per_window != 1
        assert ControlChange.objects.count() == 0

        operator = callers["operator"].client
        assert 'value="disable"' in operator.get(changelist).content.decode()
        operator.post(changelist, {**action, "reason": "drill"})
        edited = operator.post(budget_url, {**budget_form, "requests_per_window": 1})
        assert edited.status_code == 302
        assert CircuitBreaker.objects.get(pk=breaker.pk).state == "disabled"
        assert RateLimitBudget.objects.get(pk=budget.pk).requests_per_window == 1
        assert sorted(ControlChange.objects.values_list("actor", flat=True)) == ["olga", "olga"]

    def test_a_route_without_a_rule_fails_the_audit(self):
        def debug_dump(request):  # what a careless change might add
            raise AssertionError("never called")

        patterns = [*get_resolver().url_patterns, path("debug/dump/", debug_dump, name="dump")]
        assert audit(patterns, ROUTE_RULES) == {
            "routes without a rule": ["debug/dump/ [dump]"],
            "rules without a route": [],
        }
        rules_without_the_dashboard = {k: v for k, v in ROUTE_RULES.items() if "dashboard" not in k}
        assert audit(get_resolver().url_patterns, rules_without_the_dashboard) == {
            "routes without a rule": ["operations/ [dashboard]"],
            "rules without a route": [],
        }


def _admin_pk(url: str) -> object:
    """A primary key of a row of the admin URL's model, or 0 when it has none."""
    parts = url.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "admin":
        return 0
    try:
        model = apps.get_model(parts[1], parts[2])
    except (LookupError, ValueError):
        return 0
    row = model._default_manager.order_by("pk").first()
    return row.pk if row is not None else 0
