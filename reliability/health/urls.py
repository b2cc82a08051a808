"""Health URLs (see ``reliability.health.views``); included at the site root."""

from django.urls import path

from reliability.health import views

urlpatterns = [
    path("health", views.health, name="health"),
    path("health/ready", views.health_ready, name="health-ready"),
    path("health/live", views.health_live, name="health-live"),
    path("ht/", views.EidolonHealthCheckView.as_view(), name="health-check"),
]
