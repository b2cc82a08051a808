"""What the web security tests share: people with a session cookie and a token, WebSocket
clients of the real ASGI application, and an analysis run against the fake Messages API with a
responder of the test's choosing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client

from analyses.models import Analysis
from eidolon_site.accounts import token_create
from eidolon_site.asgi import application

ORIGIN = "http://127.0.0.1:8000"
PASSWORD = "correct-horse-battery-staple"
IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@dataclass
class Person:
    user: User
    token: str
    client: Client

    @property
    def cookie(self) -> str:
        return self.client.cookies[settings.SESSION_COOKIE_NAME].value

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def handshake(self, *, by: str = "cookie") -> list[tuple[bytes, bytes]]:
        headers = [(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN.encode())]
        if by == "cookie":
            headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={self.cookie}".encode()))
        else:
            headers.append((b"authorization", f"Bearer {self.token}".encode()))
        return headers


def person(
    username: str, *, staff: bool = False, permissions: tuple[str, ...] = (), csrf: bool = False
) -> Person:
    """A user with a password, a personal token and a logged-in client (``csrf``: a client
    that enforces CSRF checks, as browsers' requests meet them)."""
    user = User.objects.create_user(username, password=PASSWORD, is_staff=staff)
    if permissions:
        user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    _, token = token_create(user=user, name="security tests")
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return Person(user=user, token=token, client=client)


def new_analysis(owner: User | None, **fields: Any) -> Analysis:
    return Analysis.objects.create(
        source="/srv/code", source_kind="local", provider="static", created_by=owner, **fields
    )


async def websocket_close_code(
    path: str, headers: list[tuple[bytes, bytes]], *, send: str | None = None
) -> int | None:
    """Open ``path`` on the real application, read the snapshot when one comes, ``send`` a text
    message, and return the close code the server sends (None: it stayed open)."""
    socket = WebsocketCommunicator(application, path, headers=headers)
    accepted, _ = await socket.connect(timeout=10)
    assert accepted, "refusals come after the accept, so that clients can read the code"
    try:
        first = await socket.receive_output(10)
        if first["type"] == "websocket.close":
            return first.get("code", 1000)
        assert json.loads(first["text"])["type"] == "analysis.snapshot"
        if send is not None:
            await socket.send_to(text_data=send)
        if await socket.receive_nothing(timeout=2):
            return None
        output = await socket.receive_output(5)
        assert output["type"] == "websocket.close", output
        return output.get("code", 1000)
    finally:
        await socket.disconnect(timeout=5)


def write_functions(root: Path, source: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "service.py").write_text(source)
    return root
