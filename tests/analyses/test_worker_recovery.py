"""A worker killed mid-analysis: another worker resumes it after the lease expires, and pays
for nothing that was finished before the kill."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter

import pytest

from analyses.models import Analysis, AnalysisStatus, CodeUnit, UnitStatus
from analyses.review_responder import review_responder
from analyses.services import analysis_create, analysis_enqueue
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from tests.anthropic_support import generous_anthropic_limits, write_project
from tests.processes import start_worker, subprocess_environment, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 3
HEADER = re.compile(r"^Function: (\S+) \(", re.MULTILINE)


def requests_per_function(fake: FakeAnthropic) -> Counter[str]:
    counts: Counter[str] = Counter()
    for record in fake.requests:
        if match := HEADER.search(record.prompt_text):
            counts[match.group(1)] += 1
    return counts


class TestWorkerKilledMidAnalysis:
    def test_another_worker_finishes_it__without_paying_twice(self, tmp_path, settings):
        settings.ANTHROPIC_API_KEY = "test-key"
        generous_anthropic_limits()
        with FakeAnthropic(
            config=FakeConfig(latency_s=0.25), responder=review_responder
        ).running() as fake:
            env = subprocess_environment(
                ANTHROPIC_API_KEY="test-key",
                ANTHROPIC_BASE_URL=fake.base_url,
                EIDOLON_ANALYSIS_LEASE_SECONDS=str(LEASE_SECONDS),
                EIDOLON_WORKER_HEARTBEAT_SECONDS="0.5",
                EIDOLON_LOG_LEVEL="WARNING",
            )
            analysis = analysis_create(
                source=str(write_project(tmp_path, functions=50)),
                provider="anthropic",
                concurrency=4,
                allow_any_path=True,
            )
            analysis_enqueue(analysis)

            first = start_worker(env, "doomed")
            try:
                wait_until(
                    lambda: (
                        CodeUnit.objects.filter(
                            analysis=analysis, status=UnitStatus.ANALYZED
                        ).count()
                        >= 12
                    ),
                    timeout=60,
                )
            finally:
                first.stop(sig=signal.SIGKILL)
            killed_at = time.monotonic()
            finished_before_kill = {
                f"{path.removesuffix('.py').replace('/', '.')}.{qualname}"  # as in the header
                for path, qualname in CodeUnit.objects.filter(
                    analysis=analysis, status=UnitStatus.ANALYZED
                ).values_list("path", "qualname")
            }
            requests_before_kill = len(fake.requests)

            second = start_worker(env, "rescuer")
            try:
                wait_until(lambda: Analysis.objects.get(pk=analysis.pk).is_finished, timeout=90)
                resumed_after = time.monotonic() - killed_at
            finally:
                second.stop()
            counts = requests_per_function(fake)

        analysis.refresh_from_db()
        assert analysis.status == AnalysisStatus.COMPLETED, analysis.status_reason
        assert analysis.runs == 2
        assert analysis.functions_analyzed + analysis.functions_cached == analysis.functions_total
        assert len(finished_before_kill) >= 12
        paid_twice = {name for name in finished_before_kill if counts[name] != 1}
        assert not paid_twice, f"requested again after the kill: {paid_twice}"
        assert len(fake.requests) > requests_before_kill  # the rescuer did the rest
        assert resumed_after >= LEASE_SECONDS  # it waited for the lease to expire
        assert all(counts[name] >= 1 for name in counts)
