from django.contrib import admin
from django.urls import include, path

from analyses import urls as analyses_urls
from eidolon_site import metrics, views
from eidolon_site.api import api

account_urlpatterns = [
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("settings/", views.account_settings, name="settings"),
    path("settings/tokens/", views.api_token_create, name="token-create"),
    path("settings/tokens/<int:token_id>/revoke/", views.api_token_revoke, name="token-revoke"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include((account_urlpatterns, "accounts"))),
    path("analyses/", include("analyses.urls")),
    path("operations/", include((analyses_urls.operations_urlpatterns, "operations"))),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("metrics", metrics.metrics, name="metrics"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("", include("reliability.health.urls")),
]
