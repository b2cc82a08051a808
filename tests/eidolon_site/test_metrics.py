"""``/metrics`` after real work: the seed's metrics with their labels and buckets, agreeing with
what the database recorded; the shared state read at scrape time; the access restriction."""

from __future__ import annotations

import base64
import time
from collections import Counter

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

from analyses.metrics import ai_call_status
from analyses.models import Analysis, LLMCall, ResultCache
from analyses.orchestrator import run_analysis
from analyses.review_responder import review_responder
from analyses.services import analysis_create
from eidolon_site.metrics import shared_state
from eidolon_site.tasks import ping
from reliability.controls import breaker_force_open
from reliability.dbmetrics import operation_and_table
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from reliability.models import WorkerHeartbeat
from tests.anthropic_support import (
    as_anthropic,
    generous_anthropic_limits,
    provider_for,
    write_project,
)
from tests.eidolon_site.metrics_support import SEED_BUCKETS, SEED_SAMPLES, Scrape

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_shared_state(settings):
    """Every scrape in these tests reads the database (the cache is tested on its own)."""
    settings.EIDOLON_METRICS_STATE_CACHE_SECONDS = 0
    shared_state.clear()
    yield
    shared_state.clear()


def scrape(client, **headers) -> Scrape:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return Scrape(response.content.decode())


def llm_totals() -> dict[str, int]:
    return LLMCall.objects.aggregate(
        input=Sum("input_tokens", default=0),
        output=Sum("output_tokens", default=0),
        cache_read=Sum("cache_read_input_tokens", default=0),
        cache_write=Sum("cache_creation_input_tokens", default=0),
    )


class TestAfterARealAnalysis:
    def test_seed_metrics_present__and_calls_tokens_and_cache_hits_equal_the_database(
        self, client, tmp_path
    ):
        generous_anthropic_limits()
        before = scrape(client)
        with FakeAnthropic(config=FakeConfig(seed=5), responder=review_responder).running() as fake:
            fake.configure(fault_rates={"overloaded": 0.25}, retry_after_s=0.05)
            root = write_project(tmp_path, functions=12)
            analyses = []
            for _ in range(2):  # the second run over the same tree is served by the cache
                analysis = analysis_create(source=str(root), provider="static", allow_any_path=True)
                async_to_sync(as_anthropic)(analysis)
                async_to_sync(run_analysis)(analysis.pk, provider=provider_for(fake))
                analyses.append(Analysis.objects.get(pk=analysis.pk))
        after = scrape(client)

        def delta(name: str, **labels: str) -> float:
            return after.value(name, **labels) - before.value(name, **labels)

        # Every metric of the seed, with exactly its labels, and its buckets.
        for name, labels in SEED_SAMPLES.items():
            label_sets = after.label_sets(name)
            assert label_sets, f"{name} missing"
            assert all(set(found) == labels for found in label_sets), (name, label_sets)
        for name, buckets in SEED_BUCKETS.items():
            edges = {float(labels["le"]) for labels in after.label_sets(name)}
            assert edges == {*map(float, buckets), float("inf")}, name

        # AI calls: one per attempt, by status and model, as LLMCall stored them.
        stored = Counter(
            (ai_call_status(status), model)
            for status, model in LLMCall.objects.values_list("status", "model")
        )
        assert {status for status, _ in stored} >= {"success", "http_529"}
        for (status, model), count in stored.items():
            assert delta("eidolon_ai_api_calls_total", status=status, model=model) == count
        assert delta("eidolon_ai_api_calls_total") == LLMCall.objects.count()
        assert delta("eidolon_ai_api_latency_seconds_count") == LLMCall.objects.count()
        for kind, tokens in llm_totals().items():
            assert delta("eidolon_ai_api_tokens_total", type=kind) == tokens, kind
        assert llm_totals()["input"] > 0
        # Per model (issue 15): tokens and latency by the model that answered, today's cost.
        for model, tokens, calls, cost in LLMCall.objects.values_list("model").annotate(
            Sum("input_tokens"), Count("id"), Sum("cost_usd")
        ):
            assert delta("eidolon_ai_api_tokens_total", type="input", model=model) == tokens
            assert delta("eidolon_ai_api_latency_seconds_count", model=model) == calls
            assert after.value("eidolon_ai_cost_today_usd", model=model) == pytest.approx(
                float(cost or 0)
            )

        # The result cache: hits as ResultCache counted them, one miss per unit reviewed.
        second = analyses[1]
        hits = ResultCache.objects.aggregate(hits=Sum("hits"))["hits"]
        assert hits == second.functions_cached > 0
        assert delta("eidolon_cache_operations_total", operation="get", result="hit") == hits
        reviewed = sum(a.functions_analyzed + a.functions_failed for a in analyses)
        assert delta("eidolon_cache_operations_total", operation="get", result="miss") == reviewed
        assert (
            delta("eidolon_cache_operations_total", operation="set", result="success")
            == ResultCache.objects.count()
        )
        assert after.value("eidolon_cache_entries") == ResultCache.objects.count()
        size = ResultCache.objects.aggregate(size=Sum("size_bytes"))["size"]
        assert after.value("eidolon_cache_size_bytes") == size

        # Analyses by mode and final status, their durations, their units by outcome.
        for analysis in analyses:
            assert after.value("eidolon_analyses_total", mode="full", status=analysis.status) >= 1
        assert delta("eidolon_analyses_total", mode="full") == 2
        assert delta("eidolon_analysis_duration_seconds_count", mode="full") == 2
        assert after.value("eidolon_active_analyses") == 0
        for outcome, column in (("analyzed", "functions_analyzed"), ("cached", "functions_cached")):
            expected = sum(getattr(a, column) for a in analyses)
            assert delta("eidolon_analysis_units_total", outcome=outcome) == expected, outcome

        # Database queries by operation and table, through the connections' execute wrapper.
        assert delta("eidolon_db_queries_total", operation="insert", table="analyses_llmcall") > 0
        assert delta("eidolon_db_queries_total", operation="update", table="analyses_analysis") > 0
        assert delta("eidolon_db_query_duration_seconds_count", operation="select") > 0

        (system,) = after.label_sets("eidolon_system_info")
        assert system["database"] == connection.vendor
        assert system["model"] == django_settings.EIDOLON_AI_MODEL
        assert system["version"] == "0.1.0"


