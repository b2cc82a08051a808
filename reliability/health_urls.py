"""Health URLs (see reliability/health_views.py); included at the site root."""

from django.urls import path

from reliability import health_views

urlpatterns = [
    path("health", health_views.health, name="health"),
    path("health/ready", health_views.health_ready, name="health-ready"),
    path("health/live", health_views.health_live, name="health-live"),
    path("ht/", health_views.EidolonHealthCheckView.as_view(), name="health-check"),
]
