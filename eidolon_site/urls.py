from pathlib import Path

from django.contrib import admin
from django.http import FileResponse, HttpRequest
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from analyses import urls as analyses_urls
from eidolon_site import views
from eidolon_site.api import api
from reliability import views as reliability_views

FAVICON = Path(__file__).resolve().parent / "static" / "eidolon" / "favicon.svg"


@require_GET
@cache_control(max_age=86_400, public=True)
def favicon(request: HttpRequest) -> FileResponse:
    """Browsers ask for /favicon.ico on every site; ours is an SVG."""
    return FileResponse(FAVICON.open("rb"), content_type="image/svg+xml")


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
    path("metrics", reliability_views.metrics, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),
    path("", include("reliability.health.urls")),
]
