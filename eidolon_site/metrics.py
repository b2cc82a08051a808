"""``/metrics``: every process's counters and histograms (multiprocess mode) plus the shared state
of both apps and of the site (the task queue, what this deployment runs on), read from the
database at most once per ``EIDOLON_METRICS_STATE_CACHE_SECONDS``; restricted by address and/or
basic-auth credentials when the settings ask for it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import platform
import time
import tomllib
from collections.abc import Iterator

import django
from django.conf import settings
from django.db import connection
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django_tasks_db.models import DBTaskResult
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from analyses.metrics import AnalysesStateCollector
from reliability.views import ScrapeCache, SharedStateCollector, exposition

REALM = 'Basic realm="eidolon metrics"'


class TaskQueueCollector(Collector):
    """Tasks waiting for a worker (django-tasks' database backend), per queue."""

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "eidolon_task_queue_depth",
            "Tasks ready to run and not yet claimed by a worker.",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "eidolon_task_queue_oldest_age_seconds",
            "How long the oldest ready task has waited (0 when none waits).",
            labels=["queue"],
        )
        now = time.time()
        rows = (
            DBTaskResult.objects.ready()
            .values("queue_name")
            .annotate(tasks=Count("id"), oldest=Min("enqueued_at"))
        )
        queues = {"default": (0, 0.0)}  # always reported, so an empty queue reads 0, not absent
        for row in rows:
            queues[row["queue_name"]] = (row["tasks"], max(0.0, now - row["oldest"].timestamp()))
        for queue, (tasks, oldest) in sorted(queues.items()):
            depth.add_metric([queue], tasks)
            age.add_metric([queue], oldest)
        yield from (depth, age)


def eidolon_version() -> str:
    with open(settings.BASE_DIR / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["version"]


class SystemInfoCollector(Collector):
    """``eidolon_system``: an Info built at scrape time (multiprocess mode has no Info)."""

    def collect(self) -> Iterator[Metric]:
        layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
        yield InfoMetricFamily(
            "eidolon_system",
            "Eidolon system information",
            value={
                "version": eidolon_version(),
                "python": platform.python_version(),
                "django": django.get_version(),
                "database": connection.vendor,
                "channel_layer": layer,
                "model": settings.EIDOLON_AI_MODEL,
            },
        )


shared_state = ScrapeCache(
    [SharedStateCollector(), AnalysesStateCollector(), TaskQueueCollector(), SystemInfoCollector()],
    ttl=lambda: settings.EIDOLON_METRICS_STATE_CACHE_SECONDS,
)


def address_allowed(address: str, allowed: list[str]) -> bool:
    """Whether ``address`` is in one of the ``allowed`` networks (CIDR; a bare address is /32)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in allowed)


def credentials_match(authorization: str, expected: str) -> bool:
    """``Authorization: Basic ...`` carries ``expected`` ("user:password"), compared in constant
    time."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected.encode())


def refusal(request: HttpRequest) -> HttpResponse | None:
    """403 for an address outside the allow-list, 401 without the credentials; None: allowed."""
    allowed = settings.EIDOLON_METRICS_ALLOWED_IPS
    if allowed and not address_allowed(request.META.get("REMOTE_ADDR", ""), allowed):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    expected = settings.EIDOLON_METRICS_BASIC_AUTH
    if expected and not credentials_match(request.headers.get("Authorization", ""), expected):
        response = HttpResponse("credentials required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = REALM
        return response
    return None


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition: the processes' metrics plus the shared state."""
    if (refused := refusal(request)) is not None:
        return refused
    return HttpResponse(exposition(shared_state), content_type=CONTENT_TYPE_LATEST)
