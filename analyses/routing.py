"""WebSocket routes of the analyses app."""

from django.urls import path

from analyses.consumers import AnalysisEventsConsumer

websocket_urlpatterns = [
    path("ws/analyses/<int:analysis_id>/", AnalysisEventsConsumer.as_asgi()),
]
