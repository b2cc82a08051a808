"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eidolon_site.settings")

# Initialise Django (apps, settings) before importing anything that uses models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from eidolon_site.routing import websocket_urlpatterns  # noqa: E402
from eidolon_site.websocket_auth import HandshakeCredentialsRouter  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Session (browsers, Origin checked) or bearer token (CLIs): see websocket_auth.
        "websocket": HandshakeCredentialsRouter(URLRouter(websocket_urlpatterns)),
    }
)
