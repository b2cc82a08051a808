"""Drill 3 (issue 13), worker loss: three workers run four analyses against the fake API (the
real anthropic SDK, replies delayed so that calls are in flight); one worker is SIGKILLed
mid-run, then another. Every analysis finishes; no function that was finished before a kill is
requested again (the calls in flight at a kill may be, and are counted); and no task row stays
RUNNING for a dead worker."""

from __future__ import annotations

import signal
import time

import pytest
from django_tasks_db.models import DBTaskResult, TaskResultStatus

from analyses.models import FINISHED_STATUSES, Analysis, AnalysisStatus, CodeUnit, UnitStatus
from analyses.parsing import FUNCTION_KINDS
from analyses.services import analysis_create, analysis_enqueue
from reliability.health.heartbeats import WorkerLost
from tests.anthropic_support import generous_anthropic_limits
from tests.chaos.outages import fake_log, requests_per_function, write_tagged_project
from tests.processes import (
    start_fake_anthropic_command,
    start_worker,
    subprocess_environment,
    wait_until,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
]

ANALYSES = 4
FUNCTIONS = 24
LATENCY = "0.5"  # seconds per reply: a worker always has calls in flight
STALE_SECONDS = 2.0  # no heartbeat for this long: the worker is dead


def analysed_functions() -> set[str]:
    return set(
        CodeUnit.objects.filter(status=UnitStatus.ANALYZED, kind__in=FUNCTION_KINDS).values_list(
            "qualname", flat=True
        )
    )


def running_task_of(worker: str) -> DBTaskResult | None:
    return next(
        (
            task
            for task in DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING)
            if task.worker_ids and task.worker_ids[-1] == worker
        ),
        None,
    )


def kill_one_mid_run(workers: dict, tags: dict[int, str], fake_url: str) -> dict:
    """SIGKILL a worker in the middle of an analysis (some of its functions done, calls in
    flight); what was finished and in flight then."""

    def mid_run() -> tuple[str, DBTaskResult] | None:
        for name in workers:
            task = running_task_of(name)
            if task is not None and (
                CodeUnit.objects.filter(
                    analysis_id=task.args_kwargs["args"][0], status=UnitStatus.ANALYZED
                ).count()
                >= 3
            ):
                return name, task
        return None

    name, task = wait_until(mid_run, timeout=30)
    workers[name].stop(sig=signal.SIGKILL)
    finished = analysed_functions()
    requested = requests_per_function(fake_log(fake_url))
    tag = tags[task.args_kwargs["args"][0]]
    in_flight = {f for f in requested if f.startswith(f"{tag}_") and f not in finished}
    return {"worker": name, "task": str(task.pk), "finished": finished, "in_flight": in_flight}


class TestWorkerLoss:
    def test_two_workers_killed__every_analysis_finishes_nothing_finished_is_paid_twice(
        self, tmp_path, settings
    ):
        settings.ANTHROPIC_API_KEY = "test-key"
        generous_anthropic_limits()
        started = time.monotonic()
        fake, fake_url = start_fake_anthropic_command(
            "--responder", "review", "--latency", LATENCY, env=subprocess_environment()
        )
        env = subprocess_environment(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake_url,
            EIDOLON_ANALYSIS_LEASE_SECONDS="3",
            EIDOLON_WORKER_HEARTBEAT_SECONDS="0.5",
            EIDOLON_HEALTH_WORKER_STALE_SECONDS=str(STALE_SECONDS),
            EIDOLON_LOG_LEVEL="WARNING",
        )
        workers = {name: start_worker(env, name) for name in ("w1", "w2", "w3")}
        try:
            tags = {}
            for index in range(ANALYSES):
                tag = f"a{index}"
                analysis = analysis_create(
                    source=str(write_tagged_project(tmp_path / tag, tag=tag, functions=FUNCTIONS)),
                    provider="anthropic",
                    concurrency=2,
                    allow_any_path=True,
                )
                analysis_enqueue(analysis)
                tags[analysis.pk] = tag
            wait_until(lambda: len(analysed_functions()) >= 10, timeout=60)
            first = kill_one_mid_run(workers, tags, fake_url)
            done_at_first = len(first["finished"])
            wait_until(lambda: len(analysed_functions()) >= done_at_first + 15, timeout=60)
            second = kill_one_mid_run(
                {n: w for n, w in workers.items() if n != first["worker"]}, tags, fake_url
            )
            wait_until(
                lambda: not Analysis.objects.exclude(status__in=FINISHED_STATUSES).exists(),
                timeout=90,
            )
            dead = {first["worker"], second["worker"]}
            # The survivor's heartbeats sweep the dead workers' task rows once they are stale.
            wait_until(
                lambda: not any(running_task_of(name) for name in dead),
                timeout=STALE_SECONDS * 3 + 10,
            )
            requests = requests_per_function(fake_log(fake_url))
        finally:
            for worker in workers.values():
                worker.stop()
            fake.stop()
        took = time.monotonic() - started

        analyses = list(Analysis.objects.order_by("pk"))
        abandoned = {
            task.worker_ids[-1]: task
            for task in DBTaskResult.objects.filter(pk__in=[first["task"], second["task"]])
        }
        in_flight = first["in_flight"] | second["in_flight"]
        paid_twice = {name: count for name, count in requests.items() if count > 1}
        print(
            f"\ndrill 3 (worker loss): {took:.1f} s; killed {first['worker']} with "
            f"{len(first['finished'])} functions finished and {len(first['in_flight'])} in "
            f"flight, then {second['worker']} with {len(second['finished'])} finished and "
            f"{len(second['in_flight'])} in flight; {sum(requests.values())} requests for "
            f"{ANALYSES * FUNCTIONS} functions; requested twice: {len(paid_twice)} "
            f"(all in flight at a kill: {set(paid_twice) <= in_flight}); analyses "
            + ", ".join(f"#{a.pk} {a.status} in {a.runs} runs" for a in analyses)
            + "; abandoned task rows: "
            + "; ".join(
                f"{t.worker_ids[-1]}: {t.status} {t.traceback.strip()}" for t in abandoned.values()
            )
        )
        for analysis in analyses:
            assert analysis.status == AnalysisStatus.COMPLETED, analysis.status_reason
            assert analysis.functions_analyzed + analysis.functions_cached == FUNCTIONS
        assert sum(a.runs for a in analyses) >= ANALYSES + 2  # both killed runs were resumed
        assert set(requests) == {f"{tag}_f{i}" for tag in tags.values() for i in range(FUNCTIONS)}
        finished_before_a_kill = first["finished"] | second["finished"]
        assert not {f for f in finished_before_a_kill if requests[f] != 1}, requests
        assert set(paid_twice) <= in_flight, (paid_twice, in_flight)
        assert set(abandoned) == dead
        for task in abandoned.values():
            assert task.status == TaskResultStatus.FAILED
            assert task.exception_class_path.endswith(WorkerLost.__qualname__)
            assert "sent no heartbeat" in task.traceback and "abandoned" in task.traceback
        assert not DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING).exists()
