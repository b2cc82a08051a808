"""The application ``api_throughput.py`` serves from one daphne process: ``/bare/`` is a trivial
async view served by Django with no middleware at all; ``/stack/`` is the same view behind
Eidolon's whole middleware stack; every other path goes to Eidolon's real application.

    daphne benchmarks.bare_asgi:application
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eidolon_site.settings")

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.urls import path

from eidolon_site.asgi import application as eidolon_application


async def trivial(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [path("bare/", trivial), path("stack/", trivial)]


class TrivialViewHandler(ASGIHandler):
    """Django's ASGI handler with Eidolon's middleware, resolving URLs with this module."""

    def resolve_request(self, request: HttpRequest):
        request.urlconf = __name__
        return super().resolve_request(request)


class BareHandler(TrivialViewHandler):
    """Django's ASGI handler with no middleware: the view is called directly."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(get_response)


_bare = BareHandler()
_stack = TrivialViewHandler()


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/bare/":
        return await _bare(scope, receive, send)
    if scope["type"] == "http" and scope["path"] == "/stack/":
        return await _stack(scope, receive, send)
    return await eidolon_application(scope, receive, send)
