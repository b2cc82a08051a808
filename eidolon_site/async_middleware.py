"""Eidolon's middleware stack, async-native: under ASGI no hook hops to a thread unless it
must touch the database.

Django's own middleware, django-prometheus's and django-structlog's run their hooks through
``sync_to_async`` when served by ASGI (``MiddlewareMixin``), and WhiteNoise's is sync only:
on ``main`` a trivial view went through some twenty thread hand-offs per request. Their hooks
only read headers and cookies, set attributes and count metrics, except for a session or
messages that must be saved and a user that must be loaded; the subclasses here run the hooks
on the event loop and hop to a thread for that I/O alone. Under WSGI or the sync test client
they are the classes they extend, unchanged.
"""

from __future__ import annotations

import asyncio

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from axes.helpers import get_lockout_response
from axes.middleware import AxesMiddleware
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware
from django_structlog.app_settings import app_settings as structlog_settings
from django_structlog.middlewares.request import RequestMiddleware
from django_structlog.middlewares.request import logger as request_logger
from whitenoise.middleware import WhiteNoiseMiddleware


class InlineHooks:
    """For a ``MiddlewareMixin`` middleware whose hooks do no blocking I/O: under ASGI, run
    them on the event loop instead of in a thread (``process_exception`` stays as Django
    adapts it: exceptions are rare)."""

    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        if self.async_mode:
            # Coroutine methods shadow the sync hooks, so Django calls them without a thread.
            if hasattr(self, "process_view"):
                self.process_view = self._process_view_on_the_loop
            if hasattr(self, "process_template_response"):
                self.process_template_response = self._process_template_response_on_the_loop

    async def _process_view_on_the_loop(self, request, view_func, view_args, view_kwargs):
        return type(self).process_view(self, request, view_func, view_args, view_kwargs)

    async def _process_template_response_on_the_loop(self, request, response):
        return type(self).process_template_response(self, request, response)

    def hooks_need_a_thread(self, request: HttpRequest) -> bool:
        """Whether this request's response hook must do I/O (a thread runs it then)."""
        return False

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.hooks_need_a_thread(request):
                return await sync_to_async(self.process_response)(request, response)
            response = self.process_response(request, response)
        return response


class PrometheusBefore(InlineHooks, PrometheusBeforeMiddleware):
    pass


class PrometheusAfter(InlineHooks, PrometheusAfterMiddleware):
    pass


class Security(InlineHooks, SecurityMiddleware):
    pass


class Common(InlineHooks, CommonMiddleware):
    pass


class XFrameOptions(InlineHooks, XFrameOptionsMiddleware):
    pass


class Authentication(InlineHooks, AuthenticationMiddleware):
    """Only sets the lazy ``request.user`` and ``request.auser``: the user is loaded later."""


class Session(InlineHooks, SessionMiddleware):
    """The session loads lazily; only saving a modified one needs the database."""

    def hooks_need_a_thread(self, request: HttpRequest) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class Messages(InlineHooks, MessageMiddleware):
    """Messages are stored (in a cookie, or the session) only when some were read or added."""

    def hooks_need_a_thread(self, request: HttpRequest) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class Csrf(InlineHooks, CsrfViewMiddleware):
    """The CSRF secret lives in a cookie (``CSRF_USE_SESSIONS`` is off): no I/O."""

    def __init__(self, get_response) -> None:
        if settings.CSRF_USE_SESSIONS:
            raise ValueError("eidolon_site.async_middleware.Csrf expects CSRF_USE_SESSIONS off")
        super().__init__(get_response)


class StaticFiles(WhiteNoiseMiddleware):
    """WhiteNoise, async-capable: the lookup is a dictionary read; a hit is served from a
    thread (it opens a file), anything else goes straight on."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, settings=settings) -> None:
        super().__init__(get_response, settings=settings)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # development: looked up on disk at each request
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is None:
            return await self.get_response(request)
        return await sync_to_async(self.serve)(static_file, request)


class RequestLog(RequestMiddleware):
    """django-structlog's request log, without its two thread hops a request: the user it
    names is loaded by the async API (no query at all when there is no session cookie), after
    which its hooks are plain attribute reads."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        await _load_user(request)
        self.prepare(request)
        try:
            response = await self.get_response(request)
        except asyncio.CancelledError:
            request_logger.log(structlog_settings.REQUEST_CANCELLED_LOG_LEVEL, "request_cancelled")
            raise
        self.handle_response(request, response)
        return response


async def _load_user(request: HttpRequest) -> None:
    """Replace the lazy ``request.user`` with the user, leaving the session's "accessed" flag
    as it was (django-structlog takes care that naming the user does not mark it accessed)."""
    if not hasattr(request, "auser"):
        return
    session = getattr(request, "session", None)
    accessed = session.accessed if session is not None else None
    request.user = await request.auser()
    if session is not None:
        session.accessed = accessed


class LoginLockout(AxesMiddleware):
    """django-axes' middleware: a locked-out login gets the lockout response. Its async path
    passes the credentials where the original response goes (axes 8.3.1); this one passes both
    in their places."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        if settings.AXES_ENABLED and getattr(request, "axes_locked_out", None):
            credentials = getattr(request, "axes_credentials", None)
            response = await sync_to_async(get_lockout_response)(request, response, credentials)
        return response