class TestSharedState:
    def test_breaker_state_workers_and_queue__read_from_the_database_at_scrape_time(self, client):
        generous_anthropic_limits()
        assert scrape(client).value("eidolon_breaker_state", breaker="anthropic", state="closed")
        breaker_force_open(name="anthropic", actor="test", reason="maintenance")
        state = scrape(client)
        assert state.value("eidolon_breaker_state", breaker="anthropic", state="forced_open") == 1
        assert state.value("eidolon_breaker_state", breaker="anthropic", state="closed") == 0
        assert state.value("eidolon_workers_alive") == 0
        assert state.value("eidolon_task_queue_depth", queue="default") == 0
        assert state.value("eidolon_ratelimit_day_requests_remaining", budget="anthropic") > 0

        now = timezone.now()
        WorkerHeartbeat.objects.create(
            worker_id="w1", host="h", pid=1, started_at=now, last_seen_at=now
        )
        WorkerHeartbeat.objects.create(
            worker_id="gone", host="h", pid=2, started_at=now, last_seen_at=now, stopped_at=now
        )
        ping.enqueue("one")
        ping.enqueue("two")
        state = scrape(client)
        assert state.value("eidolon_workers_alive") == 1
        assert state.value("eidolon_task_queue_depth", queue="default") == 2
        assert 0 <= state.value("eidolon_task_queue_oldest_age_seconds", queue="default") < 60
        assert state.value("eidolon_disk_total_bytes") >= state.value("eidolon_disk_free_bytes") > 0

    def test_shared_state__cached_for_the_configured_seconds(self, client, settings):
        generous_anthropic_limits()
        settings.EIDOLON_METRICS_STATE_CACHE_SECONDS = 1.0
        assert scrape(client).value("eidolon_breaker_state", breaker="anthropic", state="closed")
        breaker_force_open(name="anthropic", actor="test", reason="maintenance")
        cached = scrape(client)
        assert cached.value("eidolon_breaker_state", breaker="anthropic", state="closed") == 1
        time.sleep(1.1)
        fresh = scrape(client)
        assert fresh.value("eidolon_breaker_state", breaker="anthropic", state="forced_open") == 1


