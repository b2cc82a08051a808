"""Health views: ``/health/live`` (liveness), ``/health/ready`` (readiness), ``/health`` (the
full report, also as ``application/health+json``) and ``/ht/`` (django-health-check's own view).

All of them read this process's shared report (``reliability.health.runner.process_runner``), so
a flood of probes runs one round of checks per cache interval. Anyone sees statuses and the
checks' public messages; staff (a logged-in ``is_staff`` session) also see error details,
secrets redacted. ``HealthProbeMiddleware`` (``reliability.health.middleware``) answers the
three ``/health`` URLs ahead of sessions; ``urls.py`` routes all four.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import aget_user
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.utils.module_loading import import_string
from django.views.decorators.http import require_safe
from health_check.base import HealthCheckResult
from health_check.views import HealthCheckView, MediaType

from reliability.health.checks import build_checks
from reliability.health.report import ComponentReport, HealthReport
from reliability.health.runner import process_runner
from reliability.models import HealthStatus

logger = structlog.get_logger(__name__)

HEALTH_JSON = "application/health+json"
# IETF draft "Health Check Response Format for HTTP APIs": pass / warn / fail.
IETF_STATUS = {
    HealthStatus.HEALTHY: "pass",
    HealthStatus.DEGRADED: "warn",
    HealthStatus.UNHEALTHY: "fail",
}
COMPONENT_TYPES = {"database": "datastore", "cache": "datastore", "disk": "system"}
STAFF_CHECK_TIMEOUT = 1.0


async def viewer_is_staff(request: HttpRequest) -> bool:
    """True for a logged-in staff session; never raises, never waits long.

    Without a session cookie nothing is read (probes carry none). With one, the session and
    user are loaded (the database, bounded by a short timeout); any failure means "not staff".
    """
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False
    try:
        if not hasattr(request, "session"):  # answered ahead of SessionMiddleware
            engine = import_string(settings.SESSION_ENGINE)
            request.session = engine.SessionStore(request.COOKIES[settings.SESSION_COOKIE_NAME])
        user = await asyncio.wait_for(aget_user(request), STAFF_CHECK_TIMEOUT)
    except Exception:
        logger.info("health_staff_check_failed")
        return False
    return bool(user.is_active and user.is_staff)


def _no_store(response: HttpResponse) -> HttpResponse:
    add_never_cache_headers(response)
    return response


def component_json(component: ComponentReport, *, staff: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": component.status,
        "healthy": component.healthy,
        "critical": component.critical,
        "latency_ms": component.latency_ms,
        "message": component.message,
        "last_check": component.checked_at.isoformat(),
    }
    if staff:
        body["detail"] = component.detail
    return body


def report_json(report: HealthReport, *, staff: bool) -> dict[str, Any]:
    """The seed's format: ``status``, ``timestamp``, ``components`` {name: {...}}."""
    return {
        "status": report.status,
        "ready": report.ready,
        "timestamp": report.checked_at.isoformat(),
        "components": {
            name: component_json(component, staff=staff)
            for name, component in report.components.items()
        },
    }


def report_health_json(report: HealthReport, *, staff: bool) -> dict[str, Any]:
    """The IETF health-check response draft (``application/health+json``)."""
    checks = {}
    for name, component in report.components.items():
        entry: dict[str, Any] = {
            "componentId": name,
            "componentType": COMPONENT_TYPES.get(name, "component"),
            "observedValue": component.latency_ms,
            "observedUnit": "ms",
            "status": IETF_STATUS[component.status],
            "affectedEndpoints": ["/health/ready"] if component.critical else [],
            "time": component.checked_at.isoformat(),
        }
        if not component.healthy:
            entry["output"] = (
                f"{component.message} ({component.detail})"
                if staff and component.detail
                else component.message
            )
        checks[f"{name}:responseTime"] = [entry]
    return {
        "status": IETF_STATUS[report.status],
        "serviceId": "eidolon",
        "description": "Eidolon: AI code analysis",
        "output": "" if report.status == HealthStatus.HEALTHY else report.summary(),
        "checks": checks,
    }


def wants_health_json(request: HttpRequest) -> bool:
    """Whether the client prefers ``application/health+json`` over plain JSON."""
    try:
        media_types = list(MediaType.parse_header(request.headers.get("accept", "*/*")))
    except ValueError:
        return False
    for media in media_types:
        if media.mime_type == HEALTH_JSON:
            return True
        if media.mime_type in {"application/json", "application/*", "*/*"}:
            return False
    return False


@require_safe
async def health_live(request: HttpRequest) -> HttpResponse:
    """Liveness: the process can serve. No I/O at all: a dead database is not a reason to
    restart the web process."""
    return _no_store(JsonResponse({"alive": True}))


@require_safe
async def health_ready(request: HttpRequest) -> HttpResponse:
    """Readiness: 200 when the database (with migrations), the data volume and the shared
    channel layer (when there is one) are healthy; 503 naming the component(s) that are not."""
    report = await process_runner().report()
    staff = await viewer_is_staff(request)
    failed = {c.name: c.message for c in report.failed_critical}
    body: dict[str, Any] = {
        "ready": report.ready,
        "status": report.status,
        "timestamp": report.checked_at.isoformat(),
        "failed": failed,
    }
    if staff:
        body["details"] = {c.name: c.detail for c in report.failed_critical}
    return _no_store(JsonResponse(body, status=200 if report.ready else 503))


@require_safe
async def health(request: HttpRequest) -> HttpResponse:
    """Every component: 200 when healthy or degraded, 503 when unhealthy."""
    report = await process_runner().report()
    staff = await viewer_is_staff(request)
    status = 503 if report.status == HealthStatus.UNHEALTHY else 200
    if wants_health_json(request):
        response = JsonResponse(
            report_health_json(report, staff=staff), status=status, content_type=HEALTH_JSON
        )
    else:
        response = JsonResponse(report_json(report, staff=staff), status=status)
    patch_vary_headers(response, ["Accept", "Cookie"])
    return _no_store(response)


class _Replayed:
    """Hands a result of the shared round to django-health-check's view as if just run."""

    def __init__(self, result: HealthCheckResult) -> None:
        self.result = result

    async def get_result(self, executor: Any = None) -> HealthCheckResult:
        return self.result


class EidolonHealthCheckView(HealthCheckView):
    """django-health-check's view (HTML, JSON, text, OpenMetrics, feeds) over our checks and
    this process's shared round. Unlike the library's default, degraded components (warnings,
    non-critical failures) answer 200: only an unhealthy service answers 500."""

    report: HealthReport | None = None

    async def get(self, request, *args, **kwargs):
        self.report = await process_runner().report()
        response = await super().get(request, *args, **kwargs)
        if response.status_code == 500 and self.report.status != HealthStatus.UNHEALTHY:
            response.status_code = 200
        return response

    def get_checks(self):
        if self.report is None:  # `manage.py health_check health-check --no-http`
            yield from build_checks()
            return
        for component in self.report.components.values():
            yield _Replayed(component.result)
