"""Request id: every response carries ``X-Request-ID``, every log line of the request too.
Content-Security-Policy: HTML pages run our own scripts only."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
_META_KEY = "HTTP_X_REQUEST_ID"
# Accept what tracing systems send (UUIDs, hex trace ids, ULIDs, "svc-123.4"), nothing that
# could forge a log line or a header: printable token characters only, bounded length.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")


def request_id_from(incoming: str | None) -> str:
    """The incoming id when it is sane, otherwise a new one."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIDMiddleware:
    """Settle the request id before django-structlog binds it, and echo it in the response.

    django-structlog trusts the upstream header (``DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID``);
    this middleware makes that safe by replacing a missing or unsafe header first.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]
    ):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _prepare(self, request: HttpRequest) -> str:
        request_id = request_id_from(request.META.get(_META_KEY))
        request.META[_META_KEY] = request_id
        request.request_id = request_id  # type: ignore[attr-defined]
        return request_id

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        request_id = self._prepare(request)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        request_id = self._prepare(request)
        response = await self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


class ContentSecurityPolicyMiddleware:
    """Add ``settings.EIDOLON_CONTENT_SECURITY_POLICY`` to HTML responses that have none.

    Our pages load only our own scripts and styles, so even text that escaped its escaping could
    not run. ``EIDOLON_CSP_EXEMPT_PATHS`` lists the prefixes of third-party pages that need
    inline code. ``{websocket_origins}`` in the policy becomes this host's ``ws:``/``wss:``
    origins (not every browser lets ``'self'`` cover WebSockets).
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]
    ):
        self.get_response = get_response
        self.policy = settings.EIDOLON_CONTENT_SECURITY_POLICY
        self.exempt = tuple(settings.EIDOLON_CSP_EXEMPT_PATHS)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _apply(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            "Content-Security-Policy" not in response
            and response.get("Content-Type", "").startswith("text/html")
            and not request.path.startswith(self.exempt)
        ):
            host = request.get_host()
            response["Content-Security-Policy"] = self.policy.format(
                websocket_origins=f"ws://{host} wss://{host}"
            )
        return response

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self._apply(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return self._apply(request, await self.get_response(request))
