"""WebSocket URL patterns of every app, gathered for the ASGI router."""

from analyses.routing import websocket_urlpatterns as analyses_websocket_urlpatterns

websocket_urlpatterns: list = [*analyses_websocket_urlpatterns]
