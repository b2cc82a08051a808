"""Who opens a WebSocket, and from which page: the handshake's credentials and its Origin.

Two kinds of client, told apart by the handshake:

* Browsers (pages): the session cookie. Browsers always send an ``Origin``, and a page cannot
  set an ``Authorization`` header on a WebSocket. The Origin must be one of ``ALLOWED_HOSTS``
  (``AllowedHostsOriginValidator``), or another site's page could ride the user's cookie
  (cross-site WebSocket hijacking).
* Token clients (CLIs, scripts): ``Authorization: Bearer <token>``. They often send no
  ``Origin``; a handshake with a bearer token and no Origin is let through, because a token is
  not ambient: no other site's page can make a browser send it. A bearer handshake that does
  send an Origin has it checked like a browser's. The session cookie is not read for them: a
  token that is wrong makes the user anonymous (the consumer closes 4401), never the cookie's.

A handshake with neither an allowed Origin nor a bearer token is refused before it is accepted
(an HTTP 403, as ``AllowedHostsOriginValidator`` does).
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.auth.models import AnonymousUser

from eidolon_site.accounts import bearer_token, user_for_token

ASGIApp = Any


def handshake_header(scope: dict[str, Any], name: bytes) -> str | None:
    """A request header of the handshake (the first, if sent more than once)."""
    for header, value in scope.get("headers", ()):
        if header == name:
            return value.decode("latin-1")
    return None


class BearerTokenAuthMiddleware:
    """Sets ``scope["user"]`` from ``Authorization: Bearer <token>``: the token's user, or
    anonymous when the token is not a valid one."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        token = bearer_token(handshake_header(scope, b"authorization"))
        user = await database_sync_to_async(user_for_token)(token) if token else None
        scope = {**scope, "user": user or AnonymousUser()}
        return await self.inner(scope, receive, send)


class HandshakeCredentialsRouter:
    """Browsers through the Origin check and the session; token clients through the bearer
    token, with the Origin checked only when they send one."""

    def __init__(self, inner: ASGIApp) -> None:
        by_token = BearerTokenAuthMiddleware(inner)
        self.by_session = AllowedHostsOriginValidator(AuthMiddlewareStack(inner))
        self.by_token_with_origin = AllowedHostsOriginValidator(by_token)
        self.by_token_without_origin = by_token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if handshake_header(scope, b"authorization") is None:
            return await self.by_session(scope, receive, send)
        if handshake_header(scope, b"origin") is None:
            return await self.by_token_without_origin(scope, receive, send)
        return await self.by_token_with_origin(scope, receive, send)
