"""Eidolon settings: one file, configured from the environment.

Every setting has a default that runs on a laptop with nothing but Python
(SQLite under ``var/``, in-memory channel layer, local-memory cache).
``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis for scale-out.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from eidolon_site.logging import build_logging_config, configure_structlog

BASE_DIR = Path(__file__).resolve().parent.parent

_Number = TypeVar("_Number", int, float)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def _env_number(
    name: str,
    default: _Number,
    *,
    parse: Callable[[str], _Number],
    kind: str,
    minimum: _Number | None,
) -> _Number:
    """``name`` from the environment read by ``parse`` (``int`` or ``float``), at least
    ``minimum``; ``default`` when unset or blank. ``kind`` names what is wanted in errors."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {kind}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    return _env_number(name, default, parse=int, kind="an integer", minimum=minimum)


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    return _env_number(name, default, parse=float, kind="a number", minimum=minimum)


def secret_from_file(name: str) -> str:
    """The content of the file the variable ``name`` names (stripped); "" when it is unset."""
    path = env_str(name)
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise ImproperlyConfigured(f"{name}: cannot read {path}: {error.strerror}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


# --- core -------------------------------------------------------------------

DEBUG = env_bool("EIDOLON_DEBUG", False)

_DEVELOPMENT_SECRET_KEY = "django-insecure-eidolon-development-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env_str("EIDOLON_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "EIDOLON_SECRET_KEY must be set when EIDOLON_DEBUG is off "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )
    SECRET_KEY = _DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env_list(
    "EIDOLON_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
if not DEBUG and not ALLOWED_HOSTS:
    ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
CSRF_TRUSTED_ORIGINS = env_list("EIDOLON_CSRF_TRUSTED_ORIGINS", [])

VAR_DIR = Path(env_str("EIDOLON_VAR_DIR") or BASE_DIR / "var")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_tasks",
    "django_tasks_db",
    "django_prometheus",
    "django_structlog",
    "ninja",  # the API docs' static files (no CDN)
    "health_check",
    "axes",  # login brute-force lockout
    "eidolon_site",
    "reliability",
    "analyses",
]

# Async-native subclasses of django-prometheus's, Django's, WhiteNoise's and django-structlog's
# middleware (eidolon_site/async_middleware.py): under ASGI no hook hops to a thread unless it
# must touch the database.
MIDDLEWARE = [
    "eidolon_site.async_middleware.PrometheusBefore",
    "eidolon_site.middleware.RequestIDMiddleware",
    # Health probes are answered here, ahead of sessions, auth, CSRF and the request log: no
    # database access for /health/live, no log line per probe, any Host header (Kubernetes
    # probes use the pod IP).
    "reliability.health.middleware.HealthProbeMiddleware",
    "eidolon_site.async_middleware.Security",
    "eidolon_site.middleware.ContentSecurityPolicyMiddleware",
    "eidolon_site.async_middleware.StaticFiles",
    "eidolon_site.async_middleware.Session",
    "eidolon_site.async_middleware.Common",
    "eidolon_site.async_middleware.Csrf",
    "eidolon_site.async_middleware.Authentication",
    "eidolon_site.async_middleware.Messages",
    "eidolon_site.async_middleware.XFrameOptions",
    "eidolon_site.async_middleware.RequestLog",
    "eidolon_site.async_middleware.LoginLockout",
    "eidolon_site.async_middleware.PrometheusAfter",
]
# Django recognises its protective middleware by path only; eidolon_site/checks.py runs its
# checks for the subclasses above instead (LoginLockout is axes' AxesMiddleware).
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003", "axes.W002"]

ROOT_URLCONF = "eidolon_site.urls"
ASGI_APPLICATION = "eidolon_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "eidolon_site.status_strip.admin_status_strip",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------

# Statement timeout for PostgreSQL, in seconds (seed: DB_QUERY_TIMEOUT 5 s).
EIDOLON_DB_STATEMENT_TIMEOUT = env_float("EIDOLON_DB_STATEMENT_TIMEOUT", 5.0, minimum=0.1)

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL.startswith(("postgres://", "postgresql://")):
    # Under ASGI each request's synchronous database work runs in a thread of its own, so a
    # persistent connection is left behind by every request (PostgreSQL's 100 connections went
    # in seconds under load): close them at the end of each request unless told otherwise. The
    # guard's and the API's database thread keep their own long-lived connection either way.
    _database = dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("EIDOLON_DB_CONN_MAX_AGE", 0, minimum=0),
        conn_health_checks=True,
    )
    _database["ENGINE"] = "django_prometheus.db.backends.postgresql"
    _database.setdefault("OPTIONS", {})
    _database["OPTIONS"].setdefault(
        "options", f"-c statement_timeout={int(EIDOLON_DB_STATEMENT_TIMEOUT * 1000)}"
    )
    _database["OPTIONS"].setdefault("connect_timeout", 2)
    # Lets reliability.sql's server-side cursors prepare their statements (Django's own
    # client-side cursors never prepare). Behind PgBouncer use version 1.21+ or set it to None.
    _database["OPTIONS"].setdefault("prepare_threshold", 5)
