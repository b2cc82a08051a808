"""``HealthProbeMiddleware`` answers ``/health``, ``/health/ready`` and ``/health/live`` ahead of
the session, auth, CSRF and request-logging middleware: ``/health/live`` does no I/O at all,
probes add no log line each, and any ``Host`` header is accepted (Kubernetes probes use the pod
IP, which ALLOWED_HOSTS does not list). The responses use nothing from the Host header.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from reliability.health.views import health, health_live, health_ready

PROBE_VIEWS = {
    "/health": health,
    "/health/": health,
    "/health/ready": health_ready,
    "/health/ready/": health_ready,
    "/health/live": health_live,
    "/health/live/": health_live,
}
_SAFE_METHODS = ("GET", "HEAD")


class HealthProbeMiddleware:
    """Answer ``/health``, ``/health/ready`` and ``/health/live`` before the rest of the stack."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _view_for(self, request: HttpRequest):
        return PROBE_VIEWS.get(request.path_info)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        view = self._view_for(request)
        if view is None:
            return self.get_response(request)
        if request.method not in _SAFE_METHODS:
            return HttpResponseNotAllowed(_SAFE_METHODS)
        return async_to_sync(view)(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        view = self._view_for(request)
        if view is None:
            return await self.get_response(request)
        if request.method not in _SAFE_METHODS:
            return HttpResponseNotAllowed(_SAFE_METHODS)
        return await view(request)
