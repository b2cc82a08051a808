"""Drill 5 (issue 13), database loss: a web process (daphne) and two workers reach PostgreSQL
through a proxy, while three analyses run against the fake API. The database is partitioned
(connections hang: no reset, no answer) and later stopped hard (its port refused, every session
the service's processes hold terminated). In both, ``/health/ready`` answers 503 within 2.5 s while
``/health/live`` stays 200; the workers wait and reconnect; the analyses finish with no unit or
card twice."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from django.db.models import Count
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from analyses.models import FINISHED_STATUSES, Analysis, AnalysisStatus, Card, CodeUnit, UnitStatus
from analyses.services import analysis_create, analysis_enqueue
from tests.anthropic_support import generous_anthropic_limits
from tests.chaos.outages import (
    ReadinessPoller,
    fake_log,
    other_sessions_of_test_database,
    requests_per_function,
    wait_for_a_fresh_report,
    write_tagged_project,
)
from tests.processes import (
    database_url_of_test_database,
    start_daphne,
    start_fake_anthropic_command,
    start_worker,
    subprocess_environment,
    wait_until,
)
from tests.tcp_proxy import DatabaseProxy

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
]

READY_WITHIN = 2.5  # seconds from the start of an outage to the first 503
OUTAGE_SECONDS = 3.5
ANALYSES = 3
FUNCTIONS = 24


def analysed() -> int:
    return CodeUnit.objects.filter(status=UnitStatus.ANALYZED).count()


def logged_events(lines: list[str]) -> list[str]:
    """The ``event`` of each JSON log line (db_worker's own lines are plain text)."""
    events = []
    for line in lines:
        try:
            events.append(json.loads(line).get("event", ""))
        except (ValueError, AttributeError):
            continue
    return events


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def outage(poller: ReadinessPoller, *, start, restore) -> dict:
    """Start an outage just after the server cached a healthy report (the worst case), measure
    how soon readiness fails, end it after ``OUTAGE_SECONDS`` and how soon readiness returns."""
    wait_for_a_fresh_report(poller.base)
    started = time.monotonic()
    extra = start()
    time_to_503 = poller.wait_for_ready(503, after=started, within=10)
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
    restore()
    restored = time.monotonic()
    back_after = poller.wait_for_ready(200, after=restored, within=20)
    return {
        "time_to_503": time_to_503,
        "back_after": back_after,
        "live": {live for asked, _, _, live in poller.since(started) if asked < restored},
        "extra": extra,
    }


class TestDatabaseLoss:
    def test_partition_and_hard_stop__unready_within_2_5_s_workers_reconnect_nothing_twice(
        self, tmp_path, settings
    ):
        settings.ANTHROPIC_API_KEY = "test-key"
        generous_anthropic_limits()
        started = time.monotonic()
        proxy = DatabaseProxy.in_front_of_the_test_database()
        behind_proxy = database_url_of_test_database(host="127.0.0.1", port=proxy.port)
        fake, fake_url = start_fake_anthropic_command(
            "--responder", "review", "--latency", "0.5", env=subprocess_environment()
        )
        env = subprocess_environment(
            DATABASE_URL=behind_proxy,
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake_url,
            EIDOLON_ANALYSIS_LEASE_SECONDS="6",
            EIDOLON_WORKER_HEARTBEAT_SECONDS="0.5",
            EIDOLON_LOG_LEVEL="INFO",
        )
        web, base = start_daphne(env)
        workers = [start_worker(env, name) for name in ("db-w1", "db-w2")]
        poller = None
        try:
            wait_until(lambda: ready(base), timeout=30)
            for index in range(ANALYSES):
                tag = f"d{index}"
                source = write_tagged_project(tmp_path / tag, tag=tag, functions=FUNCTIONS)
                analysis_enqueue(
                    analysis_create(
                        source=str(source),
                        provider="anthropic",
                        concurrency=2,
                        allow_any_path=True,
                    )
                )
            wait_until(lambda: analysed() >= 8, timeout=60)
            poller = ReadinessPoller(base)
            partition = outage(poller, start=proxy.partition, restore=proxy.restore)
            before_stop = analysed()
            wait_until(lambda: analysed() >= before_stop + 6, timeout=60)

            def hard_stop() -> int:
                proxy.refuse()
                return proxy.terminate_sessions()

            stop = outage(poller, start=hard_stop, restore=proxy.restore)
            wait_until(
                lambda: not Analysis.objects.exclude(status__in=FINISHED_STATUSES).exists(),
                timeout=90,
            )
            requests = requests_per_function(fake_log(fake_url))
            survived = [worker.process.poll() is None for worker in workers]
            web_survived = web.process.poll() is None
        finally:
            if poller is not None:
                poller.stop()
            for worker in workers:
                worker.stop()
            web.stop()
            fake.stop()
            proxy.close()
        took = time.monotonic() - started
        lingering = other_sessions_of_test_database()
        for process in (*workers, web):  # for whoever reads a failure
            (tmp_path / f"{process.name}.log").write_text("\n".join(process.output()))

        events = [
            event
            for worker in workers
            for event in logged_events(worker.output())
            if event.startswith(("worker_database", "worker_heartbeat"))
        ]
        analyses = list(Analysis.objects.order_by("pk"))
        task_rows = dict(
            DBTaskResult.objects.values_list("status").annotate(n=Count("id")).order_by()
        )
        failed_rows = [
            traceback.strip().splitlines()[-1][:160]
            for traceback in DBTaskResult.objects.filter(
                status=TaskResultStatus.FAILED
            ).values_list("traceback", flat=True)
        ]
        duplicate_units = list(
            CodeUnit.objects.values("analysis", "unit_id").annotate(n=Count("id")).filter(n__gt=1)
        )
        duplicate_cards = list(
            Card.objects.values("unit", "kind", "title", "line_start", "line_end")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
        )
        print(
            f"\ndrill 5 (database loss, logs in {tmp_path}): {took:.1f} s; partition: 503 after "
            f"{partition['time_to_503']:.2f} s, ready again {partition['back_after']:.2f} s "
            f"after it healed; hard stop ({stop['extra']} sessions terminated): 503 after "
            f"{stop['time_to_503']:.2f} s, ready again {stop['back_after']:.2f} s after; "
            f"/health/live answers during the outages: "
            f"{sorted(partition['live'] | stop['live'])}; workers' events: "
            f"{ {event: events.count(event) for event in sorted(set(events))} }; "
            f"{sum(requests.values())} requests for {ANALYSES * FUNCTIONS} functions; analyses "
            + ", ".join(
                f"#{a.pk} {a.status} in {a.runs} runs, {a.cards_count} cards" for a in analyses
            )
            + f"; task rows: {task_rows} (failed: {failed_rows}); "
            f"sessions left after every process stopped: {lingering}"
        )
        assert partition["time_to_503"] <= READY_WITHIN, partition
        assert stop["time_to_503"] <= READY_WITHIN, stop
        assert partition["live"] == {200} and stop["live"] == {200}
        assert stop["extra"] >= 1  # the hard stop ended sessions of the service
        assert all(survived) and web_survived  # nothing had to be restarted
        assert "worker_database_reconnected" in events or "worker_heartbeat_recovered" in events
        for analysis in analyses:
            assert analysis.status == AnalysisStatus.COMPLETED, analysis.status_reason
            assert analysis.functions_analyzed + analysis.functions_cached == FUNCTIONS
            assert analysis.cards_count == Card.objects.filter(analysis=analysis).count()
        assert not duplicate_units and not duplicate_cards, (duplicate_units, duplicate_cards)
        assert len(requests) == ANALYSES * FUNCTIONS
        assert TaskResultStatus.RUNNING not in task_rows, task_rows  # none left behind
