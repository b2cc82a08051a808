"""Two web processes (daphne) and two workers sharing ``PROMETHEUS_MULTIPROC_DIR``: either web
process reports the work of all four, and the shared breaker state from the database."""

from __future__ import annotations

import sys
import time
import urllib.request

import pytest
from django.contrib.auth.models import Permission, User
from django.db.models import Sum

from analyses.models import Analysis, AnalysisStatus, LLMCall
from analyses.review_responder import review_responder
from analyses.services import analysis_create, analysis_enqueue
from reliability.controls import breaker_force_open
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import CircuitBreaker
from tests.anthropic_support import generous_anthropic_limits, write_project
from tests.eidolon_site.metrics_support import Scrape
from tests.processes import (
    ManagedProcess,
    free_port,
    start_daphne,
    start_worker,
    subprocess_environment,
    wait_for_port,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

ANALYSES = 4
HOME_PAGES = {"a": 3, "b": 5}  # GET / made to each web process
FLIP_LIMIT_SECONDS = 5.0
CHANGELIST = "/admin/reliability/circuitbreaker/"


def scrape(base_url: str) -> Scrape:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        return Scrape(response.read().decode())


def home_pages(scraped: Scrape) -> float:
    """Requests the home page's view answered, as django-prometheus counts them (per view)."""
    return sum(
        value
        for labels, value in scraped.samples.get(
            "django_http_requests_total_by_view_transport_method_total", {}
        ).items()
        if ("view", "home") in labels
    )


def finished_by(worker) -> int:
    return sum(1 for line in worker.json_lines() if line.get("event") == "analysis_completed")


class TestTwoWebProcessesAndTwoWorkers:
    def test_counters_add_up_in_either_web_process__and_the_breaker_flips_in_both(
        self, tmp_path, client, settings
    ):
        settings.ANTHROPIC_API_KEY = "test-key"
        generous_anthropic_limits()
        multiproc = tmp_path / "prometheus"
        multiproc.mkdir()
        fake_api = FakeAnthropic(config=FakeConfig(latency_s=0.1), responder=review_responder)
        with fake_api.running() as fake:
            env = subprocess_environment(
                ANTHROPIC_API_KEY="test-key",
                ANTHROPIC_BASE_URL=fake.base_url,
                PROMETHEUS_MULTIPROC_DIR=str(multiproc),
                EIDOLON_LOG_LEVEL="INFO",
                EIDOLON_WORKER_HEARTBEAT_SECONDS="0.5",
            )
            processes = []
            try:
                web_a, url_a = start_daphne(env)
                processes.append(web_a)
                web_b, url_b = start_daphne(env)
                processes.append(web_b)
                workers = [start_worker(env, "metrics-1"), start_worker(env, "metrics-2")]
                processes.extend(workers)
                for index in range(ANALYSES):
                    root = tmp_path / f"project-{index}"
                    root.mkdir()
                    write_project(root, functions=6 + index)
                    analysis_enqueue(
                        analysis_create(
                            source=str(root),
                            provider="anthropic",
                            concurrency=2,
                            allow_any_path=True,
                        )
                    )
                wait_until(
                    lambda: (
                        not Analysis.objects.exclude(status__in=[AnalysisStatus.COMPLETED]).exists()
                    ),
                    timeout=120,
                )
                for name, url in (("a", url_a), ("b", url_b)):
                    for _ in range(HOME_PAGES[name]):
                        urllib.request.urlopen(f"{url}/", timeout=10).close()
                scraped = {"a": scrape(url_a), "b": scrape(url_b)}
                by_worker = [finished_by(worker) for worker in workers]

                flip_seconds = self._reset_from_the_admin_flips_both(client, [url_a, url_b])
            finally:
                for process in processes:
                    process.stop()

        print(f"\nanalyses finished by each worker: {by_worker}")
        print(f"breaker-state gauge flipped in web a, b after: {flip_seconds} s")
        assert sum(by_worker) == ANALYSES and all(by_worker), by_worker
        calls = LLMCall.objects.count()
        tokens = LLMCall.objects.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"))
        units = Analysis.objects.aggregate(n=Sum("functions_analyzed"))["n"]
        for name, metrics in scraped.items():
            assert metrics.value("eidolon_analyses_total", status="completed") == ANALYSES, name
            assert metrics.value("eidolon_analysis_duration_seconds_count") == ANALYSES, name
            assert metrics.value("eidolon_ai_api_calls_total") == calls > 0, name
            assert metrics.value("eidolon_ai_api_tokens_total", type="input") == tokens["i"], name
            assert metrics.value("eidolon_ai_api_tokens_total", type="output") == tokens["o"], name
            assert metrics.value("eidolon_analysis_units_total", outcome="analyzed") == units
            assert home_pages(metrics) == sum(HOME_PAGES.values()), name
            assert metrics.value("eidolon_workers_alive") == 2, name
        assert max(flip_seconds) < FLIP_LIMIT_SECONDS

    def _reset_from_the_admin_flips_both(self, client, urls: list[str]) -> list[float]:
        """Force the breaker open, wait until both web processes report it, reset it from the
        admin as a staff user; the seconds until each reports it closed."""
        breaker_force_open(name="anthropic", actor="drill", reason="metrics test")
        for url in urls:
            wait_until(
                lambda url=url: scrape(url).value(
                    "eidolon_breaker_state", breaker="anthropic", state="forced_open"
                ),
                timeout=10,
            )
        operator = User.objects.create_user(username="olga", password="pw", is_staff=True)
        operator.user_permissions.set(
            Permission.objects.filter(
                codename__in=["view_circuitbreaker", "change_circuitbreaker", "operate_controls"]
            )
        )
        client.force_login(operator)
        breaker = CircuitBreaker.objects.get(name="anthropic")
        began = time.monotonic()
        confirmed = {"confirm": "yes", "reason": "provider recovered"}  # the admin asks first
        response = client.post(
            CHANGELIST, {"action": "reset", "_selected_action": [breaker.pk], **confirmed}
        )
        assert response.status_code == 302
        flipped: dict[str, float] = {}
        while len(flipped) < len(urls) and time.monotonic() - began < 2 * FLIP_LIMIT_SECONDS:
            for url in urls:
                if url not in flipped and scrape(url).value(
                    "eidolon_breaker_state", breaker="anthropic", state="closed"
                ):
                    flipped[url] = round(time.monotonic() - began, 2)
            time.sleep(0.05)
        assert len(flipped) == len(urls), f"not flipped within {2 * FLIP_LIMIT_SECONDS} s"
        return [flipped[url] for url in urls]


class TestDevScriptServe:
    def test_serve__empties_the_metrics_directory_and_every_process_writes_into_it(self, tmp_path):
        multiproc = tmp_path / "prometheus"
        multiproc.mkdir()
        stale = multiproc / "counter_999999.db"
        stale.write_bytes(b"left by a previous run")
        port = free_port()
        env = subprocess_environment(
            EIDOLON_VENV=sys.prefix,
            PROMETHEUS_MULTIPROC_DIR=str(multiproc),
            EIDOLON_WORKER_HEARTBEAT_SECONDS="0.5",
        )
        server = ManagedProcess(
            [sys.executable, "scripts/dev.py", "serve", "--port", str(port)], env=env, name="serve"
        )
        try:
            wait_for_port(port)
            pids = wait_until(
                lambda: writers(multiproc) if len(writers(multiproc)) >= 3 else None, timeout=30
            )
            # A process writes its files when it starts, its query counts once it has queried.
            scraped = wait_until(lambda: counted_queries(f"http://127.0.0.1:{port}"), timeout=30)
        finally:
            server.stop()
        assert not stale.exists()
        assert len(pids) >= 3  # web, worker, health monitor
        assert scraped.value("eidolon_db_queries_total") > 0


def counted_queries(url: str):
    """A scrape of ``url`` once it counts database queries, else None."""
    scraped = scrape(url)
    return scraped if scraped.value("eidolon_db_queries_total") > 0 else None


def writers(directory) -> set[int]:
    """The processes that wrote metrics into the multiprocess directory."""
    return {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob("*.db")}
