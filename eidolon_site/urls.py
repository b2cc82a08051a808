from django.contrib import admin
from django.urls import include, path

from eidolon_site import views
from eidolon_site.api import api
from reliability import views as reliability_views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("metrics", reliability_views.metrics, name="metrics"),
    path("", include("reliability.health.urls")),
]