class TestDatabaseQueries:
    @pytest.mark.parametrize(
        ("sql", "expected"),
        [
            ('SELECT "a"."id" FROM "analyses_analysis" a WHERE 1', ("select", "analyses_analysis")),
            ('INSERT INTO "analyses_card" ("x") VALUES (%s)', ("insert", "analyses_card")),
            (
                'UPDATE "reliability_circuitbreaker" SET x = 1',
                ("update", "reliability_circuitbreaker"),
            ),
            (
                'DELETE FROM "analyses_resultcache" WHERE id IN (1)',
                ("delete", "analyses_resultcache"),
            ),
            ("SAVEPOINT s1", ("other", "")),
            ("SELECT 1", ("select", "")),
        ],
    )
    def test_operation_and_table(self, sql, expected):
        assert operation_and_table(sql) == expected

    def test_each_distinct_text_is_parsed_once(self):
        operation_and_table.cache_clear()
        for _ in range(3):
            operation_and_table('SELECT * FROM "auth_user"')
        info = operation_and_table.cache_info()
        assert (info.misses, info.hits) == (1, 2)


def basic(credentials: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(credentials.encode()).decode()}


class TestRestriction:
    def test_open_by_default(self, client):
        assert client.get("/metrics").status_code == 200

    def test_address_outside_the_allow_list__403(self, client, settings):
        settings.EIDOLON_METRICS_ALLOWED_IPS = ["10.0.0.0/8", "192.168.1.7"]
        assert client.get("/metrics").status_code == 403  # the test client is 127.0.0.1
        assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="192.168.1.7").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="192.168.1.8").status_code == 403

    def test_without_the_credentials__401(self, client, settings):
        settings.EIDOLON_METRICS_BASIC_AUTH = "prometheus:s3cret"
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert missing["WWW-Authenticate"].startswith("Basic ")
        assert client.get("/metrics", **basic("prometheus:wrong")).status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Basic !!").status_code == 401
        assert client.get("/metrics", **basic("prometheus:s3cret")).status_code == 200

    def test_both__the_address_first_then_the_credentials(self, client, settings):
        settings.EIDOLON_METRICS_ALLOWED_IPS = ["127.0.0.0/8"]
        settings.EIDOLON_METRICS_BASIC_AUTH = "prometheus:s3cret"
        assert (
            client.get("/metrics", REMOTE_ADDR="10.0.0.1", **basic("prometheus:s3cret")).status_code
            == 403
        )
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", **basic("prometheus:s3cret")).status_code == 200


class TestWebSockets:
    async def test_connections_and_messages_sent__counted_by_type(self, client, settings):
        from tests.analyses.test_consumers import IN_MEMORY_LAYER, Closed, Socket, person, record

        settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
        alice = await sync_to_async(person)("alice")
        analysis = await sync_to_async(Analysis.objects.create)(
            source="/srv/code",
            source_kind="local",
            provider="static",
            created_by=alice.user,
            status="completed",
        )
        await sync_to_async(record)(analysis, "analysis.started", "analysis.finished")
        before = await sync_to_async(scrape)(client)

        socket = Socket(f"/ws/analyses/{analysis.pk}/", alice.headers())
        assert await socket.open()
        received = []
        with pytest.raises(Closed):
            while True:
                received.append((await socket.next())["type"])
        during = await sync_to_async(scrape)(client)
        await socket.leave()
        after = await sync_to_async(scrape)(client)

        assert received == ["analysis.snapshot", "analysis.started", "analysis.finished"]
        opened = "eidolon_websocket_connections_opened_total"
        assert after.value(opened) - before.value(opened) == 1
        sent = "eidolon_websocket_messages_sent_total"
        for kind in received:
            assert after.value(sent, type=kind) - before.value(sent, type=kind) == 1, kind
        open_now = "eidolon_websocket_connections"
        assert during.value(open_now) - before.value(open_now) == 1
        assert after.value(open_now) == before.value(open_now)


class TestMultiprocessDirectory:
    def test_live_gauges_of_dead_processes__forgotten_at_scrape_time(self, tmp_path):
        import os
        import subprocess
        import sys

        from reliability.views import forget_dead_processes

        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        dead_pid = int(gone.stdout)
        dead = tmp_path / f"gauge_livesum_{dead_pid}.db"
        alive = tmp_path / f"gauge_livesum_{os.getpid()}.db"
        counter = tmp_path / f"counter_{dead_pid}.db"
        for path in (dead, alive, counter):
            path.write_bytes(b"")
        forget_dead_processes(tmp_path)
        assert not dead.exists()
        assert alive.exists()
        assert counter.exists()  # a dead process's counts still count
