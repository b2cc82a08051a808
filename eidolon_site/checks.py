"""Django's deploy checks of the protective middleware, for Eidolon's async-native subclasses.

Django finds SecurityMiddleware, XFrameOptionsMiddleware and CsrfViewMiddleware by their dotted
paths; ``MIDDLEWARE`` lists subclasses of them (``eidolon_site.async_middleware``). So Django's
"not in MIDDLEWARE" warnings (security.W001-W003) are silenced in settings, its other checks of
those middleware (HSTS, nosniff, X-Frame-Options DENY, secure CSRF cookie, ...) would pass
vacuously, and this check runs all of them as if the paths were Django's.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks.security import base, csrf
from django.test.utils import override_settings
from django.utils.module_loading import import_string

PROTECTIVE_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
)
MIDDLEWARE_CHECKS = (
    base.check_security_middleware,
    base.check_xframe_options_middleware,
    base.check_sts,
    base.check_sts_include_subdomains,
    base.check_sts_preload,
    base.check_content_type_nosniff,
    base.check_ssl_redirect,
    base.check_xframe_deny,
    base.check_referrer_policy,
    base.check_cross_origin_opener_policy,
    csrf.check_csrf_middleware,
    csrf.check_csrf_cookie_secure,
)
# Django's ids for "not in MIDDLEWARE", silenced in settings; reported here under these.
RENAMED = {"security.W001": "eidolon.W001", "security.W002": "eidolon.W002"}
RENAMED["security.W003"] = "eidolon.W003"


def as_django_paths(middleware: list[str]) -> list[str]:
    """``middleware`` with each subclass of a protective middleware named by Django's path."""
    named = []
    for path in middleware:
        cls = import_string(path)
        named.append(
            next(
                (
                    django
                    for django in PROTECTIVE_MIDDLEWARE
                    if issubclass(cls, import_string(django))
                ),
                path,
            )
        )
    return named


@register(Tags.security, deploy=True)
def protective_middleware(app_configs, **kwargs) -> list[CheckMessage]:
    with override_settings(MIDDLEWARE=as_django_paths(list(settings.MIDDLEWARE))):
        messages = [message for check in MIDDLEWARE_CHECKS for message in check(app_configs)]
    for message in messages:
        message.id = RENAMED.get(message.id, message.id)
    return messages