elif not DATABASE_URL or DATABASE_URL.startswith("sqlite:///"):
    _sqlite_path = (
        Path(DATABASE_URL.removeprefix("sqlite:///"))
        if DATABASE_URL
        else VAR_DIR / "eidolon.sqlite3"
    )
    _sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    _database = {
        "ENGINE": "django_prometheus.db.backends.sqlite3",
        "NAME": _sqlite_path,
        "OPTIONS": {
            # WAL lets a web process and a worker read while the other writes;
            # IMMEDIATE transactions take the write lock up front, so concurrent
            # writers wait on busy_timeout instead of failing with "database is locked".
            "init_command": (
                "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=20000;"
            ),
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
        # A file, not :memory:, so tests can share their database with subprocesses.
        "TEST": {"NAME": _sqlite_path.with_name(f"test-{_sqlite_path.name}")},
    }
else:
    raise ImproperlyConfigured(
        "DATABASE_URL must be postgres://user@host:port/name or sqlite:////absolute/path, "
        f"got a URL with scheme {DATABASE_URL.split(':', 1)[0]!r}"
    )
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache and channel layer -----------------------------------------------

REDIS_URL = env_str("REDIS_URL")
EIDOLON_CHANNEL_PREFIX = env_str("EIDOLON_CHANNEL_PREFIX", "eidolon")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": EIDOLON_CHANNEL_PREFIX,
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 gives up on a read after 5 s by default: exactly how long
                # channels-redis blocks waiting for a message, so every idle WebSocket
                # crashed. 10 s lets the blocking read return and still bounds a hung Redis.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10}],
                "prefix": f"{EIDOLON_CHANNEL_PREFIX}:asgi",
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache",
            "LOCATION": "eidolon",
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Live progress WebSockets (/ws/analyses/<id>/): a keep-alive message this often; without a
# shared (Redis) layer each web process polls the persisted events of watched analyses this often.
EIDOLON_WS_KEEPALIVE_SECONDS = env_float("EIDOLON_WS_KEEPALIVE_SECONDS", 20.0, minimum=0.1)
EIDOLON_WS_TAIL_SECONDS = env_float("EIDOLON_WS_TAIL_SECONDS", 0.05, minimum=0.01)

# --- background tasks -------------------------------------------------------

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# --- auth, i18n, static -----------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "analyses:list"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("EIDOLON_STATIC_ROOT") or VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- security ---------------------------------------------------------------

EIDOLON_HTTPS = env_bool("EIDOLON_HTTPS", False)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Pages run only our own scripts and styles (eidolon_site.middleware adds the header to HTML;
# WebSockets to this host are allowed). Paths whose third-party pages need inline code (the
# admin's inline styles, django-health-check's page, the API's interactive docs) are exempt.
EIDOLON_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' {websocket_origins}; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
EIDOLON_CSP_EXEMPT_PATHS = ["/admin/", "/ht/", "/api/docs"]

# Request bodies above this are refused (the JSON API answers 413 with a JSON error; pages 400).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("EIDOLON_MAX_REQUEST_BYTES", 1024 * 1024, minimum=1024)
# Clients send nothing over the live-events WebSocket: a message above this many bytes closes
# the socket with 4413 (daphne itself closes frames above 1 MiB with 1009).
EIDOLON_WS_MAX_MESSAGE_BYTES = env_int("EIDOLON_WS_MAX_MESSAGE_BYTES", 4096, minimum=1)

# Login brute force (django-axes): this many wrong passwords for one username from one address
# lock further logins of that pair (the right password included) for the cool-off, or until an
# operator unlocks them (`manage.py axes_reset_username NAME`, or the admin's "Access attempts").
AXES_FAILURE_LIMIT = env_int("EIDOLON_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = env_float("EIDOLON_LOGIN_LOCKOUT_HOURS", 1.0, minimum=0.01)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The connecting address, never a client-sent X-Forwarded-For (a rotating one would evade the
# lock). Behind a proxy that is the proxy's address: the lock is then per username.
AXES_CLIENT_IP_CALLABLE = "eidolon_site.login_lockout.client_address"
AXES_LOCKOUT_CALLABLE = "eidolon_site.login_lockout.lockout_response"
AXES_VERBOSE = False
if EIDOLON_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Load balancers probe health over plain HTTP on the private network.
    SECURE_REDIRECT_EXEMPT = [r"^health(/|$)", r"^ht/", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("EIDOLON_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("EIDOLON_HSTS_PRELOAD", True)

# --- metrics (/metrics) ----------------------------------------------------

# Who may scrape /metrics. Both empty (the default, for local use): anyone who reaches it.
# EIDOLON_METRICS_ALLOWED_IPS: comma-separated networks (CIDR; a bare address is /32) matched
# against the connecting address (behind a proxy: the proxy's), others get 403.
# EIDOLON_METRICS_BASIC_AUTH: "user:password"; a scrape without them gets 401.
EIDOLON_METRICS_ALLOWED_IPS = env_list("EIDOLON_METRICS_ALLOWED_IPS", [])
for _network in EIDOLON_METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _error:
        raise ImproperlyConfigured(f"EIDOLON_METRICS_ALLOWED_IPS: {_error}") from None
EIDOLON_METRICS_BASIC_AUTH = env_str("EIDOLON_METRICS_BASIC_AUTH")
if EIDOLON_METRICS_BASIC_AUTH and ":" not in EIDOLON_METRICS_BASIC_AUTH:
    raise ImproperlyConfigured('EIDOLON_METRICS_BASIC_AUTH must be "user:password"')
# In production (debug off) with neither set, only loopback and private networks may scrape:
# where Prometheus runs, never the internet. EIDOLON_METRICS_ALLOWED_IPS=0.0.0.0/0,::/0 opens it.
LOCAL_AND_PRIVATE_NETWORKS = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
]
if not DEBUG and not EIDOLON_METRICS_ALLOWED_IPS and not EIDOLON_METRICS_BASIC_AUTH:
    EIDOLON_METRICS_ALLOWED_IPS = list(LOCAL_AND_PRIVATE_NETWORKS)
# Shared state (breakers, budgets, queue, cache size...) is read from the database at most this
# often per process; every process reports the same readings.
EIDOLON_METRICS_STATE_CACHE_SECONDS = env_float(
    "EIDOLON_METRICS_STATE_CACHE_SECONDS", 2.0, minimum=0.0
)
# The home page (open to anyone) reuses its status strip this long per process.
EIDOLON_STATUS_STRIP_CACHE_SECONDS = env_float(
    "EIDOLON_STATUS_STRIP_CACHE_SECONDS", 2.0, minimum=0.0
)

# --- logging ----------------------------------------------------------------

EIDOLON_LOG_FORMAT = env_str("EIDOLON_LOG_FORMAT") or ("console" if DEBUG else "json")
if EIDOLON_LOG_FORMAT not in {"console", "json"}:
    raise ImproperlyConfigured(
        f"EIDOLON_LOG_FORMAT must be 'console' or 'json', got {EIDOLON_LOG_FORMAT!r}"
    )
EIDOLON_LOG_LEVEL = (env_str("EIDOLON_LOG_LEVEL") or "INFO").upper()
if EIDOLON_LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"EIDOLON_LOG_LEVEL is not a log level: {EIDOLON_LOG_LEVEL!r}")

LOGGING = build_logging_config(log_format=EIDOLON_LOG_FORMAT, log_level=EIDOLON_LOG_LEVEL)
configure_structlog(log_format=EIDOLON_LOG_FORMAT)

# django-structlog: bind a request_id (the RequestIDMiddleware has already replaced
# a missing or unsafe incoming X-Request-ID with a generated one) and the user id.
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False
DJANGO_STRUCTLOG_DJANGO_TASKS_ENABLED = False

# --- resilience (the seed's numbers are the defaults) ------------------------

EIDOLON_AI_TIMEOUT = env_float("EIDOLON_AI_TIMEOUT", 90.0, minimum=0.1)
EIDOLON_GIT_TIMEOUT = env_float("EIDOLON_GIT_TIMEOUT", 30.0, minimum=0.1)
EIDOLON_FILE_IO_TIMEOUT = env_float("EIDOLON_FILE_IO_TIMEOUT", 10.0, minimum=0.1)
EIDOLON_ANALYSIS_MAX_DURATION = env_float("EIDOLON_ANALYSIS_MAX_DURATION", 3600.0, minimum=1.0)

EIDOLON_RETRY = {
    "max_attempts": env_int("EIDOLON_RETRY_MAX_ATTEMPTS", 4, minimum=1),
    "base_delay": env_float("EIDOLON_RETRY_BASE_DELAY", 1.0, minimum=0.0),
    "max_delay": env_float("EIDOLON_RETRY_MAX_DELAY", 60.0, minimum=0.0),
}
EIDOLON_RETRY_BUDGET = {
    "ratio": env_float("EIDOLON_RETRY_BUDGET_RATIO", 0.2, minimum=0.0),
    "window": env_float("EIDOLON_RETRY_BUDGET_WINDOW", 10.0, minimum=1.0),
    "min_retries": env_int("EIDOLON_RETRY_BUDGET_MIN_RETRIES", 3, minimum=0),
}

# Fraction of every rate limit left unused to absorb network jitter (see ratelimit.spacing_of).
EIDOLON_RATE_HEADROOM = env_float("EIDOLON_RATE_HEADROOM", 0.02, minimum=0.0)
if EIDOLON_RATE_HEADROOM >= 0.5:
    raise ImproperlyConfigured("EIDOLON_RATE_HEADROOM must be below 0.5")

# Defaults for breakers and budgets, created by `migrate` (when EIDOLON_CREATE_CONTROLS_ON_MIGRATE)
# or on first use; afterwards the admin owns them.
EIDOLON_CREATE_CONTROLS_ON_MIGRATE = env_bool("EIDOLON_CREATE_CONTROLS_ON_MIGRATE", True)
EIDOLON_BREAKER_DEFAULTS = {
    "anthropic": {
        "failure_threshold": env_int("EIDOLON_AI_BREAKER_FAILURES", 3, minimum=1),
        "recovery_timeout": env_float("EIDOLON_AI_BREAKER_RECOVERY", 120.0, minimum=0.0),
        "slow_call_duration": EIDOLON_AI_TIMEOUT,
        "half_open_max_duration": 2 * EIDOLON_AI_TIMEOUT,
    },
    "git": {
        "failure_threshold": env_int("EIDOLON_GIT_BREAKER_FAILURES", 5, minimum=1),
        "recovery_timeout": env_float("EIDOLON_GIT_BREAKER_RECOVERY", 60.0, minimum=0.0),
        "slow_call_duration": EIDOLON_GIT_TIMEOUT,
        "half_open_max_duration": 2 * EIDOLON_GIT_TIMEOUT,
    },
}
EIDOLON_BUDGET_DEFAULTS = {
    "anthropic": {
        "requests_per_window": env_int("EIDOLON_AI_RPM", 50, minimum=1),
        "input_tokens_per_window": env_int("EIDOLON_AI_INPUT_TPM", 40_000, minimum=1),
        "output_tokens_per_window": env_int("EIDOLON_AI_OUTPUT_TPM", 8_000, minimum=1),
        "requests_per_day": env_int("EIDOLON_AI_RPD", 5_000, minimum=1),
        "tokens_per_day": env_int("EIDOLON_AI_TOKENS_PER_DAY", 0, minimum=0) or None,
        "tokens_per_analysis": env_int("EIDOLON_AI_TOKENS_PER_ANALYSIS", 0, minimum=0) or None,
        "window_seconds": env_float("EIDOLON_RATE_WINDOW", 60.0, minimum=0.01),
    },
    # Analyses each user may submit (web and API), one budget per user ("submissions:<id>").
    "submissions": {
        "requests_per_window": env_int("EIDOLON_SUBMISSIONS_PER_MINUTE", 30, minimum=1),
        "requests_per_day": env_int("EIDOLON_SUBMISSIONS_PER_DAY", 500, minimum=1),
        "window_seconds": 60.0,
    },
}

# --- analyses ---------------------------------------------------------------

# Local directories the web and API may analyse (the terminal command may analyse any
# directory its user can read). Empty: only git URLs from the web.
EIDOLON_SOURCE_ROOTS = env_list("EIDOLON_SOURCE_ROOTS", [])
EIDOLON_WORKSPACE_ROOT = Path(env_str("EIDOLON_WORKSPACE_ROOT") or VAR_DIR / "workspaces")
EIDOLON_GIT_MAX_BYTES = env_int("EIDOLON_GIT_MAX_BYTES", 200 * 1024 * 1024, minimum=1)
EIDOLON_GIT_ALLOW_INSECURE_HTTP = env_bool("EIDOLON_GIT_ALLOW_INSECURE_HTTP", False)
# Which hosts git URLs may lead to (analyses.destinations). Entries are host names (matching
# subdomains too) or networks. Empty allow-list: any public host. Private, loopback,
# link-local, reserved and multicast addresses are refused after DNS resolution, at submission
# and again at clone time, except inside EIDOLON_GIT_TRUSTED_NETWORKS (an internal git server).
EIDOLON_GIT_ALLOWED_HOSTS = env_list("EIDOLON_GIT_ALLOWED_HOSTS", [])
EIDOLON_GIT_DENIED_HOSTS = env_list("EIDOLON_GIT_DENIED_HOSTS", [])
EIDOLON_GIT_TRUSTED_NETWORKS = env_list("EIDOLON_GIT_TRUSTED_NETWORKS", [])
for _network in EIDOLON_GIT_TRUSTED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"EIDOLON_GIT_TRUSTED_NETWORKS: {_network!r} is not a network (e.g. 10.1.0.0/16)"
        ) from None
# Extra `git -c` options for clones, as a JSON object: a private CA bundle
# ({"http.sslCAInfo": "/etc/ssl/corp.pem"}) or a credential helper. The hardening wins over them.
try:
    EIDOLON_GIT_EXTRA_CONFIG = json.loads(env_str("EIDOLON_GIT_EXTRA_CONFIG") or "{}")
except json.JSONDecodeError as error:
    raise ImproperlyConfigured(f"EIDOLON_GIT_EXTRA_CONFIG is not JSON: {error}") from None
if not isinstance(EIDOLON_GIT_EXTRA_CONFIG, dict) or not all(
    isinstance(key, str) and isinstance(value, str)
    for key, value in EIDOLON_GIT_EXTRA_CONFIG.items()
):
    raise ImproperlyConfigured("EIDOLON_GIT_EXTRA_CONFIG must be a JSON object of strings")

# Claude reviews the code when a key is set, the offline rules otherwise: from the environment,
# or from the file ANTHROPIC_API_KEY_FILE names (a mounted secret). Never logged
# (reliability.redaction removes its value from every log line and message).
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY") or secret_from_file("ANTHROPIC_API_KEY_FILE")
# Another endpoint for the SDK, e.g. the fault-injecting fake (manage.py fake_anthropic).
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL") or None
# The models reviews may use, in order: the primary, then the fallbacks a review moves to while
# those before it are overloaded (breaker open) or out of rate budget; each has its own breaker
# and budget, "anthropic:<model>". EIDOLON_AI_MODEL alone names the primary.
EIDOLON_AI_MODELS = env_list(
    "EIDOLON_AI_MODELS",
    list(dict.fromkeys([env_str("EIDOLON_AI_MODEL") or "claude-sonnet-5-5", "claude-haiku-4-5"])),
)
if len(set(EIDOLON_AI_MODELS)) != len(EIDOLON_AI_MODELS) or not all(
    re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}", model) for model in EIDOLON_AI_MODELS
):
    raise ImproperlyConfigured(f"EIDOLON_AI_MODELS: not distinct model names: {EIDOLON_AI_MODELS}")
EIDOLON_AI_MODEL = EIDOLON_AI_MODELS[0]
# Families of breakers and budgets, one per member ("anthropic:<model>", with the family's
# defaults); operators may name the family to act on every member.
EIDOLON_TARGET_FAMILIES = {"anthropic": EIDOLON_AI_MODELS}
# A model whose rate budget has no slot for this long is passed over for the next in the chain.
EIDOLON_AI_MODEL_SLOT_WAIT = env_float("EIDOLON_AI_MODEL_SLOT_WAIT", 2.0, minimum=0.0)
EIDOLON_AI_MAX_TOKENS = env_int("EIDOLON_AI_MAX_TOKENS", 2048, minimum=64)
# Mark the shared prompt prefix for the API's prompt cache from this many tokens (estimated as
# characters / 4); 0: the API's minimum for the model (1024 tokens, 2048 for Haiku).
EIDOLON_AI_PROMPT_CACHE_MIN_TOKENS = env_int("EIDOLON_AI_PROMPT_CACHE_MIN_TOKENS", 0, minimum=0)
# While the AI breaker is open: review with the offline rules instead of waiting.
EIDOLON_AI_FALLBACK_STATIC = env_bool("EIDOLON_AI_FALLBACK_STATIC", False)

EIDOLON_ANALYSIS_CONCURRENCY = env_int("EIDOLON_ANALYSIS_CONCURRENCY", 10, minimum=1)
EIDOLON_WORKER_ANALYSES = env_int("EIDOLON_WORKER_ANALYSES", 3, minimum=1)
# A worker renews its lease on a running analysis; when it dies, another resumes it after this.
EIDOLON_ANALYSIS_LEASE_SECONDS = env_float("EIDOLON_ANALYSIS_LEASE_SECONDS", 60.0, minimum=1.0)

EIDOLON_RESULT_CACHE_MAX_ENTRIES = env_int("EIDOLON_RESULT_CACHE_MAX_ENTRIES", 100_000, minimum=1)
EIDOLON_RESULT_CACHE_MAX_BYTES = env_int(
    "EIDOLON_RESULT_CACHE_MAX_BYTES", 256 * 1024 * 1024, minimum=1
)

# Parsing limits (the original Eidolon's numbers).
EIDOLON_PARSE_LIMITS = {
    "max_file_bytes": env_int("EIDOLON_MAX_FILE_BYTES", 10 * 1024 * 1024, minimum=1),
    "max_modules": env_int("EIDOLON_MAX_MODULES", 1000, minimum=1),
    "max_functions_per_module": env_int("EIDOLON_MAX_FUNCTIONS_PER_MODULE", 500, minimum=1),
    "max_function_lines": env_int("EIDOLON_MAX_FUNCTION_LINES", 1000, minimum=1),
    "max_nesting_depth": env_int("EIDOLON_MAX_NESTING_DEPTH", 100, minimum=1),
    "file_io_timeout": EIDOLON_FILE_IO_TIMEOUT,
}

# --- Prometheus -------------------------------------------------------------

PROMETHEUS_EXPORT_MIGRATIONS = False

# --- health -----------------------------------------------------------------
# Probes (/health/live, /health/ready, /health, /ht/), the health monitor and worker heartbeats.
# See the README's "Health checks" section.

# Each process runs at most one round of checks per this many seconds; probes share it.
EIDOLON_HEALTH_CACHE_SECONDS = env_float("EIDOLON_HEALTH_CACHE_SECONDS", 1.0, minimum=0.0)
# Disk: unhealthy (not ready) at >= this % used or <= this many GB free (seed: 90 %, 1 GB).
EIDOLON_HEALTH_DISK_MAX_USED_PERCENT = env_float(
    "EIDOLON_HEALTH_DISK_MAX_USED_PERCENT", 90.0, minimum=0.0
)
EIDOLON_HEALTH_DISK_MIN_FREE_GB = env_float("EIDOLON_HEALTH_DISK_MIN_FREE_GB", 1.0, minimum=0.0)
# The volume that holds the data: the SQLite file's directory, else the analyses' workspace.
EIDOLON_HEALTH_DISK_PATH = env_str("EIDOLON_HEALTH_DISK_PATH") or str(
    Path(DATABASES["default"]["NAME"]).parent
    if DATABASES["default"]["ENGINE"].endswith("sqlite3")
    else EIDOLON_WORKSPACE_ROOT
)
# Task workers: none with a heartbeat this recent -> "degraded" (never unready).
EIDOLON_HEALTH_WORKER_STALE_SECONDS = env_float(
    "EIDOLON_HEALTH_WORKER_STALE_SECONDS", 60.0, minimum=1.0
)
EIDOLON_WORKER_HEARTBEAT_SECONDS = env_float("EIDOLON_WORKER_HEARTBEAT_SECONDS", 10.0, minimum=0.1)
# AI: while calls fail, no success for this long -> "degraded". No calls at all is not a fault.
EIDOLON_HEALTH_AI_STALE_SECONDS = env_float("EIDOLON_HEALTH_AI_STALE_SECONDS", 600.0, minimum=1.0)
# History: the monitor samples every N seconds, keeps samples N days and transitions longer.
EIDOLON_HEALTH_MONITOR_INTERVAL = env_float("EIDOLON_HEALTH_MONITOR_INTERVAL", 30.0, minimum=0.1)
EIDOLON_HEALTH_SAMPLE_RETENTION_DAYS = env_float(
    "EIDOLON_HEALTH_SAMPLE_RETENTION_DAYS", 7.0, minimum=0.01
)
EIDOLON_HEALTH_TRANSITION_RETENTION_DAYS = env_float(
    "EIDOLON_HEALTH_TRANSITION_RETENTION_DAYS", 90.0, minimum=0.01
)
